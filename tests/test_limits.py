"""Limits known before a run starts: sizes JAX counts in int32, values float32 cannot hold, empty paths, and the
memory a run needs (a formula checked against XLA's compiled memory analysis) against what this machine has."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest

from esmeta import memory
from esmeta.data import sample_episode
from esmeta.data.omniglot import IMAGES_PER_CLASS
from esmeta.errors import ConfigError
from esmeta.estimators import make_estimator
from esmeta.hardware import make_mesh
from esmeta.metrics import episode_keys, make_evaluator, metrics_fn
from esmeta.prelaunch import check_overrides
from esmeta.protonet import init_batch_stats, init_params, update_running
from esmeta.scale import scaled
from esmeta.train import make_optimizer, make_train_step

TINY = ["task.train_way=5", "task.shot=1", "task.query=2", "task.test_way=5", "task.test_shot=1", "task.test_query=5"]


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esmeta.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "JAX_PLATFORMS": "cpu"})


def one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("esmeta: error: ")
    return lines[0]


@pytest.mark.parametrize("overrides,message", [
    (["estimator=wsr", "estimator.pop_per_shard=3000000000"], "estimator.pop_per_shard=3000000000 is too large"),
    (["estimator=wsr", "estimator.pop_per_shard=300000000", "hardware.shards=8"], "x hardware.shards=2400000000"),
    (["eval.test_episodes=10000000000"], "eval.test_episodes=10000000000 is too large"),
    (["eval.val_episodes=3000000000"], "eval.val_episodes=3000000000 is too large"),
    (["train.epochs=3000000", "train.episodes_per_epoch=1000"], "train.epochs x train.episodes_per_epoch"),
])
def test_sizes_past_int32_are_refused_at_validation(overrides, message):
    """They passed validation (below 2^63) and failed late: an OverflowError inside jit, the kernel's OOM killer."""
    with pytest.raises(ConfigError, match=message.replace("x h", "x h").replace(".", r"\.") + ".*2147483647"):
        check_overrides(overrides)


@pytest.mark.parametrize("overrides,key", [
    (["estimator=wsr", "sigma=1e-45"], "sigma=1e-45 underflows float32"),
    (["alpha=1e-320"], "alpha=1e-320 underflows float32"),
    (["estimator=finite_diff", "estimator.fd_sigma=1e-40"], "estimator.fd_sigma=1e-40 underflows"),
    (["alpha=1e39"], "alpha=1e\\+39 overflows float32"),
    (["distance=cosine", "distance.scale=1e-39"], "distance.scale=1e-39 underflows"),
])
def test_values_float32_cannot_hold_are_refused(overrides, key):
    """sigma=1e-45 and alpha=1e-320 used to train with a zero update into an untrained model, without a word."""
    with pytest.raises(ConfigError, match=key):
        check_overrides(overrides)
    check_overrides(["estimator=wsr", "sigma=1e-37", "alpha=1e38"])  # normal float32 values pass


@pytest.mark.parametrize("override", ["data.root=", "data.cache_dir=", "data.root=' '"])
def test_empty_data_paths_are_refused(override):
    """`data.root=` was read as the current directory, and a download attempted there."""
    with pytest.raises(ConfigError, match=f"{override.split('=')[0]}=.* is an empty path"):
        check_overrides([override])


def test_empty_output_paths_are_refused_and_nothing_is_written(tmp_path):
    """`hydra.run.dir=` wrote the run into the current directory."""
    line = one_line(run_cli(*TINY, "hydra.run.dir=", cwd=tmp_path))
    assert "hydra.run.dir='' is an empty path" in line
    with pytest.raises(ConfigError, match="hydra.sweep.dir='' is an empty path"):
        check_overrides(["hydra.sweep.dir="], multirun=True)
    with pytest.raises(ConfigError, match="hydra.sweep.subdir='' is an empty path"):
        check_overrides(["seed=0,1", "hydra.sweep.subdir="], multirun=True)
    assert not any(tmp_path.iterdir())


def test_a_run_this_machine_cannot_hold_is_refused_in_one_line_before_anything_is_written(tmp_path):
    """100,000 channels (5 TiB of parameters) used to end in an out-of-memory traceback; two billion validation
    episodes (40 GB of keys) in the kernel killing the job after it took all memory (checked in process here:
    a test must not risk that)."""
    out = tmp_path / "out"
    line = one_line(run_cli(*TINY, "model.channels=100000", f"hydra.run.dir={out}", cwd=tmp_path))
    assert "this run needs at least" in line and "for model.channels" in line, line
    assert not out.exists()
    config = check_overrides([*TINY, f"eval.val_episodes={memory.host_memory() // memory.EPISODE + 1}"])[0]
    mesh, shards = make_mesh(scaled(config).hardware)
    with pytest.raises(ConfigError, match="this run needs at least .* for eval.val_episodes"):
        memory.check_memory(config, mesh, shards)


@pytest.mark.parametrize("point", ["table3-v3-8-c64-w10", "table1-v3-8-1shot", "table7-v3-8-p1024-w10-lr1e-2"])
def test_the_papers_configurations_pass_the_memory_check_in_well_under_a_second(point):
    config = check_overrides([f"point={point}", "scale=paper"])[0]
    mesh, shards = make_mesh(scaled(config).hardware)
    start = time.perf_counter()
    memory.check_memory(config, mesh, shards)
    assert time.perf_counter() - start < 2.0


def test_the_memory_formula_is_a_lower_bound_within_a_small_factor_of_xlas_analysis():
    """The formula (`memory.needs`) against XLA's compiled memory analysis of the real training step and evaluator:
    never above it (it must not refuse what fits), within a small factor of it (it must catch what does not)."""
    config = check_overrides([*TINY, "model.channels=32", "estimator=wsr", "estimator.pop_per_shard=16",
                              "estimator.eval_mode=vmap", "estimator.chunk_size=8", "eval.test_episodes=200000",
                              "logger=none"])[0]
    run, classes = scaled(config), 30
    t, s, c = run.task, config.data.image_size, config.model.channels
    images = jnp.zeros((classes, IMAGES_PER_CLASS, s, s), jnp.uint8)
    need = memory.needs(config, shards=1, devices=1, platform="cpu")
    params = init_params(jax.random.key(0), c, s)
    train_metrics, eval_metrics = metrics_fn(config, t.train_way), metrics_fn(config, t.test_way, evaluation=True)
    estimate = make_estimator(run.estimator, config.sigma, lambda p, ep: train_metrics(p, ep)[0], None, 1)
    optimizer = make_optimizer(config.alpha, run.estimator)
    sample = partial(sample_episode, images=images, way=t.train_way, shot=t.shot, query=t.query)
    step = make_train_step(estimate, optimizer, sample, train_metrics, update_running).lower(
        params, optimizer.init(params), init_batch_stats(params), jax.random.key(1)).compile()
    xla_step = memory.compiled_bytes(step) - images.size  # the formula counts every split's images apart
    assert need.state + need.step <= xla_step <= 4 * (need.state + need.step), (need, xla_step)

    n = config.eval.test_episodes
    keys = jax.jit(episode_keys, static_argnums=1).lower(jax.random.key(2), n).compile()
    test = make_evaluator(images, episode_keys(jax.random.key(2), n), t.test_way, t.test_shot, t.test_query,
                          eval_metrics).lower(params, init_batch_stats(params)).compile()
    xla_test = max(memory.compiled_bytes(keys), memory.compiled_bytes(test) - images.size)
    assert need.test <= xla_test <= 2 * need.test, (need, xla_test)
