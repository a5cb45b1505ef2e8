"""esmeta's wsr step against evosax's OpenAI-ES (Open_ES): same episode, loss, population and sigma.

For channels 16 and 64 at populations 64 and 256 (and 1024 at 16 channels), on population_throughput's
fixed real 10-way 5-shot (+5 query) 32x32 episode, prints one JSON line per (channels, population, impl):
  impl=esmeta        the jitted wsr estimate, as training runs it (population_throughput's esmeta row):
                     candidates evaluated one at a time by esmeta's fast loss, their noise regenerated
                     from the key and never stored
  impl=evosax_vmap   one jitted Open_ES generation: ask (the population x params matrix), jax.vmap of
                     esmeta's fast loss over the candidates (each flat vector unraveled into the ProtoNet's
                     parameters with jax.flatten_util.ravel_pytree), tell (shaping, gradient, SGD step)
  impl=evosax_map    the same generation with jax.lax.map over the candidates (one at a time, as esmeta)
  impl=evosax_naive  evosax_vmap with population_throughput's naive flax loss, measured on
                     min(population, --naive-cap) candidates (its rate hardly depends on the population)
Every Open_ES is configured as the wsr estimate: population_size = population, std = sigma = 0.01
(a constant std_schedule), independent candidates (use_antithetic_sampling=False; evosax's default is
antithetic), z-scored fitnesses (standardize_fitness_shaping_fn; evosax's default is centered ranks) and
plain SGD. evosax minimizes its fitness, so it is given the loss; esmeta maximizes F = -loss. Every loss
is evaluated at full float32 precision, as wsr's (fitness_precision=highest; on CPU the same as the default).
candidates_per_s, gflops and share_of_matmul_peak are population_throughput's (rate_row, the in-process
matmul peak); peak_bytes is XLA's compiled memory analysis of the step (_memory.py: argument + output +
temp - alias). A point whose peak_bytes is over --max-gb is compiled but not run (skipped, no rate).

Then one line per channel count, check=same_noise_cosine, at the smallest population: esmeta's wsr estimate
g on key 2 (eq. 9, g = mean_i z_i eps_i), and evosax's tell fed the same candidates, mu + eps_i with eps_i
esmeta's own noise regenerated from key 2 (wsr.candidate_noise), and their losses; with SGD at learning
rate 1 its update of the mean is -grad = (1/(n sigma^2)) sum_i z_i eps_i (z-scores of -loss). So the
cosine of g and that update should be 1, and norm_ratio = |update| sigma^2 / |g| should be 1, up to float32
rounding (the two z-scores' epsilons differ: std + 1e-8 against sqrt(var + 1e-8)).

    pip install -e ".[bench]"                       # evosax, an optional extra
    python benchmarks/vs_evosax.py                  # the full run (about 10 minutes on 2 cores)
    python benchmarks/vs_evosax.py --quick          # 16 channels, population 64, naive cap 16 (about 25 s)
Without evosax it says so in one line on stderr and exits 0, printing no JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from importlib.metadata import version

import jax
import jax.numpy as jnp
import optax
from _data import add_data_args, run_main
from _memory import compiled_memory
from jax.flatten_util import ravel_pytree
from population_throughput import (
    QUERY,
    SHOT,
    SIGMA,
    SIZE,
    WAY,
    best_seconds,
    fast_loss,
    fixed_episode,
    matmul_peak_gflops,
    naive_loss_fn,
    rate_row,
    wsr_estimate,
)

from esmeta.estimators import WsrConfig
from esmeta.estimators import population as pop
from esmeta.estimators.wsr import candidate_noise
from esmeta.protonet import init_params
from esmeta.provenance import cpu_name

try:
    from evosax.algorithms import Open_ES
    from evosax.core.fitness_shaping import standardize_fitness_shaping_fn
except ImportError as e:  # an optional extra: main() says how to install it
    Open_ES, MISSING = None, e

IMPLS = ("esmeta", "evosax_vmap", "evosax_map", "evosax_naive")
FULL = {16: (64, 256, 1024), 64: (64, 256)}  # channels: populations


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="16 channels, population 64, one timed call, --naive-cap 16 (seconds)")
    add_data_args(parser)
    parser.add_argument("--naive-cap", type=int, default=None,
                        help="most candidates evosax_naive evaluates at once (default 64; quick: 16)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per point (the best is kept)")
    parser.add_argument("--max-gb", type=float, default=8.0, help="skip a point whose compiled step needs more")
    args = parser.parse_args(argv)
    args.naive_cap = args.naive_cap or (16 if args.quick else 64)
    if args.quick:
        args.repeats = 1
    return args


def open_es(population: int, flat: jax.Array):
    """Open_ES set up as the wsr estimate: std SIGMA, independent candidates, z-scores, SGD at learning rate 1."""
    return Open_ES(population_size=population, solution=flat, use_antithetic_sampling=False,
                   optimizer=optax.sgd(1.0), std_schedule=optax.constant_schedule(SIGMA),
                   fitness_shaping_fn=standardize_fitness_shaping_fn)


def full_precision():
    """The precision wsr evaluates fitnesses at (its config's default), for the evosax losses too."""
    return pop.fitness_precision(WsrConfig().fitness_precision)()


def evosax_generation(population: int, flat: jax.Array, unravel, loss, mode: str):
    """(jitted generation(state, key, episode) -> state, initial state): ask, every candidate's loss, tell."""
    es = open_es(population, flat)
    params = es.default_params

    def generation(state, key, episode):
        key_ask, key_tell = jax.random.split(key)
        x, state = es.ask(key_ask, state, params)  # (population, D): a flat solution stays flat
        with full_precision():
            fitness = pop.evaluate(lambda v: loss(unravel(v), episode), x, mode, population)  # evosax minimizes
        state, _ = es.tell(key_tell, x, fitness, state, params)
        return state

    return jax.jit(generation), es.init(jax.random.key(3), flat, params)


def measure(channels: int, populations, episode, args: argparse.Namespace, peak: float, common: dict) -> list[dict]:
    """The rows of every impl (printed as JSON lines) of one channel count at each population."""
    rows = []
    mu = init_params(jax.random.key(1), channels, SIZE)
    flat, unravel = ravel_pytree(mu)
    loss, naive_loss = fast_loss(), naive_loss_fn(channels)
    key = jax.random.key(2)
    for population in populations:
        n_naive = min(population, args.naive_cap)
        steps = {"esmeta": (population, wsr_estimate(loss, population), (key, mu, episode))}
        for impl, n, f, mode in (("evosax_vmap", population, loss, "vmap"), ("evosax_map", population, loss, "map"),
                                 ("evosax_naive", n_naive, naive_loss, "vmap")):
            generation, state = evosax_generation(n, flat, unravel, f, mode)
            steps[impl] = (n, generation, (state, key, episode))
        for impl, (n, step, inputs) in steps.items():
            compiled = step.lower(*inputs).compile()
            memory = compiled_memory(compiled)
            labels = {"peak_bytes": memory["peak_bytes"], "temp_bytes": memory["temp_bytes"]}
            if memory["peak_bytes"] > args.max_gb * 1e9:
                row = {"channels": channels, "population": population, "impl": impl, "measured_candidates": 0,
                       "params": int(flat.size), "candidates_per_s": None, **labels,
                       "skipped": f"peak_bytes over --max-gb {args.max_gb}", **common}
            else:
                seconds = best_seconds(lambda compiled=compiled, inputs=inputs: compiled(*inputs), args.repeats)
                row = {**rate_row(channels, population, impl, n, seconds, int(flat.size), peak, common), **labels}
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def same_noise_check(channels: int, population: int, episode, common: dict) -> dict:
    """Cosine and norm ratio of esmeta's wsr estimate and evosax's tell update on esmeta's own candidates."""
    mu = init_params(jax.random.key(1), channels, SIZE)
    flat, unravel = ravel_pytree(mu)
    loss, key = fast_loss(), jax.random.key(2)
    g, _ = wsr_estimate(loss, population)(key, mu, episode)
    g = ravel_pytree(g)[0]
    es = open_es(population, flat)
    params = es.default_params

    @jax.jit
    def evosax_update(episode):
        # wsr's candidates: eps_i from fold_in(key, i), independent (wsr_estimate's antithetic=False)
        eps = jax.vmap(lambda i: ravel_pytree(candidate_noise(key, mu, i, SIGMA, False))[0])(jnp.arange(population))
        x = flat + eps
        with full_precision():
            fitness = jax.lax.map(lambda v: loss(unravel(v), episode), x)  # evosax minimizes the loss
        state = es.init(jax.random.key(3), flat, params)
        new_state, _ = es.tell(jax.random.key(4), x, fitness, state, params)
        return new_state.mean - state.mean

    update = evosax_update(episode)
    cosine = jnp.dot(g, update) / (jnp.linalg.norm(g) * jnp.linalg.norm(update))
    row = {"check": "same_noise_cosine", "channels": channels, "population": population, "cosine": float(cosine),
           "norm_ratio": float(jnp.linalg.norm(update) * SIGMA**2 / jnp.linalg.norm(g)), **common}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if Open_ES is None:
        print(f'vs_evosax: evosax is not installed ({MISSING}); pip install -e ".[bench]" to run this benchmark',
              file=sys.stderr)
        return
    episode = fixed_episode(args)
    peak = matmul_peak_gflops()
    points = {16: (64,)} if args.quick else FULL
    common = {"backend": jax.default_backend(), "device": str(jax.devices()[0].device_kind), "processor": cpu_name(),
              "cores": len(os.sched_getaffinity(0)), "jax": jax.__version__, "evosax": version("evosax"),
              "way": WAY, "shot": SHOT, "query": QUERY, "sigma": SIGMA, "matmul_peak_gflops": round(peak, 1)}
    rows = [row for channels, populations in points.items()
            for row in measure(channels, populations, episode, args, peak, common)]
    checks = [same_noise_check(channels, min(populations), episode, common) for channels, populations in points.items()]

    print(f"\nmatmul peak {peak:.0f} GFLOP/s on {common['cores']} {common['backend']} cores ({common['processor']}); "
          "candidates/s (- skipped: over --max-gb)", file=sys.stderr)
    print(f"{'channels':>8} {'population':>10} " + " ".join(f"{impl:>12}" for impl in IMPLS)
          + f" {'esmeta/best evosax':>19}", file=sys.stderr)
    by = {(r["channels"], r["population"], r["impl"]): r["candidates_per_s"] for r in rows}
    for channels, populations in points.items():
        for population in populations:
            rates = [by[channels, population, impl] for impl in IMPLS]
            evosax = max((r for r in rates[1:] if r), default=math.nan)
            print(f"{channels:>8} {population:>10} " + " ".join(f"{r:>12.1f}" if r else f"{'-':>12}" for r in rates)
                  + f" {rates[0] / evosax:>18.1f}x", file=sys.stderr)
    for c in checks:
        print(f"same noise, {c['channels']} channels, population {c['population']}: cosine {c['cosine']:.6f}, "
              f"norm ratio {c['norm_ratio']:.6f} (1 and 1: one estimator)", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
