"""The command line's schema: Hydra/OmegaConf in, validated once into frozen dataclasses.

Everything below `esmeta.run` takes these plain values; no OmegaConf object reaches the math. The `estimator`
section is the chosen estimator's own config, declared in its file (esmeta.estimators.ESTIMATORS). Every setting
declares its role beside its default (`esmeta.rules.setting`, see esmeta.roles), and every check raises
`ConfigError` with one line naming the setting, its value, the rule and a fix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from esmeta import rules
from esmeta.data.omniglot import IMAGES_PER_CLASS, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, RESIZE_FILTERS
from esmeta.data.splits import SPLITS, split_sizes
from esmeta.errors import ConfigError
from esmeta.estimators import (
    ESTIMATORS,
    BackpropConfig,
    EstimatorConfig,
    config_class,
    readers,
)
from esmeta.learners import INNER_LOOP, LEARNERS, LearnerConfig, learner_class
from esmeta.protonet import ProtoNetConfig
from esmeta.rules import setting

DISTANCES = ("euclidean", "cosine")
NORM_STATS = ("running", "episode", "support")
PLATFORMS = ("any", "cpu", "gpu", "tpu")
PROGRESS = ("auto", "on", "off")
BUDGET_CLOCKS = ("wall", "cpu")
LOGGERS = ("wandb", "none")
SCALES = ("paper", "cpu", "smoke", "custom")


@dataclass(frozen=True)
class TaskConfig:
    """Episode shapes (N-way, K-shot, Q-query) for training and for validation/test."""

    train_way: int = setting(20, "result")
    shot: int = setting(5, "result")
    query: int = setting(5, "result")
    test_way: int = setting(5, "result")
    test_shot: int = setting(5, "result")
    test_query: int = setting(15, "result")
    # episodes (tasks) a meta-training step draws, its loss their mean (MAML's meta-batch); the paper trains on 1
    meta_batch: int = setting(1, "result")


@dataclass(frozen=True)
class ModelConfig:
    """Snell et al.'s 4-block conv embedding; `norm_stats` picks the batch-norm protocol (see `protonet`)."""

    channels: int = setting(64, "result")
    # running: train on episode statistics, evaluate with their running averages (the reference ProtoNet);
    # episode: support+query statistics of each episode, at test time too (transductive); support: support only
    norm_stats: str = setting("running", "result")


@dataclass(frozen=True)
class DistanceConfig:
    """Query-to-prototype similarity: negative squared Euclidean (eq. 1) or scaled cosine."""

    name: str = setting("euclidean", "result")
    scale: float = setting(1.0, "result")


@dataclass(frozen=True)
class DataConfig:
    """Where the Omniglot zips are and how they are preprocessed and split."""

    root: str | None = setting(None, "plumbing")
    image_size: int = setting(32, "result")
    split: str = setting("paper", "result")
    split_seed: int = setting(0, "seed")
    resize_filter: str = setting("antialias", "result")
    cache_dir: str | None = setting(None, "plumbing")
    download: bool = setting(True, "plumbing")


@dataclass(frozen=True)
class TrainConfig:
    """Training budget: epochs x episodes (the paper: 200 x 100), and how a run's processes stop and save."""

    epochs: int = setting(200, "budget")
    episodes_per_epoch: int = setting(100, "budget")
    # the run's time budget over all its processes, checked after each epoch; 0 = none (a rerun with a larger one
    # continues a run it stopped: plumbing, as the summary records where it stopped)
    max_minutes: float = setting(0.0, "plumbing")
    # wall-clock minutes this process may train before it checkpoints and stops, unfinished, for a later rerun to
    # continue (a job's time limit); 0 = none
    allocation_minutes: float = setting(0.0, "plumbing")
    budget_clock: str = setting("wall", "plumbing")  # wall: elapsed time; cpu: process CPU time / cores
    progress: str = setting("auto", "plumbing")  # auto: a bar only when stderr is a terminal
    checkpoint_every: int = setting(100, "plumbing")  # episodes between checkpoints (and every epoch end); 0 = never
    resume: bool = setting(True, "plumbing")  # a run directory with a checkpoint resumes; a completed one is kept


