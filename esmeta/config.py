"""Typed run configuration: Hydra/OmegaConf in, validated once into frozen dataclasses.

Everything below `esmeta.run` takes these plain values; no OmegaConf object reaches the math.
Every check raises `ConfigError` with one line naming the setting, its value, the rule and a fix.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from esmeta.errors import ConfigError, NeedsAcceleratorError

IMAGES_PER_CLASS = 20  # every Omniglot character has 20 drawings
MIN_IMAGE_SIZE = 16  # four 2x2 max-pools need at least 16 pixels to leave a 1x1 map
MAX_IMAGE_SIZE = 105  # the source images are 105x105; we never upsample

ESTIMATORS = ("backprop", "wsr", "finite_diff", "forward_mode")
POPULATION_ESTIMATORS = ("wsr", "finite_diff")  # with a population of candidates; the others are exact
DISTANCES = ("euclidean", "cosine")
SPLITS = ("paper", "vinyals", "lake")
RESIZE_FILTERS = ("antialias", "nearest")
NORM_STATS = ("running", "episode", "support")
OPTIMIZERS = ("sgd", "adam")
FITNESS_SHAPINGS = ("zscore", "centered_rank")
NORMALIZATIONS = ("per_shard", "global")
SHARD_EPISODES = ("shared", "own")  # wsr: one episode for every shard in a step, or an episode per shard
EVAL_MODES = ("auto", "map", "vmap")
FD_REDUCES = ("sum", "mean")
FITNESS_PRECISIONS = ("highest", "default")
PLATFORMS = ("any", "cpu", "gpu", "tpu")
PROGRESS = ("auto", "on", "off")
BUDGET_CLOCKS = ("wall", "cpu")
LOGGERS = ("wandb", "none")
SCALES = ("paper", "cpu", "smoke", "custom")
INT_LIMIT = 2**63  # every integer setting must fit a signed 64-bit integer (what JAX and numpy take)
INT32_MAX = 2**31 - 1  # sizes and counters reach JAX as int32 (array dimensions, candidate indices, episode numbers)
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: below it a step size or a perturbation is lost
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: above it a setting is inf in the math
SEEDS = ("seed", "eval.seed", "data.split_seed")


@dataclass(frozen=True)
class TaskConfig:
    """Episode shapes (N-way, K-shot, Q-query) for training and for validation/test."""

    train_way: int = 20
    shot: int = 5
    query: int = 5
    test_way: int = 5
    test_shot: int = 5
    test_query: int = 15


@dataclass(frozen=True)
class ModelConfig:
    """Snell et al.'s 4-block conv embedding; `norm_stats` picks the batch-norm protocol (see `protonet`)."""

    channels: int = 64
    # running: train on episode statistics, evaluate with their running averages (the reference ProtoNet);
    # episode: support+query statistics of each episode, at test time too (transductive); support: support only
    norm_stats: str = "running"


@dataclass(frozen=True)
class DistanceConfig:
    """Query-to-prototype similarity: negative squared Euclidean (eq. 1) or scaled cosine."""

    name: str = "euclidean"
    scale: float = 1.0


@dataclass(frozen=True)
class DataConfig:
    """Where the Omniglot zips are and how they are preprocessed and split."""

    root: str | None = None
    image_size: int = 32
    split: str = "paper"
    split_seed: int = 0
    resize_filter: str = "antialias"
    cache_dir: str | None = None
    download: bool = True


@dataclass(frozen=True)
class TrainConfig:
    """Training budget: epochs x episodes (the paper: 200 x 100)."""

    epochs: int = 200
    episodes_per_epoch: int = 100
    max_minutes: float = 0.0  # the run's time budget over all its processes, checked after each epoch; 0 = none
    allocation_minutes: float = 0.0  # wall-clock minutes this process may train before it checkpoints and stops,
    # unfinished, for a later rerun to continue (a job's time limit); 0 = none
    budget_clock: str = "wall"  # wall: elapsed time; cpu: process CPU time / cores (fair on a shared machine)
    progress: str = "auto"  # auto: a bar only when stderr is a terminal
    checkpoint_every: int = 100  # episodes between checkpoints (and at every epoch end); 0 = never
    resume: bool = True  # a run directory with a checkpoint resumes; a completed one is not retrained


