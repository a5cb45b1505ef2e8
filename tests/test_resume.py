"""Checkpoints and resumption: a run killed with SIGKILL mid-epoch and resumed ends exactly like an uninterrupted one."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esmeta import checkpoint
from esmeta.checkpoint import config_difference
from esmeta.errors import ConfigError
from esmeta.run_dir import read_metrics, read_summary

pytestmark = pytest.mark.codegen_independent

EPISODES_PER_EPOCH = 60
CHECKPOINT_EVERY = 7
WSR_RUN = [
    "estimator=wsr", "estimator.pop_per_shard=6", "hardware=tpu-v3-8",  # 8 logical shards on one CPU
    "task.train_way=5", "task.shot=1", "task.query=2", "task.test_query=5", "model.channels=8",
    "train.epochs=3", f"train.episodes_per_epoch={EPISODES_PER_EPOCH}", f"train.checkpoint_every={CHECKPOINT_EVERY}",
    "eval.val_episodes=3", "eval.test_episodes=20", "logger=none",
]


def command(run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "esmeta.run", *WSR_RUN, *extra, f"hydra.run.dir={run_dir}"]


def checkpoint_step(run_dir: Path) -> int | None:
    """Episodes done according to the run's checkpoint (None while there is none)."""
    try:
        return checkpoint.read(run_dir / "checkpoint.msgpack").progress.step
    except ConfigError:  # not there (yet)
        return None


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, omniglot32) -> Path:
    run_dir = tmp_path_factory.mktemp("straight") / "run"
    proc = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=600, cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory, omniglot32) -> tuple[Path, int]:
    """The same run, SIGKILLed right after a checkpoint that falls inside an epoch, then rerun as is."""
    run_dir = tmp_path_factory.mktemp("killed") / "run"
    proc = subprocess.Popen(command(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=run_dir.parent)
    killed_at = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        step = checkpoint_step(run_dir)
        if step is not None and step > EPISODES_PER_EPOCH and step % EPISODES_PER_EPOCH:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.005)
    proc.wait(timeout=60)
    assert killed_at is not None, f"the run ended (rc {proc.returncode}) before it could be killed mid-epoch"
    # What a killed run leaves behind never looks complete.
    assert not (run_dir / "done").exists() and not (run_dir / "summary.json").exists()
    resumed = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=600, cwd=run_dir.parent)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return run_dir, killed_at


def test_killed_then_resumed_run_ends_with_the_same_summary(uninterrupted, killed_and_resumed):
    run_dir, killed_at = killed_and_resumed
    assert EPISODES_PER_EPOCH < killed_at < 3 * EPISODES_PER_EPOCH and killed_at % CHECKPOINT_EVERY == 0
    a, b = read_summary(uninterrupted), read_summary(run_dir)
    assert b["resumed"] is True and a["resumed"] is False
    for key in ("status", "episodes", "test_accuracy", "test_accuracy_std", "best_val_accuracy",
                "final_val_accuracy", "population", "shards"):
        # exact by construction, on any CPU: both runs are this machine running one program on the same
        # episodes and candidates in the same order, so every float32 rounding repeats
        assert a[key] == b[key], key
    assert (uninterrupted / "params.msgpack").read_bytes() == (run_dir / "params.msgpack").read_bytes()
    assert not (run_dir / "checkpoint.msgpack").exists()  # a finished run keeps params + summary only


def test_resumed_metrics_have_each_epoch_once_with_the_same_values(uninterrupted, killed_and_resumed):
    run_dir, killed_at = killed_and_resumed
    timing = {"wall_time_s", "es/candidates_per_s", "train/episodes_per_s"}
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    straight, resumed = list(read_metrics(uninterrupted)), list(read_metrics(run_dir))
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    total = 3 * EPISODES_PER_EPOCH
    log = (run_dir / "run.log").read_text()  # the killed run's lines, then the resumed run's (Hydra appends)
    lines = re.findall(rf"\[esmeta\.train\]\[INFO\] - resumed from episode (\d+)/{total} \(epoch (\d), from .+\)", log)
    assert len(lines) == 1, log
    # The checkpoint the kill left: the one read just before it (or, at worst, the next one a step later).
    step, epoch = int(lines[0][0]), int(lines[0][1])
    assert killed_at <= step < total and step % CHECKPOINT_EVERY == 0 and epoch == step // EPISODES_PER_EPOCH
    after = log[log.index("resumed from episode"):]  # the resumed run logs only the epochs it finishes, then the result
    done = range(epoch + 1, 4)
    assert [int(e) for e in re.findall(r"\] - epoch (\d)/3 \| episode", after)] == list(done)
    assert "resumed from" not in (uninterrupted / "run.log").read_text()
    assert after.count("test accuracy") == 1
    assert strip(resumed) == strip(straight)


