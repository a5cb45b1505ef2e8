"""N-way K-shot episode sampling on device: pure, jittable functions of a PRNG key.

An episode draws `way` distinct classes and, per class, `shot + query` distinct images; support
and query are class-major (row c*shot + s belongs to class c), so labels are episode_labels().
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from esmeta.data.omniglot import IMAGES_PER_CLASS
from esmeta.errors import ConfigError


class Episode(NamedTuple):
    """Support float32 (way*shot, S, S, 1) and query float32 (way*query, S, S, 1), ink = 1.0."""

    support: jax.Array
    query: jax.Array


def episode_labels(way: int, per_class: int) -> jax.Array:
    """Labels of a class-major batch: [0]*per_class + [1]*per_class + ... (int32, way*per_class)."""
    return jnp.repeat(jnp.arange(way, dtype=jnp.int32), per_class)


def to_float(images_uint8: jax.Array) -> jax.Array:
    """uint8 (..., S, S) with 255 = ink -> float32 (..., S, S, 1) in [0, 1]."""
    return (jnp.asarray(images_uint8, jnp.float32) / 255.0)[..., None]


def _check_sizes(n_classes: int, n_images: int, way: int, shot: int, query: int) -> None:
    """Static checks (Python ints, so they also run under jit at trace time)."""
    if way < 1 or shot < 1 or query < 0:
        raise ConfigError(f"need way >= 1, shot >= 1, query >= 0, got way={way} shot={shot} query={query}; fix the episode config")
    if way > n_classes:
        raise ConfigError(f"way={way} exceeds the {n_classes} classes of this split; lower the episode way")
    if shot + query > n_images:
        raise ConfigError(
            f"shot + query = {shot + query} exceeds the {n_images} images per class; lower episode shot or query"
        )


def sample_episode_indices(
    key: jax.Array, n_classes: int, way: int, shot: int, query: int, n_images: int = IMAGES_PER_CLASS
) -> tuple[jax.Array, jax.Array]:
    """(class_idx (way,), image_idx (way, shot+query)): distinct classes, distinct images per class."""
    _check_sizes(n_classes, n_images, way, shot, query)
    class_key, image_key = jax.random.split(key)
    class_idx = jax.random.choice(class_key, n_classes, (way,), replace=False)
    # An independent permutation of the class's images per chosen class; the first `shot` are support.
    perms = jax.vmap(lambda k: jax.random.permutation(k, n_images))(jax.random.split(image_key, way))
    return class_idx, perms[:, : shot + query]


def sample_episode(key: jax.Array, images: jax.Array, way: int, shot: int, query: int) -> Episode:
    """One episode from images uint8 (n_classes, 20, S, S) of one split; way/shot/query are static under jit."""
    n_classes, n_images, height, width = images.shape
    class_idx, image_idx = sample_episode_indices(key, n_classes, way, shot, query, n_images)
    chosen = images[class_idx[:, None], image_idx]  # (way, shot+query, S, S), gathered on device
    support = chosen[:, :shot].reshape(way * shot, height, width)
    query_images = chosen[:, shot:].reshape(way * query, height, width)
    return Episode(support=to_float(support), query=to_float(query_images))
