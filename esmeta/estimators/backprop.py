"""Exact gradient by backpropagation: the ProtoNet baseline of Sheng & He 2021 (Table I), g = grad F = -grad loss."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
from jax.sharding import Mesh

from esmeta.estimators.base import (
    Batch,
    EstimateFn,
    EstimatorConfig,
    LossFn,
    Params,
    exact_gradient_result,
    fitness_from_loss,
)
from esmeta.rules import setting


@dataclass(frozen=True)
class BackpropConfig(EstimatorConfig):
    """backprop reads only the update rule: Adam at alpha 1e-3, halved every 2000 episodes (Snell et al. 2017)."""

    NAME: ClassVar[str] = "backprop"
    TOP_LEVEL: ClassVar[dict[str, float]] = {"alpha": 1e-3}

    name: str = setting(NAME, "result")
    lr_decay_every: int = setting(2000, "result")


def make_backprop(config: BackpropConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int) -> EstimateFn:
    """One evaluation and its gradient; sigma, the mesh and the shards are unused (no population)."""
    del config, sigma, mesh, shards

    def estimate(key: jax.Array, params: Params, batch: Batch) -> tuple[Params, dict[str, jax.Array]]:
        del key  # deterministic
        fitness, g = jax.value_and_grad(lambda p: fitness_from_loss(loss_fn(p, batch)))(params)
        return exact_gradient_result(fitness, g)

    return estimate
