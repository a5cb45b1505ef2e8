"""What a run needs to continue exactly where it stopped, in one msgpack file written atomically.

A checkpoint holds the mean parameters, the optimizer state, the batch-norm running averages, the
number of episodes done, the per-epoch records so far, the per-step metrics of the unfinished epoch
and the time spent. PRNG state needs no storing: the key of episode `step` is fold_in(train_key, step) from the seed, so a
resumed run draws the same episodes and perturbations as an uninterrupted one (bitwise on CPU).

The file is `{"format", "sha256", "payload"}`: the payload's SHA-256 is checked before anything in it
is trusted, and the arrays' shapes and dtypes against the run's own, so a damaged checkpoint is one
line naming it, never a resumed run with silently different weights. Which config changes a resumed
(or kept) run tolerates is decided here too (`RESUMABLE_CHANGES`, `check_same_run`), and what a run
directory holds for a configuration (`inspect_run_dir`: a finished run to keep, a checkpoint, or neither).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flax import serialization

from esmeta.config import Config, schema_defaults, upgrade_record
from esmeta.errors import ConfigError
from esmeta.roles import plumbing_keys
from esmeta.run_dir import (
    BATCH_STATS,
    CHECKPOINT,
    DONE,
    PARAMS,
    atomic_write_bytes,
    check_no_directory_in_the_way,
    read_finished_summary,
)

__all__ = ["CHECKPOINT", "Progress", "RunState", "Saved", "inspect_run_dir", "load", "read", "refuse", "restore", "save",
           "sha256"]
FORMAT = 3  # 2: a checksummed payload; 3: its arrays are (params, opt_state, batch-norm running averages)


@dataclass
class Progress:
    """The host-side part of the training state (the arrays are the params and optimizer state)."""

    step: int = 0  # episodes done
    records: list[dict[str, Any]] = field(default_factory=list)  # one per finished epoch (metrics.jsonl)
    window: list[dict[str, float]] = field(default_factory=list)  # per-step metrics of the unfinished epoch
    best_val: float | None = None
    val_acc: float | None = None
    seconds: float = 0.0  # wall time spent before this process started
    budget_seconds: float = 0.0  # budget clock spent before this process started
    segments: list[dict[str, Any]] = field(default_factory=list)  # one per process that trained it (an allocation):
    # episodes, wall and CPU time, commit and machine (allocation.segment_recorder); absent in checkpoints before them


@dataclass(frozen=True)
class Saved:
    """A verified checkpoint, read without JAX: its arrays as a state dict, progress and config."""

    path: Path
    arrays: dict[str, Any]
    progress: Progress
    config: dict[str, Any]


def sha256(data: bytes) -> str:
    """Hex SHA-256 of `data`: the checksum stored with checkpoints and parameter files."""
    return hashlib.sha256(data).hexdigest()


def save(path: Path, arrays: Any, progress: Progress, config: dict[str, Any]) -> None:
    """Write (params, opt_state, running averages) and the progress atomically: a killed run leaves the
    previous checkpoint."""
    payload = serialization.msgpack_serialize({
        "arrays": serialization.to_state_dict(arrays),
        "progress": json.dumps(asdict(progress)),
        "config": json.dumps(config, sort_keys=True),
    })
    blob = {"format": FORMAT, "sha256": sha256(payload), "payload": payload}
    atomic_write_bytes(path, serialization.msgpack_serialize(blob))


def refuse(path: Path, problem: str) -> ConfigError:
    """The one-line error for a checkpoint that cannot be resumed: names it and says what to do."""
    return ConfigError(
        f"cannot resume from {path} ({problem}); delete that file to restart this run from scratch, "
        "or pass train.resume=false"
    )


def read(path: Path) -> Saved:
    """The checkpoint at `path`, its checksum verified; a damaged or foreign file is a one-line ConfigError."""
    try:
        blob = serialization.msgpack_restore(path.read_bytes())
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            found = blob.get("format") if isinstance(blob, dict) else None
            raise ValueError(f"format {found!r}, expected {FORMAT}")
        if sha256(blob["payload"]) != blob["sha256"]:
            raise ValueError("checksum mismatch: the file is damaged")
        inner = serialization.msgpack_restore(blob["payload"])
        progress = Progress(**json.loads(inner["progress"]))
        config = json.loads(inner["config"])
        arrays = inner["arrays"]
    except Exception as e:  # a truncated, edited or foreign file: say which, never guess
        raise refuse(path, f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    return Saved(path=path, arrays=arrays, progress=progress, config=config)


def restore(saved: Saved, arrays_like: Any) -> Any:
    """`saved`'s arrays in the structure of `arrays_like`, each checked for the same shape and dtype."""
    try:
        arrays = serialization.from_state_dict(arrays_like, saved.arrays)
    except Exception as e:
        raise refuse(saved.path, f"{type(e).__name__}: {' '.join(str(e).split())}") from None
    expected = serialization.to_state_dict(arrays_like)
    _check_leaves(saved.path, serialization.to_state_dict(arrays), expected, "")
    return arrays


def _check_leaves(path: Path, got: Any, expected: Any, where: str) -> None:
    """Raise unless every array in `got` has the shape and dtype of its counterpart in `expected`."""
    if isinstance(expected, dict):
        for key, value in expected.items():
            _check_leaves(path, got[key], value, f"{where}/{key}")
        return
    a, b = np.asarray(got), np.asarray(expected)
    if a.shape != b.shape or a.dtype != b.dtype:
        raise refuse(path, f"array {where or '/'} is {a.dtype}{list(a.shape)}, this run's is {b.dtype}{list(b.shape)}")


