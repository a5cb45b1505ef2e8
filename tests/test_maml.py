"""MAML's meta-gradients against independent oracles, on a tiny net where float64 makes the comparisons tight.

The tiny learner: features tanh(x W) of 3x3 "images", a linear head; 3-way 2-shot 2-query.
"""

from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta import maml
from esmeta.data.episodes import Episode

WAY, SHOT, QUERY, HIDDEN, LR = 3, 2, 2, 4, 0.5


def tanh_features(w, images):
    return jnp.tanh(images.reshape(images.shape[0], -1) @ w)


def tiny_problem(seed=0):
    """(params, episode) in float64 numpy: W (9, 4), a random head, 3-way 2-shot 2-query 3x3 images."""
    rng = np.random.default_rng(seed)
    params = {"backbone": rng.normal(0, 0.5, (9, HIDDEN)),
              "head": {"kernel": rng.normal(0, 0.5, (HIDDEN, WAY)), "bias": rng.normal(0, 0.1, WAY)}}
    episode = Episode(rng.random((WAY * SHOT, 3, 3, 1)), rng.random((WAY * QUERY, 3, 3, 1)))
    return params, episode


@partial(jax.jit, static_argnums=(2, 3))
def outer_loss(params, episode, steps, first_order=False):
    return maml.episode_metrics(params, episode, way=WAY, steps=steps, lr=LR, first_order=first_order,
                                features=tanh_features)[0]


@pytest.mark.parametrize("steps", [1, 3])
def test_second_order_meta_gradient_matches_finite_differences_of_the_unrolled_loss(steps):
    with jax.enable_x64(True):
        params, episode = tiny_problem()
        params = jax.tree.map(jnp.asarray, params)
        episode = Episode(*map(jnp.asarray, episode))
        grad = jax.grad(outer_loss)(params, episode, steps)
        rng, h = np.random.default_rng(1), 1e-5

        def moved(v, step):
            return outer_loss(jax.tree.map(lambda p, d: p + step * d, params, v), episode, steps)

        for _ in range(3):  # directional derivatives along random directions: g.v = (L(p + hv) - L(p - hv)) / 2h
            v = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape)), params)
            numeric = (moved(v, h) - moved(v, -h)) / (2 * h)
            analytic = sum(jnp.vdot(g, d) for g, d in zip(jax.tree.leaves(grad), jax.tree.leaves(v)))
            # central differences in float64: truncation ~h^2 * L''' ~ 1e-10, rounding ~1e-16 / h ~ 1e-11
            np.testing.assert_allclose(float(analytic), float(numeric), rtol=1e-7, atol=1e-9)


def numpy_gradients(w, a, b, x, labels):
    """Cross-entropy of softmax(tanh(x w) a + b) and its gradients, by hand (the chain rule written out)."""
    h = np.tanh(x @ w)
    z = h @ a + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = len(labels)
    dz = (p - np.eye(a.shape[1])[labels]) / n
    dh = dz @ a.T
    loss = -np.mean(np.log(p[np.arange(n), labels]))
    return loss, x.T @ (dh * (1 - h**2)), h.T @ dz, dz.sum(axis=0)


@pytest.mark.parametrize("steps", [1, 4])
def test_first_order_meta_gradient_is_the_query_gradient_at_the_adapted_parameters(steps):
    params, episode = tiny_problem(seed=2)
    support, query = (x.reshape(x.shape[0], -1) for x in episode)
    labels = lambda per_class: np.repeat(np.arange(WAY), per_class)  # noqa: E731
    w, a, b = params["backbone"], params["head"]["kernel"], params["head"]["bias"]
    for _ in range(steps):  # plain SGD on the support set, by hand
        _, gw, ga, gb = numpy_gradients(w, a, b, support, labels(SHOT))
        w, a, b = w - LR * gw, a - LR * ga, b - LR * gb
    _, want_w, want_a, want_b = numpy_gradients(w, a, b, query, labels(QUERY))
    with jax.enable_x64(True):
        got = jax.grad(outer_loss)(jax.tree.map(jnp.asarray, params), Episode(*map(jnp.asarray, episode)), steps, True)
    for name, g, want in (("W", got["backbone"], want_w), ("head", got["head"]["kernel"], want_a),
                          ("bias", got["head"]["bias"], want_b)):
        np.testing.assert_allclose(np.asarray(g), want, rtol=1e-10, atol=1e-13, err_msg=name)


