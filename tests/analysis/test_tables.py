"""Tables: exact cells from known runs, the paper's numbers beside them, reasons for what is missing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from esmeta.analysis.cells import aggregate
from esmeta.analysis.load import load_results
from esmeta.analysis.paper import Entry, load_manifest, load_paper_table, paper_text
from esmeta.analysis.tables import SPECS, build_table, match_runs, render_latex, render_markdown

REPO = Path(__file__).resolve().parents[2]
MAKE_TABLES = REPO / "analysis" / "make_tables.py"


@pytest.fixture
def manifest(tmp_path: Path) -> dict[str, Entry]:
    """A manifest file of our own: titles and sweep names in the output come from it."""
    path = tmp_path / "manifest.yaml"
    path.write_text(
        'table2: {sweep: table2, paper: table2_alpha_sigma.csv, title: "Hyperparameter optimization"}\n'
        'table7: {sweep: my_table7, paper: table7_finite_diff_lr.csv, title: "FD learning rate"}\n'
    )
    return load_manifest(path)


def table(key: str, results_dir: Path, manifest: dict[str, Entry]):
    entry = manifest[key]
    return build_table(SPECS[key], entry, load_paper_table(entry), load_results(results_dir).runs)


def ours(built, row: int) -> str:
    return built.long.loc[built.long["row"] == row, "ours"].item()


def table2_runs(make_run) -> None:
    """Table II's rows: two seeds of alpha 1, one run of alpha 0.1, a collapsed alpha 25, alpha 10 missing."""
    make_run("table2/0", alpha=1, sigma=0.01, seed=0, accuracy=0.98)
    make_run("table2/1", alpha=1, sigma=0.01, seed=1, accuracy=0.96)
    make_run("table2/2", alpha=0.1, sigma=0.001, accuracy=0.62, accuracy_std=0.03)
    make_run("table2/3", alpha=25, sigma=0.25, status="collapsed", accuracy=None, accuracy_std=None)


GOLDEN_TABLE2 = """\
## Table II: Hyperparameter optimization

| α   | σ     | Accuracy (ours)   | Accuracy (paper)   | Runs   |
|:----|:------|:------------------|:-------------------|:-------|
| 0.1 | 0.001 | 0.620 ± 0.030     | 0.62 ± 0.028       | 1      |
| 1   | 0.01  | 0.970 ± 0.014     | 0.987 ± 0.009      | 2      |
| 10  | 0.1   | -                 | 0.971 ± 0.011      | 0      |
| 25  | 0.25  | Collapse          | Collapse           | 1      |

Effect of varying α and σ on test accuracy, with all other variables held constant (TPU=v3-8, Channels=16, \
Pop. per core=128, Total pop.=1024, Way=10).

Ours: mean ± std over runs (seeds, ddof=1) where several ran; with one run, its test accuracy ± its std over \
test episodes (ddof=1), as the paper reports.

Notes:

- No run matched these rows; run `python -m esmeta.run sweep=table2` (add `scale=smoke` for a quick version):
  - α 10, σ 0.1
- Test batch norm (model.norm_stats): running, the training running averages (the reference ProtoNet's eval \
mode) (4 runs).
"""


def test_table2_golden_markdown(results_dir: Path, make_run, manifest) -> None:
    """The whole rendered table; if a deliberate format change breaks this, paste the new output here."""
    table2_runs(make_run)
    assert render_markdown(table("table2", results_dir, manifest)) == GOLDEN_TABLE2


def test_cells_mean_std_over_seeds_one_run_collapse_and_missing(results_dir: Path, make_run, manifest) -> None:
    table2_runs(make_run)
    built = table("table2", results_dir, manifest)
    assert ours(built, 2) == "0.970 ± 0.014"  # seeds 0.98, 0.96: mean 0.97, std (ddof=1) 0.01414
    assert ours(built, 1) == "0.620 ± 0.030"  # one run: its std over test episodes
    assert ours(built, 4) == "Collapse"
    assert ours(built, 3) == "-"
    row = built.long.set_index("row").loc[2]
    assert row["ours_mean"] == pytest.approx(0.97) and row["ours_std"] == pytest.approx(0.0141421356)
    assert (row["runs"], row["completed"], row["paper"]) == (2, 2, "0.987 ± 0.009")
    assert "no run matched; run `python -m esmeta.run sweep=table2`" in built.long.set_index("row").loc[3, "notes"]


