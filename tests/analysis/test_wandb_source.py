"""The W&B source: a recorded-shape API response goes through the same adapter as the real `wandb.Api()`."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import wandb
from esmeta.analysis import make_tables
from esmeta.analysis.load import load_results
from esmeta.analysis.paper import load_manifest, load_paper_table
from esmeta.analysis.tables import SPECS, build_table
from esmeta.analysis.wandb_source import FIGURE_KEYS, load_wandb

FIXTURE = Path(__file__).parent / "fixtures" / "wandb_runs.json"
ALLOWED = {"id", "name", "state", "config", "summary", "scan_history"}


class FakeSummary:
    """Dict-like without being a dict, like wandb's HTTPSummary / SummarySubDict."""

    def __init__(self, data: dict[str, Any]):
        self._data = data

    def keys(self):
        return self._data.keys()

    def __getitem__(self, key: str) -> Any:
        value = self._data[key]
        return FakeSummary(value) if isinstance(value, dict) else value


class FakeRun:
    """A recorded run; records every public attribute the adapter reads."""

    def __init__(self, record: dict[str, Any], touched: set[str]):
        object.__setattr__(self, "_record", record)
        object.__setattr__(self, "_touched", touched)

    def __getattr__(self, name: str) -> Any:
        self._touched.add(name)
        record = self._record
        if name in ("id", "name", "state", "config"):
            return record[name]
        if name == "summary":
            return FakeSummary(record["summary"])
        if name == "scan_history":
            def scan_history(keys: list[str] | None = None, **_: Any) -> Iterator[dict[str, Any]]:
                self._touched.add(f"scan_history keys={keys}")
                for row in record["history"]:  # as W&B: with keys, the rows holding all of them, those columns only
                    if keys is None:
                        yield row
                    elif all(k in row for k in keys):
                        yield {k: row[k] for k in keys}
            return scan_history
        raise AttributeError(f"the adapter must not read run.{name}")


class FakeApi:
    """`wandb.Api()` answering from the fixture."""

    def __init__(self, touched: set[str] | None = None):
        self.touched = set() if touched is None else touched
        self.paths: list[str] = []
        self.filters: list[dict[str, Any] | None] = []
        self.doc = json.loads(FIXTURE.read_text())

    def runs(self, path: str, filters: dict[str, Any] | None = None, **kwargs: Any) -> list[FakeRun]:
        self.paths.append(path)
        self.filters.append(filters)
        group = (filters or {}).get("group")
        return [FakeRun(r, self.touched) for r in self.doc["runs"] if group is None or r.get("group") == group]


def test_adapter_reads_only_the_documented_run_attributes() -> None:
    api = FakeApi()
    load_wandb("me", "esmeta", api=api)
    assert api.paths == ["me/esmeta"]
    touched = {t for t in api.touched if not t.startswith("scan_history keys=")}
    assert touched <= ALLOWED and {"config", "summary", "scan_history", "state"} <= touched


def test_finished_esmeta_runs_become_rows_and_the_rest_are_reported() -> None:
    results = load_wandb("me", "esmeta", api=FakeApi())
    assert list(results.runs["run_id"]) == ["a1s0xyz", "a1s1xyz", "a25coll"]
    assert results.source == "W&B project me/esmeta"
    reasons = {s.run: s.reason for s in results.skipped}
    assert reasons == {
        "a10run (table2-a10-s0.1)": "W&B state is 'running', not 'finished'",
        "crash01": "W&B state is 'crashed', not 'finished'",
        "other01 (someone-elses-run)": "W&B summary has no `status`: not an esmeta run, or it never finished",
    }
    runs = results.runs.set_index("run_id")
    assert (runs.loc["a1s0xyz", "alpha"], runs.loc["a1s0xyz", "sigma"], runs.loc["a1s0xyz", "total_pop"]) == (
        1.0, 0.01, 1024)
    assert runs.loc["a1s1xyz", "seed"] == 1 and runs.loc["a1s1xyz", "test_accuracy"] == 0.96
    assert runs.loc["a25coll", "status"] == "collapsed" and math.isnan(runs.loc["a25coll", "test_accuracy"])


def test_an_out_of_range_summary_is_skipped_and_a_non_numeric_history_leaves_out_the_curve() -> None:
    """As the local source: an edited W&B summary is never averaged in; a curve with a word in it is never drawn."""
    api = FakeApi()
    runs = {r["id"]: r for r in api.doc["runs"]}
    runs["a1s1xyz"]["summary"]["test_accuracy"] = 7.5
    next(row for row in runs["a1s0xyz"]["history"] if "val/accuracy" in row)["val/accuracy"] = "high"
    results = load_wandb("me", "esmeta", api=api, history_keys=FIGURE_KEYS)
    assert list(results.runs["run_id"]) == ["a1s0xyz", "a25coll"]
    reasons = {s.run: s.reason for s in results.skipped}
    assert reasons["a1s1xyz (table2-a1-s0.01-seed1)"].startswith("W&B summary: test_accuracy is 7.5, outside its range")
    assert [s.reason for s in results.curveless] == ["W&B history row 1: val/accuracy is 'high', not a number"]
    assert "a1s0xyz" not in set(results.curves["run_id"])


