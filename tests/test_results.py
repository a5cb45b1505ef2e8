"""The run directory: atomic files, the done marker last, no stale results from an earlier run."""

import json
import subprocess
import sys
from datetime import UTC, datetime

from esmeta.run_dir import (
    DONE,
    SUMMARY,
    RunDir,
    atomic_write_json,
    read_metrics,
    read_summary,
    remove_stale_temporaries,
)


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


WRITER = ("import sys, time; from pathlib import Path; from esmeta.run_dir import atomic_writer\n"
          "with atomic_writer(Path(sys.argv[1])) as f:\n"
          "    f.write(b'partial'); f.flush(); print('writing', flush=True); time.sleep(120)")


def test_a_killed_writers_temporary_is_removed_a_live_writers_kept(tmp_path):
    """Two real writers mid-write; one is killed (SIGKILL): only its temporary goes, whatever the files' ages."""
    killed, live = (subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / name)], stdout=subprocess.PIPE,
                                     text=True) for name in ("a.npz", "b.npz"))
    try:
        assert [w.stdout.readline().strip() for w in (killed, live)] == ["writing", "writing"]
        killed.kill()
        killed.wait()
        assert len(list(tmp_path.glob(".a.npz.*.tmp"))) == 1  # left behind
        remove_stale_temporaries(tmp_path)
        assert not list(tmp_path.glob(".a.npz.*.tmp")) and len(list(tmp_path.glob(".b.npz.*.tmp"))) == 1
    finally:
        live.kill()
        live.wait()


def test_start_removes_stale_temporaries_in_the_run_and_its_hydra_folder(tmp_path):
    stale = [tmp_path / "r" / ".checkpoint.msgpack.abc.tmp", tmp_path / "r" / ".hydra" / ".config.yaml.def.tmp"]
    stale[1].parent.mkdir(parents=True)
    for path in stale:
        path.write_bytes(b"left by a killed run")
    RunDir(tmp_path / "r").start(record=((".hydra/config.yaml", "seed: 0\n"),))
    assert not any(path.exists() for path in stale)
    assert (tmp_path / "r" / ".hydra" / "config.yaml").read_text() == "seed: 0\n"
