"""Gradient estimators by name: each factory turns settings and a loss into an `EstimateFn`."""

from __future__ import annotations

from typing import Callable

from jax.sharding import Mesh

from esmeta.config import EstimatorConfig
from esmeta.errors import ConfigError
from esmeta.estimators.backprop import make_backprop
from esmeta.estimators.base import EstimateFn, LossFn, fitness_from_loss
from esmeta.estimators.finite_diff import make_finite_diff
from esmeta.estimators.forward_mode import make_forward_mode
from esmeta.estimators.wsr import make_wsr

Factory = Callable[[EstimatorConfig, float, LossFn, "Mesh | None", int], EstimateFn]

ESTIMATORS: dict[str, Factory] = {
    "backprop": make_backprop,
    "wsr": make_wsr,
    "finite_diff": make_finite_diff,
    "forward_mode": make_forward_mode,
}

__all__ = ["ESTIMATORS", "EstimateFn", "LossFn", "fitness_from_loss", "make_estimator"]


def make_estimator(
    config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int
) -> EstimateFn:
    """The jittable `estimate(key, params, batch) -> (ascent direction g, metrics)` named by `config.name`."""
    if config.name not in ESTIMATORS:
        raise ConfigError(f"estimator.name={config.name!r} is not an option; choose one of: {', '.join(ESTIMATORS)}")
    return ESTIMATORS[config.name](config, sigma, loss_fn, mesh, shards)
