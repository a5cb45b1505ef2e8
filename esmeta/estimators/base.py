"""Shared types and helpers of the gradient estimators, and the settings every estimator reads.

An estimator is `estimate(key, params, batch) -> (g, metrics)`: `g` has the structure of `params`
and is the ASCENT direction on the fitness F = -loss (the training loop hands -g to optax).
`EstimatorConfig` is the `estimator` section's shared part (the name and the update rule); each estimator's
file subclasses it with its own settings, their defaults (those of its conf/estimator/<name>.yaml) and rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from esmeta import rules
from esmeta.rules import Namer, setting

Params = Any  # a pytree of float32 arrays
Batch = Any  # whatever the loss takes as its second argument (an Episode for the ProtoNet)
LossFn = Callable[[Params, Batch], jax.Array]  # pure scalar loss, jittable
EstimateFn = Callable[[jax.Array, Params, Batch], tuple[Params, dict[str, jax.Array]]]
OPTIMIZERS = ("sgd", "adam")


def command_line_name(key: str) -> str:
    """An estimator setting (or the shards and population its rules involve) as the command line writes it."""
    if key == "shards":
        return "hardware.shards"
    if key == "population":
        return "estimator.pop_per_shard x hardware.shards"
    return "sigma" if key == "sigma" else f"estimator.{key}"


@dataclass(frozen=True)
class EstimatorConfig:
    """The settings every estimator reads: its name and the optax rule that turns its direction into a step."""

    NAME: ClassVar[str] = ""  # set by each estimator's subclass; the registry (esmeta.estimators) lists them
    POPULATION: ClassVar[bool] = False  # evaluates a population of candidates (wsr, finite_diff); else exact
    TOP_LEVEL: ClassVar[dict[str, float]] = {}  # the top-level settings it reads, with the defaults its YAML sets
    FIRST_ORDER: ClassVar[bool] = False  # differentiates a loss whose inner-loop gradients are constants (MAML's FO)

    name: str = setting("", "result")
    optimizer: str = setting("adam", "result")
    lr_decay_every: int = setting(0, "result")  # episodes between step-size decays; 0 = constant step size
    lr_decay_factor: float = setting(0.5, "result")
    weight_decay: float = setting(0.0, "result")  # L2 pull of mu towards 0, added to the update

    @property
    def is_es(self) -> bool:
        """A population estimator (wsr, finite_diff); backprop and forward_mode compute exact gradients."""
        return self.POPULATION

    def perturbation(self, sigma: float) -> float | None:
        """The perturbation scale it uses, given the top-level `sigma` (wsr's; finite_diff has its own); None: none."""
        return None

    def own_episodes(self, shards: int) -> int:
        """Episodes a step draws, one per population shard, or 0: every candidate sees the step's one episode."""
        return 0

    def validate(self, sigma: float, shards: int, name: Namer = command_line_name) -> None:
        """Types and the update rule's rules; a subclass adds its own, for `shards` shards (0: not known yet)."""
        rules.check_fields(self, name)
        rules.coerce(name("sigma"), sigma, "float")
        rules.coerce(name("shards"), shards, "int")
        rules.positive(name("shards"), shards, allow_zero=True)
        rules.int32(name("shards"), shards)
        rules.choice(name("optimizer"), self.optimizer, OPTIMIZERS)
        rules.positive(name("lr_decay_every"), self.lr_decay_every, allow_zero=True)
        rules.int32(name("lr_decay_every"), self.lr_decay_every)
        rules.positive(name("lr_decay_factor"), self.lr_decay_factor)
        rules.positive(name("weight_decay"), self.weight_decay, allow_zero=True)
        for key in ("lr_decay_factor", "weight_decay"):
            rules.float32(name(key), getattr(self, key))



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
