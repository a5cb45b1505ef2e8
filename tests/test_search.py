"""Hyperparameter searches as the paper tuned: Hydra's Optuna sweeper over stored searches (conf/search/), each
trial scored by its best validation accuracy; checked before launch at the bounds of every searched range."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esmeta.errors import ConfigError
from esmeta.prelaunch import check_overrides, plan_jobs
from esmeta.run_dir import read_summary
from esmeta.sweep_expansion import group_options

pytestmark = pytest.mark.codegen_independent

TINY = ("scale=smoke", "train.epochs=2", "train.episodes_per_epoch=3", "model.channels=4", "task.train_way=5",
        "task.shot=1", "task.query=2", "task.test_query=2", "eval.test_episodes=4", "logger=none")


def test_a_stored_search_is_checked_at_the_bounds_of_each_range_before_launch():
    plan = plan_jobs(["search=wsr_alpha_sigma"])
    assert plan.multirun and plan.search and not plan.complete and plan.total == 20  # n_trials
    checked = {(job.config.alpha, job.config.sigma) for job in plan.jobs}
    assert {a for a, _ in checked} == {0.1, 25.0} and {s for _, s in checked} == {0.001, 0.25}
    assert {job.config.estimator.name for job in plan.jobs} == {"wsr"}
    assert plan.out.parent.name == "search_wsr_alpha_sigma_paper"  # a search writes apart, timestamped


@pytest.mark.parametrize("overrides, message", [
    (["search=wsr_alpha_sigma", "hydra.sweeper.params.sigma=tag(log, interval(-0.1, 0.25))"],
     "sigma=-0.1 must be positive"),
    (["search=fd_lr", "alpha=tag(log, interval(0.001, -1))"], "alpha=-1"),  # the command line's range replaces it
])
def test_a_range_reaching_a_bad_value_is_refused_before_launch(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_overrides(overrides)


def test_a_database_storage_is_refused_before_launch():
    with pytest.raises(ConfigError, match="hydra.sweeper.storage=sqlite:///s.db: a search keeps its study in memory"):
        check_overrides(["search=fd_lr", "hydra.sweeper.storage=sqlite:///s.db"])


def test_an_interval_without_a_search_is_one_clear_error():
    with pytest.raises(ConfigError, match="an interval is sampled by a search, not run as a grid; use a stored search"):
        check_overrides(["alpha=interval(0.1, 1)"], multirun=True)


@pytest.mark.parametrize("name", group_options("search"))
def test_every_search_maximizes_and_names_its_own_study(name):
    """Each search its own study, in memory, from a seeded sampler: nothing of another search is continued."""
    assert len({job.config.estimator.name for job in plan_jobs([f"search={name}"]).jobs}) == 1
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module="esmeta.conf", version_base="1.3"):
        sweeper = compose("config", overrides=[f"search={name}"], return_hydra_config=True).hydra.sweeper
    assert sweeper.direction == "maximize" and sweeper.study_name == name and sweeper.storage is None
    assert sweeper.sampler.seed is not None  # seeded: a rerun asks the same trials


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "esmeta.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=900)


def test_a_tiny_search_maximizes_best_validation_accuracy_and_a_rerun_reuses_only_its_own_trials(tmp_path, omniglot32):
    sweep = tmp_path / "search"
    command = ("search=wsr_alpha_sigma", "hydra.sweeper.n_trials=2", *TINY, f"hydra.sweep.dir={sweep}")
    proc = run_cli(*command, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.glob("*/done"))
    assert len(jobs) == 2 and all("search=wsr_alpha_sigma" in j.name for j in jobs)  # a trial's folder names its search
    summaries = [read_summary(j) for j in jobs]
    found = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    best = max(summaries, key=lambda s: s["best_val_accuracy"])
    assert found["best_value"] == pytest.approx(best["best_val_accuracy"])  # the objective: validation, not test
    assert found["best_params"] == pytest.approx({"alpha": best["alpha"], "sigma": best["config"]["sigma"]})
    table = proc.stdout[proc.stdout.index(f"Runs of {sweep}:"):]  # the compare table ends the multirun
    assert "| alpha" in table and "| sigma" in table and table.count("| 1 ") == 2

    again = run_cli(*command, "hydra/launcher=submitit_local", cwd=tmp_path)  # the same search, each trial a process
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(p.parent for p in sweep.glob("*/done")) == jobs  # the seeded sampler asked the same trials ...
    assert [read_summary(j)["finished_at"] for j in jobs] == [s["finished_at"] for s in summaries]  # ... kept, not retrained
    assert yaml.safe_load((sweep / "optimization_results.yaml").read_text()) == found


def test_a_search_whose_every_trial_failed_ends_in_one_line_not_optunas_traceback(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}  # a GPU asked for where JAX has none: the trial fails at its start
    proc = subprocess.run([sys.executable, "-m", "esmeta.run", "search=fd_lr", "hydra.sweeper.n_trials=1", "scale=smoke",
                           "logger=none", "hardware.platform=gpu", f"hydra.sweep.dir={tmp_path / 's'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("esmeta: error: ")]
    assert len(errors) == 2 and "JAX sees no gpu devices" in errors[0] and "1 of 1 jobs failed" in errors[1]
