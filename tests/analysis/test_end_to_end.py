"""A real smoke sweep of Table II, then make_tables and make_figures on its output (about 90 s on 2 cores).

Runs in the normal suite (not `slow`): it is the check that the analysis reads what training writes.
Needs the Omniglot zips (ESMETA_DATA_DIR), like the other data tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def test_table2_smoke_sweep_to_table_and_figure(omniglot_root: Path, esmeta_cache_dir: Path, tmp_path: Path) -> None:
    if not (REPO / "conf" / "sweep" / "table2.yaml").is_file():
        pytest.fail("conf/sweep/table2.yaml is missing: the stored Table II sweep this test runs does not exist")
    env = {**os.environ, "ESMETA_DATA_DIR": str(omniglot_root), "ESMETA_CACHE_DIR": str(esmeta_cache_dir)}
    sweep = tmp_path / "table2_smoke"
    ran = subprocess.run(
        [sys.executable, "-m", "esmeta.run", "sweep=table2", "scale=smoke", "logger=none",
         f"hydra.sweep.dir={sweep}"],
        capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]

    tables = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "make_tables.py"), "--results", str(sweep), "--only", "table2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert tables.returncode == 0, tables.stderr
    assert "4 runs from results directory" in tables.stdout and "(4 " in tables.stdout
    rows = [line for line in tables.stdout.splitlines() if re.match(r"\| [\d.]+ +\| [\d.]+ +\|", line)]
    cells = [[c.strip() for c in row.strip("|").split("|")] for row in rows]
    assert [(c[0], c[1]) for c in cells] == [("0.1", "0.001"), ("1", "0.01"), ("10", "0.1"), ("25", "0.25")]
    assert [c[3] for c in cells] == ["0.62 ± 0.028", "0.987 ± 0.009", "0.971 ± 0.011", "Collapse"]
    for c in cells:  # every row has our value: a number ± its std over test episodes, or Collapse
        assert re.fullmatch(r"\d\.\d{3} ± \d\.\d{3}|Collapse", c[2]), c
        assert c[4] == "1"
    assert (sweep / "tables" / "table2.md").is_file() and (sweep / "tables" / "table2.tex").is_file()

    figures = subprocess.run(
        [sys.executable, str(REPO / "analysis" / "make_figures.py"), "--results", str(sweep), "--only", "figure2"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert figures.returncode == 0, figures.stderr
    # Table II's alpha 1 run is Table III's 16-channel v3-8 10-way row: Figure 2 draws its validation curve.
    with Image.open(sweep / "figures" / "figure2.png") as image:
        assert image.size == (960, 720)
