"""Reliability end to end: a sweep survives its failures, a run directory has one writer, nothing read back is
trusted unchecked, a refused command writes nothing, a failed write costs one line and resumes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from flax import serialization

import esmeta
from esmeta import checkpoint
from esmeta.errors import ConfigError, DataError
from esmeta.prelaunch import plan_jobs
from esmeta.run_dir import LOCK, DirLock, atomic_write_bytes, read_metrics, read_summary

pytestmark = pytest.mark.codegen_independent

# As tests/test_run.py's (test modules are not importable from one another here).
FAST = ["task.train_way=5", "task.shot=1", "task.query=2", "task.test_query=5", "model.channels=4", "train.epochs=2",
        "train.episodes_per_epoch=3", "eval.val_episodes=1", "eval.test_episodes=4", "logger=none"]


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "esmeta.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr[-2000:])
    assert lines[0].startswith("esmeta: error: ") and "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` (the lock file aside) and its content."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, omniglot32) -> Path:
    """A finished tiny run through the CLI."""
    out = tmp_path_factory.mktemp("finished") / "run"
    proc = run_cli(*FAST, f"hydra.run.dir={out}", cwd=out.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_results_files_respect_the_umask(finished):
    mask = os.umask(0)
    os.umask(mask)
    for name in ("summary.json", "params.msgpack", "metrics.jsonl", "done"):
        assert stat.S_IMODE((finished / name).stat().st_mode) == 0o666 & ~mask, name


def test_a_refused_rerun_leaves_the_finished_run_byte_identical(finished):
    before = tree_bytes(finished)
    proc = run_cli(*FAST, "alpha=2", f"hydra.run.dir={finished}", cwd=finished.parent)
    assert_one_line_error(proc, "alpha: 0.001 -> 2.0")
    assert tree_bytes(finished) == before  # metrics.jsonl, .hydra/config.yaml and overrides.yaml untouched


def test_a_refused_job_of_a_multirun_leaves_the_finished_run_it_would_overwrite_byte_identical(tmp_path, omniglot32):
    """Rerunning a pinned sweep with another alpha: its job 0 is refused (a finished run of another configuration
    is there) and nothing of that run's record changes, .hydra/ included; its log only gains the refusal."""
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "seed=0", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]
    assert run_cli(*args, cwd=tmp_path).returncode == 0
    recorded = yaml.safe_load((sweep / "0" / ".hydra" / "config.yaml").read_text())  # the record is written
    assert recorded["alpha"] == 0.001 and yaml.safe_load((sweep / "0" / ".hydra" / "overrides.yaml").read_text())
    before = {k: v for k, v in tree_bytes(sweep / "0").items() if not k.endswith(".log")}
    proc = run_cli(*args, "alpha=2", cwd=tmp_path)
    assert proc.returncode == 1 and "1 of 1 jobs failed" in proc.stderr and "alpha: 0.001 -> 2.0" in proc.stderr
    assert {k: v for k, v in tree_bytes(sweep / "0").items() if not k.endswith(".log")} == before


def test_a_second_run_into_a_busy_directory_exits_2_naming_it_and_the_holder(finished, tmp_path):
    """The lock is held by a live process (here a helper holding it); the second run writes nothing."""
    busy = tmp_path / "busy"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from esmeta.run_dir import DirLock; "
         "DirLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(120)", str(busy)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = run_cli(*FAST, f"hydra.run.dir={busy}", cwd=tmp_path)
        assert_one_line_error(proc, str(busy), f"pid {holder.pid} on")
        assert sorted(p.name for p in busy.iterdir()) == [LOCK]  # no .hydra/, no log, no results
    finally:
        holder.kill()
        holder.wait()
    # The holder died: the kernel released its lock, the directory is free again.
    with DirLock(busy):
        pass


def test_two_concurrent_runs_into_one_directory_one_is_refused(tmp_path, omniglot32):
    """While a long run trains, a second one into its directory exits 2 naming it and its holder; the first
    run's metrics keep each epoch once; once the first is killed (SIGKILL), its directory is free."""
    out = tmp_path / "run"
    args = [*FAST, "train.epochs=100000", "train.episodes_per_epoch=20", f"hydra.run.dir={out}"]
    first = subprocess.Popen([sys.executable, "-m", "esmeta.run", *args], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "metrics.jsonl").exists() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        second = run_cli(*args, cwd=tmp_path)
        assert first.poll() is None
        assert_one_line_error(second, str(out), f"pid {first.pid}")
    finally:
        first.kill()
        first.wait()
    epochs = [m["epoch"] for m in read_metrics(out)]
    assert epochs == list(range(1, len(epochs) + 1))  # one writer: each epoch once, in order
    with DirLock(out):  # released by the kernel when the holder died
        pass


