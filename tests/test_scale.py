"""Budget presets (`scale=`): `cpu` keeps every paper configuration and bounds its time; rows whose population
needs an accelerator are refused (a single run) or recorded as skipped (a multirun), never shrunk."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from esmeta.config import Config, HardwareConfig, ScaleConfig
from esmeta.errors import NeedsAcceleratorError
from esmeta.estimators import BackpropConfig, FiniteDiffConfig, WsrConfig
from esmeta.prelaunch import plan_command
from esmeta.scale import check_fits_scale

REPO = Path(__file__).resolve().parents[1]


def test_scale_cpu_keeps_each_rows_configuration_and_sets_a_cpu_clock_budget(tmp_path):
    configs, _, multirun = plan_command(["sweep=table2", "scale=cpu", f"hydra.sweep.dir={tmp_path / 's'}"])
    assert multirun and len(configs) == 4
    for c in configs:
        assert (c.estimator.name, c.model.channels, c.estimator.pop_per_shard, c.hardware.shards) == ("wsr", 16, 128, 8)
        assert (c.task.train_way, c.task.shot) == (10, 5)
        assert c.train.epochs * c.train.episodes_per_epoch == 20_000  # towards the paper's budget ...
        assert (c.train.max_minutes, c.train.budget_clock) == (6, "cpu")  # ... stopped by the stated one
        assert (c.scale.name, c.scale.max_pop_per_shard, c.scale.max_shards) == ("cpu", 0, 0)  # nothing capped
    assert sorted(c.alpha for c in configs) == [0.1, 1, 10, 25]


def test_check_fits_scale_refuses_only_population_estimators_above_the_limit():
    base = Config(scale=ScaleConfig(name="cpu", max_population=4096), hardware=HardwareConfig(shards=8))
    at_limit = dataclasses.replace(base, estimator=WsrConfig(pop_per_shard=512))
    check_fits_scale(at_limit)  # 512 x 8 = 4096: runs
    above = dataclasses.replace(base, estimator=FiniteDiffConfig(pop_per_shard=513))
    with pytest.raises(NeedsAcceleratorError, match=r"population 4104 \(513 per shard x 8 shards\)"):
        check_fits_scale(above)
    check_fits_scale(dataclasses.replace(above, estimator=BackpropConfig()))  # no population: nothing to refuse
    check_fits_scale(dataclasses.replace(above, scale=ScaleConfig(name="paper")))  # no limit


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "esmeta.run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_a_single_run_too_large_for_scale_cpu_is_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "run"
    proc = run_cli("point=table7-v3-256-p16384-w20-lr1e-2", "scale=cpu", f"hydra.run.dir={out}", cwd=tmp_path)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "population 16384 (64 per shard x 256 shards) exceeds scale=cpu's max_population 4096" in lines[0]
    assert "needs an accelerator" in lines[0]
    assert not out.exists()


def test_a_multirun_records_the_row_as_skipped_and_the_table_says_needs_an_accelerator(tmp_path, omniglot_root):
    sweep = tmp_path / "sweep"
    args = ("-m", "point=table7-v3-256-p16384-w20-lr1e-2", "scale=cpu", "logger=none", f"hydra.sweep.dir={sweep}")
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]  # a skipped job is no failure
    (job,) = [p.parent for p in sweep.glob("*/done")]
    summary = json.loads((job / "summary.json").read_text())
    assert summary["status"] == "skipped" and "needs an accelerator" in summary["error"]
    assert summary["config"]["hardware"]["shards"] == 256 and summary["provenance"]["command"]
    assert (summary["point"], summary["sigma"], summary["budget"]["episodes_reached"]) == (
        "table7-v3-256-p16384-w20-lr1e-2", 0.001, None)  # a refused run records what the analysis reads too
    assert not (job / "params.msgpack").exists() and not (job / "metrics.jsonl").exists()  # nothing trained

    again = run_cli(*args, cwd=tmp_path)  # a skipped job is redone (recorded again), not kept as finished
    assert again.returncode == 0 and "[skipped]" in again.stdout + again.stderr

    tables = subprocess.run([sys.executable, str(REPO / "analysis" / "make_tables.py"), "--results", str(sweep),
                             "--only", "table7", "--out", str(tmp_path / "t")], capture_output=True, text=True)
    assert tables.returncode == 0, tables.stderr
    row = next(line for line in tables.stdout.splitlines() if line.startswith("| v3-256"))
    assert [cell.strip() for cell in row.split("|")][-3:-1] == ["needs an accelerator", "0.949"]  # lr 1e-2
