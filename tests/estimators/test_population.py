"""Shared population machinery: registry conformance, eval modes, chunking, and device-count invariance."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from esmeta.estimators import ESTIMATORS, EstimatorConfig, FiniteDiffConfig, WsrConfig, make_estimator, population
from esmeta.estimators.wsr import candidate_noise

MU = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.5, -0.25, 2.0, 0.0, 1.0])}
REQUIRED_METRICS = {"fitness_mean", "fitness_std", "fitness_max", "grad_norm", "nonfinite", "zero_update", "candidates"}
SETTINGS = {  # small settings per estimator, for the conformance tests
    "backprop": {},
    "wsr": {"pop_per_shard": 4, "antithetic": True},
    "finite_diff": {"pop_per_shard": 4},
    "forward_mode": {"chunk_size": 5},  # 17 parameters: three blocks of 5 tangents and a remainder of 2
    "first_order": {},  # backprop's estimate (the learner stops the inner gradients in the loss it hands over)
}
# The tiny_protonet fixture's network (tests/estimators/conftest.py); the 8-device subprocess rebuilds its loss from this.
NET = {"way": 3, "distance": "euclidean", "scale": 1.0, "norm_stats": "episode"}
DEVICE_CASES = {  # eval_mode "map", as "auto" gives on CPU, so that the one-device map/vmap test shares a case
    "wsr_per_shard": {"name": "wsr", "pop_per_shard": 4, "eval_mode": "map"},
    "wsr_global_rank": {"name": "wsr", "pop_per_shard": 4, "antithetic": True, "normalize": "global",
                        "fitness_shaping": "centered_rank"},
    "finite_diff_subset": {"name": "finite_diff", "pop_per_shard": 8, "central": True},  # 64 of 150 coordinates
}


def quadratic_loss(params, batch):
    return sum(jnp.sum((p - batch) ** 2) for p in jax.tree.leaves(params))


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], np.float64)


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, msg: str = "") -> None:
    """||actual - expected|| <= rtol ||expected||.

    Another program (conv batching, chunking, device count) changes fitnesses by float32 rounding
    (~1e-7 F), which z-scoring divides by std F (~1e-2 F here): 1e-5, and 1e-4 leaves a factor of 10 for
    the summation order of any CPU. A wrong shard, key or normalization moves the estimate by O(1).
    """
    error = np.linalg.norm(actual - expected) / np.linalg.norm(expected)
    assert np.linalg.norm(expected) > 0 and error <= rtol, f"{msg} relative error {error:.2e} > {rtol:.0e}"


def one_device_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()[:1]), ("shards",))


def config_of(settings: dict) -> EstimatorConfig:
    """The config of the estimator `settings["name"]` names, with those settings."""
    return ESTIMATORS[settings["name"]][0](**settings)


def test_each_registered_name_is_its_configs_name():
    for name, (config, _) in ESTIMATORS.items():
        assert config().name == config.NAME == name


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimator_contract(name):
    """Jittable on a mesh, params-shaped output, float32 scalar metrics, deterministic in the key."""
    config = ESTIMATORS[name][0](**SETTINGS[name])
    estimate = jax.jit(make_estimator(config, 0.1, quadratic_loss, one_device_mesh(), 2))
    g, metrics = estimate(jax.random.key(0), MU, 0.3)
    again, _ = estimate(jax.random.key(0), MU, 0.3)
    assert jax.tree.structure(g) == jax.tree.structure(MU)
    assert all(a.shape == b.shape and a.dtype == b.dtype for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(MU)))
    np.testing.assert_array_equal(flat(g), flat(again))  # exact by construction: one compiled program, one key
    assert REQUIRED_METRICS <= set(metrics)
    for key, value in metrics.items():
        assert value.shape == (), key
        assert value.dtype == (jnp.int32 if key == "candidates" else jnp.float32), key
    # ascent: a small step along g raises the fitness -loss
    step = jax.tree.map(lambda m, d: m + 1e-2 * d / float(metrics["grad_norm"]), MU, g)
    assert quadratic_loss(step, 0.3) < quadratic_loss(MU, 0.3)


def test_no_mesh_equals_one_device_mesh():
    config = WsrConfig(pop_per_shard=4)
    plain, metrics = jax.jit(make_estimator(config, 0.1, quadratic_loss, None, 3))(jax.random.key(4), MU, 0.3)
    meshed = jax.jit(make_estimator(config, 0.1, quadratic_loss, one_device_mesh(), 3))(jax.random.key(4), MU, 0.3)[0]
    # another program rounds each fitness F by ~2^-24 |F|, which z-scoring divides by std F (x10 for any CPU)
    rtol = 10 * 2.0**-24 * (abs(float(metrics["fitness_mean"])) + 3 * float(metrics["fitness_std"])) / float(
        metrics["fitness_std"])
    assert_close(flat(meshed), flat(plain), rtol=rtol)


def test_auto_eval_mode_is_map_on_cpu_and_vmap_on_accelerators():
    assert population.resolve_eval_mode("auto", "cpu") == "map"
    assert population.resolve_eval_mode("auto", "gpu") == "vmap"
    assert population.resolve_eval_mode("auto", "tpu") == "vmap"
    assert population.resolve_eval_mode("vmap", "cpu") == "vmap"


def test_weighted_sum_chunks_equal_the_dense_sum():
    noise = lambda i: candidate_noise(jax.random.key(9), MU, i, 0.1, False)  # noqa: E731
    weight_n, index_n = jnp.linspace(-1.0, 1.0, 7), jnp.arange(7)
    dense = np.einsum("n,nd->d", np.asarray(weight_n), np.stack([flat(noise(i)) for i in range(7)]))
    for chunk in (1, 3, 7):  # 3 leaves a remainder of 1
        summed = jax.jit(lambda w, i, c=chunk: population.weighted_sum(w, i, noise, c))(weight_n, index_n)
        np.testing.assert_allclose(flat(summed), dense, rtol=1e-5, atol=1e-7)


def one_device(problem, config: EstimatorConfig) -> np.ndarray:
    """8 shards on this process's one device (no mesh): the fixed ProtoNet problem at key 11."""
    loss, params, episode = problem
    return flat(jax.jit(make_estimator(config, 0.05, loss, None, 8))(jax.random.key(11), params, episode)[0])


