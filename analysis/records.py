"""A run's record as the tables read it, from any summary: the fields esmeta/record.py writes, or, for a summary
written before they existed (results/cpu, the W&B fixture, a checkpoint's config), the same fields filled from its
config by the rules of the code that wrote it. The one place that knows old summaries; it imports no esmeta code,
so an archived table never changes with today's defaults.

Fields: point (conf/point preset or None), sigma (the perturbation used: wsr's sigma or finite_diff's fd_sigma, None
for exact estimators), population_estimator (whether estimator.pop_per_shard applies), test_protocol (norm_stats,
way, shot, query, episodes, seed), budget (episodes_requested, max_minutes, budget_clock, scale, episodes_reached),
differences (result setting -> the run's value, where it differs from its estimator's defaults when it ran).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

FIELDS = ("point", "sigma", "population_estimator", "test_protocol", "budget", "differences")

# Frozen facts of the code that wrote the old summaries (up to commit 81fec5a), not today's code:
OLD_POPULATION_ESTIMATORS = ("wsr", "finite_diff")
_OLD_COMMON = {
    "estimator.lr_decay_factor": 0.5, "estimator.weight_decay": 0.0, "estimator.antithetic": False,
    "estimator.rank": 0, "estimator.fitness_shaping": "zscore", "estimator.normalize": "per_shard",
    "estimator.shard_episodes": "shared", "estimator.fd_sigma": 0.001, "estimator.central": False,
    "estimator.fd_reduce": "sum", "estimator.fd_rescale_subset": False, "estimator.fitness_precision": "highest",
    "data.split": "paper", "data.image_size": 32, "data.resize_filter": "antialias",
    # running averages: the default since b88333a, and the tables' protocol for older summaries too, whose episode
    # statistics (the default before) are then a difference: never averaged with running-average runs
    "model.norm_stats": "running",
}
# The settings the tables compared then, at their defaults as `python -m esmeta.run estimator=NAME` composed them.
OLD_DEFAULTS = {
    "backprop": {"estimator.optimizer": "adam", "estimator.lr_decay_every": 2000, **_OLD_COMMON},
    "wsr": {"estimator.optimizer": "sgd", "estimator.lr_decay_every": 0, **_OLD_COMMON},
    "finite_diff": {"estimator.optimizer": "adam", "estimator.lr_decay_every": 0, **_OLD_COMMON},
    "forward_mode": {"estimator.optimizer": "adam", "estimator.lr_decay_every": 2000, **_OLD_COMMON},
}


def dig(tree: Mapping[str, Any] | None, dotted: str) -> Any:
    """`tree["a"]["b"]` for "a.b", or None where any level is missing."""
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def same(a: Any, b: Any) -> bool:
    """Numbers to 1e-6 relative (as the paper's cells are matched), everything else (bools included) exactly."""
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b))
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-12) if numbers else a == b


def _count(value: Any) -> int | None:
    """A JSON number as an int (W&B may hand back 200.0), None for anything else."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return int(value) if ok else None


def run_fields(summary: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The record `FIELDS` of a run: as recorded, or filled from an old summary and its config."""
    if "differences" in summary:
        return {name: summary.get(name) for name in FIELDS}
    estimator = dig(config, "estimator.name") or summary.get("estimator")
    owner = {"wsr": "sigma", "finite_diff": "estimator.fd_sigma"}.get(estimator)
    points = [o.split("=", 1)[1] for o in summary.get("overrides") or () if str(o).split("=", 1)[0] == "point"]
    epochs, per_epoch = _count(dig(config, "train.epochs")), _count(dig(config, "train.episodes_per_epoch"))
    return {
        "point": points[-1] if points else None,
        "sigma": summary["sigma"] if "sigma" in summary else dig(config, owner) if owner else None,
        "population_estimator": estimator in OLD_POPULATION_ESTIMATORS,
        "test_protocol": {"norm_stats": summary.get("test_norm_stats") or dig(config, "model.norm_stats"),
                          "way": dig(config, "task.test_way"), "shot": dig(config, "task.test_shot"),
                          "query": dig(config, "task.test_query"), "episodes": dig(config, "eval.test_episodes"),
                          "seed": dig(config, "eval.seed")},
        "budget": {"episodes_requested": None if epochs is None or per_epoch is None else epochs * per_epoch,
                   "max_minutes": dig(config, "train.max_minutes"),
                   "budget_clock": dig(config, "train.budget_clock"), "scale": dig(config, "scale.name"),
                   "episodes_reached": summary.get("episodes")},
        # a setting the summary does not hold is older than the setting: it ran as its default
        "differences": {key: dig(config, key) for key, default in OLD_DEFAULTS.get(estimator, {}).items()
                        if dig(config, key) is not None and not same(dig(config, key), default)},
    }
