"""The paper's backprop ProtoNet baseline (Table I: 64 channels, 20-way training, 5-way test) on this machine.

Trains 5-shot and 1-shot runs, splitting a wall-clock budget between them, and prints one JSON line
per run with the test accuracy beside the paper's (0.996 and 0.987).

    ESMETA_DATA_DIR=... python benchmarks/backprop_reference.py [--minutes 30] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from esmeta.run import check_overrides
from esmeta.train import train

PAPER = {5: 0.996, 1: 0.987}  # Table I, "ProtoNet" rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="total wall-clock budget, split over the shots")
    parser.add_argument("--out", type=Path, default=None, help="where the runs are written (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short epoch per shot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="backprop_reference_"))
    shots = (5, 1)
    rows = []
    for shot in shots:
        overrides = [
            "estimator=backprop", "model.channels=64", "task.train_way=20", f"task.shot={shot}",
            "task.test_way=5", f"seed={args.seed}", "eval.val_episodes=20", "eval.test_episodes=200",
        ]
        if args.quick:
            overrides += ["train.epochs=1", "train.episodes_per_epoch=5", "eval.val_episodes=2", "eval.test_episodes=20"]
        else:
            overrides += [f"train.max_minutes={args.minutes / len(shots)}"]
        (config,) = check_overrides(overrides)
        s = train(config, out / f"shot{shot}")
        row = {
            "benchmark": "backprop_reference",
            "shot": shot,
            "train_way": 20,
            "test_way": 5,
            "channels": 64,
            "test_accuracy": round(s["test_accuracy"], 4),
            "test_accuracy_std": round(s["test_accuracy_std"], 4),
            "test_accuracy_ci95": round(s["test_accuracy_ci95"], 4),
            "paper_accuracy": PAPER[shot],
            "episodes": s["episodes"],
            "minutes": round(s["wall_time_s"] / 60, 2),
            "backend": s["backend"],
            "run_dir": str(out / f"shot{shot}"),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    for r in rows:
        print(
            f"{r['shot']}-shot: {r['test_accuracy']:.3f} ± {r['test_accuracy_std']:.3f} after {r['episodes']} episodes "
            f"({r['minutes']} min); paper {r['paper_accuracy']}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
