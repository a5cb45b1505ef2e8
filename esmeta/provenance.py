"""What produced a result: package versions, the command line, the git commit and the machine.

Every run's summary records them (`esmeta.train`); the benchmarks name the processor with `cpu_name`.
"""

from __future__ import annotations

import math
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax


def versions() -> dict[str, str]:
    import flax

    import esmeta

    return {
        "esmeta": esmeta.__version__,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def provenance() -> dict[str, Any]:
    """What produced a result: the command line, esmeta's git commit (None outside a checkout) and whether the
    checkout had uncommitted changes, and the machine (processor and the cores this process may use)."""
    package = Path(__file__).resolve().parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {
        "command": shlex.join([Path(sys.executable).name, "-m", "esmeta.run", *sys.argv[1:]]),
        "commit": commit,
        "dirty": None if status is None else bool(status),
        "machine": {"processor": cpu_name(), "cores": available_cores(), "platform": platform.platform()},
    }


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux), else what `platform` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def matmul_peak_gflops(repeats: int = 5, n: int = 2048) -> float:
    """This process's dense float32 matmul rate (an n x n product, best of `repeats`), in GFLOP/s: the
    machine's speed, printed beside every absolute time published (machines differ 4x and more)."""
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    mm = jax.jit(lambda x: x @ x)
    jax.block_until_ready(mm(a))  # compile
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(mm(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9
