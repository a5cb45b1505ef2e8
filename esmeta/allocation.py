"""A run's share of an allocation: the time budget's clock, the allocation's deadline, the signals that stop it
between steps, and the segment each process trained; the bookkeeping of time kept apart from the training math."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from esmeta.provenance import available_cores, matmul_peak_gflops, provenance

ALLOCATION_EXIT = 3  # exit status of a command stopped by train.allocation_minutes: unfinished, rerun to continue


def segment_recorder(start_episode: int, wall0: float, cpu0: float) -> Callable[[int], dict[str, Any]]:
    """This process's part of a run (one allocation): `record(episode)` says which episodes it trained, on what
    code and machine (with its matmul rate, measured once here), in how much wall and CPU time so far."""
    source = provenance()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    peak = round(matmul_peak_gflops(repeats=3), 1)

    def record(end_episode: int) -> dict[str, Any]:
        return {"start_episode": start_episode, "end_episode": end_episode, "started_at": started,
                "wall_s": round(time.perf_counter() - wall0, 1), "cpu_s": round(time.process_time() - cpu0, 1),
                "commit": source["commit"], "dirty": source["dirty"], "processor": source["machine"]["processor"],
                "cores": source["machine"]["cores"], "matmul_peak_gflops": peak}

    return record


class StopRequests:
    """SIGTERM and SIGINT (Ctrl-C) while training, noted and acted on after the current step: the loop then
    checkpoints and stops (`RunStopped`). A second Ctrl-C stops at once (the last checkpoint stays)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def _note(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():  # signal handlers can only be set there
            self.previous = {s: signal.signal(s, self._note) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def make_budget_clock(kind: str) -> Callable[[], float]:
    """Seconds spent so far by the budget's clock: elapsed wall time, or this process's CPU time divided by
    the cores it may use (on a machine shared with other work, the compute a quiet machine would give)."""
    if kind == "cpu":
        cores = available_cores()
        cpu0 = time.process_time()
        return lambda: (time.process_time() - cpu0) / cores
    wall0 = time.perf_counter()
    return lambda: time.perf_counter() - wall0


def stop_reason(stops: StopRequests, deadline: float | None, allocation: float) -> tuple[str, int] | None:
    """(why, exit status) when training must stop here, unfinished: a signal, or the allocation's end."""
    if stops.signum is not None:
        return signal.Signals(stops.signum).name, 128 + stops.signum
    if deadline is not None and time.monotonic() >= deadline:
        return f"train.allocation_minutes={allocation:g} reached", ALLOCATION_EXIT
    return None
