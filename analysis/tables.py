"""Tables I-VII in the paper's layout, our value beside the paper's; markdown, LaTeX and CSV.

Matching. A paper row names a configuration; a run matches it when every non-empty configuration
cell of the row equals the run's *requested* config value (floats to 1e-6 relative):
  tpu -> hardware "tpu-<tpu>" (empty: the backprop baseline, any hardware), estimator -> estimator,
  alpha and learning_rate -> alpha, sigma -> sigma (wsr), channels -> model channels,
  pop_per_core -> requested pop_per_shard, total_pop -> requested pop_per_shard x shards,
  train_way / shot / test_way -> task, distance -> distance name (only where the table has it).
A run may match rows of several tables (the paper repeats configurations).

Our cell for a row, from the runs it matched: see `cells`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
from tabulate import tabulate

from .cells import Cell, aggregate, finite
from .paper import Entry, config_columns, is_close, paper_text, parse_number

PAPER_EPISODES = 200 * 100  # the paper's budget: 200 epochs of 100 episodes
STD_NOTE = (
    "Ours: mean ± std over runs (seeds, ddof=1) where several ran; with one run, its test accuracy ± its "
    "std over test episodes (ddof=1), as the paper reports."
)

# paper column -> (runs column, comparison)
MATCH = {
    "tpu": ("hardware", "tpu"),
    "estimator": ("estimator", "text"),
    "alpha": ("alpha", "number"),
    "learning_rate": ("alpha", "number"),
    "sigma": ("sigma", "number"),
    "channels": ("channels", "number"),
    "pop_per_core": ("pop_per_shard", "number"),
    "total_pop": ("total_pop", "number"),
    "train_way": ("train_way", "number"),
    "shot": ("shot", "number"),
    "test_way": ("test_way", "number"),
    "distance": ("distance", "text"),
}


@dataclass(frozen=True)
class Column:
    """A displayed configuration column: the paper CSV column, its header, the text for an empty cell."""

    key: str
    header: str
    empty: str = "N/A"  # shown for an empty paper cell


@dataclass(frozen=True)
class TableSpec:
    """The paper's layout of one table: its configuration columns, caption, optional pivot column."""

    key: str
    numeral: str
    columns: tuple[Column, ...]
    caption: str
    pivot: Column | None = None  # Table VII: one column pair per learning rate


TPU = Column("tpu", "TPU")
ALPHA = Column("alpha", "α")
SIGMA = Column("sigma", "σ")
CHANNELS = Column("channels", "Channels")
POP_PER_CORE = Column("pop_per_core", "Pop. per core")
TOTAL_POP = Column("total_pop", "Total pop.")
WAY = Column("train_way", "Way")
SHOT = Column("shot", "Shot")
DISTANCE = Column("distance", "Distance")
LEARNING_RATE = Column("learning_rate", "Learning Rate")

SPECS: dict[str, TableSpec] = {
    "table1": TableSpec(
        "table1", "I",
        (Column("tpu", "TPU", empty="ProtoNet"), ALPHA, SIGMA, CHANNELS, POP_PER_CORE, TOTAL_POP, WAY, SHOT),
        "The best wsr configurations beside the backprop-trained ProtoNet (5-way test).",
    ),
    "table2": TableSpec(
        "table2", "II", (ALPHA, SIGMA),
        "Effect of varying α and σ on test accuracy, with all other variables held constant "
        "(TPU=v3-8, Channels=16, Pop. per core=128, Total pop.=1024, Way=10).",
    ),
    "table3": TableSpec(
        "table3", "III", (TPU, CHANNELS, POP_PER_CORE, TOTAL_POP, WAY),
        "v3-8 rows: α = 1, σ = 0.01; v3-256 rows: α = 10, σ = 0.1.",
    ),
    "table4": TableSpec("table4", "IV", (TPU, DISTANCE, LEARNING_RATE, WAY), "Finite differences, 5-shot."),
    "table5": TableSpec(
        "table5", "V", (TPU, ALPHA, SIGMA, TOTAL_POP, WAY), "All of the above are using 16-channel convolutions."
    ),
    "table6": TableSpec("table6", "VI", (TPU, ALPHA, SIGMA, CHANNELS, TOTAL_POP, WAY), "One-shot wsr."),
    "table7": TableSpec(
        "table7", "VII", (TPU, TOTAL_POP, WAY),
        "Effect of different learning rates on test accuracy in finite differences ProtoNet; all use cosine "
        "similarity.",
        pivot=LEARNING_RATE,
    ),
}


