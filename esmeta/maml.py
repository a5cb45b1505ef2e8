"""MAML (Finn et al. 2017) on the ProtoNet's conv backbone: adapt by SGD on the support set, score the query set.

A learner's parameters are `{"backbone": <protonet embedding params>, "head": {"kernel": (d, way), "bias": (way,)}}`.
For one episode, `inner_steps` SGD steps at `inner_lr` on the support set's cross-entropy move all of them,
starting from the meta-parameters; the outer loss is the query set's cross-entropy at the adapted parameters.

Outer gradients, as `esmeta.estimators` take them: differentiating `loss` through the unrolled inner loop is
second-order MAML (it keeps every inner step's activations); `first_order=True` treats each inner gradient as a
constant (first-order MAML: the outer gradient is the query gradient at the adapted parameters); ES and
finite differences only evaluate `loss`, so they keep no outer graph, whatever the number of inner steps.

Batch norm as MAML's reference implementation uses it: every forward pass normalizes with the statistics of
the batch it embeds (the support set in the inner loop, the query set after it), in training and at test time
alike, with no running averages. So a query's prediction depends on the other queries (transductive), as in the
published MAML figures; the normalization's scale and bias are adapted with the rest.

`learner=maml` selects it (`MamlConfig`, conf/learner/maml.yaml); its defaults are Finn et al.'s Omniglot 5-way
settings: one inner step at learning rate 0.4 in training, three at test time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp

from esmeta import protonet, rules
from esmeta.data.episodes import Episode, episode_labels
from esmeta.errors import ConfigError
from esmeta.rules import setting

if TYPE_CHECKING:
    from esmeta.config import Config

Params = Any  # {"backbone": ..., "head": {"kernel", "bias"}}
Features = Callable[[Any, jax.Array], jax.Array]  # (backbone params, images (n, S, S, 1)) -> features (n, d)
NORM_STATS = "batch"  # the batch-norm protocol a run records for its test accuracy (module docstring)
# forward_mode pushes one tangent per parameter through the whole unrolled inner loop: a step costs about
# parameters x (inner_steps + 1) passes over its episode. Measured on one core of a 2-core AMD EPYC (5-way 1-shot,
# 28 px, 8 channels: 1,941 parameters, one inner step): about 390 such passes a second, so this many over a run
# is some 14 hours; a larger run is refused rather than left to never finish.
FORWARD_MODE_MAX_PASSES = 20_000_000


@dataclass(frozen=True)
class MamlConfig:
    """`learner=maml`: K = inner_steps SGD steps at inner_lr on the support set per training episode, and
    test_inner_steps at test time (Finn et al. 2017, Omniglot 5-way: 1 step at 0.4 in training, 3 at test)."""

    NAME: ClassVar[str] = "maml"

    name: str = setting(NAME, "result")
    inner_steps: int = setting(1, "result")
    inner_lr: float = setting(0.4, "result")
    test_inner_steps: int = setting(3, "result")

    def validate(self, run: Config) -> None:
        """Its own settings, and what it needs of the rest of the run `run`."""
        for key in ("inner_steps", "test_inner_steps"):
            value = getattr(self, key)
            if value < 1:
                raise ConfigError(f"learner.{key}={value} must be at least 1: MAML adapts to each episode by at least "
                                  f"one SGD step on its support set (Finn et al. use 1-5); use learner.{key}=1 or more")
            rules.int32(f"learner.{key}", value)
        rules.positive("learner.inner_lr", self.inner_lr)
        rules.float32("learner.inner_lr", self.inner_lr)
        t = run.task
        if t.test_way != t.train_way:
            raise ConfigError(f"learner=maml needs task.test_way = task.train_way (its head has one output per class "
                              f"of a training episode); got {t.test_way} and {t.train_way}: set task.test_way="
                              f"{t.train_way}")
        for key, value, default in (("model.norm_stats", run.model.norm_stats, "running"),
                                    ("distance.name", run.distance.name, "euclidean"),
                                    ("distance.scale", run.distance.scale, 1.0)):
            if value != default:
                raise ConfigError(f"{key}={value} is a ProtoNet setting, which learner=maml does not read (it scores "
                                  "with a linear head and normalizes each forward pass with its own batch): drop it")
        if run.estimator.name == "forward_mode":
            n = parameter_count(run.model.channels, run.data.image_size, t.train_way)
            episodes = run.train.epochs * run.train.episodes_per_epoch
            passes = n * (self.inner_steps + 1) * episodes
            if passes > FORWARD_MODE_MAX_PASSES:
                raise ConfigError(
                    f"estimator=forward_mode with learner=maml pushes each of the {n:,} parameters through the unrolled "
                    f"inner loop: about {passes:,} passes over an episode in {episodes:,} episodes, more than the "
                    f"{FORWARD_MODE_MAX_PASSES:,} a CPU finishes in about 14 hours; lower model.channels, "
                    "learner.inner_steps or train.epochs, or use estimator=backprop (the same gradient)")


def parameter_count(channels: int, image_size: int, way: int) -> int:
    """The meta-parameters' count without building them: 4 x (3x3 conv + bias, batch-norm scale + bias) and the
    linear head over the flattened 2x2-pooled features."""
    count, inputs, size = 0, 1, image_size
    for _ in range(4):
        count += 9 * inputs * channels + channels + 2 * channels
        inputs, size = channels, size // 2
    return count + channels * size * size * way + way


def init_params(key: jax.Array, channels: int, image_size: int, way: int) -> Params:
    """Fresh meta-parameters: the ProtoNet's conv backbone and a zero linear head (every class starts equal, so
    the first inner step, not the initialization, decides which output is which class)."""
    backbone = protonet.init_params(key, channels, image_size)
    d = jax.eval_shape(lambda p: protonet.embed(p, jnp.zeros((2, image_size, image_size, 1))), backbone).shape[-1]
    return {"backbone": backbone, "head": {"kernel": jnp.zeros((d, way)), "bias": jnp.zeros((way,))}}


def backbone_features(backbone: Any, images: jax.Array) -> jax.Array:
    """The ProtoNet embedding, batch norm over `images` themselves (MAML's protocol, see the module docstring)."""
    return protonet.embed(backbone, images)


def logits(params: Params, images: jax.Array, features: Features = backbone_features) -> jax.Array:
    """Class scores (n, way): the linear head over the backbone's features."""
    head = params["head"]
    return features(params["backbone"], images) @ head["kernel"] + head["bias"]


def cross_entropy(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of integer labels."""
    log_p = jax.nn.log_softmax(scores, axis=-1)
    return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None], axis=1))


def adapt(params: Params, images: jax.Array, labels: jax.Array, *, steps: int, lr: float, first_order: bool = False,
          features: Features = backbone_features) -> Params:
    """`steps` SGD steps on the cross-entropy of (images, labels) from `params`; with `first_order`, each step's
    gradient is a constant to any outer derivative (jax.lax.stop_gradient), so the adapted parameters depend on
    `params` with the identity Jacobian."""

    def support_loss(p: Params) -> jax.Array:
        return cross_entropy(logits(p, images, features), labels)

    def step(p: Params, _: None) -> tuple[Params, None]:
        g = jax.grad(support_loss)(p)
        if first_order:
            g = jax.lax.stop_gradient(g)
        return jax.tree.map(lambda w, gw: w - lr * gw, p, g), None

    return jax.lax.scan(step, params, None, length=steps)[0]


def episode_metrics(params: Params, episode: Episode, *, way: int, steps: int, lr: float, first_order: bool = False,
                    features: Features = backbone_features) -> tuple[jax.Array, jax.Array]:
    """(query cross-entropy, query accuracy) after adapting to the episode's support set."""
    shot = episode.support.shape[0] // way
    adapted = adapt(params, episode.support, episode_labels(way, shot), steps=steps, lr=lr,
                    first_order=first_order, features=features)
    scores = logits(adapted, episode.query, features)
    labels = episode_labels(way, scores.shape[0] // way)
    return cross_entropy(scores, labels), jnp.mean(jnp.argmax(scores, axis=-1) == labels)


def make_metrics_fn(*, way: int, steps: int, lr: float, first_order: bool = False):
    """`metrics(params, episode, running=None) -> (loss, accuracy, {})`, the training loop's loss interface: MAML
    keeps no running batch-norm averages, so it reports no statistics and ignores `running`."""

    def metrics(params: Params, episode: Episode, running: Any = None) -> tuple[jax.Array, jax.Array, dict]:
        loss, accuracy = episode_metrics(params, episode, way=way, steps=steps, lr=lr, first_order=first_order)
        return loss, accuracy, {}

    return metrics
