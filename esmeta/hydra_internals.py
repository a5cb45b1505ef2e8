"""Every use of Hydra's and its Optuna sweeper's internals, in one room: what esmeta relies on beyond their public API.

Checked against hydra-core 1.3.8 and hydra-optuna-sweeper 1.3.0 (pyproject.toml allows hydra-core 1.3.x and
hydra-optuna-sweeper 1.2-1.3); tests/test_hydra_internals.py fails, naming the internal, when one changes.

- `hydra._internal.config_loader_impl.get_overrides_dirname(overrides, exclude_keys, item_sep, kv_sep)`: a job's
  `${hydra.job.override_dirname}`, computed as Hydra does, so that the pre-launch check knows each job's directory.
- `hydra._internal.core_plugins.basic_sweeper.BasicSweeper.split_arguments(overrides, max_batch_size)`: the basic
  sweeper's jobs in launch order (job numbers name the job directories), for the pre-launch check and the dry run.
- `hydra._internal.core_plugins.basic_launcher.run_job`, replaced: the module-level name `BasicLauncher.launch` calls
  (by keyword: config=, hydra_context=); a job it cannot start (no directory, no log file) fails alone.
- `HydraContext.callbacks.on_job_end(config=, job_return=)` (`hydra._internal.callbacks.Callbacks`): that job's end,
  reported as Hydra's `run_job` would have.
- `JobReturn._return_value`: a job's returned value, read without `return_value`'s raise for a failed job.
- `HydraConfig.instance().cfg`: the singleton behind `${hydra:...}`, set and restored around resolving a job's
  `hydra.sweep.subdir` (HydraConfig has no way to unset it).
- `hydra._internal.utils.get_args_parser()`: which of Hydra's flags take the next word (`HYDRA_VALUE_FLAGS`).
- `hydra_plugins.hydra_optuna_sweeper._impl.OptunaSweeperImpl.sweep(self, arguments)`, replaced: Optuna's
  `ValueError("No trials are completed yet")` from `study.best_trial` after a search whose every trial failed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import DictConfig

# Hydra's flags that take the next word as their value (hydra._internal.utils.get_args_parser: nargs=None).
HYDRA_VALUE_FLAGS = ("--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
                     "--config-dir", "-cd", "--experimental-rerun")


def override_dirname(overrides: Sequence[Any], exclude_keys: Sequence[str], item_sep: str, kv_sep: str) -> str:
    """A job's `${hydra.job.override_dirname}` from its parsed task overrides, as Hydra names it."""
    from hydra._internal.config_loader_impl import get_overrides_dirname

    return get_overrides_dirname(list(overrides), list(exclude_keys), item_sep, kv_sep)


def basic_sweeper_jobs(overrides: Sequence[Any]) -> list[list[str]]:
    """Each job's overrides from parsed (sweep) overrides, in the order Hydra's basic sweeper launches them."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    return BasicSweeper.split_arguments(list(overrides), None)[0]


def job_return_value(job_return: JobReturn) -> Any:
    """What a job returned (for a failed job, its exception), without `JobReturn.return_value`'s raise."""
    return job_return._return_value


@contextmanager
def hydra_config_as(cfg: DictConfig) -> Iterator[None]:
    """`${hydra:...}` resolves against `cfg` inside the block (as in Hydra's `run_job`); the previous one after."""
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(cfg)
    try:
        yield
    finally:
        HydraConfig.instance().cfg = saved


def guard_basic_launcher(cannot_start: Callable[[DictConfig, BaseException], Any]) -> None:
    """Where Hydra's basic launcher cannot start a job (run_job raised before the task ran: it catches the task's
    own errors), end that job with `cannot_start(config, error)` as its return value instead of ending the sweep.
    Hydra takes launchers only from its plugin package, hence the replaced `run_job`; installed once per process."""
    from hydra._internal.core_plugins import basic_launcher

    run_job = basic_launcher.run_job
    if getattr(run_job, "esmeta", False):
        return

    def run_job_or_fail(*, config: DictConfig, hydra_context: Any, **kwargs: Any) -> JobReturn:
        try:
            return run_job(config=config, hydra_context=hydra_context, **kwargs)
        except Exception as e:
            ret = JobReturn(overrides=list(config.hydra.overrides.task), status=JobStatus.COMPLETED,
                            _return_value=cannot_start(config, e))
            hydra_context.callbacks.on_job_end(config=config, job_return=ret)
            return ret

    run_job_or_fail.esmeta = True  # type: ignore[attr-defined]
    basic_launcher.run_job = run_job_or_fail


def guard_optuna_search(no_trial_completed: Callable[[], None]) -> None:
    """Where every trial of an Optuna search failed, call `no_trial_completed` instead of raising Optuna's
    "No trials are completed yet" (the sweeper asks for the best trial after the last one). Installed once per
    process."""
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    sweep = OptunaSweeperImpl.sweep
    if getattr(sweep, "esmeta", False):
        return

    def guarded(self: Any, arguments: Any) -> None:
        try:
            return sweep(self, arguments)
        except ValueError as e:
            if "No trials are completed" not in str(e):
                raise
            no_trial_completed()

    guarded.esmeta = True  # type: ignore[attr-defined]
    OptunaSweeperImpl.sweep = guarded
