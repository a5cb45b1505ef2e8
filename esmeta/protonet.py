"""Prototypical Network (Snell et al. 2017) as used by Sheng & He 2021: embedding, distances, loss.

Embedding: 4 blocks of (3x3 conv, batch norm, ReLU, 2x2 max-pool), flattened.

Batch norm, three protocols (`model.norm_stats`):
- `running` (default, the reference ProtoNet's): training normalizes with the statistics of the whole
  episode (support and query, one batch, as the reference embeds them); an exponential moving average of
  each block's mean and variance is kept from the forward pass at the mean parameters on every training
  episode (`update_running`, PyTorch's BatchNorm2d semantics: momentum 0.1, the unbiased batch variance,
  starting from mean 0 and variance 1); validation and test normalize with those averages (PyTorch's eval
  mode), so every image is embedded on its own and no query informs another.
- `episode`: every episode, training and test alike, normalized with its own support+query statistics.
  Transductive at test time: one query changes the other queries' logits.
- `support`: every episode normalized with its support images' statistics only (queries independent).
Running averages need no backward pass (only forward passes at the mean parameters, which every estimator
takes), so all estimators share the protocol. The averages are kept in every mode (they cost nothing),
and only `running` evaluates with them.

Conv biases sit directly before batch norm, which subtracts the batch mean: with batch statistics their
gradient is exactly 0 (backprop leaves them at their initial value, ES random-walks them: with wsr each
step adds noise of size ~sigma to them, which batch norm removes). The reference keeps the biases, so do we.
With running statistics at test time a bias does shift the output, by its drift since the averages were
taken; the averages track it (they are computed with the biases included), so the drift per step is small.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

from esmeta.data.episodes import Episode, episode_labels
from esmeta.rules import setting

Params = Any  # a pytree of float32 arrays
BatchStats = Any  # {"EpisodeBatchNorm_<b>": {"mean": (c,), "var": (c,)}}: running averages of each block
BN_EPS = 1e-5
MOMENTUM = 0.1  # PyTorch's default, as the reference ProtoNet
NHWC = ("NHWC", "HWIO", "NHWC")  # conv dimension numbers: images NHWC, kernels HWIO (shared with streaming.py)


@dataclass(frozen=True)
class ProtoNetConfig:
    """`learner=protonet`, the paper's meta-learner (the default): its settings are the embedding's (`model`) and
    the distance's (`distance`), so this section holds only its name."""

    NAME: ClassVar[str] = "protonet"

    name: str = setting(NAME, "result")

    def validate(self, run: Any) -> None:
        """Nothing of its own to check (the model and distance sections are checked by esmeta.config)."""


class EpisodeBatchNorm(nn.Module):
    """Batch norm over (batch, height, width) of the first `stats_rows` rows, with a learned affine;
    `use_running`: with the `batch_stats` collection's mean and variance instead (eval mode)."""

    @nn.compact
    def __call__(self, x: jax.Array, stats_rows: int | None = None, use_running: bool = False) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
        if use_running:
            mean = self.variable("batch_stats", "mean", jnp.zeros, (x.shape[-1],)).value
            var = self.variable("batch_stats", "var", jnp.ones, (x.shape[-1],)).value
        else:
            ref = x if stats_rows is None else x[:stats_rows]
            mean = ref.mean(axis=(0, 1, 2))
            var = ref.var(axis=(0, 1, 2))
        return (x - mean) * jax.lax.rsqrt(var + BN_EPS) * scale + bias


class ConvEmbedding(nn.Module):
    """Snell et al.'s 4-block conv net; 32x32 inputs give a 2*2*channels embedding.

    It defines the parameters (`init_params`) and is the straightforward reference for `embed`.
    """

    channels: int = 64
    blocks: int = 4

    @nn.compact
    def __call__(self, images: jax.Array, stats_rows: int | None = None, use_running: bool = False) -> jax.Array:
        x = images
        for _ in range(self.blocks):
            x = nn.Conv(self.channels, (3, 3), padding="SAME")(x)
            x = EpisodeBatchNorm()(x, stats_rows, use_running)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x.reshape(x.shape[0], -1)