def display_value(column: Column, text: str) -> str:
    """A paper configuration cell as the paper prints it ("5E-03", "Cosine", "N/A")."""
    text = text.strip()
    if not text:
        return column.empty
    if column.key == "learning_rate":
        return f"{float(text):.0E}"
    if column.key == "distance":
        return text.capitalize()
    return text


# --- matching -------------------------------------------------------------------------------------


def column_matches(runs: pd.DataFrame, paper_row: pd.Series) -> dict[str, pd.Series]:
    """For each non-empty configuration cell of `paper_row`: which runs agree with it (a boolean Series)."""
    masks = {}
    for column in config_columns(paper_row.to_frame().T):
        text = str(paper_row[column]).strip()
        if not text:
            continue
        if column not in MATCH:
            raise ValueError(f"paper column {column!r} has no run counterpart; add it to analysis.tables.MATCH")
        target, kind = MATCH[column]
        values = runs[target] if target in runs.columns else pd.Series(None, index=runs.index, dtype=object)
        if kind == "tpu":
            masks[column] = values == f"tpu-{text}"
        elif kind == "text":
            masks[column] = values == text
        else:
            expected = parse_number(text)
            masks[column] = values.map(lambda v, e=expected: finite(v) and is_close(float(v), e)).astype(bool)
    return masks


def match_runs(runs: pd.DataFrame, paper_row: pd.Series) -> pd.DataFrame:
    """The runs whose requested configuration matches every non-empty configuration cell of `paper_row`."""
    if runs.empty:
        return runs
    mask = pd.Series(True, index=runs.index)
    for agrees in column_matches(runs, paper_row).values():
        mask &= agrees
    return runs[mask.astype(bool)]


def unplaced_runs(runs: pd.DataFrame, tables: list[tuple[TableSpec, pd.DataFrame]]) -> list[str]:
    """A line for every run that matches no row of `tables`: the nearest row and the settings that differ."""
    if runs.empty:
        return []
    placed = pd.Series(False, index=runs.index)
    differ: dict[int, tuple[int, str]] = {}  # run index -> (settings that differ, text) for its nearest row
    for spec, paper in tables:
        for number, (_, row) in enumerate(paper.iterrows(), start=1):
            masks = column_matches(runs, row)
            agrees = pd.Series(True, index=runs.index)
            for mask in masks.values():
                agrees &= mask
            placed |= agrees
            for i in runs.index[~agrees.astype(bool)]:
                wrong = [c for c, mask in masks.items() if not mask[i]]
                if i not in differ or len(wrong) < differ[i][0]:
                    shown = ", ".join(f"{c} {_run_value(runs.loc[i], c)} (row: {row[c]})" for c in wrong)
                    differ[i] = (len(wrong), f"nearest Table {spec.numeral} row {number}: {shown}")
    lines = []
    for i in runs.index[~placed.astype(bool)]:
        reason = differ[i][1] if i in differ else "no table was built"
        lines.append(f"{runs.loc[i, 'run_id']} ({runs.loc[i, 'status']}): {reason}")
    return lines


def _run_value(run: pd.Series, column: str) -> str:
    """A run's value for a paper column, as the paper would write it."""
    target, kind = MATCH[column]
    value = run.get(target)
    if kind == "tpu":
        return str(value)[len("tpu-"):] if isinstance(value, str) and value.startswith("tpu-") else str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:g}" \
        if isinstance(value, float) else str(value)


PROTOCOLS = {  # model.norm_stats: how the test episodes were normalized
    "running": "running, the training running averages (the reference ProtoNet's eval mode)",
    "episode": "episode, each test episode's own support+query statistics (transductive)",
    "support": "support, each test episode's support statistics",
}


# --- a whole table --------------------------------------------------------------------------------


@dataclass
class BuiltTable:
    """One table ready to render: the paper-layout frames, the long CSV frame and the notes."""

    spec: TableSpec
    entry: Entry
    layout: pd.DataFrame  # the paper's rows and columns, our and the paper's accuracy side by side
    long: pd.DataFrame  # one row per paper row: configuration, paper, ours, counts, notes
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"Table {self.spec.numeral}: {self.entry.title}"


