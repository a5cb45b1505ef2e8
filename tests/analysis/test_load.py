"""Loading a results tree: a row per complete run, requested config as columns, incomplete runs reported."""

from __future__ import annotations

import math
import os
from pathlib import Path

from esmeta.analysis.load import load_results


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
    assert math.isnan(fd["sigma"]) and fd["fd_sigma"] == 0.001  # sigma belongs to wsr only
    assert (fd["total_pop"], fd["distance"], fd["alpha"]) == (64 * 256, "cosine", 5e-3)


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
    assert reasons["b"].startswith("unreadable results")


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
