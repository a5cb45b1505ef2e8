"""Figures: valid PNG/PDF files of the expected size with drawn content; missing figures reported, not drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from esmeta.analysis.figures import PIXELS, SPECS, make_figures
from esmeta.analysis.load import load_results
from esmeta.analysis.paper import load_manifest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
MAKE_FIGURES = REPO / "analysis" / "make_figures.py"
CURVE = [0.3, 0.55, 0.7, 0.78, 0.82, 0.85]


def curve(shift: float) -> list[float]:
    return [min(1.0, v + shift) for v in CURVE]


@pytest.fixture
def figure_runs(make_run) -> None:
    """At least one run for every figure, drawn from the paper rows each figure shows."""
    # Figure 1 (Table V): v3-8, alpha 10, sigma 0.1 at ways 20 / 10 / 5; a v3-256 point too.
    for way, pop, acc in ((20, 64, 0.95), (10, 128, 0.97), (5, 256, 0.96)):
        make_run(f"fig1/w{way}", alpha=10, sigma=0.1, train_way=way, pop_per_shard=pop, accuracy=acc)
    make_run("fig1/v3-256", hardware="tpu-v3-256", alpha=1, sigma=0.01, train_way=20, pop_per_shard=64,
             status="collapsed", accuracy=None, accuracy_std=None)
    # Figure 2 (Table III, v3-8 10-way): 64 / 32 / 16 channels; two seeds of 16 channels.
    for channels, pop, shift in ((64, 8, 0.1), (32, 32, 0.05)):
        make_run(f"fig2/c{channels}", channels=channels, pop_per_shard=pop, val_curve=curve(shift))
    for seed in (0, 1):
        make_run(f"fig2/c16_s{seed}", seed=seed, val_curve=curve(0.02 * seed))
    # Figure 3 (Table VII, v3-8 1024 10-way): four learning rates.
    for lr, acc in ((5e-4, 0.92), (5e-3, 0.94), (1e-3, 0.86), (1e-2, 0.93)):
        make_run(f"fig3/lr{lr}", estimator="finite_diff", distance="cosine", alpha=lr, accuracy=acc,
                 val_curve=curve(-0.1))
    # Figure 4 (Table I, v3-256): one-shot and five-shot.
    for shot in (1, 5):
        make_run(f"fig4/shot{shot}", hardware="tpu-v3-256", alpha=10, sigma=0.1, pop_per_shard=64, train_way=20,
                 shot=shot, val_curve=curve(0.05 * shot / 5))


def is_drawn(png: Path) -> bool:
    """Many distinct colours and a visible share of non-white pixels: not a blank canvas."""
    pixels = np.asarray(Image.open(png).convert("RGB"))
    colours = len(np.unique(pixels.reshape(-1, 3), axis=0))
    ink = float((pixels.min(axis=2) < 200).mean())
    return colours > 50 and ink > 0.02


def test_every_figure_is_a_png_and_pdf_of_the_expected_size_with_content(
    results_dir: Path, figure_runs, tmp_path: Path
) -> None:
    outcomes = make_figures(load_results(results_dir), load_manifest(), tmp_path / "figs")
    assert [o.key for o in outcomes] == list(SPECS)
    for outcome in outcomes:
        assert outcome.skipped is None, outcome
        png, pdf = outcome.files
        with Image.open(png) as image:
            assert image.format == "PNG" and image.size == PIXELS == (960, 720)
        assert is_drawn(png), png
        assert pdf.read_bytes().startswith(b"%PDF")


def test_missing_configurations_are_listed_beside_a_drawn_figure(results_dir: Path, figure_runs, tmp_path) -> None:
    outcomes = {o.key: o for o in make_figures(load_results(results_dir), load_manifest(), tmp_path)}
    # Figure 1 has runs for 5 of Table V's 8 rows (Figure 4's 5-shot run is Table V's v3-256 20-way row):
    # the others are listed by line.
    assert outcomes["figure1"].missing == [
        "v3-256, α=10, σ=0.1 at way 5, 10",
        "v3-256, α=1, σ=0.01 at way 10",
    ]
    assert outcomes["figure5"].missing == []  # wsr from Table II's alpha 1 row, fd from Table IV
    report = outcomes["figure1"].report("python -m esmeta.run sweep=figure1")
    assert report.count("\n") == 0 and "sweep=figure1" in report


def test_a_figure_without_runs_is_reported_and_not_drawn(results_dir: Path, make_run, tmp_path: Path) -> None:
    make_run("only_fig1", alpha=10, sigma=0.1, train_way=10, pop_per_shard=128, accuracy=0.97)
    outcomes = {o.key: o for o in make_figures(load_results(results_dir), load_manifest(), tmp_path)}
    assert outcomes["figure1"].files and outcomes["figure4"].skipped
    assert not (tmp_path / "figure4.png").exists() and not (tmp_path / "figure4.pdf").exists()
    line = outcomes["figure4"].report("python -m esmeta.run sweep=figure4")
    assert line == ("figure4 skipped: no runs for any of its 2 configurations (wsr, v3-256, α=10, σ=0.1, "
                    "16 channels, 20-way); run `python -m esmeta.run sweep=figure4`")


def test_a_figure_whose_runs_have_no_curves_is_skipped(results_dir: Path, make_run, tmp_path: Path) -> None:
    make_run("no_val", channels=64, pop_per_shard=8)  # Figure 2's 64-channel run, no metrics lines
    outcome = make_figures(load_results(results_dir), load_manifest(), tmp_path, ["figure2"])[0]
    assert outcome.skipped is not None and not outcome.files


def make_figures_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAKE_FIGURES), *args], capture_output=True, text=True, cwd=cwd,
                          timeout=180)


def test_cli_writes_under_results_and_reports_each_figure(results_dir: Path, make_run, tmp_path: Path) -> None:
    make_run("only_fig1", alpha=10, sigma=0.1, train_way=10, pop_per_shard=128, accuracy=0.97)
    done = make_figures_cli("--results", str(results_dir), "--only", "figure1", "figure4", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == f"1 run from results directory {results_dir} (1 completed)."
    assert lines[1].startswith(f"figure1: wrote {results_dir / 'figures' / 'figure1.png'}")
    assert lines[2].startswith("figure4 skipped: no runs")
    assert sorted(p.name for p in (results_dir / "figures").iterdir()) == ["figure1.pdf", "figure1.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--results", "{missing}"], "no such directory"),
        (["--results", "{empty}"], "no complete runs"),
        (["--source", "wandb", "--project", "p"], "--source wandb needs --entity"),
        (["--results", "{empty}", "--only", "figure6"], "--only figure6: unknown"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "empty").mkdir()
    args = [a.format(missing=tmp_path / "missing", empty=tmp_path / "empty") for a in args]
    done = make_figures_cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().startswith("make_figures: error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""
    assert not any(tmp_path.rglob("*.png"))


def test_cli_names_the_runs_it_could_place_in_no_row(results_dir: Path, make_run, tmp_path: Path) -> None:
    make_run("fig1", alpha=10, sigma=0.1, train_way=10, pop_per_shard=128, accuracy=0.97)
    make_run("stray", alpha=7, sigma=0.1, train_way=10, pop_per_shard=128, accuracy=0.9)
    done = make_figures_cli("--results", str(results_dir), "--only", "figure1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    stray = [line for line in done.stdout.splitlines() if line.startswith("not placed: ")]
    assert len(stray) == 1 and stray[0].startswith("not placed: stray (completed): nearest Table ")
    assert "alpha 7 (row: 10)" in stray[0]


def test_cli_leaves_out_a_curve_with_a_non_numeric_metric_and_names_it(results_dir: Path, make_run, tmp_path: Path
                                                                       ) -> None:
    """`"val/accuracy": "high"` in one line: figure 2 is drawn from the other runs, the run's curve listed."""
    for seed in (0, 1):
        make_run(f"fig2/c16_s{seed}", seed=seed, val_curve=curve(0.02 * seed))
    bad = results_dir / "fig2" / "c16_s1" / "metrics.jsonl"
    lines = bad.read_text().splitlines(keepends=True)
    bad.write_text(json.dumps({**json.loads(lines[0]), "val/accuracy": "high"}) + "\n" + "".join(lines[1:]))
    done = make_figures_cli("--results", str(results_dir), "--only", "figure2", cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert ("make_figures: left out the curve of run fig2/c16_s1 (its summary is used): metrics.jsonl row 1: "
            "val/accuracy is 'high', not a number") in done.stderr
    assert "figure2: wrote" in done.stdout and is_drawn(results_dir / "figures" / "figure2.png")


def test_runs_of_no_paper_figure_get_their_validation_curves_a_line_per_group(results_dir: Path, make_run,
                                                                            tmp_path: Path) -> None:
    for seed in (0, 1):
        make_run(f"mine/a7_s{seed}", alpha=7, seed=seed, val_curve=curve(0.02 * seed))
    make_run("mine/a3", alpha=3, val_curve=curve(-0.1))
    make_run("mine/no_curve", alpha=5)
    done = make_figures_cli("--results", str(results_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert all(f"{key} skipped: no runs" in done.stdout for key in SPECS)
    assert f"runs: wrote {results_dir / 'figures' / 'runs.png'}" in done.stdout
    assert sorted(p.name for p in (results_dir / "figures").iterdir()) == ["runs.pdf", "runs.png"]
    assert is_drawn(results_dir / "figures" / "runs.png")
    assert Image.open(results_dir / "figures" / "runs.png").size == PIXELS


def test_a_run_in_progress_is_drawn_dashed_from_its_checkpoint_never_averaged(results_dir: Path,
                                                                             tmp_path: Path) -> None:
    from esmeta.analysis.figures import runs_figure

    from esmeta import checkpoint

    from .conftest import run_config

    going = results_dir / "going"
    going.mkdir()
    records = [{"epoch": e, "episode": 100 * e, "val/accuracy": 0.5 + 0.1 * e, "train/loss": 1.0} for e in (1, 2, 3)]
    checkpoint.save(going / "checkpoint.msgpack", {"w": np.zeros(3, np.float32)},
                    checkpoint.Progress(step=300, records=records), run_config(alpha=10))
    results = load_results(results_dir)
    assert results.runs.empty and list(results.curve("going")["val/accuracy"]) == pytest.approx([0.6, 0.7, 0.8])
    outcome = runs_figure(results, tmp_path / "figures")  # the only curve is the run in progress: drawn
    assert outcome.skipped is None and is_drawn(tmp_path / "figures" / "runs.png")
