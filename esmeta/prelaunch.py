"""The pre-launch check: every job a command means, composed with Hydra, validated and given its directory, before
anything is written; its own room because the command line, the dry run and the W&B sweep files all ask it."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from esmeta import hydra_internals, sweep_expansion
from esmeta.config import Config, from_mapping, not_read_message
from esmeta.errors import ConfigError, first_line
from esmeta.sweep_expansion import CONFIG_MODULE, CONFIG_NAME, USAGE_HINT


def config_from_omegaconf(cfg: DictConfig) -> Config:
    """Resolve interpolations and validate into a typed `Config`."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an unresolvable interpolation, e.g. a typo in ${...}
        raise ConfigError(f"cannot resolve the configuration: {first_line(e)}") from None
    raw.pop("hydra", None)
    return from_mapping(raw)


def sweep_needs_multirun(override: str) -> str:
    """The one line for a sweep (a comma list, glob(...), range(...)) given without -m, whatever key it sweeps."""
    key, _, value = override.partition("=")
    line = f"{override} lists several values, which only a multirun runs: add -m (--multirun) for one job per value"
    if "(" in value or sweep_expansion.group_options(key.lstrip("+~").replace(".", "/")):  # glob(...), range(...), a group
        return line
    return f"{line}; for a single value that is a list write {key}=[{value}], for a string {key}='{value}'"


def _hydra_error_message(e: Exception) -> str:
    """Condense Hydra's multi-line composition errors into one actionable line."""
    from hydra.errors import MissingConfigException

    text = " ".join(str(e).split())
    swept = re.match(r"(?:Ambiguous value for argument|Sweep parameters) '(.+?)'(?: requires --multirun)?", text)
    if swept:
        return sweep_needs_multirun(swept.group(1))
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        return f"{group}={name} is not an option; choose one of: {', '.join(sorted(e.options))}"
    if "Could not override" in text or "not in struct" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return not_read_message(key) or (
            f"unknown setting {key}; {USAGE_HINT} for the settings there are (or prefix + to add a new key)")
    return f"{text}; {USAGE_HINT}"


def check_overrides(overrides: Sequence[str], multirun: bool = False) -> list[Config]:
    """Compose and validate every configuration the overrides describe, a stored sweep's grid included;
    raise ConfigError on the first bad one."""
    return plan_command(overrides, multirun)[0]


def plan_command(overrides: Sequence[str], multirun: bool = False) -> tuple[list[Config], Path, bool]:
    """(every configuration, the run or sweep directory, multirun?) of a command, all checked, nothing written."""
    plan = plan_jobs(overrides, multirun)
    return [job.config for job in plan.jobs], plan.out, plan.multirun


@dataclass(frozen=True)
class Job:
    """One job of a command: its overrides (as Hydra passes them), its checked config, where it writes."""

    number: int
    overrides: tuple[str, ...]  # the job's own (task) overrides, hydra.* settings left out
    config: Config
    directory: Path


@dataclass(frozen=True)
class Plan:
    """What a command will run. `complete`: every job is listed (else, past sweep_expansion.PRODUCT_LIMIT jobs, each
    value of each swept key once: the first values, then one change at a time)."""

    jobs: list[Job]
    out: Path
    multirun: bool
    complete: bool
    total: int  # jobs the command launches (an Optuna search's trials)
    search: bool = False  # an Optuna search: its trials are sampled as it runs, each searched range checked at its bounds


