"""Peak memory of one MAML outer step as the inner loop grows: second-order, first-order, forward mode, ES, FD.

The paper's memory argument for ES (Sheng & He 2021, Sec. II.E) where it matters most: an optimization-based
meta-learner (MAML, esmeta/maml.py) whose outer gradient by backprop must keep every inner step. One 5-way
1-shot episode of real Omniglot train images (one query a class, as MAML's Omniglot training episodes), one conv learner, K inner SGD steps:

  second_order   jax.value_and_grad through the unrolled inner loop (the backprop estimator)
  first_order    the same with each inner gradient a constant (first-order MAML)
  forward_mode   the exact second-order gradient by jvps, --tangents basis tangents at a time
  wsr            eq. 9 over --population candidates; each candidate adapts with exact inner gradients
  finite_diff    forward differences on --coordinates coordinates

peak_bytes is XLA's compiled memory analysis of the jitted estimate(key, params, episode) (see
benchmarks/_memory.py); compiling needs no execution, so every K is compiled only. Expected: second order grows
with K (the scan keeps each step's activations for the reverse pass); the others stay flat.

    python benchmarks/memory_vs_inner_steps.py           # 32 channels, K = 1 2 5 10 20 50 (minutes on 2 cores)
    python benchmarks/memory_vs_inner_steps.py --quick   # 4 channels, K = 2 16 (the test suite's check)

One JSON line per (estimator, K); a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
from _data import add_data_args, run_main, train_images
from _memory import compiled_memory

from esmeta import estimators, maml
from esmeta.data.episodes import sample_episode
from esmeta.provenance import provenance

WAY, SHOT, QUERY, SIZE, INNER_LR = 5, 1, 1, 28, 0.4
NAMES = ("second_order", "first_order", "forward_mode", "wsr", "finite_diff")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 channels, K = 2 16 (about a minute on 2 cores)")
    add_data_args(parser)
    parser.add_argument("--channels", type=int, default=None, help="default 32 (quick: 4)")
    parser.add_argument("--steps", type=int, nargs="+", default=None, help="inner steps K (default 1 2 5 10 20 50)")
    parser.add_argument("--population", type=int, default=16, help="wsr candidates")
    parser.add_argument("--coordinates", type=int, default=16, help="finite_diff coordinates a step")
    parser.add_argument("--tangents", type=int, default=8, help="forward_mode basis tangents at a time")
    parser.add_argument("--estimators", nargs="+", default=list(NAMES), choices=NAMES)
    return parser.parse_args(argv)


def outer_step(name: str, args: argparse.Namespace, steps: int):
    """estimate(key, params, episode) of estimator `name` on the MAML loss with `steps` inner steps."""
    metrics = maml.make_metrics_fn(way=WAY, steps=steps, lr=INNER_LR, first_order=name == "first_order")
    loss = lambda params, episode: metrics(params, episode)[0]  # noqa: E731
    if name in ("second_order", "first_order"):
        return estimators.backprop(loss)
    if name == "forward_mode":
        return estimators.forward_mode(loss, chunk_size=args.tangents)
    if name == "wsr":
        return estimators.wsr(loss, sigma=0.01, population=args.population)
    return estimators.finite_diff(loss, coordinates=args.coordinates)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    channels = args.channels or (4 if args.quick else 32)
    # quick: two Ks, both real loops (XLA unrolls a one-step scan, a slightly different working set), far
    # enough apart to show growth; each (estimator, K) is a compile of tens of CPU-seconds, the check's cost
    ks = args.steps or ([2, 16] if args.quick else [1, 2, 5, 10, 20, 50])
    images = jax.device_put(train_images(args, SIZE))
    episode = sample_episode(jax.random.key(0), images, WAY, SHOT, QUERY)
    params = maml.init_params(jax.random.key(1), channels, SIZE, WAY)
    made = provenance()  # the commit and machine behind the numbers (make_tables prints them)
    common = {"backend": jax.default_backend(), "jax": jax.__version__, "cores": len(os.sched_getaffinity(0)),
              "commit": made["commit"], "dirty": made["dirty"], "processor": made["machine"]["processor"],
              "channels": channels, "params": sum(x.size for x in jax.tree.leaves(params)), "way": WAY, "shot": SHOT,
              "query": QUERY, "image_size": SIZE}
    rows = []
    for k in ks:
        for name in args.estimators:
            start = time.perf_counter()
            compiled = jax.jit(outer_step(name, args, k)).lower(jax.random.key(2), params, episode).compile()
            row = {"estimator": name, "inner_steps": k, **compiled_memory(compiled),
                   "compile_seconds": round(time.perf_counter() - start, 1), **common}
            rows.append(row)
            print(json.dumps(row), flush=True)
    summarize(rows, args.estimators, ks)


def summarize(rows: list[dict], names: list[str], ks: list[int]) -> None:
    """Peak MiB per estimator and K, and each estimator's growth from the smallest K to the largest."""
    by = {(r["estimator"], r["inner_steps"]): r["peak_bytes"] for r in rows}
    print(f"\npeak_bytes (MiB) of one outer step, XLA memory analysis; {rows[0]['channels']} channels, "
          f"{WAY}-way {SHOT}-shot, {QUERY} query a class", file=sys.stderr)
    print(f"{'estimator':>14} " + " ".join(f"{'K=' + str(k):>9}" for k in ks) + "   growth", file=sys.stderr)
    for name in names:
        cells = " ".join(f"{by[name, k] / 2**20:9.2f}" for k in ks)
        print(f"{name:>14} {cells}   x{by[name, ks[-1]] / by[name, ks[0]]:.2f}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