@partial(jax.jit, static_argnames=("channels", "image_size"))
def init_params(key: jax.Array, channels: int, image_size: int) -> Params:
    """Fresh embedding parameters (Flax default initializers). Jitted: one compile in place of Flax's op-by-op
    dispatch (about 80 small compiles, seconds at every run's start); the values are the same bits."""
    dummy = jnp.zeros((2, image_size, image_size, 1), jnp.float32)
    return ConvEmbedding(channels).init(key, dummy)["params"]


def num_params(params: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def num_blocks(params: Params) -> int:
    """The number of conv blocks in a parameter tree (the layer count, from its keys)."""
    return len([k for k in params if k.startswith("Conv_")])


def init_batch_stats(params: Params) -> BatchStats:
    """Running averages before any training: mean 0, variance 1 (PyTorch's and flax's initial values)."""
    return {
        f"EpisodeBatchNorm_{b}": {"mean": jnp.zeros_like(p["scale"]), "var": jnp.ones_like(p["scale"])}
        for b in range(num_blocks(params))
        for p in (params[f"EpisodeBatchNorm_{b}"],)
    }


def update_running(running: BatchStats, moments: BatchStats, momentum: float = MOMENTUM) -> BatchStats:
    """PyTorch's BatchNorm2d update: r <- (1 - momentum) r + momentum * batch statistic, where the variance
    averaged is the UNBIASED one, var * n / (n - 1) over the n = rows x height x width values of a channel
    (the batch normalizes with the biased one). `moments` as `embed_with_moments` returns them."""

    def one(r, m):
        unbiased = m["var"] * (m["count"] / (m["count"] - 1.0))
        return {
            "mean": (1.0 - momentum) * r["mean"] + momentum * m["mean"],
            "var": (1.0 - momentum) * r["var"] + momentum * unbiased,
        }

    return {name: one(running[name], moments[name]) for name in running}


def embed(
    params: Params, images: jax.Array, stats_rows: int | None = None, running: BatchStats | None = None
) -> jax.Array:
    """Embeddings (n, d) of images (n, S, S, 1) in [0, 1], ink = 1: `ConvEmbedding`'s function, computed faster.

    Batch norm uses the batch statistics of the first `stats_rows` rows (all when None), or, given
    `running`, those fixed averages (each image then embedded independently of the others).
    """
    return embed_with_moments(params, images, stats_rows, running)[0]


def embed_with_moments(
    params: Params, images: jax.Array, stats_rows: int | None = None, running: BatchStats | None = None
) -> tuple[jax.Array, BatchStats]:
    """(embeddings, the statistics each batch norm used: {"mean", "var" (biased), "count"} per block).

    Equal to `ConvEmbedding(channels).apply` up to float rounding (a test holds them together), but
    the first block, whose 32x32 output dominates the memory traffic, never materializes its
    pre-normalization activations: the conv is linear in the 3x3 input patches p, so batch norm's
    statistics follow from the patches' mean m and covariance S (shared by every candidate of a
    population):  mean = m.w + b,  var = w'S w,  and the normalization folds into the conv's weights.
    With fixed (running) statistics the fold is simpler still: batch norm is a per-channel affine map,
    and the first block is one affine conv. Every block pools before the ReLU (max-pool and ReLU commute).
    """
    moments = {}
    patches = patches_3x3(images)
    flat = patches.reshape(-1, patches.shape[-1])  # (pixels, 9): the 3x3 neighbourhood of every pixel
    if running is None:
        ref = flat if stats_rows is None else flat[: stats_rows * images.shape[1] * images.shape[2]]
        m = ref.mean(axis=0)
        # E[pp'] - mm', not the centered (p - m)'(p - m): the gradient amplifies any error in cov about 50-fold
        # (the variance path nearly cancels the direct one), and XLA fuses the centering into a loop whose float32
        # sum over all pixels is 60x less accurate than the plain Gram matmul, on some CPUs (AVX2-only) enough to
        # put 1e-2 into the first conv's gradient. With ink-like inputs in [0, 1], E[pp'] and mm' are of one size.
        cov = ref.T @ ref / ref.shape[0] - jnp.outer(m, m)
        mean, var = first_conv_moments(params, m, cov)
        count = ref.shape[0]
    else:
        mean, var = running["EpisodeBatchNorm_0"]["mean"], running["EpisodeBatchNorm_0"]["var"]
        count = flat.shape[0]
    moments["EpisodeBatchNorm_0"] = {"mean": mean, "var": var, "count": jnp.float32(count)}
    x = first_block(params, patches, mean, norm_inverse(params, 0, var))
    for block in range(1, num_blocks(params)):
        name = f"EpisodeBatchNorm_{block}"
        y = conv_output(params, block, x)
        if running is None:
            ref = y if stats_rows is None else y[:stats_rows]
            mean = ref.mean(axis=(0, 1, 2))
            var = jnp.square(ref - mean).mean(axis=(0, 1, 2))
            count = ref.shape[0] * ref.shape[1] * ref.shape[2]
        else:
            mean, var = running[name]["mean"], running[name]["var"]
            count = y.shape[0] * y.shape[1] * y.shape[2]
        moments[name] = {"mean": mean, "var": var, "count": jnp.float32(count)}
        x = normalize_block(params, block, y, mean, norm_inverse(params, block, var))
    return x.reshape(images.shape[0], -1), moments


def max_pool(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 (even sizes; odd trailing rows/columns dropped, as flax's VALID pooling)."""
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


# The block math, shared by `embed_with_moments` and `streaming.forward_chunk` (one definition of a block).


def patches_3x3(images: jax.Array) -> jax.Array:
    """(n, S, S, 9): the 3x3 neighbourhood of every pixel of one-channel images, zero-padded ("SAME")."""
    return jax.lax.conv_general_dilated_patches(images, (3, 3), (1, 1), "SAME", dimension_numbers=NHWC)


def first_conv_moments(params: Params, m: jax.Array, cov: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Block 0's conv-output mean and (biased) variance from its input patches' mean m and covariance S:
    the conv is linear in the patches, so mean = m.w + b and var = w'S w, per channel."""
    conv = params["Conv_0"]
    w = conv["kernel"].reshape(-1, conv["kernel"].shape[-1])  # (9, channels), rows in the patches' order
    return m @ w + conv["bias"], jnp.sum((cov @ w) * w, axis=0)


def norm_inverse(params: Params, block: int, var: jax.Array) -> jax.Array:
    """A block's batch-norm multiplier, scale / sqrt(var + eps)."""
    return params[f"EpisodeBatchNorm_{block}"]["scale"] * jax.lax.rsqrt(var + BN_EPS)


def first_block(params: Params, patches: jax.Array, mean: jax.Array, inv: jax.Array) -> jax.Array:
    """Block 0 from its patches (n, S, S, 9), batch norm folded into the conv's weights: the pre-norm
    activations are never materialized. Pools before the ReLU (max-pool and ReLU commute)."""
    n, h, w, k = patches.shape
    conv, norm = params["Conv_0"], params["EpisodeBatchNorm_0"]
    kernel = conv["kernel"].reshape(-1, conv["kernel"].shape[-1])
    y = (patches.reshape(n * h * w, k) @ (kernel * inv)).reshape(n, h, w, -1)
    return nn.relu(max_pool(y) + (conv["bias"] - mean) * inv + norm["bias"])


def conv_output(params: Params, block: int, x: jax.Array) -> jax.Array:
    """A block's 3x3 conv (with its bias): the pre-norm activations whose statistics batch norm takes."""
    conv = params[f"Conv_{block}"]
    return jax.lax.conv_general_dilated(x, conv["kernel"], (1, 1), "SAME", dimension_numbers=NHWC) + conv["bias"]


def normalize_block(params: Params, block: int, y: jax.Array, mean: jax.Array, inv: jax.Array) -> jax.Array:
    """The rest of a block after its conv: batch norm as y * inv + shift, max-pool, ReLU."""
    return nn.relu(max_pool(y * inv + (params[f"EpisodeBatchNorm_{block}"]["bias"] - mean * inv)))


def similarity(queries: jax.Array, prototypes: jax.Array, distance: str, scale: float = 1.0) -> jax.Array:
    """Logits (q, way): negative squared Euclidean distance (eq. 1) or scaled cosine similarity."""
    if distance == "euclidean":
        # |q - c|^2 = |q|^2 - 2 q.c + |c|^2, as a matmul rather than a (q, way, d) difference tensor.
        sq = (
            jnp.sum(queries**2, axis=1, keepdims=True)
            - 2.0 * queries @ prototypes.T
            + jnp.sum(prototypes**2, axis=1)[None, :]
        )
        return -jnp.maximum(sq, 0.0)
    if distance == "cosine":
        qn = queries / jnp.maximum(jnp.linalg.norm(queries, axis=1, keepdims=True), 1e-8)
        pn = prototypes / jnp.maximum(jnp.linalg.norm(prototypes, axis=1, keepdims=True), 1e-8)
        return scale * qn @ pn.T
    raise ValueError(f"unknown distance {distance!r}")  # config validation rules this out


def prototypes(support_embeddings: jax.Array, way: int) -> jax.Array:
    """Class means (way, d) of class-major support embeddings."""
    return support_embeddings.reshape(way, -1, support_embeddings.shape[-1]).mean(axis=1)


def _logits_and_moments(
    params: Params, episode: Episode, way: int, distance: str, scale: float, norm_stats: str,
    running: BatchStats | None,
) -> tuple[jax.Array, BatchStats]:
    n_support = episode.support.shape[0]
    images = jnp.concatenate([episode.support, episode.query], axis=0)
    stats_rows = n_support if norm_stats == "support" else None
    z, moments = embed_with_moments(params, images, stats_rows, running)
    protos = prototypes(z[:n_support], way)
    return similarity(z[n_support:], protos, distance, scale), moments


def episode_logits(
    params: Params, episode: Episode, *, way: int, distance: str, scale: float, norm_stats: str,
    running: BatchStats | None = None,
) -> jax.Array:
    """Query logits (way*query, way): support and query embedded as one batch.

    Batch norm: with `running`, those averages (evaluation under norm_stats=running); otherwise the batch
    statistics of the support (norm_stats=support) or of support and query (episode, and training under running).
    """
    return _logits_and_moments(params, episode, way, distance, scale, norm_stats, running)[0]


def episode_metrics(
    params: Params, episode: Episode, *, way: int, distance: str, scale: float, norm_stats: str,
    running: BatchStats | None = None,
) -> tuple[jax.Array, jax.Array, BatchStats]:
    """(mean cross-entropy of softmax over similarities (eqs. 2-3), accuracy on the queries, the batch-norm
    statistics used): the one loss of training and evaluation; the statistics feed `update_running`."""
    logits, moments = _logits_and_moments(params, episode, way, distance, scale, norm_stats, running)
    labels = episode_labels(way, logits.shape[0] // way)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, accuracy, moments


def loss_and_accuracy(
    params: Params, episode: Episode, *, way: int, distance: str, scale: float, norm_stats: str,
    running: BatchStats | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(loss, accuracy) of `episode_metrics`."""
    loss, accuracy, _ = episode_metrics(
        params, episode, way=way, distance=distance, scale=scale, norm_stats=norm_stats, running=running,
    )
    return loss, accuracy


def make_metrics_fn(*, way: int, distance: str, scale: float, norm_stats: str, evaluation: bool = False):
    """`metrics(params, episode, running=None) -> (loss, accuracy, batch-norm statistics)` of `episode_metrics`
    for episodes of `way` classes: the one place the loss's settings are bound. Training normalizes with batch
    statistics under every protocol (`running` is ignored); `evaluation` under norm_stats=running uses it."""
    metrics = partial(episode_metrics, way=way, distance=distance, scale=scale, norm_stats=norm_stats)
    use_running = evaluation and norm_stats == "running"
    return lambda params, episode, running=None: metrics(params, episode, running=running if use_running else None)


def make_loss_fn(*, way: int, distance: str, scale: float, norm_stats: str):
    """`loss(params, episode) -> scalar` for one episode shape: the function every estimator differentiates
    (batch statistics, as training normalizes under every protocol)."""
    metrics = make_metrics_fn(way=way, distance=distance, scale=scale, norm_stats=norm_stats)
    return lambda params, episode: metrics(params, episode)[0]
