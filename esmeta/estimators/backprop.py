"""Exact gradient by backpropagation: the ProtoNet baseline of Sheng & He 2021 (Table I), g = grad F = -grad loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from esmeta.config import EstimatorConfig
from esmeta.estimators.base import Batch, EstimateFn, LossFn, Params, fitness_from_loss, population_metrics, tree_norm


def make_backprop(
    config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int
) -> EstimateFn:
    """One evaluation and its gradient; `sigma`, the mesh and the shards are unused (no population)."""
    del config, sigma, mesh, shards

    def estimate(key: jax.Array, params: Params, batch: Batch) -> tuple[Params, dict[str, jax.Array]]:
        del key  # deterministic
        fitness, g = jax.value_and_grad(lambda p: fitness_from_loss(loss_fn(p, batch)))(params)
        finite = jnp.isfinite(fitness) & jnp.isfinite(tree_norm(g))
        g = jax.tree.map(lambda x: jnp.where(finite, x, 0.0), g)  # masked like a non-finite ES candidate
        metrics = population_metrics(jnp.where(finite, fitness, jnp.nan)[None], None)
        metrics["zero_update"] = (~finite).astype(jnp.float32)
        metrics["grad_norm"] = tree_norm(g)
        metrics["candidates"] = jnp.int32(1)
        return g, metrics

    return estimate
