"""The learner group: MAML trains and tests under every outer estimator, resumes, loads; the ProtoNet is unchanged."""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
import pytest

from esmeta import maml
from esmeta.learners import make_learner
from esmeta.prelaunch import check_overrides
from esmeta.train import train
from esmeta.trained_run import load_run

MAML_TINY = [
    "learner=maml", "task=5way_1shot", "task.query=2", "task.test_query=3", "model.channels=4", "train.epochs=2",
    "train.episodes_per_epoch=2", "eval.val_episodes=0", "eval.test_episodes=3", "logger=none",
]
POPULATION = {"wsr": ["estimator.pop_per_shard=4"], "finite_diff": ["estimator.pop_per_shard=4"]}


@pytest.mark.parametrize("estimator", ["backprop", "first_order", "wsr", "finite_diff", "forward_mode"])
def test_maml_trains_and_tests_under_every_outer_estimator(estimator, tmp_path, omniglot32):
    (config,) = check_overrides([*MAML_TINY, f"estimator={estimator}", *POPULATION.get(estimator, [])])
    summary = train(config, tmp_path / "run")
    assert summary["status"] == "completed" and summary["episodes"] == 4 and summary["estimator"] == estimator
    assert 0.0 <= summary["test_accuracy"] <= 1.0 and summary["test_episodes"] == 3
    assert summary["test_protocol"]["norm_stats"] == "batch" == summary["test_norm_stats"]  # MAML's protocol
    assert summary["differences"]["learner.name"] == "maml"  # never a ProtoNet cell
    assert summary["num_params"] == maml.parameter_count(4, 32, 5)
    if estimator == "backprop":  # a trained MAML loads like any run: its backbone embeds images
        run = load_run(tmp_path / "run")
        assert run.config.learner.name == "maml" and run.batch_stats == {}
        features = run.embed(np.zeros((2, 32, 32), np.uint8))
        assert features.shape == (2, 16) and np.all(np.isfinite(features))


def test_the_parameter_count_rule_counts_what_init_builds():
    for channels, size, way in ((4, 32, 5), (32, 28, 20), (64, 32, 5)):
        shapes = jax.eval_shape(partial(maml.init_params, channels=channels, image_size=size, way=way), jax.random.key(0))
        assert maml.parameter_count(channels, size, way) == sum(x.size for x in jax.tree.leaves(shapes))


def test_first_order_and_second_order_share_the_loss_value_and_evaluation_uses_the_test_inner_steps():
    (second,) = check_overrides([*MAML_TINY, "learner.inner_steps=2", "learner.test_inner_steps=5"])
    (first,) = check_overrides([*MAML_TINY, "estimator=first_order", "learner.inner_steps=2"])
    learner = make_learner(second)
    params = learner.init_params(jax.random.key(0))
    rng = np.random.default_rng(0)
    from esmeta.data.episodes import Episode

    episode = Episode(rng.random((5, 32, 32, 1), np.float32), rng.random((10, 32, 32, 1), np.float32))
    train_loss = learner.metrics(5)(params, episode)[0]
    first_loss = make_learner(first).metrics(5, first_order=True)(params, episode)[0]
    np.testing.assert_allclose(float(train_loss), float(first_loss), rtol=1e-6)
    eval_loss = learner.metrics(5, evaluation=True)(params, episode)[0]
    five = maml.make_metrics_fn(way=5, steps=5, lr=second.learner.inner_lr)(params, episode)[0]
    np.testing.assert_allclose(float(eval_loss), float(five), rtol=1e-6)