def test_the_paper_column_is_the_papers_text(manifest) -> None:
    paper = load_paper_table(manifest["table2"])
    assert [paper_text(r) for _, r in paper.iterrows()] == ["0.62 ± 0.028", "0.987 ± 0.009", "0.971 ± 0.011",
                                                           "Collapse"]
    assert len(load_paper_table(load_manifest()["table7"])) == 16


def test_runs_match_by_requested_config_not_effective(results_dir: Path, make_run, manifest) -> None:
    make_run("smoke", alpha=1, sigma=0.01, scale="smoke", accuracy=0.5)  # ran 8 x 4, requested 8 x 128
    built = table("table2", results_dir, manifest)
    assert ours(built, 2) == "0.500 ± 0.010"
    assert any("smoke-scale" in n for n in built.notes)


def test_runs_differing_only_in_norm_stats_never_share_a_cell(results_dir: Path, make_run, manifest) -> None:
    """Running averages (the default protocol) and episode statistics are two experiments: the cell shows the
    default's run alone and names the other; a table never averages them."""
    make_run("running", alpha=1, sigma=0.01, seed=0, accuracy=0.98)
    make_run("episode", alpha=1, sigma=0.01, seed=1, norm_stats="episode", accuracy=0.90)
    built = table("table2", results_dir, manifest)
    row = built.long.set_index("row").loc[2]
    assert ours(built, 2) == "0.980 ± 0.010" and row["runs"] == 1
    assert "1 run with other settings left out (model.norm_stats=episode)" in row["notes"]
    (protocol_note,) = [n for n in built.notes if n.startswith("Test batch norm")]
    assert protocol_note == ("Test batch norm (model.norm_stats): running, the training running averages (the "
                             "reference ProtoNet's eval mode) (1 run).")
    runs = load_results(results_dir).runs.set_index("run_id")
    assert sorted(runs["test_protocol"]) == ["episode", "running"]


def test_old_summaries_differing_only_in_norm_stats_never_share_a_cell(results_dir: Path, make_run,
                                                                       manifest) -> None:
    """Summaries from before the record (no `differences`): the adapter tells the protocols apart too."""
    make_run("episode", alpha=1, sigma=0.01, seed=0, norm_stats="episode", accuracy=0.90, legacy=True)
    make_run("running", alpha=1, sigma=0.01, seed=1, accuracy=0.98, legacy=True)
    built = table("table2", results_dir, manifest)
    assert ours(built, 2) == "0.980 ± 0.010"
    assert "1 run with other settings left out (model.norm_stats=episode)" in built.long.set_index("row").loc[2, "notes"]


def test_other_configurations_do_not_match(results_dir: Path, make_run, manifest) -> None:
    make_run("32ch", alpha=1, sigma=0.01, channels=32)
    make_run("pop64", alpha=1, sigma=0.01, pop_per_shard=64)
    make_run("20way", alpha=1, sigma=0.01, train_way=20)
    make_run("v3-256", alpha=1, sigma=0.01, hardware="tpu-v3-256")
    make_run("sigma", alpha=1, sigma=0.02)
    built = table("table2", results_dir, manifest)
    assert list(built.long["ours"]) == ["-", "-", "-", "-"]
    assert built.notes == ["No run matched any row; run `python -m esmeta.run sweep=table2` "
                           "(add `scale=smoke` for a quick version)."]