@dataclass(frozen=True)
class EvalConfig:
    """Fixed validation/test episodes, drawn from `seed` (independent of the training seed)."""

    val_episodes: int = 1
    test_episodes: int = 200
    seed: int = 2021


@dataclass(frozen=True)
class EstimatorConfig:
    """The `estimator` section as the command line and the YAML write it: which estimator, its update rule, and
    the settings of every estimator (one flat group, so that sweeps and old summaries keep one layout).
    `own(sigma)` splits out the chosen estimator's own typed settings; the update rule stays here."""

    name: str = "backprop"
    optimizer: str = "adam"
    lr_decay_every: int = 0  # episodes between step-size decays; 0 = constant step size
    lr_decay_factor: float = 0.5
    weight_decay: float = 0.0  # L2 pull of mu towards 0, added to the update
    pop_per_shard: int = 1
    antithetic: bool = False
    rank: int = 0  # wsr: 0 = full-rank Gaussian perturbations (the paper); r > 0 = rank-r matrix perturbations
    fitness_shaping: str = "zscore"
    normalize: str = "per_shard"
    shard_episodes: str = "shared"  # wsr: every shard evaluates the step's one episode, or each samples its own
    fd_sigma: float = 1e-3
    central: bool = False
    # finite_diff readings the paper leaves open (see esmeta/estimators/finite_diff.py):
    fd_reduce: str = "sum"  # shards' disjoint coordinate estimates: summed (the full FD gradient) or averaged (II.F)
    fd_rescale_subset: bool = False  # probing N < D coordinates: scale the estimate by D/N (unbiased) or not
    # wsr and finite_diff fitnesses: full float32 matmuls/convs ("highest") or the backend's default (TF32/bf16
    # on GPUs/TPUs: faster, but near the resolution of the fitness differences; the same on CPU)
    fitness_precision: str = "highest"
    eval_mode: str = "auto"
    chunk_size: int = 0  # candidates evaluated together (forward_mode: tangents pushed together); 0 = automatic

    @property
    def is_es(self) -> bool:
        """A population estimator (wsr, finite_diff); backprop and forward_mode compute exact gradients."""
        return self.name in POPULATION_ESTIMATORS

    def own(self, sigma: float) -> OwnConfig:
        """The chosen estimator's own settings (WsrConfig, ...): the one place that says which perturbation
        (the top-level `sigma`, or `fd_sigma`) and which of this section's settings belong to which estimator."""
        return _own_config(OWN_CONFIGS[self.name], self, sigma)


TOP_SIGMA = "<sigma>"  # in an own config's FROM: the top-level `sigma` setting, not one of the section's
Namer = Callable[[str], str]  # an own config's field (or "shards", "population") -> the name its user wrote


def config_name(own: type) -> Namer:
    """Names as the command line writes them: `estimator.<setting>`, the perturbation's own key, hardware.shards."""

    def name(key: str) -> str:
        if key == "shards":
            return "hardware.shards"
        if key == "population":
            return "estimator.pop_per_shard x hardware.shards"
        source = own.FROM.get(key, key)
        return "sigma" if source == TOP_SIGMA else f"estimator.{source}"

    return name


def _check_fields(config: Any, name: Namer) -> None:
    """Every field's type, for configs built in Python rather than from a mapping."""
    for f in fields(config):
        _coerce(name(f.name), getattr(config, f.name), f.type)


def _check_evaluation(config: Any, name: Namer) -> None:
    """The candidate-evaluation settings the population estimators share."""
    _choice(name("fitness_precision"), config.fitness_precision, FITNESS_PRECISIONS)
    _choice(name("eval_mode"), config.eval_mode, EVAL_MODES)
    _positive(name("chunk_size"), config.chunk_size, allow_zero=True)


