"""Experiment tracking: one Weights & Biases run per Hydra job, or nothing (`logger=none`).

The run directory's own files (metrics.jsonl, summary.json) stay the source of truth; W&B is a
mirror for browsing. Its mode comes from the environment variable WANDB_MODE and defaults to
`offline`, so nothing needs a network or an account; W&B's files go to `<run_dir>/wandb/`, where
`wandb sync <run_dir>/wandb/offline-run-*` uploads them later. The W&B run id is kept in
`<run_dir>/wandb_run_id`, so a run directory that is resumed continues the same W&B run.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from esmeta.config import Config, LoggerConfig
from esmeta.errors import EsmetaError, first_line
from esmeta.roles import unnamed_overrides
from esmeta.run_dir import atomic_write_bytes

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
DEFAULT_MODE = "offline"
RUN_ID_FILE = "wandb_run_id"
# Overrides left out of run names, as Hydra leaves them out of job directories: the plumbing (paths, progress, ...),
# the sweep (recorded as the W&B group) and its scale.
UNNAMED = frozenset(unnamed_overrides())


class Tracker(Protocol):
    """Where a job's metrics go besides its run directory. Use as a context manager or call `finish`."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        """One row of metrics at `step` (the episode count); rows logged at the same step are merged."""

    def summary(self, values: Mapping[str, Any]) -> None:
        """Final values of the run (test accuracy, status, ...), shown beside the config."""

    def finish(self, exit_code: int = 0) -> None:
        """Close the run; exit_code != 0 marks it failed. Further calls do nothing."""

    def __enter__(self) -> Tracker: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class _FinishOnExit:
    """Context-manager behaviour shared by the trackers: finish on exit, failed if an exception escapes."""

    def finish(self, exit_code: int = 0) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.finish(_exit_code(exc))


def _exit_code(exc: BaseException | None) -> int:
    """0 without an exception, a SystemExit's own integer status, otherwise 1."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 1


class NullTracker(_FinishOnExit):
    """Tracks nothing: `logger=none`, WANDB_MODE=disabled, or a process other than process 0."""

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        pass

    def summary(self, values: Mapping[str, Any]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbTracker(_FinishOnExit):
    """One open W&B run; `finish` closes it so that the next job of a multirun gets its own run."""

    def __init__(self, run: Run):
        self.run: Run | None = run

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if self.run is None:
            raise RuntimeError("log() after finish(): this W&B run is closed")
        row = {k: _plain(v) for k, v in metrics.items()}
        row.setdefault(STEP_METRIC, step)  # the x-axis every metric is defined against (define_metrics)
        self.run.log(row, step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is None:
            raise RuntimeError("summary() after finish(): this W&B run is closed")
        self.run.summary.update({k: _plain(v) for k, v in values.items()})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is None:
            return
        import wandb

        run, self.run = self.run, None
        run.finish(exit_code=exit_code)
        # finish() returns before W&B's service has flushed the run's data file (wandb 0.31); shutting
        # the service down waits for it, so the files are complete for `wandb sync` or a reader. The
        # next job of a multirun starts a fresh service (about 0.3 s).
        wandb.teardown()
        if run.settings.mode == "offline":
            log.info("W&B offline run %s; upload it with: wandb sync %s", run.id, run.settings.sync_dir)


def _plain(value: Any) -> Any:
    """Plain Python values for W&B: numpy/JAX scalars unwrapped, containers recursed; NaN and inf are kept."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def wandb_mode() -> str:
    """The W&B mode: $WANDB_MODE; when unset `offline`, or `online` in a job that a W&B sweep agent started.

    An agent (it sets WANDB_SWEEP_ID) reports each job back to its sweep, which only works online.
    A value other than MODES is a one-line error.
    """
    default = "online" if os.environ.get("WANDB_SWEEP_ID") else DEFAULT_MODE
    mode = os.environ.get("WANDB_MODE", "").strip() or default
    if mode not in MODES:
        raise EsmetaError(
            f"WANDB_MODE={mode!r} is not an option; choose one of: {', '.join(MODES)} (unset: {default})"
        )
    return mode


def _stored_run_id(run_dir: Path) -> str | None:
    """The W&B run id an earlier start of this run directory recorded, if any."""
    path = run_dir / RUN_ID_FILE
    if not path.is_file():
        return None
    run_id = path.read_text().strip()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", run_id):
        raise EsmetaError(f"{path} holds no valid W&B run id ({run_id[:40]!r}); delete it to start a new W&B run")
    return run_id


