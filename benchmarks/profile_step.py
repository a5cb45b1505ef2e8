"""Where a wsr step spends its time: fitnesses, noise, the weighted sum, and the embedding's stages.

At 16 channels, population 256 (and 64 channels, population 64, for contrast), on population_throughput's
fixed real 10-way 5-shot (+5 query) 32x32 episode, prints one JSON line per part, each part its own jitted
function, timed as the median of --repeats calls after a compile-and-warm-up call:
  part=wsr_full        the wsr estimate as training runs it (population_throughput's wsr_estimate)
  part=fitness_only    jax.lax.map of esmeta's fast loss over candidates whose parameters are precomputed
                       (mu + eps_i stacked beforehand: no noise is drawn, nothing is summed)
  part=noise_regen     the candidates' noise regenerated (wsr.candidate_noise) and added to mu, one at a
                       time under jax.lax.map, reduced to one scalar: what wsr_full pays on top of
                       fitness_only before each fitness
  part=noise_sum       shape_fitness of given fitnesses, then population.weighted_sum of the regenerated
                       noise in wsr's own chunks (noise_chunk), divided by the population: wsr's second pass
  part=residual        wsr_full - fitness_only - noise_regen - noise_sum (overlap, scan and metrics overhead)
Shares of these are of wsr_full. Then, per stage of ONE candidate's fitness on the episode's 100 images (50 support + 50 query):
  stage=block1         the folded first conv + batch norm (protonet.embed_with_moments on the Conv_0 and
                       EpisodeBatchNorm_0 parameters only): patches, their moments, the (pixels x 9) @ (9 x C)
                       matmul, max-pool, ReLU
  stage=block2/3/4     3x3 conv + bias, batch-norm statistics, normalization, max-pool, ReLU (embed's loop body)
  stage=head           prototypes, euclidean distances, log-softmax cross-entropy
  stage=block1.patches/.moments/.apply   block1 split: the 3x3 patches and their mean and covariance (both
                       candidate-independent, so a lax.map over candidates can hoist them out of its loop), and
                       the per-candidate rest (share_of_block1; not in the stage sum)
  stage=loss_fused     the whole fast loss as one jitted function (to compare with the sum of the stages)
Each stage's input is precomputed; share is of the sum of block1..head. flops is analytic (a conv:
2*H*W*9*Cin*Cout*images; block1's patch moments and the head's distances included), act_bytes the float32
activations the stage writes (a conv's H*W*Cout*4*images output before pooling, plus block1's 9-float patches
and every stage's pooled output); flops_per_byte is their ratio. matmul_peak_gflops is a dense float32
2048x2048 matmul measured in the same process (population_throughput), on every row next to the times.
Then kernel=matmul rows: block 2's convolution at 16 channels as one plain matmul, (100*16*16 pixels x 9*16
patch values) @ (9*16 x N), for N = 16 output columns (what each candidate has) and 64 (four candidates' weights
side by side): how much of the peak the CPU's matmul kernel gives a 16-column product, whatever the layout.
Last, one line (part=hlo) per channel count: the compiled fitness_only's HLO op counts (fusions, convolutions,
dots) from jax.jit(...).lower(...).compile().as_text().
    python benchmarks/profile_step.py [--quick]   # quick: 16 channels, population 64, fewer repeats (< 30 s)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from functools import partial

import jax
import jax.numpy as jnp
from _data import add_data_args, run_main
from population_throughput import (
    QUERY,
    SHOT,
    SIGMA,
    SIZE,
    WAY,
    fast_loss,
    fixed_episode,
    forward_flops,
    matmul_peak_gflops,
    rate_row,
    wsr_estimate,
)

from esmeta.estimators import population as pop
from esmeta.estimators.base import fitness_from_loss
from esmeta.estimators.wsr import candidate_noise, shape_fitness
from esmeta.protonet import (
    conv_output,
    embed_with_moments,
    first_block,
    first_conv_moments,
    init_params,
    norm_inverse,
    normalize_block,
    num_params,
    patches_3x3,
    prototypes,
    similarity,
)

N_IMAGES = WAY * (SHOT + QUERY)
FULL = ((16, 256), (64, 64))  # (channels, population)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 channels, population 64, fewer repeats (< 30 s)")
    add_data_args(parser)
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per population-wide part (default 5; quick: 2)")
    parser.add_argument("--stage-repeats", type=int, default=None,
                        help="timed calls per one-candidate stage (default 30; quick: 10)")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (2 if args.quick else 5)
    args.stage_repeats = args.stage_repeats or (10 if args.quick else 30)
    return args


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of fn() after one compile-and-warm-up call."""
    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def highest(fn):
    """fn traced at wsr's fitness precision (full float32; on CPU the same as the default)."""
    precision = pop.fitness_precision("highest")

    def wrapped(*a):
        with precision():
            return fn(*a)

    return wrapped