@dataclass(frozen=True)
class WsrConfig:
    """wsr's own settings (eq. 9): eps_i = sigma * N(0, I) over pop_per_shard candidates in each shard."""

    NAME: ClassVar[str] = "wsr"
    FROM: ClassVar[dict[str, str]] = {"sigma": TOP_SIGMA}  # own field -> where the command line sets it

    sigma: float = 0.01
    pop_per_shard: int = 32
    antithetic: bool = False
    rank: int = 0
    fitness_shaping: str = "zscore"
    normalize: str = "per_shard"
    # The paper z-scores and estimates per core, then averages the cores' estimates, but does not say whether
    # the cores share a step's episode: "shared" (one episode, every shard) or "own" (an episode per shard).
    shard_episodes: str = "shared"
    fitness_precision: str = "highest"
    eval_mode: str = "auto"
    chunk_size: int = 0

    def check(self, name: Namer) -> None:
        """What holds whichever estimator runs: types and options."""
        _check_fields(self, name)
        _choice(name("fitness_shaping"), self.fitness_shaping, FITNESS_SHAPINGS)
        _choice(name("normalize"), self.normalize, NORMALIZATIONS)
        _choice(name("shard_episodes"), self.shard_episodes, SHARD_EPISODES)
        _positive(name("rank"), self.rank, allow_zero=True)
        _check_evaluation(self, name)

    def validate(self, shards: int, name: Namer) -> None:
        """`check` and the rules of running wsr on `shards` shards (0: not known yet, one per device)."""
        self.check(name)
        _positive(name("pop_per_shard"), self.pop_per_shard)
        _positive(name("sigma"), self.sigma)
        _float32(name("sigma"), self.sigma)
        if self.antithetic and self.pop_per_shard % 2:
            raise ConfigError(
                f"{name('antithetic')}=true needs an even {name('pop_per_shard')} (mirrored pairs), "
                f"got {self.pop_per_shard}"
            )
        if self.pop_per_shard < 2 and self.normalize == "per_shard":
            raise ConfigError(
                f"{name('pop_per_shard')}={self.pop_per_shard} must be at least 2 to z-score fitnesses within a "
                f"shard; raise it or set {name('normalize')}=global"
            )
        if shards and self.pop_per_shard * shards < 2:
            raise ConfigError(
                f"{name('population')}={self.pop_per_shard * shards} must be at least 2 for wsr "
                "(a lone candidate's shaped fitness is 0: a zero update); raise it"
            )


@dataclass(frozen=True)
class FiniteDiffConfig:
    """finite_diff's own settings (Sec. II.G): the nudge `sigma` (sigma_FD) on pop_per_shard coordinates a shard."""

    NAME: ClassVar[str] = "finite_diff"
    FROM: ClassVar[dict[str, str]] = {"sigma": "fd_sigma", "reduce": "fd_reduce", "rescale_subset": "fd_rescale_subset"}

    sigma: float = 1e-3
    pop_per_shard: int = 128
    central: bool = False
    reduce: str = "sum"
    rescale_subset: bool = False
    fitness_precision: str = "highest"
    eval_mode: str = "auto"
    chunk_size: int = 0

    def check(self, name: Namer) -> None:
        """What holds whichever estimator runs: types and options."""
        _check_fields(self, name)
        _choice(name("reduce"), self.reduce, FD_REDUCES)
        _check_evaluation(self, name)

    def validate(self, shards: int, name: Namer) -> None:
        """`check` and the rules of running finite differences."""
        self.check(name)
        _positive(name("pop_per_shard"), self.pop_per_shard)
        _positive(name("sigma"), self.sigma)
        _float32(name("sigma"), self.sigma)


