"""Backend set-up and the 1-D device mesh over which the population shards run (Sheng & He Sec. III.A).

The paper partitions the population over TPU cores, one shard per core. Here `hardware.shards`
logical shards are spread evenly over the devices in use, so 8 shards give the same estimate on
one CPU, 8 simulated CPU devices or a v3-8.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
import platformdirs
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from esmeta.errors import ConfigError, first_line

if TYPE_CHECKING:
    from esmeta.config import HardwareConfig

AXIS = "shards"  # the one mesh axis; every collective of the estimators reduces over it


def configure_backend(hw: HardwareConfig) -> None:
    """Start JAX as `hw` asks; call before the first JAX operation.

    Joins a multi-process run (`hw.processes` > 1: jax.distributed.initialize, which reads SLURM's
    or the coordinator's environment), turns on the persistent compilation cache, and creates
    `hw.cpu_devices` simulated CPU devices.
    """
    if hw.compilation_cache:
        enable_compilation_cache()
    if hw.processes > 1:
        _join_processes(hw.processes)
    if hw.cpu_devices <= 0:
        return
    try:
        jax.config.update("jax_num_cpu_devices", hw.cpu_devices)
    except RuntimeError:  # the backend already started (e.g. an earlier job of a single-process multirun)
        have = len(jax.devices("cpu"))
        if have != hw.cpu_devices:
            raise ConfigError(
                f"hardware.cpu_devices={hw.cpu_devices} but JAX already started with {have} CPU devices in this "
                "process; run one process per job (hydra/launcher=submitit_local)"
            ) from None


def compilation_cache_dir() -> Path:
    """JAX_COMPILATION_CACHE_DIR if set, else `<user cache>/esmeta/jax` (~/.cache/esmeta/jax on Linux)."""
    env = os.environ.get("JAX_COMPILATION_CACHE_DIR")
    return Path(env) if env else Path(platformdirs.user_cache_dir("esmeta")) / "jax"


def enable_compilation_cache() -> None:
    """Persist compiled XLA programs so that the jobs of a sweep (one process each) compile once."""
    jax.config.update("jax_compilation_cache_dir", str(compilation_cache_dir()))


def _join_processes(expected: int) -> None:
    if not jax.distributed.is_initialized():
        try:
            jax.distributed.initialize()
        except (RuntimeError, ValueError) as e:
            raise ConfigError(
                f"hardware.processes={expected} but JAX could not join a multi-process run ({first_line(e)}); "
                "launch one task per process under SLURM (hydra/launcher=slurm_multinode) or set hardware.processes=1"
            ) from None
    if jax.process_count() != expected:
        raise ConfigError(
            f"hardware.processes={expected} but this run has {jax.process_count()} JAX processes; "
            f"launch {expected} tasks or set hardware.processes={jax.process_count()}"
        )


def _platform_devices(platform: str) -> list:
    if platform == "any":
        return jax.devices()
    try:
        return jax.devices(platform)
    except RuntimeError:
        found = ", ".join(sorted({d.platform for d in jax.devices()}))
        raise ConfigError(
            f"hardware.platform={platform} but JAX sees no {platform} devices (found: {found}); "
            "pick another hardware= preset or platform=any"
        ) from None


def replicate(tree: Any, mesh: Mesh) -> Any:
    """`tree` whole on every device of `mesh`, placed as the training step returns its state: the step's first call
    then compiles the one program every later call runs (from uncommitted arrays the second call compiled it again)."""
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def make_mesh(hw: HardwareConfig) -> tuple[Mesh, int]:
    """(1-D mesh with axis "shards" over the devices used, number of logical shards)."""
    available = _platform_devices(hw.platform)
    if hw.devices > len(available):
        raise ConfigError(
            f"hardware.devices={hw.devices} exceeds the {len(available)} {available[0].platform} devices "
            f"available; use at most {len(available)} (0 = all)"
        )
    devices = available[: hw.devices or len(available)]
    shards = hw.shards or len(devices)
    if shards % len(devices):
        raise ConfigError(
            f"hardware.shards={shards} does not divide evenly over {len(devices)} devices; "
            f"use a multiple of {len(devices)} or set hardware.devices to a divisor of {shards}"
        )
    return Mesh(np.array(devices), (AXIS,)), shards
