"""Command-line entry point: `python -m esmeta.run [overrides]` (add `-m` for a Hydra multirun).

Before Hydra starts, the overrides are composed and validated (each value of a sweep too), so bad
input costs one line and exit status 2 instead of a traceback or a half-launched sweep.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from esmeta.config import Config, from_mapping
from esmeta.errors import ConfigError, EsmetaError, NeedsAcceleratorError

CONFIG_MODULE = "esmeta.conf"
CONFIG_NAME = "config"
USAGE_HINT = "see `python -m esmeta.run --help`"
log = logging.getLogger("esmeta.run")  # by name: run as `python -m esmeta.run`, __name__ is "__main__"


def fail(message: str) -> None:
    """The one way bad input ends a command: one line on stderr, exit status 2."""
    print(f"esmeta: error: {message}", file=sys.stderr)
    sys.exit(2)


def config_from_omegaconf(cfg: DictConfig) -> Config:
    """Resolve interpolations and validate into a typed `Config`."""
    try:
        raw = OmegaConf.to_container(cfg, resolve=True)
    except Exception as e:  # an unresolvable interpolation, e.g. a typo in ${...}
        raise ConfigError(f"cannot resolve the configuration: {_first_line(e)}") from None
    raw.pop("hydra", None)
    return from_mapping(raw)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _hydra_error_message(e: Exception) -> str:
    """Condense Hydra's multi-line composition errors into one actionable line."""
    from hydra.errors import MissingConfigException

    text = " ".join(str(e).split())
    if isinstance(e, MissingConfigException) and e.options is not None and e.missing_cfg_file:
        group, _, name = e.missing_cfg_file.rpartition("/")
        return f"{group}={name} is not an option; choose one of: {', '.join(sorted(e.options))}"
    if "Could not override" in text or "not in struct" in text:
        key = text.split("'")[1] if "'" in text else "?"
        return f"unknown setting {key}; {USAGE_HINT} for the settings there are (or prefix + to add a new key)"
    return f"{text}; {USAGE_HINT}"


def _sweep_values(override, group_options) -> list[str]:
    """`key=value` for every value of one parsed override (a glob over a config group expands to its options)."""
    from hydra.core.override_parser.types import Glob

    key = override.get_key_element()
    if not override.is_sweep_override():
        return [override.input_line]
    if isinstance(override.value(), Glob):
        return [f"{key}={v}" for v in override.value().filter(group_options(override.key_or_group))]
    return [f"{key}={v}" for v in override.sweep_string_iterator()]


def _override_variants(overrides: Sequence[str], group_options=lambda group: []) -> list[list[str]]:
    """Override lists that cover every value of every sweep: the first values, then one change at a time."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(list(overrides))
    options = [_sweep_values(o, group_options) for o in parsed]
    for o, values in zip(parsed, options):
        if not values:
            raise ConfigError(f"{o.input_line} matches no option of {o.key_or_group}; {USAGE_HINT}")
    firsts = [values[0] for values in options]
    variants = [firsts]
    for i, values in enumerate(options):
        for v in values[1:]:
            variants.append(firsts[:i] + [v] + firsts[i + 1 :])
    return variants


def _stored_sweep(cfg: DictConfig, overrides: Sequence[str]) -> list[str]:
    """A stored sweep's grid (hydra.sweeper.params) as overrides, less the keys the command line sets itself."""
    params = cfg.hydra.get("sweeper", {}).get("params") or {}
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [f"{k}={v}" for k, v in params.items() if k not in given]


def _output_dir(hydra_cfg: Any, multirun: bool) -> Path:
    return Path(str(hydra_cfg.sweep.dir if multirun else hydra_cfg.run.dir))


def check_overrides(overrides: Sequence[str], multirun: bool = False) -> list[Config]:
    """Compose and validate every configuration the overrides describe, a stored sweep's grid included;
    raise ConfigError on the first bad one."""
    return plan_command(overrides, multirun)[0]


