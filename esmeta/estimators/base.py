"""Shared types and helpers of the gradient estimators.

An estimator is `estimate(key, params, batch) -> (g, metrics)`: `g` has the structure of `params`
and is the ASCENT direction on the fitness F = -loss (the training loop hands -g to optax).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Params = Any  # a pytree of float32 arrays
Batch = Any  # whatever the loss takes as its second argument (an Episode for the ProtoNet)
LossFn = Callable[[Params, Batch], jax.Array]  # pure scalar loss, jittable
EstimateFn = Callable[[jax.Array, Params, Batch], tuple[Params, dict[str, jax.Array]]]



def fitness_from_loss(loss: jax.Array) -> jax.Array:
    """F = -loss: the one place where the sign between loss and fitness is fixed."""
    return -loss


def tree_norm(tree: Params) -> jax.Array:
    """Euclidean norm of a pytree, as float32."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def population_metrics(fitness: jax.Array, axis_name: str | None) -> dict[str, jax.Array]:
    """`fitness_mean/std/max` (std with ddof=0) of the finite fitnesses of every shard, and the `nonfinite` count.

    Reduces scalars over `axis_name` (None = no mesh), never the fitness vectors themselves.
    """
    psum = (lambda x: jax.lax.psum(x, axis_name)) if axis_name else (lambda x: x)
    valid = jnp.isfinite(fitness)
    f = jnp.where(valid, fitness, 0.0)
    count = psum(jnp.sum(valid).astype(jnp.float32))
    safe = jnp.maximum(count, 1.0)
    mean = psum(jnp.sum(f)) / safe
    var = psum(jnp.sum(jnp.where(valid, jnp.square(f - mean), 0.0))) / safe
    best = jnp.max(jnp.where(valid, fitness, -jnp.inf))
    if axis_name:
        best = jax.lax.pmax(best, axis_name)
    nan = jnp.float32(jnp.nan)  # no finite fitness at all: the statistics are undefined
    return {
        "fitness_mean": jnp.where(count > 0, mean, nan).astype(jnp.float32),
        "fitness_std": jnp.where(count > 0, jnp.sqrt(var), nan).astype(jnp.float32),
        "fitness_max": jnp.where(count > 0, best, nan).astype(jnp.float32),
        "nonfinite": psum(jnp.sum(~valid).astype(jnp.float32)),
    }


def exact_gradient_result(fitness: jax.Array, g: Params) -> tuple[Params, dict[str, jax.Array]]:
    """(g, metrics) of an exact-gradient estimator (backprop, forward_mode): a non-finite fitness or gradient
    gives a zero update, as a non-finite ES candidate gets weight 0."""
    finite = jnp.isfinite(fitness) & jnp.isfinite(tree_norm(g))
    g = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), g)
    metrics = population_metrics(jnp.where(finite, fitness, jnp.nan)[None], None)
    metrics["zero_update"] = (~finite).astype(jnp.float32)
    metrics["grad_norm"] = tree_norm(g)
    metrics["candidates"] = jnp.int32(1)
    return g, metrics
