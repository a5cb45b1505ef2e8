"""The settings a paper row leaves unnamed, so that a table cell never mixes runs of different ones.

A paper row fixes estimator, alpha, sigma, channels, way/shot, population and distance; esmeta has
more settings than that (the finite-difference readings, the optimizer, antithetic sampling, the data
split, ...). Runs that match a row but differ in one of them are different experiments: averaging them,
or letting the later one replace the earlier as a "rerun", would publish a number no configuration
produced. So a cell keeps the runs whose recorded settings are the estimator's defaults in the current
code; where none are, the runs of the one setting most of them share (the latest such run breaking a
tie), and the notes say what was shown and what was left out. A setting a run did not record (older
summaries) agrees with any value; runs a scale skipped (no number) are kept whatever their settings.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from functools import cache
from typing import Any

import pandas as pd

from .paper import is_close

SETTINGS = (
    "estimator.optimizer",
    "estimator.lr_decay_every",
    "estimator.lr_decay_factor",
    "estimator.weight_decay",
    "estimator.antithetic",
    "estimator.rank",
    "estimator.fitness_shaping",
    "estimator.normalize",
    "estimator.shard_episodes",
    "estimator.fd_sigma",
    "estimator.central",
    "estimator.fd_reduce",
    "estimator.fd_rescale_subset",
    "estimator.fitness_precision",
    "data.split",
    "data.image_size",
    "data.resize_filter",
)


@cache
def defaults(estimator: str) -> dict[str, Any]:
    """SETTINGS as `python -m esmeta.run estimator=<estimator>` composes them today; None for those it does not read."""
    from esmeta.prelaunch import check_overrides  # Hydra: only when a table is built

    (config,) = check_overrides([f"estimator={estimator}"])
    tree = asdict(config)
    return {key: tree[key.split(".")[0]].get(key.split(".")[1]) for key in SETTINGS}


def _recorded(run: pd.Series, key: str) -> Any:
    value = run.get(f"config.{key}")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def _same(a: Any, b: Any) -> bool:
    """Numbers as the paper's cells are matched (`paper.is_close`), everything else (bools included) exactly."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return is_close(float(a), float(b)) if numbers else a == b


def differences(run: pd.Series, reference: dict[str, Any]) -> dict[str, Any]:
    """The recorded settings of `run` that differ from `reference` (key -> the run's value)."""
    out = {}
    for key, want in reference.items():
        value = _recorded(run, key)
        if value is not None and want is not None and not _same(value, want):
            out[key] = value
    return out


def _text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))


def one_setting(matched: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the matched runs of one setting, notes on what was shown and left out); see the module docstring."""
    if matched.empty or "estimator" not in matched.columns:
        return matched, []
    estimators = {e for e in matched["estimator"] if isinstance(e, str)}
    if len(estimators) != 1:  # a row names its estimator; several here means the row does not: leave it
        return matched, []
    reference = defaults(estimators.pop())
    ran = matched["status"] != "skipped" if "status" in matched.columns else pd.Series(True, index=matched.index)
    if not ran.any():  # runs a scale refused hold no number: their settings do not matter
        return matched, []
    off = {i: differences(run, reference) for i, run in matched[ran].iterrows()}
    variants = {i: _text(d) for i, d in off.items()}
    if any(text == "" for text in variants.values()):
        shown = ""
    else:
        counts = pd.Series(variants).value_counts()
        finished = matched.get("finished_at", pd.Series("", index=matched.index)).fillna("").astype(str)
        latest = {text: finished[[i for i, t in variants.items() if t == text]].max() for text in counts.index}
        shown = max(counts.index, key=lambda text: (counts[text], latest[text]))
    kept = matched.loc[[i for i in matched.index if not ran[i] or variants[i] == shown]]
    notes = []
    if shown:
        defaults_text = _text({k: reference[k] for k in next(d for i, d in off.items() if variants[i] == shown)})
        notes.append(f"no run with the default settings; shown: runs with {shown} (default {defaults_text})")
    left = pd.Series([text for i, text in variants.items() if text != shown]).value_counts()
    for text, n in left.items():
        notes.append(f"{n} run{'s' if n > 1 else ''} with other settings left out ({text or 'the defaults'})")
    return kept, notes
