"""What a run needs to continue exactly where it stopped, in one msgpack file written atomically.

A checkpoint holds the mean parameters, the optimizer state, the batch-norm running averages, the
number of episodes done, the per-epoch records so far, the per-step metrics of the unfinished epoch
and the time spent. PRNG state needs no storing: the key of episode `step` is fold_in(train_key, step) from the seed, so a
resumed run draws the same episodes and perturbations as an uninterrupted one (bitwise on CPU).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flax import serialization

from esmeta.errors import ConfigError
from esmeta.results import CHECKPOINT, atomic_write_bytes

__all__ = ["CHECKPOINT", "Progress", "load", "save"]
FORMAT = 2  # 2: the arrays are (params, opt_state, batch-norm running averages)


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


def save(path: Path, arrays: Any, progress: Progress, config: dict[str, Any]) -> None:
    """Write (params, opt_state, running averages) and the progress atomically: a killed run leaves the
    previous checkpoint."""
    blob = {
        "format": FORMAT,
        "arrays": serialization.to_state_dict(arrays),
        "progress": json.dumps(asdict(progress)),
        "config": json.dumps(config, sort_keys=True),
    }
    atomic_write_bytes(path, serialization.msgpack_serialize(blob))


def load(path: Path, arrays_like: Any) -> tuple[Any, Progress, dict[str, Any]]:
    """(arrays shaped like `arrays_like`, progress, the config the checkpoint was written with)."""
    try:
        blob = serialization.msgpack_restore(path.read_bytes())
        if blob.get("format") != FORMAT:
            raise ValueError(f"format {blob.get('format')!r}, expected {FORMAT}")
        arrays = serialization.from_state_dict(arrays_like, blob["arrays"])
        progress = Progress(**json.loads(blob["progress"]))
        config = json.loads(blob["config"])
    except Exception as e:  # a truncated or foreign file: say which, never guess
        raise ConfigError(
            f"cannot resume from {path} ({type(e).__name__}: {e}); delete it or pass train.resume=false"
        ) from None
    return arrays, progress, config
