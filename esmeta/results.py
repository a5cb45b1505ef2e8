"""A run's output directory: the only interface between training runs and analysis.

Layout (one directory per Hydra job):
  metrics.jsonl    one JSON object per logged point (episode, train/..., val/..., wall_time_s)
  summary.json     status, test accuracy (mean, std, 95% CI), config, versions; written atomically
  params.msgpack   the trained embedding parameters (flax.serialization)
  batch_stats.msgpack  the batch-norm running averages, {"EpisodeBatchNorm_<b>": {"mean", "var"}} (idem)
  checkpoint.msgpack  while the run is unfinished: what a resumed run continues from (esmeta.checkpoint)
  done             written last: a directory without it is incomplete, whatever else it holds
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from esmeta.errors import ConfigError

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PARAMS = "params.msgpack"
BATCH_STATS = "batch_stats.msgpack"
DONE = "done"
CHECKPOINT = "checkpoint.msgpack"  # see esmeta.checkpoint; removed when the run is done


def _jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / jax scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write via a temporary file in the same directory and rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def ensure_writable_dir(path: Path, key: str = "hydra.run.dir") -> None:
    """Create `path` (and parents) or raise a one-line ConfigError saying which setting to change."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe.", delete=True)
        probe.close()
    except OSError as e:
        raise ConfigError(
            f"output directory {path} is not writable ({e.strerror or e}); set {key}=<a writable directory>"
        ) from None


class RunDir:
    """Writes one run's results; `done` is written last so partial runs are recognisable.

    `enabled=False` (every process but process 0 of a multi-process run) writes nothing.
    """

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def start(self, keep_checkpoint: bool = False) -> None:
        """Prepare the directory: an old `done` marker, summary or metrics must not survive into this run;
        a checkpoint survives only when the run resumes from it."""
        if not self.enabled:
            return
        ensure_writable_dir(self.path)
        for name in (DONE, SUMMARY, METRICS) + (() if keep_checkpoint else (CHECKPOINT,)):
            (self.path / name).unlink(missing_ok=True)

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path / METRICS, "a") as f:
                f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl by `records` (a resumed run's epochs up to its checkpoint), atomically."""
        if self.enabled:
            text = "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in records)
            atomic_write_bytes(self.path / METRICS, text.encode())

    def write_params(self, params: bytes, batch_stats: bytes) -> None:
        """The trained state: parameters and batch-norm running averages (serialized), side by side."""
        if self.enabled:
            atomic_write_bytes(self.path / PARAMS, params)
            atomic_write_bytes(self.path / BATCH_STATS, batch_stats)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the summary, stamped with `finished_at` (UTC, ISO 8601), then the `done` marker; return it."""
        summary = {**summary, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        if self.enabled:
            atomic_write_json(self.path / SUMMARY, summary)
            atomic_write_bytes(self.path / DONE, b"")
        return summary

    @property
    def done(self) -> bool:
        return (self.path / DONE).exists()


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def read_metrics(run_dir: str | Path) -> Iterator[dict[str, Any]]:
    with open(Path(run_dir) / METRICS) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
