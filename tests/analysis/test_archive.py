"""The results archive: only a run's small files travel, and the committed tables are what make_tables
rebuilds from the committed summaries (so the two can never drift apart)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from esmeta.analysis import archive

REPO = Path(__file__).resolve().parents[2]
ARCHIVE = Path("results") / "cpu"  # relative: the tables name their source as the archive tool was given it


def test_archive_copies_summary_metrics_and_done_only_then_rebuilds(results_dir: Path, make_run, tmp_path: Path,
                                                                   capsys) -> None:
    run = make_run("table2/0_point=table2-a1-s0.01", alpha=1, sigma=0.01, val_curve=[0.5, 0.7])
    (run / "params.msgpack").write_bytes(b"\0" * 64)
    (run / "checkpoint.msgpack").write_bytes(b"\0" * 64)
    (run / "wandb").mkdir()
    (run / "wandb" / "run.wandb").write_bytes(b"x")
    make_run("table2/1_unfinished", alpha=10, sigma=0.1, done=False)
    out = tmp_path / "archive"
    assert archive.main(["--results", str(results_dir), "--out", str(out)]) == 0
    copied = out / "table2" / "0_point=table2-a1-s0.01"
    assert sorted(p.name for p in copied.iterdir()) == ["done", "metrics.jsonl", "summary.json"]
    assert (copied / "summary.json").read_bytes() == (run / "summary.json").read_bytes()
    assert not (out / "table2" / "1_unfinished").exists()  # incomplete runs are not archived
    assert (out / "tables" / "table2.md").is_file() and (out / "figures" / "figure5.png").is_file()
    assert "0.900 ± 0.010" in (out / "tables" / "table2.md").read_text()
    err = capsys.readouterr().err
    assert "archived 1 run into" in err
    assert "archive: not archived: table2/1_unfinished: no `done` marker" in err  # said, with why


def test_archive_of_nothing_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert archive.main(["--results", str(tmp_path / "empty"), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().startswith("archive: error: no complete runs in")
    assert not (tmp_path / "out" / "tables").exists()


@pytest.mark.parametrize("out", ["{r}", "{r}/archive", "{r}/.."])
def test_an_archive_overlapping_its_source_is_refused_before_anything_is_touched(results_dir: Path, make_run,
                                                                                 capsys, out: str) -> None:
    """--out onto --results used to delete a run's `done` before failing; --out inside it archived its own copies
    on each rerun (2, 4, 6 runs)."""
    make_run("a", val_curve=[0.5])
    make_run("b", seed=1, val_curve=[0.6])
    before = {p: p.read_bytes() for p in results_dir.parent.rglob("*") if p.is_file()}
    assert archive.main(["--results", str(results_dir), "--out", out.format(r=results_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("archive: error: --results ") and "overlap" in err and "\n" not in err
    assert {p: p.read_bytes() for p in results_dir.parent.rglob("*") if p.is_file()} == before


def test_a_rearchived_run_is_replaced_whole(results_dir: Path, make_run, tmp_path: Path) -> None:
    """A failed rerun without metrics.jsonl: the archive keeps no curve of the earlier run beside its summary."""
    make_run("keep", seed=1, val_curve=[0.6])
    run = make_run("rerun", val_curve=[0.5, 0.7])
    out = tmp_path / "archive"
    assert archive.main(["--results", str(results_dir), "--out", str(out)]) == 0
    (run / "metrics.jsonl").unlink()
    (run / "summary.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom",
                                                  "config": json.loads((run / "summary.json").read_text())["config"]}))
    assert archive.main(["--results", str(results_dir), "--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "rerun").iterdir()) == ["done", "summary.json"]
    assert (out / "rerun" / "summary.json").read_bytes() == (run / "summary.json").read_bytes()


def test_runs_with_a_bad_metric_or_summary_are_not_archived_and_named(results_dir: Path, make_run, tmp_path: Path,
                                                                      capsys) -> None:
    make_run("good", val_curve=[0.5, 0.7])
    (make_run("word", seed=1, val_curve=[0.5]) / "metrics.jsonl").write_text('{"epoch": 1, "val/accuracy": "high"}\n')
    edited = make_run("edited", seed=2, accuracy=7.5)
    out = tmp_path / "archive"
    assert archive.main(["--results", str(results_dir), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "archive: not archived: word: metrics.jsonl row 1: val/accuracy is 'high', not a number" in err
    assert "archive: not archived: edited: summary.json: test_accuracy is 7.5, outside its range" in err
    assert sorted(p.parent.name for p in out.rglob("done")) == ["good"] and edited.exists()
    assert (out / "figures" / "figure5.png").is_file() and "archived 1 run into" in err


def test_an_archive_whose_tables_cannot_be_written_copies_nothing(results_dir: Path, make_run, tmp_path: Path,
                                                                  capsys) -> None:
    """Copied runs are never left beside stale tables: the rebuild's folders are checked before the first copy."""
    make_run("a", val_curve=[0.5])
    out = tmp_path / "archive"
    out.mkdir()
    (out / "tables").write_text("a file where the tables go")
    assert archive.main(["--results", str(results_dir), "--out", str(out)]) == 2
    assert capsys.readouterr().err.startswith(f"archive: error: output directory {out / 'tables'} is not writable")
    assert sorted(p.name for p in out.iterdir()) == ["tables"]


