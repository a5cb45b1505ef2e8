"""A table cell holds runs of one setting: the defaults' runs first, never a mix, never a silent pick."""

from __future__ import annotations

import pandas as pd
from esmeta.analysis.load import load_results
from esmeta.analysis.paper import load_manifest, load_paper_table
from esmeta.analysis.settings import defaults, one_setting
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


def test_defaults_are_what_the_run_command_composes():
    assert defaults("finite_diff")["estimator.optimizer"] == "adam"
    assert defaults("wsr")["estimator.optimizer"] == "sgd"
    assert defaults("backprop")["estimator.lr_decay_every"] == 2000


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
    assert ("no run with the default settings; shown: runs with estimator.optimizer=sgd "
            "(default estimator.optimizer=adam)") in notes


def test_a_setting_a_run_did_not_record_agrees_with_the_default():
    runs = pd.DataFrame([
        {"estimator": "finite_diff", "run_id": "old", "config.estimator.optimizer": "adam"},  # no fd_reduce
        {"estimator": "finite_diff", "run_id": "mean", "config.estimator.optimizer": "adam",
         "config.estimator.fd_reduce": "mean"},
    ])
    kept, notes = one_setting(runs)
    assert list(kept["run_id"]) == ["old"]
    assert notes == ["1 run with other settings left out (estimator.fd_reduce=mean)"]
