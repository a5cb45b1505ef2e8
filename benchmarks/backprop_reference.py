"""The paper's backprop ProtoNet baseline (Table I: 64 channels, 20-way training, 5-way test) on this machine.

Trains 5-shot and 1-shot runs, splitting a wall-clock budget between them, and prints one JSON line
per run with the test accuracy beside the paper's (0.996 and 0.987).

    ESMETA_DATA_DIR=... python benchmarks/backprop_reference.py [--minutes 30] [--out DIR] [--quick]
"""

from __future__ import annotations

from _data import run_main
from _reference import parse_args, run_reference

PAPER = {5: 0.996, 1: 0.987}  # Table I, "ProtoNet" rows


def main() -> None:
    args = parse_args(__doc__, minutes=30.0, prefix="backprop_reference_")
    out = args.out
    for shot in PAPER:
        overrides = [
            "estimator=backprop", "model.channels=64", "task.train_way=20", f"task.shot={shot}",
            "task.test_way=5", f"seed={args.seed}", "eval.val_episodes=20", "eval.test_episodes=200",
        ]
        run_reference("backprop_reference", overrides, PAPER[shot], out / f"shot{shot}", args.minutes / len(PAPER),
                      args.quick, args.clock, shot=shot, train_way=20, test_way=5, channels=64)


if __name__ == "__main__":
    run_main(main)
