"""A run over two JAX processes (SLURM's variables faked on one machine): one result, written by process 0 only."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

RUN = [
    "estimator=wsr", "estimator.pop_per_shard=4", "hardware=tpu-v3-8", "task.train_way=5", "task.shot=1",
    "task.query=2", "model.channels=8", "train.epochs=2", "train.episodes_per_epoch=5", "eval.val_episodes=2",
    "eval.test_episodes=10", "logger=none",
]
SLURM_PORT_BASE = 65535 - 2**12 + 1  # jax's SLURM detection puts the coordinator at this + job id % 4096


def free_slurm_job_id() -> int:
    """A job id whose coordinator port (as jax derives it from SLURM_JOB_ID) is free on this machine."""
    for offset in range(2**12):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", SLURM_PORT_BASE + offset))
            except OSError:
                continue
            return offset
    raise RuntimeError("no free port in jax's SLURM coordinator range")


def test_two_processes_share_one_run_and_only_process_0_writes(tmp_path, omniglot32):
    run_dir = tmp_path / "run"
    job_id = free_slurm_job_id()
    procs = []
    for rank in range(2):
        env = {**os.environ, "SLURM_JOB_ID": str(job_id), "SLURM_STEP_NODELIST": "localhost", "SLURM_NTASKS": "2",
               "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "JAX_PLATFORMS": "cpu"}
        cmd = [sys.executable, "-m", "esmeta.run", *RUN, "hardware.processes=2", f"hydra.run.dir={run_dir}"]
        procs.append(subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    outputs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["processes"] == 2 and len(summary["devices"]) == 2 and summary["shards"] == 8
    # Had both processes written, metrics.jsonl (appended to) would hold each epoch twice.
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]

    # The same 8 shards on one process and device: the same training, so the same test accuracy.
    single = tmp_path / "single"
    proc = subprocess.run([sys.executable, "-m", "esmeta.run", *RUN, f"hydra.run.dir={single}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    alone = json.loads((single / "summary.json").read_text())
    assert abs(alone["test_accuracy"] - summary["test_accuracy"]) < 1e-6


def test_a_process_count_that_is_not_there_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "-m", "esmeta.run", *RUN, "hardware.processes=2",
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "hardware.processes=2" in lines[0]
    assert not (tmp_path / "run" / "summary.json").exists()