def open_tracker(
    logger: LoggerConfig,
    run_dir: str | Path,
    *,
    name: str,
    group: str | None,
    tags: Sequence[str],
    config: Mapping[str, Any],
    enabled: bool = True,
    resume: bool = True,
) -> Tracker:
    """Start tracking one job: a W&B run (logger=wandb) or a NullTracker.

    `enabled=False` (every process but process 0 of a multi-process run) and WANDB_MODE=disabled
    track nothing. `logger.group`, when set, wins over `group`. With `resume`, a run id stored in
    `run_dir` by an earlier start is continued; otherwise a new W&B run replaces it.
    A W&B start failure (online without a login, ...) raises a one-line EsmetaError.
    """
    if logger.name == "none" or not enabled:
        return NullTracker()
    mode = wandb_mode()
    if mode == "disabled":
        return NullTracker()
    import wandb  # only jobs that track pay for the import

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    run_id = _stored_run_id(run_dir) if resume else None
    settings = wandb.Settings(silent=mode == "offline", console="off")  # Hydra's job log has the console
    try:
        run = wandb.init(
            project=logger.project,
            entity=logger.entity,
            group=logger.group or group,
            name=name,
            tags=list(tags),
            config=_plain(dict(config)),
            dir=run_dir,
            mode=mode,
            id=run_id,
            resume="allow" if run_id else None,
            reinit="finish_previous",  # never log into a run left open by an earlier job of this process
            settings=settings,
        )
    except wandb.errors.Error as e:
        raise EsmetaError(
            f"W&B could not start a run (WANDB_MODE={mode}): {first_line(e)}; run `wandb login`, "
            f"set WANDB_MODE=offline, or pass logger=none"
        ) from None
    define_metrics(run)
    atomic_write_bytes(run_dir / RUN_ID_FILE, f"{run.id}\n".encode())
    log.info("W&B %s run %s (%s) in %s", mode, run.id, name, run.settings.sync_dir)
    return WandbTracker(run)


STEP_METRIC = "episode"  # every row carries it: W&B's x-axis for per-step and per-epoch metrics alike


def define_metrics(run: Run) -> None:
    """W&B's metric definitions, as its users set them up: every metric plotted against `episode` (not W&B's own
    row counter), and the run summary's `val/accuracy` the best (max) validation accuracy, not the last."""
    run.define_metric(STEP_METRIC)
    for pattern in ("train/*", "es/*", "epoch/*", "epoch", "wall_time_s"):
        run.define_metric(pattern, step_metric=STEP_METRIC)
    run.define_metric("val/accuracy", step_metric=STEP_METRIC, summary="max")


def _override_key(override: str) -> str:
    """`key` of an override such as `key=value`, `+key=value`, `++key=value` or `~key`."""
    return override.lstrip("+~").split("=", 1)[0].strip()


def epoch_row(record: dict[str, float]) -> dict[str, float]:
    """An epoch's record as a W&B row: its means of per-step metrics renamed `epoch/<name>`, so that they do
    not overwrite the last step's own `train/loss` etc. (both rows share the episode count as their step)."""
    per_epoch = ("epoch", "episode", "val/accuracy", "wall_time_s", "es/candidates_per_s", "train/episodes_per_s")
    return {(k if k in per_epoch else f"epoch/{k.replace('/', '_')}"): v for k, v in record.items()}


def run_name(overrides: Sequence[str]) -> str:
    """A readable, stable run name from a job's Hydra overrides: `key=value` pairs sorted by key, comma-joined.

    Hydra's own settings and the overrides job directories leave out (UNNAMED) are left out;
    a job without other overrides is `default`.
    """
    kept = [
        o.strip()
        for o in overrides
        if (key := _override_key(o)).split("/")[0].split(".")[0] != "hydra" and key not in UNNAMED
    ]
    return ",".join(sorted(kept, key=lambda o: (_override_key(o), o))) or "default"


def default_group(sweep: str | None, sweep_dir: str | Path | None) -> str | None:
    """The W&B group of a job: its stored sweep's name, else its multirun's directory, else none (a single run).

    A multirun directory is named by its last two parts (by default `<date>/<time>`), which tell
    multiruns apart without the machine-specific prefix.
    """
    if sweep:
        return sweep
    if sweep_dir:
        return "/".join(Path(sweep_dir).parts[-2:])
    return None


def run_tags(config: Config) -> list[str]:
    """Tags to filter runs by: the estimator, the hardware preset and the budget scale."""
    return [config.estimator.name, config.hardware.name, config.scale.name]
