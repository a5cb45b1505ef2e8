"""Prototypical Network (Snell et al. 2017) as used by Sheng & He 2021: embedding, distances, loss.

Embedding: 4 blocks of (3x3 conv, batch norm, ReLU, 2x2 max-pool), flattened.
Batch norm never keeps running statistics: it normalizes with the statistics of the episode it is
applied to, at training and test time alike (the ES estimators have no backward pass that could
update running averages, and every estimator must be evaluated the same way). `norm_stats="support"`
takes the statistics from the support images only, so that queries do not inform each other.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from esmeta.data.episodes import Episode, episode_labels

Params = Any  # a pytree of float32 arrays
BN_EPS = 1e-5
_NHWC = ("NHWC", "HWIO", "NHWC")


class EpisodeBatchNorm(nn.Module):
    """Batch norm over (batch, height, width) of the first `stats_rows` rows, with a learned affine."""

    @nn.compact
    def __call__(self, x: jax.Array, stats_rows: int | None = None) -> jax.Array:
        scale = self.param("scale", nn.initializers.ones, (x.shape[-1],))
        bias = self.param("bias", nn.initializers.zeros, (x.shape[-1],))
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
    def __call__(self, images: jax.Array, stats_rows: int | None = None) -> jax.Array:
        x = images
        for _ in range(self.blocks):
            x = nn.Conv(self.channels, (3, 3), padding="SAME")(x)
            x = EpisodeBatchNorm()(x, stats_rows)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x.reshape(x.shape[0], -1)


def init_params(key: jax.Array, channels: int, image_size: int) -> Params:
    """Fresh embedding parameters (Flax default initializers)."""
    dummy = jnp.zeros((2, image_size, image_size, 1), jnp.float32)
    return ConvEmbedding(channels).init(key, dummy)["params"]


def num_params(params: Params) -> int:
    return int(sum(x.size for x in jax.tree.leaves(params)))


def embed(params: Params, images: jax.Array, channels: int, stats_rows: int | None = None) -> jax.Array:
    """Embeddings (n, d) of images (n, S, S, 1) in [0, 1], ink = 1: `ConvEmbedding`'s function, computed faster.

    Equal to `ConvEmbedding(channels).apply` up to float rounding (a test holds them together), but
    the first block, whose 32x32 output dominates the memory traffic, never materializes its
    pre-normalization activations: the conv is linear in the 3x3 input patches p, so batch norm's
    statistics follow from the patches' mean m and covariance S (shared by every candidate of a
    population):  mean = m.w + b,  var = w'S w,  and the normalization folds into the conv's weights.
    Every block pools before the ReLU (max-pool and ReLU commute).
    """
    del channels  # implied by the parameters; kept so callers need not know the layout
    n, size = images.shape[0], images.shape[1]
    patches = jax.lax.conv_general_dilated_patches(images, (3, 3), (1, 1), "SAME", dimension_numbers=_NHWC)
    patches = patches.reshape(n * size * size, -1)  # (pixels, 9): the 3x3 neighbourhood of every pixel
    ref = patches if stats_rows is None else patches[: stats_rows * size * size]
    m = ref.mean(axis=0)
    # E[pp'] - mm', not the centered (p - m)'(p - m): the gradient amplifies any error in cov about 50-fold (the
    # variance path nearly cancels the direct one), and XLA fuses the centering into a loop whose float32 sum over
    # all pixels is 60x less accurate than the plain Gram matmul, on some CPUs (AVX2-only) enough to put 1e-2 into
    # the first conv's gradient. With ink-like inputs in [0, 1], E[pp'] and mm' are of one size: no cancellation.
    cov = ref.T @ ref / ref.shape[0] - jnp.outer(m, m)
    conv, norm = params["Conv_0"], params["EpisodeBatchNorm_0"]
    w = conv["kernel"].reshape(-1, conv["kernel"].shape[-1])  # (9, channels), rows in the patches' order
    mean = m @ w + conv["bias"]
    var = jnp.sum((cov @ w) * w, axis=0)
    inv = norm["scale"] * jax.lax.rsqrt(var + BN_EPS)
    y = (patches @ (w * inv)).reshape(n, size, size, -1)
    x = nn.relu(_pool(y) + (conv["bias"] - mean) * inv + norm["bias"])
    for block in range(1, len([k for k in params if k.startswith("Conv_")])):
        conv, norm = params[f"Conv_{block}"], params[f"EpisodeBatchNorm_{block}"]
        y = jax.lax.conv_general_dilated(x, conv["kernel"], (1, 1), "SAME", dimension_numbers=_NHWC) + conv["bias"]
        ref = y if stats_rows is None else y[:stats_rows]
        mean = ref.mean(axis=(0, 1, 2))
        inv = norm["scale"] * jax.lax.rsqrt(jnp.square(ref - mean).mean(axis=(0, 1, 2)) + BN_EPS)
        x = nn.relu(_pool(y * inv + (norm["bias"] - mean * inv)))
    return x.reshape(n, -1)


def _pool(x: jax.Array) -> jax.Array:
    """2x2 max-pool with stride 2 (even sizes; odd trailing rows/columns dropped, as flax's VALID pooling)."""
    n, h, w, c = x.shape
    x = x[:, : h - h % 2, : w - w % 2]
    return x.reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


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


def episode_logits(
    params: Params, episode: Episode, *, way: int, channels: int, distance: str, scale: float, norm_stats: str
) -> jax.Array:
    """Query logits (way*query, way): support and query embedded as one batch."""
    n_support = episode.support.shape[0]
    images = jnp.concatenate([episode.support, episode.query], axis=0)
    stats_rows = n_support if norm_stats == "support" else None
    z = embed(params, images, channels, stats_rows)
    protos = prototypes(z[:n_support], way)
    return similarity(z[n_support:], protos, distance, scale)


def loss_and_accuracy(
    params: Params, episode: Episode, *, way: int, channels: int, distance: str, scale: float, norm_stats: str
) -> tuple[jax.Array, jax.Array]:
    """Mean cross-entropy of softmax over similarities (eqs. 2-3) and accuracy on the queries."""
    logits = episode_logits(
        params, episode, way=way, channels=channels, distance=distance, scale=scale, norm_stats=norm_stats
    )
    labels = episode_labels(way, logits.shape[0] // way)
    log_p = jax.nn.log_softmax(logits, axis=-1)
    loss = -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))
    accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
    return loss, accuracy


def make_loss_fn(*, way: int, channels: int, distance: str, scale: float, norm_stats: str):
    """`loss(params, episode) -> scalar` for one episode shape: the function every estimator differentiates."""
    metric = partial(
        loss_and_accuracy, way=way, channels=channels, distance=distance, scale=scale, norm_stats=norm_stats
    )
    return lambda params, episode: metric(params, episode)[0]
