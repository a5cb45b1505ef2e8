"""Exact gradient by backpropagation: the ProtoNet baseline of Sheng & He 2021 (Table I), g = grad F = -grad loss."""

from __future__ import annotations

import jax
from jax.sharding import Mesh

from esmeta.config import BackpropConfig
from esmeta.estimators.base import Batch, EstimateFn, LossFn, Params, exact_gradient_result, fitness_from_loss


def make_backprop(config: BackpropConfig, loss_fn: LossFn, mesh: Mesh | None, shards: int) -> EstimateFn:
    """One evaluation and its gradient; the mesh and the shards are unused (no population)."""
    del config, mesh, shards

    def estimate(key: jax.Array, params: Params, batch: Batch) -> tuple[Params, dict[str, jax.Array]]:
        del key  # deterministic
        fitness, g = jax.value_and_grad(lambda p: fitness_from_loss(loss_fn(p, batch)))(params)
        return exact_gradient_result(fitness, g)

    return estimate