@dataclass(frozen=True)
class ForwardModeConfig:
    """forward_mode's own settings: basis tangents pushed forward together (0 = 32)."""

    NAME: ClassVar[str] = "forward_mode"
    FROM: ClassVar[dict[str, str]] = {}

    chunk_size: int = 0

    def check(self, name: Namer) -> None:
        _check_fields(self, name)
        _positive(name("chunk_size"), self.chunk_size, allow_zero=True)

    def validate(self, shards: int, name: Namer) -> None:
        self.check(name)


@dataclass(frozen=True)
class BackpropConfig:
    """backprop has no settings of its own (jax.value_and_grad of the loss)."""

    NAME: ClassVar[str] = "backprop"
    FROM: ClassVar[dict[str, str]] = {}

    def check(self, name: Namer) -> None:
        pass

    def validate(self, shards: int, name: Namer) -> None:
        pass


OwnConfig = WsrConfig | FiniteDiffConfig | ForwardModeConfig | BackpropConfig
OWN_CONFIGS: dict[str, type] = {c.NAME: c for c in (BackpropConfig, WsrConfig, FiniteDiffConfig, ForwardModeConfig)}


def _own_config(own: type, section: EstimatorConfig, sigma: float) -> OwnConfig:
    """`own`'s settings read from the estimator section (and the top-level sigma), as its FROM says."""
    def value(key: str) -> Any:
        source = own.FROM.get(key, key)
        return sigma if source == TOP_SIGMA else getattr(section, source)

    return own(**{f.name: value(f.name) for f in fields(own)})


@dataclass(frozen=True)
class HardwareConfig:
    """Logical population shards (the paper's TPU cores) and the devices that run them."""

    name: str = "cpu"
    shards: int = 1  # 0 = one shard per device
    platform: str = "any"
    devices: int = 0  # devices to spread the shards over; 0 = all visible devices of the platform
    cpu_devices: int = 0  # simulated CPU devices to create before JAX starts; 0 = leave as is
    processes: int = 1  # JAX processes of one run (multi-host / SLURM tasks); >1 calls jax.distributed.initialize
    compilation_cache: bool = True  # JAX's persistent compilation cache (JAX_COMPILATION_CACHE_DIR or the user cache)


@dataclass(frozen=True)
class LoggerConfig:
    """Experiment tracking: Weights & Biases (mode from WANDB_MODE, offline by default) or none."""

    name: str = "wandb"
    project: str = "esmeta"
    entity: str | None = None
    group: str | None = None  # default: the sweep's name (sweep=...), else the multirun's directory name


@dataclass(frozen=True)
class ScaleConfig:
    """Budget preset of a sweep: `paper` as stated, `cpu` the paper's configurations under a time budget (larger
    populations refused), `smoke` caps populations and shards to run in minutes."""

    name: str = "paper"
    max_pop_per_shard: int = 0  # cap on estimator.pop_per_shard; 0 = no cap
    max_shards: int = 0  # cap on the logical shards; 0 = no cap
    max_population: int = 0  # larger requested populations are not run at this scale (they need an accelerator)


@dataclass(frozen=True)
class Config:
    """A whole run, validated."""

    seed: int = 0
    alpha: float = 1e-3
    sigma: float = 0.01
    task: TaskConfig = TaskConfig()
    model: ModelConfig = ModelConfig()
    distance: DistanceConfig = DistanceConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    estimator: EstimatorConfig = EstimatorConfig()
    hardware: HardwareConfig = HardwareConfig()
    logger: LoggerConfig = LoggerConfig()
    scale: ScaleConfig = ScaleConfig()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_SECTIONS = {f.name: f.type for f in fields(Config)}