def _row_label(spec: TableSpec, row: pd.Series) -> str:
    columns = spec.columns + ((spec.pivot,) if spec.pivot else ())
    return ", ".join(f"{c.header} {display_value(c, str(row[c.key]))}" for c in columns)


def build_table(spec: TableSpec, entry: Entry, paper: pd.DataFrame, runs: pd.DataFrame,
                in_progress: pd.DataFrame | None = None) -> BuiltTable:
    """Match every paper row to our runs (and runs in progress) and lay the table out as the paper does."""
    matched = [match_runs(runs, row) for _, row in paper.iterrows()]
    going = in_progress if in_progress is not None else pd.DataFrame()
    cells = [aggregate(m, entry.command, match_runs(going, row) if not going.empty else None)
             for m, (_, row) in zip(matched, paper.iterrows())]
    long = paper.rename(columns={"accuracy": "paper_accuracy", "accuracy_std": "paper_accuracy_std",
                                 "collapsed": "paper_collapsed"}).copy()
    long.insert(0, "row", range(1, len(paper) + 1))
    long["paper"] = [paper_text(row) for _, row in paper.iterrows()]
    long["ours"] = [c.text for c in cells]
    long["ours_mean"] = [c.mean for c in cells]
    long["ours_std"] = [c.std for c in cells]
    for name in ("runs", "completed", "collapsed", "failed", "skipped", "in_progress", "episodes"):
        long[name] = [getattr(c, name) for c in cells]
    long["notes"] = ["; ".join(c.notes) for c in cells]

    notes = []
    unmatched = [_row_label(spec, row) for (_, row), c in zip(paper.iterrows(), cells) if c.runs == 0 and not c.in_progress]
    if unmatched:
        which = "any row" if len(unmatched) == len(cells) else "these rows"
        notes.append(f"No run matched {which}; run `{entry.command}` (add `scale=smoke` for a quick version)"
                     + ("." if len(unmatched) == len(cells) else ":" + "".join(f"\n  - {u}" for u in unmatched)))
    for (_, row), cell in zip(paper.iterrows(), cells):
        if cell.runs or cell.in_progress:
            notes.extend(f"{_row_label(spec, row)}: {note}." for note in cell.notes)
    short = any(c.episodes is not None and c.episodes < PAPER_EPISODES for c in cells)
    if short and spec.pivot is not None:
        notes.extend(f"{_row_label(spec, row)}: {c.episodes:.0f} episodes of the paper's {PAPER_EPISODES:,}."
                     for (_, row), c in zip(paper.iterrows(), cells) if c.episodes is not None)
    if any((m["scale"] == "smoke").any() for m in matched if not m.empty):
        notes.append("Some runs are smoke-scale (scale=smoke: a few episodes): not comparable to the paper's numbers.")
    used = pd.concat([m[m["run_id"].isin(c.run_ids)] for m, c in zip(matched, cells) if c.run_ids]) \
        if any(c.run_ids for c in cells) else None
    if used is not None and short:
        notes.append(budget_note(used))
    if used is not None:
        counts = used["test_protocol"].fillna("unknown").value_counts()
        notes.append("Test batch norm (model.norm_stats): " + "; ".join(
            f"{PROTOCOLS.get(name, name)} ({n} run{'s' if n > 1 else ''})" for name, n in sorted(counts.items())
        ) + ".")

    if spec.pivot is None:
        layout = _flat_layout(spec, paper, cells, episodes=short)
    else:
        layout = _pivot_layout(spec, paper, cells)
    layout.columns = [c.header for c in spec.columns] + list(layout.columns[len(spec.columns):])
    return BuiltTable(spec, entry, layout, long, notes)