def plan_jobs(overrides: Sequence[str], multirun: bool = False) -> Plan:
    """Every job a command means (see esmeta.sweep_expansion), each composed and validated; nothing is written."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from esmeta.run_dir import ensure_writable_dir

    def compose_one(variant: Sequence[str]) -> DictConfig:
        try:
            return compose(CONFIG_NAME, overrides=list(variant), return_hydra_config=True)
        except Exception as e:  # Hydra composition errors and OmegaConf errors (bad keys, types)
            raise ConfigError(_hydra_error_message(e)) from None

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        try:
            variants = sweep_expansion.covering_variants(overrides)
            base = compose_one(variants[0])
            multirun = multirun or str(base.hydra.get("mode")).endswith("MULTIRUN")  # a stored sweep sets it
            stored = sweep_expansion.stored_grid(base.hydra) if multirun else {}
            trials = sweep_expansion.search_trials(base.hydra) if multirun else None
            total = trials if trials is not None else sweep_expansion.product_size(overrides, stored, loader) if multirun else 1
            complete = trials is None and total <= sweep_expansion.PRODUCT_LIMIT
            if not multirun:
                variants = [list(overrides)]
                swept = [o for o in parser.parse_overrides(list(overrides)) if o.is_sweep_override()]
                if swept:
                    raise ConfigError(sweep_needs_multirun(swept[0].input_line))
            elif complete:  # the whole product, in launch order
                variants = sweep_expansion.job_overrides(overrides, stored, loader)
            elif stored:  # too many to list: each value of the stored grid and of the command line once
                variants = sweep_expansion.covering_variants([*overrides, *sweep_expansion.grid_overrides(stored, overrides)])
            parsed = [parser.parse_overrides(list(v)) for v in variants]
        except OverrideParseException as e:
            raise ConfigError(f"cannot parse the overrides: {first_line(e)}") from None
        out = _output_dir(base.hydra, multirun)
        dirname = base.hydra.job.config.override_dirname
        compose_cached = _cached_compose(compose_one)
        jobs = []
        for number, job_parsed in enumerate(parsed):
            variant = [o.input_line for o in job_parsed if not o.is_hydra_override()]  # the job's task overrides
            try:
                cfg = compose_cached(job_parsed)
                config = config_from_omegaconf(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
                directory = out
                if multirun and complete:
                    name = hydra_internals.override_dirname([o for o in job_parsed if not o.is_hydra_override()],
                                                            dirname.exclude_keys, dirname.item_sep, dirname.kv_sep)
                    directory = _job_directory(cfg, out, number, name)
            except ConfigError as e:
                if not multirun:
                    raise
                raise ConfigError(f"job {number} ({' '.join(variant)}): {e}") from None
            jobs.append(Job(number, tuple(variant), config, directory))
    ensure_writable_dir(out, "hydra.sweep.dir" if multirun else "hydra.run.dir", create=False)
    if multirun and complete:  # (a search's trials are named as it runs: complete is false for it)
        _check_job_directories(jobs, out)
    return Plan(jobs, out, multirun, complete, total, search=trials is not None)


def _check_path(key: str, value: Any) -> Path:
    """An output path setting: never empty (an empty path is the current directory)."""
    if not str(value).strip():
        raise ConfigError(f"{key}={str(value)!r} is an empty path (the current directory); give a directory, or "
                          f"leave {key} out for its default")
    return Path(str(value))


def _output_dir(hydra_cfg: Any, multirun: bool) -> Path:
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    return _check_path(key, hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir)


def _job_directory(cfg: DictConfig, out: Path, number: int, override_dirname: str) -> Path:
    """Where Hydra puts job `number`: `hydra.sweep.subdir` resolved as the launcher resolves it (job number,
    override dirname) under the sweep directory."""
    with open_dict(cfg):
        cfg.hydra.job.num = cfg.hydra.job.id = number
        cfg.hydra.job.override_dirname = override_dirname
    try:
        with hydra_internals.hydra_config_as(cfg):  # for ${hydra:...} in the subdir
            subdir = OmegaConf.select(cfg, "hydra.sweep.subdir", throw_on_resolution_failure=True)
    except Exception as e:  # an unresolvable interpolation in the subdir
        raise ConfigError(f"cannot resolve hydra.sweep.subdir: {first_line(e)}") from None
    return Path(os.path.normpath(out / _check_path("hydra.sweep.subdir", subdir)))


def _check_job_directories(jobs: Sequence[Job], out: Path) -> None:
    """Before the first job: every job has a directory of its own (not the sweep's), with names this filesystem
    takes, that can be created and written."""
    from esmeta.run_dir import ensure_writable_dir

    first: dict[Path, int] = {}
    for job in jobs:
        if job.directory == Path(os.path.normpath(out)):
            raise ConfigError(f"job {job.number} would write into the sweep directory {out} itself; "
                              "set hydra.sweep.subdir to a name per job, e.g. ${hydra.job.num}")
        if job.directory in first:
            raise ConfigError(f"jobs {first[job.directory]} and {job.number} would both write to {job.directory}; "
                              "hydra.sweep.subdir must differ between jobs: keep ${hydra.job.num} in it")
        first[job.directory] = job.number
        try:
            ensure_writable_dir(job.directory, "hydra.sweep.subdir", create=False)
        except ConfigError as e:
            raise ConfigError(f"job {job.number} ({' '.join(job.overrides)}): {e}") from None


def _cached_compose(compose_one: Any) -> Any:
    """Compose a job's config, once per distinct set of config-group choices: a job that differs only in plain
    values (alpha=1,2,3) is that composition with its values set, as Hydra sets them after the defaults."""
    cache: dict[tuple[str, ...], DictConfig] = {}

    def is_plain_value(o: Any) -> bool:
        key = o.key_or_group
        return (o.package is None and not o.is_add() and not o.is_delete() and not o.is_force_add()
                and not o.is_hydra_override() and not sweep_expansion.group_options(key.replace(".", "/")))

    def compose_job(parsed: list[Any]) -> DictConfig:
        values = [o for o in parsed if is_plain_value(o)]
        structural = tuple(o.input_line for o in parsed if not is_plain_value(o))
        if structural not in cache:
            cache[structural] = compose_one(structural)
        cfg = cache[structural].copy()
        for o in values:
            try:
                OmegaConf.update(cfg, o.key_or_group, o.value(), merge=False)
            except Exception as e:  # an unknown key (struct mode) or a value of the wrong type
                raise ConfigError(_hydra_error_message(e)) from None
        return cfg

    return compose_job


def check_composes(overrides: Sequence[str]) -> None:
    """A ConfigError if Hydra cannot compose these overrides (a bad group option, an unknown key, a comma
    list without -m); the values are not validated: `--cfg job` shows what a run would get, valid or not."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            compose(CONFIG_NAME, overrides=list(overrides))
        except Exception as e:  # Hydra composition errors and OmegaConf errors (bad keys, types)
            raise ConfigError(_hydra_error_message(e)) from None
