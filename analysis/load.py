"""Load every run under a results directory into one tidy DataFrame, with per-epoch curves.

A run is a directory (a Hydra job) holding `summary.json`, `metrics.jsonl` and, written last, an
empty `done` marker. Only runs with the marker and a summary whose results lie in their range are
loaded; every other run directory found (a summary without `done`, a checkpoint only, a Hydra job
that never started training, a test accuracy of 7.5, the same directory reached twice through a
symbolic link) is listed in `Results.skipped` with the reason, never mixed in. A loaded run whose
metrics file is unreadable (a garbage line, a metric that is not a number) keeps its row, and its
curve is left out and listed in `Results.curveless`.

Columns of `Results.runs` (one row per run):
  run_id, path, status, error, sweep, scale        identity and outcome ("completed", "collapsed", "failed", or
                                                       "skipped": too large for its scale, needs an accelerator)
  finished_at                                      when the run wrote its summary (UTC, ISO 8601; for results
                                                       written before esmeta recorded it: the `done` marker's time)
  test_protocol                                    the batch-norm protocol behind test_accuracy (model.norm_stats:
                                                       running, episode or support)
  estimator, hardware, tpu, seed                   requested configuration ...
  alpha, sigma, channels, distance                 ... sigma: the perturbation the run used (wsr's sigma,
                                                       finite_diff's fd_sigma; NaN for exact estimators), as recorded
  pop_per_shard, shards, total_pop                 ... the *requested* population (what the paper's tables
                                                       mean); total_pop = pop_per_shard x shards, or the
                                                       effective population where shards = 0 (one per GPU)
  train_way, shot, query, test_way, test_shot, test_query, epochs, episodes_per_epoch
  effective_population, effective_pop_per_shard, effective_shards   what actually ran (smaller under scale=smoke)
  test_accuracy, test_accuracy_std (ddof=1 over test episodes), test_accuracy_ci95, test_episodes,
  best_val_accuracy, final_val_accuracy, episodes, stopped_by_budget, wall_time_s, cpu_seconds (of every process
  that trained it; NaN where not recorded), num_params, backend
  max_minutes, budget_clock                        the time budget (train.max_minutes, 0 = none) and its clock
  budget                                           the requested budget as text ("20,000 episodes requested", "at
                                                       most 6 cpu-clock minutes", "scale=cpu")
  commit, command, processor                       what produced the run (the summary's provenance; None before)
  point                                            the conf/point preset it was started from (None: none)
  differences                                      {result setting: the run's value} where it differs from its
                                                       estimator's defaults when it ran (the cell rule: `settings`)
  config.<dotted.key>                               every leaf of the requested config, flattened
Missing values (JSON null, absent keys, NaN) are NaN/None.

`Results.curves` is long: one row per run and epoch (`run_id`, `epoch`, `episode`, `val/accuracy`,
`train/loss`, `es/...`, `wall_time_s`); for a run in progress, the epochs its checkpoint holds.

`Results.in_progress` has the same columns for runs that are not finished but hold a readable
checkpoint (status "in_progress", `episodes` = the episodes its checkpoint reached): shown with the
episodes they reached, never as a result.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from esmeta.run_dir import CHECKPOINT, DONE, METRICS, PARAMS, SUMMARY, read_metrics

from .records import dig, run_fields

# Any of these in a directory makes it a run directory (complete or not).
RUN_MARKERS = (DONE, SUMMARY, METRICS, PARAMS, ".hydra")

SUMMARY_FLOATS = (
    "test_accuracy",
    "test_accuracy_std",
    "test_accuracy_ci95",
    "best_val_accuracy",
    "final_val_accuracy",
    "wall_time_s",
    "cpu_seconds",
)
SUMMARY_INTS = ("test_episodes", "episodes", "num_params")
NON_FINITE_TEXT = ("nan", "inf", "-inf", "infinity", "-infinity")  # how some JSON writers spell NaN
STATUSES = ("completed", "collapsed", "failed", "skipped")
# summary number -> its range and whether it is a count; null and NaN pass (a collapsed or failed run has none)
SUMMARY_RANGES = {
    **{key: (0.0, 1.0, False) for key in ("test_accuracy", "test_accuracy_std", "test_accuracy_ci95",
                                          "best_val_accuracy", "final_val_accuracy")},
    "wall_time_s": (0.0, math.inf, False),
    "cpu_seconds": (0.0, math.inf, False),
    "test_episodes": (1, math.inf, True),
    "episodes": (0, math.inf, True),
    "num_params": (1, math.inf, True),
}


@dataclass(frozen=True)
class Skipped:
    """A run left out of the analysis, and why."""

    run: str
    reason: str

    def __str__(self) -> str:
        return f"{self.run}: {self.reason}"


@dataclass
class Results:
    """All complete runs of one source: a row per run, their per-epoch curves, what was skipped, and the runs
    whose curve was left out (their summary is used)."""

    runs: pd.DataFrame
    curves: pd.DataFrame
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""
    in_progress: pd.DataFrame = field(default_factory=pd.DataFrame)
    curveless: list[Skipped] = field(default_factory=list)

    def curve(self, run_id: str) -> pd.DataFrame:
        """One run's per-epoch rows, by epoch."""
        rows = self.curves[self.curves["run_id"] == run_id]
        return rows.sort_values("epoch").reset_index(drop=True)


