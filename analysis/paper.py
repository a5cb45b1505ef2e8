"""The paper's reported numbers (Sheng & He 2021, Tables I-VII) and the sweep manifest.

The tables are the project's own copy of `shared/paper/tables/*.csv`, shipped as data in
`analysis/paper_tables/` with the same column names. They are read as text so that the paper's
numbers print exactly as printed in the paper ("0.62", "5e-3"), never re-rounded.

The manifest (`sweeps/manifest.yaml`) names, for each table and figure, the sweep that produces its
runs (`python -m esmeta.run sweep=<name>`) or, for a measurement that is no sweep, the `command` that
does, the paper CSV and a title. Without the file, the defaults below say the same. Beyond the paper:
`maml` (our MAML runs beside Finn et al. 2017, `maml_finn2017.csv`) and `maml_memory` (the MAML memory
benchmark's table and figure).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

PAPER_DIR = Path(__file__).resolve().parent / "paper_tables"
REPO_ROOT = Path(__file__).resolve().parents[1]
MANIFEST = REPO_ROOT / "sweeps" / "manifest.yaml"

# Result columns of the paper CSVs; every other column describes the configuration.
RESULT_COLUMNS = ("accuracy", "accuracy_std", "collapsed")

TABLE_KEYS = tuple(f"table{i}" for i in range(1, 8))
FIGURE_KEYS = tuple(f"figure{i}" for i in range(1, 6))

DEFAULT_MANIFEST: dict[str, dict[str, str]] = {
    "table1": {"sweep": "table1", "paper": "table1_summary.csv", "title": "Summary of results"},
    "table2": {"sweep": "table2", "paper": "table2_alpha_sigma.csv", "title": "Hyperparameter optimization"},
    "table3": {"sweep": "table3", "paper": "table3_channels.csv", "title": "Modifying number of channels"},
    "table4": {"sweep": "table4", "paper": "table4_finite_diff_5shot.csv", "title": "Finite differences 5-shot results"},
    "table5": {"sweep": "table5", "paper": "table5_train_way.csv", "title": "Modifying train way"},
    "table6": {"sweep": "table6", "paper": "table6_one_shot.csv", "title": "One-shot results"},
    "table7": {
        "sweep": "table7",
        "paper": "table7_finite_diff_lr.csv",
        "title": "Finite differences: learning rate versus test accuracy",
    },
    "figure1": {"sweep": "figure1", "title": "Modifying train way"},
    "figure2": {"sweep": "figure2", "title": "Convergence speed based on number of channels"},
    "figure3": {"sweep": "figure3", "title": "Modifying finite differences (cosine similarity) learning rate"},
    "figure4": {"sweep": "figure4", "title": "One-shot versus five-shot learning for v3-256 TPU"},
    "figure5": {"sweep": "figure5", "title": "Evolution strategy versus finite differences"},
    "maml": {"sweep": "maml", "paper": "maml_finn2017.csv", "title": "Omniglot, outer-gradient estimators"},
    "maml_memory": {
        "command": "python benchmarks/memory_vs_inner_steps.py > results/maml/memory_vs_inner_steps.jsonl",
        "title": "Peak memory of a MAML outer step against inner steps",
    },
}


@dataclass(frozen=True)
class Entry:
    """One manifest entry: the sweep that produces a table's or figure's runs."""

    key: str
    sweep: str | None
    title: str
    paper: str | None = None
    run: str | None = None  # the command that produces its input where that is no sweep (a benchmark)

    @property
    def command(self) -> str:
        """The command that runs this entry's sweep (or produces its input)."""
        return self.run or f"python -m esmeta.run sweep={self.sweep}"


def load_manifest(path: Path | None = None) -> dict[str, Entry]:
    """The manifest's entries by key (`table1`, ..., `figure5`); code defaults fill what the file lacks.

    A missing file means the defaults; a file that exists but is not a mapping of mappings is an
    error (ValueError naming the file), never silently replaced.
    """
    path = MANIFEST if path is None else Path(path)
    merged = {key: dict(value) for key, value in DEFAULT_MANIFEST.items()}
    if path.is_file():
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise ValueError(f"{path}: expected a mapping of table/figure keys to {{sweep, paper, title}}")
        for key, value in data.items():
            merged.setdefault(str(key), {}).update({k: str(v) for k, v in value.items() if v is not None})
    entries = {}
    for key, value in merged.items():
        sweep = value.get("sweep", None if "command" in value else key)
        entries[key] = Entry(key=key, sweep=sweep, title=value.get("title", key), paper=value.get("paper"),
                             run=value.get("command"))
    return entries


def load_paper_table(entry: Entry) -> pd.DataFrame:
    """The paper's rows for one table, every cell as the text printed in the CSV ("" where empty)."""
    if entry.paper is None:
        raise ValueError(f"manifest entry {entry.key} names no paper table")
    return pd.read_csv(PAPER_DIR / entry.paper, dtype=str, keep_default_na=False)


def parse_number(text: str) -> float | None:
    """A CSV cell as a float, or None for an empty cell."""
    text = text.strip()
    return float(text) if text else None


def paper_text(row: pd.Series | dict[str, Any]) -> str:
    """The paper's accuracy cell as printed: "0.987 ± 0.009", "0.987", or "Collapse"."""
    if str(row.get("collapsed", "")).strip().lower() == "true":
        return "Collapse"
    accuracy = str(row.get("accuracy", "")).strip()
    std = str(row.get("accuracy_std", "")).strip()
    if not accuracy:
        return "-"
    return f"{accuracy} ± {std}" if std else accuracy


def config_columns(table: pd.DataFrame) -> list[str]:
    """The columns of a paper table that describe a configuration (not a result)."""
    return [c for c in table.columns if c not in RESULT_COLUMNS]


def is_close(a: float, b: float) -> bool:
    """Float equality for configuration values (1e-6 relative)."""
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=0.0)
