"""Compare any runs: one row per group of runs that share every setting but the seed, as markdown and CSV.

    python analysis/compare.py --results multirun/2026-12-06/10-00-00 [--out DIR]

Only the settings in which the runs differ become columns (a config group's detail that its choice decides,
such as the optimizer of each estimator, is left out); the seed is what a group averages over. A group is
one budget (the tables' rule: the same episodes trained of the same requested budget, `cells.budget_keys`)
and counts each seed once (its latest run). Accuracy: mean ± std over seeds (ddof=1); one seed: its test
accuracy ± std over test episodes, as the tables report. Runs in progress are listed with the episodes
they reached, never averaged. The same table ends every multirun (`SweepTable`, conf/config.yaml).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (`python analysis/compare.py`): its folder is the package
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))
    __package__ = _here.name

import pandas as pd  # noqa: E402
from hydra.experimental.callback import Callback  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from . import cli  # noqa: E402
from .cells import budget_keys, summarize  # noqa: E402
from .load import Results, flatten, load_results  # noqa: E402
from .tables import markdown_table  # noqa: E402

PROG = "compare"
DESCRIPTION = (
    "Compare any esmeta runs (a multirun's folder, several sweeps' parent folder): a row per group of runs "
    "that differ only in their seed, a column per setting that varies, test accuracy (mean ± std over seeds, "
    "ddof=1; one seed: ± std over test episodes), best validation accuracy, episodes reached and time. Prints "
    "markdown; writes compare.md and compare.csv to --out (default: DIR/compare under --results)."
)
# Settings that never make two runs different experiments: the averaged seed, where files go, logging, progress.
NOT_SETTINGS = ("seed", "data.root", "data.cache_dir", "logger.", "train.progress", "train.resume",
                "train.checkpoint_every", "train.allocation_minutes")
BUDGET = "budget"


def _text(value: Any) -> str:
    """A setting's value as a cell: numbers short (%g), a missing value "-"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _rank(key: str) -> int:
    """Column order: top-level settings and config-group choices (`estimator.name`) before their details."""
    return key.count(".") - key.endswith(".name")


def settings_frame(runs: pd.DataFrame) -> pd.DataFrame:
    """Each run's requested settings (its `config.` columns) in today's layout, as cells: a setting that an earlier
    esmeta recorded for every estimator is kept only where the run's estimator reads it, and one added since reads
    as its default, the behaviour that run had (esmeta.config.in_todays_layout). So runs of different ages differ
    only where their experiments do. The seed, paths and logging are left out (`NOT_SETTINGS`)."""
    from esmeta.config import in_todays_layout

    rows = []
    for _, run in runs.iterrows():
        nested: dict[str, Any] = {}
        for column, value in run.items():
            if str(column).startswith("config.") and _text(value) != "-":
                *parents, leaf = str(column)[len("config."):].split(".")
                node = nested
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
        rows.append({key: _text(value) for key, value in flatten(in_todays_layout(nested)).items()
                     if not any(key.startswith(n) for n in NOT_SETTINGS)})
    return pd.DataFrame.from_records(rows, index=runs.index).fillna("-") if rows else pd.DataFrame(index=runs.index)


def varying_settings(runs: pd.DataFrame, settings: pd.DataFrame | None = None) -> list[str]:
    """The requested settings whose values differ across `runs` (`settings`: their `settings_frame`), less a config
    group's details that its choice shown beside them decides (estimator.optimizer where estimator.name is a column
    and each estimator has one optimizer)."""
    settings = settings_frame(runs) if settings is None else settings
    varying = sorted((k for k in settings.columns if settings[k].nunique() > 1), key=_rank)
    shown: list[str] = []
    for key in varying:
        choice = f"{key.split('.')[0]}.name"
        if choice in shown and settings[key].groupby(settings[choice]).nunique().max() <= 1:
            continue
        shown.append(key)
    return shown


def _header(key: str) -> str:
    return key.removesuffix(".name")


@dataclass
class Groups:
    """Runs finished and in progress (`every`, finished first), the varying settings, whether the budget varies,
    and the finished runs' groups: (their settings' cells, and budget where it varies; their runs)."""

    every: pd.DataFrame
    values: pd.DataFrame  # every run's settings (`settings_frame`), by setting
    settings: list[str]
    show_budget: bool
    groups: list[tuple[dict[str, str], pd.DataFrame]]

    def cells(self, i: Any) -> dict[str, str]:
        """Row `i` of `every`'s settings, by column header."""
        return {_header(k): self.values.loc[i, k] for k in self.settings}