def test_a_missing_data_root_is_refused_without_creating_anything(tmp_path):
    out, root = tmp_path / "out", tmp_path / "nonexistent"
    proc = run_cli(*FAST, f"data.root={root}", f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_line_error(proc, str(root))
    assert not root.exists() and not out.exists()


def test_hardware_refused_when_the_job_would_start_leaves_no_skeleton(tmp_path, monkeypatch):
    """`hardware=gpu` without a GPU used to leave `.hydra/` and a log behind: now nothing is created."""
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")  # no GPU, whatever the machine has
    out = tmp_path / "out"
    proc = run_cli(*FAST, "hardware=gpu", f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_line_error(proc, "hardware.platform=gpu")
    assert not out.exists()


def test_an_out_of_range_seed_is_one_line(tmp_path):
    proc = run_cli("seed=9223372036854775808", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_line_error(proc, "seed=9223372036854775808 is out of range")
    assert not (tmp_path / "out").exists()


def checkpoint_file(tmp_path: Path) -> Path:
    """A real checkpoint of a 4-channel run, stopped after its first epoch (a failed params write ends it)."""
    out = tmp_path / "run"
    (out / "params.msgpack").mkdir(parents=True)  # in the way: the run stops before finishing
    proc = run_cli(*FAST, f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_line_error(proc, str(out / "params.msgpack"), "rerun the same command")
    (out / "params.msgpack").rmdir()
    return out / "checkpoint.msgpack"


def test_a_failed_write_is_one_line_keeps_the_checkpoint_and_a_rerun_resumes(tmp_path, omniglot32):
    ckpt = checkpoint_file(tmp_path)
    assert checkpoint.read(ckpt).progress.step == 3  # the end of epoch 1 of 2, kept
    assert not list(ckpt.parent.glob(".*.tmp"))
    proc = run_cli(*FAST, f"hydra.run.dir={ckpt.parent}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = read_summary(ckpt.parent)
    assert summary["status"] == "completed" and summary["resumed"] is True and summary["episodes"] == 6


def test_a_flipped_byte_or_an_impossible_step_in_a_checkpoint_is_refused_naming_it(tmp_path, omniglot32):
    ckpt = checkpoint_file(tmp_path)
    good = ckpt.read_bytes()
    blob = serialization.msgpack_restore(good)
    payload = bytearray(blob["payload"])
    payload[len(payload) // 2] ^= 0x01  # one bit of the weights (the arrays are most of the payload)
    ckpt.write_bytes(serialization.msgpack_serialize({**blob, "payload": bytes(payload)}))
    before = tree_bytes(ckpt.parent)
    proc = run_cli(*FAST, f"hydra.run.dir={ckpt.parent}", cwd=tmp_path)
    assert_one_line_error(proc, str(ckpt), "checksum mismatch")
    assert tree_bytes(ckpt.parent) == before

    ckpt.write_bytes(good)
    saved = checkpoint.read(ckpt)
    progress = saved.progress
    progress.step = 999  # beyond the run's 6 episodes, with a valid checksum
    checkpoint.save(ckpt, saved.arrays, progress, saved.config)
    proc = run_cli(*FAST, f"hydra.run.dir={ckpt.parent}", cwd=tmp_path)
    assert_one_line_error(proc, str(ckpt), "999 episodes done")


def test_a_multirun_goes_on_past_a_failing_job_and_a_rerun_redoes_only_it(tmp_path, omniglot32):
    """Job 0's checkpoint is corrupt (an EsmetaError when it starts): it is recorded as failed, job 1 runs,
    the command ends in one line counting the failure; after deleting the file, a rerun redoes only job 0."""
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "seed=0,1", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=${hydra.job.num}"]
    (sweep / "0").mkdir(parents=True)
    (sweep / "0" / "checkpoint.msgpack").write_bytes(b"not a checkpoint")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("esmeta: error: ")]
    assert len(lines) == 2 and "checkpoint.msgpack" in lines[0] and "delete that file" in lines[0]
    assert "1 of 2 jobs failed" in lines[-1] and "Traceback" not in proc.stderr
    failed, done = read_summary(sweep / "0"), read_summary(sweep / "1")
    assert failed["status"] == "failed" and "checkpoint.msgpack" in failed["error"] and failed["config"]["seed"] == 0
    assert done["status"] == "completed"

    (sweep / "0" / "checkpoint.msgpack").unlink()
    kept = (sweep / "1" / "summary.json").read_bytes()
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_summary(sweep / "0")["status"] == "completed"
    assert (sweep / "1" / "summary.json").read_bytes() == kept  # not retrained


def flip_a_params_byte(run: Path) -> None:
    """Damage a run's params.msgpack by one bit, as a disk or a careless edit would."""
    params = bytearray((run / "params.msgpack").read_bytes())
    params[-3] ^= 0x01
    (run / "params.msgpack").write_bytes(bytes(params))


def test_load_run_on_damaged_files_is_one_data_error_naming_them(finished, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    flip_a_params_byte(run)
    with pytest.raises(DataError, match="params.msgpack is damaged.*checksum"):
        esmeta.load_run(run)
    (run / "summary.json").write_text('{"status": "completed", "conf')
    with pytest.raises(DataError, match="summary.json is unreadable"):
        esmeta.load_run(run)
    (run / "summary.json").write_text('{"status": "completed"}')
    with pytest.raises(DataError, match="summary.json holds no valid config"):
        esmeta.load_run(run)


def test_load_run_refuses_a_collapsed_run_and_parameters_it_cannot_verify(finished, tmp_path):
    """A collapsed run's parameters are not finite (it embedded to NaN); a summary without the checksums let a
    flipped byte load."""
    import json
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    summary = read_summary(run)
    (run / "summary.json").write_text(json.dumps({**summary, "status": "collapsed"}))
    with pytest.raises(DataError, match="status is 'collapsed', not 'completed'"):
        esmeta.load_run(run)
    (run / "summary.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "params_sha256"}))
    flip_a_params_byte(run)
    with pytest.raises(DataError, match="records no params_sha256, so its parameters cannot be verified"):
        esmeta.load_run(run)


def test_a_rerun_onto_a_finished_run_with_damaged_parameters_is_refused_not_kept(finished, tmp_path):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    flip_a_params_byte(run)
    before = tree_bytes(run)
    proc = run_cli(*FAST, f"hydra.run.dir={run}", cwd=tmp_path)
    assert_one_line_error(proc, f"{run} holds a finished run whose params.msgpack is missing, damaged",
                          "train.resume=false")
    assert tree_bytes(run) == before


@pytest.mark.parametrize("name", ["done", "metrics.jsonl"])
def test_a_directory_where_a_results_file_goes_is_one_line_and_nothing_written(tmp_path, name):
    """It used to end in IsADirectoryError's traceback after writing a `failed` summary and `done` beside it."""
    out = tmp_path / "out"
    (out / name).mkdir(parents=True)
    proc = run_cli(*FAST, f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_line_error(proc, f"{out / name} is a directory where esmeta writes its {name} file", "remove it")
    assert sorted(p.name for p in out.iterdir()) == [name]


def test_a_write_to_a_full_disk_is_one_line_naming_the_file_and_keeps_the_old_one(tmp_path):
    """A real full filesystem (a 64 KiB tmpfs) where the machine allows mounting one; else a file in the way."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)],
                             capture_output=True).returncode == 0
    try:
        target = disk / "checkpoint.msgpack"
        atomic_write_bytes(target, b"old")
        if not mounted:
            (disk / ".checkpoint.msgpack.x.tmp").mkdir()  # not a full disk: a failed rename stands in for it
            os.chmod(disk, 0o500)
        with pytest.raises(DataError, match=f"cannot write {target}.*rerun the same command"):
            atomic_write_bytes(target, b"x" * (256 * 1024 if mounted else 10))
        assert target.read_bytes() == b"old"
        assert not [p for p in disk.glob(".*.tmp") if p.is_file()]
    finally:
        os.chmod(disk, 0o700)
        if mounted:
            subprocess.run(["umount", str(disk)], check=True)


def test_stale_temporaries_beside_checkpoints_are_removed_at_the_next_start(finished, tmp_path, omniglot32):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".checkpoint.msgpack.abc123.tmp"
    stale.write_bytes(b"left by a killed run")
    proc = run_cli(*FAST, f"hydra.run.dir={out}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not stale.exists()


def test_a_lock_is_reentrant_in_its_process_and_exclusive_across_processes(tmp_path):
    with DirLock(tmp_path / "d"), DirLock(tmp_path / "d"):
        probe = subprocess.run(
            [sys.executable, "-c", "import sys; from pathlib import Path; from esmeta.run_dir import DirLock; "
             "DirLock(Path(sys.argv[1])).acquire()", str(tmp_path / "d")], capture_output=True, text=True)
        assert probe.returncode != 0 and "is in use by another run" in probe.stderr
        assert ConfigError.__name__ in probe.stderr


SWEEP = ["-m", *FAST, "seed=0,1", "hydra.sweep.subdir=${hydra.job.num}"]


def test_a_job_directory_that_cannot_be_created_is_refused_before_the_first_job(tmp_path):
    """A file where job 0's directory goes used to end the sweep in Hydra's traceback once it reached that job."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "0").write_text("in the way")
    assert_one_line_error(run_cli(*SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path), "job 0", f"{sweep / '0'}",
                          "not writable")
    assert sorted(p.name for p in sweep.iterdir()) == ["0"]  # no job ran, no multirun.yaml


def test_job_directory_names_too_long_for_the_filesystem_are_refused_before_the_first_job(tmp_path):
    """`-m seed=0,1` with a dozen explicit defaults names each job directory after all of them (over 255 bytes):
    the dry run listed them without a word and the sweep ended with "File name too long"."""
    defaults = ["alpha=0.001", "sigma=0.01", "estimator=wsr", "estimator.optimizer=adam", "estimator.lr_decay_every=0",
                "estimator.lr_decay_factor=0.5", "estimator.weight_decay=0.0", "estimator.pop_per_shard=2",
                "estimator.fitness_shaping=zscore", "estimator.normalize=per_shard", "estimator.shard_episodes=shared",
                "estimator.fitness_precision=highest", "estimator.eval_mode=auto"]
    proc = run_cli("-m", *FAST, "seed=0,1", *defaults, f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert_one_line_error(proc, "job 0", "bytes, over the 255", "hydra.sweep.subdir=")
    assert not (tmp_path / "sweep").exists()
    with pytest.raises(ConfigError, match="over the 255"):  # the dry run's plan
        plan_jobs([*FAST, "seed=0,1", *defaults, f"hydra.sweep.dir={tmp_path / 'sweep'}"], multirun=True)


def test_a_job_that_still_cannot_start_fails_alone_and_the_sweep_goes_on(tmp_path):
    """Job 0's log file cannot be opened (a directory in its place, past the pre-launch check): one line for it,
    job 1 runs (here it fails at once on a damaged checkpoint), and the count says which could not start."""
    sweep = tmp_path / "sweep"
    (sweep / "0" / "run.log").mkdir(parents=True)
    (sweep / "1").mkdir()
    (sweep / "1" / "checkpoint.msgpack").write_bytes(b"not a checkpoint")
    proc = run_cli(*SWEEP, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("esmeta: error: ")]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert f"job 0 cannot start in {sweep / '0'}" in lines[0] and "Is a directory" in lines[0]
    assert "checkpoint.msgpack" in lines[1] and read_summary(sweep / "1")["status"] == "failed"
    assert lines[-1].startswith("esmeta: error: 2 of 2 jobs failed (1 could not start, first: ") and len(lines) == 3


def test_jobs_that_would_share_a_directory_are_refused_and_the_dry_run_shows_the_real_ones(tmp_path):
    """A constant hydra.sweep.subdir made every job write one directory while the dry run showed separate ones."""
    sweep = tmp_path / "sweep"
    proc = run_cli("-m", *FAST, "seed=0,1", "hydra.sweep.subdir=same", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert_one_line_error(proc, "jobs 0 and 1 would both write to", str(sweep / "same"), "${hydra.job.num}")
    assert not sweep.exists()
    plan = plan_jobs([*FAST, "seed=0,1", "hydra.sweep.subdir=s${seed}", f"hydra.sweep.dir={sweep}"], multirun=True)
    assert [job.directory for job in plan.jobs] == [sweep / "s0", sweep / "s1"]  # what the dry run lists
