"""Each setting's role is declared once, beside its default; the lists that sort settings by role are derived."""

from __future__ import annotations

import dataclasses

import pytest
from hydra import compose, initialize_config_module

from esmeta import rules
from esmeta.checkpoint import RESUMABLE_CHANGES
from esmeta.config import SECTIONS, Config
from esmeta.estimators import ESTIMATORS
from esmeta.learners import LEARNERS
from esmeta.prelaunch import check_overrides
from esmeta.roles import (
    differs_from_defaults,
    estimator_defaults,
    plumbing_keys,
    roles,
    settings_with_role,
    unnamed_overrides,
    value_of,
)
from esmeta.sweep_expansion import CONFIG_MODULE
from esmeta.tracking import run_name


def declared() -> dict[str, str]:
    """Every setting's role, read straight from the dataclass fields' metadata."""
    out = {f.name: f.metadata["role"] for f in dataclasses.fields(Config) if f.name not in SECTIONS}
    for name in SECTIONS:
        classes = {"estimator": [c for c, _ in ESTIMATORS.values()], "learner": list(LEARNERS.values())}.get(
            name, [type(getattr(Config(), name))])
        for cls in classes:
            out |= {f"{name}.{f.name}": f.metadata["role"] for f in dataclasses.fields(cls)}
    return out


def test_every_setting_declares_one_of_the_roles():
    assert set(declared().values()) <= set(rules.ROLES)
    assert roles() == declared()
    for role in rules.ROLES:
        assert settings_with_role(role) == tuple(k for k, r in declared().items() if r == role)


def test_what_a_resumed_run_may_change_is_the_plumbing():
    plumbing = {k for k, r in declared().items() if r == "plumbing"}
    whole = {"logger"}  # a section whose every setting is plumbing is named whole
    assert set(plumbing_keys()) == whole | {k for k in plumbing if k.split(".")[0] not in whole}
    assert RESUMABLE_CHANGES == set(plumbing_keys()) == {  # the set esmeta kept by hand before the roles
        "train.progress", "train.resume", "train.checkpoint_every", "train.max_minutes", "train.allocation_minutes",
        "train.budget_clock", "data.root", "data.cache_dir", "data.download", "hardware.compilation_cache", "logger",
    }


def test_job_directories_and_run_names_leave_out_the_same_overrides():
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=["train.max_minutes=3", "seed=1"], return_hydra_config=True)
    assert list(cfg.hydra.job.config.override_dirname.exclude_keys) == unnamed_overrides()
    assert cfg.hydra.job.override_dirname == "seed=1"  # Hydra's name for the job directory
    assert set(unnamed_overrides()) == {"sweep", "scale", "hydra.run.dir", "hydra.sweep.dir", *plumbing_keys()}
    for key in unnamed_overrides():
        assert run_name([f"{key}=x", "seed=1"]) == "seed=1", key


def test_runs_differing_only_in_norm_stats_never_share_a_cell():
    """The cell a run belongs to is set apart by its result settings; norm_stats is one (it was missing from the
    analysis' hand list, and runs with episode statistics were averaged with running averages)."""
    (running,) = check_overrides(["estimator=wsr"])
    (episode,) = check_overrides(["estimator=wsr", "model.norm_stats=episode"])
    assert roles()["model.norm_stats"] == "result"
    assert differs_from_defaults(running) == {}
    assert differs_from_defaults(episode) == {"model.norm_stats": "episode"}


@pytest.mark.parametrize("name", sorted(n for n, (cls, _) in ESTIMATORS.items() if not cls.FIRST_ORDER))
def test_an_estimators_defaults_are_what_the_command_line_composes(name):
    (composed,) = check_overrides([f"estimator={name}"])
    reference = estimator_defaults(name)
    for key in (*settings_with_role("result", name, "protonet"), *settings_with_role("budget", name)):
        assert value_of(composed, key) == value_of(reference, key), key


def test_differences_name_only_result_settings_the_estimator_reads():
    (wsr,) = check_overrides(["estimator=wsr", "alpha=10", "estimator.pop_per_shard=64", "seed=3", "train.epochs=5",
                              "train.progress=off"])
    assert differs_from_defaults(wsr) == {"alpha": 10.0, "estimator.pop_per_shard": 64}
    (backprop,) = check_overrides(["estimator=backprop", "sigma=0.5", "task=5way_1shot"])  # wsr's sigma: unread
    assert differs_from_defaults(backprop) == {"task.train_way": 5, "task.shot": 1, "task.test_shot": 1}


def test_a_maml_run_differs_by_its_learner_and_its_learners_settings_count_against_maml_defaults():
    """A MAML run is never a default (ProtoNet) experiment; its inner loop is a difference only where it departs
    from MAML's own defaults."""
    (default,) = check_overrides(["learner=maml", "estimator=first_order"])
    assert differs_from_defaults(default) == {"learner.name": "maml", "task.test_way": 20}
    (longer,) = check_overrides(["learner=maml", "estimator=first_order", "learner.inner_steps=5"])
    assert differs_from_defaults(longer) == {"learner.name": "maml", "task.test_way": 20, "learner.inner_steps": 5}
