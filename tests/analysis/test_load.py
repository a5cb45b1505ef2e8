"""Loading a results tree: a row per complete run, requested config as columns, incomplete runs reported."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from esmeta.analysis.load import load_results

from .conftest import write_run


def test_one_row_per_complete_run_with_requested_config_and_metrics(results_dir: Path, make_run) -> None:
    make_run("table2/0", alpha=1, sigma=0.01, seed=3, accuracy=0.98, accuracy_std=0.012,
              val_curve=[0.5, 0.7])
    make_run("table7/0", estimator="finite_diff", distance="cosine", alpha=5e-3, pop_per_shard=64,
              hardware="tpu-v3-256", train_way=20, accuracy=0.93)
    results = load_results(results_dir)

    runs = results.runs.set_index("run_id")
    assert list(runs.index) == ["table2/0", "table7/0"]
    wsr = runs.loc["table2/0"]
    assert (wsr["estimator"], wsr["hardware"], wsr["tpu"], wsr["seed"]) == ("wsr", "tpu-v3-8", "v3-8", 3)
    assert (wsr["alpha"], wsr["sigma"], wsr["channels"], wsr["distance"]) == (1.0, 0.01, 16, "euclidean")
    assert (wsr["pop_per_shard"], wsr["shards"], wsr["total_pop"]) == (128, 8, 1024)
    assert (wsr["train_way"], wsr["shot"], wsr["test_way"]) == (10, 5, 5)
    assert (wsr["test_accuracy"], wsr["test_accuracy_std"], wsr["status"]) == (0.98, 0.012, "completed")
    assert wsr["config.estimator.optimizer"] == "sgd" and not wsr["config.estimator.antithetic"]  # every leaf
    fd = runs.loc["table7/0"]
    assert fd["sigma"] == 0.001  # the perturbation it recorded using: finite_diff's fd_sigma
    assert (fd["total_pop"], fd["distance"], fd["alpha"]) == (64 * 256, "cosine", 5e-3)


def test_a_record_is_read_as_written_and_an_old_summary_through_the_adapter(results_dir: Path, make_run) -> None:
    """The summary's record decides point, sigma, population and budget; an old summary gets the same fields
    from its config (sigma by its owner, differences from the defaults of its time), never from today's code."""
    new = make_run("new", estimator="finite_diff", optimizer="sgd", max_minutes=6)
    summary = json.loads((new / "summary.json").read_text())
    summary.update(sigma=0.5, point="table7-v3-8-p1024-w10-lr1e-2", population_estimator=False,
                   budget={**summary["budget"], "episodes_requested": 400})
    (new / "summary.json").write_text(json.dumps(summary))
    make_run("old", estimator="finite_diff", optimizer="sgd", max_minutes=6, seed=1, legacy=True)
    runs = load_results(results_dir).runs.set_index("run_id")
    assert (runs.loc["new", "sigma"], runs.loc["new", "point"]) == (0.5, "table7-v3-8-p1024-w10-lr1e-2")
    assert runs.loc["new", "budget"] == "400 episodes requested, at most 6 cpu-clock minutes"
    assert math.isnan(runs.loc["new", "total_pop"])  # as recorded: not a population estimator
    assert runs.loc["old", "sigma"] == 0.001 and runs.loc["old", "total_pop"] == 1024
    assert runs.loc["old", "budget"] == "20,000 episodes requested, at most 6 cpu-clock minutes"
    assert runs.loc["old", "differences"] == {"estimator.optimizer": "sgd"}
    assert runs.loc["new", "differences"]["estimator.optimizer"] == "sgd"


def test_finished_at_comes_from_the_summary_or_the_done_marker(results_dir: Path, make_run) -> None:
    make_run("new", finished_at="2026-11-30T10:00:00+00:00")
    old = make_run("old")  # written before esmeta stamped summaries
    os.utime(old / "done", (1_700_000_000, 1_700_000_000))
    runs = load_results(results_dir).runs.set_index("run_id")
    assert runs.loc["new", "finished_at"] == "2026-11-30T10:00:00+00:00"
    assert runs.loc["old", "finished_at"] == "2023-11-14T22:13:20+00:00"


def test_smoke_runs_keep_the_requested_population_beside_the_effective_one(results_dir: Path, make_run) -> None:
    make_run("smoke/0", hardware="tpu-v3-256", pop_per_shard=64, scale="smoke")
    row = load_results(results_dir).runs.iloc[0]
    assert (row["pop_per_shard"], row["shards"], row["total_pop"]) == (64, 256, 16384)
    assert (row["effective_pop_per_shard"], row["effective_shards"], row["effective_population"]) == (4, 8, 32)
    assert row["scale"] == "smoke"


def test_backprop_runs_have_no_population(results_dir: Path, make_run) -> None:
    make_run("bp", estimator="backprop", hardware="cpu", channels=64, train_way=20)
    row = load_results(results_dir).runs.iloc[0]
    assert row["pop_per_shard"] is None or math.isnan(row["pop_per_shard"])
    assert row["total_pop"] is None or math.isnan(row["total_pop"])


