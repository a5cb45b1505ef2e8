"""The paper's backprop ProtoNet baseline (Table I: 64 channels, 20-way training, 5-way test) on this machine.

Trains 5-shot and 1-shot runs, splitting a wall-clock budget between them, and prints one JSON line
per run with the test accuracy beside the paper's (0.996 and 0.987).

    ESMETA_DATA_DIR=... python benchmarks/backprop_reference.py [--minutes 30] [--out DIR] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _reference import run_reference

PAPER = {5: 0.996, 1: 0.987}  # Table I, "ProtoNet" rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="total wall-clock budget, split over the shots")
    parser.add_argument("--out", type=Path, default=None, help="where the runs are written (default: a temp dir)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: one short epoch per shot")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="backprop_reference_"))
    for shot in PAPER:
        overrides = [
            "estimator=backprop", "model.channels=64", "task.train_way=20", f"task.shot={shot}",
            "task.test_way=5", f"seed={args.seed}", "eval.val_episodes=20", "eval.test_episodes=200",
        ]
        run_reference("backprop_reference", overrides, PAPER[shot], out / f"shot{shot}", args.minutes / len(PAPER),
                      args.quick, shot=shot, train_way=20, test_way=5, channels=64)


if __name__ == "__main__":
    main()
