"""Batch norm with running averages (model.norm_stats=running): the reference ProtoNet's evaluation protocol."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from esmeta.data.episodes import Episode, sample_episode
from esmeta.estimators import BackpropConfig, make_estimator
from esmeta.protonet import (
    MOMENTUM,
    ConvEmbedding,
    embed,
    embed_with_moments,
    episode_logits,
    episode_metrics,
    init_batch_stats,
    init_params,
    update_running,
)
from esmeta.train import make_train_step

WAY, SHOT, QUERY, SIZE = 3, 2, 2, 16


def _episode(seed: int = 0) -> Episode:
    r = np.random.default_rng(seed)
    return Episode(
        support=jnp.asarray(r.random((WAY * SHOT, SIZE, SIZE, 1)), jnp.float32),
        query=jnp.asarray(r.random((WAY * QUERY, SIZE, SIZE, 1)), jnp.float32),
    )


def _some_running_stats(params, seed: int = 1):
    """Running averages away from their initial (0, 1), so that a test of their use is not a test of the init:
    the statistics of another batch of images (any size works: they are per channel), each scaled by a random
    factor in [0.8, 1.25]."""
    r = np.random.default_rng(seed)
    other = jnp.asarray(r.random((10, SIZE, SIZE, 1)), jnp.float32)
    _, moments = embed_with_moments(params, other)
    return {
        name: {k: m[k] * jnp.asarray(r.uniform(0.8, 1.25, m[k].shape), jnp.float32) for k in ("mean", "var")}
        for name, m in moments.items()
    }


def test_with_running_statistics_a_querys_logits_do_not_depend_on_the_other_queries():
    ep = _episode()
    params = init_params(jax.random.key(0), 4, SIZE)
    running = _some_running_stats(params)
    changed = Episode(ep.support, ep.query.at[0].set(1.0 - ep.query[0]))
    kw = dict(way=WAY, distance="euclidean", scale=1.0, norm_stats="running")
    a = episode_logits(params, ep, running=running, **kw)
    b = episode_logits(params, changed, running=running, **kw)
    # The other queries' logits come from the same numbers through row-wise operations of the same shapes:
    # equal up to (at most) reassociation rounding, 1e-6 of their magnitude; dependence would show at ~1e-2.
    scale = float(jnp.max(jnp.abs(a)))
    assert scale > 0
    np.testing.assert_allclose(a[1:], b[1:], rtol=0, atol=1e-6 * scale)
    assert float(jnp.max(jnp.abs(a[0] - b[0]))) > 1e-3 * scale  # the changed query's own logits do move
    # Without `running` (training, or norm_stats=episode) the same change moves every query: transductive.
    c, d = episode_logits(params, ep, **kw), episode_logits(params, changed, **kw)
    assert float(jnp.max(jnp.abs(c[1:] - d[1:]))) > 1e-3 * float(jnp.max(jnp.abs(c)))


@pytest.mark.parametrize("channels,size", [(8, 32), (4, 28)])
def test_fast_embedding_with_running_statistics_equals_the_flax_reference(channels, size):
    """With fixed statistics the fast path folds the first batch norm into an affine conv; the flax module
    in eval mode (`use_running`) normalizes its conv output explicitly."""
    params = init_params(jax.random.key(3), channels, size)
    running = _some_running_stats(params)
    images = (jax.random.uniform(jax.random.key(4), (12, size, size, 1)) > 0.8).astype(jnp.float32)
    fast = embed(params, images, running=running)
    reference = ConvEmbedding(channels).apply({"params": params, "batch_stats": running}, images, None, True)
    # The same float32 arithmetic in another order (the first block's scale folded into its weights, pooling
    # before the affine map): rounding of O(1e-7) relative per operation over sums of at most 9*channels
    # terms, four blocks deep; 1e-4 of the embeddings' largest magnitude bounds that with a wide margin.
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-4 * scale)
    # And the batch-statistics path of the same function is different (the running averages are used).
    assert float(jnp.max(jnp.abs(embed(params, images) - fast))) > 1e-2 * scale


def test_running_update_matches_a_hand_computation():
    """One EMA step from the flax reference's pre-normalization activations, in float64 with NumPy:
    r <- 0.9 r + 0.1 batch mean, and the variance averaged is the unbiased one (ddof=1), as PyTorch."""
    ep = _episode()
    channels = 4
    params = init_params(jax.random.key(5), channels, SIZE)
    images = jnp.concatenate([ep.support, ep.query])
    _, state = ConvEmbedding(channels).apply(
        {"params": params}, images, capture_intermediates=lambda mdl, _: isinstance(mdl, nn.Conv)
    )
    running = _some_running_stats(params)
    _, moments = embed_with_moments(params, images)
    updated = update_running(running, moments)
    assert MOMENTUM == 0.1
    for block in range(4):
        y = np.asarray(state["intermediates"][f"Conv_{block}"]["__call__"][0], np.float64).reshape(-1, channels)
        r = running[f"EpisodeBatchNorm_{block}"]
        want_mean = 0.9 * np.asarray(r["mean"], np.float64) + 0.1 * y.mean(axis=0)
        want_var = 0.9 * np.asarray(r["var"], np.float64) + 0.1 * y.var(axis=0, ddof=1)
        got = updated[f"EpisodeBatchNorm_{block}"]
        # float32 statistics of <= 1,000 values per channel against float64: a relative 1e-4 of the
        # activations' spread covers the rounding (the fold computes block 0's variance as w'Sw).
        spread = float(np.abs(y).max())
        np.testing.assert_allclose(got["mean"], want_mean, rtol=0, atol=1e-4 * spread)
        np.testing.assert_allclose(got["var"], want_var, rtol=1e-4, atol=1e-4 * spread**2)


def test_the_training_step_updates_the_running_averages_at_the_mean_parameters():
    """One jitted step: the new averages are `update_running` of the statistics of the forward pass at the
    parameters before the step, on the step's episode (PyTorch's train-mode forward, then the update)."""
    channels = 4
    images = jnp.asarray(np.random.default_rng(0).random((6, 20, SIZE, SIZE)) * 255, jnp.uint8)
    sample = lambda key: sample_episode(key, images, WAY, SHOT, QUERY)  # noqa: E731
    kw = dict(way=WAY, distance="euclidean", scale=1.0, norm_stats="running")
    metrics = lambda p, e, running=None: episode_metrics(p, e, running=running, **kw)  # noqa: E731
    estimate = make_estimator(BackpropConfig(), 0.0, lambda p, e: metrics(p, e)[0], None, 1)
    optimizer = optax.sgd(0.1)
    params = init_params(jax.random.key(0), channels, SIZE)
    running = init_batch_stats(params)
    key = jax.random.key(7)
    episode = sample(jax.random.split(key)[0])
    want = update_running(running, metrics(params, episode)[2])
    step = make_train_step(estimate, optimizer, sample, metrics, update_running)
    new_params, _, got, _ = step(params, optimizer.init(params), running, key)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # the same computation, jitted vs not
    before = init_params(jax.random.key(0), channels, SIZE)  # `params` was donated to the step
    assert float(jnp.abs(new_params["Conv_1"]["kernel"] - before["Conv_1"]["kernel"]).max()) > 0


@pytest.mark.parametrize("chunk", [1, 5])
def test_the_streamed_loss_with_running_statistics_equals_the_one_batch_loss(chunk):
    """streaming.py evaluates with fixed averages too (no statistics passes): same loss and accuracy."""
    from esmeta.streaming import episode_images_at, streamed_loss_and_accuracy

    ep = _episode()
    params = init_params(jax.random.key(2), 4, SIZE)
    running = _some_running_stats(params)
    loss, accuracy, _ = episode_metrics(
        params, ep, way=WAY, distance="cosine", scale=3.0, norm_stats="running", running=running
    )
    s_loss, s_accuracy = streamed_loss_and_accuracy(
        params, episode_images_at(ep), n_support=WAY * SHOT, n_query=WAY * QUERY, way=WAY, chunk=chunk,
        distance="cosine", scale=3.0, norm_stats="running", running=running,
    )
    # The same per-row operations in chunks; losses O(1): 1e-5 as in tests/test_streaming.py.
    assert abs(float(s_loss) - float(loss)) < 1e-5 * max(1.0, abs(float(loss)))
    assert float(s_accuracy) == float(accuracy)
