"""Command-line entry point: `python -m esmeta.run [overrides]` (add `-m` for a Hydra multirun).

Before Hydra starts, the overrides are composed and validated (each value of a sweep too), so bad
input costs one line and exit status 2 instead of a traceback or a half-launched sweep.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from esmeta import cost, sweeps
from esmeta.config import Config, from_mapping, not_read_message
from esmeta.errors import ConfigError, EsmetaError, NeedsAcceleratorError, RunStopped, first_line
from esmeta.results import CHECKPOINT
from esmeta.sweeps import CONFIG_MODULE, CONFIG_NAME, USAGE_HINT

log = logging.getLogger("esmeta.run")  # by name: run as `python -m esmeta.run`, __name__ is "__main__"
_started: float | None = None  # when `main` began (time.monotonic()): the allocation's clock, for every job


def fail(message: str) -> None:
    """The one way bad input ends a command: one line on stderr, exit status 2."""
    print(f"esmeta: error: {message}", file=sys.stderr)
    sys.exit(2)


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
    if "(" in value or sweeps.group_options(key.lstrip("+~").replace(".", "/")):  # glob(...), range(...), a group
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
    """What a command will run. `complete`: every job is listed (else, past sweeps.PRODUCT_LIMIT jobs, each
    value of each swept key once: the first values, then one change at a time)."""

    jobs: list[Job]
    out: Path
    multirun: bool
    complete: bool
    total: int  # jobs the command launches (an Optuna search's trials)
    search: bool = False  # an Optuna search: its trials are sampled as it runs, each searched range checked at its bounds


def plan_jobs(overrides: Sequence[str], multirun: bool = False) -> Plan:
    """Every job a command means (see esmeta.sweeps), each composed and validated; nothing is written."""
    from hydra import compose, initialize_config_module
    from hydra._internal.config_loader_impl import get_overrides_dirname  # the job directory's name, as Hydra's
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    from esmeta.results import ensure_writable_dir

    def compose_one(variant: Sequence[str]) -> DictConfig:
        try:
            return compose(CONFIG_NAME, overrides=list(variant), return_hydra_config=True)
        except Exception as e:  # Hydra composition errors and OmegaConf errors (bad keys, types)
            raise ConfigError(_hydra_error_message(e)) from None

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        parser = OverridesParser.create(config_loader=loader)
        try:
            variants = sweeps.covering_variants(overrides)
            base = compose_one(variants[0])
            multirun = multirun or str(base.hydra.get("mode")).endswith("MULTIRUN")  # a stored sweep sets it
            stored = sweeps.stored_grid(base.hydra) if multirun else {}
            trials = sweeps.search_trials(base.hydra) if multirun else None
            total = trials if trials is not None else sweeps.product_size(overrides, stored, loader) if multirun else 1
            complete = trials is None and total <= sweeps.PRODUCT_LIMIT
            if not multirun:
                variants = [list(overrides)]
                swept = [o for o in parser.parse_overrides(list(overrides)) if o.is_sweep_override()]
                if swept:
                    raise ConfigError(sweep_needs_multirun(swept[0].input_line))
            elif complete:  # the whole product, in launch order
                variants = sweeps.job_overrides(overrides, stored, loader)
            elif stored:  # too many to list: each value of the stored grid and of the command line once
                variants = sweeps.covering_variants([*overrides, *sweeps.grid_overrides(stored, overrides)])
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
                    name = get_overrides_dirname([o for o in job_parsed if not o.is_hydra_override()],
                                                 list(dirname.exclude_keys), dirname.item_sep, dirname.kv_sep)
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
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)  # for ${hydra:...} in the subdir, as Hydra's run_job does
    try:
        subdir = OmegaConf.select(cfg, "hydra.sweep.subdir", throw_on_resolution_failure=True)
    except Exception as e:  # an unresolvable interpolation in the subdir
        raise ConfigError(f"cannot resolve hydra.sweep.subdir: {first_line(e)}") from None
    finally:
        HydraConfig.instance().cfg = saved
    return Path(os.path.normpath(out / _check_path("hydra.sweep.subdir", subdir)))


def _check_job_directories(jobs: Sequence[Job], out: Path) -> None:
    """Before the first job: every job has a directory of its own (not the sweep's), with names this filesystem
    takes, that can be created and written."""
    from esmeta.results import ensure_writable_dir

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
                and not o.is_hydra_override() and not sweeps.group_options(key.replace(".", "/")))

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


JOB_FAILED = "failed"  # what a multirun job returns when it failed (recorded in its summary, counted at the end)
JOB_NOT_STARTED = "not started"  # what it returns when Hydra could not start it (no directory, no log file)


class FailedJobs(Callback):
    """Counts a multirun's failed jobs; at its end, one line with the count and a non-zero exit status."""

    def __init__(self) -> None:
        self.jobs = 0
        self.failed: list[str] = []
        self.not_started: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if sweeps.search_trials(config.hydra) is not None:  # a search whose every trial failed: the same line
            sweeps.end_failed_search_in_one_line(lambda: self.on_multirun_end(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs += 1
        if job_return._return_value == JOB_NOT_STARTED:
            self.not_started.append(str(config.hydra.runtime.output_dir))
        elif job_return.status == JobStatus.FAILED or job_return._return_value == JOB_FAILED:
            self.failed.append(str(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        n = len(self.failed) + len(self.not_started)
        if n:
            why = [f"{len(self.not_started)} could not start, first: {self.not_started[0]}"] if self.not_started else []
            if self.failed:
                why.append(f"each other says why in its summary.json, first: {self.failed[0]}")
            print(f"esmeta: error: {n} of {self.jobs} jobs failed ({'; '.join(why)}); rerun the same command to redo "
                  "only those", file=sys.stderr)
            sys.exit(1)


def _jobs_that_cannot_start_fail_alone() -> None:
    """Make a job that Hydra's basic launcher cannot start (its directory cannot be created, its log file not
    opened) that job's failure, reported in one line, instead of the end of the sweep: the directories are checked
    before the first job (`plan_jobs`), but one can go away meanwhile. Hydra takes launchers only from its plugin
    package, so this wraps the launcher's `run_job`."""
    from hydra._internal.core_plugins import basic_launcher

    run_job = basic_launcher.run_job
    if getattr(run_job, "esmeta", False):
        return

    def run_job_or_fail(*, config: DictConfig, hydra_context: Any, **kwargs: Any) -> JobReturn:
        try:
            return run_job(config=config, hydra_context=hydra_context, **kwargs)
        except Exception as e:  # run_job catches the task's errors: this one came before the task started
            out = config.hydra.runtime.get("output_dir") or config.hydra.sweep.dir
            while e.__cause__ is not None:  # logging's "Unable to configure handler" wraps the OSError that says why
                e = e.__cause__
            print(f"esmeta: error: job {config.hydra.job.num} cannot start in {out} ({first_line(e)}); "
                  "free that path and rerun the same command", file=sys.stderr)
            ret = JobReturn(overrides=list(config.hydra.overrides.task), status=JobStatus.COMPLETED,
                            _return_value=JOB_NOT_STARTED)
            hydra_context.callbacks.on_job_end(config=config, job_return=ret)
            return ret

    run_job_or_fail.esmeta = True  # type: ignore[attr-defined]
    basic_launcher.run_job = run_job_or_fail


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)
def _job(cfg: DictConfig) -> float | str | None:
    """One Hydra job: validate, train, report. Returns the objective a search maximizes, the run's best validation
    accuracy (the paper tuned on the validation set, never the test set), or JOB_FAILED."""
    from hydra.types import RunMode

    from esmeta.train import JobInfo, train

    logging.getLogger("jax").setLevel(logging.WARNING)  # Hydra logs INFO; JAX's backend probing is noise
    if _USER_ARGV is not None:  # Hydra has parsed its arguments: the command is recorded as the user typed it
        sys.argv = list(_USER_ARGV)
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    job = JobInfo(
        overrides=tuple(hc.overrides.task),
        sweep=hc.runtime.choices.get("sweep"),
        sweep_dir=str(hc.sweep.dir) if multirun else None,
        job_name=hc.job.name,
        record=(  # what Hydra's output_subdir would hold, written by train once the run is checked
            (".hydra/config.yaml", OmegaConf.to_yaml(cfg)),
            (".hydra/hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": hc}))),
            (".hydra/overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(list(hc.overrides.task)))),
        ),
        started=_started,
    )
    config = None
    try:
        config = config_from_omegaconf(cfg)
        summary = train(config, run_dir, job)
    except Exception as e:
        return _job_failed(e, config, run_dir, job, multirun)
    # Through logging, not print: Hydra's handlers put it on stdout and in the job's .log (SLURM, nohup, sweeps).
    log.info(
        "[%s] %s: test accuracy %.4f ± %.4f (%d-way %d-shot, %d episodes) -> %s", summary["status"],
        summary["estimator"], summary["test_accuracy"], summary["test_accuracy_std"], config.task.test_way,
        config.task.test_shot, summary["test_episodes"], run_dir,
    )
    return summary["best_val_accuracy"]


def _job_failed(error: Exception, config: Config | None, run_dir: Path, job: Any, multirun: bool) -> str | None:
    """A job's failure: refused in one line (a single run, bad input: nothing written, exit 2); otherwise
    recorded as the job's `failed` summary and reported; a multirun goes on to its next job. A configuration that
    needs an accelerator at this scale is recorded as `skipped` and is no failure."""
    from esmeta.train import record_failure

    bad_input = isinstance(error, EsmetaError)
    if bad_input and not multirun:
        fail(str(error))
    if isinstance(error, NeedsAcceleratorError):  # not a failure: the sweep records the job as skipped, goes on
        if config is not None:
            record_failure(config, run_dir, job, error, status="skipped")
        log.warning("[skipped] %s: %s", run_dir, error)
        return None
    if config is not None:
        record_failure(config, run_dir, job, error)
    if bad_input:
        print(f"esmeta: error: {run_dir}: {error}", file=sys.stderr)
    else:
        traceback.print_exc()
    if not multirun:
        raise error
    return JOB_FAILED


def dry_run(overrides: Sequence[str], multirun: bool = False, estimate: bool = False) -> str:
    """What a command would run, job by job: its overrides, where it writes and how its configuration differs
    from the defaults; with `estimate`, each job's expected time on this machine and the total (esmeta.cost).
    Everything is checked as before a real launch; nothing is trained and nothing is written."""

    plan = plan_jobs(overrides, multirun)
    costs = _estimates(plan) if estimate else None
    defaults = _flat(plan_jobs([]).jobs[0].config.to_dict())
    what = "job" if plan.total == 1 else "jobs"
    lines = [f"dry run: {plan.total} {what} -> {plan.out} (nothing runs, nothing is written)"]
    if plan.search:
        lines.append(f"  an Optuna search: its {plan.total} trials are sampled as it runs; each searched range was "
                     "checked at its bounds (shown)")
    elif not plan.complete:
        lines.append(f"  more than {sweeps.PRODUCT_LIMIT} jobs: each value of each swept key is shown (and was checked) once")
    for job in plan.jobs:
        differ = " ".join(f"{k}={v}" for k, v in _flat(job.config.to_dict()).items() if defaults.get(k) != v)
        lines.append(f"#{job.number} {' '.join(job.overrides) or '(no overrides)'}")
        lines.append(f"    writes to {job.directory}")
        lines.append(f"    differs from the defaults: {differ or 'nothing'}")
        if costs is not None:
            c = costs[plan.jobs.index(job)]
            lines.append(f"    expected: {cost.clock(c.seconds)} here (compile {cost.clock(c.compile_s)}, "
                         f"{c.episodes:,} training episodes {cost.clock(c.train_s)}, evaluation {cost.clock(c.eval_s)})")
    if costs is not None:
        lines.append(_cost_total(plan, costs))
    return "\n".join(lines)


def _estimates(plan: Plan) -> list[Any]:
    """Each listed job's expected time (esmeta.cost), measured in this process; progress on stderr."""
    return cost.estimate_jobs([job.config for job in plan.jobs], lambda line: print(line, file=sys.stderr))


def _cost_total(plan: Plan, costs: list[Any]) -> str:
    """The sum of the jobs' expected times, with the machine that measured them."""
    from esmeta.provenance import available_cores, cpu_name, matmul_peak_gflops

    total, cores = sum(c.seconds for c in costs), available_cores()
    scope = "" if plan.complete else f" for the {len(costs)} jobs listed (of {plan.total})"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = f"; the machine was busy (load {load:.1f} on {cores} cores): these are this moment's times" \
        if load > cores + 0.5 else ""
    return (f"expected in all{scope}: {cost.clock(total)} of compute, one job at a time, on this machine "
            f"({cores} cores, {cpu_name()}, matmul {matmul_peak_gflops(repeats=3):.0f} GFLOP/s); "
            f"start-up and the data's first preparation not counted{busy}")


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun")  # Hydra's flags that take the next word


def _split_argv(argv: Sequence[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun?, other flags?) from the command line.

    Any flag other than -m/--multirun (--help, --cfg job, --info, ...) goes to Hydra unchecked.
    """
    multirun = any(a in ("-m", "--multirun") for a in argv)
    flags, overrides, after_flag = [], [], False
    for a in argv:
        if after_flag:  # the value of --cfg, -cn, ...
            after_flag = False
        elif a.startswith("-"):
            if a not in ("-m", "--multirun"):
                flags.append(a)
                after_flag = a in HYDRA_VALUE_FLAGS
        else:
            overrides.append(a)
    return overrides, multirun, bool(flags)


def main(argv: Sequence[str] | None = None) -> None:
    global _started, _USER_ARGV
    _started = time.monotonic()
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--dry-run" in argv or "--estimate" in argv:  # list the jobs (and time them here: --estimate), run none
        overrides, multirun, _ = _split_argv([a for a in argv if a not in ("--dry-run", "--estimate")])
        try:
            print(dry_run(overrides, multirun, estimate="--estimate" in argv))
        except EsmetaError as e:
            fail(str(e))
        return
    overrides, multirun, passthrough = _split_argv(argv)
    lock, pinned = None, []
    try:
        if not passthrough:
            lock, out, multirun = _preflight(overrides, multirun)
            pinned = [pin_directory(out, multirun)]
        elif overrides and not multirun:  # --help, --cfg job, ...: Hydra composes first; its errors become one line
            check_composes(overrides)
    except EsmetaError as e:
        fail(str(e))
    _USER_ARGV = [sys.argv[0], *argv]
    sys.argv = [sys.argv[0], *with_pinned(argv, pinned)]
    signal.signal(signal.SIGTERM, _stop_on_sigterm)  # (training itself first finishes its step and checkpoints)
    _jobs_that_cannot_start_fail_alone()
    try:
        _job()
    except RunStopped as stop:
        _report_stop(stop, argv, *_planned_output(lock, multirun))
    except KeyboardInterrupt:
        _report_stop(RunStopped("SIGINT", 128 + signal.SIGINT), argv, *_planned_output(lock, multirun))
    finally:
        if lock is not None:
            lock.release()


def _stop_on_sigterm(signum: int, frame: Any) -> None:
    raise RunStopped("SIGTERM", 128 + signum)


def _planned_output(lock: Any, multirun: bool) -> tuple[str, str]:
    """(the setting, the directory) the command writes to, as checked and pinned before it started: the run's
    directory, or the whole sweep's."""
    return ("hydra.sweep.dir" if multirun else "hydra.run.dir", str(lock.directory) if lock is not None else "")


def _report_stop(stop: RunStopped, argv: Sequence[str], key: str, directory: str) -> None:
    """A stopped command's one line: what stopped it, where it stood, and the command that continues it."""
    where = stop.where
    if not where and directory:
        kept = Path(directory) / CHECKPOINT
        where = f"last checkpoint {kept}" if kept.exists() else f"{directory} holds no checkpoint of this job yet"
    given = any(a.startswith(f"{key}=") for a in argv)  # the user's own directory (as typed) continues as is
    words = [*argv, *([f"{key}={directory}"] if directory and not given else [])]
    again = shlex.join(["python", "-m", "esmeta.run", *words])
    print(f"esmeta: stopped by {stop.why}, not finished ({where}); continue with: {again}", file=sys.stderr)
    sys.exit(stop.exit_status)


_USER_ARGV: list[str] | None = None  # the command as typed, without the pinned directory (what provenance records)


def with_pinned(argv: Sequence[str], pinned: Sequence[str]) -> list[str]:
    """The command line handed to Hydra: the pinned directory right after the last override (so it wins over one
    the user typed), since Hydra's parser takes the overrides as one run of words (appended after `a=1 --multirun`,
    it was refused: "unrecognized arguments: hydra.sweep.dir=...")."""
    end = max((i + 1 for i, a in enumerate(argv) if not a.startswith("-")), default=len(argv))
    return [*argv[:end], *pinned, *argv[end:]]


def pin_directory(out: Path, multirun: bool) -> str:
    """The override that hands Hydra the run (or sweep) directory the pre-run check resolved and locked: Hydra
    would resolve `${now:...}` again, a second later perhaps, and write a second folder beside the locked one."""
    # Quoted, so that any path stays as is: backslashes are doubled only before a quote (Hydra's escaping rule).
    text = re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""), str(out))
    return f"hydra.{'sweep' if multirun else 'run'}.dir='{text}'"


def check_composes(overrides: Sequence[str]) -> None:
    """A ConfigError if Hydra cannot compose these overrides (a bad group option, an unknown key, a comma
    list without -m); the values are not validated: `--cfg job` shows what a run would get, valid or not."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        try:
            compose(CONFIG_NAME, overrides=list(overrides))
        except Exception as e:  # Hydra composition errors and OmegaConf errors (bad keys, types)
            raise ConfigError(_hydra_error_message(e)) from None


def _preflight(overrides: Sequence[str], multirun: bool) -> tuple[Any, Path, bool]:
    """Check the command before Hydra writes anything; return the lock it holds on the run or sweep directory,
    that directory (its `${now:...}` resolved) and whether the command is a multirun (a stored sweep is one).

    A single run is checked whole (hardware, data, what its directory holds); a multirun's sweep directory is
    locked for the whole sweep, and each job is checked when it starts (a failure is that job's alone).
    """
    from esmeta.results import DirLock
    from esmeta.train import preflight

    configs, out, multirun = plan_command(overrides, multirun)
    if multirun:
        return DirLock(out, "hydra.sweep.dir").acquire(), out, multirun
    return preflight(configs[0], out), out, multirun


if __name__ == "__main__":
    main()