_SECTION_TYPES = {
    "task": TaskConfig,
    "model": ModelConfig,
    "distance": DistanceConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "estimator": EstimatorConfig,
    "hardware": HardwareConfig,
    "logger": LoggerConfig,
    "scale": ScaleConfig,
}
# Top-level keys that belong to other layers (Hydra, logging, sweeps) and are not part of the math.
PASSTHROUGH_KEYS = frozenset({"hydra", "sweep", "experiment", "cluster", "point"})


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """Check one leaf value against its declared type; ints are accepted where floats are."""
    typ = str(typ).replace("typing.", "")
    optional = "None" in typ
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{key} is missing (null); set it on the command line, e.g. {key}=<value>")
    base = typ.split("|")[0].strip()
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}={value!r} must be true or false")
    if base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} must be an integer")
        if not -INT_LIMIT <= value < INT_LIMIT:
            raise ConfigError(f"{key}={value} is out of range; use an integer below 2^63 = {INT_LIMIT}")
        return value
    if base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} must be a number")
        if not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} must be a finite number")
        return float(value)
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} must be a string")
        return value
    raise AssertionError(f"unhandled config type {typ} for {key}")  # a bug in this module, not user input


def _build_section(name: str, cls: type, values: Any) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigError(f"{name} must be a group of settings, got {values!r}")
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown setting {name}.{unknown[0]}; {name} has: {', '.join(sorted(declared))}"
        )
    kwargs = {}
    for key, f in declared.items():
        if key in values:
            kwargs[key] = _coerce(f"{name}.{key}", values[key], f.type)
    return cls(**kwargs)


def from_mapping(raw: Mapping[str, Any]) -> Config:
    """Build and validate a `Config` from a resolved plain mapping (e.g. OmegaConf.to_container)."""
    unknown = sorted(set(raw) - set(_SECTIONS) - PASSTHROUGH_KEYS)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]}; top-level settings are: {', '.join(sorted(_SECTIONS))}")
    kwargs: dict[str, Any] = {}
    for name, typ in _SECTIONS.items():
        if name not in raw:
            continue
        if name in _SECTION_TYPES:
            kwargs[name] = _build_section(name, _SECTION_TYPES[name], raw[name])
        else:
            kwargs[name] = _coerce(name, raw[name], typ)
    config = Config(**kwargs)
    validate(config)
    return config


def _choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not an option; choose one of: {', '.join(choices)}")


def _positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        rule = "at least 0" if allow_zero else "positive"
        raise ConfigError(f"{key}={value:g} must be {rule}")


def _float32(key: str, value: float) -> None:
    """A setting the float32 math uses: 0 or a normal float32, never one that underflows to 0 (or a denormal,
    which the CPU flushes to 0: a zero step or perturbation, an untrained model) or overflows to inf."""
    if value and abs(value) < FLOAT32_TINY:
        raise ConfigError(f"{key}={value!r} underflows float32 (the math would see 0); use at least {FLOAT32_TINY:.3g}")
    if abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{key}={value!r} overflows float32 (the math would see inf); use at most {FLOAT32_MAX:.3g}")


def _int32(key: str, value: int) -> None:
    """A size or counter that JAX holds as an int32 (an array dimension, a candidate index, an episode number)."""
    if value > INT32_MAX:
        raise ConfigError(f"{key}={value} is too large: JAX counts it in 32-bit integers; use at most {INT32_MAX}")


def _path(key: str, value: str | None) -> None:
    """A folder setting: unset (null) for the default, never empty (which would mean the current directory)."""
    if value is not None and not value.strip():
        raise ConfigError(f"{key}={value!r} is an empty path; give a folder, or leave it unset (null) for the default")


