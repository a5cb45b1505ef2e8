"""The compare table: groups of any runs by the settings in which they differ (analysis/compare.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_table, main, varying_settings
from analysis.load import load_results

from .conftest import run_config


def test_groups_by_the_varying_settings_and_averages_over_seeds_only(results_dir: Path, make_run) -> None:
    make_run("a1s0", estimator="wsr", alpha=1, accuracy=0.80, seed=0, val_curve=[0.5, 0.7])
    make_run("a1s1", estimator="wsr", alpha=1, accuracy=0.90, seed=1, val_curve=[0.5, 0.9])
    make_run("a10s0", estimator="wsr", alpha=10, accuracy=0.60, accuracy_std=0.05, seed=0)
    make_run("fd", estimator="finite_diff", alpha=10, accuracy=0.70, seed=0)
    table = compare_table(load_results(results_dir))
    # estimator and alpha vary; the optimizer follows from the estimator and the seed is averaged over
    assert list(table.columns[:2]) == ["alpha", "estimator"]
    assert "estimator.optimizer" not in table.columns and "seed" not in table.columns and "budget" not in table.columns
    rows = {(r["alpha"], r["estimator"]): r for _, r in table.iterrows()}
    pair = rows[("1", "wsr")]
    assert pair["runs"] == 2 and pair["test accuracy"] == f"0.850 ± {np.std([0.8, 0.9], ddof=1):.3f}"
    assert pair["best val accuracy"] == "0.800"  # mean of the seeds' best (0.7, 0.9)
    assert rows[("10", "wsr")]["test accuracy"] == "0.600 ± 0.050"  # one seed: its std over test episodes
    assert rows[("10", "finite_diff")]["runs"] == 1 and len(table) == 3


def test_runs_of_different_budgets_are_never_one_group(results_dir: Path, make_run) -> None:
    make_run("full", accuracy=0.9, episodes=20000)
    make_run("short", accuracy=0.5, seed=1, episodes=600)
    table = compare_table(load_results(results_dir))
    assert len(table) == 2 and sorted(table["test accuracy"]) == ["0.500 ± 0.010", "0.900 ± 0.010"]
    assert {b.split(" trained")[0] for b in table["budget"]} == {"20,000 episodes", "600 episodes"}


def test_a_run_in_progress_is_listed_with_its_episodes_never_averaged(results_dir: Path, make_run) -> None:
    from esmeta import checkpoint

    make_run("finished", alpha=10, sigma=0.1, accuracy=0.9)
    going = results_dir / "going"
    going.mkdir()
    checkpoint.save(going / "checkpoint.msgpack", {"w": np.zeros(3, np.float32)},
                    checkpoint.Progress(step=2900), run_config(alpha=10, sigma=0.1, seed=1))
    table = compare_table(load_results(results_dir))
    assert list(table["test accuracy"]) == ["0.900 ± 0.010", "in progress"]
    assert table["episodes"].iloc[1] == "2,900 of 20,000" and table["runs"].iloc[1] == 0


def test_one_varying_setting_is_one_column() -> None:
    runs = pd.DataFrame({"config.alpha": [1.0, 2.0], "config.seed": [0, 1], "config.data.root": ["a", "b"]})
    assert varying_settings(runs) == ["alpha"]


def test_the_command_writes_markdown_and_csv(results_dir: Path, make_run, tmp_path: Path, capsys) -> None:
    make_run("a", alpha=1, accuracy=0.8)
    make_run("b", alpha=10, accuracy=0.6)
    assert main(["--results", str(results_dir), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "| alpha" in printed and "0.800 ± 0.010" in printed
    csv = pd.read_csv(tmp_path / "out" / "compare.csv")
    assert list(csv["alpha"]) == [1, 10] and (tmp_path / "out" / "compare.md").read_text() == printed


@pytest.mark.parametrize("args, message", [
    ([], "--results DIR is required"),
    (["--results", "/no/such/dir"], "no such directory"),
])
def test_bad_input_is_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(Path(__file__).parents[2] / "analysis" / "compare.py"), *args],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.startswith("compare: error: ") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_two_searched_values_are_two_columns_though_each_decides_the_other() -> None:
    runs = pd.DataFrame({"config.alpha": [1.0, 2.0], "config.sigma": [0.1, 0.2], "config.estimator.name": ["wsr"] * 2})
    assert varying_settings(runs) == ["alpha", "sigma"]


def test_runs_recorded_by_older_esmeta_differ_only_where_their_experiments_do(results_dir: Path, make_run) -> None:
    """An old summary recorded every estimator's settings and no learner; today's, only its estimator's and a
    learner section. Two backprop runs of the same experiment are one group; a changed alpha is still a column."""
    import json

    make_run("old", estimator="backprop", accuracy=0.98, seed=0)  # pop_per_shard, fd_sigma, ... recorded, no learner
    new = make_run("new", estimator="backprop", accuracy=0.96, seed=1)
    summary = json.loads((new / "summary.json").read_text())
    summary["config"]["estimator"] = {"name": "backprop", "optimizer": "adam"}
    summary["config"]["learner"] = {"name": "protonet"}
    (new / "summary.json").write_text(json.dumps(summary))
    results = load_results(results_dir)
    assert results.runs["config.estimator.pop_per_shard"].isna().tolist() == [True, False]  # as recorded: they differ
    table = compare_table(results)
    assert len(table) == 1 and table["runs"].iloc[0] == 2 and "learner" not in table.columns
    assert not any(c.startswith("estimator") for c in table.columns)
    make_run("faster", estimator="backprop", alpha=10, accuracy=0.5)
    assert list(compare_table(load_results(results_dir)).columns[:1]) == ["alpha"]
