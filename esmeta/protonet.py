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
    """Snell et al.'s 4-block conv net; 32x32 inputs give a 2*2*channels embedding."""

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
    """Embeddings (n, d) of images (n, S, S, 1) in [0, 1], ink = 1."""
    return ConvEmbedding(channels).apply({"params": params}, images, stats_rows)


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
