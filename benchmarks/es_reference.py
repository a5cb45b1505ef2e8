"""wsr on this machine (16 channels, 10-way 5-shot training, 5-way test, 8 shards x 32 = population 256).

The paper's nearest configurations: v3-8, alpha 1, sigma 0.01 with 16 channels and population 1024
reached 0.987 (Table II), with 32 channels and population 256, 0.990 (Table I), after 20,000 episodes.
The goal on a 2-core CPU within 45 minutes is 0.95.

    ESMETA_DATA_DIR=... python benchmarks/es_reference.py [--minutes 45] [--out DIR] [--quick]
"""

from __future__ import annotations

from _data import run_main
from _reference import parse_args, run_reference

PAPER = 0.987  # Table II, alpha 1, sigma 0.01, 16 channels, population 1024, 10-way 5-shot


def main() -> None:
    args = parse_args(__doc__, minutes=45.0, prefix="es_reference_")
    out = args.out
    overrides = [
        "estimator=wsr", "alpha=1", "sigma=0.01", "model.channels=16", "task=10way_5shot",
        "hardware=tpu-v3-8", "estimator.pop_per_shard=32", f"seed={args.seed}",
        "eval.val_episodes=20", "eval.test_episodes=200",
    ]
    run_reference("es_reference", overrides, PAPER, out / "wsr", args.minutes, args.quick, args.clock,
                  estimator="wsr", channels=16, train_way=10, shot=5, test_way=5, population=256, shards=8)


if __name__ == "__main__":
    run_main(main)