def test_incomplete_runs_are_reported_and_left_out(results_dir: Path, make_run) -> None:
    make_run("sweep/0_ok", accuracy=0.9)
    make_run("sweep/1_summary_no_done", accuracy=0.1, done=False)
    checkpoint_only = results_dir / "sweep" / "2_checkpoint_only"
    checkpoint_only.mkdir(parents=True)
    (checkpoint_only / "checkpoint.msgpack").write_bytes(b"x")
    hydra_only = results_dir / "sweep" / "3_never_started" / ".hydra"
    hydra_only.mkdir(parents=True)
    results = load_results(results_dir)

    assert list(results.runs["run_id"]) == ["sweep/0_ok"]
    reasons = {s.run: s.reason for s in results.skipped}
    assert set(reasons) == {"sweep/1_summary_no_done", "sweep/2_checkpoint_only", "sweep/3_never_started"}
    assert "summary.json was written but the run did not finish" in reasons["sweep/1_summary_no_done"]
    assert "checkpoint only" in reasons["sweep/2_checkpoint_only"]
    assert all("no `done` marker" in r for r in reasons.values())


def test_done_without_a_readable_summary_is_reported(results_dir: Path, make_run) -> None:
    (results_dir / "a").mkdir()
    (results_dir / "a" / "done").write_text("")
    (results_dir / "a" / "metrics.jsonl").write_text("")
    path = make_run("b")
    (path / "summary.json").write_text("{not json")
    results = load_results(results_dir)
    assert results.runs.empty
    reasons = {s.run: s.reason for s in results.skipped}
    assert reasons["a"] == "`done` marker but no summary.json"
    assert reasons["b"].startswith("unreadable summary.json: ")


def test_null_metrics_are_nan_and_failed_runs_are_rows(results_dir: Path, make_run) -> None:
    make_run("collapsed", status="collapsed", accuracy=None, accuracy_std=None)
    make_run("failed", status="failed")
    runs = load_results(results_dir).runs.set_index("run_id")
    assert math.isnan(runs.loc["collapsed", "test_accuracy"])
    assert runs.loc["failed", "status"] == "failed"
    assert runs.loc["failed", "error"].startswith("RuntimeError: out of memory")
    assert runs.loc["failed", "alpha"] == 1.0  # the config still places the failed run


def test_per_epoch_curves_by_run(results_dir: Path, make_run) -> None:
    make_run("r0", val_curve=[0.4, 0.6, 0.8])
    make_run("r1", val_curve=[0.5])
    results = load_results(results_dir)
    curve = results.curve("r0")
    assert list(curve["epoch"]) == [1, 2, 3]
    assert list(curve["val/accuracy"]) == [0.4, 0.6, 0.8]
    assert list(curve["episode"]) == [100, 200, 300]
    assert len(results.curves) == 4 and set(results.curves["run_id"]) == {"r0", "r1"}


def test_the_results_directory_itself_may_be_a_run(results_dir: Path, make_run) -> None:
    run = make_run("single", accuracy=0.91)
    results = load_results(run)
    assert list(results.runs["test_accuracy"]) == [0.91]


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        ("test_accuracy", 7.5, "test_accuracy is 7.5, outside its range (0 to 1)"),
        ("episodes", -5, "episodes is -5, outside its range (a count 0 to inf)"),
        ("test_accuracy_std", "high", "test_accuracy_std is 'high', not a number"),
        ("status", "complete", "status 'complete' is not one of completed, collapsed, failed, skipped"),
    ],
)
def test_a_summary_out_of_range_is_skipped_with_why(results_dir: Path, make_run, key: str, value, reason: str
                                                    ) -> None:
    make_run("good", accuracy=0.9)
    edited = make_run("edited", seed=1)
    summary = json.loads((edited / "summary.json").read_text())
    (edited / "summary.json").write_text(json.dumps({**summary, key: value}))
    results = load_results(results_dir)
    assert list(results.runs["run_id"]) == ["good"]
    assert [str(s) for s in results.skipped] == [f"edited: summary.json: {reason} (an edited or damaged file)"]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"epoch": 3, "val/acc', "unreadable metrics.jsonl line 3: Unterminated string"),
        ('{"epoch": 3, "val/accuracy": "high"}', "metrics.jsonl row 3: val/accuracy is 'high', not a number"),
    ],
)
def test_an_unreadable_metrics_line_leaves_out_the_curve_and_keeps_the_run(results_dir: Path, make_run, line: str,
                                                                           reason: str) -> None:
    """Its summary is valid and the run finished: the tables use it; its curve is listed as left out, never drawn."""
    run = make_run("garbled", val_curve=[0.5, 0.6], accuracy=0.8)
    make_run("clean", val_curve=[0.5, 0.7], seed=1)
    with open(run / "metrics.jsonl", "a") as f:
        f.write(line + "\n")
    results = load_results(results_dir)
    assert list(results.runs["run_id"]) == ["clean", "garbled"] and not results.skipped
    assert len(results.curveless) == 1 and str(results.curveless[0]).startswith(f"garbled: {reason}")
    assert set(results.curves["run_id"]) == {"clean"}


def test_symlinked_runs_are_loaded_once_each_and_a_link_cycle_ends(results_dir: Path, make_run, tmp_path: Path
                                                                   ) -> None:
    elsewhere = write_run(tmp_path / "elsewhere", "run", accuracy=0.7)
    (results_dir / "linked").symlink_to(elsewhere)
    (results_dir / "again").symlink_to(elsewhere)  # the same run twice: counted once
    make_run("sweep/real", accuracy=0.9)
    (results_dir / "sweep" / "loop").symlink_to(results_dir)  # a cycle
    results = load_results(results_dir)
    assert list(results.runs["run_id"]) == ["again", "sweep/real"]
    assert [str(s) for s in results.skipped] == [
        "linked: the same directory as run again (a symbolic link): counted once"]
