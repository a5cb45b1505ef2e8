"""The training driver: validate -> data -> keys -> model -> estimator -> optimizer -> loop -> test -> results.

`train(config, run_dir)` is plain Python over a validated `Config`; `esmeta.run` is only its Hydra
front end, and tests call it directly.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization

from esmeta import checkpoint
from esmeta.allocation import ALLOCATION_EXIT, StopRequests, make_budget_clock, segment_recorder, stop_reason
from esmeta.config import Config
from esmeta.console import ProgressBar, epoch_line
from esmeta.data import load_omniglot, sample_episode, split_classes
from esmeta.data.omniglot import check_zips
from esmeta.errors import EsmetaError, RunStopped
from esmeta.estimators import EstimatorConfig, make_estimator
from esmeta.hardware import configure_backend, make_mesh, replicate
from esmeta.learners import make_learner
from esmeta.memory import check_memory
from esmeta.metrics import (
    EXACT_DROPPED,
    MetricsFn,
    accuracy_stats,
    all_finite,
    episode_keys,
    epoch_rates,
    make_evaluator,
    mean_metrics,
    meta_batch_metrics,
    metrics_fn,
    sample_meta_batch,
)
from esmeta.protonet import num_params
from esmeta.provenance import provenance, versions
from esmeta.record import record
from esmeta.run_dir import DirLock, RunDir, read_finished_summary
from esmeta.scale import check_fits_scale, scaled
from esmeta.tracking import default_group, epoch_row, open_tracker, run_name, run_tags

log = logging.getLogger(__name__)


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


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """(init_key, train_key) of a run: the root key from the training seed, split once."""
    init_key, train_key = jax.random.split(jax.random.key(seed))
    return init_key, train_key


def make_train_step(estimate, optimizer: optax.GradientTransformation, sample, metrics: MetricsFn,
                    update_running: Callable[[Any, Any], Any], shard_episodes: int = 0):
    """One jitted meta-training step: sample an episode (a meta-batch of them: `sample` and `metrics` from
    esmeta.metrics.sample_meta_batch and meta_batch_metrics), estimate the ascent direction, update mu, and update
    the batch-norm running averages from the forward pass at mu (the one that gives train/loss). With
    `shard_episodes` = S > 0 the estimator gets S episodes, one per population shard (stacked; shard s's from
    fold_in(episode key, s)), and the forward pass at mu uses shard 0's. `update_running`: the learner's."""

    def step(params, opt_state, running, key):
        episode_key, estimate_key = jax.random.split(key)
        if shard_episodes:
            episodes = jax.vmap(lambda s: sample(jax.random.fold_in(episode_key, s)))(jnp.arange(shard_episodes))
            episode = jax.tree.map(lambda x: x[0], episodes)
        else:
            episode = episodes = sample(episode_key)
        g, est_metrics = estimate(estimate_key, params, episodes)
        loss, accuracy, moments = metrics(params, episode)
        updates, opt_state = optimizer.update(jax.tree.map(jnp.negative, g), opt_state, params)
        out = {"train/loss": loss, "train/accuracy": accuracy}
        out.update({f"es/{k}": v for k, v in est_metrics.items()})
        return optax.apply_updates(params, updates), opt_state, update_running(running, moments), out

    return jax.jit(step, donate_argnums=(0, 1, 2))


@dataclass(frozen=True)
class JobInfo:
    """Where a run comes from (Hydra's view of it): recorded in the summary, names its W&B run."""

    overrides: tuple[str, ...] = ()
    sweep: str | None = None  # the stored sweep (sweep=NAME) the job belongs to
    sweep_dir: str | None = None  # the multirun's directory, None for a single run
    job_name: str = "esmeta"
    record: tuple[tuple[str, str], ...] = ()  # (path in the run directory, text): Hydra's .hydra/ files, written
    # when the run starts, after every check, so that a refused job never rewrites another run's record
    started: float | None = None  # when the command started (time.monotonic()): train.allocation_minutes counts
    # from here, over all the jobs of a multirun; None: from the start of `train`


def check_start(config: Config) -> tuple[Any, int]:
    """What must hold before a run touches its directory: the hardware it asks for, the memory it needs, the data.
    Returns (mesh, shards); raises a one-line EsmetaError otherwise. Writes nothing (but a download)."""
    check_fits_scale(config)
    configure_backend(config.hardware)
    mesh, shards = make_mesh(scaled(config).hardware)
    check_memory(config, mesh, shards)
    check_zips(config.data.root, config.data.download)
    return mesh, shards


def preflight(config: Config, run_dir: Path) -> DirLock | None:
    """Every check of a single run, before Hydra writes into its directory: hardware, data, what the directory
    holds, and its lock (returned, held; None for a multi-process run, whose process 0 locks in `train`)."""
    check_start(config)
    checkpoint.inspect_run_dir(config, run_dir)
    return DirLock(run_dir).acquire() if config.hardware.processes == 1 else None


def record_failure(config: Config, run_dir: Path, job: JobInfo, error: BaseException, status: str = "failed") -> bool:
    """Record `error` as the run's `failed` (or `skipped`) summary (rerunning redoes it), unless the directory is
    not this run's to write: another process holds it, or it holds a finished run. Returns whether it wrote."""
    out = RunDir(run_dir)
    message = str(error) if isinstance(error, EsmetaError) else f"{type(error).__name__}: {error}"
    try:
        with DirLock(out.path):
            if out.done and read_finished_summary(out.path).get("status") not in ("failed", "skipped"):
                return False
            out.finish({"status": status, "error": message, "config": config.to_dict(), "scale": config.scale.name,
                        "overrides": list(job.overrides), "sweep": job.sweep, "provenance": provenance(),
                        **record(config, job.overrides)})
    except (EsmetaError, OSError):
        return False
    return True


def train(config: Config, run_dir: str | Path, job: JobInfo | None = None) -> dict[str, Any]:
    """Train and test one run; write metrics, checkpoints, parameters and summary to `run_dir`; return the summary.

    With `train.resume` (default), a run directory holding a finished run returns its summary untouched,
    and one holding a checkpoint continues from it: same episodes, same candidates, same result. Everything
    is checked before the directory is written, and the directory is locked for the whole run.
    """
    job = job or JobInfo()
    start = time.perf_counter()
    allocation = config.train.allocation_minutes
    deadline = (time.monotonic() if job.started is None else job.started) + 60 * allocation if allocation else None
    if deadline is not None and job.sweep_dir is not None and time.monotonic() >= deadline:  # a multirun's later job:
        # leave it to the next allocation (a single run trains at least one step, so every allocation advances it)
        raise RunStopped(f"train.allocation_minutes={allocation:g} reached before this job started", ALLOCATION_EXIT,
                         f"{run_dir} not started")
    mesh, shards = check_start(config)
    writer = jax.process_index() == 0  # in a multi-process run only process 0 writes results and logs
    out = RunDir(run_dir, enabled=writer)
    lock = out.lock()
    try:
        state = checkpoint.inspect_run_dir(config, out.path)
        if state.finished is not None:
            log.warning("%s already holds this finished run: not retrained (train.resume=false starts over)", out.path)
            return state.finished
        return _run(config, out, state.saved, mesh, shards, job, start, deadline)
    finally:
        if lock is not None:
            lock.release()


@dataclass
class Setup:
    """What a run trains and tests with, built from its config: the split's images, the jitted step and
    evaluators, the initial state and the keys (training episodes, test episodes)."""

    images: dict[str, jax.Array]
    train_step: Callable[..., Any]
    validate_fn: Callable[[Any, Any], jax.Array] | None  # mean parameters, running stats -> val accuracies
    eval_metrics: Callable[..., Any]
    state: tuple[Any, Any, Any]  # (params, opt_state, running)
    train_key: jax.Array
    test_key: jax.Array
    num_params: int
    population: bool = True  # a population estimator (wsr, finite_diff): candidates/s and fitness statistics mean something


def split_images(config: Config) -> dict[str, jax.Array]:
    """The run's data: Omniglot's images uint8 (classes, 20, S, S) of each split (train, val, test)."""
    data = load_omniglot(
        config.data.root, config.data.image_size, config.data.resize_filter, config.data.cache_dir, config.data.download
    )
    split = split_classes(data.class_names, config.data.split, config.data.split_seed)
    return {name: jnp.asarray(data.images[idx]) for name, idx in split.items()}


def build(config: Config, run: Config, mesh: Any, shards: int, images: dict[str, jax.Array]) -> Setup:
    """Keys, model, estimator and optimizer of a run on its split's `images` (`run`: the config as executed, after
    the scale's caps)."""
    t, e = run.task, run.estimator
    init_key, train_key = run_keys(config.seed)
    val_key, test_key = jax.random.split(jax.random.key(config.eval.seed))
    learner = make_learner(config)
    params = learner.init_params(init_key)

    train_metrics = meta_batch_metrics(metrics_fn(config, t.train_way), t.meta_batch)
    eval_metrics = metrics_fn(config, t.test_way, evaluation=True)
    estimate = make_estimator(e, config.sigma, lambda p, ep: train_metrics(p, ep)[0], mesh, shards)
    optimizer = make_optimizer(config.alpha, e)
    sample_train = sample_meta_batch(
        partial(sample_episode, images=images["train"], way=t.train_way, shot=t.shot, query=t.query), t.meta_batch)
    validate_fn = make_evaluator(
        images["val"], episode_keys(val_key, config.eval.val_episodes), t.test_way, t.test_shot, t.test_query,
        eval_metrics,
    ) if config.eval.val_episodes else None
    return Setup(
        images=images, train_step=make_train_step(estimate, optimizer, sample_train, train_metrics,
                                                  learner.update_running, e.own_episodes(shards)),
        validate_fn=validate_fn, eval_metrics=eval_metrics,
        state=(params, optimizer.init(params), learner.init_running(params)),
        train_key=train_key, test_key=test_key, num_params=num_params(params), population=e.is_es,
    )


def end_epoch(progress: checkpoint.Progress, params: Any, running: Any, setup: Setup, episodes_per_epoch: int,
              epoch_steps: int, epoch_seconds: float, elapsed_s: float, out: RunDir,
              tracker: Any) -> tuple[dict[str, float], bool]:
    """Close an epoch whose step metrics are in `progress.window`: log them, validate, write the epoch's record.
    Returns (the record, whether the mean parameters are finite)."""
    first = progress.step - len(progress.window) + 1
    dropped = {"es/candidates"} if setup.population else {"es/candidates", *EXACT_DROPPED}
    for i, row in enumerate(progress.window):
        tracker.log({k: v for k, v in row.items() if k not in dropped}, step=first + i)
    record = mean_metrics(progress.window)
    candidates = record.pop("es/candidates", 1.0)
    record = {k: v for k, v in record.items() if k not in dropped}
    record.update(epoch_rates(candidates, epoch_steps, epoch_seconds, setup.population))
    finite = all_finite(params)
    if setup.validate_fn is not None and finite:
        val_acc = float(jnp.mean(setup.validate_fn(params, running)))
        progress.val_acc = val_acc
        progress.best_val = val_acc if progress.best_val is None else max(progress.best_val, val_acc)
    record.update({"epoch": progress.step // episodes_per_epoch, "episode": progress.step, "val/accuracy": progress.val_acc,
                   "wall_time_s": elapsed_s})
    out.append_metrics(record)
    tracker.log(epoch_row(record), step=progress.step)
    progress.records.append(record)
    progress.window = []
    return record, finite


def summarize(config: Config, run: Config, setup: Setup, progress: checkpoint.Progress, accuracies: np.ndarray,
              status: str, stopped_by_budget: bool, resumed: bool, elapsed_s: float, shards: int, mesh: Any,
              job: JobInfo, params_bytes: bytes, stats_bytes: bytes) -> dict[str, Any]:
    """The run's summary.json: the test result and its protocol, the budget reached, what ran, and where from."""
    e, nan = run.estimator, float("nan")
    return {
        "status": status,
        **accuracy_stats(accuracies),
        "test_norm_stats": make_learner(config).test_norm_stats,  # the batch-norm protocol behind test_accuracy
        "best_val_accuracy": nan if progress.best_val is None else progress.best_val,
        "final_val_accuracy": nan if progress.val_acc is None else progress.val_acc,
        "episodes": progress.step,
        "stopped_by_budget": stopped_by_budget,
        "resumed": resumed,
        "wall_time_s": elapsed_s,
        "cpu_seconds": _cpu_seconds(progress.segments),
        "segments": progress.segments,  # each process that trained it: episodes, times, commit, machine, matmul rate
        "num_params": setup.num_params,
        "estimator": e.name,
        "alpha": config.alpha,
        "pop_per_shard": e.pop_per_shard if e.is_es else None,  # as run (after the scale's caps)
        **record(config, job.overrides, progress.step),  # what the analysis reads: point, sigma, protocol, budget, ...
        "population": e.pop_per_shard * shards if e.is_es else None,
        "shards": shards,
        "hardware": config.hardware.name,
        "sweep": job.sweep,
        "scale": config.scale.name,
        "config": config.to_dict(),
        "backend": jax.default_backend(),
        "devices": [str(d) for d in mesh.devices.flat],
        "processes": jax.process_count(),
        "versions": versions(),
        "provenance": provenance(),  # command, commit, machine
        "overrides": list(job.overrides),
        "job_name": job.job_name,
        "params_sha256": checkpoint.sha256(params_bytes),  # load_run verifies params.msgpack against it
        "batch_stats_sha256": checkpoint.sha256(stats_bytes),  # and batch_stats.msgpack
    }


def _cpu_seconds(segments: list[dict[str, Any]]) -> float | None:
    """The CPU time of all the processes that trained a run, where their segments cover it from episode 0."""
    covered = bool(segments) and segments[0]["start_episode"] == 0 and all(
        a["end_episode"] == b["start_episode"] for a, b in zip(segments, segments[1:]))
    return round(sum(s["cpu_s"] for s in segments), 1) if covered else None


def _run(config: Config, out: RunDir, saved: checkpoint.Saved | None, mesh: Any, shards: int, job: JobInfo,
         start: float, deadline: float | None = None) -> dict[str, Any]:
    """The run itself, its directory locked and checked: data, model, loop, test, results."""
    writer, ckpt_path, resuming = out.enabled, out.path / checkpoint.CHECKPOINT, saved is not None
    cpu_start = time.process_time()
    run = scaled(config)  # what executes: the scale's caps applied (config keeps the requested values)
    t = run.task
    if writer:  # without a terminal, the job's .log would show nothing until the first epoch ends
        log.info("preparing the data (Omniglot at %d px, split %s) and the %s estimator", config.data.image_size,
                 config.data.split, run.estimator.name)
    setup = build(config, run, mesh, shards, split_images(config))
    state, progress = setup.state, checkpoint.Progress()
    if saved is not None:
        state, progress = checkpoint.restore(saved, setup.state), saved.progress
    state = replicate(state, mesh)  # as the step returns it: one compilation, not two
    out.start(keep_checkpoint=resuming, record=job.record)  # the first write into the directory: all checked
    if resuming:
        out.rewrite_metrics(progress.records)  # drop lines logged after the checkpoint
        if writer:
            log.info("resumed from episode %d/%d (epoch %d, from %s)", progress.step,
                     config.train.epochs * config.train.episodes_per_epoch, len(progress.records), ckpt_path)
    budget_seconds = make_budget_clock(config.train.budget_clock)
    elapsed = lambda: progress.seconds + time.perf_counter() - start  # noqa: E731
    segment = segment_recorder(progress.step, start, cpu_start)
    tracker = open_tracker(
        config.logger, out.path, name=run_name(job.overrides), group=default_group(job.sweep, job.sweep_dir),
        tags=run_tags(config), config=config.to_dict(), enabled=writer, resume=config.train.resume,
    )
    with tracker:
        (params, _, running), status, stopped_by_budget = train_loop(
            config, setup, state, progress, out, tracker, elapsed, budget_seconds, segment, deadline
        )
        test = make_evaluator(setup.images["test"], episode_keys(setup.test_key, config.eval.test_episodes),
                              t.test_way, t.test_shot, t.test_query, setup.eval_metrics)
        accuracies = np.asarray(test(params, running))
        params_bytes, stats_bytes = serialization.to_bytes(params), serialization.to_bytes(running)
        out.write_params(params_bytes, stats_bytes)
        progress.segments = [*progress.segments, segment(progress.step)]
        summary = out.finish(summarize(config, run, setup, progress, accuracies, status, stopped_by_budget, resuming,
                                       elapsed(), shards, mesh, job, params_bytes, stats_bytes))
        tracker.summary({k: v for k, v in summary.items()
                         if k not in ("config", "versions", "devices", "overrides", "segments")})
        if not stopped_by_budget:  # complete: params.msgpack and the summary replace the checkpoint; a run its time
            ckpt_path.unlink(missing_ok=True)  # budget stopped keeps it, for a rerun with a larger budget to continue
    return summary


def train_loop(config: Config, setup: Setup, state: tuple[Any, Any, Any], progress: checkpoint.Progress, out: RunDir,
               tracker: Any, elapsed: Callable[[], float], budget_seconds: Callable[[], float],
               segment: Callable[[int], dict[str, Any]] | None = None,
               deadline: float | None = None) -> tuple[tuple[Any, Any, Any], str, bool]:
    """Train from episode `progress.step` until the last episode, a collapse or the time budget, closing each epoch
    (`end_epoch`) and checkpointing as configured. Returns the final (params, opt_state, running), the status
    ("completed" or "collapsed") and whether the time budget stopped the run. A signal or the allocation's end
    (`deadline`, time.monotonic()) checkpoints after the current step and raises RunStopped."""
    params, opt_state, running = state
    status, stopped_by_budget = "completed", False
    epe, every = config.train.episodes_per_epoch, config.train.checkpoint_every
    total = config.train.epochs * epe
    bar = ProgressBar(total, config.train.progress, initial=progress.step)
    pending: list[dict[str, jax.Array]] = []  # device metrics not yet pulled to the host
    epoch_t0, epoch_steps = time.perf_counter(), 0
    loop_t0, loop_step0 = epoch_t0, progress.step  # this process's pace, for the ETA
    compiled = False  # this process's first step compiles the step; rates and the ETA leave it out

    def pull() -> None:  # one host transfer for the steps since the last one
        progress.window.extend({k: float(v) for k, v in m.items()} for m in jax.device_get(pending))
        pending.clear()

    def save() -> Path:  # the state after progress.step episodes, for a rerun to continue from
        pull()
        snapshot = dataclasses.replace(
            progress, seconds=elapsed(), budget_seconds=progress.budget_seconds + budget_seconds(),
            segments=[*progress.segments, *([segment(progress.step)] if segment else [])],
        )
        path = out.path / checkpoint.CHECKPOINT
        if out.enabled:
            checkpoint.save(path, (params, opt_state, running), snapshot, config.to_dict())
        return path

    try:
        with StopRequests() as stops:
            while progress.step < total:
                if not compiled and out.enabled:
                    log.info("compiling the training step (the first step; minutes for a large population on a CPU)")
                params, opt_state, running, m = setup.train_step(
                    params, opt_state, running, jax.random.fold_in(setup.train_key, progress.step)
                )
                pending.append(m)
                progress.step, epoch_steps = progress.step + 1, epoch_steps + 1
                if not compiled:  # wait for it (a sync, no other change), then time only what follows
                    jax.block_until_ready(m)
                    compiled = True
                    if out.enabled:
                        log.info("compiled and ran the first step in %.1f s", time.perf_counter() - loop_t0)
                    epoch_t0, epoch_steps = time.perf_counter(), 0
                    loop_t0, loop_step0 = epoch_t0, progress.step
                bar.update(1)
                if progress.step % epe == 0:  # end of an epoch: log, validate, check for collapse and budget
                    pull()
                    record, finite = end_epoch(progress, params, running, setup, epe, epoch_steps,
                                               time.perf_counter() - epoch_t0, elapsed(), out, tracker)
                    epoch_t0, epoch_steps = time.perf_counter(), 0
                    bar.update(0, loss=record["train/loss"], val=progress.val_acc)
                    if out.enabled:
                        timed = progress.step - loop_step0
                        pace = (time.perf_counter() - loop_t0) / timed if timed else float("nan")
                        log.info(epoch_line(record, total, config.train.epochs, elapsed(), pace * (total - progress.step)))
                    if not finite or not math.isfinite(record["train/loss"]):
                        # Non-finite mean parameters never recover; a whole epoch of non-finite losses neither.
                        status = "collapsed"
                        break
                    budget = config.train.max_minutes
                    if budget and progress.budget_seconds + budget_seconds() > 60 * budget:
                        stopped_by_budget = progress.step < total
                        if stopped_by_budget:
                            save()  # kept beside the result: a rerun with a larger budget continues from here
                        break
                if progress.step == total:
                    break
                saved = None
                if every and (progress.step % every == 0 or progress.step % epe == 0):
                    saved = save()
                why = stop_reason(stops, deadline, config.train.allocation_minutes)
                if why is not None:
                    saved = saved or save()
                    raise RunStopped(why[0], why[1], f"at episode {progress.step} of {total}, checkpoint {saved}")
    finally:
        bar.close()
    return (params, opt_state, running), status, stopped_by_budget

