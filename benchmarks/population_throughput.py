"""Candidates evaluated per second by a wsr step, against the naive population vmap and the machine's matmul peak.

For channels 16, 32, 64 and populations 64, 256, 1024, on one fixed real 10-way 5-shot (+5 query)
32x32 episode, prints one JSON line per (channels, population, impl):
  impl=esmeta      the jitted wsr estimate (fitnesses + the weighted sum of regenerated noise), as training runs it
  impl=esmeta_own_episodes  the same population over 8 shards, each on its own episode (estimator.shard_episodes=own;
                   target: at least 0.8x impl=esmeta's rate, since each candidate still evaluates one episode)
  impl=naive_vmap  what evosax / EvoJAX users write: the (population x params) noise matrix, then
                   jax.vmap of the flax ProtoNet loss over candidate parameters with the episode shared.
                   It is measured on min(population, --naive-cap) candidates (the full vmap at 64 channels and
                   population 1024 would need ~27 GB of activations); its rate hardly depends on the population.
gflops counts the forward pass's convolution and distance FLOPs per candidate (analytic, see forward_flops)
times candidates/s; matmul_peak_gflops is a dense float32 2048x2048 matmul measured in the same process.
    python benchmarks/population_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import jax
import jax.numpy as jnp
from _data import add_data_args, run_main, train_images
from jax.flatten_util import ravel_pytree

from esmeta.data.episodes import sample_episode
from esmeta.estimators import WsrConfig, make_estimator
from esmeta.protonet import ConvEmbedding, init_params, make_loss_fn, prototypes, similarity
from esmeta.provenance import matmul_peak_gflops

WAY, SHOT, QUERY, SIZE = 10, 5, 5, 32
SIGMA = 0.01
OWN_SHARDS = 8  # shards of the esmeta_own_episodes rows, as the paper's v3-8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 channels, population 64 (seconds)")
    add_data_args(parser)
    parser.add_argument("--naive-cap", type=int, default=64, help="most candidates the naive vmap evaluates at once")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per point (the best is kept)")
    return parser.parse_args(argv)


def sampled_episodes(args: argparse.Namespace, keys) -> list:
    """Real 10-way 5-shot 5-query 32x32 episodes (one per key) of the paper split's train classes, loaded once."""
    train = train_images(args, SIZE)
    sample = jax.jit(sample_episode, static_argnums=(2, 3, 4))
    return [sample(jax.random.key(k), train, WAY, SHOT, QUERY) for k in keys]


def fixed_episode(args: argparse.Namespace):
    """The one real episode (key 0) every benchmark row evaluates."""
    return sampled_episodes(args, [0])[0]


def stacked_episodes(args: argparse.Namespace, shards: int = OWN_SHARDS):
    """Episodes of keys 0 .. shards-1 stacked on a leading axis, one per shard, as `shard_episodes=own` takes them
    (episode 0 is `fixed_episode`'s)."""
    return jax.tree.map(lambda *x: jnp.stack(x), *sampled_episodes(args, range(shards)))


def fast_loss():
    """esmeta's own loss as training builds it (protonet.make_loss_fn: the fast embedding)."""
    return make_loss_fn(way=WAY, distance="euclidean", scale=1.0, norm_stats="episode")


def wsr_estimate(loss, population: int, shards: int = 1, shard_episodes: str = "shared"):
    """The jitted wsr estimate(key, params, batch) of `population` candidates over `shards` shards at SIGMA, as
    training runs it: the config's defaults (z-scored fitnesses, independent candidates, full float32 fitnesses)."""
    config = WsrConfig(optimizer="sgd", pop_per_shard=population // shards, shard_episodes=shard_episodes)
    return jax.jit(make_estimator(config, SIGMA, loss, None, shards))


def forward_flops(channels: int, n_images: int = WAY * (SHOT + QUERY), size: int = SIZE) -> float:
    """FLOPs of one candidate's forward pass: 2 x MACs of the four 3x3 convs, plus the query-prototype distances."""
    flops, c_in, s = 0.0, 1, size
    for _ in range(4):
        flops += 2.0 * n_images * s * s * 9 * c_in * channels
        c_in, s = channels, s // 2
    return flops + 2.0 * WAY * QUERY * WAY * channels * s * s


def best_seconds(fn, repeats: int) -> float:
    jax.block_until_ready(fn())  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def naive_loss_fn(channels: int):
    """The loss as a flax user writes it: ConvEmbedding.apply on support+query, prototypes, log-softmax."""
    model = ConvEmbedding(channels)

    def loss(params, episode):
        z = model.apply({"params": params}, jnp.concatenate([episode.support, episode.query]))
        logits = similarity(z[WAY * SHOT :], prototypes(z[: WAY * SHOT], WAY), "euclidean")
        labels = jnp.repeat(jnp.arange(WAY), QUERY)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))

    return loss


