"""A tiny ProtoNet problem shared by the estimator tests."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta.data.episodes import Episode
from esmeta.protonet import init_params, make_loss_fn


@pytest.fixture(scope="session")
def tiny_protonet():
    """(loss, mu, episode): 2 channels (150 parameters), a 3-way 2-shot 2-query episode of random 16x16 images.

    Built from numpy (no init/sampling compilation): conv kernels ~ N(0, 1/fan_in), vectors ~ 1 + N(0, 0.01).
    """
    channels = 2
    rng = np.random.default_rng(1)
    episode = Episode(rng.random((6, 16, 16, 1), np.float32), rng.random((6, 16, 16, 1), np.float32))
    shapes = jax.eval_shape(lambda key: init_params(key, channels, 16), jax.random.key(0))
    params = jax.tree.map(
        lambda s: jnp.asarray(
            rng.normal(0.0, 1.0 / np.sqrt(np.prod(s.shape[:-1])), s.shape) if len(s.shape) > 1
            else 1.0 + 0.1 * rng.normal(size=s.shape), jnp.float32),
        shapes,
    )
    loss = make_loss_fn(way=3, distance="euclidean", scale=1.0, norm_stats="episode")
    return loss, params, episode
