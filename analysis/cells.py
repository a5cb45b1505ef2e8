"""Our cell for one paper row, from the runs that matched it: which of them count, and the text shown.

A cell holds runs of one setting: runs that match a row but differ in a setting it does not name
(estimator.optimizer, model.norm_stats, the finite-difference readings, data.split, ...; see `settings`)
are not averaged; the defaults' runs are shown, the others named in the notes.

A cell holds runs of one budget: the same episodes trained, of the same requested budget (episodes, time
budget, scale: its record, `load.budget_text`). Where runs of several match, those that trained the most episodes are
shown (the paper's full budget before a CPU-scale one), the others named in the notes; a number is never
an average over runs that trained different amounts.

A run in progress (a checkpoint, no `done` marker) is never a result: a row with only such runs reads
"in progress: N of 20,000 episodes"; beside finished runs the notes name it.

A seed counts once: where one ran more than once for a row (a rerun, a second sweep), its latest
completed or collapsed run is used (a failed rerun never replaces a result), and the notes say how
many earlier runs were left out. Repeats of a seed are not independent samples.

Our cell, from the matched runs:
  several completed runs  mean ± std of their test accuracies over runs (seeds), std with ddof=1
  one completed run       its test accuracy ± its std over test episodes (ddof=1), as the paper reports
  only collapsed runs     "Collapse"
  only skipped runs       "needs an accelerator" (the scale's max_population refused it; notes: how to run it)
  no run / only failed    "-", with the reason and the command that produces the runs in the notes
Where the runs stopped short of the paper's 20,000 episodes (a time budget, a smaller scale), the table
adds an "Episodes (ours)" column (Table VII: a note per row) and a note on the budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from .settings import one_setting

DECIMALS = 3
NEEDS_ACCELERATOR = "needs an accelerator"


def latest_per_seed(matched: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(the matched runs with one run per seed, how many were left out); see the module docstring."""
    if matched.empty or "seed" not in matched.columns:
        return matched, 0
    finished = matched["finished_at"] if "finished_at" in matched.columns else pd.Series(None, index=matched.index)
    order = pd.DataFrame({
        "result": matched["status"].isin(("completed", "collapsed")),
        "finished": finished.fillna("").astype(str),  # ISO 8601 in UTC: text order is time order
        "run_id": matched["run_id"].astype(str),
    }).sort_values(["result", "finished", "run_id"], kind="stable").index
    seeds = matched.loc[order, "seed"]
    keep = seeds.isna() | ~seeds.duplicated(keep="last")
    kept = matched.loc[keep[keep].index].sort_index()
    return kept, len(matched) - len(kept)


