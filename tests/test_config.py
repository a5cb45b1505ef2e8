"""Configuration: every shipped config composes and validates; bad input gets one line naming the setting."""

import dataclasses
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module

from esmeta.config import Config, from_mapping
from esmeta.errors import ConfigError
from esmeta.estimators import ESTIMATORS
from esmeta.prelaunch import check_overrides
from esmeta.sweep_expansion import CONFIG_MODULE

pytestmark = pytest.mark.codegen_independent

CONF = Path(__file__).resolve().parents[1] / "conf"


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_defaults_are_the_papers():
    (config,) = check_overrides([])
    assert config.data.image_size == 32 and config.data.split == "paper"
    assert (config.train.epochs, config.train.episodes_per_epoch) == (200, 100)
    assert (config.task.test_way, config.eval.test_episodes) == (5, 200)
    assert config.task.test_shot == config.task.shot  # test shot = train shot
    assert (config.task.query, config.task.test_query) == (5, 15)  # Snell et al.
    assert config.estimator.name == "backprop" and config.estimator.optimizer == "adam"
    assert config.alpha == pytest.approx(1e-3) and config.estimator.lr_decay_every == 2000
    assert config.model.channels == 64


def test_test_shot_follows_train_shot_unless_overridden():
    (config,) = check_overrides(["task.shot=1"])
    assert config.task.test_shot == 1
    (config,) = check_overrides(["task.shot=1", "task.test_shot=5"])
    assert config.task.test_shot == 5


def learner_for(estimator: str) -> list[str]:
    """The override an estimator needs to compose: first-order MAML needs a learner with an inner loop."""
    return ["learner=maml"] if ESTIMATORS[estimator][0].FIRST_ORDER else []


@pytest.mark.parametrize(
    "group", ["estimator", "distance", "task", "model", "data", "hardware", "experiment", "learner"]
)
def test_every_shipped_option_composes_and_validates(group):
    options = group_options(group)
    assert options, f"no options in conf/{group}"
    for option in options:
        configs = check_overrides([f"{group}={option}", *(learner_for(option) if group == "estimator" else [])])
        assert len(configs) == 1 and isinstance(configs[0], Config)


def test_shipped_estimators_match_the_registry():
    assert group_options("estimator") == sorted(ESTIMATORS)


def test_a_sweep_is_validated_value_by_value():
    configs = check_overrides(["task.shot=1,5", "alpha=1e-3,1e-2"], multirun=True)
    assert {c.task.shot for c in configs} == {1, 5}
    assert {c.alpha for c in configs} == {1e-3, 1e-2}


def test_round_trip_through_a_plain_mapping():
    (config,) = check_overrides(["distance=cosine", "task=10way_1shot"])
    assert from_mapping(config.to_dict()) == config


BAD_INPUTS = [
    (["learner=maml", "learner.inner_steps=0"], "learner.inner_steps=0 must be at least 1"),
    (["learner=maml", "learner.test_inner_steps=-1"], "learner.test_inner_steps=-1 must be at least 1"),
    (["learner=maml", "learner.inner_lr=0"], "learner.inner_lr=0 must be positive"),
    (["learner=maml", "task.test_way=5"], "learner=maml needs task.test_way = task.train_way"),
    (["learner=maml", "distance=cosine"], "distance.name=cosine is a ProtoNet setting"),
    (["learner.inner_steps=2"], "learner.inner_steps is a setting of maml only"),
    (["learner=reptile"], "learner=reptile is not an option; choose one of: maml, protonet"),
    (["estimator=first_order"], "learner=protonet has no inner loop: choose learner=maml"),
    (["learner=maml", "estimator=forward_mode"], "lower model.channels, learner.inner_steps or train.epochs"),
    (["task.train_way=5000"], "task.train_way=5000 exceeds the 4804 train classes"),
    (["task.test_way=700"], "task.test_way=700 exceeds the 676 test classes"),
    (["data.split=vinyals", "task.test_way=700"], "exceeds the 688 val classes"),
    (["task.shot=15", "task.query=10"], "exceeds the 20 images"),
    (["task.test_shot=5", "task.test_query=16"], "task.test_shot + task.test_query"),
    (["task.train_way=1"], "at least 2"),
    (["data.image_size=8"], "data.image_size=8 must be between 16"),
    (["data.image_size=200"], "data.image_size=200"),
    (["alpha=0"], "alpha=0 must be positive"),
    (["alpha=-1"], "alpha=-1 must be positive"),
    (["train.epochs=0"], "train.epochs=0 must be positive"),
    (["train.episodes_per_epoch=-5"], "train.episodes_per_epoch=-5"),
    (["train.epochs=abc"], "train.epochs='abc' must be an integer"),
    (["eval.test_episodes=0"], "eval.test_episodes=0"),
    (["model.channels=0"], "model.channels=0"),
    (["estimator=adam_es"], "estimator=adam_es is not an option; choose one of: backprop, finite_diff, first_order, forward_mode, wsr"),
    (["distance=manhattan"], "distance=manhattan is not an option"),
    (["hardware=tpu-v9"], "hardware=tpu-v9 is not an option"),
    (["experiment=quickstrat"], "experiment=quickstrat is not an option"),
    (["data.split=random"], "data.split='random' is not an option; choose one of: paper, vinyals"),
    (["data.resize_filter=bicubic"], "data.resize_filter='bicubic' is not an option"),
    (["estimator.optimizer=rmsprop"], "estimator.optimizer='rmsprop'"),
    (["task.wya=5"], "unknown setting task.wya"),
    (["+task.wya=5"], "unknown setting task.wya"),
    (["learning_rate=0.1"], "unknown setting learning_rate"),
    (["task.shot=[1,2"], "cannot parse the overrides"),
    (["estimator=wsr", "estimator.pop_per_shard=0"], "estimator.pop_per_shard=0 must be positive"),
    (["estimator=wsr", "estimator.antithetic=true", "estimator.pop_per_shard=3"], "even estimator.pop_per_shard"),
    (["estimator=wsr", "sigma=0"], "sigma=0"),
    (["estimator=finite_diff", "estimator.fd_sigma=-1e-3"], "estimator.fd_sigma"),
    (["distance.scale=0"], "distance.scale=0"),
    (["estimator=wsr", "estimator.shard_episodes=each"], "estimator.shard_episodes='each' is not an option"),
    (["estimator=finite_diff", "estimator.shard_episodes=own"], "estimator.shard_episodes is a setting of wsr only"),
    (["hydra.run.dir=/proc/esmeta-cannot-write-here"], "is not writable"),
]


