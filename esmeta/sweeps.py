"""What jobs a command means: every job of a multirun, in the order Hydra's basic sweeper launches them.

The pre-launch check and the dry run ask this module, so what they list is what Hydra will run: a stored
sweep's grid (`hydra.sweeper.params`) first, then the command line, a later value of a key replacing an
earlier one, and the product over the keys in that order (job numbers name the job directories).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PRODUCT_LIMIT = 4096  # the pre-launch check validates every job up to this many, one per value above it


def job_overrides(overrides: Sequence[str], stored: Mapping[str, Any], config_loader: Any) -> list[list[str]]:
    """Each job's overrides, in launch order: the product of the stored grid's values and the command line's."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    parsed = parser.parse_overrides([*(f"{k}={v}" for k, v in stored.items()), *overrides])
    return BasicSweeper.split_arguments(parsed, None)[0]


def product_size(overrides: Sequence[str], stored: Mapping[str, Any], config_loader: Any) -> int:
    """How many jobs `job_overrides` would list, without listing them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create(config_loader=config_loader)
    sizes: dict[str, int] = {}
    for o in parser.parse_overrides([*(f"{k}={v}" for k, v in stored.items()), *overrides]):
        sizes[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
    n = 1
    for size in sizes.values():
        n *= size
    return n
