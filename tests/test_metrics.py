"""A meta-batch (task.meta_batch): a step's episodes drawn from the step's key, its loss, accuracy, batch-norm
statistics and gradient their means over the episodes, each computed on its own as the oracle."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta.data import sample_episode
from esmeta.memory import activation_bytes, needs
from esmeta.metrics import meta_batch_metrics, metrics_fn, sample_meta_batch
from esmeta.prelaunch import check_overrides
from esmeta.protonet import init_params

TASKS = 3
IMAGES = jax.random.randint(jax.random.key(0), (12, 20, 28, 28), 0, 256).astype(jnp.uint8)  # 12 classes


def sample(key):
    return sample_episode(key, IMAGES, 5, 1, 2)


def test_one_task_a_step_is_exactly_the_single_episode_path():
    metrics = metrics_fn(check_overrides(["model.channels=4", "data.image_size=28"])[0], 5)
    assert sample_meta_batch(sample, 1) is sample and meta_batch_metrics(metrics, 1) is metrics


def test_task_b_of_a_meta_batch_is_drawn_from_fold_in_of_the_steps_key():
    key = jax.random.key(7)
    batch = jax.jit(sample_meta_batch(sample, TASKS))(key)
    assert batch.support.shape == (TASKS, 5, 28, 28, 1)
    for b in range(TASKS):
        one = jax.jit(sample)(jax.random.fold_in(key, b))
        np.testing.assert_array_equal(batch.support[b], one.support)
        np.testing.assert_array_equal(batch.query[b], one.query)
    assert not np.array_equal(batch.support[0], batch.support[1])  # different tasks


@pytest.mark.parametrize("learner", ["protonet", "maml"])
def test_a_meta_batchs_loss_accuracy_statistics_and_gradient_are_the_means_over_its_episodes(learner):
    overrides = ["model.channels=4", "data.image_size=28", "task.train_way=5"]
    (config,) = check_overrides([*overrides, *(["learner=maml", "learner.inner_steps=2"] if learner == "maml" else [])])
    from esmeta.learners import make_learner

    params = make_learner(config).init_params(jax.random.key(1)) if learner == "maml" else init_params(
        jax.random.key(1), 4, 28)
    metrics = metrics_fn(config, 5)
    batch = sample_meta_batch(sample, TASKS)(jax.random.key(3))
    episodes = [jax.tree.map(lambda x, b=b: x[b], batch) for b in range(TASKS)]
    batched = meta_batch_metrics(metrics, TASKS)
    with jax.default_matmul_precision("highest"):
        loss, accuracy, stats = jax.jit(batched)(params, batch)
        alone = [jax.jit(metrics)(params, episode) for episode in episodes]
        grad = jax.jit(jax.grad(lambda p: batched(p, batch)[0]))(params)
        one_grad = jax.jit(jax.grad(lambda p, e: metrics(p, e)[0]))
        grads = [one_grad(params, e) for e in episodes]
    # float32, vmapped against one at a time: the same arithmetic up to summation order (~1e-7 relative)
    np.testing.assert_allclose(loss, np.mean([a[0] for a in alone]), rtol=1e-5)
    np.testing.assert_allclose(accuracy, np.mean([a[1] for a in alone]), rtol=1e-6)
    for got, *each in zip(jax.tree.leaves(stats), *(jax.tree.leaves(a[2]) for a in alone), strict=True):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=1e-5, atol=1e-7)
    # against the gradient's largest entry (a bias before batch norm has a gradient of rounding noise only)
    scale = max(float(np.max(np.abs(leaf))) for g in grads for leaf in jax.tree.leaves(g))
    for got, *each in zip(jax.tree.leaves(grad), *map(jax.tree.leaves, grads), strict=True):
        np.testing.assert_allclose(got, np.mean(each, axis=0), rtol=0, atol=1e-5 * scale)


def test_the_memory_check_counts_every_episode_of_the_meta_batch():
    one, four = (needs(check_overrides([f"task.meta_batch={n}"])[0], shards=1) for n in (1, 4))
    episode = activation_bytes(20 * (5 + 5), 32, 64)  # the default 20-way 5-shot 5-query episode at 64 channels
    assert four.step - one.step == 3 * episode and four.state == one.state
