"""Weighted Standard Rewards (WSR), Sheng & He 2021 eq. 9, distributed as in their Sec. II.F.

    g = mean_s g_s,   g_s = (1/n) sum_i z_i eps_i,   eps_i = sigma * n_i,  n_i ~ N(0, I),
    z_i = (F(mu + eps_i) - mean F) / (std F + 1e-8)   (or centered ranks in [-0.5, 0.5]).

As the paper writes it, eps includes sigma: g is sigma^2 times OpenAI-ES's (1/(n sigma)) sum_i z_i n_i,
and since z-scores remove F's scale, its signal part is sigma * grad F / |grad F| for small sigma. Its norm
is dominated by noise, not sigma: with D parameters and a population of N (over all shards),
|g| ~ sigma * sqrt(1 + (D + 1) / N): sigma along grad F, plus (1/n) sum_i z_i eps_i over the other
directions, of squared norm sigma^2 (D - 1) / n per shard since sum_i z_i^2 = n, averaged over the shards.
Measured with this code on a fitness linear in D = 7248 parameters (mean of 3 keys): 10.7 / 5.4 / 2.85
sigma at N = 64 / 256 / 1024, on 1 shard or 8 (formula: 10.7 / 5.4 / 2.84). Fitnesses are evaluated
at full float32 precision unless `fitness_precision=default` (TF32/bf16 on GPUs/TPUs is close to the
resolution of the fitness differences at sigma = 0.01).
Shards (the paper's TPU cores) z-score their own population and the step averages their g_s (the
all-reduce); `normalize="global"` z-scores the whole population instead. Candidate i's noise comes
from fold_in(key, i), so any device count gives the same candidates; with `antithetic`, odd i mirrors i-1.
With `shard_episodes="own"` the batch holds one episode per shard (stacked on a leading axis) and shard s's
candidates are evaluated on episode s; by default every shard evaluates the step's one episode.
Non-finite fitnesses are masked (weight 0, excluded from the statistics) and counted.
`rank` > 0 draws low-rank matrix perturbations instead (EGGROLL-style, see `candidate_noise`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from esmeta import rules
from esmeta.errors import ConfigError
from esmeta.estimators import population
from esmeta.estimators.base import (
    Batch,
    EstimateFn,
    EstimatorConfig,
    LossFn,
    Params,
    command_line_name,
    fitness_from_loss,
    tree_norm,
)
from esmeta.estimators.population import LocalShards, run_sharded
from esmeta.rules import Namer, setting

FITNESS_SHAPINGS = ("zscore", "centered_rank")
NORMALIZATIONS = ("per_shard", "global")
SHARD_EPISODES = ("shared", "own")


@dataclass(frozen=True)
class WsrConfig(EstimatorConfig):
    """wsr's settings (eq. 9): eps_i = sigma * N(0, I), sigma the top-level setting, over pop_per_shard candidates
    in each of hardware.shards shards; plain SGD at the paper's alpha 1, constant step."""

    NAME: ClassVar[str] = "wsr"
    POPULATION: ClassVar[bool] = True
    TOP_LEVEL: ClassVar[dict[str, float]] = {"alpha": 1.0, "sigma": 0.01}

    name: str = setting(NAME, "result")
    optimizer: str = setting("sgd", "result")
    pop_per_shard: int = setting(32, "result")
    antithetic: bool = setting(False, "result")
    rank: int = setting(0, "result")  # 0 = full-rank Gaussian perturbations (the paper); r > 0 = rank-r matrices
    fitness_shaping: str = setting("zscore", "result")
    normalize: str = setting("per_shard", "result")
    # The paper z-scores and estimates per core, then averages the cores' estimates, but does not say whether
    # the cores share a step's episode: "shared" (one episode, every shard) or "own" (an episode per shard).
    shard_episodes: str = setting("shared", "result")
    fitness_precision: str = setting("highest", "result")
    eval_mode: str = setting("auto", "placement")
    chunk_size: int = setting(0, "placement")  # candidates evaluated together; 0 = automatic

    def perturbation(self, sigma: float) -> float:
        return sigma

    def own_episodes(self, shards: int) -> int:
        return shards if self.shard_episodes == "own" else 0

    def validate(self, sigma: float, shards: int, name: Namer = command_line_name) -> None:
        """The update rule's rules and wsr's on `shards` shards (0: not known yet, one per device)."""
        super().validate(sigma, shards, name)
        rules.choice(name("fitness_shaping"), self.fitness_shaping, FITNESS_SHAPINGS)
        rules.choice(name("normalize"), self.normalize, NORMALIZATIONS)
        rules.choice(name("shard_episodes"), self.shard_episodes, SHARD_EPISODES)
        rules.positive(name("rank"), self.rank, allow_zero=True)
        rules.int32(name("rank"), self.rank)
        population.check_population(self, shards, name)
        rules.positive(name("sigma"), sigma)
        rules.float32(name("sigma"), sigma)
        if self.antithetic and self.pop_per_shard % 2:
            raise ConfigError(
                f"{name('antithetic')}=true needs an even {name('pop_per_shard')} (mirrored pairs), "
                f"got {self.pop_per_shard}"
            )
        if self.pop_per_shard < 2 and self.normalize == "per_shard":
            raise ConfigError(
                f"{name('pop_per_shard')}={self.pop_per_shard} must be at least 2 to z-score fitnesses within a "
                f"shard; raise it or set {name('normalize')}=global"
            )
        if shards and self.pop_per_shard * shards < 2:
            raise ConfigError(
                f"{name('population')}={self.pop_per_shard * shards} must be at least 2 for wsr "
                "(a lone candidate's shaped fitness is 0: a zero update); raise it"
            )


