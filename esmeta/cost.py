"""What a command's runs cost on this machine, before they run (`python -m esmeta.run --dry-run --estimate`).

Each distinct shape of job (model, episode sizes, estimator, population, shards) is built as training builds
it, on blank images of its split's sizes, and timed in this process: the training step's compilation (its first
two calls) and a few steps, and an evaluation episode. A job then costs

    compile + episodes x step + (validation episodes x epochs + test episodes) x evaluation episode

with its time budget (train.max_minutes) capping the training part. Not counted: Python and Hydra start-up and
the data's first preparation (seconds). Jobs that differ only in values such as alpha, sigma or the seed
share one measurement.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp

from esmeta.config import Config
from esmeta.data.omniglot import IMAGES_PER_CLASS
from esmeta.data.splits import split_sizes
from esmeta.scale import scaled

# Settings that change no shape or amount of computation per step: jobs that differ only in them share a timing.
NOT_SHAPE = ("seed", "alpha", "sigma", "train", "eval", "logger", "scale")


@dataclass(frozen=True)
class Rates:
    """This machine's times for one shape of job, in seconds."""

    compile_s: float  # compiling the training step and the two evaluators (validation, test)
    step_s: float  # one training step: one episode
    eval_episode_s: float  # one evaluation episode


@dataclass(frozen=True)
class Estimate:
    """A job's expected seconds on this machine, and its parts."""

    seconds: float
    compile_s: float
    train_s: float
    eval_s: float
    episodes: int  # training episodes it is expected to reach (fewer than requested under a time budget)


def shape_key(config: Config) -> str:
    """What decides a job's time per step: its executed config, less the settings in NOT_SHAPE."""
    tree = scaled(config).to_dict()
    tree["data"] = {k: v for k, v in tree["data"].items() if k in ("image_size", "split")}
    return repr(sorted((k, v) for k, v in tree.items() if k not in NOT_SHAPE))


def _blank_images(config: Config) -> dict[str, jax.Array]:
    """Images of the split's sizes (all zero: the arithmetic, and so its time, does not depend on the pixels)."""
    size = config.data.image_size
    counts = dict(zip(("train", "val", "test"), split_sizes(config.data.split)))
    return {name: jnp.zeros((n, IMAGES_PER_CLASS, size, size), jnp.uint8) for name, n in counts.items()}


def measure(config: Config, min_steps: int = 2, max_steps: int = 5, seconds: float = 2.0) -> Rates:
    """Time one job's shape here: the step's first call (compilation) and then `min_steps` to `max_steps` steps
    (stopping after `seconds`), and an evaluation of two episodes."""
    from esmeta.hardware import make_mesh, replicate
    from esmeta.metrics import episode_keys, make_evaluator
    from esmeta.train import build

    run = scaled(config)
    mesh, shards = make_mesh(run.hardware)
    images = _blank_images(config)
    setup = build(config, run, mesh, shards, images)
    params, opt_state, running = replicate(setup.state, mesh)  # as training places it

    def step(i: int) -> float:
        nonlocal params, opt_state, running
        start = time.perf_counter()
        params, opt_state, running, metrics = setup.train_step(
            params, opt_state, running, jax.random.fold_in(setup.train_key, i))
        jax.block_until_ready(metrics)
        return time.perf_counter() - start

    warmup_s, step_s = time_steps(step, min_steps, max_steps, seconds)

    t = run.task
    evaluate = make_evaluator(images["test"], episode_keys(setup.test_key, 2), t.test_way, t.test_shot, t.test_query,
                              setup.eval_metrics)
    start = time.perf_counter()
    jax.block_until_ready(evaluate(params, running))
    eval_first = time.perf_counter() - start
    start = time.perf_counter()
    jax.block_until_ready(evaluate(params, running))
    eval_episode_s = (time.perf_counter() - start) / 2
    compile_s = max(warmup_s - step_s, 0.0) + 2 * max(eval_first - 2 * eval_episode_s, 0.0)
    return Rates(compile_s=compile_s, step_s=step_s, eval_episode_s=eval_episode_s)


def time_steps(step: Callable[[int], float], min_steps: int, max_steps: int, seconds: float) -> tuple[float, float]:
    """(seconds of the warm-up call, the median step after it) from `step(i)`, which runs step i and returns its
    seconds. The first call compiles; timed among the steps it would make the median of two steps their mean."""
    warmup = step(0)  # compiles (once: the state is placed as the step returns it)
    times: list[float] = []
    while len(times) < min_steps or (len(times) < max_steps and sum(times) < seconds):
        times.append(step(1 + len(times)))
    return warmup, statistics.median(times)


def estimate(config: Config, rates: Rates) -> Estimate:
    """A job's expected time from its shape's `rates` (see the module docstring)."""
    tr, ev = config.train, config.eval
    episodes = tr.epochs * tr.episodes_per_epoch
    per_epoch = tr.episodes_per_epoch * rates.step_s + ev.val_episodes * rates.eval_episode_s
    if tr.max_minutes:  # checked after each epoch: training ends with the first epoch past the budget
        epochs = min(tr.epochs, int(60 * tr.max_minutes // per_epoch) + 1)
        episodes = epochs * tr.episodes_per_epoch
    epochs = episodes // tr.episodes_per_epoch
    train_s = episodes * rates.step_s
    eval_s = (ev.val_episodes * epochs + ev.test_episodes) * rates.eval_episode_s
    return Estimate(seconds=rates.compile_s + train_s + eval_s, compile_s=rates.compile_s, train_s=train_s,
                    eval_s=eval_s, episodes=episodes)


def estimate_jobs(configs: Sequence[Config], report: Callable[[str], None] = lambda line: None) -> list[Estimate]:
    """Every job's estimate, measuring each distinct shape once (`report` hears of each measurement)."""
    rates: dict[str, Rates] = {}
    out = []
    for config in configs:
        key = shape_key(config)
        if key not in rates:
            report(f"measuring a job shape ({len(rates) + 1}): {config.estimator.name}, "
                   f"{config.model.channels} channels, {config.task.train_way}-way {config.task.shot}-shot ...")
            rates[key] = measure(config)
        out.append(estimate(config, rates[key]))
    return out


def clock(seconds: float) -> str:
    """Seconds as a duration a reader takes in at once: 45 s, 12 min, 3.4 h, 2.1 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"
