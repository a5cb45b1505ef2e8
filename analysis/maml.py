"""The MAML table: our MAML runs on Omniglot, a row per task and outer estimator, beside Finn et al. 2017.

A MAML run is one whose record says `learner.name: maml` (its config, or its `differences`); the paper tables of
Sheng & He never hold one (their meta-learner is the ProtoNet). A row is the runs of one task (train way, shot),
backbone width (channels) and outer estimator, as requested: the points `maml-5way-1shot` and `maml-20way-1shot`
times `backprop` (second-order MAML), `first_order`, `wsr`, `finite_diff`, `forward_mode`. Within a row the cell
rules of the paper tables apply (`cells`): one setting (runs that differ in a recorded setting the row's other
runs do not share are not averaged), one budget (never runs that trained different amounts), one run per seed;
several seeds read mean ± std over seeds (ddof=1), one run its test accuracy ± its std over test episodes. A row
with only runs in progress reads "in progress: N of M episodes".

Beside ours, Finn et al.'s published Omniglot figures (`paper_tables/maml_finn2017.csv`, as fractions), matched by
way, shot and estimator. Their ± is a 95% confidence interval over test tasks, not a std: the table also gives a
single run's 95% interval over its test episodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from .cells import aggregate, finite
from .paper import Entry, load_paper_table

ESTIMATORS = {  # outer estimator -> label, in the table's order
    "backprop": "second-order",
    "first_order": "first-order",
    "wsr": "ES (wsr)",
    "finite_diff": "finite differences",
    "forward_mode": "forward mode",
}
ROW = ("train_way", "shot", "channels", "estimator")  # what a row holds fixed
COLUMNS = ("Task", "Channels", "Estimator", "Accuracy (ours)", "95% CI (ours, one run)", "Finn et al. 2017 (± 95% CI)",
           "Test protocol", "Budget reached", "CPU-hours a run", "Seeds", "Commit")
CAPTION = (
    "MAML on Omniglot (Vinyals' split) with the outer gradient estimated by second-order backprop, first-order MAML, "
    "ES (wsr), finite differences or forward mode. Ours: mean ± std over seeds (ddof=1) where several ran; with one "
    "run, its test accuracy ± its std over test episodes, and its 95% interval over test episodes beside it. Finn et "
    "al. 2017 (Table 1): ± is a 95% confidence interval over test tasks, with a 64-channel backbone and meta-batches "
    "of many tasks (ours: the channels shown, one task a step; conf/point/maml-*.yaml)."
)


def is_maml(runs: pd.DataFrame) -> pd.Series:
    """Which runs are MAML runs, by their record: the config's learner, or the recorded differences."""
    if runs.empty:
        return pd.Series(False, index=runs.index, dtype=bool)
    learner = runs["config.learner.name"] if "config.learner.name" in runs.columns else pd.Series(None, index=runs.index)
    differences = runs["differences"] if "differences" in runs.columns else pd.Series(None, index=runs.index)
    recorded = differences.map(lambda d: isinstance(d, dict) and d.get("learner.name") == "maml")
    return ((learner == "maml") | recorded).astype(bool)


def _key(run: pd.Series) -> tuple:
    return tuple(None if pd.isna(run.get(k)) else run.get(k) for k in ROW)


def _order(key: tuple) -> tuple:
    way, shot, channels, estimator = key
    rank = list(ESTIMATORS).index(estimator) if estimator in ESTIMATORS else len(ESTIMATORS)
    return (way or 0, shot or 0, channels or 0, rank, str(estimator))