@dataclass(frozen=True)
class EvalConfig:
    """Fixed validation/test episodes, drawn from `seed` (independent of the training seed)."""

    val_episodes: int = setting(1, "budget")
    test_episodes: int = setting(200, "budget")
    seed: int = setting(2021, "seed")


@dataclass(frozen=True)
class HardwareConfig:
    """Logical population shards (the paper's TPU cores) and the devices that run them."""

    name: str = setting("cpu", "placement")
    shards: int = setting(1, "result")  # 0 = one shard per device
    platform: str = setting("any", "placement")
    devices: int = setting(0, "placement")  # devices to spread the shards over; 0 = all visible ones of the platform
    cpu_devices: int = setting(0, "placement")  # simulated CPU devices to create before JAX starts; 0 = leave as is
    processes: int = setting(1, "placement")  # JAX processes of one run (multi-host / SLURM tasks)
    compilation_cache: bool = setting(True, "plumbing")  # JAX's persistent compilation cache


@dataclass(frozen=True)
class LoggerConfig:
    """Experiment tracking: Weights & Biases (mode from WANDB_MODE, offline by default) or none."""

    name: str = setting("wandb", "plumbing")
    project: str = setting("esmeta", "plumbing")
    entity: str | None = setting(None, "plumbing")
    group: str | None = setting(None, "plumbing")  # default: the sweep's name (sweep=...), else the multirun's directory


@dataclass(frozen=True)
class ScaleConfig:
    """Budget preset of a sweep: `paper` as stated, `cpu` the paper's configurations under a time budget (larger
    populations refused), `smoke` caps populations and shards to run in minutes."""

    name: str = setting("paper", "budget")
    max_pop_per_shard: int = setting(0, "budget")  # cap on estimator.pop_per_shard; 0 = no cap
    max_shards: int = setting(0, "budget")  # cap on the logical shards; 0 = no cap
    max_population: int = setting(0, "budget")  # larger requested populations are not run (they need an accelerator)


@dataclass(frozen=True)
class Config:
    """A whole run, validated. `estimator` is the chosen estimator's own config (esmeta.estimators.ESTIMATORS)."""

    seed: int = setting(0, "seed")  # training seed: initialization and training episodes
    alpha: float = setting(1e-3, "result")
    sigma: float = setting(0.01, "result")  # wsr's perturbation scale (finite_diff has its own, estimator.fd_sigma)
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    distance: DistanceConfig = DistanceConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    estimator: EstimatorConfig = BackpropConfig()
    learner: LearnerConfig = ProtoNetConfig()
    hardware: HardwareConfig = HardwareConfig()
    logger: LoggerConfig = LoggerConfig()
    scale: ScaleConfig = ScaleConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = tuple(f.name for f in fields(Config) if dataclasses.is_dataclass(f.default))
TOP_LEVEL = {f.name: f.type for f in fields(Config) if f.name not in SECTIONS}
# Top-level keys that belong to other layers (Hydra, logging, sweeps) and are not part of the math.
PASSTHROUGH_KEYS = frozenset({"hydra", "sweep", "experiment", "cluster", "point"})


def _section_class(name: str, values: Mapping[str, Any]) -> type:
    """The class of section `name`: the chosen estimator's config for `estimator`, the chosen learner's for `learner`."""
    if name == "learner":
        return learner_class(rules.coerce("learner.name", values.get("name", Config().learner.name), "str"))
    if name != "estimator":
        return type(getattr(Config(), name))
    return config_class(rules.coerce("estimator.name", values.get("name", Config().estimator.name), "str"))


def not_read_message(key: str, running: str | None = None) -> str | None:
    """The one line for an estimator or learner setting `key` (dotted) that the running one (`running`, the name of
    the estimator or learner this command chose) does not read, naming those that do; None when none reads it."""
    section, _, setting_name = key.partition(".")
    if section == "estimator":
        who = readers(setting_name)
    elif section == "learner":
        who = [name for name, cls in LEARNERS.items() if setting_name in cls.__dataclass_fields__]
    else:
        who = []
    if not who:
        return None
    chosen = f"{section}={running}" if running else f"the {section} this command runs"
    return (f"{key} is a setting of {' and '.join(who)} only ({chosen} does not read it): drop it, or choose "
            f"{f'that {section}' if len(who) == 1 else 'one of them'} ({section}={who[0]})")


