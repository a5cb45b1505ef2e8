"""The meta-learner a run trains (the `learner` group): what the training loop needs of it, whichever it is.

`LEARNERS` is the one list of learner names, each with its config, declared beside its math: `protonet` (the
paper's Prototypical Network, esmeta.protonet, the default) and `maml` (an inner loop of SGD steps, esmeta.maml).
`make_learner(config)` binds a validated run's settings into a `Learner`: fresh parameters, batch-norm running
averages and their update, and the one loss/accuracy function of training and of evaluation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jax

from esmeta import maml, protonet, rules
from esmeta.maml import MamlConfig
from esmeta.protonet import ProtoNetConfig

if TYPE_CHECKING:
    from esmeta.config import Config

LearnerConfig = ProtoNetConfig | MamlConfig
LEARNERS: dict[str, type] = {cls.NAME: cls for cls in (ProtoNetConfig, MamlConfig)}
# learners that adapt to each episode by inner gradient steps: the first-order estimator needs one
INNER_LOOP = ("maml",)


def learner_class(name: str) -> type:
    """The config of the learner named `name`; a one-line ConfigError listing the learners otherwise."""
    rules.choice("learner.name", name, tuple(LEARNERS))
    return LEARNERS[name]


@dataclass(frozen=True)
class Learner:
    """A meta-learner as the training loop uses it. `metrics(way, evaluation=False, first_order=False)` returns
    `(params, episode, running=None) -> (loss, accuracy, batch-norm statistics)`: training's (the loss every
    estimator differentiates; `first_order`: inner gradients held constant) or evaluation's."""

    init_params: Callable[[jax.Array], Any]  # key -> fresh meta-parameters
    init_running: Callable[[Any], Any]  # params -> batch-norm running averages before training
    update_running: Callable[[Any, Any], Any]  # (running, statistics of a training forward pass) -> running
    metrics: Callable[..., Callable[..., tuple[jax.Array, jax.Array, Any]]]
    embed: Callable[[Any, jax.Array, Any], jax.Array]  # (params, images, running) -> features, as trained
    test_norm_stats: str  # the batch-norm protocol behind a test accuracy


def make_learner(config: Config) -> Learner:
    """The run's learner, its settings bound (`config` validated)."""
    channels, size = config.model.channels, config.data.image_size
    if config.learner.name == "maml":
        m: MamlConfig = config.learner
        return Learner(
            init_params=lambda key: maml.init_params(key, channels, size, config.task.train_way),
            init_running=lambda params: {},  # MAML normalizes every forward pass with its own batch
            update_running=lambda running, stats: running,
            metrics=lambda way, evaluation=False, first_order=False: maml.make_metrics_fn(
                way=way, steps=m.test_inner_steps if evaluation else m.inner_steps, lr=m.inner_lr,
                first_order=first_order),
            embed=lambda params, images, running: maml.backbone_features(params["backbone"], images),
            test_norm_stats=maml.NORM_STATS,
        )
    norm_stats, d = config.model.norm_stats, config.distance

    def metrics(way: int, evaluation: bool = False, first_order: bool = False):
        del first_order  # no inner loop (esmeta.config refuses the first-order estimator with this learner)
        return protonet.make_metrics_fn(way=way, distance=d.name, scale=d.scale, norm_stats=norm_stats,
                                        evaluation=evaluation)

    return Learner(
        init_params=lambda key: protonet.init_params(key, channels, size),
        init_running=protonet.init_batch_stats,
        update_running=protonet.update_running,
        metrics=metrics,
        embed=lambda params, images, running: protonet.embed(
            params, images, running=running if norm_stats == "running" else None),
        test_norm_stats=norm_stats,
    )