def archived_runs(archive: Path = ARCHIVE) -> list[Path]:
    return sorted(p.parent for p in (REPO / archive).rglob("done"))


@pytest.mark.parametrize("archive, table", [(ARCHIVE, "table2.md"), (Path("results") / "maml", "maml.md")])
def test_committed_archive_tables_are_what_make_tables_rebuilds(archive: Path, table: str, tmp_path: Path) -> None:
    """results/cpu (the paper's tables at the CPU budget) and results/maml (the MAML table, its memory table)."""
    out = tmp_path / "tables"
    proc = subprocess.run([sys.executable, "analysis/make_tables.py", "--results", str(archive), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    committed = REPO / archive / "tables"
    names = sorted(p.name for p in committed.iterdir())
    assert names == sorted(p.name for p in out.iterdir()) and table in names
    for name in names:
        assert (out / name).read_text() == (committed / name).read_text(), f"{committed / name} is stale: rerun " \
            f"python analysis/archive.py (or make_tables --results {archive} --out {archive}/tables)"


@pytest.mark.parametrize("archive", [ARCHIVE, Path("results") / "fd_readings", Path("results") / "readings"])
def test_every_archived_run_names_what_produced_it_and_holds_no_large_files(archive: Path) -> None:
    runs = archived_runs(archive)
    assert runs
    for run in runs:
        assert {p.name for p in run.iterdir()} <= {"done", "summary.json", "metrics.jsonl"}, run
        summary = json.loads((run / "summary.json").read_text())
        provenance = summary["provenance"]
        assert len(provenance["commit"]) == 40 and provenance["dirty"] is False, run  # committed code only
        assert provenance["command"].split()[1:3] == ["-m", "esmeta.run"]
        if archive == ARCHIVE:  # the tables' archive: every run at the CPU budget
            assert "scale=cpu" in provenance["command"] and summary["config"]["scale"]["name"] == "cpu"
        assert summary["status"] in ("completed", "collapsed", "skipped"), run


def layout_table(markdown: str) -> str:
    """The pipe table of a rendered table file (its first block of `|` lines)."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize("name", ["table1", "table2", "table7"])
def test_the_readme_reproduction_section_shows_the_archived_tables(name: str) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Reproduction", 1)[1].split("\n## ", 1)[0]
    assert layout_table((REPO / ARCHIVE / "tables" / f"{name}.md").read_text()) in section, \
        f"README's Reproduction section does not show the archived {name}: paste results/cpu/tables/{name}.md's table"
    shown = re.findall(r"\]\((results/cpu/figures/[\w.]+\.png)\)", section)
    assert "results/cpu/figures/figure5.png" in shown
    for figure in shown:
        assert (REPO / figure).is_file(), f"README shows {figure}, which the archive lacks"