def _build_section(name: str, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{name} must be a group of settings, got {values!r}")
    cls = _section_class(name, values)
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ConfigError(not_read_message(f"{name}.{unknown[0]}", cls.NAME if name in ("estimator", "learner") else None)
                          or f"unknown setting {name}.{unknown[0]}; {name} has: {', '.join(sorted(declared))}")
    return cls(**{key: rules.coerce(f"{name}.{key}", values[key], f.type) for key, f in declared.items() if key in values})


def from_mapping(raw: Mapping[str, Any]) -> Config:
    """Build and validate a `Config` from a resolved plain mapping (e.g. OmegaConf.to_container)."""
    unknown = sorted(set(raw) - set(SECTIONS) - set(TOP_LEVEL) - PASSTHROUGH_KEYS)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}; top-level settings are: "
                          f"{', '.join(sorted([*SECTIONS, *TOP_LEVEL]))}")
    kwargs: dict[str, Any] = {name: _build_section(name, raw[name]) for name in SECTIONS if name in raw}
    kwargs |= {name: rules.coerce(name, raw[name], typ) for name, typ in TOP_LEVEL.items() if name in raw}
    config = Config(**kwargs)
    validate(config)
    return config


def upgrade_record(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A config recorded by an earlier esmeta (a checkpoint's, a summary's) in today's layout: before each estimator
    had its own section, every estimator's settings were recorded; those the run's estimator does not read go."""
    out = dict(recorded)
    section = out.get("estimator")
    if isinstance(section, Mapping) and section.get("name") in ESTIMATORS:
        reads = config_class(section["name"]).__dataclass_fields__
        out["estimator"] = {key: value for key, value in section.items() if key in reads}
    return out


def schema_defaults(estimator: str | None, learner: str | None = None) -> dict[str, Any]:
    """The schema's defaults as a config dict, its estimator and learner sections those of the ones named (the
    defaults, backprop and the ProtoNet, where a name is None or unknown)."""
    return Config(estimator=config_class(estimator)() if estimator in ESTIMATORS else BackpropConfig(),
                  learner=LEARNERS[learner]() if learner in LEARNERS else ProtoNetConfig()).to_dict()


def in_todays_layout(recorded: Mapping[str, Any]) -> dict[str, Any]:
    """A recorded config (a summary's, a checkpoint's) as today's schema holds it, for comparing runs of any age:
    `upgrade_record`, then every setting added since it was written as its default, which is the behaviour that run
    had (a new setting defaults to the old behaviour; esmeta.checkpoint compares a resumed run's config so too)."""
    out = upgrade_record(recorded)
    estimator = (out.get("estimator") or {}).get("name") if isinstance(out.get("estimator"), Mapping) else None
    learner = (out.get("learner") or {}).get("name") if isinstance(out.get("learner"), Mapping) else None
    defaults = schema_defaults(estimator, learner)
    if estimator not in ESTIMATORS and "estimator" in out:  # an estimator this code does not know: left as recorded
        defaults.pop("estimator")
    return _with_defaults(out, defaults)


def _with_defaults(recorded: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(recorded)
    for key, default in defaults.items():
        if key not in out:
            out[key] = default
        elif isinstance(out[key], Mapping) and isinstance(default, Mapping):
            out[key] = _with_defaults(out[key], default)
    return out


def validate(config: Config) -> None:
    """Cross-field checks that need no data and no JAX; raises ConfigError on the first problem."""
    t, d, e, h = config.task, config.data, config.estimator, config.hardware
    for prefix, section in (("", config), *((f"{name}.", getattr(config, name)) for name in SECTIONS)):
        for f in fields(section):
            if f.metadata.get("role") == "seed":  # (a section's own field has no role)
                rules.positive(f"{prefix}{f.name}", getattr(section, f.name), allow_zero=True)
    rules.positive("alpha", config.alpha)
    rules.float32("alpha", config.alpha)
    for key in ("train_way", "shot", "query", "test_way", "test_shot", "test_query", "meta_batch"):
        rules.positive(f"task.{key}", getattr(t, key))
    if t.train_way < 2 or t.test_way < 2:
        raise ConfigError(f"task.train_way and task.test_way must be at least 2 (got {t.train_way}, {t.test_way})")
    for shot_key, query_key in (("shot", "query"), ("test_shot", "test_query")):
        shot, query = getattr(t, shot_key), getattr(t, query_key)
        if shot + query > IMAGES_PER_CLASS:
            raise ConfigError(
                f"task.{shot_key} + task.{query_key} = {shot} + {query} = {shot + query} exceeds the "
                f"{IMAGES_PER_CLASS} images of an Omniglot class; lower one of them"
            )
    rules.choice("data.split", d.split, SPLITS)
    n_train, n_val, n_test = split_sizes(d.split)
    for key, way, n_classes, part in (
        ("task.train_way", t.train_way, n_train, "train"),
        ("task.test_way", t.test_way, n_test, "test"),
        ("task.test_way", t.test_way, n_val, "val"),
    ):
        if way > n_classes:
            raise ConfigError(
                f"{key}={way} exceeds the {n_classes} {part} classes of data.split={d.split}; use at most {n_classes}"
            )
    if not MIN_IMAGE_SIZE <= d.image_size <= MAX_IMAGE_SIZE:
        raise ConfigError(
            f"data.image_size={d.image_size} must be between {MIN_IMAGE_SIZE} (four 2x2 pools) and "
            f"{MAX_IMAGE_SIZE} (the source size); the paper uses 32, Snell et al. 28"
        )
    rules.choice("data.resize_filter", d.resize_filter, RESIZE_FILTERS)
    rules.path("data.root", d.root)
    rules.path("data.cache_dir", d.cache_dir)
    rules.positive("model.channels", config.model.channels)
    rules.int32("model.channels", config.model.channels)
    rules.choice("model.norm_stats", config.model.norm_stats, NORM_STATS)
    rules.choice("distance.name", config.distance.name, DISTANCES)
    rules.positive("distance.scale", config.distance.scale)
    rules.float32("distance.scale", config.distance.scale)
    rules.positive("train.epochs", config.train.epochs)
    rules.positive("train.episodes_per_epoch", config.train.episodes_per_epoch)
    rules.positive("train.max_minutes", config.train.max_minutes, allow_zero=True)
    rules.positive("train.allocation_minutes", config.train.allocation_minutes, allow_zero=True)
    rules.choice("train.progress", config.train.progress, PROGRESS)
    rules.choice("train.budget_clock", config.train.budget_clock, BUDGET_CLOCKS)
    rules.positive("train.checkpoint_every", config.train.checkpoint_every, allow_zero=True)
    rules.positive("eval.val_episodes", config.eval.val_episodes, allow_zero=True)
    rules.positive("eval.test_episodes", config.eval.test_episodes)
    rules.int32("eval.val_episodes", config.eval.val_episodes)
    rules.int32("eval.test_episodes", config.eval.test_episodes)
    rules.int32("train.epochs x train.episodes_per_epoch", config.train.epochs * config.train.episodes_per_epoch)

    e.validate(config.sigma, h.shards)  # and hardware.shards
    config.learner.validate(config)
    if e.FIRST_ORDER and config.learner.name not in INNER_LOOP:
        raise ConfigError(f"estimator={e.name} holds an inner loop's gradients constant, and learner="
                          f"{config.learner.name} has no inner loop: choose learner=maml, or estimator=backprop")
    rules.choice("hardware.platform", h.platform, PLATFORMS)
    rules.positive("hardware.devices", h.devices, allow_zero=True)
    rules.positive("hardware.cpu_devices", h.cpu_devices, allow_zero=True)
    rules.positive("hardware.processes", h.processes)
    rules.choice("logger.name", config.logger.name, LOGGERS)
    rules.choice("scale.name", config.scale.name, SCALES)
    rules.positive("scale.max_pop_per_shard", config.scale.max_pop_per_shard, allow_zero=True)
    rules.positive("scale.max_shards", config.scale.max_shards, allow_zero=True)
    rules.positive("scale.max_population", config.scale.max_population, allow_zero=True)
