"""Backprop baseline: the exact ascent direction -grad loss, with the same metrics as the ES estimators."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from esmeta.estimators import BackpropConfig, fitness_from_loss, make_estimator
from esmeta.protonet import make_loss_fn


def test_fitness_is_minus_loss():
    assert float(fitness_from_loss(jnp.float32(2.5))) == -2.5


def test_ascent_direction_is_minus_grad_of_protonet_loss(tiny_protonet):
    _, params, episode = tiny_protonet
    loss = make_loss_fn(way=3, distance="cosine", scale=5.0, norm_stats="support")
    estimate = jax.jit(make_estimator(BackpropConfig(), 0.01, loss, None, 1))
    g, metrics = estimate(jax.random.key(0), params, episode)
    loss_value, grad = jax.jit(jax.value_and_grad(loss))(params, episode)
    np.testing.assert_allclose(ravel_pytree(g)[0], -ravel_pytree(grad)[0], rtol=1e-5, atol=1e-7)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    np.testing.assert_allclose(float(metrics["fitness_mean"]), -float(loss_value), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(jnp.linalg.norm(ravel_pytree(grad)[0])), rtol=1e-5)
    assert int(metrics["candidates"]) == 1 and float(metrics["nonfinite"]) == 0.0
    assert float(metrics["fitness_std"]) == 0.0 and float(metrics["zero_update"]) == 0.0


def test_nonfinite_loss_gives_zero_update_counted():
    params = {"w": jnp.ones(3)}
    loss = lambda p, b: jnp.log(jnp.sum(p["w"]) - b)  # noqa: E731  NaN for b > 3
    estimate = jax.jit(make_estimator(BackpropConfig(), 0.01, loss, None, 1))
    g, metrics = estimate(jax.random.key(0), params, 4.0)
    assert np.all(np.asarray(g["w"]) == 0.0)
    assert float(metrics["nonfinite"]) == 1.0 and float(metrics["zero_update"]) == 1.0
    g, metrics = estimate(jax.random.key(0), params, 2.0)
    np.testing.assert_allclose(g["w"], -np.ones(3), rtol=1e-6)  # d/dw -log(sum w - 2) = -1