def number(value: Any) -> float:
    """A JSON value as a float: null, missing, "NaN" or a non-number become NaN."""
    if isinstance(value, bool) or value is None:
        return math.nan
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _not_a_number(value: Any) -> bool:
    """Neither a JSON number nor null nor a spelling of NaN."""
    if value is None or (isinstance(value, str) and value.strip().lower() in NON_FINITE_TEXT):
        return False
    return isinstance(value, bool) or not isinstance(value, (int, float))


def summary_problem(summary: Mapping[str, Any]) -> str | None:
    """Why a summary's results cannot be used (an unknown status, a number that is not one or lies outside its
    range: an edited or damaged file), or None; both sources skip such a run rather than average it in."""
    if summary.get("status") not in STATUSES:
        return f"status {summary.get('status')!r} is not one of {', '.join(STATUSES)}"
    for key, (low, high, count) in SUMMARY_RANGES.items():
        value = summary.get(key)
        if _not_a_number(value):
            return f"{key} is {value!r}, not a number"
        v = number(value)
        if not math.isnan(v) and not (low <= v <= high and (not count or v.is_integer())):
            return f"{key} is {value!r}, outside its range ({'a count ' if count else ''}{low:g} to {high:g})"
    return None


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> {"a.b.c": leaf}; lists stay as values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _int_or_none(value: Any) -> int | None:
    v = number(value)
    return None if math.isnan(v) else int(v)