def test_first_and_second_order_share_the_loss_and_differ_in_the_gradient():
    with jax.enable_x64(True):
        params, episode = tiny_problem(seed=3)
        params = jax.tree.map(jnp.asarray, params)
        episode = Episode(*map(jnp.asarray, episode))
        assert float(outer_loss(params, episode, 2)) == float(outer_loss(params, episode, 2, first_order=True))
        second = jax.grad(outer_loss)(params, episode, 2)
        first = jax.grad(outer_loss)(params, episode, 2, True)
        gap = max(float(jnp.max(jnp.abs(s - f))) for s, f in zip(jax.tree.leaves(second), jax.tree.leaves(first)))
        assert gap > 1e-4  # the inner steps' curvature is what first order drops


def test_the_conv_learner_adapts_towards_its_support_labels():
    """On the real backbone: a few inner steps lower the support loss from the zero head's log(way)."""
    rng = np.random.default_rng(4)
    episode = Episode(jnp.asarray(rng.random((WAY * SHOT, 16, 16, 1)), jnp.float32),
                      jnp.asarray(rng.random((WAY * QUERY, 16, 16, 1)), jnp.float32))
    params = maml.init_params(jax.random.key(0), channels=4, image_size=16, way=WAY)
    labels = jnp.repeat(jnp.arange(WAY), SHOT)
    before = maml.cross_entropy(maml.logits(params, episode.support), labels)
    np.testing.assert_allclose(float(before), np.log(WAY), rtol=1e-6)  # a zero head: every class equally likely
    support_loss_after = jax.jit(lambda p, k: maml.cross_entropy(
        maml.logits(maml.adapt(p, episode.support, labels, steps=k, lr=LR), episode.support), labels),
        static_argnums=1)
    after = [float(support_loss_after(params, k)) for k in (1, 5)]
    assert after[1] < after[0] < float(before)
    loss, accuracy, stats = jax.jit(maml.make_metrics_fn(way=WAY, steps=5, lr=LR))(params, episode)
    assert np.isfinite(float(loss)) and 0.0 <= float(accuracy) <= 1.0 and stats == {}


def numpy_unrolled_loss(params, support, query, steps):
    """The outer loss by hand: `steps` SGD steps on the support set (numpy_gradients), the query loss after."""
    labels = lambda per_class: np.repeat(np.arange(WAY), per_class)  # noqa: E731
    w, a, b = (np.asarray(x, np.float64) for x in (params["backbone"], params["head"]["kernel"], params["head"]["bias"]))
    for _ in range(steps):
        _, gw, ga, gb = numpy_gradients(w, a, b, support, labels(SHOT))
        w, a, b = w - LR * gw, a - LR * ga, b - LR * gb
    return numpy_gradients(w, a, b, query, labels(QUERY))[0]


def test_wsr_over_the_unrolled_loss_is_eq9_computed_by_hand():
    """ES-MAML: every candidate mu + eps_i adapts with exact inner gradients and is scored on the query set; the
    estimate is eq. 9 over those fitnesses, per shard z-scored and averaged (here 2 shards of 8)."""
    from esmeta.estimators import WsrConfig, make_estimator
    from esmeta.estimators.wsr import candidate_noise

    params, episode = tiny_problem(seed=5)
    params32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    episode32 = Episode(*(jnp.asarray(x, jnp.float32) for x in episode))
    sigma, key, shards, per_shard, steps = 0.05, jax.random.key(7), 2, 8, 2
    estimate = make_estimator(WsrConfig(pop_per_shard=per_shard), sigma,
                              lambda p, ep: outer_loss(p, ep, steps), None, shards)
    g, _ = jax.jit(estimate)(key, params32, episode32)

    support, query = (np.asarray(x, np.float64).reshape(x.shape[0], -1) for x in episode32)
    flat_mu, unravel = jax.flatten_util.ravel_pytree(params32)
    eps = np.stack([np.asarray(jax.flatten_util.ravel_pytree(
        candidate_noise(key, params32, jnp.int32(i), sigma, False))[0], np.float64) for i in range(shards * per_shard)])
    fitness = np.array([-numpy_unrolled_loss(unravel(flat_mu + e), support, query, steps) for e in eps])
    want = np.mean([((f - f.mean()) / (f.std() + 1e-8))[:, None] * e
                    for f, e in zip(np.split(fitness, shards), np.split(eps, shards))], axis=(0, 1))
    got = np.asarray(jax.flatten_util.ravel_pytree(g)[0], np.float64)
    # float32 fitnesses differ from float64 ones by ~1e-7 relative; z-scores divide by std F (~1e-2 here), so
    # each weight moves by ~1e-5: 1e-3 of the estimate's norm is ample and still fails on any wrong candidate
    assert np.linalg.norm(got - want) <= 1e-3 * np.linalg.norm(want)
