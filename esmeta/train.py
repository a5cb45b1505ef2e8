"""The training driver: validate -> data -> keys -> model -> estimator -> optimizer -> loop -> test -> results.

`train(config, run_dir)` is plain Python over a validated `Config`; `esmeta.run` is only its Hydra
front end, and tests call it directly.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from esmeta.config import Config, EstimatorConfig
from esmeta.data import load_omniglot, sample_episode, split_classes
from esmeta.estimators import make_estimator
from esmeta.hardware import configure_backend, make_mesh
from esmeta.protonet import Params, init_params, loss_and_accuracy, num_params
from esmeta.results import RunDir

MetricsFn = Callable[[Params, Any], tuple[jax.Array, jax.Array]]


def make_optimizer(alpha: float, est: EstimatorConfig) -> optax.GradientTransformation:
    """optax rule applied to the descent direction -g: sgd gives the paper's mu <- mu + alpha * g."""
    step_size = (
        optax.exponential_decay(alpha, est.lr_decay_every, est.lr_decay_factor, staircase=True)
        if est.lr_decay_every
        else alpha
    )
    rule = optax.adam(step_size) if est.optimizer == "adam" else optax.sgd(step_size)
    if est.weight_decay:
        return optax.chain(optax.add_decayed_weights(est.weight_decay), rule)
    return rule


def metrics_fn(config: Config, way: int) -> MetricsFn:
    """(loss, accuracy) of one episode of `way` classes: the single loss used by training and evaluation."""
    return partial(
        loss_and_accuracy,
        way=way,
        channels=config.model.channels,
        distance=config.distance.name,
        scale=config.distance.scale,
        norm_stats=config.model.norm_stats,
    )


