"""Shared by the reference benchmarks: train one configuration and report it beside the paper's figure."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from esmeta.prelaunch import check_overrides
from esmeta.train import train


def parse_args(doc: str, minutes: float, prefix: str) -> argparse.Namespace:
    """--minutes, --out (default: a fresh temp dir), --quick, --seed."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=minutes, help="time budget")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="budget clock: wall time, or CPU time / cores (fair when the machine is shared)")
    parser.add_argument("--out", type=Path, default=None, help="where the runs are written (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.out = args.out or Path(tempfile.mkdtemp(prefix=prefix))
    return args


QUICK = ["train.epochs=1", "train.episodes_per_epoch=5", "eval.val_episodes=2", "eval.test_episodes=20"]


def run_reference(name: str, overrides: list[str], paper: float, run_dir: Path, minutes: float, quick: bool,
                  clock: str = "wall", **labels: Any) -> dict[str, Any]:
    """Train within `minutes` (or a smoke run), print one JSON line and a short human line, return the row."""
    overrides = overrides + ["logger=none"] + (
        QUICK if quick else [f"train.max_minutes={minutes}", f"train.budget_clock={clock}"]
    )
    cpu0 = time.process_time()
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
        "cpu_minutes_per_core": round((time.process_time() - cpu0) / 60 / len(os.sched_getaffinity(0)), 2),
        "budget_clock": clock,
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
