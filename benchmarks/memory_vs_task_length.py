"""Peak memory of one meta-gradient step as the task grows: backprop, forward mode and wsr (Sheng & He 2021, Sec. II.E).

For a ProtoNet the task is its support set: the prototypes are the "inner loop", the query loss the
meta-objective. The task here is a pool of WAY=200 real Omniglot train classes with all 20 drawings of
each (uint8, the dataset's own format: 4.1 MB, one constant argument of every step); the support takes
the first `shot` drawings of every class and the query the last one, so the support grows from 200 to
3800 images (shot 1 to 19) while the query (200 images), the prototypes (the model state D_psi =
200 x 256) and the arguments stay fixed. Same 64-channel net (D_phi = 111,936) and episode for all:

  backprop           jax.grad of protonet.loss_and_accuracy, the episode as one batch (what users write)
  backprop_streamed  jax.grad of the streamed loss (esmeta.streaming): the residuals of every chunk are kept
                     for the reverse pass, so streaming alone does not make backprop's memory constant
  forward_mode       the forward_mode estimator (exact gradient by jvp, --tangents at a time) on the streamed loss
  wsr                the wsr estimator (eq. 9, population --population, one shard) on the streamed loss

The streamed loss embeds --chunk images at a time (batch-norm statistics first, then prototypes, then
the query loss; see esmeta/streaming.py), so forward mode and wsr hold one chunk's activations.
peak_bytes is XLA's compiled memory analysis of the jitted step estimate(key, params, pool):
argument + output + temp - alias bytes (see benchmarks/_memory.py); it needs no execution, so the large
tasks are compiled only. The smallest task is also executed: backprop and wsr run a full step (seconds,
and the process's resident-set growth during the step, `rss_step_bytes`, where the CPU reports no
device counters); forward mode runs one block of --tangents coordinates, from which the seconds of the
whole step (D_phi / tangents blocks) are extrapolated (`seconds_estimated`).

    python benchmarks/memory_vs_task_length.py            # 64 channels, support 200..3800 (about 5 min on 2 cores)
    python benchmarks/memory_vs_task_length.py --quick    # 8 channels, 20 classes, support 20..100 (under a minute)

One JSON line per (estimator, support_size); a table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
from _data import add_data_args, run_main, train_images
from _memory import RssSampler, compiled_memory, device_memory
from jax.flatten_util import ravel_pytree

from esmeta.data.episodes import Episode, sample_episode_indices, to_float
from esmeta.estimators import BackpropConfig, ForwardModeConfig, WsrConfig, fitness_from_loss, make_estimator
from esmeta.estimators.forward_mode import directional_derivatives
from esmeta.protonet import init_params, loss_and_accuracy, num_params
from esmeta.streaming import streamed_loss_and_accuracy

DRAWINGS, SIZE, QUERY = 20, 32, 1
LOSS = {"distance": "euclidean", "scale": 1.0, "norm_stats": "episode"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="8 channels, 20 classes, shots 2, 5, 10 (under a minute)")
    add_data_args(parser)
    parser.add_argument("--channels", type=int, default=None, help="default 64 (quick: 8)")
    parser.add_argument("--way", type=int, default=None, help="classes of the task (default 200, quick 20)")
    parser.add_argument("--shots", type=int, nargs="+", default=None, help="default 1 2 5 10 19 (quick 2 5 10)")
    parser.add_argument("--chunk", type=int, default=None, help="images embedded at a time (default 32, quick 16)")
    parser.add_argument("--population", type=int, default=None, help="wsr candidates (default 64, quick 8)")
    parser.add_argument("--tangents", type=int, default=8, help="forward_mode: basis tangents pushed at a time")
    parser.add_argument("--estimators", nargs="+", default=None,
                        help="default: backprop backprop_streamed forward_mode wsr (quick: without backprop_streamed)")
    parser.add_argument("--no-execute", action="store_true", help="compile only, also at the smallest task")
    parser.add_argument("--seed", type=int, default=0, help="the pool's classes and mu")
    return parser.parse_args(argv)


def task_pool(args: argparse.Namespace, way: int) -> jax.Array:
    """uint8 (way, 20, S, S): `way` distinct train classes of the paper split, drawings in a random order."""
    train = train_images(args, SIZE)
    class_idx, image_idx = sample_episode_indices(jax.random.key(args.seed), train.shape[0], way, DRAWINGS, 0)
    return jnp.asarray(train[jax.device_get(class_idx)[:, None], jax.device_get(image_idx)])


def pool_episode(pool: jax.Array, shot: int) -> Episode:
    """The episode as one batch: support = first `shot` drawings of each class, query = the last QUERY."""
    way = pool.shape[0]
    return Episode(to_float(pool[:, :shot].reshape(way * shot, SIZE, SIZE)),
                   to_float(pool[:, DRAWINGS - QUERY :].reshape(way * QUERY, SIZE, SIZE)))


def pool_images_at(pool: jax.Array, shot: int):
    """Streamed rows of the same episode: support row i = (class i // shot, drawing i % shot), then the query."""
    way = pool.shape[0]
    flat_pool, n_support = pool.reshape(way * DRAWINGS, SIZE, SIZE), way * shot

    def images_at(rows: jax.Array) -> jax.Array:
        q = rows - n_support
        drawing = jnp.where(rows < n_support, (rows // shot) * DRAWINGS + rows % shot,
                            (q // QUERY) * DRAWINGS + DRAWINGS - QUERY + q % QUERY)
        return to_float(flat_pool[drawing])

    return images_at


def losses(way: int, shot: int, channels: int, chunk: int):
    """(one-batch loss, streamed loss), both `loss(params, pool)`, the same function of the parameters."""
    def full(params, pool):
        return loss_and_accuracy(params, pool_episode(pool, shot), way=way, **LOSS)[0]

    def streamed(params, pool):
        return streamed_loss_and_accuracy(params, pool_images_at(pool, shot), n_support=way * shot,
                                          n_query=way * QUERY, way=way, chunk=chunk, **LOSS)[0]

    return full, streamed


def step_fn(name: str, args: argparse.Namespace, full, streamed):
    if name == "backprop":
        return make_estimator(BackpropConfig(), 0.0, full, None, 1)
    if name == "backprop_streamed":
        return make_estimator(BackpropConfig(), 0.0, streamed, None, 1)
    if name == "forward_mode":
        return make_estimator(ForwardModeConfig(chunk_size=args.tangents), 0.0, streamed, None, 1)
    if name == "wsr":
        config = WsrConfig(optimizer="sgd", pop_per_shard=args.population)
        return make_estimator(config, 0.01, streamed, None, 1)
    raise ValueError(name)


def timed(fn, *xs) -> tuple[float, int, object]:
    """Seconds and resident-set growth of one call (compiled already), and its output."""
    with RssSampler() as rss:
        start = time.perf_counter()
        out = jax.block_until_ready(fn(*xs))
        seconds = time.perf_counter() - start
    return seconds, rss.growth, out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    channels = args.channels or (8 if args.quick else 64)
    way = args.way or (20 if args.quick else 200)
    shots = args.shots or ([2, 5, 10] if args.quick else [1, 2, 5, 10, 19])
    args.chunk = args.chunk or (16 if args.quick else 32)
    args.population = args.population or (8 if args.quick else 64)
    names = args.estimators or (["backprop", "forward_mode", "wsr"] if args.quick
                                else ["backprop", "backprop_streamed", "forward_mode", "wsr"])
    pool = task_pool(args, way)
    mu = init_params(jax.random.key(args.seed + 1), channels, SIZE)
    d_phi = num_params(mu)
    d_psi = way * channels * (SIZE // 16) ** 2  # the model state: `way` prototypes of (channels x 2 x 2) features
    key = jax.random.key(2)
    common = {"backend": jax.default_backend(), "jax": jax.__version__, "cores": len(os.sched_getaffinity(0)),
              "channels": channels, "params": d_phi, "d_psi": d_psi, "way": way, "query": way * QUERY,
              "chunk": args.chunk, "pool_bytes": int(pool.nbytes)}
    rows = []
    for shot in shots:
        full, streamed = losses(way, shot, channels, args.chunk)
        executed_loss = None
        for name in names:
            start = time.perf_counter()
            step = jax.jit(step_fn(name, args, full, streamed))
            compiled = step.lower(key, mu, pool).compile()
            row = {"estimator": name, "support_size": way * shot, "shot": shot, **compiled_memory(compiled),
                   "compile_seconds": round(time.perf_counter() - start, 1), **device_memory(), **common}
            if name == "wsr":  # Sec. II.E's dominant term: the population matrix P x D_phi
                row.update(population=args.population, section_2e_bytes=4 * args.population * d_phi)
            if name == "forward_mode":  # Sec. II.E's dominant term: the Jacobian D_psi x D_phi (held T columns at once)
                row.update(tangents=args.tangents, section_2e_bytes=4 * d_psi * d_phi)
            if shot == shots[0] and not args.no_execute:
                row.update(execute(name, args, compiled, streamed, key, mu, pool, d_phi))
                if "loss" in row:
                    executed_loss = executed_loss or row["loss"]
                    row["loss_matches_backprop"] = abs(row["loss"] - executed_loss) < 1e-4 * max(1.0, executed_loss)
            rows.append(row)
            print(json.dumps(row), flush=True)
    summarize(rows, names, shots, way)


def execute(name, args, compiled, streamed, key, mu, pool, d_phi) -> dict:
    """Run the smallest task: the whole step, or for forward mode one block of tangents (then extrapolate)."""
    if name == "forward_mode":
        flat, unravel = ravel_pytree(mu)
        fitness = lambda f: fitness_from_loss(streamed(unravel(f), pool))  # noqa: E731
        block = jax.jit(partial(directional_derivatives, fitness, tangents=args.tangents))
        coords = jnp.arange(args.tangents)
        block_c = block.lower(flat, coords).compile()
        seconds, growth, (value, _) = timed(block_c, flat, coords)
        blocks = -(-d_phi // args.tangents)
        return {"executed": "one tangent block", "seconds_block": round(seconds, 3), "rss_step_bytes": growth,
                "seconds_estimated": round(seconds * blocks, 1), "loss": -float(value)}
    seconds, growth, (_, metrics) = timed(compiled, key, mu, pool)
    out = {"executed": "step", "seconds": round(seconds, 3), "rss_step_bytes": growth}
    if name != "wsr":  # wsr's fitness_mean is over perturbed candidates, not the loss at mu
        out["loss"] = -float(metrics["fitness_mean"])
    return out


def summarize(rows: list[dict], names: list[str], shots: list[int], way: int) -> None:
    by = {(r["estimator"], r["shot"]): r for r in rows}
    mib = lambda b: b / 2**20  # noqa: E731
    print(f"\npeak_bytes (MiB) of one step, XLA memory analysis; {rows[0]['channels']} channels, {way} classes, "
          f"{rows[0]['query']} queries, chunk {rows[0]['chunk']}", file=sys.stderr)
    print(f"{'support':>8} " + " ".join(f"{n:>18}" for n in names), file=sys.stderr)
    for shot in shots:
        print(f"{way * shot:>8} " + " ".join(f"{mib(by[n, shot]['peak_bytes']):>18.1f}" for n in names),
              file=sys.stderr)
    if "wsr" in names:
        wsr = [by["wsr", s]["peak_bytes"] for s in shots]
        print(f"wsr spread across sizes: {max(wsr) / min(wsr) - 1:.1%} (target: within 10%)", file=sys.stderr)
        if "backprop" in names:
            ratio = by["backprop", shots[-1]]["peak_bytes"] / by["wsr", shots[-1]]["peak_bytes"]
            print(f"backprop / wsr at support {way * shots[-1]}: {ratio:.1f}x (target: at least 40x)", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
