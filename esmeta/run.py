"""Command-line entry point: `python -m esmeta.run [overrides]` (add `-m` for a Hydra multirun).

Before Hydra starts, the overrides are composed and validated (each value of a sweep too: esmeta.prelaunch),
so bad input costs one line and exit status 2 instead of a traceback or a half-launched sweep.
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
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from esmeta import cost, hydra_internals, sweep_expansion
from esmeta.config import Config
from esmeta.errors import EsmetaError, NeedsAcceleratorError, RunStopped, first_line
from esmeta.prelaunch import Plan, check_composes, config_from_omegaconf, plan_command, plan_jobs
from esmeta.run_dir import CHECKPOINT
from esmeta.sweep_expansion import CONFIG_MODULE, CONFIG_NAME

log = logging.getLogger("esmeta.run")  # by name: run as `python -m esmeta.run`, __name__ is "__main__"
_started: float | None = None  # when `main` began (time.monotonic()): the allocation's clock, for every job


def fail(message: str) -> None:
    """The one way bad input ends a command: one line on stderr, exit status 2."""
    print(f"esmeta: error: {message}", file=sys.stderr)
    sys.exit(2)


JOB_FAILED = "failed"  # what a multirun job returns when it failed (recorded in its summary, counted at the end)
JOB_NOT_STARTED = "not started"  # what it returns when Hydra could not start it (no directory, no log file)


class FailedJobs(Callback):
    """Counts a multirun's failed jobs; at its end, one line with the count and a non-zero exit status."""

    def __init__(self) -> None:
        self.jobs = 0
        self.failed: list[str] = []
        self.not_started: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        if sweep_expansion.search_trials(config.hydra) is not None:  # a search whose every trial failed: the same line
            hydra_internals.guard_optuna_search(lambda: self._no_trial_completed(config))

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs += 1
        value = hydra_internals.job_return_value(job_return)
        if value == JOB_NOT_STARTED:
            self.not_started.append(str(config.hydra.runtime.output_dir))
        elif job_return.status == JobStatus.FAILED or value == JOB_FAILED:
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

    def _no_trial_completed(self, config: DictConfig) -> None:
        """An Optuna search none of whose trials has a validation accuracy: the failed count's line, else this one."""
        self.on_multirun_end(config)
        print("esmeta: error: no trial of the search has a validation accuracy to compare (collapsed or skipped "
              "runs: each one's summary.json says why)", file=sys.stderr)
        sys.exit(1)


def _cannot_start(config: DictConfig, error: BaseException) -> str:
    """A job that Hydra's basic launcher cannot start (its directory cannot be created, its log file not opened):
    that job's failure, reported in one line, instead of the end of the sweep. The directories are checked before
    the first job (`plan_jobs`), but one can go away meanwhile."""
    out = config.hydra.runtime.get("output_dir") or config.hydra.sweep.dir
    while error.__cause__ is not None:  # logging's "Unable to configure handler" wraps the OSError that says why
        error = error.__cause__
    print(f"esmeta: error: job {config.hydra.job.num} cannot start in {out} ({first_line(error)}); "
          "free that path and rerun the same command", file=sys.stderr)
    return JOB_NOT_STARTED


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
    from its estimator's defaults; with `estimate`, each job's expected time on this machine and the total (esmeta.cost).
    Everything is checked as before a real launch; nothing is trained and nothing is written."""

    plan = plan_jobs(overrides, multirun)
    costs = _estimates(plan) if estimate else None
    default = plan_jobs([]).jobs[0].config
    references: dict[tuple[str, str], dict[str, Any]] = {}  # (estimator, learner) -> what they compose alone

    def differences(config: Config) -> str:
        """The job's settings that differ from its estimator's and learner's defaults (each named where not the
        default)."""
        key = config.estimator.name, config.learner.name
        if key not in references:
            references[key] = _flat(plan_jobs([f"estimator={key[0]}", f"learner={key[1]}"]).jobs[0].config.to_dict())
        chosen = [f"{section}.name={name}" for section, name, default_name in (
            ("estimator", key[0], default.estimator.name), ("learner", key[1], default.learner.name))
            if name != default_name]
        return " ".join(chosen + [f"{k}={v}" for k, v in _flat(config.to_dict()).items()
                                  if k not in ("estimator.name", "learner.name") and references[key].get(k) != v])

    what = "job" if plan.total == 1 else "jobs"
    lines = [f"dry run: {plan.total} {what} -> {plan.out} (nothing runs, nothing is written)"]
    if plan.search:
        lines.append(f"  an Optuna search: its {plan.total} trials are sampled as it runs; each searched range was "
                     "checked at its bounds (shown)")
    elif not plan.complete:
        lines.append(f"  more than {sweep_expansion.PRODUCT_LIMIT} jobs: each value of each swept key is shown (and was checked) once")
    for job in plan.jobs:
        differ = differences(job.config)
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
                after_flag = a in hydra_internals.HYDRA_VALUE_FLAGS
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
    hydra_internals.guard_basic_launcher(_cannot_start)
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


def _preflight(overrides: Sequence[str], multirun: bool) -> tuple[Any, Path, bool]:
    """Check the command before Hydra writes anything; return the lock it holds on the run or sweep directory,
    that directory (its `${now:...}` resolved) and whether the command is a multirun (a stored sweep is one).

    A single run is checked whole (hardware, data, what its directory holds); a multirun's sweep directory is
    locked for the whole sweep, and each job is checked when it starts (a failure is that job's alone).
    """
    from esmeta.run_dir import DirLock
    from esmeta.train import preflight

    configs, out, multirun = plan_command(overrides, multirun)
    if multirun:
        return DirLock(out, "hydra.sweep.dir").acquire(), out, multirun
    return preflight(configs[0], out), out, multirun


if __name__ == "__main__":
    main()