def episode_keys(key: jax.Array, n: int) -> jax.Array:
    """n episode keys by fold_in, so the first k of n episodes are the same for any n >= k."""
    return jax.vmap(partial(jax.random.fold_in, key))(jnp.arange(n))


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init_key, train_key) of a run: the root key from the training seed, split once."""
    init_key, train_key = jax.random.split(jax.random.key(seed))
    return init_key, train_key


def make_train_step(estimate, optimizer: optax.GradientTransformation, sample, metrics: MetricsFn):
    """One jitted meta-training step: sample an episode, estimate the ascent direction, update mu."""

    def step(params, opt_state, key):
        episode_key, estimate_key = jax.random.split(key)
        episode = sample(episode_key)
        g, est_metrics = estimate(estimate_key, params, episode)
        loss, accuracy = metrics(params, episode)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, g), opt_state, params)
        out = {"train/loss": loss, "train/accuracy": accuracy}
        out.update({f"es/{k}": v for k, v in est_metrics.items()})
        return optax.apply_updates(params, updates), opt_state, out

    return jax.jit(step, donate_argnums=(0, 1))


def make_evaluator(images: jax.Array, keys: jax.Array, way: int, shot: int, query: int, metrics: MetricsFn):
    """Accuracy on each of a fixed set of episodes (one per key), at full float32 precision."""

    def evaluate(params):
        def one(key):
            return metrics(params, sample_episode(key, images, way, shot, query))[1]

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
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def versions() -> dict[str, str]:
    import flax

    import esmeta

    return {
        "esmeta": esmeta.__version__,
        "jax": jax.__version__,
        "jaxlib": jax.lib.__version__ if hasattr(jax.lib, "__version__") else jax.__version__,
        "flax": flax.__version__,
        "optax": optax.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


class Progress:
    """A tqdm bar on a terminal; silent otherwise (or as `train.progress` says)."""

    def __init__(self, total: int, mode: str):
        enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="ep", dynamic_ncols=True, leave=False)

    def update(self, n: int = 1, **postfix: float) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def make_budget_clock(kind: str) -> Callable[[], float]:
    """Seconds spent so far by the budget's clock: elapsed wall time, or this process's CPU time divided by
    the cores it may use (on a machine shared with other work, the compute a quiet machine would give)."""
    if kind == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        cpu0 = time.process_time()
        return lambda: (time.process_time() - cpu0) / cores
    wall0 = time.perf_counter()
    return lambda: time.perf_counter() - wall0


def _mean_metrics(step_metrics: list[dict[str, jax.Array]]) -> dict[str, float]:
    """Average per-step device metrics over a logging window (one host transfer)."""
    host = jax.device_get(step_metrics)
    out = {}
    for k in host[0]:
        values = np.asarray([m[k] for m in host], np.float64)
        finite = values[np.isfinite(values)]
        out[k] = float(finite.mean()) if finite.size else float("nan")  # nan: no finite step in the window
    return out


def train(config: Config, run_dir: str | Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and test one run; write metrics, parameters and summary to `run_dir`; return the summary."""
    out = RunDir(run_dir)
    out.start()
    start = time.perf_counter()
    configure_backend(config.hardware)
    mesh, shards = make_mesh(config.hardware)
    t, e = config.task, config.estimator

    data = load_omniglot(
        config.data.root, config.data.image_size, config.data.resize_filter, config.data.cache_dir, config.data.download
    )
    split = split_classes(data.class_names, config.data.split, config.data.split_seed)
    images = {name: jnp.asarray(data.images[idx]) for name, idx in split.items()}

    init_key, train_key = run_keys(config.seed)
    val_key, test_key = jax.random.split(jax.random.key(config.eval.seed))
    params = init_params(init_key, config.model.channels, config.data.image_size)
    n_params = num_params(params)

    train_metrics = metrics_fn(config, t.train_way)
    eval_metrics = metrics_fn(config, t.test_way)
    estimate = make_estimator(e, config.sigma, lambda p, ep: train_metrics(p, ep)[0], mesh, shards)
    optimizer = make_optimizer(config.alpha, e)
    opt_state = optimizer.init(params)
    sample_train = partial(sample_episode, images=images["train"], way=t.train_way, shot=t.shot, query=t.query)
    train_step = make_train_step(estimate, optimizer, sample_train, train_metrics)
    validate = make_evaluator(
        images["val"], episode_keys(val_key, config.eval.val_episodes), t.test_way, t.test_shot, t.test_query,
        eval_metrics,
    ) if config.eval.val_episodes else None

    budget_seconds = make_budget_clock(config.train.budget_clock)
    status, best_val, val_acc = "completed", float("nan"), float("nan")
    stopped_by_budget = False
    total = config.train.epochs * config.train.episodes_per_epoch
    progress = Progress(total, config.train.progress)
    try:
        for epoch in range(config.train.epochs):
            epoch_start, window = time.perf_counter(), []
            for i in range(config.train.episodes_per_epoch):
                step = epoch * config.train.episodes_per_epoch + i
                params, opt_state, m = train_step(params, opt_state, jax.random.fold_in(train_key, step))
                window.append(m)
                progress.update(1)
            record = _mean_metrics(window)
            seconds = time.perf_counter() - epoch_start
            candidates = record.pop("es/candidates", 1.0) * len(window)
            record["es/candidates_per_s"] = candidates / seconds
            finite = all_finite(params)
            if validate is not None and finite:
                val_acc = float(jnp.mean(validate(params)))
                best_val = val_acc if math.isnan(best_val) else max(best_val, val_acc)
            record.update(
                {"epoch": epoch + 1, "episode": step + 1, "val/accuracy": val_acc,
                 "wall_time_s": time.perf_counter() - start}
            )
            out.append_metrics(record)
            progress.update(0, loss=record["train/loss"], val=val_acc)
            if not finite or not math.isfinite(record["train/loss"]):
                # Non-finite mean parameters never recover; a whole epoch of non-finite losses neither.
                status = "collapsed"
                break
            if config.train.max_minutes and budget_seconds() > 60 * config.train.max_minutes:
                stopped_by_budget = epoch + 1 < config.train.epochs
                break
    finally:
        progress.close()

    test_keys = episode_keys(test_key, config.eval.test_episodes)
    test = make_evaluator(images["test"], test_keys, t.test_way, t.test_shot, t.test_query, eval_metrics)
    accuracies = np.asarray(test(params))
    out.write_params(serialization.to_bytes(params))
    summary = {
        "status": status,
        **accuracy_stats(accuracies),
        "best_val_accuracy": best_val,
        "final_val_accuracy": val_acc,
        "episodes": step + 1,
        "stopped_by_budget": stopped_by_budget,
        "wall_time_s": time.perf_counter() - start,
        "num_params": n_params,
        "estimator": e.name,
        "alpha": config.alpha,
        "sigma": {"wsr": config.sigma, "finite_diff": e.fd_sigma}.get(e.name),  # the perturbation used
        "population": e.pop_per_shard * shards if e.is_es else None,
        "shards": shards,
        "config": config.to_dict(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in mesh.devices.flat],
        "versions": versions(),
        **(extra or {}),
    }
    out.finish(summary)
    return summary