def run_record(run_id: str, summary: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """One DataFrame row from a run's summary and requested config (the summary's own `config` by default).

    Shared by the local and W&B sources, so both build the same columns from the same keys.
    """
    config = summary.get("config") if config is None else config
    config = config if isinstance(config, Mapping) else {}
    fields = run_fields(summary, config)
    estimator = dig(config, "estimator.name") or summary.get("estimator")
    hardware = dig(config, "hardware.name")
    pop_per_shard = _int_or_none(dig(config, "estimator.pop_per_shard"))
    shards = _int_or_none(dig(config, "hardware.shards"))
    effective_population = _int_or_none(summary.get("population"))
    if not fields["population_estimator"]:
        pop_per_shard = total_pop = None
    elif pop_per_shard is not None and shards:
        total_pop = pop_per_shard * shards
    else:  # shards = 0: one per device, known only from what ran
        total_pop = effective_population
    budget = fields["budget"] or {}
    record: dict[str, Any] = {
        "run_id": run_id,
        "status": summary.get("status"),
        "error": summary.get("error"),
        "finished_at": summary.get("finished_at"),
        "sweep": summary.get("sweep"),
        "scale": summary.get("scale") or dig(config, "scale.name"),
        "point": fields["point"],
        "test_protocol": dig(fields["test_protocol"], "norm_stats"),
        "estimator": estimator,
        "hardware": hardware,
        "tpu": hardware[len("tpu-"):] if isinstance(hardware, str) and hardware.startswith("tpu-") else None,
        "seed": _int_or_none(dig(config, "seed")),
        "alpha": number(dig(config, "alpha")),
        "sigma": number(fields["sigma"]),
        "channels": _int_or_none(dig(config, "model.channels")),
        "distance": dig(config, "distance.name"),
        "pop_per_shard": pop_per_shard,
        "shards": shards,
        "total_pop": total_pop,
        "train_way": _int_or_none(dig(config, "task.train_way")),
        "shot": _int_or_none(dig(config, "task.shot")),
        "query": _int_or_none(dig(config, "task.query")),
        "test_way": _int_or_none(dig(config, "task.test_way")),
        "test_shot": _int_or_none(dig(config, "task.test_shot")),
        "test_query": _int_or_none(dig(config, "task.test_query")),
        "epochs": _int_or_none(dig(config, "train.epochs")),
        "episodes_per_epoch": _int_or_none(dig(config, "train.episodes_per_epoch")),
        "effective_population": effective_population,
        "effective_pop_per_shard": _int_or_none(summary.get("pop_per_shard")),
        "effective_shards": _int_or_none(summary.get("shards")),
        **{key: number(summary.get(key)) for key in SUMMARY_FLOATS},
        **{key: _int_or_none(summary.get(key)) for key in SUMMARY_INTS},
        "stopped_by_budget": summary.get("stopped_by_budget"),
        "max_minutes": number(budget.get("max_minutes")),
        "budget_clock": budget.get("budget_clock"),
        "budget": budget_text(budget),
        "differences": dict(fields["differences"] or {}),
        "backend": summary.get("backend"),
        "commit": dig(summary, "provenance.commit"),
        "command": dig(summary, "provenance.command"),
        "processor": dig(summary, "provenance.machine.processor"),
    }
    record.update({f"config.{k}": v for k, v in flatten(config).items()})
    return record


def budget_text(budget: Mapping[str, Any]) -> str:
    """A run's requested budget (its record's), as the tables name it: its episodes, its time budget, its scale (not
    the paper's)."""
    requested = _int_or_none(budget.get("episodes_requested"))
    text = f"{requested:,} episodes requested" if requested else "episodes requested unknown"
    minutes = number(budget.get("max_minutes"))
    if math.isfinite(minutes) and minutes > 0:
        text += f", at most {minutes:g} {budget.get('budget_clock') or 'wall'}-clock minutes"
    scale = budget.get("scale")
    return text + (f", scale={scale}" if isinstance(scale, str) and scale != "paper" else "")


def curve_records(run_id: str, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per-epoch metric rows tagged with their run; null metrics become NaN; a metric that is not a number is a
    ValueError naming its row and key (never drawn as a curve)."""
    out = []
    for i, row in enumerate(rows, start=1):
        bad = next((key for key, value in row.items() if _not_a_number(value)), None)
        if bad is not None:
            raise ValueError(f"row {i}: {bad} is {row[bad]!r}, not a number")
        out.append({"run_id": run_id, **{key: number(value) for key, value in row.items()}})
    return out


def assemble(
    records: list[dict[str, Any]], curves: list[dict[str, Any]], skipped: list[Skipped], source: str,
    curveless: list[Skipped] | None = None,
) -> Results:
    """`Results` from rows built by `run_record` and `curve_records` (any source)."""
    runs = pd.DataFrame.from_records(records)
    if not runs.empty:
        runs = runs.sort_values("run_id", kind="stable").reset_index(drop=True)
    curve_frame = pd.DataFrame.from_records(curves)
    if curve_frame.empty:
        curve_frame = pd.DataFrame(columns=["run_id", "epoch", "episode", "val/accuracy"])
    return Results(runs=runs, curves=curve_frame, skipped=sorted(skipped, key=lambda s: s.run), source=source,
                   curveless=sorted(curveless or [], key=lambda s: s.run))


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under `root` (or `root` itself) that holds a run marker or a checkpoint, symbolic links to
    directories followed (a run may be linked into a results tree).

    Run directories do not nest: the walk does not descend into one, nor into hidden directories, nor twice into
    one real directory (a link back up the tree ends there); a run reached twice is listed twice.
    """
    found, walked = [], set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        names = set(dirnames) | set(filenames)
        if any(m in names for m in RUN_MARKERS) or any(n.startswith("checkpoint") for n in names):
            found.append(Path(dirpath))
            dirnames[:] = []
            continue
        real = os.path.realpath(dirpath)
        dirnames[:] = [] if real in walked else sorted(d for d in dirnames if not d.startswith("."))
        walked.add(real)
    return sorted(found)


def _incomplete_reason(path: Path, saved: Any = None) -> str:
    names = {p.name for p in path.iterdir()}
    if saved is not None:
        total = (_int_or_none(dig(saved.config, "train.epochs")) or 0) * (
            _int_or_none(dig(saved.config, "train.episodes_per_epoch")) or 0)
        return (f"in progress: episode {saved.progress.step:,} of {total:,} (its checkpoint); rerun its command "
                "to continue it")
    if SUMMARY in names:
        return "no `done` marker: summary.json was written but the run did not finish"
    if any(n.startswith("checkpoint") for n in names):
        return "no `done` marker: checkpoint only (interrupted; rerun the same command to resume)"
    return "no `done` marker: the run did not finish"


def _read_checkpoint(path: Path) -> Any:
    """The run's verified checkpoint (esmeta.checkpoint.Saved), or None where it has none or it is unreadable."""
    from esmeta.checkpoint import read  # checksummed; reads no JAX
    from esmeta.errors import EsmetaError

    if not (path / CHECKPOINT).is_file():
        return None
    try:
        return read(path / CHECKPOINT)
    except EsmetaError:
        return None


def load_results(root: str | Path) -> Results:
    """All complete runs under `root` (the runs' `done` markers), their curves, and the runs skipped."""
    root = Path(root)
    records, curves, skipped, curveless, in_progress = [], [], [], [], []
    reached: dict[Path, str] = {}  # real directory -> the run id it was first loaded as
    for path in find_run_dirs(root):
        run_id = path.relative_to(root).as_posix() if path != root else path.name
        if path.resolve() in reached:
            skipped.append(Skipped(run_id, f"the same directory as run {reached[path.resolve()]} (a symbolic link): "
                                           "counted once"))
            continue
        reached[path.resolve()] = run_id
        if not (path / DONE).exists():
            saved = _read_checkpoint(path)
            skipped.append(Skipped(run_id, _incomplete_reason(path, saved)))
            if saved is not None:
                record = run_record(run_id, {"status": "in_progress", "episodes": saved.progress.step}, saved.config)
                in_progress.append({**record, "path": str(path)})
                try:
                    curves.extend(curve_records(run_id, saved.progress.records))
                except ValueError as e:
                    curveless.append(Skipped(run_id, f"its checkpoint's epoch records: {e}"))
            continue
        try:
            summary = json.loads((path / SUMMARY).read_text())
            if not isinstance(summary, dict):
                raise ValueError(f"{SUMMARY} is not a JSON object")
        except FileNotFoundError:
            skipped.append(Skipped(run_id, f"`done` marker but no {SUMMARY}"))
            continue
        except (ValueError, OSError) as e:
            skipped.append(Skipped(run_id, f"unreadable {SUMMARY}: {e}"))
            continue
        problem = summary_problem(summary)
        if problem:
            skipped.append(Skipped(run_id, f"{SUMMARY}: {problem} (an edited or damaged file)"))
            continue
        record = run_record(run_id, summary)
        record["path"] = str(path)
        if not record["finished_at"]:
            stamp = datetime.fromtimestamp((path / DONE).stat().st_mtime, UTC)
            record["finished_at"] = stamp.isoformat(timespec="seconds")
        records.append(record)
        try:
            metrics = read_metrics(path)
        except (ValueError, OSError) as e:  # read_metrics names the unreadable line
            curveless.append(Skipped(run_id, str(e) if isinstance(e, ValueError) else f"unreadable {METRICS} ({e})"))
            continue
        try:
            curves.extend(curve_records(run_id, metrics))
        except ValueError as e:
            curveless.append(Skipped(run_id, f"{METRICS} {e}"))
    results = assemble(records, curves, skipped, source=f"results directory {root}", curveless=curveless)
    results.in_progress = pd.DataFrame.from_records(in_progress)
    return results