def budget_note(used: pd.DataFrame) -> str:
    """What budget the completed runs trained under: episodes reached of the paper's, the time budget, the scale."""
    done = used[used["status"] == "completed"]
    episodes = done["episodes"].dropna().astype(float)
    reached = f"{episodes.min():.0f}" if episodes.min() == episodes.max() else f"{episodes.min():.0f}-{episodes.max():.0f}"
    budgets = sorted({f"{m:g} {clock or 'wall'}-clock minutes" for m, clock in zip(done["max_minutes"], done["budget_clock"])
                      if isinstance(m, (int, float)) and math.isfinite(m) and m > 0})
    scales = ", ".join(sorted({s for s in done["scale"] if isinstance(s, str)}))
    return (f"Budget: the runs reached {reached} training episodes of the paper's {PAPER_EPISODES:,}"
            + (f", under a time budget of {' / '.join(budgets)} per run" if budgets else "")
            + (f" (scale={scales})" if scales else "") + ": accuracies below the paper's may be the budget's.")


def _flat_layout(spec: TableSpec, paper: pd.DataFrame, cells: list[Cell], episodes: bool = False) -> pd.DataFrame:
    rows = []
    for (_, row), cell in zip(paper.iterrows(), cells):
        config = [display_value(c, str(row[c.key])) for c in spec.columns]
        reached = ["" if cell.episodes is None else f"{cell.episodes:.0f}"] if episodes else []
        rows.append(config + [cell.text, *reached, paper_text(row), str(cell.runs)])
    return pd.DataFrame(rows, columns=[c.key for c in spec.columns]
                        + ["Accuracy (ours)", *(["Episodes (ours)"] if episodes else []), "Accuracy (paper)", "Runs"])


def _pivot_layout(spec: TableSpec, paper: pd.DataFrame, cells: list[Cell]) -> pd.DataFrame:
    """Table VII: a row per (configuration) and a pair of columns (ours, paper) per pivot value, in numeric order
    (the paper's CSV lists its learning rates 5e-4, 5e-3, 1e-3, 1e-2)."""
    assert spec.pivot is not None
    keys = [c.key for c in spec.columns]
    pivots = sorted(dict.fromkeys(paper[spec.pivot.key]), key=lambda p: parse_number(str(p)))
    groups: dict[tuple, dict[str, tuple[str, str]]] = {}
    for (_, row), cell in zip(paper.iterrows(), cells):
        group = tuple(row[k] for k in keys)
        groups.setdefault(group, {})[row[spec.pivot.key]] = (cell.text, paper_text(row))
    rows = []
    for group, values in groups.items():
        config = [display_value(c, str(v)) for c, v in zip(spec.columns, group)]
        pairs = [part for p in pivots for part in values.get(p, ("", ""))]
        rows.append(config + pairs)
    value_headers = [f"{display_value(spec.pivot, p)} ({who})" for p in pivots for who in ("ours", "paper")]
    return pd.DataFrame(rows, columns=keys + value_headers)


# --- rendering ------------------------------------------------------------------------------------


def markdown_table(frame: pd.DataFrame) -> str:
    """A pipe table, every cell as given (no number re-formatting)."""
    return tabulate(frame.values.tolist(), headers=list(frame.columns), tablefmt="pipe", disable_numparse=True,
                    stralign="left")


def render_markdown(table: BuiltTable) -> str:
    """Heading, table, caption and notes, as markdown."""
    parts = [f"## {table.title}", "", markdown_table(table.layout), "", table.spec.caption, "", STD_NOTE]
    if table.notes:
        parts += ["", "Notes:", ""] + [f"- {n}" for n in table.notes]
    return "\n".join(parts) + "\n"


def _latex_escape(text: str) -> str:
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("#", r"\#"), ("_", r"\_"),
                          ("$", r"\$")):
        text = text.replace(char, escaped)
    return text


def _latex_cell(text: object) -> str:
    return _latex_escape(str(text)).replace("±", r"$\pm$").replace("α", r"$\alpha$").replace("σ", r"$\sigma$")


def frame_latex(frame: pd.DataFrame, caption: str, label: str) -> str:
    """A LaTeX table (booktabs) of plain-text cells, escaped here, with caption and label."""
    latex = frame.map(_latex_cell)
    latex.columns = [_latex_cell(c) for c in frame.columns]
    return latex.to_latex(index=False, escape=False, caption=_latex_cell(caption), label=label,
                          column_format="l" * latex.shape[1])


def render_latex(table: BuiltTable) -> str:
    """The table in the paper's layout as LaTeX (α as $\\alpha$, ± as $\\pm$)."""
    return frame_latex(table.layout, f"{table.title}. {table.spec.caption}", f"tab:{table.spec.key}")
