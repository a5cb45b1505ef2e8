"""What a command costs before it runs: the arithmetic of a job's time, and `--dry-run --estimate` on the CLI."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from esmeta.config import Config
from esmeta.cost import Rates, estimate, shape_key, time_steps

TINY = ["estimator=wsr", "estimator.pop_per_shard=4", "model.channels=4", "task.train_way=5", "task.shot=1",
        "task.query=2", "task.test_query=2", "train.epochs=2", "train.episodes_per_epoch=3", "eval.test_episodes=4",
        "logger=none"]


def test_a_jobs_time_is_compile_plus_its_steps_plus_its_evaluation_episodes():
    rates = Rates(compile_s=10.0, step_s=0.5, eval_episode_s=0.01)
    paper = estimate(Config(), rates)  # 200 x 100 episodes, 1 validation episode an epoch, 200 test episodes
    assert paper.episodes == 20_000 and paper.train_s == 10_000.0
    assert paper.eval_s == pytest.approx((200 + 200) * 0.01) and paper.seconds == pytest.approx(10_014.0)
    # a one-minute budget, checked after each epoch of 50.01 s: the second epoch is the first past it
    budgeted = dataclasses.replace(Config(), train=dataclasses.replace(Config().train, max_minutes=1.0))
    assert estimate(budgeted, rates).episodes == 200


def test_the_steps_compilation_is_warm_up_not_a_step():
    """The step compiles at its first call; timed among the steps, it would make the median of two steps their
    mean (when the step compiled at its second call too: 9 s expected a step, 3.3 s measured)."""
    seconds = [20.0, 1.0, 1.2, 0.9, 1.1, 1.0]
    calls: list[int] = []

    def step(i: int) -> float:
        calls.append(i)
        return seconds[i]

    warmup, step_s = time_steps(step, min_steps=2, max_steps=5, seconds=2.0)
    assert calls == [0, 1, 2] and warmup == 20.0 and step_s == pytest.approx(1.1)


def test_jobs_that_differ_only_in_values_share_a_shape():
    base = Config()
    other = dataclasses.replace(base, alpha=5.0, seed=3)
    wider = dataclasses.replace(base, model=dataclasses.replace(base.model, channels=32))
    assert shape_key(base) == shape_key(other) != shape_key(wider)


def test_dry_run_estimate_prints_each_jobs_time_and_the_total_measuring_each_shape_once(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "esmeta.run", "--dry-run", "--estimate", "-m", *TINY, "alpha=1,2",
                           f"hydra.sweep.dir={tmp_path / 'sweep'}"], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = re.findall(r"expected: (.+) here \(compile .+, 6 training episodes .+, evaluation .+\)", proc.stdout)
    assert len(expected) == 2, proc.stdout
    assert re.search(r"expected in all: .+ of compute, one job at a time, on this machine \(\d+ cores, .+, "
                     r"matmul \d+ GFLOP/s\)", proc.stdout), proc.stdout
    assert proc.stderr.count("measuring a job shape") == 1  # alpha changes no shape
    assert not (tmp_path / "sweep").exists()  # nothing written
