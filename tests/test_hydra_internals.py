"""The Hydra and Optuna-sweeper internals esmeta relies on (esmeta.hydra_internals) are still there and behave as
relied on: a failure here names the internal that changed, to be adapted in that one module."""

from __future__ import annotations

import inspect

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from esmeta import hydra_internals


def internal(module: str, name: str):
    """`module.name` (a dotted name), or a failure naming it."""
    import importlib

    try:
        obj = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        pytest.fail(f"Hydra internal {module}.{name} is gone ({e}); adapt esmeta/hydra_internals.py")
    return obj


def assert_parameters(obj, name: str, expected: list[str]) -> None:
    got = list(inspect.signature(obj).parameters)
    assert got[: len(expected)] == expected, f"{name} now takes {got}, esmeta calls it with {expected}"


def parsed(*overrides: str):
    return OverridesParser.create().parse_overrides(list(overrides))


def test_get_overrides_dirname_names_a_job_directory_as_esmeta_expects():
    f = internal("hydra._internal.config_loader_impl", "get_overrides_dirname")
    assert_parameters(f, "get_overrides_dirname", ["overrides", "exclude_keys", "item_sep", "kv_sep"])
    name = hydra_internals.override_dirname(parsed("seed=3", "alpha=0.5", "logger=none"), ["logger"], ",", "=")
    assert name == "alpha=0.5,seed=3", "get_overrides_dirname: sorted, excluded keys left out"


def test_basic_sweeper_splits_arguments_into_the_jobs_in_launch_order():
    f = internal("hydra._internal.core_plugins.basic_sweeper", "BasicSweeper.split_arguments")
    assert_parameters(f, "BasicSweeper.split_arguments", ["overrides", "max_batch_size"])
    jobs = hydra_internals.basic_sweeper_jobs(parsed("a=1,2", "b=x"))
    assert jobs == [["a=1", "b=x"], ["a=2", "b=x"]], f"BasicSweeper.split_arguments now gives {jobs}"
    assert hydra_internals.basic_sweeper_jobs(parsed("a=1,2", "b=x,y"))[:2] == [["a=1", "b=x"], ["a=1", "b=y"]], \
        "BasicSweeper.split_arguments: the last key no longer varies fastest"


def test_the_basic_launcher_calls_its_module_level_run_job_by_keyword():
    """guard_basic_launcher replaces `basic_launcher.run_job`: the launcher must look it up there at each job."""
    run_job = internal("hydra._internal.core_plugins.basic_launcher", "run_job")
    launch = internal("hydra._internal.core_plugins.basic_launcher", "BasicLauncher.launch")
    assert {"config", "hydra_context"} <= set(inspect.signature(run_job).parameters), "basic_launcher.run_job"
    source = inspect.getsource(launch)
    assert "run_job(" in source and "config=" in source and "hydra_context=" in source, \
        "BasicLauncher.launch no longer calls run_job(config=..., hydra_context=...)"
    assert launch.__globals__ is inspect.getmodule(launch).__dict__ and "run_job" in launch.__globals__, \
        "BasicLauncher.launch no longer finds run_job in its module"
    on_job_end = internal("hydra._internal.callbacks", "Callbacks.on_job_end")
    assert {"config", "job_return"} <= set(inspect.signature(on_job_end).parameters), "Callbacks.on_job_end"


def test_a_job_the_guarded_launcher_cannot_start_ends_alone_with_the_given_value(monkeypatch):
    from hydra._internal.core_plugins import basic_launcher

    def refuse(**kwargs):
        raise OSError("no room")

    ended = []

    class Callbacks:
        def on_job_end(self, config, job_return):
            ended.append(job_return)

    class Context:
        callbacks = Callbacks()

    monkeypatch.setattr(basic_launcher, "run_job", refuse)
    hydra_internals.guard_basic_launcher(lambda config, error: f"not started: {error}")
    config = OmegaConf.create({"hydra": {"overrides": {"task": ["a=1"]}}})
    ret = basic_launcher.run_job(config=config, hydra_context=Context(), task_function=None, job_dir_key="k",
                                 job_subdir_key=None)
    assert ret.status == JobStatus.COMPLETED and hydra_internals.job_return_value(ret) == "not started: no room"
    assert ended == [ret] and ret.overrides == ["a=1"]


def test_a_failed_jobs_return_value_is_read_without_raising():
    error = ValueError("boom")
    assert "_return_value" in inspect.signature(JobReturn).parameters, "JobReturn._return_value"
    assert hydra_internals.job_return_value(JobReturn(status=JobStatus.FAILED, _return_value=error)) is error


def test_hydra_config_is_set_for_the_block_and_restored_after():
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig

    assert "cfg" in vars(HydraConfig.instance()), "HydraConfig.instance().cfg"
    before = HydraConfig.instance().cfg
    with initialize_config_module(config_module="esmeta.conf", version_base="1.3"):
        cfg = compose("config", overrides=["hydra.job.name=probe"], return_hydra_config=True)
    with hydra_internals.hydra_config_as(cfg):
        assert OmegaConf.create({"x": "${hydra:job.name}"}).x == "probe"
    assert HydraConfig.instance().cfg is before


def test_hydra_value_flags_are_the_flags_hydras_parser_reads_a_value_for():
    parser = internal("hydra._internal.utils", "get_args_parser")()
    takes_a_word = {flag for a in parser._actions if a.option_strings and a.nargs is None for flag in a.option_strings}
    assert set(hydra_internals.HYDRA_VALUE_FLAGS) == takes_a_word, "hydra._internal.utils.get_args_parser's flags"


def test_the_optuna_sweeper_raises_no_trials_completed_when_every_trial_failed():
    sweep = internal("hydra_plugins.hydra_optuna_sweeper._impl", "OptunaSweeperImpl.sweep")
    assert_parameters(sweep, "OptunaSweeperImpl.sweep", ["self", "arguments"])
    assert "best_trial" in inspect.getsource(sweep), "OptunaSweeperImpl.sweep no longer asks for study.best_trial"
    import optuna

    with pytest.raises(ValueError, match="No trials are completed"):
        optuna.create_study().best_trial  # noqa: B018 (the property raises)
