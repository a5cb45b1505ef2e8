"""Finite differences as an ES population (Sheng & He Sec. II.G): accuracy, coordinate coverage, shards, guards."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from esmeta.data.episodes import Episode
from esmeta.estimators import EstimatorConfig, FiniteDiffConfig, make_estimator
from esmeta.protonet import init_params, make_loss_fn

MU = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.5, -0.25, 2.0, 0.0, 1.0])}
CURV = jax.tree.map(lambda x: 1.0 + jnp.abs(x), MU)  # per-coordinate curvature c
D = 17


def quadratic_loss(params, batch):
    """L = sum c (x - batch)^2: dF/dx = -2c(x - batch); forward difference adds exactly -c h."""
    return sum(jnp.sum(c * (p - batch) ** 2) for p, c in zip(jax.tree.leaves(params), jax.tree.leaves(CURV)))


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], np.float64)


@functools.cache
def jitted(config: EstimatorConfig, loss, shards: int):
    """One compilation per setting, shared by the tests."""
    return jax.jit(make_estimator(config, 0.01, loss, None, shards))


def estimate(loss, params, batch, key=0, shards=1, **settings):
    return jitted(FiniteDiffConfig(**settings), loss, shards)(jax.random.key(key), params, batch)


def rounding_atol(loss, h: float) -> float:
    """Absolute tolerance between two float32 programs of one finite-difference estimate.

    Each program rounds a fitness F by ~2^-24 |F|, and a probe divides a difference of two fitnesses by h;
    10x that leaves room for the summation order of any CPU.
    """
    return 10 * 2.0**-24 * abs(float(loss(MU, 0.5))) / h


def relative_error(g, true) -> float:
    return float(np.linalg.norm(flat(g) - flat(true)) / np.linalg.norm(flat(true)))


def test_all_coordinates_match_backprop_on_protonet():
    """At the real initialization. ReLU and max-pool kinks crossed by a nudge are the main error
    (it shrinks with h): ~0.3% central at h=1e-4, ~3% forward at the paper's h=1e-3 on this episode."""
    rng = np.random.default_rng(0)
    episode = Episode(rng.random((6, 16, 16, 1), np.float32), rng.random((6, 16, 16, 1), np.float32))
    loss = make_loss_fn(way=3, distance="euclidean", scale=1.0, norm_stats="episode")
    params = jax.jit(init_params, static_argnums=(1, 2))(jax.random.key(0), 3, 16)
    n = flat(params).size  # 3 channels: 318 parameters
    true = jax.jit(jax.grad(lambda p: -loss(p, episode)))(params)
    central, metrics = estimate(loss, params, episode, pop_per_shard=n, central=True, fd_sigma=1e-4)
    forward, _ = estimate(loss, params, episode, pop_per_shard=n, fd_sigma=1e-3)
    assert relative_error(central, true) < 0.02
    assert relative_error(forward, true) < 0.05
    assert int(metrics["candidates"]) == 2 * n


def test_forward_and_central_differences_on_a_quadratic():
    true = jax.grad(lambda p: -quadratic_loss(p, 0.5))(MU)
    h = 1e-2
    forward, metrics = estimate(quadratic_loss, MU, 0.5, pop_per_shard=D, fd_sigma=h)
    central, _ = estimate(quadratic_loss, MU, 0.5, pop_per_shard=D, fd_sigma=h, central=True)
    np.testing.assert_allclose(flat(forward), flat(true) - h * flat(CURV), atol=2e-3)
    np.testing.assert_allclose(flat(central), flat(true), atol=2e-3)
    assert int(metrics["candidates"]) == D + 1  # mu and one nudge per coordinate
    np.testing.assert_allclose(float(metrics["fitness_max"]), -float(quadratic_loss(MU, 0.5)) + 0.1, atol=0.1)


def test_small_population_probes_a_fresh_distinct_subset():
    true = flat(jax.grad(lambda p: -quadratic_loss(p, 3.0))(MU))  # nonzero in every coordinate
    probed = []
    for key in (0, 1):
        g, metrics = estimate(quadratic_loss, MU, 3.0, key=key, shards=2, pop_per_shard=3, central=True)
        nonzero = np.flatnonzero(flat(g))
        assert nonzero.size == 6  # 2 shards x 3 distinct coordinates, none probed twice
        np.testing.assert_allclose(flat(g)[nonzero], true[nonzero], rtol=2e-2)
        assert int(metrics["candidates"]) == 12
        probed.append(set(nonzero))
    assert probed[0] != probed[1]


def test_shards_sum_their_disjoint_coordinates():
    """4 shards x 5 probes cover all 17 coordinates once (3 spare probes ignored), as 1 shard x 20 does."""
    one, _ = estimate(quadratic_loss, MU, 0.5, shards=1, pop_per_shard=20, central=True)
    four, metrics = estimate(quadratic_loss, MU, 0.5, shards=4, pop_per_shard=5, central=True)
    np.testing.assert_allclose(flat(four), flat(one), rtol=0, atol=rounding_atol(quadratic_loss, 1e-3))
    true = jax.grad(lambda p: -quadratic_loss(p, 0.5))(MU)
    np.testing.assert_allclose(flat(four), flat(true), atol=2e-2)  # the gradient itself, not gradient / shards
    assert int(metrics["candidates"]) == 40


def test_nonfinite_probes_are_masked_and_counted():
    """Nudging the last parameter gives NaN: its entry is 0, every other one is the difference."""
    nan_on_last = lambda p, b: jnp.where(p["w"][2, 3] > MU["w"][2, 3], jnp.nan, quadratic_loss(p, b))  # noqa: E731
    g, metrics = estimate(nan_on_last, MU, 0.5, pop_per_shard=D, fd_sigma=1e-2)
    reference, _ = estimate(quadratic_loss, MU, 0.5, pop_per_shard=D, fd_sigma=1e-2)
    last = int(np.argmax(flat({"b": jnp.zeros(5), "w": jnp.zeros((3, 4)).at[2, 3].set(1.0)})))
    expected = flat(reference)
    expected[last] = 0.0
    np.testing.assert_allclose(flat(g), expected, rtol=0, atol=rounding_atol(quadratic_loss, 1e-2))
    assert float(metrics["nonfinite"]) == 1.0 and float(metrics["zero_update"]) == 0.0


def test_constant_or_nonfinite_mean_gives_zero_update():
    flat_loss = lambda p, b: b + 0.0 * ravel_pytree(p)[0].sum()  # noqa: E731
    g, metrics = estimate(flat_loss, MU, 0.5, pop_per_shard=D)
    assert np.all(flat(g) == 0.0) and float(metrics["zero_update"]) == 1.0
    nan_at_mu = lambda p, b: jnp.where(jnp.all(ravel_pytree(p)[0] == ravel_pytree(MU)[0]), jnp.nan, b)  # noqa: E731
    g, metrics = estimate(nan_at_mu, MU, 0.5, pop_per_shard=D)
    assert np.all(flat(g) == 0.0) and float(metrics["nonfinite"]) == 1.0 and float(metrics["zero_update"]) == 1.0
