"""The paper's sweeps: every stored sweep and point composes and validates; table2 runs end to end (smoke scale)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from esmeta.prelaunch import check_overrides
from esmeta.run_dir import read_summary
from esmeta.scale import scaled

pytestmark = pytest.mark.codegen_independent

CONF = Path(__file__).resolve().parents[1] / "conf"
SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
SWEEP_NAMES = sorted(p.stem for p in (CONF / "sweep").glob("*.yaml"))
POINTS = sorted(p.stem for p in (CONF / "point").glob("*.yaml"))


def test_there_is_one_sweep_per_table_and_figure_and_the_manifest_names_them():
    """A sweep per paper table and figure, and the MAML table's; the manifest names each, and the MAML memory
    figure's benchmark command (a measurement, no sweep)."""
    expected = [f"table{i}" for i in range(1, 8)] + [f"figure{i}" for i in range(1, 6)] + ["maml"]
    assert sorted(expected) == SWEEP_NAMES
    manifest = yaml.safe_load((SWEEPS / "manifest.yaml").read_text())
    assert sorted(manifest) == sorted([*expected, "maml_memory"])
    for name, entry in manifest.items():
        if name == "maml_memory":
            assert "sweep" not in entry and entry["command"].startswith("python benchmarks/memory_vs_inner_steps.py")
        else:
            assert entry["sweep"] in SWEEP_NAMES, name


@pytest.mark.parametrize("name", SWEEP_NAMES)
def test_every_sweep_composes_into_valid_configs(name):
    configs = check_overrides([f"sweep={name}"])
    estimators = {c.estimator.name for c in configs}
    learners = {c.learner.name for c in configs}
    if name == "maml":  # MAML's outer estimators, first-order MAML among them (it needs the inner loop)
        assert configs and learners == {"maml"} and estimators == {"backprop", "first_order", "wsr"}
    else:
        assert configs and learners == {"protonet"} and estimators <= {"wsr", "finite_diff", "backprop"}


def test_maml_sweep_is_two_points_by_three_estimators():
    """The MAML table's grid: 5-way and 20-way 1-shot on Vinyals' split at 28 px, each with second-order, first-order
    and ES outer gradients, at the points' 20,000 episodes (the ES time budget is given on the command line)."""
    configs = check_overrides(["sweep=maml"])
    got = sorted((c.task.train_way, c.task.shot, c.estimator.name) for c in configs)
    assert got == sorted((way, 1, e) for way in (5, 20) for e in ("backprop", "first_order", "wsr"))
    for c in configs:
        assert (c.data.split, c.data.image_size, c.model.channels, c.task.test_way) == ("vinyals", 28, 32, c.task.train_way)
        assert (c.train.epochs * c.train.episodes_per_epoch, c.train.max_minutes) == (20_000, 0)


def test_table2_sweep_is_the_papers_four_alpha_sigma_pairs():
    """The grid is the table's rows (alpha and sigma vary together), not a cross product."""
    configs = check_overrides(["sweep=table2"])
    pairs = sorted((c.alpha, c.sigma) for c in configs[1:]) + [(configs[0].alpha, configs[0].sigma)]
    assert sorted(pairs) == [(0.1, 0.001), (1.0, 0.01), (10.0, 0.1), (25.0, 0.25)]
    for c in configs:
        assert (c.model.channels, c.estimator.pop_per_shard, c.hardware.shards, c.task.train_way) == (16, 128, 8, 10)


def paper_rows(csv_name: str) -> list[dict[str, str]]:
    path = Path(__file__).resolve().parents[1] / "analysis" / "paper_tables" / csv_name
    with open(path) as f:
        return list(csv.DictReader(f))


def test_table3_points_reproduce_the_papers_populations():
    """Each Table III row: channels, per-core and total population, train way, TPU and step size as printed."""
    got = {
        (c.hardware.name, c.model.channels, c.estimator.pop_per_shard, c.estimator.pop_per_shard * c.hardware.shards,
         c.task.train_way, c.alpha, c.sigma)
        for c in check_overrides(["sweep=table3"])
    }
    want = {
        (f"tpu-{r['tpu']}", int(r["channels"]), int(r["pop_per_core"]), int(r["total_pop"]), int(r["train_way"]),
         float(r["alpha"]), float(r["sigma"]))
        for r in paper_rows("table3_channels.csv")
    }
    assert got == want