def rate_row(channels: int, population: int, impl: str, n: int, seconds: float, params: int, peak: float,
             common: dict) -> dict:
    """One JSON row: n candidates evaluated in `seconds`, as candidates/s, GFLOP/s (forward_flops) and share of peak."""
    rate = n / seconds
    gflops = rate * forward_flops(channels) / 1e9
    return {"channels": channels, "population": population, "impl": impl, "measured_candidates": n, "params": params,
            "seconds": round(seconds, 4), "candidates_per_s": round(rate, 1), "gflops": round(gflops, 2),
            "share_of_matmul_peak": round(gflops / peak, 4), **common}


def measure(channels: int, populations, episode, args: argparse.Namespace, peak: float, common: dict,
            stacked=None) -> list[dict]:
    """The esmeta, naive_vmap and (given `stacked` episodes) esmeta_own_episodes rows, as JSON lines, of one
    channel count at each population."""
    rows = []
    mu = init_params(jax.random.key(1), channels, SIZE)
    flat, unravel = ravel_pytree(mu)
    loss = fast_loss()
    naive_loss = jax.jit(jax.vmap(naive_loss_fn(channels), in_axes=(0, None)))
    for population in populations:
        estimate = wsr_estimate(loss, population)
        seconds = best_seconds(lambda estimate=estimate: estimate(jax.random.key(2), mu, episode), args.repeats)
        if stacked is not None:
            own = wsr_estimate(loss, population, OWN_SHARDS, "own")
            own_seconds = best_seconds(lambda own=own: own(jax.random.key(2), mu, stacked), args.repeats)
        n_naive = min(population, args.naive_cap)

        def naive(n_naive: int = n_naive):  # materialize the population matrix, then vmap the loss over it
            noise = SIGMA * jax.random.normal(jax.random.key(2), (n_naive, flat.size))
            return naive_loss(jax.vmap(unravel)(flat + noise), episode)

        naive_seconds = best_seconds(naive, args.repeats)
        timed = [("esmeta", population, seconds), ("naive_vmap", n_naive, naive_seconds)]
        if stacked is not None:
            timed.insert(1, ("esmeta_own_episodes", population, own_seconds))
        for impl, n, secs in timed:
            row = rate_row(channels, population, impl, n, secs, int(flat.size), peak, common)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    stacked = stacked_episodes(args)
    episode = jax.tree.map(lambda x: x[0], stacked)  # fixed_episode's, not loaded twice
    peak = matmul_peak_gflops()
    channels_list, populations = ((16,), (64,)) if args.quick else ((16, 32, 64), (64, 256, 1024))
    common = {"backend": jax.default_backend(), "jax": jax.__version__, "cores": len(os.sched_getaffinity(0)),
              "way": WAY, "shot": SHOT, "query": QUERY, "matmul_peak_gflops": round(peak, 1)}
    rows = [row for channels in channels_list for row in measure(channels, populations, episode, args, peak, common, stacked)]

    print(f"\nmatmul peak {peak:.0f} GFLOP/s on {common['cores']} {common['backend']} cores", file=sys.stderr)
    print(f"{'channels':>8} {'population':>10} {'esmeta/s':>9} {'naive/s':>8} {'speedup':>8} {'GFLOP/s':>8} {'of peak':>8} "
          f"{'own/shared':>10}",
          file=sys.stderr)
    by = {(r["channels"], r["population"], r["impl"]): r for r in rows}
    for channels in channels_list:
        for population in populations:
            e, n = by[channels, population, "esmeta"], by[channels, population, "naive_vmap"]
            own = by[channels, population, "esmeta_own_episodes"]
            print(f"{channels:>8} {population:>10} {e['candidates_per_s']:>9.0f} {n['candidates_per_s']:>8.1f} "
                  f"{e['candidates_per_s'] / n['candidates_per_s']:>7.1f}x {e['gflops']:>8.1f} "
                  f"{e['share_of_matmul_peak']:>8.1%} {own['candidates_per_s'] / e['candidates_per_s']:>9.2f}x",
                  file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