def validate_estimator(e: EstimatorConfig, sigma: float, shards: int = 0) -> None:
    """The estimator section's checks: its types, its update rule, every estimator's options (a typo is an
    error whichever estimator runs), then the chosen estimator's own rules (`validate` of its own config).
    `shards` 0 means not known yet (one per device). Shared by `validate` and `esmeta.estimators.make_estimator`.
    """
    section = lambda key: f"estimator.{key}"  # noqa: E731
    _check_fields(e, section)
    _coerce("sigma", sigma, "float")
    _coerce("hardware.shards", shards, "int")
    _positive("hardware.shards", shards, allow_zero=True)
    _choice("estimator.name", e.name, ESTIMATORS)
    _choice("estimator.optimizer", e.optimizer, OPTIMIZERS)
    _positive("estimator.lr_decay_every", e.lr_decay_every, allow_zero=True)
    _positive("estimator.lr_decay_factor", e.lr_decay_factor)
    _positive("estimator.weight_decay", e.weight_decay, allow_zero=True)
    for key in ("lr_decay_factor", "weight_decay"):
        _float32(f"estimator.{key}", getattr(e, key))
    for key in ("pop_per_shard", "chunk_size", "rank", "lr_decay_every"):
        _int32(f"estimator.{key}", getattr(e, key))
    _int32("hardware.shards", shards)
    if e.is_es:
        _int32("estimator.pop_per_shard x hardware.shards", e.pop_per_shard * max(shards, 1))
    for own in OWN_CONFIGS.values():
        _own_config(own, e, sigma).check(config_name(own))
    if e.shard_episodes != "shared" and e.name != "wsr":
        raise ConfigError(f"estimator.shard_episodes={e.shard_episodes} is a wsr setting (episodes per population "
                          f"shard); estimator={e.name} evaluates one episode a step: drop it or use estimator=wsr")
    e.own(sigma).validate(shards, config_name(OWN_CONFIGS[e.name]))


def validate(config: Config) -> None:
    """Cross-field checks that need no data and no JAX; raises ConfigError on the first problem."""
    from esmeta.data.splits import split_sizes  # static sizes, no data loaded

    t, d, e, h = config.task, config.data, config.estimator, config.hardware
    for key, seed in zip(SEEDS, (config.seed, config.eval.seed, d.split_seed)):
        _positive(key, seed, allow_zero=True)
    _positive("alpha", config.alpha)
    _float32("alpha", config.alpha)
    for key in ("train_way", "shot", "query", "test_way", "test_shot", "test_query"):
        _positive(f"task.{key}", getattr(t, key))
    if t.train_way < 2 or t.test_way < 2:
        raise ConfigError(f"task.train_way and task.test_way must be at least 2 (got {t.train_way}, {t.test_way})")
    for shot_key, query_key in (("shot", "query"), ("test_shot", "test_query")):
        shot, query = getattr(t, shot_key), getattr(t, query_key)
        if shot + query > IMAGES_PER_CLASS:
            raise ConfigError(
                f"task.{shot_key} + task.{query_key} = {shot} + {query} = {shot + query} exceeds the "
                f"{IMAGES_PER_CLASS} images of an Omniglot class; lower one of them"
            )
    _choice("data.split", d.split, SPLITS)
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
    _choice("data.resize_filter", d.resize_filter, RESIZE_FILTERS)
    _path("data.root", d.root)
    _path("data.cache_dir", d.cache_dir)
    _positive("model.channels", config.model.channels)
    _int32("model.channels", config.model.channels)
    _choice("model.norm_stats", config.model.norm_stats, NORM_STATS)
    _choice("distance.name", config.distance.name, DISTANCES)
    _positive("distance.scale", config.distance.scale)
    _float32("distance.scale", config.distance.scale)
    _positive("train.epochs", config.train.epochs)
    _positive("train.episodes_per_epoch", config.train.episodes_per_epoch)
    _positive("train.max_minutes", config.train.max_minutes, allow_zero=True)
    _positive("train.allocation_minutes", config.train.allocation_minutes, allow_zero=True)
    _choice("train.progress", config.train.progress, PROGRESS)
    _choice("train.budget_clock", config.train.budget_clock, BUDGET_CLOCKS)
    _positive("train.checkpoint_every", config.train.checkpoint_every, allow_zero=True)
    _positive("eval.val_episodes", config.eval.val_episodes, allow_zero=True)
    _positive("eval.test_episodes", config.eval.test_episodes)
    _int32("eval.val_episodes", config.eval.val_episodes)
    _int32("eval.test_episodes", config.eval.test_episodes)
    _int32("train.epochs x train.episodes_per_epoch", config.train.epochs * config.train.episodes_per_epoch)

    validate_estimator(e, config.sigma, h.shards)  # and hardware.shards
    _choice("hardware.platform", h.platform, PLATFORMS)
    _positive("hardware.devices", h.devices, allow_zero=True)
    _positive("hardware.cpu_devices", h.cpu_devices, allow_zero=True)
    _positive("hardware.processes", h.processes)
    _choice("logger.name", config.logger.name, LOGGERS)
    _choice("scale.name", config.scale.name, SCALES)
    _positive("scale.max_pop_per_shard", config.scale.max_pop_per_shard, allow_zero=True)
    _positive("scale.max_shards", config.scale.max_shards, allow_zero=True)
    _positive("scale.max_population", config.scale.max_population, allow_zero=True)