def block(layer, x, *, index: int):
    """One of blocks 2-4 as protonet.embed_with_moments computes it (batch statistics of all rows)."""
    y = conv_output(layer, index, x)
    mean = y.mean(axis=(0, 1, 2))
    var = jnp.square(y - mean).mean(axis=(0, 1, 2))
    return normalize_block(layer, index, y, mean, norm_inverse(layer, index, var))


def head(z, n_support: int):
    """Prototypes, distances and the loss of embeddings z (support rows first), as protonet's loss."""
    logits = similarity(z[n_support:], prototypes(z[:n_support], WAY), "euclidean")
    labels = jnp.repeat(jnp.arange(WAY), QUERY)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=1))


def stage_costs(channels: int, n: int = N_IMAGES) -> dict[str, tuple[float, float]]:
    """(analytic FLOPs, float32 activation bytes written) of each stage of one candidate's fitness."""
    c, s = channels, SIZE
    costs = {"block1": (2.0 * n * s * s * 9 * c + 2.0 * n * s * s * 9 * 9,  # the conv matmul + the patch Gram
                        4.0 * n * s * s * (9 + c + c // 4))}  # patches, conv output, pooled output
    s //= 2
    for b in (2, 3, 4):
        costs[f"block{b}"] = (2.0 * n * s * s * 9 * c * c, 4.0 * n * s * s * (c + c // 4))
        s //= 2
    d = c * s * s
    costs["head"] = (2.0 * WAY * QUERY * WAY * d + 2.0 * N_IMAGES * d, 4.0 * (WAY * d + 2 * WAY * QUERY * WAY))
    return costs


def hlo_counts(compiled_text: str) -> dict[str, int]:
    """Op counts of a compiled HLO module's text: fusion computations and calls, convolutions, dots."""
    return {"fused_computations": len(re.findall(r"^\s*%?fused_computation\S*\s", compiled_text, re.M))
            or compiled_text.count("fused_computation"),
            "fusion_calls": len(re.findall(r"= \S+ fusion\(", compiled_text)),
            "convolutions": len(re.findall(r"\bconvolution\(", compiled_text)),
            "dots": len(re.findall(r"\bdot\(", compiled_text)),
            "custom_calls": len(re.findall(r"\bcustom-call\(", compiled_text)),
            "while_loops": len(re.findall(r"\bwhile\(", compiled_text)),
            "hlo_chars": len(compiled_text)}


def emit(row: dict) -> dict:
    print(json.dumps(row), flush=True)
    return row


def population_parts(channels, population, episode, mu, args, peak, common) -> list[dict]:
    """The wsr_full, fitness_only, noise_regen, noise_sum and residual rows of one (channels, population)."""
    loss = fast_loss()
    key = jax.random.key(2)
    n_params = num_params(mu)
    index = jnp.arange(population)
    noise = lambda i: candidate_noise(key, mu, i, SIGMA, False)  # noqa: E731  wsr_estimate's: independent

    full = wsr_estimate(loss, population)
    stacked = jax.jit(jax.vmap(lambda i: jax.tree.map(jnp.add, mu, noise(i))))(index)  # (population, ...) leaves
    fitness = jax.jit(highest(lambda ps, ep: jax.lax.map(lambda p: fitness_from_loss(loss(p, ep)), ps)))
    regen = jax.jit(lambda m: jnp.sum(jax.lax.map(
        lambda i: sum(jnp.sum(x) for x in jax.tree.leaves(jax.tree.map(jnp.add, m, noise(i)))), index)))
    nchunk = pop.noise_chunk(0, population, n_params)

    @jax.jit
    def noise_sum(f):
        weight = shape_fitness(f, "zscore")
        return jax.tree.map(lambda x: x / population, pop.weighted_sum(weight, index, noise, nchunk))

    given = fitness(stacked, episode)
    seconds = {"wsr_full": median_seconds(lambda: full(key, mu, episode), args.repeats),
               "fitness_only": median_seconds(lambda: fitness(stacked, episode), args.repeats),
               "noise_regen": median_seconds(lambda: regen(mu), args.repeats),
               "noise_sum": median_seconds(lambda: noise_sum(given), args.repeats)}
    seconds["residual"] = seconds["wsr_full"] - seconds["fitness_only"] - seconds["noise_regen"] - seconds["noise_sum"]
    rows = []
    for part, secs in seconds.items():
        row = {"part": part, "channels": channels, "population": population, "params": n_params,
               "seconds": round(secs, 5), "ms_per_candidate": round(1e3 * secs / population, 4),
               "share_of_wsr_full": round(secs / seconds["wsr_full"], 4), "noise_chunk": nchunk}
        if part in ("wsr_full", "fitness_only"):  # population_throughput's rate, GFLOP/s and share of peak
            rate = rate_row(channels, population, part, population, secs, n_params, peak, common)
            row.update({k: rate[k] for k in ("candidates_per_s", "gflops", "share_of_matmul_peak")})
        rows.append(emit({**row, **common}))

    text = fitness.lower(stacked, episode).compile().as_text()
    rows.append(emit({"part": "hlo", "of": "fitness_only", "channels": channels, "population": population,
                      **hlo_counts(text), **common}))
    return rows


def block1_parts(first, images, repeats: int) -> dict[str, float]:
    """block1 split as embed_with_moments computes it: the 3x3 patches (candidate-independent), their mean and
    covariance (candidate-independent: a lax.map over candidates may hoist both out of its loop), and the
    per-candidate rest (fold batch norm into the weights, (pixels x 9) @ (9 x C), max-pool, ReLU)."""
    def patches_of(im):
        return patches_3x3(im)

    def moments(p):
        flat = p.reshape(-1, p.shape[-1])
        m = flat.mean(axis=0)
        return m, flat.T @ flat / flat.shape[0] - jnp.outer(m, m)

    def apply(p, m, cov):
        mean, var = first_conv_moments(first, m, cov)
        return first_block(first, p, mean, norm_inverse(first, 0, var))

    patches_fn, moments_fn, apply_fn = (jax.jit(highest(f)) for f in (patches_of, moments, apply))
    p = patches_fn(images)
    m, cov = moments_fn(p)
    return {"block1.patches": median_seconds(lambda: patches_fn(images), repeats),
            "block1.moments": median_seconds(lambda: moments_fn(p), repeats),
            "block1.apply": median_seconds(lambda: apply_fn(p, m, cov), repeats)}


def stage_parts(channels, episode, mu, args, peak, common) -> list[dict]:
    """One row per stage of one candidate's fitness (block1..4, head) and the fused loss, with shares and costs."""
    images = jnp.concatenate([episode.support, episode.query], axis=0)
    n_support = episode.support.shape[0]
    first = {k: mu[k] for k in ("Conv_0", "EpisodeBatchNorm_0")}  # num_blocks(first) == 1: block 1 only
    size = images.shape[1] // 2

    def block1(p, im):
        return embed_with_moments(p, im)[0].reshape(im.shape[0], size, size, -1)

    fns = {"block1": (jax.jit(highest(block1)), (first,))}
    x = fns["block1"][0](first, images)
    inputs = {"block1": images}
    for b in (2, 3, 4):
        layer = {k: mu[k] for k in (f"Conv_{b - 1}", f"EpisodeBatchNorm_{b - 1}")}
        fns[f"block{b}"] = (jax.jit(highest(partial(block, index=b - 1))), (layer,))
        inputs[f"block{b}"] = x
        x = fns[f"block{b}"][0](layer, x)
    z = x.reshape(x.shape[0], -1)
    fns["head"] = (jax.jit(highest(lambda z: head(z, n_support))), ())
    inputs["head"] = z

    seconds = {name: median_seconds(lambda f=f, a=a, name=name: f(*a, inputs[name]), args.stage_repeats)
               for name, (f, a) in fns.items()}
    sub = block1_parts(first, images, args.stage_repeats)
    loss = jax.jit(highest(fast_loss()))
    fused = median_seconds(lambda: loss(mu, episode), args.stage_repeats)
    total = sum(seconds.values())
    costs = stage_costs(channels)
    rows = []
    for name, secs in seconds.items():
        flops, nbytes = costs[name]
        rows.append(emit({"stage": name, "channels": channels, "images": int(images.shape[0]),
                          "ms": round(1e3 * secs, 4), "share_of_stage_sum": round(secs / total, 4),
                          "flops": int(flops), "act_bytes": int(nbytes), "flops_per_byte": round(flops / nbytes, 2),
                          "gflops": round(flops / secs / 1e9, 2), "share_of_matmul_peak": round(flops / secs / 1e9 / peak, 4),
                          "gb_per_s": round(nbytes / secs / 1e9, 2), **common}))
    for name, secs in sub.items():
        rows.append(emit({"stage": name, "channels": channels, "images": int(images.shape[0]),
                          "ms": round(1e3 * secs, 4), "share_of_block1": round(secs / seconds["block1"], 4), **common}))
    flops = forward_flops(channels)
    rows.append(emit({"stage": "loss_fused", "channels": channels, "images": int(images.shape[0]),
                      "ms": round(1e3 * fused, 4), "stage_sum_ms": round(1e3 * total, 4),
                      "fused_over_stage_sum": round(fused / total, 4), "flops": int(flops),
                      "gflops": round(flops / fused / 1e9, 2), "share_of_matmul_peak": round(flops / fused / 1e9 / peak, 4),
                      **common}))
    return rows


def kernel_parts(args, peak, common, columns: tuple[int, ...] = (16, 64)) -> list[dict]:
    """Block 2's matmul shape at 16 channels, (25600 x 144) @ (144 x N), timed for each N in `columns`."""
    m, k = N_IMAGES * 16 * 16, 9 * 16
    x = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
    rows = []
    for n in columns:
        w = jax.random.normal(jax.random.key(n), (k, n), jnp.float32)
        f = jax.jit(highest(lambda x, w: x @ w))
        secs = median_seconds(lambda f=f, w=w: f(x, w), args.stage_repeats)
        flops = 2 * m * k * n
        rows.append(emit({"kernel": "matmul", "m": m, "k": k, "n": n, "ms": round(1e3 * secs, 4),
                          "gflops": round(flops / secs / 1e9, 2),
                          "share_of_matmul_peak": round(flops / secs / 1e9 / peak, 4), **common}))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    episode = fixed_episode(args)
    peak = matmul_peak_gflops()
    common = {"backend": jax.default_backend(), "jax": jax.__version__, "cores": len(os.sched_getaffinity(0)),
              "load_avg_1min": round(os.getloadavg()[0], 2), "way": WAY, "shot": SHOT, "query": QUERY,
              "matmul_peak_gflops": round(peak, 1)}
    points = ((16, 64),) if args.quick else FULL
    rows = []
    for channels, population in points:
        mu = init_params(jax.random.key(1), channels, SIZE)
        rows += population_parts(channels, population, episode, mu, args, peak, common)
        rows += stage_parts(channels, episode, mu, args, peak, common)
    rows += kernel_parts(args, peak, common)

    print(f"\nmatmul peak {peak:.0f} GFLOP/s on {common['cores']} {common['backend']} cores", file=sys.stderr)
    for r in rows:
        if "part" in r and r["part"] != "hlo":
            print(f"{r['channels']:>3}ch pop {r['population']:>4} {r['part']:>13}: {r['ms_per_candidate']:8.3f} "
                  f"ms/candidate  {r['share_of_wsr_full']:6.1%} of wsr_full", file=sys.stderr)
        elif "share_of_stage_sum" in r:
            print(f"{r['channels']:>3}ch {r['stage']:>10}: {r['ms']:8.3f} ms  {r['share_of_stage_sum']:6.1%} of stages  "
                  f"{r['flops_per_byte']:6.1f} FLOP/B  {r['share_of_matmul_peak']:6.1%} of peak", file=sys.stderr)
        elif "kernel" in r:
            print(f"matmul ({r['m']} x {r['k']}) @ ({r['k']} x {r['n']}): {r['ms']:8.3f} ms  "
                  f"{r['share_of_matmul_peak']:6.1%} of peak", file=sys.stderr)


if __name__ == "__main__":
    run_main(main)
