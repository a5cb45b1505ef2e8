"""Each setting's role, declared once beside its default (`esmeta.rules.setting`), and what is derived from it.

The roles (`esmeta.rules.ROLES`) decide which settings a resumed run may change (checkpoint.RESUMABLE_CHANGES),
which overrides Hydra's job directories and W&B's run names leave out (`unnamed_overrides`), and which settings set
a run apart from its estimator's default experiment (`differs_from_defaults`, recorded in its summary).
"""

from __future__ import annotations

import dataclasses
from dataclasses import fields
from typing import Any

from esmeta import rules
from esmeta.config import SECTIONS, Config
from esmeta.estimators import ESTIMATORS, config_class
from esmeta.learners import LEARNERS, learner_class

# Named by the sweep's directory (its sweep and scale) or Hydra's own: left out of job names with the plumbing.
UNNAMED_OVERRIDES = ("sweep", "scale", "hydra.run.dir", "hydra.sweep.dir")


def roles(estimator: str | None = None, learner: str | None = None) -> dict[str, str]:
    """Every setting as the command line writes it (`model.norm_stats`) -> its role (`esmeta.rules.ROLES`); the
    estimator section's are `estimator`'s, or those of every estimator when None (in registry order), and the
    learner section's likewise `learner`'s, or every learner's."""
    variants = {
        "estimator": [config_class(estimator)] if estimator else [cls for cls, _ in ESTIMATORS.values()],
        "learner": [learner_class(learner)] if learner else list(LEARNERS.values()),
    }
    out = {f.name: rules.role(f) for f in fields(Config) if f.name not in SECTIONS}
    for name in SECTIONS:
        for config in variants.get(name, [type(getattr(Config(), name))]):
            out |= {f"{name}.{f.name}": rules.role(f) for f in fields(config)}
    return out


def settings_with_role(role: str, estimator: str | None = None, learner: str | None = None) -> tuple[str, ...]:
    """The settings (dotted keys, e.g. "estimator.pop_per_shard") whose declared role is `role`."""
    rules.choice("role", role, rules.ROLES)
    return tuple(key for key, r in roles(estimator, learner).items() if r == role)


def plumbing_keys() -> tuple[str, ...]:
    """The plumbing settings, a section whose settings all are plumbing by its name (`logger`): what a resumed run
    may change (checkpoint.RESUMABLE_CHANGES) and what job names leave out (`unnamed_overrides`)."""
    plumbing = settings_with_role("plumbing")
    whole = [name for name in SECTIONS if all(k in plumbing for k in roles() if k.startswith(f"{name}."))]
    return (*whole, *(k for k in plumbing if k.split(".")[0] not in whole))


def unnamed_overrides() -> list[str]:
    """The override keys that Hydra's job directories (hydra.job.config.override_dirname.exclude_keys, through the
    resolver conf/__init__.py registers) and W&B's run names leave out."""
    return [*UNNAMED_OVERRIDES, *plumbing_keys()]


def value_of(config: Config, key: str) -> Any:
    """The value of the dotted setting `key` in `config`."""
    section, _, name = key.rpartition(".")
    return getattr(getattr(config, section) if section else config, name)


def estimator_defaults(name: str) -> Config:
    """The configuration `estimator=<name>` composes with nothing else set: the schema's defaults, the estimator's
    own and the top-level settings its YAML sets (its alpha; wsr's sigma)."""
    config = config_class(name)
    return dataclasses.replace(Config(estimator=config()), **config.TOP_LEVEL)


def differs_from_defaults(config: Config) -> dict[str, Any]:
    """The result settings of `config` (role `result`) that its estimator reads and that differ from that estimator's
    defaults (`estimator_defaults`), as dotted key -> value: what sets the run apart from the estimator's default
    experiment. A top-level setting some estimator's YAML sets (sigma) counts only for the estimators that set it.
    Another learner than the default (the ProtoNet) is a difference, and its own settings count against its
    defaults (learner=maml's inner_steps against MamlConfig's)."""
    e = config.estimator
    owned = {key for cls, _ in ESTIMATORS.values() for key in cls.TOP_LEVEL}
    reference = dataclasses.replace(estimator_defaults(e.name), learner=type(config.learner)())
    differences = {"learner.name": config.learner.name} if config.learner != Config().learner else {}
    return differences | {
        key: value_of(config, key) for key in settings_with_role("result", e.name, config.learner.name)
        if (key not in owned or key in e.TOP_LEVEL) and value_of(config, key) != value_of(reference, key)}
