"""Peak memory and time of one wsr step at population 16384 on a 64-channel ProtoNet, on the CPU.

Its population matrix (16384 candidates x 111,936 parameters) would take 7.3 GB in float32; the wsr
estimator never builds it. Candidate i's noise is regenerated from fold_in(key, i) when its fitness is
evaluated (one candidate at a time on CPU) and again, a few candidates at a time, in the weighted sum
of eq. 9 (estimators/population.py: NOISE_BUDGET), so the step's memory is that of one candidate's
forward pass plus a small block of noise, whatever the population.

Each point runs in a fresh Python process (so that one point's compilation and buffers, and the
imports, count once): it loads Omniglot, samples one real 10-way 5-shot 5-query training episode of
the paper split, compiles the jitted step ahead of time and runs it once, reporting
  peak_bytes               XLA's compiled memory analysis: argument + output + temp - alias (_memory.py)
  rss_step_peak_bytes      the process's resident set at its highest during the step (sampled every ms),
                           Python, JAX and the loaded dataset included
  rss_step_growth_bytes    that peak minus the resident set just before the step
  process_peak_rss_bytes   the process's high-water mark from start to end (ru_maxrss), compilation included
  seconds, candidates_per_s, population_matrix_bytes (what the matrix would take)
Target: a population of 16384 at 64 channels in under 1 GB.

    python benchmarks/population_scale.py            # 8 shards x 2048 = 16384 (about 8 minutes on 2 cores)
    python benchmarks/population_scale.py --quick    # 8 shards x 16 = 128 (seconds)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time

from _data import add_data_args, run_main, train_images

WAY, SHOT, QUERY, SIZE, CHANNELS = 10, 5, 5, 32, 64
TARGET_BYTES = 10**9


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="population 128 (seconds)")
    add_data_args(parser)
    parser.add_argument("--shards", type=int, default=8, help="logical population shards (one device)")
    parser.add_argument("--pop-per-shard", type=int, nargs="+", default=None, help="default 2048 (quick: 16)")
    parser.add_argument("--channels", type=int, default=CHANNELS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # one measurement, in this process
    return parser.parse_args(argv)


def measure(args: argparse.Namespace, pop_per_shard: int) -> dict:
    """One wsr step in this (fresh) process."""
    import jax
    from _memory import RssSampler, compiled_memory, device_memory, max_rss

    from esmeta.data.episodes import sample_episode
    from esmeta.estimators import WsrConfig, make_estimator
    from esmeta.estimators.population import noise_chunk
    from esmeta.protonet import init_params, make_loss_fn, num_params

    train = train_images(args, SIZE)
    episode = jax.jit(sample_episode, static_argnums=(2, 3, 4))(jax.random.key(0), train, WAY, SHOT, QUERY)
    del train
    gc.collect()
    mu = init_params(jax.random.key(1), args.channels, SIZE)
    d_phi = num_params(mu)
    loss = make_loss_fn(way=WAY, distance="euclidean", scale=1.0, norm_stats="episode")
    config = WsrConfig(optimizer="sgd", pop_per_shard=pop_per_shard)
    step = jax.jit(make_estimator(config, 0.01, loss, None, args.shards))
    key = jax.random.key(2)

    start = time.perf_counter()
    compiled = step.lower(key, mu, episode).compile()
    compile_seconds = time.perf_counter() - start
    with RssSampler() as rss:
        start = time.perf_counter()
        _, metrics = jax.block_until_ready(compiled(key, mu, episode))
        seconds = time.perf_counter() - start
    population = pop_per_shard * args.shards
    return {
        "estimator": "wsr", "population": population, "shards": args.shards, "pop_per_shard": pop_per_shard,
        "channels": args.channels, "params": d_phi, "population_matrix_bytes": population * d_phi * 4,
        **compiled_memory(compiled), "rss_step_peak_bytes": rss.peak, "rss_step_growth_bytes": rss.growth,
        "rss_before_step_bytes": rss.before, "process_peak_rss_bytes": max_rss(), **device_memory(),
        "seconds": round(seconds, 2), "candidates_per_s": round(population / seconds, 1),
        "compile_seconds": round(compile_seconds, 2), "noise_chunk": noise_chunk(0, pop_per_shard, d_phi),
        "fitness_mean": float(metrics["fitness_mean"]), "nonfinite": float(metrics["nonfinite"]),
        "way": WAY, "shot": SHOT, "query": QUERY, "backend": jax.default_backend(), "jax": jax.__version__,
        "cores": len(os.sched_getaffinity(0)),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    pops = args.pop_per_shard or ([16] if args.quick else [2048])
    if args.child:
        print(json.dumps(measure(args, pops[0])), flush=True)
        return
    rows = []
    for pps in pops:  # a fresh process per point
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--shards", str(args.shards),
               "--pop-per-shard", str(pps), "--channels", str(args.channels)]
        cmd += [f"--{k.replace('_', '-')}={v}" for k, v in (("data_root", args.data_root), ("cache_dir", args.cache_dir)) if v]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"population_scale: the measurement of pop_per_shard={pps} failed:\n{proc.stderr[-3000:]}")
        row = json.loads([line for line in proc.stdout.splitlines() if line.startswith("{")][-1])
        rows.append(row)
        print(json.dumps(row), flush=True)

    mib = lambda b: b / 2**20  # noqa: E731
    print(f"\n{'population':>10} {'matrix MiB':>10} {'XLA peak MiB':>12} {'RSS in step':>11} {'RSS growth':>10} "
          f"{'process max':>11} {'seconds':>8} {'cand/s':>7}", file=sys.stderr)
    for r in rows:
        print(f"{r['population']:>10} {mib(r['population_matrix_bytes']):>10.0f} {mib(r['peak_bytes']):>12.1f} "
              f"{mib(r['rss_step_peak_bytes']):>11.0f} {mib(r['rss_step_growth_bytes']):>10.1f} "
              f"{mib(r['process_peak_rss_bytes']):>11.0f} {r['seconds']:>8.1f} {r['candidates_per_s']:>7.1f}",
              file=sys.stderr)
    print(f"target: under {TARGET_BYTES / 1e9:.0f} GB (MiB = 2^20 bytes)", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
