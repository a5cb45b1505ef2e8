"""The settings a paper row leaves unnamed, so that a table cell never mixes runs of different ones.

A paper row fixes estimator, alpha, sigma, channels, way/shot, population, hardware and distance; esmeta has more
settings than that (the optimizer, the finite-difference readings, the batch-norm test protocol, the data split,
...). Runs that match a row but differ in one of them are different experiments: averaging them, or letting the
later one replace the earlier as a "rerun", would publish a number no configuration produced. Each run records the
result settings in which it differs from its estimator's defaults (`differences`, see `records`); less the ones a
row names, these are its setting. A cell keeps the runs of the defaults (no difference left); where none are, the
runs of the one setting most of them share (the latest such run breaking a tie), and the notes say what was shown
and what was left out. Runs a scale skipped (no number) are kept whatever their settings.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

# Settings a paper row names (its tpu, estimator, alpha, sigma, channels, population, way and shot, distance) or
# a cell averages over (the seed): never what tells two runs of one row apart.
ROW_NAMED = ("seed", "alpha", "sigma", "estimator.name", "estimator.pop_per_shard", "model.channels", "hardware.",
             "task.", "distance.")


def row_named(key: str) -> bool:
    """Whether a paper row names `key` (or a cell averages over it)."""
    return key in ROW_NAMED or key.startswith(tuple(k for k in ROW_NAMED if k.endswith(".")))


def setting(differences: Any) -> dict[str, Any]:
    """A run's setting: its recorded differences from its estimator's defaults that no paper row names."""
    return {k: v for k, v in (differences or {}).items() if not row_named(k)}


def _text(settings: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(settings.items()))


def one_setting(matched: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """(the matched runs of one setting, notes on what was shown and left out); see the module docstring."""
    if matched.empty or "estimator" not in matched.columns:
        return matched, []
    estimators = {e for e in matched["estimator"] if isinstance(e, str)}
    if len(estimators) != 1:  # a row names its estimator; several here means the row does not: leave it
        return matched, []
    ran = matched["status"] != "skipped" if "status" in matched.columns else pd.Series(True, index=matched.index)
    if not ran.any():  # runs a scale refused hold no number: their settings do not matter
        return matched, []
    recorded = matched["differences"] if "differences" in matched.columns else pd.Series(None, index=matched.index)
    variants = {i: _text(setting(recorded[i])) for i in matched.index[ran]}
    if any(text == "" for text in variants.values()):
        shown = ""
    else:
        counts = pd.Series(variants).value_counts()
        finished = matched.get("finished_at", pd.Series("", index=matched.index)).fillna("").astype(str)
        latest = {text: finished[[i for i, t in variants.items() if t == text]].max() for text in counts.index}
        shown = max(counts.index, key=lambda text: (counts[text], latest[text]))
    kept = matched.loc[[i for i in matched.index if not ran[i] or variants[i] == shown]]
    notes = [f"no run with the default settings; shown: runs with {shown}"] if shown else []
    left = pd.Series([text for text in variants.values() if text != shown]).value_counts()
    for text, n in left.items():
        notes.append(f"{n} run{'s' if n > 1 else ''} with other settings left out ({text or 'the defaults'})")
    return kept, notes
