"""Backend set-up and the shard mesh: device counts, shard layout, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import jax
import pytest

from esmeta.config import HardwareConfig
from esmeta.errors import ConfigError
from esmeta.hardware import configure_backend, make_mesh


def test_mesh_over_all_devices_with_one_shard_per_device_by_default():
    mesh, shards = make_mesh(HardwareConfig(shards=0))
    assert mesh.axis_names == ("shards",)
    assert mesh.size == len(jax.devices()) == shards


def test_more_shards_than_devices_run_several_per_device():
    mesh, shards = make_mesh(HardwareConfig(shards=3 * len(jax.devices())))
    assert mesh.size == len(jax.devices()) and shards == 3 * len(jax.devices())


def test_more_devices_than_available_is_a_one_line_error():
    with pytest.raises(ConfigError, match=r"hardware.devices=\d+ exceeds") as err:
        make_mesh(HardwareConfig(devices=len(jax.devices()) + 1))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
def test_platform_without_devices_is_a_one_line_error(platform):
    if jax.default_backend() == platform:
        pytest.skip(f"this machine has {platform} devices")
    with pytest.raises(ConfigError, match=f"hardware.platform={platform} but JAX sees no {platform} devices"):
        make_mesh(HardwareConfig(platform=platform))


def test_no_simulated_devices_requested_leaves_the_backend_alone():
    before = len(jax.devices())
    configure_backend(HardwareConfig(cpu_devices=0))
    assert len(jax.devices()) == before


FRESH_PROCESS = textwrap.dedent(
    """
    import jax
    from esmeta.config import HardwareConfig
    from esmeta.errors import ConfigError
    from esmeta.hardware import configure_backend, make_mesh

    def error(fn, hw):
        try:
            fn(hw)
        except ConfigError as err:
            return str(err)
        raise SystemExit(f"no ConfigError for {hw}")

    configure_backend(HardwareConfig(cpu_devices=4))  # before the first JAX operation
    mesh, shards = make_mesh(HardwareConfig(shards=0, platform="cpu"))
    print("devices", len(jax.devices("cpu")), "mesh", mesh.size, "shards", shards)
    mesh, shards = make_mesh(HardwareConfig(shards=8, devices=2, platform="cpu"))
    print("subset mesh", mesh.size, "shards", shards)
    print("uneven:", error(make_mesh, HardwareConfig(shards=6, platform="cpu")))
    print("too many:", error(make_mesh, HardwareConfig(devices=5, platform="cpu")))
    configure_backend(HardwareConfig(cpu_devices=4))  # same count again: fine (a later multirun job)
    print("restart:", error(configure_backend, HardwareConfig(cpu_devices=8)))
    """
)


def test_backend_set_up_in_a_fresh_process():
    env = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    env["JAX_PLATFORMS"] = "cpu"
    out = subprocess.run([sys.executable, "-c", FRESH_PROCESS], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "devices 4 mesh 4 shards 4"
    assert lines[1] == "subset mesh 2 shards 8"
    assert lines[2].startswith("uneven: hardware.shards=6 does not divide evenly over 4 devices")
    assert lines[3].startswith("too many: hardware.devices=5 exceeds the 4 cpu devices")
    assert lines[4].startswith("restart: hardware.cpu_devices=8 but JAX already started with 4 CPU devices")
    assert "one process per job (hydra/launcher=submitit_local)" in lines[4]
    assert len(lines) == 5  # every message is one line
