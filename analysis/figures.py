"""Figures 1-5 of the paper, rebuilt from our runs (matplotlib, Agg backend, PNG and PDF).

Each figure selects its runs through the paper's table rows that describe them (the same matching
as the tables) and draws one line per group of rows:
  1  test accuracy against train way, a line per TPU/alpha/sigma            Table V's rows
  2  validation accuracy over epochs, a line per channel count             Table III's v3-8 10-way rows
  3  test accuracy against finite-differences learning rate, a line per
     TPU/population (cosine)                                               Table VII's rows
  4  validation accuracy over epochs, one-shot against five-shot           Table I's v3-256 rows
  5  validation accuracy over epochs, wsr against finite differences      Table II's alpha 1 row and
                                                                           Table IV's v3-8 cosine 10-way row
Accuracy points: mean ± std over seeds (ddof=1), or one run's test accuracy ± std over its test
episodes; a collapsed configuration is an "x" at chance level; the paper's values, where it printed
them, are dashed lines with hollow markers in the same colour. Curves: mean over seeds per epoch,
with a ±1 std band (ddof=1) where several seeds ran.

A figure none of whose runs exist is reported and not drawn; one with some runs is drawn, and the
configurations without runs are reported. Where no paper figure has a run, `runs_figure` draws the runs
there are: validation accuracy against training episodes, a line per compare group (`compare.group_runs`).
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator  # noqa: E402

from .cells import aggregate, latest_per_seed  # noqa: E402
from .load import Results  # noqa: E402
from .paper import Entry, load_paper_table, parse_number  # noqa: E402
from .settings import one_setting  # noqa: E402
from .tables import LEARNING_RATE, display_value, match_runs  # noqa: E402

FIGSIZE = (6.4, 4.8)  # inches
DPI = 150  # PNG: 960 x 720 pixels
PIXELS = (int(FIGSIZE[0] * DPI), int(FIGSIZE[1] * DPI))

Row = dict[str, str]


@dataclass(frozen=True)
class FigureSpec:
    """What one figure shows: which paper rows (so which runs), how rows group into lines, the axes."""

    key: str
    number: int
    subtitle: str  # the configuration the figure holds fixed
    sources: tuple[tuple[str, Callable[[Row], bool]], ...]  # (paper table, row filter)
    line: Callable[[Row], str]  # a row's line label
    kind: str  # "points" (x from a paper column) or "curves" (validation accuracy over epochs)
    x: str = ""  # paper column on the x axis (points)
    xlabel: str = "epoch"
    xname: str = ""  # short name of x in reports ("way", "lr")
    ylabel: str = "validation accuracy"
    xlog: bool = False


def _lr(row: Row) -> str:
    return display_value(LEARNING_RATE, row["learning_rate"])


SPECS: dict[str, FigureSpec] = {
    "figure1": FigureSpec(
        "figure1", 1, "wsr, 16 channels, 5-shot, 5-way test",
        (("table5", lambda r: True),),
        line=lambda r: f"{r['tpu']}, α={r['alpha']}, σ={r['sigma']}",
        kind="points", x="train_way", xlabel="train way", xname="way", ylabel="test accuracy",
    ),
    "figure2": FigureSpec(
        "figure2", 2, "wsr, v3-8, α=1, σ=0.01, 10-way 5-shot",
        (("table3", lambda r: r["tpu"] == "v3-8" and r["train_way"] == "10"),),
        line=lambda r: f"{r['channels']} channels (pop. {r['total_pop']})",
        kind="curves",
    ),
    "figure3": FigureSpec(
        "figure3", 3, "cosine distance, 5-shot, 5-way test",
        (("table7", lambda r: True),),
        line=lambda r: f"{r['tpu']}, pop. {r['total_pop']}, way {r['train_way']}",
        kind="points", x="learning_rate", xlabel="finite-differences learning rate", xname="lr",
        ylabel="test accuracy",
        xlog=True,
    ),
    "figure4": FigureSpec(
        "figure4", 4, "wsr, v3-256, α=10, σ=0.1, 16 channels, 20-way",
        (("table1", lambda r: r["tpu"] == "v3-256"),),
        line=lambda r: f"{r['shot']}-shot",
        kind="curves",
    ),
    "figure5": FigureSpec(
        "figure5", 5, "v3-8, 10-way 5-shot",
        (
            ("table2", lambda r: r["alpha"] == "1"),
            ("table4", lambda r: r["tpu"] == "v3-8" and r["distance"] == "cosine" and r["train_way"] == "10"),
        ),
        line=lambda r: (
            f"wsr (α={r['alpha']}, σ={r['sigma']}, pop. {r['total_pop']})" if r["estimator"] == "wsr"
            else f"finite differences (lr {_lr(r)}, {r.get('distance', '')})"
        ),
        kind="curves",
    ),
}


@dataclass
class Outcome:
    """What happened to one figure: the files written, or why it was skipped, and what is missing."""

    key: str
    files: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # line or point labels without runs
    skipped: str | None = None

    def report(self, command: str) -> str:
        """One line for the user."""
        if self.skipped:
            return f"{self.key} skipped: {self.skipped}; run `{command}`"
        line = f"{self.key}: wrote {', '.join(str(f) for f in self.files)}"
        if self.missing:
            line += f" (no runs for {'; '.join(self.missing)}: run `{command}`)"
        return line


def _rows(spec: FigureSpec, entries: dict[str, Entry]) -> list[Row]:
    rows = []
    for table, keep in spec.sources:
        paper = load_paper_table(entries[table])
        rows += [dict(r) for _, r in paper.iterrows() if keep(dict(r))]
    return rows


def _title(spec: FigureSpec, entry: Entry, runs: pd.DataFrame) -> str:
    title = f"Figure {spec.number}: {entry.title}\n{spec.subtitle}"
    scales = {s for s in runs.get("scale", pd.Series(dtype=object)) if isinstance(s, str)}
    if scales == {"smoke"}:
        title += " [smoke-scale runs]"
    elif "smoke" in scales:
        title += " [includes smoke-scale runs]"
    return title


def _new_axes() -> tuple[plt.Figure, plt.Axes]:
    fig, ax = plt.subplots(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    ax.grid(True, alpha=0.3)
    return fig, ax


def _points(spec: FigureSpec, rows: list[Row], results: Results, ax: plt.Axes, command: str
            ) -> tuple[list[str], pd.DataFrame]:
    """Accuracy against a paper column, a line per group; returns (missing labels, runs drawn)."""
    lines: dict[str, list[Row]] = {}
    for row in rows:
        lines.setdefault(spec.line(row), []).append(row)
    missing: dict[str, list[str]] = {}
    drawn = []
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    collapsed_drawn = paper_drawn = False
    for i, (label, group) in enumerate(lines.items()):
        colour = colours[i % len(colours)]
        xs, means, stds, collapse_x, chance = [], [], [], [], []
        paper_x, paper_y, paper_err = [], [], []
        for row in sorted(group, key=lambda r: parse_number(r[spec.x])):
            x = parse_number(row[spec.x])
            matched = match_runs(results.runs, pd.Series(row))
            cell = aggregate(matched, command)
            if cell.mean is not None:
                xs.append(x), means.append(cell.mean), stds.append(cell.std or 0.0)
                drawn.append(matched)
            elif cell.text == "Collapse":
                collapse_x.append(x), chance.append(1.0 / parse_number(row["test_way"]))
                drawn.append(matched)
            else:
                missing.setdefault(label, []).append(_lr(row) if spec.x == "learning_rate" else row[spec.x])
            if row.get("accuracy"):
                paper_x.append(x), paper_y.append(float(row["accuracy"]))
                paper_err.append(float(row["accuracy_std"]) if row.get("accuracy_std") else 0.0)
        if not xs and not collapse_x:
            continue
        if xs:
            ax.errorbar(xs, means, yerr=stds, color=colour, marker="o", capsize=3, label=label)
        if collapse_x:
            ax.plot(collapse_x, chance, linestyle="none", marker="x", markersize=9, color=colour,
                    label=None if xs else label)
            collapsed_drawn = True
        if paper_x:
            ax.errorbar(paper_x, paper_y, yerr=paper_err, color=colour, marker="o", markerfacecolor="none",
                        linestyle="--", alpha=0.6, capsize=2)
            paper_drawn = True
    handles, labels = ax.get_legend_handles_labels()
    if paper_drawn:
        handles.append(Line2D([], [], color="grey", linestyle="--", marker="o", markerfacecolor="none"))
        labels.append("paper")
    if collapsed_drawn:
        handles.append(Line2D([], [], color="grey", linestyle="none", marker="x"))
        labels.append("collapsed (at chance)")
    ax.legend(handles, labels, fontsize="small")
    if spec.xlog:
        ax.set_xscale("log")
    runs = pd.concat(drawn) if drawn else results.runs.iloc[0:0]
    return [f"{label} at {spec.xname} {', '.join(xs)}" for label, xs in missing.items()], runs


def _curves(spec: FigureSpec, rows: list[Row], results: Results, ax: plt.Axes, command: str
            ) -> tuple[list[str], pd.DataFrame]:
    """Validation accuracy over epochs, mean over seeds with a ±1 std band; returns (missing, runs drawn)."""
    missing, drawn = [], []
    for label in dict.fromkeys(spec.line(r) for r in rows):
        group = [r for r in rows if spec.line(r) == label]
        matched = pd.concat([latest_per_seed(one_setting(match_runs(results.runs, pd.Series(r)))[0])[0]
                             for r in group])
        matched = matched[~matched.index.duplicated()]
        per_run = []
        for run_id in matched.get("run_id", []):
            curve = results.curve(run_id)
            if "val/accuracy" in curve and curve["val/accuracy"].notna().any():
                per_run.append(curve.set_index("epoch")["val/accuracy"].rename(run_id))
        if not per_run:
            missing.append(label if matched.empty else f"{label} (runs without validation curves)")
            continue
        table = pd.concat(per_run, axis=1).sort_index()
        mean = table.mean(axis=1)
        n = table.shape[1]
        few = len(mean) <= 20
        (line,) = ax.plot(mean.index, mean.values, marker="o" if few else None, markersize=3,
                          label=f"{label}, {n} run{'s' if n > 1 else ''}")
        if n > 1:
            std = table.std(axis=1, ddof=1)  # over seeds
            ax.fill_between(mean.index, (mean - std).values, (mean + std).values, color=line.get_color(), alpha=0.2)
        drawn.append(matched)
    if drawn:
        ax.legend(fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    runs = pd.concat(drawn) if drawn else results.runs.iloc[0:0]
    return missing, runs


def make_figure(key: str, results: Results, entries: dict[str, Entry], out: Path) -> Outcome:
    """Draw one figure into `out/<key>.png` and `.pdf`, or say why it was skipped."""
    spec, entry = SPECS[key], entries[key]
    rows = _rows(spec, entries)
    fig, ax = _new_axes()
    try:
        draw = _points if spec.kind == "points" else _curves
        missing, runs = draw(spec, rows, results, ax, entry.command)
        if runs.empty:
            lines = list(dict.fromkeys(spec.line(r) for r in rows))
            return Outcome(key, skipped=f"no runs for any of its {len(lines)} configurations ({spec.subtitle})")
        ax.set_title(_title(spec, entry, runs), fontsize="medium")
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        if spec.kind == "points":  # ticks at the paper's values, labelled as the paper prints them
            ticks = {parse_number(r[spec.x]): (_lr(r) if spec.x == "learning_rate" else r[spec.x]) for r in rows}
            ax.xaxis.set_minor_locator(NullLocator())
            ax.set_xticks(sorted(ticks), [ticks[t] for t in sorted(ticks)])
        out.mkdir(parents=True, exist_ok=True)
        files = [out / f"{key}.png", out / f"{key}.pdf"]
        for f in files:
            fig.savefig(f, dpi=DPI)
        return Outcome(key, files=files, missing=missing)
    finally:
        plt.close(fig)


def make_figures(results: Results, entries: dict[str, Entry], out: Path, keys: list[str] | None = None
                 ) -> list[Outcome]:
    """Every figure (or those in `keys`), in order."""
    return [make_figure(key, results, entries, out) for key in (keys or list(SPECS))]



RUNS_FIGURE = "runs"


def _wrapped(text: str, width: int = 90) -> str:
    """A legend label in lines of at most `width` characters (a group's settings can be many)."""
    return "\n".join(textwrap.wrap(text, width)) or text


def runs_figure(results: Results, out: Path) -> Outcome:
    """Validation accuracy against training episodes, a line per group of runs that differ only in their seed
    (mean over seeds, ±1 std band, ddof=1), and a dashed line per run in progress (the epochs its checkpoint holds,
    never averaged in): the figure of runs that fill no paper figure. The legend sits below the axes."""
    from .compare import group_runs, label

    fig, ax = _new_axes()
    try:
        drawn = 0
        grouped = group_runs(results)
        for cells, runs in grouped.groups:
            per_run = []
            for run_id in latest_per_seed(runs)[0]["run_id"]:
                curve = results.curve(run_id)
                if "val/accuracy" in curve and curve["val/accuracy"].notna().any():
                    per_run.append(curve.set_index("episode")["val/accuracy"].rename(run_id))
            if not per_run:
                continue
            table = pd.concat(per_run, axis=1).sort_index()
            mean, n = table.mean(axis=1), table.shape[1]
            (line,) = ax.plot(mean.index, mean.values, marker="o" if len(mean) <= 20 else None, markersize=3,
                              label=_wrapped(f"{label(cells)} ({n} run{'s' if n > 1 else ''})"))
            if n > 1:
                std = table.std(axis=1, ddof=1)  # over seeds
                ax.fill_between(mean.index, (mean - std).values, (mean + std).values, color=line.get_color(), alpha=0.2)
            drawn += 1
        for i in grouped.every.index[len(results.runs):]:  # the runs in progress
            run = grouped.every.loc[i]
            curve = results.curve(run["run_id"])
            if "val/accuracy" not in curve or not curve["val/accuracy"].notna().any():
                continue
            total = (run.get("epochs") or 0) * (run.get("episodes_per_epoch") or 0)
            ax.plot(curve["episode"], curve["val/accuracy"], linestyle="--", label=_wrapped(
                f"{label(grouped.cells(i))} (in progress: {run['episodes']:,.0f} of {total:,.0f} episodes)"))
            drawn += 1
        if not drawn:
            return Outcome(RUNS_FIGURE, skipped="no run has a validation curve")
        ax.set_title("Validation accuracy, a line per group of runs (mean over seeds, ±1 std)", fontsize="medium")
        ax.set_xlabel("training episodes")
        ax.set_ylabel("validation accuracy")
        fig.legend(loc="outside lower center", fontsize="x-small")
        out.mkdir(parents=True, exist_ok=True)
        files = [out / f"{RUNS_FIGURE}.png", out / f"{RUNS_FIGURE}.pdf"]
        for f in files:
            fig.savefig(f, dpi=DPI)
        return Outcome(RUNS_FIGURE, files=files)
    finally:
        plt.close(fig)
