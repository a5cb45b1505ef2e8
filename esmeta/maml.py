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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from esmeta import protonet
from esmeta.data.episodes import Episode, episode_labels

Params = Any  # {"backbone": ..., "head": {"kernel", "bias"}}
Features = Callable[[Any, jax.Array], jax.Array]  # (backbone params, images (n, S, S, 1)) -> features (n, d)


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
