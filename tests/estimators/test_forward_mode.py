"""Forward-mode differentiation: the same exact gradient as backprop, whatever the tangent chunking."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from esmeta.estimators import BackpropConfig, ForwardModeConfig, make_estimator
from esmeta.run_dir import read_metrics, read_summary
from esmeta.streaming import episode_images_at, streamed_loss_and_accuracy


def make_streamed_loss_fn(*, way: int, chunk: int, distance: str, scale: float, norm_stats: str):
    """`loss(params, episode) -> scalar` as `protonet.make_loss_fn`, streaming the episode `chunk` rows at a time."""

    def loss(params: Any, episode: Any) -> jax.Array:
        return streamed_loss_and_accuracy(
            params, episode_images_at(episode), n_support=episode.support.shape[0], n_query=episode.query.shape[0],
            way=way, chunk=chunk, distance=distance, scale=scale, norm_stats=norm_stats,
        )[0]

    return loss


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0], np.float64)


@pytest.mark.parametrize("chunk_size", [0, 1, 7, 150])  # 0: the default 32 (150 = 4 x 32 + 22); 7 leaves a remainder
def test_forward_mode_equals_backprop_on_the_tiny_protonet(tiny_protonet, chunk_size):
    loss, params, episode = tiny_protonet
    forward = make_estimator(ForwardModeConfig(chunk_size=chunk_size), 0.01, loss, None, 1)
    backward = make_estimator(BackpropConfig(), 0.01, loss, None, 1)
    g, metrics = jax.jit(forward)(jax.random.key(0), params, episode)
    g_ref, metrics_ref = jax.jit(backward)(jax.random.key(0), params, episode)
    assert jax.tree.structure(g) == jax.tree.structure(params)
    # Two float32 programs summing each conv-weight gradient over the episode's n = 12 x 16 x 16 pixels in different
    # orders: each is within about sqrt(n) 2^-24 max|g| of the exact sum, so an entry that cancels to ~0 can differ
    # by that much (4e-7 on AMD EPYC, against 1e-6 max|g| = 2.8e-7 before), times 10 for the constants of the bound.
    atol = 10 * np.sqrt(12 * 16 * 16) * 2.0**-24 * np.abs(flat(g_ref)).max()
    np.testing.assert_allclose(flat(g), flat(g_ref), rtol=1e-4, atol=atol)
    assert set(metrics) == set(metrics_ref)
    np.testing.assert_allclose(float(metrics["fitness_mean"]), float(metrics_ref["fitness_mean"]), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(metrics_ref["grad_norm"]), rtol=1e-5)
    assert float(metrics["zero_update"]) == 0.0 and int(metrics["candidates"]) == 1


def test_forward_mode_through_the_streamed_loss_equals_backprop_of_the_plain_loss(tiny_protonet):
    """The memory benchmark's pairing: forward mode on the chunked loss, jax.grad on the one-batch loss."""
    loss, params, episode = tiny_protonet
    streamed = make_streamed_loss_fn(way=3, chunk=4, distance="euclidean", scale=1.0, norm_stats="episode")
    g = jax.jit(make_estimator(ForwardModeConfig(chunk_size=16), 0.0, streamed, None, 1))(
        jax.random.key(0), params, episode)[0]
    g_ref = jax.jit(make_estimator(BackpropConfig(), 0.0, loss, None, 1))(
        jax.random.key(0), params, episode)[0]
    np.testing.assert_allclose(flat(g), flat(g_ref), rtol=1e-3, atol=1e-5 * np.abs(flat(g_ref)).max())


def test_nonfinite_loss_gives_zero_update_counted():
    params = {"w": jnp.ones(3)}
    loss = lambda p, b: jnp.log(jnp.sum(p["w"]) - b)  # noqa: E731  NaN for b > 3
    estimate = jax.jit(make_estimator(ForwardModeConfig(chunk_size=2), 0.0, loss, None, 1))
    g, metrics = estimate(jax.random.key(0), params, 4.0)
    assert np.all(np.asarray(g["w"]) == 0.0)
    assert float(metrics["nonfinite"]) == 1.0 and float(metrics["zero_update"]) == 1.0
    g, _ = estimate(jax.random.key(0), params, 2.0)
    np.testing.assert_allclose(g["w"], -np.ones(3), rtol=1e-6)  # d/dw -log(sum w - 2) = -1


TINY_RUN = [
    "model.channels=4", "task.train_way=5", "task.shot=1", "task.query=2", "task.test_query=5", "train.epochs=2",
    "train.episodes_per_epoch=3", "eval.val_episodes=1", "eval.test_episodes=5", "logger=none",
]


def test_cli_trains_with_forward_mode_as_backprop_does(tmp_path, omniglot_root, omniglot32):
    """`python -m esmeta.run estimator=forward_mode` runs end to end, and since it computes the same gradient with
    the same Adam as backprop, its training losses are backprop's (same seed, so the same episodes)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    losses = {}
    for name in ("forward_mode", "backprop"):
        out = tmp_path / name
        proc = subprocess.run(
            [sys.executable, "-m", "esmeta.run", f"estimator={name}", *TINY_RUN, f"hydra.run.dir={out}"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        summary = read_summary(out)
        assert summary["status"] == "completed" and summary["estimator"] == name
        assert summary["population"] is None and summary["episodes"] == 6
        losses[name] = [row["train/loss"] for row in read_metrics(out)]
    assert len(losses["forward_mode"]) == 2
    np.testing.assert_allclose(losses["forward_mode"], losses["backprop"], rtol=1e-4)
