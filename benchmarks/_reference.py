"""Shared by the reference benchmarks: train one configuration and report it beside the paper's figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from esmeta.run import check_overrides
from esmeta.train import train

QUICK = ["train.epochs=1", "train.episodes_per_epoch=5", "eval.val_episodes=2", "eval.test_episodes=20"]


def run_reference(name: str, overrides: list[str], paper: float, run_dir: Path, minutes: float, quick: bool,
                  **labels: Any) -> dict[str, Any]:
    """Train within `minutes` (or a smoke run), print one JSON line and a short human line, return the row."""
    overrides = overrides + (QUICK if quick else [f"train.max_minutes={minutes}"])
    (config,) = check_overrides(overrides)
    s = train(config, run_dir)
    row = {
        "benchmark": name,
        **labels,
        "test_accuracy": round(s["test_accuracy"], 4),
        "test_accuracy_std": round(s["test_accuracy_std"], 4),
        "test_accuracy_ci95": round(s["test_accuracy_ci95"], 4),
        "paper_accuracy": paper,
        "status": s["status"],
        "episodes": s["episodes"],
        "minutes": round(s["wall_time_s"] / 60, 2),
        "backend": s["backend"],
        "run_dir": str(run_dir),
    }
    print(json.dumps(row), flush=True)
    print(
        f"{name}: {row['test_accuracy']:.3f} ± {row['test_accuracy_std']:.3f} after {row['episodes']} episodes "
        f"({row['minutes']} min, {row['status']}); paper {paper}",
        file=sys.stderr,
    )
    return row
