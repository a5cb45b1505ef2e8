"""Gradient estimators: `estimate(key, params, batch) -> (g, metrics)`, g the ASCENT direction on F = -loss.

Public constructors (each validates its own arguments; one-line `ConfigError`s):

    wsr(loss_fn, *, sigma, population, ...)   Sheng & He's weighted standard rewards (an OpenAI-ES)
    finite_diff(loss_fn, *, coordinates, ...) finite differences probing `coordinates` coordinates a step
    forward_mode(loss_fn, *, chunk_size=0)    the exact gradient by jvps
    backprop(loss_fn)                         the exact gradient by jax.grad

Each builds its estimator's typed config (`WsrConfig`, ..., declared and validated in the estimator's own file)
and hands it to the factory that the training loop reaches through `make_estimator(config, sigma, ...)`, so a
constructor's estimate is the training loop's estimate. `ESTIMATORS` is the one list of estimator names.
`loss_fn(params, batch)` must be a jittable JAX function returning a float scalar and `params` a pytree of float
arrays: a constructor's estimate checks both at its first call (one-line ConfigError). The optimizer step uses -g (g ascends the fitness).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import Mesh

from esmeta import rules
from esmeta.errors import ConfigError
from esmeta.estimators.backprop import BackpropConfig, make_backprop
from esmeta.estimators.base import (
    Batch,
    EstimateFn,
    EstimatorConfig,
    LossFn,
    Params,
    fitness_from_loss,
)
from esmeta.estimators.finite_diff import FiniteDiffConfig, make_finite_diff
from esmeta.estimators.first_order import FirstOrderConfig, make_first_order
from esmeta.estimators.forward_mode import ForwardModeConfig, make_forward_mode
from esmeta.estimators.wsr import WsrConfig, make_wsr
from esmeta.rules import Namer

Factory = Callable[[EstimatorConfig, float, LossFn, "Mesh | None", int], EstimateFn]  # (config, top-level sigma, ...)

# The registry: estimator name -> (its config, the factory of its estimate). The one list of estimator names.
ESTIMATORS: dict[str, tuple[type[EstimatorConfig], Factory]] = {
    config.NAME: (config, factory)
    for config, factory in (
        (BackpropConfig, make_backprop),
        (WsrConfig, make_wsr),
        (FiniteDiffConfig, make_finite_diff),
        (ForwardModeConfig, make_forward_mode),
        (FirstOrderConfig, make_first_order),
    )
}
POPULATION_ESTIMATORS = tuple(name for name, (config, _) in ESTIMATORS.items() if config.POPULATION)

__all__ = [
    "ESTIMATORS",
    "POPULATION_ESTIMATORS",
    "BackpropConfig",
    "EstimateFn",
    "EstimatorConfig",
    "FiniteDiffConfig",
    "FirstOrderConfig",
    "ForwardModeConfig",
    "LossFn",
    "WsrConfig",
    "backprop",
    "config_class",
    "readers",
    "check_loss_and_params",
    "finite_diff",
    "fitness_from_loss",
    "forward_mode",
    "make_estimator",
    "wsr",
]


def config_class(name: str) -> type[EstimatorConfig]:
    """The config of the estimator named `name`; a one-line ConfigError listing the estimators otherwise."""
    rules.choice("estimator.name", name, tuple(ESTIMATORS))
    return ESTIMATORS[name][0]


def readers(key: str) -> list[str]:
    """The estimators that read the estimator setting `key` (a field of their config), in registry order."""
    return [name for name, (config, _) in ESTIMATORS.items() if key in config.__dataclass_fields__]


def make_estimator(
    config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int
) -> EstimateFn:
    """The jittable `estimate(key, params, batch) -> (ascent direction g, metrics)` of the estimator `config`
    configures (`sigma`: the top-level setting, which wsr reads), validated as the training loop does."""
    if type(config) is not config_class(config.name):
        raise ConfigError(f"estimator.name={config.name} is configured by {config_class(config.name).__name__}, "
                          f"got a {type(config).__name__}; build that one")
    config.validate(sigma, shards)
    return _build(config, sigma, loss_fn, mesh, shards)


def _build(config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int) -> EstimateFn:
    """The estimator of a validated config."""
    if not callable(loss_fn):
        raise ConfigError(f"loss_fn={loss_fn!r} must be a function (params, batch) -> scalar loss; pass one")
    if mesh is not None and not isinstance(mesh, Mesh):
        raise ConfigError(f"mesh={mesh!r} must be a jax.sharding.Mesh with one axis 'shards', or None")
    return ESTIMATORS[config.NAME][1](config, sigma, loss_fn, mesh, shards)


def _population(population: int, shards: int, name: str = "population") -> int:
    """Candidates (or, for finite_diff, coordinates) per shard of `population` over `shards` shards; a one-line error
    unless it divides. `name`: the argument's name in the messages."""
    for key, value in ((name, population), ("shards", shards)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    if population % shards:
        raise ConfigError(
            f"{name}={population} must be a multiple of shards={shards} (each shard runs {name} / shards "
            f"of them); use e.g. {name}={max(shards, population - population % shards)}"
        )
    return population // shards


def _argument_names(population: int = 0, shards: int = 1, name: str = "population") -> Namer:
    """A constructor's messages name its keyword arguments, not the config's dotted settings."""
    per_shard = f"{name} / shards ({population} / {shards})" if shards > 1 else name
    return lambda key: per_shard if key == "pop_per_shard" else "sigma" if key == "fd_sigma" else key


def _constructed(config: EstimatorConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int,
                 name: Namer) -> EstimateFn:
    config.validate(sigma, shards, name)
    return _checked_at_first_call(_build(config, sigma, loss_fn, mesh, shards), loss_fn, config.NAME)


def check_loss_and_params(loss_fn: LossFn, params: Params, batch: Batch, who: str) -> None:
    """A one-line ConfigError unless every parameter leaf is a float array and `loss_fn(params, batch)` is a float
    scalar: otherwise wsr fails to reshape, finite_diff to broadcast, and an integer leaf silently gets g = 0."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        dtype = jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.floating):
            raise ConfigError(
                f"{who}: params{jax.tree_util.keystr(path)} is {dtype}; the estimators perturb and differentiate float "
                "parameters only (it would get a zero gradient): make it float32, or close over it in loss_fn")
    out = jax.eval_shape(loss_fn, params, batch)  # traced only: nothing is computed
    shape, dtype = getattr(out, "shape", None), getattr(out, "dtype", None)
    if shape != () or dtype is None or not jnp.issubdtype(dtype, jnp.floating):
        got = f"shape {shape} {dtype}" if shape is not None else f"a {type(out).__name__}"
        raise ConfigError(f"{who}: loss_fn(params, batch) returns {got}, not a float scalar; the estimators need one "
                          "loss per candidate: reduce it in loss_fn (e.g. jnp.mean), and return no auxiliary outputs")


def _checked_at_first_call(estimate: EstimateFn, loss_fn: LossFn, who: str) -> EstimateFn:
    """`estimate`, which checks the loss and the parameters (`check_loss_and_params`) once, at its first call (under
    jit: when traced); the training loop's estimators (make_estimator) skip it, their loss and parameters are known."""
    checked = False

    def checked_estimate(key: jax.Array, params: Params, batch: Batch) -> tuple[Params, dict[str, jax.Array]]:
        nonlocal checked
        if not checked:
            check_loss_and_params(loss_fn, params, batch, who)
            checked = True
        return estimate(key, params, batch)

    return checked_estimate


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
    config = WsrConfig(
        pop_per_shard=_population(population, shards), antithetic=antithetic, fitness_shaping=fitness_shaping,
        normalize=normalize, rank=rank, eval_mode=eval_mode, chunk_size=chunk_size,
    )
    return _constructed(config, sigma, loss_fn, mesh, shards, _argument_names(population, shards))


def finite_diff(
    loss_fn: LossFn,
    *,
    coordinates: int | None = None,
    sigma: float = 1e-3,
    central: bool = False,
    shards: int = 1,
    mesh: Mesh | None = None,
    eval_mode: str = "auto",
    chunk_size: int = 0,
    population: int | None = None,
) -> EstimateFn:
    """Finite differences probing `coordinates` coordinates a step (all when >= the parameter count; a random subset
    otherwise) with nudge `sigma`. A step evaluates coordinates + shards candidates (each shard's mu too), or
    2 x coordinates when `central`. `population` is the former name of `coordinates`, still accepted."""
    if (coordinates is None) == (population is None):
        raise ConfigError("finite_diff takes coordinates=N, the coordinates probed a step (population=N is its older "
                          f"name); got coordinates={coordinates!r}, population={population!r}")
    name, count = ("coordinates", coordinates) if population is None else ("population", population)
    config = FiniteDiffConfig(
        fd_sigma=sigma, pop_per_shard=_population(count, shards, name), central=central, eval_mode=eval_mode,
        chunk_size=chunk_size,
    )
    return _constructed(config, 0.0, loss_fn, mesh, shards, _argument_names(count, shards, name))


def forward_mode(loss_fn: LossFn, *, chunk_size: int = 0) -> EstimateFn:
    """The exact gradient by forward-mode jvps, `chunk_size` basis tangents at a time (0 = 32)."""
    return _constructed(ForwardModeConfig(chunk_size=chunk_size), 0.0, loss_fn, None, 1, _argument_names())


def backprop(loss_fn: LossFn) -> EstimateFn:
    """The exact gradient by backpropagation (jax.value_and_grad)."""
    return _constructed(BackpropConfig(), 0.0, loss_fn, None, 1, _argument_names())