@pytest.mark.parametrize("overrides,message", BAD_INPUTS, ids=[" ".join(o) for o, _ in BAD_INPUTS])
def test_bad_input_is_one_line_naming_the_setting(overrides, message):
    with pytest.raises(ConfigError) as info:
        check_overrides(overrides)
    text = str(info.value)
    assert message in text
    assert "\n" not in text


def test_a_bad_value_anywhere_in_a_sweep_is_caught_before_launch():
    with pytest.raises(ConfigError, match=r"task.shot \+ task.query = 16 \+ 5"):
        check_overrides(["task.shot=1,16"], multirun=True)
    with pytest.raises(ConfigError, match="estimator=bogus is not an option"):
        check_overrides(["estimator=backprop,bogus"], multirun=True)


def test_compose_api_without_cli():
    """Library users can compose the same config through Hydra's compose API."""
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=["task=10way_5shot"])
    assert cfg.task.train_way == 10 and cfg.task.test_way == 5


def test_unknown_keys_in_a_mapping_are_rejected():
    raw = Config().to_dict()
    raw["model"]["chanels"] = 16
    with pytest.raises(ConfigError, match="unknown setting model.chanels"):
        from_mapping(raw)


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("seed=9223372036854775808", "seed=9223372036854775808 is out of range"),
        ("eval.seed=99999999999999999999", "eval.seed=99999999999999999999 is out of range"),
        ("model.channels=9223372036854775808", "model.channels=9223372036854775808 is out of range"),
        ("seed=-1", "seed=-1 must be at least 0"),
        ("data.split_seed=-3", "data.split_seed=-3 must be at least 0"),
    ],
)
def test_integers_are_range_checked_up_front(override, fragment):
    """2^63 and beyond, and negative seeds, are one ConfigError before anything runs (not an OverflowError later)."""
    with pytest.raises(ConfigError, match=fragment.replace("^", r"\^")):
        check_overrides([override])


def test_the_largest_seed_is_accepted():
    (config,) = check_overrides([f"seed={2**63 - 1}"])
    assert config.seed == 2**63 - 1


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_each_estimators_yaml_holds_what_its_config_declares(name):
    """conf/estimator/<name>.yaml sets exactly the fields of the estimator's config, at their declared defaults,
    and the top-level settings it reads (TOP_LEVEL): the YAML is how Hydra learns them, the file declares them."""
    config = ESTIMATORS[name][0]
    stored = yaml.safe_load((CONF / "estimator" / f"{name}.yaml").read_text())
    assert stored.pop("estimator") == dataclasses.asdict(config())
    assert stored == config.TOP_LEVEL
    (composed,) = check_overrides([f"estimator={name}", *learner_for(name)])
    assert composed.estimator == config()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["estimator=wsr", "estimator.fd_sigma=0.1"], "estimator.fd_sigma is a setting of finite_diff only"),
        (["estimator=wsr", "+estimator.fd_sigma=0.1"],
         "estimator.fd_sigma is a setting of finite_diff only (estimator=wsr does not read it): drop it, or choose "
         "that estimator (estimator=finite_diff)"),
        (["estimator.pop_per_shard=4"], "estimator.pop_per_shard is a setting of wsr and finite_diff only"),
    ],
)
def test_a_setting_of_another_estimator_is_one_line_naming_who_reads_it(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as error:
        check_overrides(overrides)
    assert "\n" not in str(error.value)


def test_an_estimator_section_holds_only_what_its_estimator_reads():
    from_mapping({"estimator": {"name": "backprop"}, "sigma": 0.0})  # wsr's sigma does not bind backprop
    with pytest.raises(ConfigError, match=r"^estimator\.fd_sigma=0 must be positive"):
        from_mapping({"estimator": {"name": "finite_diff", "fd_sigma": 0.0}})
    with pytest.raises(ConfigError, match=r"^estimator\.fitness_shaping is a setting of wsr only \(estimator=backprop"):
        from_mapping({"estimator": {"name": "backprop", "fitness_shaping": "rank"}})
    assert set(Config().to_dict()["estimator"]) == {"name", "optimizer", "lr_decay_every", "lr_decay_factor",
                                                    "weight_decay"}