def group_runs(results: Results) -> Groups:
    """Group the finished runs by their varying settings and budget (see the module docstring)."""
    going = results.in_progress if not results.in_progress.empty else pd.DataFrame(columns=results.runs.columns)
    every = pd.concat([results.runs, going], ignore_index=True)
    frame = settings_frame(every)
    settings = varying_settings(every, frame)
    done = every[every.index < len(results.runs)]
    keys = pd.DataFrame({_header(k): frame.loc[done.index, k] for k in settings}, index=done.index)
    keys[BUDGET] = budget_keys(done) if not done.empty else pd.Series(dtype=str)
    show_budget = keys[BUDGET].nunique() > 1
    groups = []
    for values, members in keys.groupby(list(keys.columns), sort=True, dropna=False):
        cells = dict(zip(keys.columns, values if isinstance(values, tuple) else (values,)))
        if not show_budget:
            cells.pop(BUDGET)
        groups.append((cells, every.loc[members.index]))
    return Groups(every, frame, settings, show_budget, groups)


def label(cells: dict[str, str]) -> str:
    """A group's name: its settings as key=value, or "all runs" where nothing varies."""
    return ", ".join(f"{k}={v}" for k, v in cells.items()) or "all runs"


def compare_table(results: Results) -> pd.DataFrame:
    """One row per group of finished runs (settings, budget), then one row per run in progress; see the module
    docstring. Columns: the varying settings, budget (where it varies), runs, test accuracy, best val accuracy,
    episodes, time, notes."""
    grouped = group_runs(results)
    every, done = grouped.every, grouped.every.index < len(results.runs)
    rows = []
    for cells, runs in grouped.groups:
        cell = summarize(runs, command="")
        counted = runs[runs["run_id"].isin(cell.run_ids)]
        val = pd.to_numeric(counted["best_val_accuracy"], errors="coerce")
        rows.append({
            **cells,
            "runs": cell.completed + cell.collapsed,
            "test accuracy": cell.text,
            "best val accuracy": f"{val.mean():.3f}" if val.notna().any() else "-",
            "episodes": "-" if cell.episodes is None else f"{cell.episodes:,.0f}",
            "time": _clock(pd.to_numeric(counted["wall_time_s"], errors="coerce").mean()),
            "notes": "; ".join(cell.notes),
        })
    for i, run in every[~done].iterrows():
        total = (run.get("epochs") or 0) * (run.get("episodes_per_epoch") or 0)
        rows.append({
            **grouped.cells(i),
            **({BUDGET: "in progress"} if grouped.show_budget else {}),
            "runs": 0,
            "test accuracy": "in progress",
            "best val accuracy": "-",
            "episodes": f"{int(run['episodes']):,} of {int(total):,}",
            "time": "-",
            "notes": f"{run['run_id']}: not a result until it finishes",
        })
    table = pd.DataFrame(rows)
    if not table.empty and not table["notes"].astype(bool).any():
        table = table.drop(columns="notes")
    return table


def _clock(seconds: float) -> str:
    """"42 s", "3.5 min", "2.1 h"; "-" when unknown."""
    if not math.isfinite(seconds):
        return "-"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def render(results: Results, table: pd.DataFrame) -> str:
    """The table as markdown under one line saying what was compared."""
    return f"{cli.describe(results)}; mean ± std over seeds (ddof=1), one seed: ± std over test episodes.\n\n" \
        f"{markdown_table(table.astype(str))}\n"


def run(argv: list[str] | None) -> int:
    parser = cli.Parser(prog=PROG, description=DESCRIPTION)
    parser.add_argument("--results", metavar="DIR", type=Path, help="the folder holding the runs (any depth)")
    parser.add_argument("--out", metavar="DIR", type=Path, help="output directory (default: DIR/compare)")
    parser.set_defaults(source="local", group=None, only=None, entity=None, project=None)
    args = parser.parse_args(argv)
    cli.check_args(args, ())
    out = cli.out_dir(args, "compare")
    results = cli.load_source(args)
    cli.report_skipped(PROG, results)
    table = compare_table(results)
    text = render(results, table)
    print(text, end="")
    cli.write_outputs(out, {"compare.md": lambda p: p.write_text(text),
                            "compare.csv": lambda p: table.to_csv(p, index=False)})
    print(f"\nWrote compare.md and compare.csv to {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, run, argv)


class SweepTable(Callback):
    """Hydra callback: the compare table of the sweep's folder at the end of every multirun; it never fails
    the sweep (a problem is one line on stderr)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            print(f"\nRuns of {config.hydra.sweep.dir}:\n{sweep_summary(config.hydra.sweep.dir)}", flush=True)
        except Exception as e:  # a summary must never fail a finished sweep
            print(f"esmeta: no compare table for this sweep ({type(e).__name__}: {e}); run "
                  f"`esmeta-compare --results {config.hydra.sweep.dir}`", file=sys.stderr)


def sweep_summary(sweep_dir: str | Path) -> str:
    """The compare table of a sweep's folder (no skipped-run lines), or one line saying why there is none."""
    results = load_results(sweep_dir)
    if results.runs.empty and results.in_progress.empty:
        return f"esmeta: no finished run in {sweep_dir} to compare"
    return render(results, compare_table(results))


if __name__ == "__main__":
    sys.exit(main())