def test_map_and_vmap_give_the_same_estimate(tiny_protonet):
    vmapped = one_device(tiny_protonet, WsrConfig(pop_per_shard=4, eval_mode="vmap"))
    mapped = one_device(tiny_protonet, WsrConfig(pop_per_shard=4, eval_mode="map"))
    assert_close(vmapped, mapped, rtol=1e-4)


def test_chunked_equals_unchunked(tiny_protonet):
    chunked = one_device(tiny_protonet, WsrConfig(pop_per_shard=4, eval_mode="vmap", chunk_size=3))
    whole = one_device(tiny_protonet, WsrConfig(pop_per_shard=4, eval_mode="vmap"))
    assert_close(chunked, whole, rtol=1e-4)  # chunks of 3 + 1


def test_automatic_noise_chunks_give_the_dense_population_estimate(monkeypatch, tiny_protonet):
    """The regenerated-noise fast path (what keeps population 16384 at 64 channels under 1 GB) against the
    straightforward one: the whole (population x params) matrix, every candidate's loss, eq. 9 per shard."""
    loss, params, episode = tiny_protonet
    flat_mu, unravel = ravel_pytree(params)
    monkeypatch.setattr(population, "NOISE_BUDGET", 3 * flat_mu.size + 7)  # automatic chunks of 3: 3 + 3 + 3 + 1
    assert population.noise_chunk(0, 10, flat_mu.size) == 3
    key, pps, shards, sigma = jax.random.key(5), 10, 2, 0.05
    g = jax.jit(make_estimator(WsrConfig(pop_per_shard=pps), sigma, loss, None, shards))(
        key, params, episode)[0]
    eps_nd = np.stack([flat(candidate_noise(key, params, jnp.int32(i), sigma, False)) for i in range(pps * shards)])
    fitness_n = np.array([-float(loss(unravel(flat_mu + e), episode)) for e in eps_nd])
    dense = []
    for f, e in zip(np.split(fitness_n, shards), np.split(eps_nd, shards)):
        z = (f - f.mean()) / (f.std() + 1e-8)
        dense.append(z @ e / pps)
    assert_close(flat(g), np.mean(dense, axis=0), rtol=1e-4)