def test_curves_are_the_full_per_epoch_history() -> None:
    results = load_wandb("me", "esmeta", api=FakeApi())
    curve = results.curve("a1s1xyz")
    assert list(curve["epoch"]) == [1, 2, 3]  # per-step rows (no val/accuracy) are left out
    assert list(curve["val/accuracy"]) == [0.5, 0.7, 0.95]
    # the epoch means (logged as epoch/train_loss beside the last step's train/loss) under metrics.jsonl's names
    assert list(curve["train/loss"]) == [1.0, 0.5, 1 / 3]
    assert list(curve["es/fitness_mean"]) == [-0.5, -0.5, -0.5]
    assert "epoch/train_loss" not in results.curves.columns
    assert not any(c.startswith("_") for c in results.curves.columns)
    collapsed = results.curve("a25coll")
    assert list(collapsed["epoch"]) == [1, 2] and math.isnan(collapsed["val/accuracy"].iloc[1])


def test_same_columns_and_same_table_as_the_local_source(results_dir: Path, make_run) -> None:
    make_run("0", alpha=1, sigma=0.01, seed=0, accuracy=0.98, val_curve=[0.6])
    local = load_results(results_dir)
    online = load_wandb("me", "esmeta", api=FakeApi())
    assert set(local.runs.columns) - {"path"} <= set(online.runs.columns)
    entry = load_manifest()["table2"]
    built = build_table(SPECS["table2"], entry, load_paper_table(entry), online.runs)
    assert list(built.long["ours"]) == ["-", "0.970 ± 0.014", "-", "Collapse"]


def test_the_real_api_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    api = FakeApi()
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: api)
    results = load_wandb("me", "esmeta")  # no api given: wandb.Api()
    assert api.paths == ["me/esmeta"] and len(results.runs) == 3


def test_make_tables_source_wandb(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: FakeApi())
    out = tmp_path / "tables"
    code = make_tables.main(["--source", "wandb", "--entity", "me", "--project", "esmeta", "--only", "table2",
                             "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "3 runs from W&B project me/esmeta (2 completed, 1 collapsed); 3 runs skipped" in captured.out
    assert "| 1   | 0.01  | 0.970 ± 0.014     | 0.987 ± 0.009      | 2      |" in captured.out
    assert "make_tables: skipped run a10run (table2-a10-s0.1): W&B state is 'running'" in captured.err
    assert (out / "table2.csv").is_file()


def test_make_tables_reports_an_unreachable_server_in_one_line(monkeypatch: pytest.MonkeyPatch, capsys,
                                                               tmp_path: Path) -> None:
    def no_server(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Max retries exceeded with url: /graphql\nmore detail")

    monkeypatch.setattr(wandb, "Api", no_server)
    code = make_tables.main(["--source", "wandb", "--entity", "me", "--project", "esmeta", "--out",
                             str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2
    assert err == ("make_tables: error: could not read W&B project me/esmeta: ConnectionError: "
                   "Max retries exceeded with url: /graphql\n")
    assert not (tmp_path / "t").exists()


def test_tables_fetch_no_history_figures_only_their_keys_and_group_filters_on_the_server(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from esmeta.analysis import make_figures

    apis: list[FakeApi] = []
    monkeypatch.setattr(wandb, "Api", lambda *a, **k: apis.append(FakeApi()) or apis[-1])
    wandb_args = ["--source", "wandb", "--entity", "me", "--project", "esmeta"]
    assert make_tables.main([*wandb_args, "--only", "table2", "--out", str(tmp_path / "t")]) == 0
    assert "scan_history" not in apis[-1].touched and apis[-1].filters == [None]  # summaries are enough
    assert make_figures.main([*wandb_args, "--only", "figure5", "--out", str(tmp_path / "f")]) == 0
    assert {t for t in apis[-1].touched if t.startswith("scan_history ")} == {
        "scan_history keys=['epoch', 'episode', 'val/accuracy']"}
    assert make_tables.main([*wandb_args, "--group", "table2_cpu", "--out", str(tmp_path / "g")]) == 2  # no runs
    assert apis[-1].filters == [{"group": "table2_cpu"}]


def test_figure_keys_give_the_same_validation_curves_as_the_full_history() -> None:
    from esmeta.analysis.wandb_source import FIGURE_KEYS

    full = load_wandb("me", "esmeta", api=FakeApi()).curves
    some = load_wandb("me", "esmeta", api=FakeApi(), history_keys=FIGURE_KEYS).curves
    columns = ["run_id", "epoch", "episode", "val/accuracy"]
    pd_equal = full[columns].reset_index(drop=True).equals(some[columns].reset_index(drop=True))
    assert pd_equal and len(some) == len(full) > 0


def test_group_without_source_wandb_is_one_line(tmp_path: Path, capsys) -> None:
    (tmp_path / "r").mkdir()
    assert make_tables.main(["--results", str(tmp_path / "r"), "--group", "g"]) == 2
    assert "--group filters W&B runs: it goes with --source wandb" in capsys.readouterr().err