def load(path: Path, arrays_like: Any) -> tuple[Any, Progress, dict[str, Any]]:
    """(arrays shaped like `arrays_like`, progress, the config the checkpoint was written with)."""
    saved = read(path)
    return restore(saved, arrays_like), saved.progress, saved.config


# Settings that may change between a run and its resumption: the plumbing ones, which do not change what is computed.
RESUMABLE_CHANGES = frozenset(plumbing_keys())


def config_difference(saved: dict[str, Any], current: dict[str, Any], prefix: str = "",
                      defaults: dict[str, Any] | None = None) -> str | None:
    """The first setting (as `key: saved -> current`) that differs between two config dicts, ignoring RESUMABLE_CHANGES.

    A setting the saved config lacks was added to esmeta after it was written: that run had the behaviour the
    setting's default keeps (a new setting defaults to the old behaviour), so it compares as that default.
    """
    if defaults is None:
        defaults = _defaults(current)
    for key in sorted(set(saved) | set(current)):
        path = f"{prefix}{key}"
        if path in RESUMABLE_CHANGES:
            continue
        default = defaults.get(key) if isinstance(defaults, dict) else None
        a = saved[key] if key in saved else default
        b = current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = config_difference(a, b, f"{path}.", default if isinstance(default, dict) else {})
            if found:
                return found
        elif a != b:
            return f"{path}: {a!r} -> {b!r}"
    return None


def _defaults(current: dict[str, Any]) -> dict[str, Any]:
    """The schema's defaults for a config like `current`: its estimator section's are that estimator's."""
    return schema_defaults((current.get("estimator") or {}).get("name"))


def check_same_run(saved: dict[str, Any], current: dict[str, Any], where: Path, what: str) -> None:
    """Refuse (one line) to continue or keep `what` in `where` when its saved config differs from `current`'s;
    a config saved by an earlier esmeta is compared in today's layout (`esmeta.config.upgrade_record`)."""
    diff = config_difference(upgrade_record(saved), current)
    if diff:
        raise ConfigError(
            f"{where} holds {what} of a different configuration ({diff}); "
            "write to another directory (hydra.run.dir=...) or pass train.resume=false to start over"
        )


@dataclass(frozen=True)
class RunState:
    """What a run directory holds for this configuration: a finished run to keep, a checkpoint, or neither."""

    finished: dict[str, Any] | None = None
    saved: Saved | None = None


def _check_progress(saved: Saved, config: Config) -> None:
    """A checkpoint's episode count must lie inside this run and agree with its logged epochs."""
    p, epe = saved.progress, config.train.episodes_per_epoch
    total = config.train.epochs * epe
    if not (0 < p.step < total and len(p.records) == p.step // epe and len(p.window) == p.step % epe):
        raise refuse(
            saved.path, f"it says {p.step} episodes done with {len(p.records)} epochs logged, which does not fit "
            f"this run's {config.train.epochs} x {epe} episodes"
        )


# A finished run's trained state, and the key of its checksum in summary.json.
PARAM_FILES = ((PARAMS, "params_sha256"), (BATCH_STATS, "batch_stats_sha256"))


def check_params_intact(path: Path, summary: dict[str, Any]) -> None:
    """Refuse (one line) to keep a finished run whose parameter files are missing, unverifiable (no checksum
    recorded) or not what its summary recorded: keeping it would publish a result its model no longer backs."""
    for name, key in PARAM_FILES:
        try:
            intact = sha256((path / name).read_bytes()) == summary.get(key)
        except OSError:
            intact = False
        if not intact:
            raise ConfigError(
                f"{path} holds a finished run whose {name} is missing, damaged or unverifiable (it does not match "
                f"the {key} its summary.json recorded); pass train.resume=false to retrain it"
            )


def _extends(previous: dict[str, Any], config: Config) -> bool:
    """Whether a finished run is one its time budget stopped (train.max_minutes) and this config asks for a larger
    budget (or none): then the rerun continues it from the checkpoint it kept."""
    old = (previous.get("config") or {}).get("train", {}).get("max_minutes")
    new = config.train.max_minutes
    return bool(previous.get("stopped_by_budget")) and isinstance(old, (int, float)) and (new == 0 or new > old)


def inspect_run_dir(config: Config, path: Path) -> RunState:
    """What `path` holds for `config`, reading only; a directory where a results file goes, a finished run of
    another configuration or with damaged parameters, a damaged summary or an unusable checkpoint is a one-line
    EsmetaError (the command is refused, nothing written)."""
    check_no_directory_in_the_way(path)
    if not config.train.resume:
        return RunState()
    if (path / DONE).exists():
        previous = read_finished_summary(path)
        if previous.get("status") not in ("failed", "skipped"):  # a job that never ran is redone
            check_same_run(previous.get("config", {}), config.to_dict(), path, "a finished run")
            if not _extends(previous, config):
                check_params_intact(path, previous)
                return RunState(finished=previous)
            saved = read(path / CHECKPOINT) if (path / CHECKPOINT).exists() else None
            if saved is None:
                raise ConfigError(
                    f"{path} holds a run its time budget stopped at episode {previous.get('episodes')} without the "
                    f"checkpoint a larger train.max_minutes would continue from (written before esmeta kept it); "
                    "keep its budget, or pass train.resume=false to train it again from the start"
                )
            check_same_run(saved.config, config.to_dict(), path, "a checkpoint")
            _check_progress(saved, config)
            return RunState(saved=saved)
    if (path / CHECKPOINT).exists():
        saved = read(path / CHECKPOINT)
        check_same_run(saved.config, config.to_dict(), path, "a checkpoint")
        _check_progress(saved, config)
        return RunState(saved=saved)
    return RunState()
