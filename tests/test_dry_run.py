"""What a command means before it runs: the dry run lists every job (overrides, directory, differences) as
Hydra will launch it, and the pre-launch check validates the whole product, not only each value."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from esmeta.prelaunch import plan_jobs

pytestmark = pytest.mark.codegen_independent


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esmeta.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_dry_run_names_the_directories_the_real_sweep_wrote(table2_smoke_sweep: Path, tmp_path: Path):
    proc = run_cli("--dry-run", "sweep=table2", "scale=smoke", f"hydra.sweep.dir={table2_smoke_sweep}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == f"dry run: 4 jobs -> {table2_smoke_sweep} (nothing runs, nothing is written)"
    listed = [line.split("writes to ", 1)[1] for line in lines if "writes to " in line]
    assert listed == [str(p.parent) for p in sorted(table2_smoke_sweep.glob("*/done"), key=lambda p: p.parent.name)]
    assert lines[1] == "#0 point=table2-a0.1-s0.001 sweep=table2 scale=smoke"
    differs = [line for line in lines if "differs from the defaults" in line]
    assert "alpha=0.1 sigma=0.001" in differs[0] and "estimator.name=wsr" in differs[0]
    assert "train.epochs=2 " in differs[0]  # the smoke budget
    assert "alpha=25.0 sigma=0.25" in differs[3]


def test_the_dry_run_writes_nothing_and_runs_nothing(tmp_path: Path):
    proc = run_cli("--dry-run", "-m", "estimator=wsr,finite_diff", "alpha=1,10", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("dry run: 4 jobs -> multirun/")
    assert [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("#")] == [
        "estimator=wsr alpha=1", "estimator=wsr alpha=10", "estimator=finite_diff alpha=1",
        "estimator=finite_diff alpha=10"]  # Hydra's order: the product over the keys as given
    differs = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if "differs from the defaults" in line]
    assert differs[:2] == ["estimator.name=wsr", "estimator.name=wsr alpha=10.0"]  # against wsr's own defaults (alpha 1)
    assert not any(tmp_path.iterdir())


def test_a_maml_dry_run_names_its_learner_against_that_learners_defaults(tmp_path: Path):
    proc = run_cli("--dry-run", "-m", "learner=maml", "estimator=first_order,wsr", "learner.inner_steps=5",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    differs = [line.split(": ", 1)[1] for line in proc.stdout.splitlines() if "differs from the defaults" in line]
    assert differs == [f"estimator.name={name} learner.name=maml learner.inner_steps=5" for name in ("first_order", "wsr")]


def test_a_bad_combination_is_refused_before_anything_runs(tmp_path: Path):
    """Each value is fine alone (finite_diff probes 1 coordinate a shard; wsr takes 4): only (wsr, 1) is not."""
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", "estimator=finite_diff,wsr", "estimator.pop_per_shard=4,1", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("esmeta: error: job 3 (estimator=wsr estimator.pop_per_shard=1): ")
    assert "estimator.pop_per_shard=1 must be at least 2" in lines[0]
    assert not sweep.exists()


def test_jobs_composed_once_per_group_choice_equal_jobs_composed_alone():
    """The check composes once per set of config-group choices and sets plain values on it: the same configs
    as composing each job by itself."""
    plan = plan_jobs(["estimator=wsr,finite_diff", "alpha=1,10", "task=5way_1shot,10way_5shot",
                      "model.channels=8,16", "point=table2-a1-s0.01", "sigma=0.5"], multirun=True)
    assert plan.complete and plan.total == len(plan.jobs) == 16
    for job in plan.jobs:
        (alone,) = plan_jobs(list(job.overrides)).jobs
        assert alone.config == job.config, job.overrides
    assert {j.config.alpha for j in plan.jobs} == {1, 10} and {j.config.sigma for j in plan.jobs} == {0.5}


def test_past_the_product_limit_each_value_is_checked_once(monkeypatch):
    import esmeta.sweep_expansion

    monkeypatch.setattr(esmeta.sweep_expansion, "PRODUCT_LIMIT", 3)
    plan = plan_jobs(["alpha=1,2,3", "seed=0,1"], multirun=True)
    assert (plan.complete, plan.total) == (False, 6)
    assert [j.overrides for j in plan.jobs] == [("alpha=1", "seed=0"), ("alpha=2", "seed=0"), ("alpha=3", "seed=0"),
                                                ("alpha=1", "seed=1")]
