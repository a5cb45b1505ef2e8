"""The rules a setting's value is checked against, and the role each setting plays (declared with `setting`).

Every check raises `ConfigError` with one line naming the setting, its value, the rule and a fix. This module
imports nothing of esmeta but its errors, so that the sections of the command line's schema (`esmeta.config`)
and the estimators' own settings (`esmeta.estimators.*`) use the same rules without importing each other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from esmeta.errors import ConfigError

INT_LIMIT = 2**63  # every integer setting must fit a signed 64-bit integer (what JAX and numpy take)
INT32_MAX = 2**31 - 1  # sizes and counters reach JAX as int32 (array dimensions, candidate indices, episode numbers)
FLOAT32_TINY = 1.1754943508222875e-38  # the smallest normal float32: below it a step size or a perturbation is lost
FLOAT32_MAX = 3.4028234663852886e38  # the largest float32: above it a setting is inf in the math

# What changing a setting changes. `result`: what the run computes (its model, its test accuracy): runs that
# differ in one are different experiments, never one table cell. `seed`: which random draw of an experiment: runs
# that differ only in seeds are its replicates. `budget`: how long it trains and how many episodes evaluate it
# (epochs, episodes, a scale's caps): the same experiment at another length. `placement`: which devices and
# processes run it: the same numbers up to float rounding. `plumbing`: where and how it is stored and shown (paths,
# progress, logger, time limits, checkpoints): a run may change it between its allocations (a resumed run keeps
# every other), and Hydra's job directories and W&B's run names leave it out.
ROLES = ("result", "seed", "budget", "placement", "plumbing")
Namer = Callable[[str], str]  # a field's name -> the name its user wrote (e.g. `estimator.<field>`)


def setting(default: Any, role: str) -> Any:
    """A dataclass field with its role (one of ROLES) declared beside its default."""
    if role not in ROLES:
        raise AssertionError(f"unknown role {role!r}")  # a bug in the schema, not user input
    return dataclasses.field(default=default, metadata={"role": role})


def role(field: dataclasses.Field) -> str:
    """The role `setting` declared for a dataclass field."""
    return field.metadata["role"]


def coerce(key: str, value: Any, typ: Any) -> Any:
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
    raise AssertionError(f"unhandled config type {typ} for {key}")  # a bug in the schema, not user input


def check_fields(config: Any, name: Namer) -> None:
    """Every field's type, for configs built in Python rather than from a mapping."""
    for f in dataclasses.fields(config):
        coerce(name(f.name), getattr(config, f.name), f.type)


def choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{key}={value!r} is not an option; choose one of: {', '.join(choices)}")


def positive(key: str, value: float, allow_zero: bool = False) -> None:
    if value < 0 or (value == 0 and not allow_zero):
        rule = "at least 0" if allow_zero else "positive"
        raise ConfigError(f"{key}={value:g} must be {rule}")


def float32(key: str, value: float) -> None:
    """A setting the float32 math uses: 0 or a normal float32, never one that underflows to 0 (or a denormal,
    which the CPU flushes to 0: a zero step or perturbation, an untrained model) or overflows to inf."""
    if value and abs(value) < FLOAT32_TINY:
        raise ConfigError(f"{key}={value!r} underflows float32 (the math would see 0); use at least {FLOAT32_TINY:.3g}")
    if abs(value) > FLOAT32_MAX:
        raise ConfigError(f"{key}={value!r} overflows float32 (the math would see inf); use at most {FLOAT32_MAX:.3g}")


def int32(key: str, value: int) -> None:
    """A size or counter that JAX holds as an int32 (an array dimension, a candidate index, an episode number)."""
    if value > INT32_MAX:
        raise ConfigError(f"{key}={value} is too large: JAX counts it in 32-bit integers; use at most {INT32_MAX}")


def path(key: str, value: str | None) -> None:
    """A folder setting: unset (null) for the default, never empty (which would mean the current directory)."""
    if value is not None and not value.strip():
        raise ConfigError(f"{key}={value!r} is an empty path; give a folder, or leave it unset (null) for the default")
