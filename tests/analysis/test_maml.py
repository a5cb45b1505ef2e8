"""The MAML table from real tiny MAML runs, and the MAML memory table and figure from the benchmark's real output.

The runs are made once per session with `esmeta.train.train` (4 channels, one or two episodes, two test episodes);
the memory records are real output of `python benchmarks/memory_vs_inner_steps.py --quick` (4 channels), committed
as a fixture: its K=1 rows of second_order, first_order and forward_mode and a second run's K=5 rows of the first two
(`--quick --estimators second_order first_order --steps 5`), on the 2-core CPU where compiling took minutes a step.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from esmeta.analysis.load import load_results
from esmeta.analysis.maml import build_maml_table, render_latex, render_markdown
from esmeta.analysis.maml_memory import LABELS, memory_display, read_memory
from esmeta.analysis.paper import load_manifest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MAKE_TABLES = REPO / "analysis" / "make_tables.py"
MAKE_FIGURES = REPO / "analysis" / "make_figures.py"
QUICK = Path(__file__).resolve().parent / "fixtures" / "maml_memory_quick.jsonl"
RUN = "maml-5way-1shot/first_order"
# (run directory, seed, episodes): two seeds of one budget, and a shorter run that must not be averaged with them
RUNS = (("seed0", 0, 2), ("seed1", 1, 2), ("short", 2, 1))


@pytest.fixture(scope="session")
def maml_results(tmp_path_factory: pytest.TempPathFactory, omniglot_root: Path) -> Path:
    """Three real first-order MAML runs of point maml-5way-1shot (4 channels), made once per session."""
    from esmeta.prelaunch import check_overrides
    from esmeta.train import JobInfo, train

    root = tmp_path_factory.mktemp("maml") / "results"
    for name, seed, episodes in RUNS:
        overrides = ("point=maml-5way-1shot", "estimator=first_order", "model.channels=4", "train.epochs=1",
                     f"train.episodes_per_epoch={episodes}", "eval.test_episodes=2", "eval.val_episodes=0",
                     "logger=none", f"seed={seed}")
        (config,) = check_overrides(list(overrides))
        train(config, root / RUN / name, JobInfo(overrides=overrides))
    return root


def summaries(root: Path) -> dict[str, dict]:
    return {name: json.loads((root / RUN / name / "summary.json").read_text()) for name, _, _ in RUNS}


def maml_table(root: Path):
    results = load_results(root)
    return build_maml_table(load_manifest()["maml"], results.runs, results.in_progress)


def make(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_a_row_holds_the_seeds_of_one_budget_beside_finn_et_al(maml_results: Path) -> None:
    s = summaries(maml_results)
    built = maml_table(maml_results)
    assert len(built.layout) == 1
    row = built.layout.iloc[0]
    accuracies = [s["seed0"]["test_accuracy"], s["seed1"]["test_accuracy"]]  # the short run is another budget
    want = f"{statistics.mean(accuracies):.3f} ± {statistics.stdev(accuracies):.3f}"
    assert (row["Task"], row["Channels"], row["Estimator"], row["Accuracy (ours)"]) == \
        ("5-way 1-shot", "4", "first-order", want)
    assert row["Finn et al. 2017 (± 95% CI)"] == "0.983 ± 0.005" and row["95% CI (ours, one run)"] == "-"
    protocol = s["seed0"]["test_protocol"]
    assert row["Test protocol"] == (f"2 episodes, {protocol['query']} queries a class, 3 inner steps; "
                                    "training: 1 at lr 0.4")
    assert row["Budget reached"] == "2 of 2 episodes" and row["Seeds"] == "2 (0, 1)"
    cpu = statistics.mean(s[n]["cpu_seconds"] for n in ("seed0", "seed1")) / 3600
    assert row["CPU-hours a run"] == f"{cpu:.2f}"
    assert row["Commit"] == s["seed0"]["provenance"]["commit"][:7]
    long = built.long.iloc[0]
    assert long["run_ids"] == f"{RUN}/seed0, {RUN}/seed1" and long["points"] == "maml-5way-1shot"
    assert "1 run of another budget left out (1 episodes trained of 1 episodes requested)" in long["notes"]
    assert built.notes[-1].startswith("Finn et al. 2017 rows without a run of ours: 5-way 1-shot second-order, "
                                      "20-way 1-shot second-order")
    assert render_markdown(built).startswith("## MAML: ")
    assert r"0.983 $\pm$ 0.005" in render_latex(built)


def test_a_run_in_progress_is_its_episodes_never_a_result(maml_results: Path, tmp_path: Path) -> None:
    """A copy of a finished run without `done`, holding a checkpoint: beside finished runs it is a note; a row with
    only such a run (a 20-way one) reads 'in progress: N of M episodes'."""
    from esmeta import checkpoint

    root = tmp_path / "results"
    shutil.copytree(maml_results, root)
    config = summaries(root)["seed0"]["config"]
    for name, way in (("seed3", 5), ("way20", 20)):
        going = root / RUN / name
        shutil.copytree(root / RUN / "seed0", going)
        for marker in ("done", "summary.json"):
            (going / marker).unlink()
        checkpoint.save(going / "checkpoint.msgpack", {"w": np.zeros(3, np.float32)}, checkpoint.Progress(step=1),
                        {**config, "seed": 3, "task": {**config["task"], "train_way": way, "test_way": way}})
    built = maml_table(root)
    layout = built.layout.set_index("Task")
    assert layout.loc["20-way 1-shot", "Accuracy (ours)"] == "in progress: 1 of 2 episodes"
    assert layout.loc["20-way 1-shot", "Seeds"] == "0" and layout.loc["20-way 1-shot", "Budget reached"] == "-"
    five = built.long.set_index("way").loc[5]
    assert five["runs"] == 2 and five["in_progress"] == 1
    assert "1 run in progress not counted (1 of 2 episodes)" in five["notes"]


def test_a_folder_of_maml_runs_builds_the_maml_tables_and_nothing_of_the_papers(maml_results: Path,
                                                                                 tmp_path: Path) -> None:
    root = tmp_path / "results"
    shutil.copytree(maml_results, root)
    shutil.copyfile(QUICK, root / "memory_vs_inner_steps.jsonl")  # beside the runs, as results/maml keeps it
    done = make(MAKE_TABLES, "--results", str(root), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Table I" not in done.stdout and "not placed" not in done.stdout + done.stderr
    assert done.stdout.count("\n## ") == 2 and "## MAML: Omniglot, outer-gradient estimators" in done.stdout
    assert sorted(p.name for p in (root / "tables").iterdir()) == [
        "maml.csv", "maml.md", "maml.tex", "maml_memory.csv", "maml_memory.md", "maml_memory.tex", "tables.md"]
    assert list(pd.read_csv(root / "tables" / "maml.csv")["estimator"]) == ["first_order"]
    figures = make(MAKE_FIGURES, "--results", str(root), cwd=tmp_path)
    assert figures.returncode == 0, figures.stderr
    assert "maml_memory: wrote" in figures.stdout and "figure1" not in figures.stdout


def test_the_paper_tables_never_take_a_maml_run(maml_results: Path, results_dir: Path, make_run,
                                                tmp_path: Path) -> None:
    """A MAML backprop run of Table I's backprop configuration (64 channels, 20-way 1-shot, 5-way test) stays out
    of Table I and out of the runs 'not placed'; the ProtoNet run beside it fills the row as before."""
    shutil.copytree(maml_results, results_dir / "maml")
    make_run("protonet", estimator="backprop", hardware="cpu", channels=64, train_way=20, shot=1, accuracy=0.97)
    summary_path = results_dir / "maml" / RUN / "seed0" / "summary.json"
    summary = json.loads(summary_path.read_text())
    config = summary["config"]
    summary["config"] = {**config, "estimator": {**config["estimator"], "name": "backprop"},
                         "model": {**config["model"], "channels": 64},
                         "task": {**config["task"], "train_way": 20, "test_way": 5}}
    summary_path.write_text(json.dumps(summary))
    done = make(MAKE_TABLES, "--results", str(results_dir), "--only", "table1", "maml", "--out", str(tmp_path / "o"),
                cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    table1 = pd.read_csv(tmp_path / "o" / "table1.csv")
    backprop = table1[(table1["estimator"] == "backprop") & (table1["shot"] == 1)]
    assert backprop[["runs", "ours"]].values.tolist() == [[1, "0.970 ± 0.010"]]  # the ProtoNet run only
    assert "not placed" not in done.stdout and "placed in no table" not in done.stderr
    maml = pd.read_csv(tmp_path / "o" / "maml.csv")
    assert sorted(maml["estimator"]) == ["backprop", "first_order"]


def test_the_memory_table_is_the_benchmarks_peaks_in_mib_and_their_growth(tmp_path: Path) -> None:
    records = [json.loads(line) for line in QUICK.read_text().splitlines()]
    peak = {(r["estimator"], r["inner_steps"]): r["peak_bytes"] for r in records}
    ks = sorted({k for _, k in peak})
    growth_column = f"Growth K={ks[-1]} / K={ks[0]}"
    table = memory_display(read_memory(QUICK)).set_index("Estimator")
    assert list(table.columns) == [*(f"K={k} (MiB)" for k in ks), growth_column]
    estimators = list(dict.fromkeys(r["estimator"] for r in records))
    assert estimators == list(LABELS)  # one whole --quick run: every estimator, at every K
    assert list(table.index) == [LABELS[e] for e in estimators]
    for (estimator, k), value in peak.items():
        assert table.loc[LABELS[estimator], f"K={k} (MiB)"] == f"{value / 2**20:,.2f}"
    growth = {e: peak[e, ks[-1]] / peak[e, ks[0]] for e in estimators}
    for estimator in estimators:
        assert table.loc[LABELS[estimator], growth_column] == f"{growth[estimator]:.2f}x"
    assert growth["second_order"] > 5 * max(growth[e] for e in estimators if e != "second_order")  # the point

    # An estimator measured at K=1 only has nothing to grow from: its later cells and its growth are "-".
    partial = tmp_path / "partial.jsonl"
    partial.write_text("".join(json.dumps(r) + "\n" for r in records
                               if r["estimator"] != "forward_mode" or r["inner_steps"] == ks[0]))
    assert memory_display(read_memory(partial)).set_index("Estimator").loc["forward mode"].tolist()[1:] == ["-"] * len(ks)


def test_the_memory_figure_is_drawn_from_the_benchmark_file(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()  # no runs are needed for it
    done = make(MAKE_FIGURES, "--results", str(tmp_path / "empty"), "--only", "maml_memory", "--memory-jsonl",
                str(QUICK), "--out", str(tmp_path / "f"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    with Image.open(tmp_path / "f" / "maml_memory.png") as image:
        assert image.size == (960, 720)
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3)
        assert len(np.unique(pixels, axis=0)) > 50  # lines, labels and a legend: not a blank canvas
    assert (tmp_path / "f" / "maml_memory.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "memory_vs_inner_steps.jsonl: no such file; write it with `python benchmarks/"),
        ("", "no records"),
        ("{QUICK_LINE}\n{\"estimator\": \"second_order\", \"inner_st", "line 2: not JSON"),
        ("{QUICK_LINE}\n{QUICK_LINE}\n", "line 2: second_order at K=1 again (first on line 1)"),
        ('{"estimator": "adam", "inner_steps": 1}\n', "line 1: estimator 'adam' is not one of second_order,"),
        ('{"estimator": "wsr", "inner_steps": 1, "peak_bytes": "big"}\n', "line 1: peak_bytes is 'big'"),
    ],
)
@pytest.mark.parametrize("script", [MAKE_TABLES, MAKE_FIGURES])
def test_a_missing_or_malformed_benchmark_file_is_one_line_and_exit_2(tmp_path: Path, script: Path,
                                                                     text: str | None, message: str) -> None:
    results = tmp_path / "results"
    results.mkdir()
    if text is not None:
        first = QUICK.read_text().splitlines()[0]
        (results / "memory_vs_inner_steps.jsonl").write_text(text.replace("{QUICK_LINE}", first))
    done = make(script, "--results", str(results), "--only", "maml_memory", cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{script.stem}: error: maml_memory: ") and message in lines[0]
    assert done.stdout == "" and sorted(p.name for p in results.iterdir()) == (
        [] if text is None else ["memory_vs_inner_steps.jsonl"])