def test_table4_points_that_are_table7_rows_have_table7s_populations():
    """Table IV's cosine 20-way rows are Table VII rows (same TPU, way and learning rate): their total
    population is Table VII's (v3-8: 512 = 8 x 64; v3-256: 16,384 = 256 x 64), not 128 per core."""
    table7 = {(f"tpu-{r['tpu']}", r["distance"], int(r["train_way"]), float(r["learning_rate"])): int(r["total_pop"])
              for r in paper_rows("table7_finite_diff_lr.csv")}
    matched = 0
    for c in check_overrides(["sweep=table4"]):
        key = (c.hardware.name, c.distance.name, c.task.train_way, c.alpha)
        if key in table7:
            matched += 1
            assert c.estimator.pop_per_shard * c.hardware.shards == table7[key], key
    assert matched == 3  # v3-8 cosine 10-way 5e-3 (1024), v3-8 cosine 20-way 1e-2 (512), v3-256 cosine 20-way 5e-4


def test_smoke_scale_caps_population_and_shards_but_keeps_the_requested_config():
    (config,) = check_overrides(["point=table5-v3-256-a10-w5", "scale=smoke"])
    assert (config.estimator.pop_per_shard, config.hardware.shards) == (256, 256)  # as the paper ran it
    run = scaled(config)
    assert (run.estimator.pop_per_shard, run.hardware.shards) == (4, 8)
    assert config.train.epochs < 200 and config.eval.test_episodes < 200


def test_user_overrides_win_over_a_point():
    (config,) = check_overrides(["point=table2-a1-s0.01", "alpha=3"])
    assert config.alpha == 3.0 and config.sigma == 0.01


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "esmeta.run", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=1200)


def test_an_unknown_sweep_is_one_line(tmp_path):
    proc = run_cli("sweep=table9", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "sweep=table9 is not an option" in lines[0] and "table2" in lines[0]
    assert not (tmp_path / "s").exists()


def job_dirs(sweep_dir: Path) -> list[Path]:
    return sorted(p.parent for p in sweep_dir.glob("*/summary.json"))


def test_table2_smoke_sweep_writes_four_results_and_four_offline_wandb_runs(table2_smoke_sweep):
    jobs = job_dirs(table2_smoke_sweep)
    assert len(jobs) == 4
    summaries = [read_summary(j) for j in jobs]
    assert sorted(s["alpha"] for s in summaries) == [0.1, 1.0, 10.0, 25.0]
    for job, s in zip(jobs, summaries):
        assert (job / "done").exists()
        assert s["status"] in ("completed", "collapsed") and s["sweep"] == "table2" and s["scale"] == "smoke"
        assert (s["pop_per_shard"], s["shards"], s["population"]) == (4, 8, 32)  # smoke caps
        assert s["config"]["estimator"]["pop_per_shard"] == 128  # the paper's row, for the analysis
        assert len(list((job / "wandb").glob("offline-run-*/*.wandb"))) == 1


def test_table2_smoke_sweep_through_submitit_local(tmp_path, omniglot32):
    """Two of the grid's rows with each job in its own process (submitit's local executor); a `point=` list on the
    command line picks rows of the sweep (two show separate processes at half the four rows' cost)."""
    sweep_dir = tmp_path / "sweep"
    proc = run_cli("sweep=table2", "scale=smoke", "point=table2-a1-s0.01,table2-a25-s0.25",
                   "hydra/launcher=submitit_local", "logger=none", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [read_summary(j) for j in job_dirs(sweep_dir)]
    assert sorted(s["alpha"] for s in summaries) == [1.0, 25.0]
    assert all(s["status"] in ("completed", "collapsed") for s in summaries)
    assert len({s["wall_time_s"] for s in summaries}) == 2
    assert len(list((sweep_dir / ".submitit").glob("*/*_result.pkl"))) == 2  # two separate submitit jobs
