"""How close each estimator's direction is to backprop's, on one fixed real Omniglot episode.

For a fixed mu (init_params at --seed) and a fixed 10-way 5-shot 5-query training episode, prints one
JSON line per (estimator, population) with the cosine to jax.grad of the ProtoNet loss:
finite differences over all coordinates of a small net, WSR (eq. 9) at growing populations, and WSR with
low-rank (EGGROLL-style) perturbations (estimator.rank, beyond the paper) at the same populations.
    python benchmarks/grad_quality.py --quick      # about a minute on a 2-core CPU (full run: ~10 min)
A table follows on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import jax
import numpy as np
from _data import add_data_args, run_main, train_images
from jax.flatten_util import ravel_pytree

from esmeta.data.episodes import sample_episode
from esmeta.estimators import BackpropConfig, EstimatorConfig, FiniteDiffConfig, WsrConfig, make_estimator
from esmeta.protonet import init_params, make_loss_fn, num_params

WAY, SHOT, QUERY = 10, 5, 5


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small populations only (about a minute on 2 CPU cores)")
    add_data_args(parser)
    parser.add_argument("--image-size", type=int, default=32, help="the paper resizes to 32")
    parser.add_argument("--seed", type=int, default=0, help="mu and the episode")
    parser.add_argument("--sigma", type=float, default=0.01, help="WSR perturbation scale (paper v3-8: 0.01)")
    parser.add_argument("--repeats", type=int, default=None, help="WSR keys per population (default 2, quick 1)")
    parser.add_argument("--eval-mode", default="auto", choices=("auto", "map", "vmap"))
    return parser.parse_args(argv)


def fixed_problem(args: argparse.Namespace, channels: int):
    """(loss, mu, episode): the paper's split, train classes, one episode and mu from --seed."""
    train = train_images(args, args.image_size)
    key_episode, key_mu = jax.random.split(jax.random.key(args.seed))
    episode = jax.jit(sample_episode, static_argnums=(2, 3, 4))(key_episode, train, WAY, SHOT, QUERY)
    mu = jax.jit(init_params, static_argnums=(1, 2))(key_mu, channels, args.image_size)
    loss = make_loss_fn(way=WAY, distance="euclidean", scale=1.0, norm_stats="episode")
    return loss, mu, episode


def run(config: EstimatorConfig, sigma: float, loss, mu, episode, keys: list[int]) -> tuple[list, float, float]:
    """Estimates for each key, compile seconds, and mean seconds per estimate after compilation."""
    estimate = jax.jit(make_estimator(config, sigma, loss, None, 1))
    start = time.perf_counter()
    compiled = estimate.lower(jax.random.key(0), mu, episode).compile()
    compile_s = time.perf_counter() - start
    out, run_s = [], 0.0
    for k in keys:
        start = time.perf_counter()
        g, metrics = jax.block_until_ready(compiled(jax.random.key(k), mu, episode))
        run_s += time.perf_counter() - start
        out.append((np.asarray(ravel_pytree(g)[0], np.float64), {k: float(v) for k, v in metrics.items()}))
    return out, compile_s, run_s / len(keys)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def report(rows: list[dict], **row) -> None:
    rows.append(row)
    print(json.dumps(row), flush=True)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    repeats = args.repeats or (1 if args.quick else 2)
    common = {"jax": jax.__version__, "backend": jax.default_backend(), "way": WAY, "shot": SHOT, "query": QUERY,
              "image_size": args.image_size, "seed": args.seed}
    rows: list[dict] = []

    # Finite differences over every coordinate of a 4-channel net (quick: central only).
    loss, mu, episode = fixed_problem(args, channels=4)
    [(true, _)], _, _ = run(BackpropConfig(), 0.0, loss, mu, episode, [0])
    n = num_params(mu)
    for central in (True,) if args.quick else (False, True):
        config = FiniteDiffConfig(pop_per_shard=n, central=central, fd_sigma=1e-3, eval_mode=args.eval_mode
        )
        [(g, metrics)], compile_s, seconds = run(config, 0.0, loss, mu, episode, [0])
        report(rows, estimator="finite_diff_central" if central else "finite_diff",
               population=int(metrics["candidates"]), channels=4, params=n, cosine_to_backprop=cosine(g, true),
               relative_error=float(np.linalg.norm(g - true) / np.linalg.norm(true)), seconds=seconds,
               compile_seconds=compile_s, **common)

    # WSR at growing populations on the paper's 16-channel net.
    loss, mu, episode = fixed_problem(args, channels=16)
    [(true, _)], _, _ = run(BackpropConfig(), 0.0, loss, mu, episode, [0])
    populations = (64, 256, 1024) if args.quick else (64, 256, 1024, 4096, 16384)
    for population in populations:
        config = WsrConfig(pop_per_shard=population, eval_mode=args.eval_mode)
        results, compile_s, seconds = run(config, args.sigma, loss, mu, episode, list(range(1, repeats + 1)))
        cosines = [cosine(g, true) for g, _ in results]
        report(rows, estimator="wsr", population=population, channels=16, params=num_params(mu), sigma=args.sigma,
               cosine_to_backprop=float(np.mean(cosines)), cosine_std=float(np.std(cosines)), repeats=repeats,
               seconds=seconds, candidates_per_s=population / seconds, compile_seconds=compile_s, **common)

    # Low-rank (EGGROLL-style) perturbations, beyond the paper: the same populations, rank 1 and 4.
    for rank in (1,) if args.quick else (1, 4):
        for population in populations[:2] if args.quick else populations:
            config = WsrConfig(pop_per_shard=population, eval_mode=args.eval_mode, rank=rank)
            results, compile_s, seconds = run(config, args.sigma, loss, mu, episode, list(range(1, repeats + 1)))
            cosines = [cosine(g, true) for g, _ in results]
            report(rows, estimator=f"wsr_rank{rank}", population=population, channels=16, params=num_params(mu),
                   sigma=args.sigma, rank=rank, cosine_to_backprop=float(np.mean(cosines)),
                   cosine_std=float(np.std(cosines)), repeats=repeats, seconds=seconds,
                   candidates_per_s=population / seconds, compile_seconds=compile_s, **common)

    print(f"\n{'estimator':<20} {'population':>10} {'params':>7} {'cosine':>8} {'seconds':>8}", file=sys.stderr)
    for row in rows:
        print(f"{row['estimator']:<20} {row['population']:>10} {row['params']:>7} {row['cosine_to_backprop']:>8.3f} "
              f"{row['seconds']:>8.2f}", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
