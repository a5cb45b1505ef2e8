"""What a run measures (an episode's loss and accuracy, evaluation episodes and evaluator, test statistics, each
epoch's means and pace), apart from the driver: one computation for training, validation, test and cost estimate."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from esmeta.config import Config
from esmeta.data import sample_episode
from esmeta.learners import make_learner
from esmeta.protonet import BatchStats

# (params, episode, running averages) -> (loss, accuracy, the batch-norm statistics used)
MetricsFn = Callable[..., tuple[jax.Array, jax.Array, BatchStats]]


def metrics_fn(config: Config, way: int, evaluation: bool = False) -> MetricsFn:
    """The run's learner's loss and accuracy on episodes of `way` classes, its settings bound: the single loss of
    training (as its estimator differentiates it: a first-order one with constant inner gradients) and of
    evaluation (`evaluation`: the ProtoNet with its running averages under model.norm_stats=running, MAML with
    learner.test_inner_steps)."""
    return make_learner(config).metrics(way, evaluation=evaluation,
                                        first_order=config.estimator.FIRST_ORDER and not evaluation)


def meta_batch_metrics(metrics: MetricsFn, tasks: int) -> MetricsFn:
    """`metrics` over a meta-batch: (params, `tasks` episodes stacked on a leading axis, running) -> their mean loss
    and accuracy, and their batch-norm statistics averaged (what the running averages take in). Each episode is
    normalized by its own statistics, as if it were the step's only one. One episode (`tasks` = 1): `metrics`."""
    if tasks == 1:
        return metrics

    def batched(params, episodes, running=None):
        loss, accuracy, stats = jax.vmap(lambda episode: metrics(params, episode, running))(episodes)
        return jnp.mean(loss), jnp.mean(accuracy), jax.tree.map(lambda x: jnp.mean(x, axis=0), stats)

    return batched


def sample_meta_batch(sample: Callable[[jax.Array], object], tasks: int) -> Callable[[jax.Array], object]:
    """`sample(key)` of one episode -> of `tasks` episodes stacked, task b's from fold_in(key, b); `sample` itself
    for one (so a run of one task per step draws exactly the episodes it always drew)."""
    if tasks == 1:
        return sample
    return lambda key: jax.vmap(lambda b: sample(jax.random.fold_in(key, b)))(jnp.arange(tasks))


def episode_keys(key: jax.Array, n: int) -> jax.Array:
    """n episode keys by fold_in, so the first k of n episodes are the same for any n >= k."""
    return jax.vmap(partial(jax.random.fold_in, key))(jnp.arange(n))


def make_evaluator(images: jax.Array, keys: jax.Array, way: int, shot: int, query: int, metrics: MetricsFn):
    """`evaluate(params, running)`: accuracy on each of a fixed set of episodes (one per key), at full float32
    precision (batch norm as `metrics` says: with the running averages under norm_stats=running)."""

    def evaluate(params, running):
        def one(key):
            return metrics(params, sample_episode(key, images, way, shot, query), running)[1]

        with jax.default_matmul_precision("highest"):
            return jax.lax.map(one, keys)

    return jax.jit(evaluate)


def accuracy_stats(accuracies: np.ndarray) -> dict[str, float]:
    """Mean, sample standard deviation (ddof=1, the paper's '±') and 95% CI half-width over episodes."""
    n = len(accuracies)
    std = float(np.std(accuracies, ddof=1)) if n > 1 else 0.0
    return {
        "test_accuracy": float(np.mean(accuracies)),
        "test_accuracy_std": std,
        "test_accuracy_ci95": 1.96 * std / math.sqrt(n),
        "test_episodes": n,
    }


def all_finite(tree) -> bool:
    """Whether every leaf is finite: non-finite mean parameters mean the run collapsed."""
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def mean_metrics(window: list[dict[str, float]]) -> dict[str, float]:
    """Average per-step host metrics over a logging window; nan where no step was finite."""
    out = {}
    for k in window[0]:
        values = np.asarray([m[k] for m in window], np.float64)
        finite = values[np.isfinite(values)]
        out[k] = float(finite.mean()) if finite.size else float("nan")
    return out


# An exact gradient (backprop, forward_mode) evaluates one candidate, mu: its fitness statistics are -loss, 0, -loss.
EXACT_DROPPED = ("es/fitness_mean", "es/fitness_std", "es/fitness_max")


def epoch_rates(candidates: float, steps: int, seconds: float, population: bool) -> dict[str, float]:
    """An epoch's pace over `steps` steps taking `seconds` (compilation left out): episodes/s for every estimator,
    candidates/s for the population ones (for which it is what the hardware does); nan when no step was timed."""
    episodes_per_s = steps / seconds if steps and seconds > 0 else float("nan")
    rates = {"train/episodes_per_s": episodes_per_s}
    if population:
        rates["es/candidates_per_s"] = candidates * episodes_per_s
    return rates
