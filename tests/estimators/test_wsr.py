"""WSR (Sheng & He eq. 9): the estimate against a transcription of the equation, its geometry, its guards."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from esmeta.estimators import EstimatorConfig, WsrConfig, make_estimator
from esmeta.estimators.wsr import candidate_noise, shape_fitness

SIGMA = 0.1
MU = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.5, -0.25, 2.0, 0.0, 1.0])}
TARGET = jax.tree.map(lambda x: jnp.cos(3.0 * x) + 0.3, MU)


def quadratic_loss(params, batch):
    """Sum of squared distances to `batch` * TARGET; batch is a scalar so that the same fn serves every test."""
    return sum(jnp.sum((p - batch * t) ** 2) for p, t in zip(jax.tree.leaves(params), jax.tree.leaves(TARGET)))


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], np.float64)


def zscore_rtol(metrics) -> float:
    """Relative tolerance between two float32 programs (other shards, normalization or batching) of one estimate.

    Each program rounds a fitness F differently by about 2^-24 |F|; z-scoring divides that by std F, and the
    estimate is linear in the z-scores. 10x that leaves room for the summation order of any CPU.
    """
    worst_f = abs(float(metrics["fitness_mean"])) + 3.0 * float(metrics["fitness_std"])
    return 10 * 2.0**-24 * worst_f / float(metrics["fitness_std"])


def assert_same_estimate(actual, expected, rtol: float) -> None:
    """||actual - expected|| <= rtol ||expected||: the whole estimate, as z-score noise spreads over every entry."""
    a, e = flat(actual), flat(expected)
    assert np.linalg.norm(a - e) <= rtol * np.linalg.norm(e), f"relative error {np.linalg.norm(a - e) / np.linalg.norm(e):.1e} > {rtol:.1e}"


def cosine(a, b) -> float:
    a, b = flat(a), flat(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@functools.cache
def jitted(config: EstimatorConfig, sigma: float, loss, shards: int):
    """One compilation per setting, shared by the tests."""
    return jax.jit(make_estimator(config, sigma, loss, None, shards))


def estimate(loss, params, batch, key=0, shards=1, sigma=SIGMA, **settings):
    return jitted(WsrConfig(**settings), sigma, loss, shards)(jax.random.key(key), params, batch)


def noise_matrix(key: int, n: int, antithetic: bool = False) -> np.ndarray:
    """(n, D) perturbations eps_i of global candidates 0..n-1, regenerated from the key."""
    return np.stack([flat(candidate_noise(jax.random.key(key), MU, jnp.int32(i), SIGMA, antithetic)) for i in range(n)])


def eq9(fitness_n: np.ndarray, eps_nd: np.ndarray, shards: int) -> np.ndarray:
    """Eq. 9 per shard, z-scored within the shard, then the mean over shards (the all-reduce)."""
    g = []
    for f, e in zip(np.split(fitness_n, shards), np.split(eps_nd, shards)):
        z = (f - f.mean()) / (f.std() + 1e-8)
        g.append((z[:, None] * e).mean(axis=0))
    return np.mean(g, axis=0)


def test_matches_transcription_of_eq9_over_two_shards():
    g, metrics = estimate(quadratic_loss, MU, 1.0, key=3, shards=2, pop_per_shard=6)
    eps = noise_matrix(3, 12)
    fitness = np.array([-float(quadratic_loss(ravel_pytree(MU)[1](flat(MU) + e), 1.0)) for e in eps])
    np.testing.assert_allclose(flat(g), eq9(fitness, eps, shards=2), rtol=1e-4, atol=1e-7)
    assert int(metrics["candidates"]) == 12
    np.testing.assert_allclose(float(metrics["fitness_mean"]), fitness.mean(), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["fitness_max"]), fitness.max(), rtol=1e-6)


@pytest.mark.parametrize("eval_mode", ["map", "vmap"])
def test_each_shard_its_own_episode_matches_eq9_with_shard_s_on_episode_s(eval_mode):
    """shard_episodes=own: the batch stacks one episode per shard; shard s's candidates are evaluated on episode s
    (here a scalar that scales the target), z-scored within the shard, and the shards' g_s averaged."""
    episodes = jnp.array([1.0, -0.5, 2.0])
    g, _ = estimate(quadratic_loss, MU, episodes, key=3, shards=3, pop_per_shard=4, shard_episodes="own",
                    eval_mode=eval_mode)
    eps = noise_matrix(3, 12)
    fitness = np.array([-float(quadratic_loss(ravel_pytree(MU)[1](flat(MU) + e), float(episodes[i // 4])))
                        for i, e in enumerate(eps)])
    np.testing.assert_allclose(flat(g), eq9(fitness, eps, shards=3), rtol=1e-4, atol=1e-7)
    shared, _ = estimate(quadratic_loss, MU, 1.0, key=3, shards=3, pop_per_shard=4)
    assert not np.allclose(flat(g), flat(shared))  # the episodes matter: not the shared reading


def test_quadratic_large_population_points_along_gradient_with_step_sigma():
    """cos >= 0.95 to the true gradient; z-scoring removes F's scale, so |g| ~ sigma (eps includes sigma)."""
    steep = lambda p, b: 1000.0 * quadratic_loss(p, b)  # noqa: E731
    g, _ = estimate(steep, MU, 1.0, pop_per_shard=4096, sigma=0.01)
    true = jax.grad(lambda p: -quadratic_loss(p, 1.0))(MU)
    assert cosine(g, true) >= 0.95
    assert 0.8 * 0.01 < float(np.linalg.norm(flat(g))) < 1.05 * 0.01


def test_protonet_cosine_to_backprop_grows_with_population(tiny_protonet):
    loss, params, episode = tiny_protonet  # 150 parameters
    true = jax.jit(jax.grad(lambda p: -loss(p, episode)))(params)
    mean_cos = {}
    for pop in (16, 1024):
        config = WsrConfig(pop_per_shard=pop)
        est = jax.jit(make_estimator(config, 0.01, loss, None, 1))
        mean_cos[pop] = np.mean([cosine(est(jax.random.key(k), params, episode)[0], true) for k in range(2)])
    # cos ~ sqrt(n / (n + D)) predicts ~0.3 and ~0.93
    assert mean_cos[1024] > mean_cos[16] + 0.3, mean_cos
    assert mean_cos[1024] > 0.8, mean_cos


@pytest.mark.parametrize("antithetic", [True, False])
def test_linear_fitness_gives_normalized_preconditioned_gradient(antithetic):
    """On F(x) = a.x + b, z-scored WSR is exactly M a / sqrt(a' M a), M the noise's sample covariance.

    With mirrored pairs the noise mean is exactly 0, so M is the plain second moment of the drawn
    directions and the baseline mean F equals F(mu) (eq. 9's F(m)) with no sampling error; without
    pairs M is centred at the sample mean of the noise.
    """
    a = jnp.asarray(np.random.default_rng(0).normal(size=flat(MU).size), jnp.float32)
    unravel = ravel_pytree(MU)[1]
    linear_loss = lambda p, b: -(jnp.dot(ravel_pytree(p)[0], a) + b)  # noqa: E731
    g, metrics = estimate(linear_loss, MU, 3.0, key=5, pop_per_shard=16, antithetic=antithetic)
    eps = noise_matrix(5, 16, antithetic).astype(np.float64)
    a64 = np.asarray(a, np.float64)
    centred = eps if antithetic else eps - eps.mean(axis=0)
    m = centred.T @ centred / len(eps)
    expected = m @ a64 / np.sqrt(a64 @ m @ a64)
    np.testing.assert_allclose(flat(g), expected, rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(flat(g) @ a64, np.sqrt(a64 @ m @ a64), rtol=2e-3)  # a.g = std of F
    f_mu = float(-linear_loss(unravel(flat(MU)), 3.0))
    if antithetic:
        np.testing.assert_allclose(float(metrics["fitness_mean"]), f_mu, rtol=1e-5)
        uncentred = eps.T @ eps / len(eps)
        np.testing.assert_allclose(m, uncentred, atol=1e-12)
    else:
        assert abs(float(metrics["fitness_mean"]) - f_mu) > 1e-3  # the sample mean misses F(mu)


@pytest.mark.parametrize("shaping", ["zscore", "centered_rank"])
def test_per_shard_and_global_agree_with_one_shard(shaping):
    per_shard, metrics = estimate(quadratic_loss, MU, 1.0, pop_per_shard=32, fitness_shaping=shaping)
    global_, _ = estimate(quadratic_loss, MU, 1.0, pop_per_shard=32, fitness_shaping=shaping, normalize="global")
    # ranks are exact unless two fitnesses swap order, which rounding of 1e-7 |F| cannot do at these spacings
    assert_same_estimate(per_shard, global_, rtol=1e-6 if shaping == "centered_rank" else zscore_rtol(metrics))


def test_global_normalization_does_not_depend_on_shard_count():
    one, metrics = estimate(quadratic_loss, MU, 1.0, shards=1, pop_per_shard=32, normalize="global")
    four, _ = estimate(quadratic_loss, MU, 1.0, shards=4, pop_per_shard=8, normalize="global")
    per_shard, _ = estimate(quadratic_loss, MU, 1.0, shards=4, pop_per_shard=8)
    assert_same_estimate(four, one, rtol=zscore_rtol(metrics))
    assert not np.allclose(flat(per_shard), flat(one), rtol=1e-3)  # per-shard z-scores do depend on it


def test_equal_fitness_gives_zero_update_flagged():
    g, metrics = estimate(lambda p, b: b * 0.1 + 0.0 * ravel_pytree(p)[0].sum(), MU, 1.0, pop_per_shard=12)
    assert np.all(flat(g) == 0.0)
    assert float(metrics["zero_update"]) == 1.0
    assert float(metrics["fitness_std"]) < 1e-6


def test_nonfinite_fitness_is_masked_and_counted():
    """Candidates whose first weight moved up get NaN; the rest form eq. 9 over the finite ones."""
    nan_if_up = lambda p, b: jnp.where(p["b"][0] > MU["b"][0], jnp.nan, quadratic_loss(p, b))  # noqa: E731
    g, metrics = estimate(nan_if_up, MU, 1.0, key=7, pop_per_shard=16)
    eps = noise_matrix(7, 16)
    unravel = ravel_pytree(MU)[1]
    fitness = np.array([-float(nan_if_up(unravel(flat(MU) + e), 1.0)) for e in eps])
    bad = ~np.isfinite(fitness)
    assert 0 < bad.sum() < 16 and float(metrics["nonfinite"]) == bad.sum()
    f = fitness[~bad]
    z = np.zeros(16)
    z[~bad] = (f - f.mean()) / (f.std() + 1e-8)
    np.testing.assert_allclose(flat(g), (z[:, None] * eps).mean(axis=0), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(float(metrics["fitness_mean"]), f.mean(), rtol=1e-6)
    assert float(metrics["zero_update"]) == 0.0


def test_all_nonfinite_gives_zero_update():
    g, metrics = estimate(lambda p, b: jnp.nan * ravel_pytree(p)[0].sum(), MU, 1.0, shards=2, pop_per_shard=4)
    assert np.all(flat(g) == 0.0)
    assert float(metrics["nonfinite"]) == 8.0 and float(metrics["zero_update"]) == 1.0


def test_centered_ranks_share_ties_and_ignore_nan():
    weights = shape_fitness(jnp.array([1.0, 3.0, 3.0, 2.0, jnp.nan]), "centered_rank")
    np.testing.assert_allclose(weights, [-0.5, 0.5 - 0.5 / 3, 0.5 - 0.5 / 3, 1 / 3 - 0.5, 0.0], atol=1e-6)
    zscores = shape_fitness(jnp.array([1.0, 3.0, jnp.inf, 2.0]), "zscore")
    np.testing.assert_allclose(zscores, [-np.sqrt(1.5), np.sqrt(1.5), 0.0, 0.0], rtol=1e-6)


def test_deterministic_in_key():
    first, _ = estimate(quadratic_loss, MU, 1.0, key=1, pop_per_shard=32)
    again, _ = estimate(quadratic_loss, MU, 1.0, key=1, pop_per_shard=32)
    other, _ = estimate(quadratic_loss, MU, 1.0, key=2, pop_per_shard=32)
    np.testing.assert_array_equal(flat(first), flat(again))  # exact by construction: one compiled program, one key
    assert not np.allclose(flat(first), flat(other))


def test_low_rank_noise_is_rank_r_per_matrix_with_the_full_rank_variance():
    """EGGROLL-style perturbations: each weight matrix's eps has rank r; every entry still has variance sigma^2."""
    rank, n = 2, 4000
    big = {"w": jnp.zeros((9, 6)), "b": jnp.zeros(5)}
    eps = jax.vmap(lambda i: candidate_noise(jax.random.key(5), big, i, SIGMA, False, rank))(jnp.arange(n))
    assert all(np.linalg.matrix_rank(np.asarray(e)) == rank for e in eps["w"][:20])
    # Entries are uncorrelated with variance sigma^2. A sum of 2 products of normals has kurtosis 6, so a
    # 4000-sample variance has a relative standard error of sqrt(5/4000) = 3.5%: each of the 54 entries within 20%
    # (5.7 standard errors), their mean (54 entries) within 3%.
    var_w = np.var(np.asarray(eps["w"]), axis=0)
    np.testing.assert_allclose(var_w, SIGMA**2, rtol=0.2)
    assert abs(var_w.mean() / SIGMA**2 - 1) < 0.03
    np.testing.assert_allclose(np.var(np.asarray(eps["b"]), axis=0), SIGMA**2, rtol=0.15)
    cov = np.cov(np.asarray(eps["w"]).reshape(n, -1)[:, :6].T)
    assert np.max(np.abs(cov - np.diag(np.diag(cov)))) < 0.15 * SIGMA**2


def test_low_rank_wsr_points_along_the_gradient_of_a_quadratic():
    true = jax.tree.map(jnp.negative, jax.grad(quadratic_loss)(MU, 1.0))  # ascent direction on F = -loss
    cosines = [cosine(estimate(quadratic_loss, MU, 1.0, key=k, pop_per_shard=4096, rank=1)[0], true) for k in (1, 2)]
    assert min(cosines) >= 0.9  # same expectation as full-rank noise (covariance sigma^2 I), a little more variance
