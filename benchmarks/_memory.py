"""Memory measurements shared by the memory benchmarks: XLA's compiled memory analysis and sampled process RSS.

XLA's analysis is static (no execution): `argument + output + temp - alias` bytes of the compiled step,
where temp is the buffer assignment's total scratch after liveness-based reuse. It is the figure the
benchmarks compare (`peak_bytes`). On the CPU backend of jax 0.10 the analysis's own
`peak_memory_in_bytes` field leaves temp out (a gradient through a 24 MB scan reported 2 MB), so it is
not used. The CPU device reports no `memory_stats()`; there the bytes in use are the process's resident
set, sampled every millisecond from /proc while the step runs (XLA's large buffers are mmapped and
returned on free, so the resident set follows them).
"""

from __future__ import annotations

import os
import resource
import threading
import time
from typing import Any

import jax

PAGE = os.sysconf("SC_PAGE_SIZE")


def compiled_memory(compiled: Any) -> dict[str, int]:
    """peak_bytes (argument + output + temp - alias) and its parts, from a compiled jit's memory analysis."""
    m = compiled.memory_analysis()
    parts = {
        "argument_bytes": int(m.argument_size_in_bytes),
        "output_bytes": int(m.output_size_in_bytes),
        "temp_bytes": int(m.temp_size_in_bytes),
        "alias_bytes": int(m.alias_size_in_bytes),
    }
    peak = parts["argument_bytes"] + parts["output_bytes"] + parts["temp_bytes"] - parts["alias_bytes"]
    return {"peak_bytes": peak, **parts}


def device_memory() -> dict[str, int | None]:
    """The default device's own counters where its backend keeps them (GPU/TPU), else None (CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return {"device_peak_bytes": stats.get("peak_bytes_in_use"), "device_bytes_in_use": stats.get("bytes_in_use")}


def current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def max_rss() -> int:
    """The process's resident-set high-water mark since it started (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class RssSampler:
    """`with RssSampler() as s: run()`: s.before, s.peak (bytes) and s.growth = peak - before, sampled every 1 ms."""

    def __init__(self, interval_s: float = 1e-3):
        self.interval_s = interval_s
        self.before = self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            time.sleep(self.interval_s)

    def __enter__(self) -> RssSampler:
        self.before = self.peak = current_rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())

    @property
    def growth(self) -> int:
        return self.peak - self.before
