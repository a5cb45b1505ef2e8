"""Population layout and candidate evaluation shared by the population estimators (wsr, finite_diff).

A candidate is named by a global integer index (shard * pop_per_shard + slot); `fitness_of(index)`
rebuilds its parameters from the index (and the step's key) and evaluates them, so the
(population x params) matrix never exists: fitnesses are computed chunk by chunk, and the weighted
sum of perturbations regenerates them chunk by chunk. Logical shards (the paper's TPU cores) are
spread evenly over the devices of a 1-D mesh (axis "shards"); each device runs its own shards in turn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from esmeta import rules
from esmeta.errors import ConfigError
from esmeta.estimators.base import Batch, EstimateFn, Params, population_metrics
from esmeta.hardware import AXIS
from esmeta.rules import Namer

# Floats of noise the automatic chunk draws at once (2 MiB). XLA holds several times that while drawing:
# threefry's counters and rounds about 4x the floats drawn, the per-leaf slices more. Measured with
# jax 0.10 on CPU, a 64-channel net (111,936 parameters): the old 1 << 22 (37 candidates a chunk) held
# 125 MiB of temporaries in the wsr step; 1 << 19 (4 a chunk) holds 10 MiB, at the same step time.
NOISE_BUDGET = 1 << 19
EVAL_MODES = ("auto", "map", "vmap")
FITNESS_PRECISIONS = ("highest", "default")


def check_population(config, shards: int, name: Namer) -> None:
    """The rules both population estimators share: their population and the candidates' evaluation settings."""
    rules.positive(name("pop_per_shard"), config.pop_per_shard)
    rules.int32(name("pop_per_shard"), config.pop_per_shard)
    rules.int32(name("population"), config.pop_per_shard * max(shards, 1))
    rules.choice(name("fitness_precision"), config.fitness_precision, FITNESS_PRECISIONS)
    rules.choice(name("eval_mode"), config.eval_mode, EVAL_MODES)
    rules.positive(name("chunk_size"), config.chunk_size, allow_zero=True)
    rules.int32(name("chunk_size"), config.chunk_size)


def fitness_precision(setting: str):
    """A context manager for candidate evaluation: `jax.default_matmul_precision("highest")` (full float32
    matmuls and convolutions; the default) or, for "default", the backend's own precision (TF32 on GPUs,
    bf16 passes on TPUs; on CPU float32 is full precision either way). It applies while the fitness is
    traced, so it is part of the compiled computation."""
    if setting == "highest":
        return lambda: jax.default_matmul_precision("highest")
    if setting == "default":
        return contextlib.nullcontext
    raise ValueError(f"unknown fitness_precision {setting!r}")  # config validation rules this out


def resolve_eval_mode(eval_mode: str, platform: str) -> str:
    """`auto` -> `map` on CPU (vmapped convs over per-candidate weights ran ~10x slower on 2 cores), else `vmap`."""
    if eval_mode == "auto":
        return "map" if platform == "cpu" else "vmap"
    return eval_mode


def eval_chunk(chunk_size: int, pop_per_shard: int) -> int:
    """Candidates evaluated together in `vmap` mode: `chunk_size`, or one shard's population when 0."""
    return min(chunk_size or pop_per_shard, pop_per_shard)


