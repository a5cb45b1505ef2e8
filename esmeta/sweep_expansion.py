"""What jobs a command means: every job of a multirun, in the order Hydra's basic sweeper launches them.

The one room for sweep grids. The pre-launch check (`esmeta.prelaunch`), the dry run and the W&B sweep
generator (`esmeta.wandb_sweeps`) ask this module, so what they list is what Hydra will run: a stored
sweep's grid (`hydra.sweeper.params`) first, then the command line, a later value of a key replacing an
earlier one, and the product over the keys in that order (job numbers name the job directories).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from esmeta.errors import ConfigError

CONFIG_MODULE = "esmeta.conf"  # the shipped Hydra configs (conf/)
CONFIG_NAME = "config"
USAGE_HINT = "see `python -m esmeta.run --help`"
PRODUCT_LIMIT = 4096  # the pre-launch check validates every job up to this many, one per value above it


def group_options(group: str) -> list[str]:
    """Option names of a config group (conf/<group>/*.yaml; [] when `group` is no group), what a glob() matches."""
    folder = resources.files(CONFIG_MODULE).joinpath(*group.split("/"))
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml"))


def sweep_names() -> list[str]:
    """The stored Hydra sweeps: the option names of the `sweep` config group."""
    return group_options("sweep")


def stored_grid(hydra_cfg: Any) -> dict[str, str]:
    """A composed config's stored sweep grid (`hydra.sweeper.params`), key -> Hydra sweep syntax."""
    return {str(k): str(v) for k, v in (hydra_cfg.get("sweeper", {}).get("params") or {}).items()}


def search_trials(hydra_cfg: Any) -> int | None:
    """How many trials a composed config's Optuna search runs (`hydra/sweeper=optuna`, conf/search/), or None
    where Hydra's basic sweeper runs a grid."""
    sweeper = hydra_cfg.get("sweeper") or {}
    if "optuna" not in str(sweeper.get("_target_", "")):
        return None
    if sweeper.get("storage") is not None:
        raise ConfigError(f"hydra.sweeper.storage={sweeper.storage}: a search keeps its study in memory (Optuna 2.10, "
                          "which hydra-optuna-sweeper needs, cannot open a database under SQLAlchemy 2); leave it out: "
                          "a rerun into the same hydra.sweep.dir asks the same trials and keeps the finished ones")
    return int(sweeper.get("n_trials"))


def values(override: Any) -> list[str]:
    """The values Hydra's basic sweeper runs for one parsed override: a choice list, range() or glob() over a group;
    for an Optuna search's interval() (log-tagged or not), its two bounds: what the pre-launch check validates."""
    from hydra.core.override_parser.types import Glob, IntervalSweep

    if isinstance(override.value(), Glob):
        return override.value().filter(group_options(override.key_or_group))
    if isinstance(override.value(), IntervalSweep):
        return [f"{override.value().start!r}", f"{override.value().end!r}"]
    if override.is_sweep_override():
        return list(override.sweep_string_iterator())
    return [override.get_value_element_as_str()]


def expand(key: str, value: str) -> list[str]:
    """`values` of `key=value`, e.g. expand("seed", "range(0,6,2)") == ["0", "2", "4"]."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return values(OverridesParser.create().parse_override(f"{key}={value}"))


def covering_variants(overrides: Sequence[str]) -> list[list[str]]:
    """Override lists that cover every value of every sweep: the first values, then one change at a time
    (what the pre-launch check validates when the product is past PRODUCT_LIMIT)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    options = []
    for o in parsed:
        lines = [f"{o.get_key_element()}={v}" for v in values(o)] if o.is_sweep_override() else [o.input_line]
        if not lines:
            raise ConfigError(f"{o.input_line} matches no option of {o.key_or_group}; {USAGE_HINT}")
        options.append(lines)
    firsts = [lines[0] for lines in options]
    variants = [firsts]
    for i, lines in enumerate(options):
        for line in lines[1:]:
            variants.append(firsts[:i] + [line] + firsts[i + 1 :])
    return variants


def grid_overrides(stored: Mapping[str, str], overrides: Sequence[str]) -> list[str]:
    """A stored grid as overrides, less the keys the command line sets itself."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [f"{k}={v}" for k, v in stored.items() if k not in given]


def job_overrides(overrides: Sequence[str], stored: Mapping[str, Any], config_loader: Any) -> list[list[str]]:
    """Each job's overrides, in launch order: the product of the stored grid's values and the command line's."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from esmeta.hydra_internals import basic_sweeper_jobs

    parser = OverridesParser.create(config_loader=config_loader)
    return basic_sweeper_jobs(parser.parse_overrides([*(f"{k}={v}" for k, v in stored.items()), *overrides]))


def product_size(overrides: Sequence[str], stored: Mapping[str, Any], config_loader: Any) -> int:
    """How many jobs `job_overrides` would list, without listing them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    sizes: dict[str, int] = {}
    for o in parser.parse_overrides([*(f"{k}={v}" for k, v in stored.items()), *overrides]):
        if o.is_interval_sweep():
            raise ConfigError(f"{o.input_line}: an interval is sampled by a search, not run as a grid; use a stored "
                              "search (search=NAME, conf/search/) or add hydra/sweeper=optuna")
        sizes[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
    n = 1
    for size in sizes.values():
        n *= size
    return n

