"""Episode sampling: distinct classes and images, class-major layout, determinism, jit, provenance."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta.data.episodes import (
    Episode,
    episode_labels,
    sample_episode,
    sample_episode_indices,
    to_float,
)
from esmeta.data.omniglot import Omniglot
from esmeta.data.splits import split_classes
from esmeta.errors import ConfigError
from esmeta.metrics import episode_keys

N_CLASSES, SIZE = 30, 6
WAY, SHOT, QUERY = 5, 3, 4
jit_sample = jax.jit(sample_episode, static_argnames=("way", "shot", "query"))


@pytest.fixture(scope="module")
def tagged_images() -> jax.Array:
    """uint8 (30, 20, 6, 6) where pixel [0, 0] holds the class id and pixel [0, 1] the image id."""
    images = np.full((N_CLASSES, 20, SIZE, SIZE), 128, np.uint8)
    images[:, :, 0, 0] = np.arange(N_CLASSES)[:, None]
    images[:, :, 0, 1] = np.arange(20)[None, :]
    return jnp.asarray(images)


def _ids(batch: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Recover (class id, image id) of each image of a float episode batch made from tagged_images."""
    tags = np.rint(np.asarray(batch[:, 0, :2, 0]) * 255).astype(int)
    return tags[:, 0], tags[:, 1]


def test_shapes_dtype_and_range(tagged_images: jax.Array) -> None:
    ep = sample_episode(jax.random.key(0), tagged_images, WAY, SHOT, QUERY)
    assert isinstance(ep, Episode)
    assert ep.support.shape == (WAY * SHOT, SIZE, SIZE, 1) and ep.query.shape == (WAY * QUERY, SIZE, SIZE, 1)
    assert ep.support.dtype == jnp.float32 and ep.query.dtype == jnp.float32
    assert float(ep.support.min()) >= 0.0 and float(ep.support.max()) <= 1.0
    np.testing.assert_allclose(np.asarray(ep.support[:, 1, 1, 0]), 128 / 255, rtol=1e-6)


def test_labels_are_class_major() -> None:
    np.testing.assert_array_equal(episode_labels(3, 2), [0, 0, 1, 1, 2, 2])
    assert episode_labels(WAY, QUERY).shape == (WAY * QUERY,)


def test_classes_distinct_and_layout_class_major(tagged_images: jax.Array) -> None:
    for seed in range(20):
        ep = sample_episode(jax.random.key(seed), tagged_images, WAY, SHOT, QUERY)
        s_cls, _ = _ids(ep.support)
        q_cls, _ = _ids(ep.query)
        classes = s_cls[::SHOT]
        assert len(set(classes.tolist())) == WAY  # way distinct classes
        np.testing.assert_array_equal(s_cls, classes[np.asarray(episode_labels(WAY, SHOT))])
        np.testing.assert_array_equal(q_cls, classes[np.asarray(episode_labels(WAY, QUERY))])


def test_images_within_a_class_are_distinct_across_support_and_query(tagged_images: jax.Array) -> None:
    for seed in range(20):
        ep = sample_episode(jax.random.key(seed), tagged_images, WAY, SHOT, QUERY)
        _, s_img = _ids(ep.support)
        _, q_img = _ids(ep.query)
        for c in range(WAY):
            drawn = np.concatenate([s_img[c * SHOT : (c + 1) * SHOT], q_img[c * QUERY : (c + 1) * QUERY]])
            assert len(set(drawn.tolist())) == SHOT + QUERY  # no image twice, none in both support and query


def test_deterministic_in_key(tagged_images: jax.Array) -> None:
    a = sample_episode(jax.random.key(7), tagged_images, WAY, SHOT, QUERY)
    b = sample_episode(jax.random.key(7), tagged_images, WAY, SHOT, QUERY)
    c = sample_episode(jax.random.key(8), tagged_images, WAY, SHOT, QUERY)
    np.testing.assert_array_equal(a.support, b.support)
    np.testing.assert_array_equal(a.query, b.query)
    assert not np.array_equal(a.support, c.support)


def test_jit_matches_eager(tagged_images: jax.Array) -> None:
    key = jax.random.key(3)
    eager = sample_episode(key, tagged_images, WAY, SHOT, QUERY)
    jitted = jit_sample(key, tagged_images, way=WAY, shot=SHOT, query=QUERY)
    np.testing.assert_array_equal(eager.support, jitted.support)
    np.testing.assert_array_equal(eager.query, jitted.query)


def test_whole_class_can_be_used(tagged_images: jax.Array) -> None:
    ep = sample_episode(jax.random.key(1), tagged_images, way=N_CLASSES, shot=1, query=19)
    s_cls, s_img = _ids(ep.support)
    q_cls, q_img = _ids(ep.query)
    assert sorted(s_cls.tolist()) == list(range(N_CLASSES))
    for c in range(N_CLASSES):
        assert sorted([s_img[c], *q_img[c * 19 : (c + 1) * 19]]) == list(range(20))


@pytest.mark.parametrize("way, shot, query", [(N_CLASSES + 1, 1, 1), (5, 15, 6), (0, 1, 1), (5, 0, 1)])
def test_impossible_episode_is_config_error(tagged_images: jax.Array, way: int, shot: int, query: int) -> None:
    with pytest.raises(ConfigError):
        sample_episode(jax.random.key(0), tagged_images, way, shot, query)


def test_real_episode_images_come_from_chosen_classes(omniglot32: Omniglot) -> None:
    train = split_classes(omniglot32.class_names, "paper", seed=0)["train"]
    source = np.asarray(omniglot32.images[train])
    images = jnp.asarray(source)
    key = jax.random.key(11)
    ep = jit_sample(key, images, way=20, shot=5, query=15)
    class_idx, image_idx = sample_episode_indices(key, len(train), 20, 5, 15)
    class_idx, image_idx = np.asarray(class_idx), np.asarray(image_idx)
    expected = source[class_idx[:, None], image_idx] / 255.0  # (way, shot+query, S, S)
    np.testing.assert_allclose(ep.support[..., 0], expected[:, :5].reshape(100, 32, 32), atol=1e-6)
    np.testing.assert_allclose(ep.query[..., 0], expected[:, 5:].reshape(300, 32, 32), atol=1e-6)
    assert 0.01 < float(ep.support.mean()) < 0.25  # ink is 1.0 and sparse


def test_to_float_scales_and_adds_channel() -> None:
    out = to_float(jnp.array([[0, 51, 255]], jnp.uint8))
    assert out.shape == (1, 3, 1) and out.dtype == jnp.float32
    np.testing.assert_allclose(out[..., 0], [[0.0, 0.2, 1.0]], rtol=1e-6)


def test_evaluation_episode_keys_are_fixed_by_the_eval_key_and_distinct() -> None:
    keys = episode_keys(jax.random.key(123), 50)
    assert keys.shape == (50,) and jnp.issubdtype(keys.dtype, jax.dtypes.prng_key)
    data = np.asarray(jax.random.key_data(keys))
    np.testing.assert_array_equal(data, np.asarray(jax.random.key_data(episode_keys(jax.random.key(123), 50))))
    assert len(np.unique(data, axis=0)) == 50
    assert not np.array_equal(data, np.asarray(jax.random.key_data(episode_keys(jax.random.key(124), 50))))
    batched = jax.vmap(functools.partial(sample_episode_indices, n_classes=N_CLASSES, way=WAY, shot=SHOT, query=QUERY))
    class_idx, _ = batched(keys)
    assert class_idx.shape == (50, WAY) and len({tuple(r) for r in np.asarray(class_idx).tolist()}) > 40