def plan_command(overrides: Sequence[str], multirun: bool = False) -> tuple[list[Config], Path, bool]:
    """(every configuration, the run or sweep directory, multirun?) of a command, all checked, nothing written."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import OverrideParseException

    from esmeta.results import ensure_writable_dir

    def compose_one(variant: list[str]) -> DictConfig:
        try:
            return compose(CONFIG_NAME, overrides=variant, return_hydra_config=True)
        except Exception as e:  # Hydra composition errors and OmegaConf errors (bad keys, types)
            raise ConfigError(_hydra_error_message(e)) from None

    configs = []
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        group_options = lambda group: sorted(loader.get_group_options(group))  # noqa: E731
        try:
            variants = _override_variants(overrides, group_options)
            base = compose_one(variants[0])
            stored = _stored_sweep(base, overrides)
            if stored:  # sweep=NAME: its grid's values are checked like the command line's
                variants = _override_variants([*overrides, *stored], group_options)
        except OverrideParseException as e:
            raise ConfigError(f"cannot parse the overrides: {_first_line(e)}") from None
        for variant in variants:
            cfg = compose_one(variant)
            multirun = multirun or str(cfg.hydra.get("mode")).endswith("MULTIRUN")  # a stored sweep sets it
            out = _output_dir(cfg.hydra, multirun)
            job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
            configs.append(config_from_omegaconf(job))
    ensure_writable_dir(out, "hydra.sweep.dir" if multirun else "hydra.run.dir", create=False)
    return configs, out, multirun


JOB_FAILED = "failed"  # what a multirun job returns when it failed (recorded in its summary, counted at the end)


class FailedJobs(Callback):
    """Counts a multirun's failed jobs; at its end, one line with the count and a non-zero exit status."""

    def __init__(self) -> None:
        self.jobs = 0
        self.failed: list[str] = []

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs += 1
        if job_return.status == JobStatus.FAILED or job_return._return_value == JOB_FAILED:
            self.failed.append(str(config.hydra.runtime.output_dir))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.failed:
            print(
                f"esmeta: error: {len(self.failed)} of {self.jobs} jobs failed (each says why in its summary.json, "
                f"first: {self.failed[0]}); rerun the same command to redo only those",
                file=sys.stderr,
            )
            sys.exit(1)


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name=CONFIG_NAME)
def _job(cfg: DictConfig) -> float | str | None:
    """One Hydra job: validate, train, report. Returns the test accuracy (for sweepers), or JOB_FAILED."""
    from hydra.types import RunMode

    from esmeta.train import JobInfo, train

    logging.getLogger("jax").setLevel(logging.WARNING)  # Hydra logs INFO; JAX's backend probing is noise
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
    return summary["test_accuracy"]


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


def _split_argv(argv: Sequence[str]) -> tuple[list[str], bool, bool]:
    """(overrides, multirun?, other flags?) from the command line.

    Any flag other than -m/--multirun (--help, --cfg job, --info, ...) goes to Hydra unchecked.
    """
    multirun = any(a in ("-m", "--multirun") for a in argv)
    flags = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
    overrides = [a for a in argv if not a.startswith("-")]
    return overrides, multirun, bool(flags)


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides, multirun, passthrough = _split_argv(argv)
    lock = None
    if not passthrough:
        try:
            lock = _preflight(overrides, multirun)
        except EsmetaError as e:
            fail(str(e))
    sys.argv = [sys.argv[0], *argv]
    try:
        _job()
    finally:
        if lock is not None:
            lock.release()


def _preflight(overrides: Sequence[str], multirun: bool) -> Any:
    """Check the command before Hydra writes anything; return the lock it holds on the run or sweep directory.

    A single run is checked whole (hardware, data, what its directory holds); a multirun's sweep directory is
    locked for the whole sweep, and each job is checked when it starts (a failure is that job's alone).
    """
    from esmeta.results import DirLock
    from esmeta.train import preflight

    configs, out, multirun = plan_command(overrides, multirun)
    if multirun:
        return DirLock(out, "hydra.sweep.dir").acquire()
    return preflight(configs[0], out)


if __name__ == "__main__":
    main()
