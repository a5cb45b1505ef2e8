"""Build the same `Results` as `load.load_results` from Weights & Biases' public API.

For users whose runs live online: `wandb.Api().runs("ENTITY/PROJECT")`, each run's config and
summary, and its *full* history through `run.scan_history()` (`run.history()` samples 500 points).

The adapter touches only `run.id`, `run.name`, `run.state`, `run.config`, `run.summary` and
`run.scan_history()`, so a recorded API response (tests/analysis/fixtures/) exercises the same code
as the server. A W&B run counts as complete when its state is "finished" and its summary holds the
run's `status` (a summary out of range is skipped, as a local one); every other run is listed in
`Results.skipped`, like a local run without `done`.
Per-epoch curves are the history rows that carry both `epoch` and `val/accuracy` (per-step rows
lack the validation accuracy). esmeta logs an epoch's means as `epoch/<namespace>_<name>` (so they
do not overwrite the last step's own values, which share the row); they are renamed back to the
names of `metrics.jsonl` (`epoch/train_loss` -> `train/loss`), so both sources give the same curves.

Only what the caller needs is fetched: `group` filters the runs on the server (a sweep's W&B group),
and `history_keys` names the history columns to download (`()`: none, as the tables read only summaries;
the figures ask for `FIGURE_KEYS`; `None`: every column of every step).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from .load import Results, Skipped, assemble, curve_records, run_record, summary_problem

CURVE_KEYS = ("epoch", "val/accuracy")
FIGURE_KEYS = ("epoch", "episode", "val/accuracy")  # what the figures' curves read
EPOCH_PREFIX = "epoch/"


def epoch_metrics(row: Mapping[str, Any]) -> dict[str, Any]:
    """An epoch's history row with the metrics.jsonl names: `epoch/x_y` means win over the step's own `x/y`."""
    out = {k: v for k, v in row.items() if not k.startswith("_") and not k.startswith(EPOCH_PREFIX)}
    for key, value in row.items():
        if key.startswith(EPOCH_PREFIX):
            out[key[len(EPOCH_PREFIX):].replace("_", "/", 1)] = value
    return out


class ApiRun(Protocol):
    """What the adapter reads of a `wandb.apis.public.Run`."""

    id: str
    name: str
    state: str
    config: Mapping[str, Any]
    summary: Any

    def scan_history(self, keys: list[str] | None = None) -> Iterable[Mapping[str, Any]]: ...


def plain(value: Any) -> Any:
    """W&B's dict-likes (HTTPSummary, SummarySubDict) as plain nested dicts; other values unchanged."""
    if isinstance(value, Mapping) or (hasattr(value, "keys") and hasattr(value, "__getitem__")):
        return {str(k): plain(value[k]) for k in value.keys()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def load_wandb_runs(runs: Iterable[ApiRun], source: str, history_keys: tuple[str, ...] | None = None) -> Results:
    """`Results` from API run objects (real or recorded); the history columns `history_keys` (see above)."""
    records, curves, skipped, curveless = [], [], [], []
    for run in runs:
        run_id = str(run.id)
        label = f"{run_id} ({run.name})" if run.name and run.name != run_id else run_id
        summary = plain(run.summary)
        if run.state != "finished":
            skipped.append(Skipped(label, f"W&B state is {run.state!r}, not 'finished'"))
            continue
        if "status" not in summary:
            skipped.append(Skipped(label, "W&B summary has no `status`: not an esmeta run, or it never finished"))
            continue
        problem = summary_problem(summary)
        if problem:
            skipped.append(Skipped(label, f"W&B summary: {problem} (an edited or damaged record)"))
            continue
        config = plain(run.config)
        record = run_record(run_id, summary, config)
        record["name"] = run.name
        records.append(record)
        if history_keys == ():
            continue
        # With keys, W&B returns only the rows that hold all of them, and only those columns.
        rows = run.scan_history() if history_keys is None else run.scan_history(keys=list(history_keys))
        epochs = [row for row in rows if all(row.get(k) is not None for k in CURVE_KEYS)]
        try:
            curves.extend(curve_records(run_id, (epoch_metrics(r) for r in epochs)))
        except ValueError as e:
            curveless.append(Skipped(label, f"W&B history {e}"))
    return assemble(records, curves, skipped, source=source, curveless=curveless)


def load_wandb(entity: str, project: str, api: Any = None, group: str | None = None,
               history_keys: tuple[str, ...] | None = None) -> Results:
    """The runs of `entity/project` (of one W&B group, if given) through `wandb.Api()` (or the given API object)."""
    if api is None:
        import wandb  # imported here: the local source must not need it

        api = wandb.Api()
    path = f"{entity}/{project}"
    runs = api.runs(path, filters={"group": group}) if group else api.runs(path)
    source = f"W&B project {path}" + (f", group {group}" if group else "")
    return load_wandb_runs(runs, source=source, history_keys=history_keys)