def noise_chunk(chunk_size: int, pop_per_shard: int, num_params: int) -> int:
    """Perturbations regenerated together: `chunk_size`, or as many as fit in NOISE_BUDGET floats when 0."""
    auto = max(1, NOISE_BUDGET // max(num_params, 1))
    return max(1, min(chunk_size or auto, pop_per_shard))


def evaluate(
    fitness_of: Callable[[jax.Array], jax.Array], index_n: jax.Array, eval_mode: str, chunk: int
) -> jax.Array:
    """Fitness (n,) of candidates `index_n`: one at a time (`map`) or `chunk` at a time under `vmap`."""
    if eval_mode == "map":
        return jax.lax.map(fitness_of, index_n)
    if eval_mode == "vmap":
        if chunk >= index_n.shape[0]:
            return jax.vmap(fitness_of)(index_n)
        return jax.lax.map(fitness_of, index_n, batch_size=chunk)
    raise ValueError(f"unknown eval_mode {eval_mode!r}")  # config validation rules this out


def scan_sum(term: Callable[[jax.Array], Params], xs: jax.Array) -> Params:
    """sum_k term(xs[k]) in order, one term at a time (a scan seeded with the first term, so that
    under shard_map the carry has the terms' device-varying type)."""
    total = term(jax.tree.map(lambda x: x[0], xs))
    if jax.tree.leaves(xs)[0].shape[0] > 1:
        step = lambda acc, x: (jax.tree.map(jnp.add, acc, term(x)), None)  # noqa: E731
        total, _ = jax.lax.scan(step, total, jax.tree.map(lambda x: x[1:], xs))
    return total


def weighted_sum(
    weight_n: jax.Array, index_n: jax.Array, perturbation_of: Callable[[jax.Array], Params], chunk: int
) -> Params:
    """sum_i weight_i * perturbation_of(index_i), regenerating `chunk` perturbations at a time."""

    def chunk_sum(weight_and_index: tuple[jax.Array, jax.Array]) -> Params:
        weight_c, index_c = weight_and_index
        return jax.tree.map(lambda p: jnp.tensordot(weight_c, p, axes=1), jax.vmap(perturbation_of)(index_c))

    n = index_n.shape[0]
    full = (n // chunk) * chunk
    parts = []
    if full:
        shape = (n // chunk, chunk)
        parts.append(scan_sum(chunk_sum, (weight_n[:full].reshape(shape), index_n[:full].reshape(shape))))
    if full < n:
        parts.append(chunk_sum((weight_n[full:], index_n[full:])))
    return parts[0] if len(parts) == 1 else jax.tree.map(jnp.add, *parts)


@dataclass(frozen=True)
class LocalShards:
    """The logical shards one device runs, and the collectives that combine them with the others'."""

    shard_ids: jax.Array  # (shards_per_device,) global shard indices, in order
    platform: str  # "cpu", "gpu" or "tpu"
    axis: str | None  # mesh axis to reduce over; None = everything is local

    def psum(self, x: jax.Array) -> jax.Array:
        """Sum over devices (identity without a mesh)."""
        return jax.lax.psum(x, self.axis) if self.axis else x

    def all_gather(self, x_s: jax.Array) -> jax.Array:
        """Stack every device's local rows in global shard order."""
        return jax.lax.all_gather(x_s, self.axis, tiled=True) if self.axis else x_s

    def own_rows(self, x_all: jax.Array) -> jax.Array:
        """This device's rows of a global (shards, ...) array."""
        return jax.lax.dynamic_slice_in_dim(x_all, self.shard_ids[0], self.shard_ids.shape[0])

    def population_metrics(self, fitness: jax.Array) -> dict[str, jax.Array]:
        """Fitness statistics over the whole population (see `base.population_metrics`)."""
        return population_metrics(fitness, self.axis)


def run_sharded(local: Callable, mesh: Mesh | None, shards: int) -> EstimateFn:
    """An EstimateFn running `local(key, params, batch, LocalShards)` on every device of `mesh`.

    Without a mesh all `shards` run on the default device, with the same candidates and reductions.
    """
    if shards <= 0:
        raise ConfigError(f"hardware.shards={shards} must be positive here (make_mesh turns 0 into the device count)")
    if mesh is None:
        where = LocalShards(jnp.arange(shards), jax.default_backend(), None)
        return lambda key, params, batch: local(key, params, batch, where)
    n_devices = mesh.size
    if tuple(mesh.axis_names) != (AXIS,):
        raise ConfigError(f"the estimator needs a 1-D mesh with axis {AXIS!r}, got axes {mesh.axis_names}")
    if shards % n_devices:
        raise ConfigError(
            f"hardware.shards={shards} must be a positive multiple of the {n_devices} devices in use"
        )
    per_device = shards // n_devices
    platform = mesh.devices.flat[0].platform

    def body(key: jax.Array, params: Params, batch: Batch):
        first = jax.lax.axis_index(AXIS) * per_device
        return local(key, params, batch, LocalShards(first + jnp.arange(per_device), platform, AXIS))

    return jax.shard_map(body, mesh=mesh, in_specs=(P(), P(), P()), out_specs=(P(), P()))
