"""The run directory: atomic files, the done marker last, no stale results from an earlier run."""

import json
from datetime import UTC, datetime

from esmeta.results import DONE, SUMMARY, RunDir, atomic_write_json, read_metrics, read_summary


def test_finish_writes_summary_then_done(tmp_path):
    run = RunDir(tmp_path / "r")
    run.start()
    assert not run.done
    run.append_metrics({"episode": 1, "train/loss": 0.5})
    run.finish({"status": "completed", "test_accuracy": 0.9})
    assert run.done and read_summary(run.path)["test_accuracy"] == 0.9
    stamp = datetime.fromisoformat(read_summary(run.path)["finished_at"])
    assert stamp.tzinfo is not None and abs((datetime.now(UTC) - stamp).total_seconds()) < 60
    assert list(read_metrics(run.path)) == [{"episode": 1, "train/loss": 0.5}]


def test_start_removes_a_previous_runs_marker_and_summary(tmp_path):
    run = RunDir(tmp_path / "r")
    run.start()
    run.finish({"status": "completed"})
    RunDir(tmp_path / "r").start()
    assert not (tmp_path / "r" / DONE).exists() and not (tmp_path / "r" / SUMMARY).exists()


def test_json_has_no_nan_and_no_leftover_temp_files(tmp_path):
    atomic_write_json(tmp_path / "s.json", {"a": float("nan"), "b": [1.0, float("inf")]})
    assert json.loads((tmp_path / "s.json").read_text()) == {"a": None, "b": [1.0, None]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json"]
