"""One short run for a first accelerator window (at most ~8 minutes on one GPU): JSON lines of

  check=throughput  population_throughput's esmeta vs naive_vmap rows at 16 and 64 channels
  check=precision   wsr fitnesses of the same candidates at the default and at full float32 ("highest")
                    matmul precision: the largest relative fitness difference and z-score difference
  check=table1      a v3-8 Table I row (point=table1-v3-8-5shot) trained for a fixed number of episodes

    ESMETA_DATA_DIR=... python benchmarks/accelerator_check.py [--episodes 200] [--out DIR] [--quick]

`--quick` (the test suite, on CPU) shrinks every part: 16 channels, a few candidates, a smoke-scale row.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from _data import add_data_args, run_main
from population_throughput import QUERY, SHOT, SIGMA, SIZE, WAY, fast_loss, fixed_episode, matmul_peak_gflops, measure

from esmeta.estimators.wsr import candidate_noise, shape_fitness
from esmeta.protonet import init_params


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # The whole docstring: its first line alone stops mid-sentence ("JSON lines of").
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="every part shrunk to run on CPU in the test suite")
    parser.add_argument("--episodes", type=int, default=200, help="training episodes of the Table I row")
    parser.add_argument("--out", type=Path, default=None, help="where the Table I run is written (default: a temp dir)")
    add_data_args(parser)
    args = parser.parse_args(argv)
    args.repeats, args.naive_cap = 2, (16 if args.quick else 64)
    return args


def precision_check(channels: int, population: int, episode, common: dict) -> dict:
    """wsr's fitnesses of candidates 0..population-1 at default and at "highest" matmul precision."""
    mu = init_params(jax.random.key(1), channels, SIZE)
    loss = fast_loss()
    key = jax.random.key(2)

    def fitnesses(precision: str | None):
        def fitness(i):
            return -loss(jax.tree.map(jnp.add, mu, candidate_noise(key, mu, i, SIGMA, False)), episode)

        def all_of():  # the precision applies while tracing, so each setting is its own program
            if precision is None:
                return jax.lax.map(fitness, jnp.arange(population))
            with jax.default_matmul_precision(precision):
                return jax.lax.map(fitness, jnp.arange(population))

        return np.asarray(jax.jit(all_of)(), np.float64)

    default, full = fitnesses(None), fitnesses("highest")
    z_default = np.asarray(shape_fitness(jnp.asarray(default, jnp.float32), "zscore"), np.float64)
    z_full = np.asarray(shape_fitness(jnp.asarray(full, jnp.float32), "zscore"), np.float64)
    row = {"check": "precision", "channels": channels, "population": population,
           "max_rel_fitness_diff": float(np.max(np.abs(default - full)) / np.max(np.abs(full))),
           "max_zscore_diff": float(np.max(np.abs(z_default - z_full))),
           "fitness_std": float(np.std(full)), **common}
    print(json.dumps(row), flush=True)
    return row


def table1_row(args: argparse.Namespace, common: dict) -> dict:
    """Train the v3-8 5-shot Table I point for `--episodes` episodes (quick: a smoke-scale few) and report it."""
    from esmeta.prelaunch import check_overrides
    from esmeta.train import train

    episodes = 2 if args.quick else args.episodes
    overrides = ["point=table1-v3-8-5shot", "logger=none", "train.epochs=1", f"train.episodes_per_epoch={episodes}",
                 "train.checkpoint_every=0", "eval.val_episodes=1", f"eval.test_episodes={10 if args.quick else 200}"]
    if args.quick:
        overrides.append("scale=smoke")
    (config,) = check_overrides(overrides)
    run_dir = (args.out or Path(tempfile.mkdtemp(prefix="accelerator_check_"))) / "table1-v3-8-5shot"
    start = time.perf_counter()
    s = train(config, run_dir)
    row = {"check": "table1", "point": "table1-v3-8-5shot", "paper_accuracy": 0.990, "episodes": s["episodes"],
           "test_accuracy": round(s["test_accuracy"], 4), "test_accuracy_std": round(s["test_accuracy_std"], 4),
           "status": s["status"], "minutes": round((time.perf_counter() - start) / 60, 2), "run_dir": str(run_dir),
           **common}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    episode = fixed_episode(args)
    peak = matmul_peak_gflops()
    common = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "jax": jax.__version__,
              "cores": len(os.sched_getaffinity(0)), "way": WAY, "shot": SHOT, "query": QUERY,
              "matmul_peak_gflops": round(peak, 1)}
    channels_list, populations = ((16,), (16,)) if args.quick else ((16, 64), (256, 1024))
    for channels in channels_list:
        measure(channels, populations, episode, args, peak, {"check": "throughput", **common})  # prints its rows
    for channels in channels_list:
        precision_check(channels, 8 if args.quick else 256, episode, common)
    table1_row(args, common)


if __name__ == "__main__":
    run_main(main)