def candidate_noise(
    key: jax.Array, like: Params, index: jax.Array, sigma: float, antithetic: bool, rank: int = 0
) -> Params:
    """eps_i shaped like `like`, from fold_in(key, i); antithetic: eps_{2p+1} = -eps_{2p}.

    rank 0 (the paper): eps_i = sigma * N(0, I), drawn as one flat vector and unraveled into the leaves
    (one threefry call; the per-leaf draw took ~10x longer to compile on CPU for the ProtoNet's 16 leaves).
    rank r > 0 (EGGROLL-style, beyond the paper): each weight matrix W (m x n; a conv kernel as
    (kh*kw*c_in) x c_out) gets sigma / sqrt(r) * A B^T with A (m x r), B (n x r) ~ N(0, 1), so every
    entry still has variance sigma^2 but the candidate costs r(m + n) random numbers instead of mn;
    vectors (biases, batch-norm scales) stay full-rank.
    """
    sign = 1.0
    if antithetic:
        sign = 1.0 - 2.0 * (index % 2)
        index = index - index % 2
    key = jax.random.fold_in(key, index)
    if rank <= 0:
        flat, unravel = ravel_pytree(like)  # only the shapes are used; XLA drops the concatenation
        return unravel(sign * sigma * jax.random.normal(key, flat.shape, flat.dtype))
    leaves, treedef = jax.tree.flatten(like)
    sizes = [(x.size // x.shape[-1] + x.shape[-1]) * rank if x.ndim > 1 else x.size for x in leaves]
    draws = jax.random.normal(key, (sum(sizes),), leaves[0].dtype)
    out, start = [], 0
    for x, size in zip(leaves, sizes):
        z = draws[start : start + size]
        start += size
        if x.ndim > 1:
            m, n = x.size // x.shape[-1], x.shape[-1]
            a, b = z[: m * rank].reshape(m, rank), z[m * rank :].reshape(n, rank)
            out.append((sign * sigma / rank**0.5 * a @ b.T).reshape(x.shape))
        else:
            out.append((sign * sigma * z).reshape(x.shape))
    return jax.tree.unflatten(treedef, out)


def shape_fitness(fitness_n: jax.Array, shaping: str) -> jax.Array:
    """Weights z_n: z-scores or centered ranks of the finite fitnesses; 0 for masked or all-equal ones."""
    valid = jnp.isfinite(fitness_n)
    count = jnp.sum(valid)
    f = jnp.where(valid, fitness_n, 0.0)
    lo = jnp.min(jnp.where(valid, fitness_n, jnp.inf))
    hi = jnp.max(jnp.where(valid, fitness_n, -jnp.inf))
    informative = (count >= 2) & (hi > lo)
    if shaping == "zscore":
        mean = jnp.sum(f) / jnp.maximum(count, 1)
        std = jnp.sqrt(jnp.sum(jnp.where(valid, jnp.square(f - mean), 0.0)) / jnp.maximum(count, 1))
        z = (f - mean) / (std + 1e-8)
    elif shaping == "centered_rank":
        sorted_n = jnp.sort(jnp.where(valid, fitness_n, jnp.inf))  # masked ones sort last
        below = jnp.searchsorted(sorted_n, f, side="left")
        upto = jnp.searchsorted(sorted_n, f, side="right")
        rank = (below + upto - 1).astype(jnp.float32) / 2.0  # ties share their average rank
        z = rank / jnp.maximum(count - 1, 1).astype(jnp.float32) - 0.5
    else:
        raise ValueError(f"unknown fitness_shaping {shaping!r}")  # config validation rules this out
    return jnp.where(valid & informative, z, 0.0).astype(jnp.float32)


def make_wsr(config: WsrConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int) -> EstimateFn:
    """WSR estimate over `shards` shards of `config.pop_per_shard` candidates each, perturbed by `sigma`."""
    pps = config.pop_per_shard
    precision = population.fitness_precision(config.fitness_precision)

    own_episodes = config.shard_episodes == "own"

    def local(key: jax.Array, params: Params, batch: Batch, where: LocalShards):
        noise = lambda i: candidate_noise(key, params, i, sigma, config.antithetic, config.rank)  # noqa: E731
        def fitness_on(episode: Batch, i: jax.Array) -> jax.Array:
            with precision():
                return fitness_from_loss(loss_fn(jax.tree.map(jnp.add, params, noise(i)), episode))

        index_sp = where.shard_ids[:, None] * pps + jnp.arange(pps)
        mode = population.resolve_eval_mode(config.eval_mode, where.platform)
        chunk = population.eval_chunk(config.chunk_size, pps)
        if own_episodes:
            # Shard by shard, its episode sliced once, outside the candidates' loop: slicing it per candidate
            # inside the loop made a step about 2x slower on a 2-core CPU (16 channels, 8 x 8 candidates).
            def shard_fitness(shard_and_index):
                shard, index_p = shard_and_index
                episode = jax.tree.map(lambda x: x[shard], batch)
                return population.evaluate(lambda i: fitness_on(episode, i), index_p, mode, chunk)
            fitness_sp = jax.lax.map(shard_fitness, (where.shard_ids, index_sp))
        else:
            fitness_n = population.evaluate(lambda i: fitness_on(batch, i), index_sp.reshape(-1), mode, chunk)
            fitness_sp = fitness_n.reshape(index_sp.shape)

        if config.normalize == "global":
            everyone = where.all_gather(fitness_sp).reshape(-1)
            weight_sp = where.own_rows(shape_fitness(everyone, config.fitness_shaping).reshape(shards, pps))
        else:
            weight_sp = jax.vmap(lambda f: shape_fitness(f, config.fitness_shaping))(fitness_sp)

        nchunk = population.noise_chunk(config.chunk_size, pps, sum(x.size for x in jax.tree.leaves(params)))

        def shard_estimate(weight_and_index):  # g_s of eq. 9
            return jax.tree.map(lambda x: x / pps, population.weighted_sum(*weight_and_index, noise, nchunk))

        g_local = population.scan_sum(shard_estimate, (weight_sp, index_sp))
        g = jax.tree.map(lambda x: where.psum(x) / shards, g_local)
        metrics = where.population_metrics(fitness_sp.reshape(-1))
        metrics["zero_update"] = (where.psum(jnp.sum(weight_sp != 0)) == 0).astype(jnp.float32)
        metrics["grad_norm"] = tree_norm(g)
        metrics["candidates"] = jnp.int32(pps * shards)
        return g, metrics

    return run_sharded(local, mesh, shards)