def test_rerunning_a_finished_run_keeps_it(uninterrupted):
    before = (uninterrupted / "summary.json").read_bytes()
    proc = subprocess.run(command(uninterrupted), capture_output=True, text=True, timeout=600,
                          cwd=uninterrupted.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (uninterrupted / "summary.json").read_bytes() == before
    assert "already holds this finished run" in proc.stderr + proc.stdout


def test_resuming_with_another_configuration_is_refused_in_one_line(uninterrupted):
    proc = subprocess.run(command(uninterrupted, "alpha=2"), capture_output=True, text=True, timeout=600,
                          cwd=uninterrupted.parent)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "alpha: 1.0 -> 2.0" in lines[0] and "train.resume=false" in lines[0]


def test_config_difference_ignores_settings_that_do_not_change_the_math():
    saved = {"alpha": 1.0, "train": {"epochs": 3, "progress": "on", "max_minutes": 0.0}, "logger": {"name": "wandb"}}
    same = {"alpha": 1.0, "train": {"epochs": 3, "progress": "off", "max_minutes": 45.0}, "logger": {"name": "none"}}
    assert config_difference(saved, same) is None
    assert config_difference(saved, {**same, "train": {**same["train"], "epochs": 4}}) == "train.epochs: 3 -> 4"


def _stop_after_checkpoint(run_dir: Path, signum: int, after: int) -> tuple[subprocess.CompletedProcess, int]:
    """Start the run, send `signum` once its checkpoint is past episode `after`; (the ended process, that step)."""
    proc = subprocess.Popen(command(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            cwd=run_dir.parent)
    deadline, sent = time.monotonic() + 600, None
    while time.monotonic() < deadline and proc.poll() is None:
        step = checkpoint_step(run_dir)
        if step is not None and step > after:
            os.kill(proc.pid, signum)
            sent = step
            break
        time.sleep(0.005)
    _, stderr = proc.communicate(timeout=120)
    assert sent is not None, f"the run ended (rc {proc.returncode}) before it could be stopped: {stderr[-2000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr), sent


def test_ctrl_c_and_sigterm_stop_in_one_line_and_the_run_continues_bit_identically(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    step = 0
    for signum in (signal.SIGINT, signal.SIGTERM):
        proc, sent = _stop_after_checkpoint(run_dir, signum, after=step)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 128 + signum and len(lines) == 1, proc.stderr[-3000:]
        assert f"stopped by {signal.Signals(signum).name}, not finished" in lines[0], lines[0]
        assert f"continue with: python -m esmeta.run {WSR_RUN[0]}" in lines[0] and f"hydra.run.dir={run_dir}" in lines[0]
        # the step in progress finished and was checkpointed: the checkpoint is where the run stood, never a result
        step = checkpoint_step(run_dir)
        assert step is not None and sent <= step < 3 * EPISODES_PER_EPOCH and f"at episode {step} of 180" in lines[0]
        assert not (run_dir / "done").exists() and not (run_dir / "summary.json").exists()
    proc = subprocess.run(command(run_dir), capture_output=True, text=True, timeout=600, cwd=run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (uninterrupted / "params.msgpack").read_bytes() == (run_dir / "params.msgpack").read_bytes()
    summary = read_summary(run_dir)
    segments = summary["segments"]  # one per process that trained it, end to end
    assert [s["start_episode"] for s in segments][0] == 0 and segments[-1]["end_episode"] == 3 * EPISODES_PER_EPOCH
    assert all(a["end_episode"] == b["start_episode"] for a, b in zip(segments, segments[1:])) and len(segments) == 3
    assert summary["cpu_seconds"] == pytest.approx(sum(s["cpu_s"] for s in segments), abs=0.2)


def test_allocation_end_and_a_larger_time_budget_continue_a_run_to_the_uninterrupted_result(uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    # a time budget spent within the first epoch: the run finishes at episode 60, stopped_by_budget, checkpoint kept
    first = subprocess.run(command(run_dir, "train.max_minutes=0.001"), capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    budgeted = read_summary(run_dir)
    assert budgeted["stopped_by_budget"] is True and budgeted["episodes"] == EPISODES_PER_EPOCH
    assert checkpoint_step(run_dir) == EPISODES_PER_EPOCH
    # the same budget again keeps it as it is
    again = subprocess.run(command(run_dir, "train.max_minutes=0.001"), capture_output=True, text=True, timeout=600,
                           cwd=tmp_path)
    assert again.returncode == 0 and read_summary(run_dir) == budgeted, again.stderr[-3000:]
    # no budget, but an allocation that ends at once: one more episode, then a checkpoint, exit 3, not finished
    stopped = subprocess.run(command(run_dir, "train.max_minutes=0", "train.allocation_minutes=0.0001"),
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    lines = [line for line in stopped.stderr.splitlines() if line.strip()]
    assert stopped.returncode == 3 and len(lines) == 1, stopped.stderr[-3000:]
    assert "stopped by train.allocation_minutes=0.0001 reached, not finished (at episode 61 of 180" in lines[0]
    assert not (run_dir / "done").exists() and checkpoint_step(run_dir) == EPISODES_PER_EPOCH + 1
    # the next allocation finishes it, to the uninterrupted run's parameters and summary
    last = subprocess.run(command(run_dir, "train.max_minutes=0"), capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert last.returncode == 0, last.stderr[-3000:]
    assert (uninterrupted / "params.msgpack").read_bytes() == (run_dir / "params.msgpack").read_bytes()
    final, straight = read_summary(run_dir), read_summary(uninterrupted)
    assert final["stopped_by_budget"] is False and not (run_dir / "checkpoint.msgpack").exists()
    for key in ("episodes", "test_accuracy", "best_val_accuracy", "final_val_accuracy"):
        assert final[key] == straight[key], key
    assert [s["end_episode"] for s in final["segments"]] == [60, 61, 180]


def test_a_setting_added_after_a_checkpoint_compares_as_its_default():
    """Runs in progress stay resumable when esmeta gains a setting: their configs lack it, and had its default's
    behaviour; a value other than the default is still a different run."""
    from esmeta.config import Config
    from esmeta.estimators import WsrConfig

    current = Config(estimator=WsrConfig()).to_dict()
    saved = {**current, "estimator": {k: v for k, v in current["estimator"].items() if k != "antithetic"}}
    assert config_difference(saved, current) is None  # written before estimator.antithetic existed; its default
    changed = {**current, "estimator": {**current["estimator"], "antithetic": not current["estimator"]["antithetic"]}}
    assert config_difference(saved, changed) == "estimator.antithetic: False -> True"


def test_ctrl_c_in_a_multirun_stops_the_sweep_in_one_line_and_the_same_command_continues_it(tmp_path):
    sweep = tmp_path / "sweep"
    argv = [sys.executable, "-m", "esmeta.run", "-m", *WSR_RUN, "seed=0,1", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    def first_job_checkpointed() -> bool:
        return any(checkpoint_step(job) is not None for job in sweep.glob("0_*"))

    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not first_job_checkpointed():
        time.sleep(0.01)
    assert proc.poll() is None, "the sweep ended before it could be stopped"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert proc.returncode == 130 and len(lines) == 1, stderr[-3000:]
    assert "stopped by SIGINT, not finished (at episode" in lines[0] and f"hydra.sweep.dir={sweep}" in lines[0]
    assert not list(sweep.glob("1_*"))  # the sweep stopped: its next job never started
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    jobs = sorted(sweep.glob("[01]_*"))
    assert len(jobs) == 2 and all(read_summary(job)["episodes"] == 3 * EPISODES_PER_EPOCH for job in jobs)


# Configs as esmeta recorded them before each estimator had its own section (every estimator's settings in one flat
# `estimator` group): a Table I backprop run's checkpoint (results/paper, in progress) and a CPU-scale wsr summary.
OLD_ESTIMATOR_SECTION = {
    "antithetic": False, "central": False, "chunk_size": 0, "eval_mode": "auto", "fd_reduce": "sum",
    "fd_rescale_subset": False, "fd_sigma": 0.001, "fitness_precision": "highest", "fitness_shaping": "zscore",
    "lr_decay_every": 2000, "lr_decay_factor": 0.5, "name": "backprop", "normalize": "per_shard", "optimizer": "adam",
    "pop_per_shard": 1, "rank": 0, "shard_episodes": "shared", "weight_decay": 0.0,
}
OLD_BACKPROP = {
    "alpha": 0.001, "seed": 0, "sigma": 0.01,
    "data": {"cache_dir": "/work/cache", "download": True, "image_size": 32, "resize_filter": "antialias",
             "root": "/work/shared/data/omniglot", "split": "paper", "split_seed": 0},
    "distance": {"name": "euclidean", "scale": 1.0},
    "estimator": OLD_ESTIMATOR_SECTION,
    "eval": {"seed": 2021, "test_episodes": 200, "val_episodes": 1},
    "hardware": {"compilation_cache": True, "cpu_devices": 0, "devices": 1, "name": "cpu", "platform": "cpu",
                 "processes": 1, "shards": 1},
    "logger": {"entity": None, "group": None, "name": "wandb", "project": "esmeta"},
    "model": {"channels": 64, "norm_stats": "running"},
    "scale": {"max_pop_per_shard": 0, "max_population": 0, "max_shards": 0, "name": "paper"},
    "task": {"query": 5, "shot": 5, "test_query": 15, "test_shot": 5, "test_way": 5, "train_way": 20},
    "train": {"allocation_minutes": 158.0, "budget_clock": "wall", "checkpoint_every": 100, "episodes_per_epoch": 100,
              "epochs": 200, "max_minutes": 0.0, "progress": "auto", "resume": True},
}
OLD_WSR = {  # recorded before train.allocation_minutes and estimator.shard_episodes existed
    **OLD_BACKPROP, "alpha": 10.0, "sigma": 0.1,
    "estimator": {**{k: v for k, v in OLD_ESTIMATOR_SECTION.items() if k != "shard_episodes"}, "name": "wsr",
                  "optimizer": "sgd", "lr_decay_every": 0, "pop_per_shard": 64},
    "eval": {"seed": 2021, "test_episodes": 200, "val_episodes": 5},
    "hardware": {"compilation_cache": True, "cpu_devices": 0, "devices": 0, "name": "tpu-v3-256", "platform": "any",
                 "processes": 1, "shards": 256},
    "model": {"channels": 16, "norm_stats": "running"},
    "scale": {"max_pop_per_shard": 0, "max_population": 4096, "max_shards": 0, "name": "cpu"},
    "train": {"budget_clock": "cpu", "checkpoint_every": 100, "episodes_per_epoch": 20, "epochs": 1000,
              "max_minutes": 6.0, "progress": "auto", "resume": True},
}


@pytest.mark.parametrize("recorded, command", [
    (OLD_BACKPROP, ["point=table1-backprop-5shot"]),
    (OLD_WSR, ["point=table1-v3-256-5shot", "scale=cpu"]),
])
def test_a_config_recorded_with_every_estimators_settings_is_the_same_run_as_todays(recorded, command, tmp_path):
    """Runs in progress recorded the flat estimator section; the same command today continues them, and a changed
    setting of their own estimator is still a different run."""
    from esmeta.checkpoint import check_same_run
    from esmeta.errors import ConfigError
    from esmeta.prelaunch import check_overrides

    (config,) = check_overrides(command)
    check_same_run(recorded, config.to_dict(), tmp_path, "a checkpoint")  # no error: the same run
    changed = {**recorded, "estimator": {**recorded["estimator"], "lr_decay_factor": 0.25}}
    with pytest.raises(ConfigError, match=r"estimator\.lr_decay_factor: 0\.25 -> 0\.5"):
        check_same_run(changed, config.to_dict(), tmp_path, "a checkpoint")