def scaled(config: Config) -> Config:
    """The configuration a run executes: `scale`'s caps applied to the population and the shards.

    The requested values stay in `config` (and in the summary's `config`), so that a smoke run of a
    paper configuration is still found under that configuration; the summary records what ran.
    """
    s, e, h = config.scale, config.estimator, config.hardware
    if s.max_pop_per_shard and e.pop_per_shard > s.max_pop_per_shard:
        e = dataclasses.replace(e, pop_per_shard=s.max_pop_per_shard)
    if s.max_shards and h.shards > s.max_shards:
        h = dataclasses.replace(h, shards=s.max_shards)
    return dataclasses.replace(config, estimator=e, hardware=h)


def check_fits_scale(config: Config) -> None:
    """Refuse a configuration whose requested population exceeds `scale.max_population` (NeedsAcceleratorError):
    at `scale=cpu` the paper's v3-256 and v2-512 rows are not shrunk to fit, they are left to an accelerator."""
    s, e = config.scale, config.estimator
    population = e.pop_per_shard * config.hardware.shards
    if s.max_population and e.name in POPULATION_ESTIMATORS and population > s.max_population:
        raise NeedsAcceleratorError(
            f"population {population} ({e.pop_per_shard} per shard x {config.hardware.shards} shards) exceeds "
            f"scale={s.name}'s max_population {s.max_population}: this configuration needs an accelerator; "
            "run it there with scale=paper (or raise scale.max_population)"
        )



# --- TEMPORARY STAND-IN (branch i30-records): helper A's role metadata replaces this whole block at merge ---------
_NOT_RESULT = ("train.", "logger.", "scale.", "eval.val_episodes", "data.root", "data.cache_dir", "data.download", "estimator.eval_mode",
               "estimator.chunk_size", "hardware.platform", "hardware.processes")


def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, Mapping) else {f"{prefix}{key}": value})
    return out


def settings_with_role(role: str) -> tuple[str, ...]:
    """Stand-in: the dotted keys of `role` ("result", "budget" or "plumbing"), from a hand list until A lands."""
    keys = tuple(_flat(Config().to_dict()))
    result = tuple(k for k in keys if not k.startswith(_NOT_RESULT))
    budget = tuple(k for k in keys if k.startswith(("train.", "scale.")) and k != "train.progress")
    return {"result": result, "budget": budget,
            "plumbing": tuple(k for k in keys if k not in result and k not in budget)}[role]


def result_differences(config: Config) -> dict[str, Any]:
    """Stand-in: the result-role settings of `config` that differ from `estimator=<its estimator>`'s defaults."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [f"estimator={config.estimator.name}"]
    if GlobalHydra.instance().is_initialized():  # inside the command's Hydra app
        composed = compose("config", overrides=overrides)
    else:
        with initialize_config_module(config_module="esmeta.conf", version_base="1.3"):
            composed = compose("config", overrides=overrides)
    raw = OmegaConf.to_container(composed, resolve=True)
    raw.pop("hydra", None)
    ours, theirs = _flat(config.to_dict()), _flat(from_mapping(raw).to_dict())
    return {k: ours[k] for k in settings_with_role("result") if ours.get(k) != theirs.get(k)}
