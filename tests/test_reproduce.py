"""The full-budget queue (esmeta.reproduce): which run is next, what each has reached, runs continued in order
across allocations, stopped cleanly by SIGTERM, and committed to git without their W&B folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from esmeta.reproduce import QUEUE, State, load_queue, main, status

pytestmark = pytest.mark.codegen_independent

# Tiny runs of a real point: a 4-channel backprop ProtoNet, 400 episodes (a few seconds), so that a SIGTERM lands
# mid-run; logger=none keeps W&B out of the way, the commit test checks its folder separately.
TINY = ["scale=smoke", "model.channels=4", "train.episodes_per_epoch=200", "eval.val_episodes=1",
        "eval.test_episodes=4", "logger=none"]


def write_queue(folder: Path, runs: str) -> Path:
    path = folder / "queue.yaml"
    path.write_text(f"results: {folder / 'results'}\nruns:\n{runs}")
    return path


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_the_shipped_queue_names_real_points_each_once():
    entries = load_queue(Path(__file__).parents[1] / QUEUE)
    assert entries[0].point == "table1-backprop-1shot" and entries[0].directory.name == "seed0"
    assert len({e.directory for e in entries}) == len(entries)


def test_a_run_in_progress_shows_its_last_epoch_and_the_hours_left_at_its_pace():
    state = State("in progress", 100, 400, 7200.0, ["abc1234"],
                  last={"train/loss": 0.5, "val/accuracy": 0.9, "train/episodes_per_s": 0.1})
    assert state.describe() == ("in progress: episode 100 of 400; 2.0 CPU-h (abc1234) so far; last epoch: train loss "
                                "0.500, val 0.900, 0.10 episodes/s, about 0.8 h left at that pace")  # 300 episodes / 0.1
    assert State("not started").describe() == "not started"


@pytest.mark.parametrize("text, says", [
    (None, "no queue file"),
    ("runs: [", "not valid YAML"),
    ("runs: []", "lists no runs"),
    ("runs:\n  - {point: table9-nothing, seed: 0}", "no point 'table9-nothing'"),
    ("runs:\n  - {point: table1-backprop-1shot, seed: -1}", "seed must be a non-negative integer"),
    ("runs:\n  - {point: table1-backprop-1shot, seed: 0}\n  - {point: table1-backprop-1shot}", "listed twice"),
])
def test_a_bad_queue_file_is_one_line_and_exit_2(tmp_path, capsys, text, says):
    path = tmp_path / "queue.yaml"
    if text is not None:
        path.write_text(text)
    assert main(["status", "--queue", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err and "Traceback" not in err


def test_continue_needs_minutes_and_starts_nothing_it_cannot_finish_a_step_of(tmp_path, capsys):
    queue = write_queue(tmp_path, "  - {point: table1-backprop-1shot, seed: 0}\n")
    assert main(["continue", "--queue", str(queue)]) == 2
    assert "continue needs --minutes" in capsys.readouterr().err
    assert main(["continue", "--queue", str(queue), "--minutes", "3", "--min-minutes", "5"]) == 3  # the allocation's end
    assert "waits for the next allocation" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


def test_runs_continue_in_order_across_allocations_and_are_committed(tmp_path, omniglot32):
    """Allocation 1 is ended by SIGTERM mid-run: the run checkpoints, is committed, the command exits 143.
    Allocation 2 finishes it and the next run: both committed as finished, checkpoints gone, no W&B folder."""
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "test@example.com")
    git(tmp_path, "config", "user.name", "test")
    overrides = "[" + ", ".join(TINY) + "]"
    queue = write_queue(tmp_path, f"  - {{point: table1-backprop-1shot, seed: 0, overrides: {overrides}}}\n"
                                  f"  - {{point: table1-backprop-1shot, seed: 1, overrides: {overrides}}}\n")
    first = tmp_path / "results" / "table1-backprop-1shot" / "seed0"
    (first / "wandb").mkdir(parents=True)  # what a run's W&B folder would be: never committed
    (first / "wandb" / "run.wandb").write_text("x")
    command = [sys.executable, "-m", "esmeta.reproduce", "continue", "--queue", str(queue), "--minutes", "30",
               "--commit-every", "30"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    allocation = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
    deadline = time.monotonic() + 300
    while "compiled and ran the first step" not in _read(first / "run.log") and allocation.poll() is None:
        assert time.monotonic() < deadline, "the run never started training"
        time.sleep(0.1)
    allocation.send_signal(signal.SIGTERM)
    out = allocation.communicate(timeout=300)[0]
    assert allocation.returncode == 128 + signal.SIGTERM, out[-2000:]
    assert "(SIGTERM, by esmeta.reproduce)" in git(tmp_path, "log", "-1", "--format=%s")
    committed = git(tmp_path, "ls-files").split()
    assert "results/table1-backprop-1shot/seed0/checkpoint.msgpack" in committed
    assert not any("wandb" in path for path in committed)

    lines = status(load_queue(queue)).splitlines()
    assert "seed 0  in progress: episode" in lines[0] and "of 400" in lines[0] and lines[0].endswith("<- next")
    assert lines[1].endswith("seed 1  not started")

    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "every run in the queue is finished" in done.stderr
    subjects = git(tmp_path, "log", "--format=%s").splitlines()
    assert subjects[:2] == ["table1-backprop-1shot seed1: finished, 400 episodes (finished, by esmeta.reproduce)",
                            "table1-backprop-1shot seed0: finished, 400 episodes (finished, by esmeta.reproduce)"]
    committed = git(tmp_path, "ls-files").split()
    for seed in (0, 1):
        assert f"results/table1-backprop-1shot/seed{seed}/done" in committed
        assert f"results/table1-backprop-1shot/seed{seed}/checkpoint.msgpack" not in committed
    untracked = {line[3:] for line in git(tmp_path, "status", "--porcelain", "--", "results").splitlines()}
    assert untracked == {"results/table1-backprop-1shot/seed0/wandb/", "results/table1-backprop-1shot/seed0/.esmeta.lock",
                         "results/table1-backprop-1shot/seed1/.esmeta.lock"}  # the writers' locks, kept, never committed
    shown = status(load_queue(queue))
    assert shown.count("finished: 400 episodes, test") == 2 and shown.endswith("2 of 2 finished")


def _read(path: Path) -> str:
    return path.read_text() if path.is_file() else ""
