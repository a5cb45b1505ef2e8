"""Launcher presets: the SLURM configs compose into submitit's SLURM launcher with requeue on preemption."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_module

from esmeta.sweep_expansion import CONFIG_MODULE


@pytest.mark.parametrize("preset,nodes,tasks", [("slurm_gpu", 1, 1), ("slurm_multinode", 2, 4)])
def test_slurm_presets_requeue_and_give_one_task_per_gpu(preset, nodes, tasks):
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={preset}"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.max_num_timeout > 0  # a timeout or preemption requeues the job, which then resumes
    assert (launcher.nodes, launcher.tasks_per_node) == (nodes, tasks)
    assert launcher.tasks_per_node == launcher.gpus_per_node  # one JAX process per GPU
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in " ".join(launcher.setup)


def test_submitit_local_is_available_for_single_machine_sweeps():
    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=submitit_local"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("submitit_launcher.LocalLauncher")