def test_floats_match_with_tolerance_and_distance_only_where_the_table_has_it(
    results_dir: Path, make_run, manifest
) -> None:
    make_run("a", alpha=1.0000000001, sigma=0.01, distance="cosine", accuracy=0.9)  # Table II has no distance
    assert ours(table("table2", results_dir, manifest), 2) == "0.900 ± 0.010"
    make_run("fd", estimator="finite_diff", alpha=1e-3, distance="cosine", accuracy=0.8)
    table4 = table("table4", results_dir, load_manifest())
    # Table IV row 4 is v3-8 finite_diff *euclidean* lr 1e-3, 10-way: the cosine run does not match it.
    assert ours(table4, 4) == "-"


def test_backprop_rows_match_any_hardware(results_dir: Path, make_run) -> None:
    make_run("bp", estimator="backprop", hardware="cpu", alpha=1e-3, channels=64, train_way=20, shot=5,
             accuracy=0.993, accuracy_std=0.013)
    built = table("table1", results_dir, load_manifest())
    assert ours(built, 6) == "0.993 ± 0.013"
    assert built.layout.iloc[5, 0] == "ProtoNet" and built.layout.iloc[5, 1] == "N/A"
    assert ours(built, 3) == "-"  # 1-shot backprop did not run


def test_failed_runs_give_a_reason_and_collapses_are_counted(results_dir: Path, make_run, manifest) -> None:
    make_run("failed", alpha=10, sigma=0.1, status="failed")
    make_run("ok", alpha=1, sigma=0.01, seed=0, accuracy=0.98)
    make_run("ok2", alpha=1, sigma=0.01, seed=1, accuracy=0.96)
    make_run("collapsed", alpha=1, sigma=0.01, seed=2, status="collapsed", accuracy=None, accuracy_std=None)
    built = table("table2", results_dir, manifest)
    assert ours(built, 3) == "-"
    assert ours(built, 2) == "0.970 ± 0.014 (1 of 3 collapsed)"
    failed_note = [n for n in built.notes if n.startswith("α 10, σ 0.1")]
    assert failed_note and "1 of 1 runs failed" in failed_note[0] and "out of memory" in failed_note[0]


def test_a_seed_that_ran_again_counts_once_by_its_latest_result(results_dir: Path, make_run, manifest) -> None:
    # Seed 0 ran three times (a sweep, a rerun, a failed rerun); the latest result replaces the first,
    # a failed rerun replaces nothing; seed 1 ran once. The cell is over the two seeds, not four runs.
    make_run("b/0", alpha=1, sigma=0.01, seed=0, accuracy=0.90, finished_at="2026-11-29T10:00:00+00:00")
    make_run("a/0", alpha=1, sigma=0.01, seed=0, accuracy=0.98, finished_at="2026-11-30T10:00:00+00:00")
    make_run("c/0", alpha=1, sigma=0.01, seed=0, status="failed", finished_at="2026-11-30T11:00:00+00:00")
    make_run("a/1", alpha=1, sigma=0.01, seed=1, accuracy=0.96, finished_at="2026-11-30T10:05:00+00:00")
    built = table("table2", results_dir, manifest)
    assert ours(built, 2) == "0.970 ± 0.014"  # mean and ddof=1 std of 0.98 and 0.96
    assert built.long.loc[built.long["row"] == 2, "runs"].item() == 2
    assert any("2 earlier runs of a seed that ran again left out" in n for n in built.notes)


def test_table7_pivots_learning_rates_into_column_pairs(results_dir: Path, make_run, manifest) -> None:
    make_run("fd", estimator="finite_diff", distance="cosine", alpha=5e-3, pop_per_shard=128, accuracy=0.94,
             accuracy_std=0.02)
    built = table("table7", results_dir, manifest)
    layout = built.layout
    assert list(layout.columns) == ["TPU", "Total pop.", "Way", "5E-04 (ours)", "5E-04 (paper)", "1E-03 (ours)",
                                    "1E-03 (paper)", "5E-03 (ours)", "5E-03 (paper)", "1E-02 (ours)",
                                    "1E-02 (paper)"]  # numeric order, not the paper CSV's 5e-4, 5e-3, 1e-3, 1e-2
    assert list(layout.iloc[0]) == ["v3-8", "1024", "10", "-", "0.923", "-", "0.855", "0.940 ± 0.020", "0.939",
                                    "-", "0.929"]
    assert len(layout) == 4
    missing = built.notes[0]
    assert "run `python -m esmeta.run sweep=my_table7`" in missing and missing.count("\n  - ") == 15


