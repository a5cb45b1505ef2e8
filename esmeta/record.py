"""What a run records for the analysis beside its results (summary.json): the table point it was started from,
the perturbation it used, its test protocol, its budget, and the result settings in which it differs from its
estimator's defaults as the code stood when it ran; the tables decide cells from these, never from today's code."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from esmeta.config import Config
from esmeta.learners import make_learner
from esmeta.roles import differs_from_defaults


def point(overrides: Sequence[str]) -> str | None:
    """The conf/point preset a run was started from (`point=NAME`, typed or from a stored sweep), or None."""
    names = [o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == "point"]
    return names[-1] if names else None


def record(config: Config, overrides: Sequence[str], episodes: int | None = None) -> dict[str, Any]:
    """The summary fields the analysis reads (see the module docstring); `episodes`: the episodes trained, None for
    a run that failed or was refused before training."""
    e, t, train = config.estimator, config.task, config.train
    return {
        "point": point(overrides),
        "sigma": e.perturbation(config.sigma),  # the perturbation used (wsr's, finite_diff's)
        "population_estimator": e.is_es,  # whether estimator.pop_per_shard applies (a population of candidates)
        "test_protocol": {"norm_stats": make_learner(config).test_norm_stats, "way": t.test_way, "shot": t.test_shot,
                          "query": t.test_query, "episodes": config.eval.test_episodes, "seed": config.eval.seed},
        "budget": {"episodes_requested": train.epochs * train.episodes_per_epoch, "max_minutes": train.max_minutes,
                   "budget_clock": train.budget_clock, "scale": config.scale.name, "episodes_reached": episodes},
        "differences": differs_from_defaults(config),  # result-role setting -> this run's value
    }
