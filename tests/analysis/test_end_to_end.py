"""A real smoke sweep of Table II, then make_tables and make_figures on its output.

Runs in the normal suite (not `slow`): it is the check that the analysis reads what training writes.
Needs the Omniglot zips (ESMETA_DATA_DIR), like the other data tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.codegen_independent

REPO = Path(__file__).resolve().parents[2]


def test_table2_smoke_sweep_to_table_and_figure(table2_smoke_sweep: Path, tmp_path: Path) -> None:
    """`python -m esmeta.run sweep=table2 scale=smoke` (the session's shared run), then both scripts on it."""
    sweep, out = table2_smoke_sweep, tmp_path / "out"

    tables = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "make_tables.py"), "--results", str(sweep), "--out", str(out), "--only", "table2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert tables.returncode == 0, tables.stderr
    assert "4 runs from results directory" in tables.stdout and "(4 " in tables.stdout
    rows = [line for line in tables.stdout.splitlines() if re.match(r"\| [\d.]+ +\| [\d.]+ +\|", line)]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [("0.1", "0.001"), ("1", "0.01"), ("10", "0.1"), ("25", "0.25")]
    assert [c[4] for c in cells] == ["0.62 ± 0.028", "0.987 ± 0.009", "0.971 ± 0.011", "Collapse"]
    for c in cells:  # every row has our value: a number ± its std over test episodes, or Collapse
        assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}|Collapse", c[2]), c
        assert c[3] in ("6", "") and c[5] == "1"  # smoke: 2 x 3 episodes of the paper's 20,000 (none if collapsed)
    assert (out / "table2.md").is_file() and (out / "table2.tex").is_file()

    figures = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "make_figures.py"), "--results", str(sweep), "--out", str(out), "--only", "figure2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert figures.returncode == 0, figures.stderr
    # Table II's alpha 1 run is Table III's 16-channel v3-8 10-way row: Figure 2 draws its validation curve.
    with Image.open(out / "figure2.png") as image:
        assert image.size == (960, 720)