def test_map_and_vmap_agree_for_finite_differences():
    estimates = [
        jax.jit(make_estimator(FiniteDiffConfig(pop_per_shard=6, eval_mode=mode, chunk_size=4), 0.0,
                               quadratic_loss, None, 3))(jax.random.key(1), MU, 0.3)[0]
        for mode in ("map", "vmap")
    ]
    # each probe divides a fitness difference by h = fd_sigma: rounding 2^-24 |F| of either program becomes
    # 2^-24 |F| / h per coordinate (x10 for any CPU)
    atol = 10 * 2.0**-24 * float(quadratic_loss(MU, 0.3)) / FiniteDiffConfig().fd_sigma
    np.testing.assert_allclose(flat(estimates[1]), flat(estimates[0]), rtol=0, atol=atol)


EIGHT_DEVICES = textwrap.dedent(
    """
    import pickle, sys
    import jax, numpy as np
    from esmeta.config import HardwareConfig
    from esmeta.data.episodes import Episode
    from esmeta.estimators import ESTIMATORS, make_estimator
    from esmeta.hardware import configure_backend, make_mesh
    from esmeta.protonet import make_loss_fn
    configure_backend(HardwareConfig(cpu_devices=8))
    mesh, shards = make_mesh(HardwareConfig(shards=8, platform="cpu"))
    assert mesh.size == 8 and shards == 8, (mesh, shards)
    with open(sys.argv[1], "rb") as f:
        inputs = pickle.load(f)
    for case, settings in inputs["cases"].items():
        estimate = make_estimator(ESTIMATORS[settings["name"]][0](**settings), 0.05, make_loss_fn(**inputs["net"]), mesh, shards)
        g, _ = jax.jit(estimate)(jax.random.key(11), inputs["params"], Episode(*inputs["episode"]))
        np.save(f"{sys.argv[2]}/{case}.npy", np.concatenate([np.ravel(x) for x in jax.tree.leaves(g)]))
    """
)


def test_eight_shards_on_one_device_equal_eight_devices(tmp_path, tiny_protonet):
    _, params, episode = tiny_protonet
    inputs = {"cases": DEVICE_CASES, "net": NET, "params": jax.tree.map(np.asarray, params),
              "episode": tuple(np.asarray(x) for x in episode)}
    (tmp_path / "inputs.pkl").write_bytes(pickle.dumps(inputs))
    # the child compiles with this process's XLA flags (e.g. CI's AVX2-limited pass), plus the device count
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=8".strip()
    env = os.environ | {"JAX_PLATFORMS": "cpu", "JAX_NUM_CPU_DEVICES": "8", "XLA_FLAGS": flags}
    child = subprocess.Popen(  # runs while this process computes the one-device estimates
        [sys.executable, "-c", EIGHT_DEVICES, str(tmp_path / "inputs.pkl"), str(tmp_path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    local = {case: one_device(tiny_protonet, config_of(settings)) for case, settings in DEVICE_CASES.items()}
    out, _ = child.communicate(timeout=300)
    assert child.returncode == 0, out
    for case, g in local.items():
        assert_close(np.load(tmp_path / f"{case}.npy"), g, rtol=1e-4, msg=case)