def test_latex_has_caption_and_math(results_dir: Path, make_run, manifest) -> None:
    table2_runs(make_run)
    latex = render_latex(table("table2", results_dir, manifest))
    assert r"\caption{Table II: Hyperparameter optimization." in latex
    assert r"$\alpha$ & $\sigma$ & Accuracy (ours)" in latex
    assert r"1 & 0.01 & 0.970 $\pm$ 0.014 & 0.987 $\pm$ 0.009 & 2 \\" in latex


def test_aggregate_of_nothing_names_the_command() -> None:
    cell = aggregate(pd.DataFrame(), "python -m esmeta.run sweep=x")
    assert cell.text == "-" and "sweep=x" in cell.notes[0]


def test_match_runs_on_no_runs_is_empty(manifest) -> None:
    row = load_paper_table(manifest["table2"]).iloc[0]
    assert match_runs(pd.DataFrame(), row).empty


# --- the command line ---------------------------------------------------------------------------


def make_tables(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAKE_TABLES), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


def test_cli_prints_and_writes_every_table(results_dir: Path, make_run, tmp_path: Path) -> None:
    table2_runs(make_run)
    make_run("sweep/9_incomplete", alpha=10, sigma=0.1, done=False)
    out = tmp_path / "out"
    done = make_tables("--results", str(results_dir), "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "| 1   | 0.01  | 0.970 ± 0.014     | 0.987 ± 0.009      | 2      |" in done.stdout
    assert "## Table VII:" in done.stdout and "## Memory:" in done.stdout
    assert "skipped run sweep/9_incomplete: no `done` marker" in done.stderr
    names = {p.name for p in out.iterdir()}
    for key in [f"table{i}" for i in range(1, 8)] + ["memory"]:
        assert {f"{key}.md", f"{key}.tex", f"{key}.csv"} <= names
    assert "tables.md" in names
    csv = pd.read_csv(out / "table2.csv")
    assert list(csv["ours"]) == ["0.620 ± 0.030", "0.970 ± 0.014", "-", "Collapse"]


def test_cli_default_out_is_under_results(results_dir: Path, make_run) -> None:
    table2_runs(make_run)
    done = make_tables("--results", str(results_dir), "--only", "table2")
    assert done.returncode == 0, done.stderr
    assert (results_dir / "tables" / "table2.md").read_text().startswith("## Table II:")
    assert "--out DIR" in make_tables("--help").stdout and "DIR/tables" in make_tables("--help").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--results", "{missing}"], "no such directory"),
        (["--results", "{empty}"], "no complete runs"),
        (["--results", "{incomplete}"], "1 run skipped: run: no `done` marker: summary.json was written"),
        ([], "--results DIR is required"),
        (["--results", "{empty}", "--source", "s3"], "--source 's3' is not one of: local, wandb"),
        (["--source", "wandb", "--entity", "me"], "--source wandb needs --project"),
        (["--source", "wandb"], "--source wandb needs --entity and --project"),
        (["--results", "{empty}", "--only", "table9"], "--only table9: unknown"),
        (["--results", "{empty}", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    incomplete = tmp_path / "incomplete" / "run"
    incomplete.mkdir(parents=True)
    (incomplete / "summary.json").write_text("{}")
    args = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty", incomplete=tmp_path / "incomplete")
            for a in args]
    before = sorted(p for p in tmp_path.rglob("*"))
    done = make_tables(*args, cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("make_tables: error: ") and message in lines[-1], done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert sorted(p for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("garbage", ['{"epoch": 3, "val/acc', "42", "null", '{"val/accuracy": "high"}'])
def test_cli_uses_a_finished_run_with_a_garbage_metrics_line_and_says_its_curve_is_left_out(
    results_dir: Path, make_run, tmp_path: Path, garbage: str
) -> None:
    """A finished run (`done`, a valid summary) whose last metrics.jsonl line is garbage is in its cell, and its
    curve is listed as left out, with why; never called incomplete."""
    table2_runs(make_run)
    make_run("sweep/8_garbled", alpha=10, sigma=0.1, accuracy=0.5)
    with open(results_dir / "sweep" / "8_garbled" / "metrics.jsonl", "a") as f:
        f.write(garbage + "\n")
    out = tmp_path / "out"
    done = make_tables("--results", str(results_dir), "--out", str(out), "--only", "table2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "incomplete" not in done.stderr
    line = next(x for x in done.stderr.splitlines() if "sweep/8_garbled" in x)
    assert "left out the curve of run sweep/8_garbled (its summary is used): " in line and "metrics.jsonl" in line
    assert "| 10  | 0.1   | 0.500 ± 0.010" in (out / "table2.md").read_text()


def test_cli_with_only_unusable_runs_says_why_in_its_one_line(results_dir: Path, make_run, tmp_path: Path) -> None:
    run = make_run("only", accuracy=7.5)
    done = make_tables("--results", str(results_dir), "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        f"make_tables: error: no complete runs in results directory {results_dir} (a run is complete once it writes "
        "`done`); 1 run skipped: only: summary.json: test_accuracy is 7.5, outside its range (0 to 1) (an edited or "
        "damaged file)")
    assert run.exists() and not (tmp_path / "out" / "tables.md").exists()


def test_cli_skips_runs_whose_summary_is_out_of_range_and_lists_them(results_dir: Path, make_run, tmp_path: Path
                                                                     ) -> None:
    """An edited summary is never averaged into a cell (test accuracy 7.5) nor into the budget note (-5 episodes)."""
    table2_runs(make_run)
    for seed, (key, value) in enumerate((("test_accuracy", 7.5), ("episodes", -5)), start=2):
        edited = make_run(f"table2/{seed}_edited", alpha=1, sigma=0.01, seed=seed, episodes=40)
        summary = json.loads((edited / "summary.json").read_text())
        (edited / "summary.json").write_text(json.dumps({**summary, key: value}))
    out = tmp_path / "out"
    done = make_tables("--results", str(results_dir), "--out", str(out), "--only", "table2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for run, reason in (("table2/2_edited", "test_accuracy is 7.5, outside its range"),
                        ("table2/3_edited", "episodes is -5, outside its range")):
        assert f"make_tables: skipped run {run}: summary.json: {reason}" in done.stderr
        assert f"- {run}: summary.json: {reason}" in (out / "tables.md").read_text()
    assert layout_of(out / "table2.md") == layout_of_golden()


def test_cli_reads_symlinked_run_directories_once(results_dir: Path, make_run, tmp_path: Path) -> None:
    table2_runs(make_run)
    (tmp_path / "moved").mkdir()
    (results_dir / "table2" / "1").rename(tmp_path / "moved" / "1")
    (results_dir / "table2" / "1").symlink_to(tmp_path / "moved" / "1")
    (results_dir / "table2" / "1-again").symlink_to(tmp_path / "moved" / "1")
    out = tmp_path / "out"
    done = make_tables("--results", str(results_dir), "--out", str(out), "--only", "table2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert layout_of(out / "table2.md") == layout_of_golden()  # seed 1 counted once, through its link
    assert "skipped run table2/1-again: the same directory as run table2/1 (a symbolic link)" in done.stderr


def layout_of(path: Path) -> str:
    return "\n".join(line for line in path.read_text().splitlines() if line.startswith("|"))


def layout_of_golden() -> str:
    return "\n".join(line for line in GOLDEN_TABLE2.splitlines() if line.startswith("|"))


@pytest.mark.parametrize("out", ["/proc/esmeta-tables", "{file}/sub"])
def test_cli_unwritable_out_is_one_line_exit_2_before_printing(results_dir: Path, make_run, tmp_path: Path,
                                                               out: str) -> None:
    table2_runs(make_run)
    (tmp_path / "file").write_text("a file, not a directory")
    done = make_tables("--results", str(results_dir), "--out", out.format(file=tmp_path / "file"), cwd=tmp_path)
    assert done.returncode == 2
    lines = [x for x in done.stderr.splitlines() if x.strip() and "skipped" not in x]
    assert len(lines) == 1 and lines[0].startswith("make_tables: error: ") and "--out" in lines[0], done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_a_row_its_scale_refused_reads_needs_an_accelerator_with_the_command(results_dir: Path, make_run,
                                                                             manifest) -> None:
    make_run("v3-256", estimator="finite_diff", distance="cosine", alpha=1e-2, hardware="tpu-v3-256",
             pop_per_shard=64, train_way=20, scale="cpu", status="skipped")
    built = table("table7", results_dir, manifest)
    row = built.long[(built.long["tpu"] == "v3-256") & (built.long["learning_rate"] == "1e-2")].iloc[0]
    assert row["ours"] == "needs an accelerator" and (row["runs"], row["skipped"], row["failed"]) == (1, 1, 0)
    assert "population 16384" in row["notes"] and "scale=paper on an accelerator" in row["notes"]
    assert "run `python -m esmeta.run sweep=my_table7` with scale=paper" in "\n".join(built.notes)


def test_a_budget_short_of_the_papers_episodes_is_a_column_and_a_note(results_dir: Path, make_run,
                                                                      manifest) -> None:
    table2_runs(make_run)
    built = table("table2", results_dir, manifest)
    assert "Episodes (ours)" not in built.layout.columns  # the paper's 20,000 reached: no budget to state
    make_run("short", alpha=10, sigma=0.1, seed=0, accuracy=0.8, episodes=140, scale="cpu", max_minutes=6)
    make_run("short1", alpha=10, sigma=0.1, seed=1, accuracy=0.82, episodes=160, scale="cpu", max_minutes=6)
    built = table("table2", results_dir, manifest)
    # a cell holds one budget: the run that trained 160 episodes, not a 150-episode mean no run trained
    assert list(built.layout["Episodes (ours)"]) == ["20000", "20000", "160", ""]
    assert built.long.set_index("row").loc[3, "episodes"] == 160 and ours(built, 3) == "0.820 ± 0.010"
    note = next(n for n in built.notes if n.startswith("Budget:"))
    assert "160-20000 training episodes of the paper's 20,000" in note
    assert "under a time budget of 6 cpu-clock minutes per run" in note and "scale=cpu" in note


def test_table7_states_each_rows_episodes_in_the_notes(results_dir: Path, make_run, manifest) -> None:
    make_run("fd", estimator="finite_diff", distance="cosine", alpha=5e-3, accuracy=0.9, episodes=120)
    built = table("table7", results_dir, manifest)
    assert "TPU v3-8, Total pop. 1024, Way 10, Learning Rate 5E-03: 120 episodes of the paper's 20,000." in built.notes


def test_cli_lists_every_run_it_could_not_place_with_the_settings_that_differ(results_dir: Path, make_run,
                                                                              tmp_path: Path) -> None:
    make_run("placed", alpha=1, sigma=0.01)  # Table II row 2 (and Table III's)
    make_run("on_gpus", alpha=1, sigma=0.01, hardware="gpu", pop_per_shard=1024)  # the preset replaced by `gpu`
    make_run("odd_alpha", alpha=3, sigma=0.01)
    proc = subprocess.run([sys.executable, str(MAKE_TABLES), "--results", str(results_dir), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("## Runs not placed in any table (2)", 1)[1]
    lines = [line for line in section.splitlines() if line.startswith("- ")]
    assert lines[0].startswith("- odd_alpha (completed): nearest Table ") and "alpha 3 (row: 1)" in lines[0]
    assert lines[1].startswith("- on_gpus (completed): nearest Table ") and "tpu gpu (row: v3-8)" in lines[1]
    assert "placed (" not in section
    assert "2 runs placed in no table" in proc.stderr


def test_runs_of_different_budgets_never_share_a_cell(results_dir: Path, make_run, manifest) -> None:
    """Seeds that trained different numbers of episodes (or under different budgets) are never averaged: the cell
    shows the runs that trained the most, and the notes name the others."""
    make_run("paper/0", alpha=1, sigma=0.01, seed=0, accuracy=0.98, episodes=20000)
    make_run("paper/1", alpha=1, sigma=0.01, seed=1, accuracy=0.96, episodes=20000)
    make_run("cpu/2", alpha=1, sigma=0.01, seed=2, accuracy=0.70, episodes=90, scale="cpu", max_minutes=6)
    make_run("short/3", alpha=0.1, sigma=0.001, seed=0, accuracy=0.80, episodes=1)  # same config, 1 and 40 trained
    make_run("short/4", alpha=0.1, sigma=0.001, seed=1, accuracy=0.83, accuracy_std=0.02, episodes=40)
    built = table("table2", results_dir, manifest)
    long = built.long.set_index("row")
    assert ours(built, 2) == "0.970 ± 0.014" and long.loc[2, "runs"] == 2 and long.loc[2, "episodes"] == 20000
    assert "1 run of another budget left out (90 episodes trained of 20,000 episodes requested, at most 6 " \
        "cpu-clock minutes, scale=cpu); shown: 20,000 episodes trained of 20,000 episodes requested" in long.loc[2, "notes"]
    assert ours(built, 1) == "0.830 ± 0.020" and long.loc[1, "episodes"] == 40  # the 40-episode run alone
    assert "1 run of another budget left out (1 episodes trained" in long.loc[1, "notes"]


def test_a_run_in_progress_shows_its_episodes_and_is_never_a_result(results_dir: Path, make_run, manifest) -> None:
    import numpy as np

    from esmeta import checkpoint
    from tests.analysis.conftest import run_config

    going = results_dir / "paper" / "seed1"
    going.mkdir(parents=True)
    checkpoint.save(going / "checkpoint.msgpack", {"w": np.zeros(3, np.float32)},
                    checkpoint.Progress(step=2900), run_config(alpha=10, sigma=0.1, seed=1))
    built = build_table(SPECS["table2"], manifest["table2"], load_paper_table(manifest["table2"]),
                        load_results(results_dir).runs, load_results(results_dir).in_progress)
    assert ours(built, 3) == "in progress: 2,900 of 20,000 episodes"
    row = built.long.set_index("row").loc[3]
    assert (row["runs"], row["completed"], row["in_progress"]) == (0, 0, 1) and pd.isna(row["ours_mean"])
    make_run("paper/seed0", alpha=10, sigma=0.1, seed=0, accuracy=0.95)  # a finished seed: the cell is its result
    results = load_results(results_dir)
    assert list(results.runs["run_id"]) == ["paper/seed0"]
    assert "in progress: episode 2,900 of 20,000" in next(s.reason for s in results.skipped if s.run == "paper/seed1")
    built = build_table(SPECS["table2"], manifest["table2"], load_paper_table(manifest["table2"]), results.runs,
                        results.in_progress)
    assert ours(built, 3) == "0.950 ± 0.010"
    assert "1 run in progress not counted (2,900 of 20,000 episodes)" in built.long.set_index("row").loc[3, "notes"]


def test_only_one_table_lists_as_unplaced_only_the_runs_no_table_places(results_dir: Path, make_run,
                                                                        tmp_path: Path) -> None:
    make_run("t2", alpha=1, sigma=0.01)  # Table II row 2
    make_run("t7", estimator="finite_diff", distance="cosine", alpha=5e-3)  # Table VII: placed, just not built here
    make_run("odd_alpha", alpha=3, sigma=0.01)  # in no table
    proc = subprocess.run([sys.executable, str(MAKE_TABLES), "--results", str(results_dir), "--out", str(tmp_path / "o"),
                           "--only", "table2"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    section = proc.stdout.split("## Runs not placed in any table (1)", 1)[1]
    assert [line[:12] for line in section.splitlines() if line.startswith("- ")] == ["- odd_alpha "]
    assert "1 run placed in no table" in proc.stderr
