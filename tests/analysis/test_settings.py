"""A table cell holds runs of one setting: the defaults' runs first, never a mix, never a silent pick."""

from __future__ import annotations

import json
import subprocess
import sys

from esmeta.analysis.load import load_results
from esmeta.analysis.paper import load_manifest, load_paper_table
from esmeta.analysis.settings import setting
from esmeta.analysis.tables import SPECS, build_table

from .conftest import write_run

FD_ROW = dict(estimator="finite_diff", distance="cosine", pop_per_shard=128, train_way=10, alpha=1e-2)


def table7_lr1e2(root) -> tuple[str, str]:
    """(our text, notes) of Table VII's v3-8, population 1024, lr 1e-2 cell built from `root`."""
    entry = load_manifest()["table7"]
    built = build_table(SPECS["table7"], entry, load_paper_table(entry), load_results(root).runs)
    long = built.long
    row = long[(long["tpu"] == "v3-8") & (long["total_pop"].astype(str) == "1024")
               & (long["learning_rate"].astype(str) == "1e-2")]
    assert len(row) == 1
    return row["ours"].iloc[0], row["notes"].iloc[0]


def test_the_analysis_reads_records_not_todays_code(tmp_path):
    """Importing the analysis and deciding a table's cells load neither the command line nor the config schema: a
    cell is decided from what the runs recorded, so an archived table cannot change when the code's defaults do."""
    code = ("import sys; import esmeta.analysis.load as l, esmeta.analysis.tables as t, esmeta.analysis.settings, "
            "esmeta.analysis.make_tables; from esmeta.analysis.paper import load_manifest, load_paper_table; "
            "e = load_manifest()['table2']; "
            f"t.build_table(t.SPECS['table2'], e, load_paper_table(e), l.load_results({str(tmp_path)!r}).runs); "
            "print(sorted(m for m in ('esmeta.run', 'esmeta.config') if m in sys.modules))")
    write_run(tmp_path, "a1", alpha=1, sigma=0.01, norm_stats="episode")
    write_run(tmp_path, "a0.1", alpha=0.1, sigma=0.001, legacy=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_a_runs_setting_is_its_recorded_differences_less_what_a_row_names():
    recorded = {"alpha": 10, "sigma": 0.1, "seed": 3, "model.channels": 16, "estimator.pop_per_shard": 128,
                "hardware.name": "tpu-v3-8", "hardware.shards": 8, "task.train_way": 10, "task.test_shot": 1,
                "distance.name": "cosine", "model.norm_stats": "episode", "estimator.optimizer": "adam"}
    assert setting(recorded) == {"model.norm_stats": "episode", "estimator.optimizer": "adam"}
    assert setting(None) == {}


def test_a_later_run_of_another_setting_neither_replaces_nor_joins_the_default(tmp_path):
    """Same row, same seed: the Adam (default) run stands; the later SGD run is left out and named."""
    write_run(tmp_path, "adam", accuracy=0.84, finished_at="2026-12-01T00:00:00+00:00", **FD_ROW)
    write_run(tmp_path, "sgd", accuracy=0.75, optimizer="sgd", finished_at="2026-12-02T00:00:00+00:00", **FD_ROW)
    ours, notes = table7_lr1e2(tmp_path)
    assert ours.startswith("0.840")
    assert "1 run with other settings left out (estimator.optimizer=sgd)" in notes
    assert "earlier run" not in notes  # not counted as a rerun of seed 0


def test_without_default_runs_the_largest_setting_is_shown_and_said(tmp_path):
    for seed, acc in enumerate((0.70, 0.80)):
        write_run(tmp_path, f"sgd{seed}", accuracy=acc, optimizer="sgd", seed=seed, **FD_ROW)
    ours, notes = table7_lr1e2(tmp_path)
    assert ours.startswith("0.750 ± 0.071")  # mean ± std over the two SGD seeds
    assert "no run with the default settings; shown: runs with estimator.optimizer=sgd" in notes


def test_a_setting_an_old_summary_did_not_record_agrees_with_the_default(tmp_path):
    """A summary older than a setting (no fd_reduce in its config) ran as that setting's default."""
    write_run(tmp_path, "old", accuracy=0.84, legacy=True, **FD_ROW)  # its config holds no estimator.fd_reduce
    mean = write_run(tmp_path, "mean", accuracy=0.70, seed=1, legacy=True, **FD_ROW)
    summary = json.loads((mean / "summary.json").read_text())
    summary["config"]["estimator"]["fd_reduce"] = "mean"
    (mean / "summary.json").write_text(json.dumps(summary))
    ours, notes = table7_lr1e2(tmp_path)
    assert ours.startswith("0.840")
    assert "1 run with other settings left out (estimator.fd_reduce=mean)" in notes
