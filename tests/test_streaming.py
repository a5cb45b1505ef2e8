"""The streamed ProtoNet loss equals the one-batch loss of protonet.py, for any chunk size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from esmeta.data.episodes import Episode
from esmeta.protonet import init_params, loss_and_accuracy
from esmeta.streaming import Moments, chunk_moments, episode_images_at, merge, streamed_loss_and_accuracy

WAY, SHOT, QUERY, CHANNELS, SIZE = 5, 3, 2, 8, 32


@pytest.fixture(scope="module")
def problem():
    """A 5-way 3-shot 2-query episode of random images (support 15 rows, 25 in all) and an 8-channel net."""
    rng = np.random.default_rng(0)
    episode = Episode(
        jnp.asarray(rng.random((WAY * SHOT, SIZE, SIZE, 1), np.float32)),
        jnp.asarray(rng.random((WAY * QUERY, SIZE, SIZE, 1), np.float32)),
    )
    return init_params(jax.random.key(0), CHANNELS, SIZE), episode


def streamed(params, episode, chunk, distance, norm_stats):
    return streamed_loss_and_accuracy(
        params, episode_images_at(episode), n_support=WAY * SHOT, n_query=WAY * QUERY, way=WAY, chunk=chunk,
        distance=distance, scale=3.0, norm_stats=norm_stats,
    )


# 5 divides support (15) and query (10); 4 and 7 divide neither; 1 is row by row; 64 exceeds all 25 rows.
@pytest.mark.parametrize(
    "chunk,distance,norm_stats",
    [(1, "euclidean", "episode"), (4, "euclidean", "support"), (5, "cosine", "episode"), (7, "euclidean", "episode"),
     (7, "cosine", "support"), (64, "euclidean", "episode")],
)
def test_streamed_loss_equals_one_batch_loss(problem, chunk, distance, norm_stats):
    params, episode = problem
    kw = {"way": WAY, "distance": distance, "scale": 3.0, "norm_stats": norm_stats}
    loss, accuracy = jax.jit(lambda p, e: loss_and_accuracy(p, e, **kw))(params, episode)
    s_loss, s_accuracy = jax.jit(lambda p, e: streamed(p, e, chunk, distance, norm_stats))(params, episode)
    assert abs(float(s_loss) - float(loss)) < 1e-5 * max(1.0, abs(float(loss)))
    assert float(s_accuracy) == float(accuracy)


def test_streamed_gradient_equals_one_batch_gradient(problem):
    """Same function, so same derivative: what lets forward mode on the stream reproduce backprop."""
    params, episode = problem
    kw = {"way": WAY, "distance": "euclidean", "scale": 3.0, "norm_stats": "episode"}
    g = jax.jit(jax.grad(lambda p: loss_and_accuracy(p, episode, **kw)[0]))(params)
    g_streamed = jax.jit(jax.grad(lambda p: streamed(p, episode, 4, "euclidean", "episode")[0]))(params)
    a, b = ravel_pytree(g_streamed)[0], ravel_pytree(g)[0]
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5 * float(jnp.abs(b).max()))


def test_merged_moments_equal_the_moments_of_the_union():
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 2.0, (23, 4)).astype(np.float32)  # a large mean: where sum-of-squares would lose digits
    valid = np.arange(23) < 20  # the last 3 rows are padding
    parts = [chunk_moments(jnp.asarray(x[i : i + 6]), jnp.asarray(valid[i : i + 6]), True) for i in range(0, 23, 6)]
    total = Moments(jnp.float32(0.0), jnp.zeros(4), jnp.zeros((4, 4)))
    for part in parts:
        total = merge(total, part)
    ref = x[:20]
    assert float(total.count) == 20.0
    np.testing.assert_allclose(total.mean, ref.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(total.m2 / 20.0, np.cov(ref.T, bias=True), rtol=1e-4, atol=1e-5)
