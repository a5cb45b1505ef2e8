"""The finite-difference readings the paper leaves open, each pinned by a hand computation on a quadratic.

F(x) = -(1/2 sum_c a_c x_c^2 + b.x): the forward difference quotient of coordinate c is exactly
q_c = (F(x + h e_c) - F(x)) / h = -(a_c x_c + b_c) - a_c h / 2, so every reading has a closed form.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from esmeta.estimators import FiniteDiffConfig, make_estimator
from esmeta.estimators.finite_diff import probe_coordinates
from esmeta.prelaunch import check_overrides
from esmeta.train import make_optimizer

D, H = 6, 0.25
A = np.array([1.0, 2.0, 0.5, 3.0, 1.5, 0.25])
B = np.array([0.3, -0.2, 0.1, 0.0, -0.4, 0.25])
X = np.array([0.5, -1.0, 0.25, 0.75, -0.5, 1.0])


def loss(params, batch):
    del batch
    x = params["x"]
    return 0.5 * jnp.sum(jnp.asarray(A, jnp.float32) * x**2) + jnp.dot(jnp.asarray(B, jnp.float32), x)


def quotients() -> np.ndarray:
    """q_c for every coordinate, in float64."""
    return -(A * X + B) - A * H / 2


def estimate(shards: int, pps: int, **settings) -> np.ndarray:
    config = FiniteDiffConfig(pop_per_shard=pps, fd_sigma=H, **settings)
    g, _ = jax.jit(make_estimator(config, 0.0, loss, None, shards))(KEY, {"x": jnp.asarray(X, jnp.float32)}, None)
    return np.asarray(g["x"], np.float64)


KEY = jax.random.key(11)
# |F| ~ 1 in float32 (relative rounding 6e-8) divided by h = 0.25: errors ~ 1e-6; 1e-5 leaves a margin.
ATOL = 1e-5


@pytest.mark.parametrize("reduce,factor", [("sum", 1.0), ("mean", 0.5)])
def test_all_coordinates_probed_sum_or_mean_over_shards(reduce, factor):
    """2 shards x 3 probes cover the 6 coordinates once: sum gives q, mean (the paper's all-reduce) q / 2."""
    for rescale in (False, True):  # nothing to rescale when every coordinate is probed
        got = estimate(2, 3, fd_reduce=reduce, fd_rescale_subset=rescale)
        np.testing.assert_allclose(got, factor * quotients(), rtol=0, atol=ATOL)


@pytest.mark.parametrize(
    "reduce,rescale,factor",
    [("sum", False, 1.0), ("sum", True, D / 2), ("mean", False, 0.5), ("mean", True, 0.5 * D / 2)],
)
def test_a_probed_subset_scaled_by_d_over_n_or_not(reduce, rescale, factor):
    """2 shards x 1 probe = N = 2 of D = 6 coordinates: q on the probed ones, 0 elsewhere, times D/N = 3
    with `fd_rescale_subset`, and / 2 shards with `mean`."""
    coords = np.asarray(probe_coordinates(KEY, 2, D)[0])
    assert len(set(coords.tolist())) == 2
    want = np.zeros(D)
    want[coords] = factor * quotients()[coords]
    got = estimate(2, 1, fd_reduce=reduce, fd_rescale_subset=rescale)
    np.testing.assert_allclose(got, want, rtol=0, atol=ATOL * factor)


@pytest.mark.parametrize("name", ["sgd", "adam"])
def test_the_update_rule_sgd_or_adam(name):
    """sgd: mu + alpha g (the paper's rule); Adam's first step: mu + alpha g / (|g| + 1e-8), i.e. alpha sign(g)."""
    g = quotients()
    alpha = 0.01
    opt = make_optimizer(alpha, FiniteDiffConfig(optimizer=name))
    mu = {"x": jnp.asarray(X, jnp.float32)}
    updates, _ = opt.update({"x": -jnp.asarray(g, jnp.float32)}, opt.init(mu), mu)
    got = np.asarray(optax.apply_updates(mu, updates)["x"], np.float64)
    step = alpha * g if name == "sgd" else alpha * g / (np.abs(g) + 1e-8)
    # float32 parameters of size ~1: a step of 1e-2 is represented to ~1e-9; 1e-7 is a safe bound.
    np.testing.assert_allclose(got, X + step, rtol=0, atol=1e-7)


def test_the_default_reading_is_adam_on_the_summed_unscaled_estimate():
    """The decided default (docs/reproduction.md): Adam; sum and no rescale, which Adam makes moot."""
    (config,) = check_overrides(["estimator=finite_diff"])
    est = config.estimator
    assert (est.optimizer, est.fd_reduce, est.fd_rescale_subset) == ("adam", "sum", False)
    assert config.alpha == 5e-3  # the paper's v3-8 learning rate


def test_under_adam_sum_mean_and_rescale_give_one_trajectory():
    """Adam divides by the gradient's running RMS, so the readings' constant factors (1, 1/2, D/N, D/2N)
    leave ten steps on random probe subsets unchanged, while under sgd they move mu by different amounts."""

    def trajectory(optimizer: str, **settings) -> np.ndarray:
        config = FiniteDiffConfig(optimizer=optimizer, pop_per_shard=1, fd_sigma=H, **settings)
        step_fn = jax.jit(make_estimator(config, 0.0, loss, None, 2))
        opt = make_optimizer(0.05, config)
        mu = {"x": jnp.asarray(X, jnp.float32)}
        state = opt.init(mu)
        for step in range(10):
            g, _ = step_fn(jax.random.fold_in(KEY, step), mu, None)
            updates, state = opt.update(jax.tree.map(jnp.negative, g), state, mu)
            mu = optax.apply_updates(mu, updates)
        return np.asarray(mu["x"], np.float64)

    readings = [dict(fd_reduce=r, fd_rescale_subset=s) for r in ("sum", "mean") for s in (False, True)]
    adam = [trajectory("adam", **reading) for reading in readings]
    for other in adam[1:]:
        # Adam's 1e-8 epsilon against |g| >= 1e-2 per probed step, on float32 parameters of size ~1.
        np.testing.assert_allclose(other, adam[0], rtol=0, atol=1e-5)
    assert np.abs(adam[0] - X).max() > 0.1  # ten steps of 0.05 moved it
    sgd = [trajectory("sgd", **reading) for reading in readings]
    assert min(np.abs(a - b).max() for i, a in enumerate(sgd) for b in sgd[i + 1:]) > 1e-3