def finite(value: object) -> bool:
    try:
        return value is not None and math.isfinite(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False


@dataclass(frozen=True)
class Cell:
    """Our value for one paper row: the text shown, the numbers behind it, and remarks for the notes."""

    text: str
    mean: float | None = None
    std: float | None = None
    runs: int = 0
    completed: int = 0
    collapsed: int = 0
    failed: int = 0
    skipped: int = 0  # refused by their scale (needs an accelerator)
    in_progress: int = 0  # runs of this row not finished yet (not counted in `runs`)
    run_ids: tuple[str, ...] = ()  # the runs the cell stands for (after one setting, one budget, one run per seed)
    episodes: float | None = None  # mean training episodes the completed runs reached
    notes: tuple[str, ...] = ()


def fmt(value: float) -> str:
    return f"{value:.{DECIMALS}f}"


def budget_keys(runs: pd.DataFrame) -> pd.Series:
    """Each run's budget as a cell compares them: the episodes it trained, of its requested budget."""
    episodes = pd.to_numeric(runs["episodes"], errors="coerce")
    requested = runs["budget"].fillna("budget unknown").astype(str)
    reached = episodes.map(lambda e: "? episodes" if pd.isna(e) else f"{e:,.0f} episodes")
    return reached + " trained of " + requested


def one_budget(matched: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the matched runs of one budget, notes on the runs of other budgets left out); see the module docstring."""
    if matched.empty or "budget" not in matched.columns:
        return matched, []
    ran = matched["status"].isin(("completed", "collapsed"))  # a failure or a scale's refusal trained no budget
    keys = budget_keys(matched)
    if keys[ran].nunique() <= 1:
        return matched, []
    episodes = pd.to_numeric(matched["episodes"], errors="coerce").fillna(-1.0)
    counts = keys[ran].value_counts()
    shown = max(counts.index, key=lambda k: (episodes[ran & (keys == k)].max(), counts[k], k))
    notes = [f"{int(counts[k])} run{'s' if counts[k] > 1 else ''} of another budget left out ({k}); shown: {shown}"
             for k in sorted(set(counts.index) - {shown})]
    return matched[~ran | (keys == shown)], notes


def _in_progress_text(in_progress: pd.DataFrame) -> str:
    """How far the unfinished runs of a row are: their episodes reached of their budget."""
    parts = []
    for _, run in in_progress.sort_values("run_id").iterrows():
        total = (run.get("epochs") or 0) * (run.get("episodes_per_epoch") or 0)
        parts.append(f"{int(run['episodes']):,} of {int(total):,} episodes")
    return "; ".join(parts)


def aggregate(matched: pd.DataFrame, command: str, in_progress: pd.DataFrame | None = None) -> Cell:
    """Our cell from the runs that matched one paper row, and its runs in progress (see the module docstring)."""
    going = in_progress if in_progress is not None else pd.DataFrame()
    if matched.empty and not going.empty:
        text = f"in progress: {_in_progress_text(going)}"
        return Cell(text, in_progress=len(going), notes=(f"{len(going)} run{'s' if len(going) > 1 else ''} in "
                                                         "progress, not a result until it finishes",))
    if matched.empty:
        return Cell("-", notes=(f"no run matched; run `{command}` (add `scale=smoke` for a quick version)",))
    matched, setting_notes = one_setting(matched)
    matched, budget_notes = one_budget(matched)
    setting_notes = setting_notes + budget_notes
    if not going.empty:
        setting_notes.append(f"{len(going)} run{'s' if len(going) > 1 else ''} in progress not counted "
                             f"({_in_progress_text(going)})")
    return summarize(matched, command, setting_notes, in_progress=len(going))


def summarize(matched: pd.DataFrame, command: str, notes: list[str] | None = None, in_progress: int = 0) -> Cell:
    """The cell of finished runs of one setting and one budget (one run per seed counts), with `notes` so far;
    `in_progress` counts the unfinished runs beside them."""
    setting_notes = list(notes or [])
    matched, superseded = latest_per_seed(matched)
    status = matched["status"]
    done = matched[(status == "completed") & matched["test_accuracy"].map(finite)]
    collapsed = int((status == "collapsed").sum())
    skipped = int((status == "skipped").sum())
    failed = len(matched) - len(done) - collapsed - skipped
    counts = dict(runs=len(matched), completed=len(done), collapsed=collapsed, failed=failed, skipped=skipped,
                  in_progress=in_progress, run_ids=tuple(matched["run_id"].astype(str)))
    notes = list(setting_notes)
    if failed:
        lost = ~matched.index.isin(done.index) & ~status.isin(("collapsed", "skipped"))
        errors = [str(e) for e in matched.loc[lost, "error"] if isinstance(e, str) and e]
        first = f" (first error: {errors[0].splitlines()[0]})" if errors else ""
        notes.append(f"{failed} of {len(matched)} runs failed or have no test accuracy{first}")
    scales = sorted({s for s in matched["scale"] if isinstance(s, str)})
    if len(scales) > 1:
        notes.append(f"runs of several scales averaged: {', '.join(scales)}")
    if superseded:
        notes.append(f"{superseded} earlier run{'s' if superseded > 1 else ''} of a seed that ran again left out "
                     "(the latest run of each seed counts)")
    if done.empty:
        if collapsed:
            return Cell("Collapse", notes=tuple(notes), **counts)
        if skipped and not failed:
            reason = next((str(e) for e in matched["error"] if isinstance(e, str) and e), "too large for its scale")
            return Cell(NEEDS_ACCELERATOR, notes=tuple(notes) + (f"{reason.split(':')[0]}: run `{command}` with "
                                                                 "scale=paper on an accelerator",), **counts)
        return Cell("-", notes=tuple(notes) + (f"no completed run; rerun `{command}`",), **counts)
    accuracies = done["test_accuracy"].astype(float)
    if len(done) > 1:
        mean, std = float(accuracies.mean()), float(accuracies.std(ddof=1))  # over seeds
    else:
        mean, std = float(accuracies.iloc[0]), float(done["test_accuracy_std"].iloc[0])  # over test episodes
    text = f"{fmt(mean)} ± {fmt(std)}" if math.isfinite(std) else fmt(mean)
    if collapsed:
        text += f" ({collapsed} of {len(done) + collapsed} collapsed)"
    episodes = done["episodes"].astype(float).mean() if "episodes" in done.columns else math.nan
    return Cell(text, mean=mean, std=std if math.isfinite(std) else None, notes=tuple(notes),
                episodes=float(episodes) if math.isfinite(episodes) else None, **counts)