def _as_text(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def row_setting(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with each `differences` less what every run of the row that ran shares (the row's point: Vinyals'
    split, 28 px, ...), so that `cells.one_setting` compares them with each other: a run that changed a setting the
    others kept is left out of the cell, never averaged in."""
    recorded = [d if isinstance(d, dict) else {} for d in runs.get("differences", pd.Series(None, index=runs.index))]
    ran = [s != "skipped" for s in runs["status"]]
    shared = None
    for differences, counted in zip(recorded, ran):
        if counted:
            items = {(k, _as_text(v)) for k, v in differences.items()}
            shared = items if shared is None else shared & items
    shared = shared or set()
    out = runs.copy()
    out["differences"] = [{k: v for k, v in d.items() if (k, _as_text(v)) not in shared} for d in recorded]
    return out


@dataclass
class MamlTable:
    """The MAML table ready to render: the displayed frame, the long CSV frame and the notes."""

    entry: Entry
    layout: pd.DataFrame
    long: pd.DataFrame
    notes: list[str] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"MAML: {self.entry.title}"


def _count(value: object) -> int | None:
    return int(float(value)) if finite(value) else None  # type: ignore[arg-type]


def _task(way: object, shot: object) -> str:
    return f"{_count(way)}-way {_count(shot)}-shot"


def _protocol(run: pd.Series) -> str:
    """How the test accuracy was measured: test episodes, queries a class, inner steps at test (and in training)."""
    episodes = _count(run.get("test_episodes")) or _count(run.get("config.eval.test_episodes"))
    query, steps = _count(run.get("test_query")), _count(run.get("config.learner.test_inner_steps"))
    inner, lr = _count(run.get("config.learner.inner_steps")), run.get("config.learner.inner_lr")
    train = f"; training: {inner} at lr {float(lr):g}" if inner is not None and finite(lr) else ""
    return f"{episodes} episodes, {query} queries a class, {steps} inner steps{train}"


def _budget(shown: pd.DataFrame) -> str:
    """The episodes the cell's runs trained of those requested, and whether their time budget stopped them."""
    run = shown.iloc[0]
    requested = (_count(run.get("epochs")) or 0) * (_count(run.get("episodes_per_epoch")) or 0)
    text = f"{_count(run.get('episodes')) or 0:,} of {requested:,} episodes"
    if shown["stopped_by_budget"].map(lambda v: v is True).any():
        text += f", stopped by its time budget ({run['max_minutes']:g} {run.get('budget_clock') or 'wall'}-clock min)"
    scale = run.get("scale")
    return text + (f", scale={scale}" if isinstance(scale, str) and scale != "paper" else "")


def _cpu_hours(shown: pd.DataFrame) -> str:
    seconds = pd.to_numeric(shown.get("cpu_seconds", pd.Series(dtype=float)), errors="coerce").dropna()
    if seconds.empty:
        return "-"
    text = f"{seconds.mean() / 3600:.2f}"
    return text if len(seconds) == len(shown) else f"{text} ({len(seconds)} of {len(shown)} runs recorded it)"


def _seeds(shown: pd.DataFrame) -> str:
    seeds = sorted(int(s) for s in shown["seed"] if finite(s))
    return f"{len(shown)} ({', '.join(map(str, seeds))})" if seeds else str(len(shown))


def _commits(shown: pd.DataFrame) -> str:
    commits = sorted({str(c)[:7] for c in shown.get("commit", pd.Series(dtype=object)) if isinstance(c, str) and c})
    return ", ".join(commits) or "-"


def _paper(paper: pd.DataFrame, way: object, shot: object, estimator: object) -> tuple[str, pd.Series | None]:
    for _, row in paper.iterrows():
        if (_count(row["way"]), _count(row["shot"]), row["estimator"]) == (_count(way), _count(shot), estimator):
            std = row["accuracy_ci95"].strip()
            return (f"{row['accuracy']} ± {std}" if std else row["accuracy"]), row
    return "-", None


def build_maml_table(entry: Entry, runs: pd.DataFrame, in_progress: pd.DataFrame | None = None) -> MamlTable:
    """A row per (way, shot, channels, estimator) of the MAML runs among `runs` and `in_progress`."""
    paper = load_paper_table(entry)
    done = runs[is_maml(runs)] if not runs.empty else runs
    going = in_progress if in_progress is not None and not in_progress.empty else pd.DataFrame()
    going = going[is_maml(going)] if not going.empty else going
    keys = sorted({_key(r) for _, r in done.iterrows()} | {_key(r) for _, r in going.iterrows()}, key=_order)

    rows, long, notes, placed = [], [], [], set()
    for key in keys:
        way, shot, channels, estimator = key
        matched = done[[_key(r) == key for _, r in done.iterrows()]] if not done.empty else done
        unfinished = going[[_key(r) == key for _, r in going.iterrows()]] if not going.empty else going
        cell = aggregate(row_setting(matched) if not matched.empty else matched, entry.command,
                         unfinished if not unfinished.empty else None)
        shown = matched[matched["run_id"].isin(cell.run_ids)] if cell.run_ids else matched.iloc[0:0]
        ours_ci = "-"
        if cell.completed == 1:
            ci = shown.loc[shown["status"] == "completed", "test_accuracy_ci95"].iloc[0]
            ours_ci = f"± {float(ci):.3f}" if finite(ci) else "-"
        paper_text, paper_row = _paper(paper, way, shot, estimator)
        if paper_row is not None:
            placed.add((paper_row["way"], paper_row["shot"], paper_row["estimator"]))
        sample = shown.iloc[0] if not shown.empty else (unfinished.iloc[0] if not unfinished.empty else None)
        label = f"{_task(way, shot)}, {_count(channels)} channels, {ESTIMATORS.get(estimator, estimator)}"
        done_shown = shown[shown["status"].isin(("completed", "collapsed"))]
        row = [
            _task(way, shot), str(_count(channels)), ESTIMATORS.get(estimator, str(estimator)), cell.text, ours_ci,
            paper_text, _protocol(sample) if sample is not None else "-",
            _budget(done_shown) if not done_shown.empty else "-",
            _cpu_hours(done_shown) if not done_shown.empty else "-",
            _seeds(shown) if not shown.empty else "0", _commits(shown),
        ]
        rows.append(row)
        points = sorted({p for p in pd.concat([matched, unfinished]).get("point", []) if isinstance(p, str)})
        long.append({
            "way": _count(way), "shot": _count(shot), "channels": _count(channels), "estimator": estimator,
            "points": ", ".join(points), "ours": cell.text, "ours_mean": cell.mean, "ours_std": cell.std,
            "ours_ci95": ours_ci, "paper": paper_text,
            "paper_accuracy": None if paper_row is None else float(paper_row["accuracy"]),
            "paper_ci95": None if paper_row is None else float(paper_row["accuracy_ci95"]),
            "paper_source": None if paper_row is None else paper_row["source"],
            "test_protocol": row[6], "budget": row[7], "cpu_hours": row[8], "seeds": row[9], "commits": row[10],
            **{name: getattr(cell, name) for name in ("runs", "completed", "collapsed", "failed", "in_progress",
                                                       "episodes")},
            "run_ids": ", ".join(cell.run_ids), "notes": "; ".join(cell.notes),
        })
        notes.extend(f"{label}: {note}." for note in cell.notes)
    missing = [f"{_task(r['way'], r['shot'])} {ESTIMATORS.get(r['estimator'], r['estimator'])}"
               for _, r in paper.iterrows() if (r["way"], r["shot"], r["estimator"]) not in placed]
    if missing:
        notes.append(f"Finn et al. 2017 rows without a run of ours: {', '.join(missing)}; run `{entry.command}`.")
    if not keys:
        notes.insert(0, f"No MAML run; run `{entry.command}` (learner=maml: conf/point/maml-*.yaml).")
    layout = pd.DataFrame(rows, columns=list(COLUMNS))
    return MamlTable(entry, layout, pd.DataFrame.from_records(long), notes)


def render_markdown(table: MamlTable) -> str:
    from .tables import markdown_table

    parts = [f"## {table.title}", "", markdown_table(table.layout), "", CAPTION]
    if table.notes:
        parts += ["", "Notes:", ""] + [f"- {n}" for n in table.notes]
    return "\n".join(parts) + "\n"


def render_latex(table: MamlTable) -> str:
    from .tables import frame_latex

    return frame_latex(table.layout, f"{table.title}. {CAPTION}", "tab:maml")

