"""Gradient estimators: `estimate(key, params, batch) -> (g, metrics)`, g the ASCENT direction on F = -loss.

Public constructors (each validates its own arguments; one-line `ConfigError`s):

    wsr(loss_fn, *, sigma, population, ...)   Sheng & He's weighted standard rewards (an OpenAI-ES)
    finite_diff(loss_fn, *, population, ...)  finite differences as an ES population
    forward_mode(loss_fn, *, chunk_size=0)    the exact gradient by jvps
    backprop(loss_fn)                         the exact gradient by jax.grad

They build an `EstimatorConfig` and call `make_estimator`, the factory the training loop uses, so a
constructor's estimate is the training loop's estimate. `loss_fn(params, batch)` must be a jittable JAX
function returning a scalar; the optimizer step uses -g (g ascends the fitness).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

from jax.sharding import Mesh

from esmeta.config import EstimatorConfig, validate_estimator
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

__all__ = [
    "ESTIMATORS",
    "EstimateFn",
    "LossFn",
    "backprop",
    "finite_diff",
    "fitness_from_loss",
    "forward_mode",
    "make_estimator",
    "wsr",
]


def make_estimator(
    config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int
) -> EstimateFn:
    """The jittable `estimate(key, params, batch) -> (ascent direction g, metrics)` named by `config.name`."""
    return _make(config, sigma, loss_fn, mesh, shards, None)


def _make(
    config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int, names: dict[str, str] | None
) -> EstimateFn:
    """make_estimator, its errors naming settings as `names` says (the constructors' keyword arguments)."""
    validate_estimator(config, sigma, shards, names)
    if not callable(loss_fn):
        raise ConfigError(f"loss_fn={loss_fn!r} must be a function (params, batch) -> scalar loss; pass one")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ConfigError(f"mesh={mesh!r} must be a jax.sharding.Mesh with one axis 'shards', or None")
    return ESTIMATORS[config.name](config, sigma, loss_fn, mesh, shards)


def _population(population: int, shards: int) -> int:
    """Candidates per shard of `population` candidates over `shards` shards; a one-line error unless it divides."""
    for key, value in (("population", population), ("shards", shards)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    if population % shards:
        raise ConfigError(
            f"population={population} must be a multiple of shards={shards} (each shard runs population / shards "
            f"candidates); use e.g. population={max(shards, population - population % shards)}"
        )
    return population // shards


# A constructor's messages name its keyword arguments, not the config's dotted settings.
_ARGUMENTS = {f.name: f.name for f in fields(EstimatorConfig)} | {"sigma": "sigma", "shards": "shards"}


def _es_names(population: int, shards: int) -> dict[str, str]:
    """Message names of the population settings, as a constructor's user wrote them."""
    per_shard = f"population / shards ({population} / {shards})" if shards > 1 else "population"
    return _ARGUMENTS | {"pop_per_shard": per_shard, "population": "population"}


def wsr(
    loss_fn: LossFn,
    *,
    sigma: float,
    population: int,
    shards: int = 1,
    mesh: Mesh | None = None,
    antithetic: bool = False,
    fitness_shaping: str = "zscore",
    normalize: str = "per_shard",
    rank: int = 0,
    eval_mode: str = "auto",
    chunk_size: int = 0,
) -> EstimateFn:
    """WSR (OpenAI-ES with eps = sigma * N(0, I)): `population` candidates in `shards` logical shards, each z-scored alone."""
    pps = _population(population, shards)
    config = EstimatorConfig(
        name="wsr", pop_per_shard=pps, antithetic=antithetic, fitness_shaping=fitness_shaping,
        normalize=normalize, rank=rank, eval_mode=eval_mode, chunk_size=chunk_size,
    )
    return _make(config, sigma, loss_fn, mesh, shards, _es_names(population, shards))


def finite_diff(
    loss_fn: LossFn,
    *,
    population: int,
    sigma: float = 1e-3,
    central: bool = False,
    shards: int = 1,
    mesh: Mesh | None = None,
    eval_mode: str = "auto",
    chunk_size: int = 0,
) -> EstimateFn:
    """Finite differences probing `population` coordinates (all when >= the parameter count) with nudge `sigma`."""
    pps = _population(population, shards)
    config = EstimatorConfig(
        name="finite_diff", pop_per_shard=pps, fd_sigma=sigma, central=central, eval_mode=eval_mode,
        chunk_size=chunk_size,
    )
    return _make(config, 0.0, loss_fn, mesh, shards, _es_names(population, shards) | {"fd_sigma": "sigma"})


def forward_mode(loss_fn: LossFn, *, chunk_size: int = 0) -> EstimateFn:
    """The exact gradient by forward-mode jvps, `chunk_size` basis tangents at a time (0 = 32)."""
    return _make(EstimatorConfig(name="forward_mode", chunk_size=chunk_size), 0.0, loss_fn, None, 1, _ARGUMENTS)


def backprop(loss_fn: LossFn) -> EstimateFn:
    """The exact gradient by backpropagation (jax.value_and_grad)."""
    return _make(EstimatorConfig(name="backprop"), 0.0, loss_fn, None, 1, _ARGUMENTS)
