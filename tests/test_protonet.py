"""ProtoNet: distances and loss against NumPy references, embedding shapes, batch-norm policy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esmeta.data.episodes import Episode
from esmeta.protonet import (
    ConvEmbedding,
    embed,
    episode_logits,
    init_params,
    loss_and_accuracy,
    num_params,
    prototypes,
    similarity,
)

RNG = np.random.default_rng(0)


def numpy_euclidean(q, c):
    return -np.array([[np.sum((qi - cj) ** 2) for cj in c] for qi in q])


def numpy_cosine(q, c, scale):
    return scale * np.array(
        [[qi @ cj / (np.linalg.norm(qi) * np.linalg.norm(cj)) for cj in c] for qi in q]
    )


def test_euclidean_is_negative_squared_distance():
    q, c = RNG.normal(size=(7, 12)), RNG.normal(size=(4, 12))
    got = similarity(jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32), "euclidean")
    np.testing.assert_allclose(got, numpy_euclidean(q, c), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("scale", [1.0, 10.0])
def test_cosine_is_scaled_cosine_similarity(scale):
    q, c = RNG.normal(size=(7, 12)), RNG.normal(size=(4, 12))
    got = similarity(jnp.asarray(q, jnp.float32), jnp.asarray(c, jnp.float32), "cosine", scale)
    np.testing.assert_allclose(got, numpy_cosine(q, c, scale), rtol=1e-5, atol=1e-5)


def test_prototypes_are_class_means_of_class_major_support():
    z = RNG.normal(size=(3 * 4, 5)).astype(np.float32)  # 3 classes x 4 shots
    expected = np.stack([z[k * 4 : (k + 1) * 4].mean(0) for k in range(3)])
    np.testing.assert_allclose(prototypes(jnp.asarray(z), 3), expected, rtol=1e-6)


def _episode(way=3, shot=2, query=2, size=16, seed=1):
    r = np.random.default_rng(seed)
    return Episode(
        support=jnp.asarray(r.random((way * shot, size, size, 1)), jnp.float32),
        query=jnp.asarray(r.random((way * query, size, size, 1)), jnp.float32),
    )


def test_loss_is_cross_entropy_of_softmax_over_similarities():
    ep = _episode()
    params = init_params(jax.random.key(0), 4, 16)
    kw = dict(way=3, distance="euclidean", scale=1.0, norm_stats="episode")
    logits = np.asarray(episode_logits(params, ep, **kw), np.float64)
    labels = np.repeat(np.arange(3), 2)
    log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(
        1, keepdims=True
    )
    expected_loss = -np.mean(log_p[np.arange(len(labels)), labels])
    expected_acc = np.mean(logits.argmax(1) == labels)
    loss, acc = loss_and_accuracy(params, ep, **kw)
    np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
    assert float(acc) == pytest.approx(expected_acc)


@pytest.mark.parametrize("size,dim", [(32, 2 * 2 * 8), (28, 1 * 1 * 8)])
def test_embedding_size_follows_four_pools(size, dim):
    params = init_params(jax.random.key(0), 8, size)
    z = embed(params, jnp.zeros((3, size, size, 1)))
    assert z.shape == (3, dim)


def test_parameter_count_of_snell_architecture():
    # conv1: 9*1*c + c; conv2-4: 9*c*c + c each; 4 batch norms: 2c each.
    for c in (16, 64):
        expected = (9 * c + c) + 3 * (9 * c * c + c) + 4 * 2 * c
        assert num_params(init_params(jax.random.key(0), c, 32)) == expected


def test_jitted_init_gives_flax_s_own_initial_parameters_bit_for_bit():
    """init_params is jitted for speed; Flax's eager init (op by op) is the reference, and no run's start may move."""
    key = jax.random.key(3)
    eager = ConvEmbedding(8).init(key, jnp.zeros((2, 28, 28, 1), jnp.float32))["params"]
    jax.tree.map(lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)), eager, init_params(key, 8, 28))


def test_batch_norm_uses_the_episode_statistics_not_running_averages():
    """Scaling every image of an episode by the same factor leaves the logits unchanged.

    The first conv is linear up to its bias, and normalizing with the batch's own mean and variance
    removes the factor (up to BN's epsilon); running averages would not.
    """
    ep = _episode()
    params = init_params(jax.random.key(0), 4, 16)
    kw = dict(way=3, distance="euclidean", scale=1.0, norm_stats="episode")
    shifted = Episode(ep.support * 3.0, ep.query * 3.0)
    np.testing.assert_allclose(episode_logits(params, ep, **kw), episode_logits(params, shifted, **kw), rtol=1e-3, atol=1e-3)


def test_support_statistics_make_queries_independent_of_each_other():
    """With norm_stats=support, changing one query image leaves the other queries' logits unchanged."""
    ep = _episode()
    params = init_params(jax.random.key(0), 4, 16)
    changed = Episode(ep.support, ep.query.at[0].set(1.0 - ep.query[0]))
    for norm_stats, independent in (("support", True), ("episode", False)):
        kw = dict(way=3, distance="euclidean", scale=1.0, norm_stats=norm_stats)
        a, b = episode_logits(params, ep, **kw)[1:], episode_logits(params, changed, **kw)[1:]
        assert bool(jnp.allclose(a, b, rtol=1e-5, atol=1e-5)) == independent


def _tree_errors(actual, exact):
    """Per-leaf ||actual - exact||, relative to the leaf's own norm or, for a leaf whose exact value is (near) zero,
    to the norm the whole gradient would give a leaf of its size (conv biases before batch norm have gradient 0)."""
    flat_exact = np.concatenate([np.ravel(x) for x in jax.tree.leaves(exact)])
    rms = np.linalg.norm(flat_exact) / np.sqrt(flat_exact.size)
    return {
        jax.tree_util.keystr(path): np.linalg.norm(np.asarray(a, np.float64) - e) / max(np.linalg.norm(e), rms * np.sqrt(e.size))
        for (path, e), a in zip(jax.tree_util.tree_flatten_with_path(exact)[0], jax.tree.leaves(actual))
    }


# A float32 gradient entry here is a sum over up to 30 x 32 x 32 = 30,720 pixel terms. Summed in any order with
# independent roundings, its relative error is about sqrt(30720) * 2^-24 = 1e-5; 1e-4 leaves a factor of 10 for
# the fold's amplification of errors in the patch covariance and for unlucky orders, whatever the CPU.
FLOAT32_GRADIENT_RTOL = 1e-4


@pytest.mark.parametrize("channels,size,stats_rows", [(16, 32, None), (64, 32, 10), (8, 28, None), (8, 28, 10)])
def test_fast_embedding_equals_the_flax_reference(channels, size, stats_rows):
    """`embed` folds the first batch norm into the conv analytically: the same function, and as accurate in float32.

    Exactness is checked in float64, where rounding cannot hide a wrong fold (the two agree to ~1e-15). Accuracy is
    each float32 gradient against the float64 gradient of the flax reference, never one float32 path against the
    other: which of the two wins a coin toss of summation order differs between CPUs.

    Measured at (64 channels, 32 px, statistics from 10 of 30 ink-like images), worst leaf, relative to float64:
    flax reference 4e-6; the fold as first written (centered covariance (p - m)'(p - m)) 2e-5 here, but 1.0e-2
    in the first conv's kernel on an AVX2-only CPU (AMD EPYC; reproduced under qemu -cpu EPYC-Rome and on this
    machine with XLA_FLAGS=--xla_cpu_enable_platform_dependent_math=false). Cause: XLA fuses the centering into
    a loop whose float32 sum over 10,240 pixels errs by ~1e-4, and the gradient amplifies the covariance's error
    about 50-fold (the variance path nearly cancels the direct one). With the plain Gram matrix E[pp'] - mm' the
    fold's worst leaf is 2e-6 under both code paths: as accurate as the reference, so training cannot feel it.
    """
    from esmeta.protonet import ConvEmbedding

    params = init_params(jax.random.key(3), channels, size)
    images = (jax.random.uniform(jax.random.key(4), (30, size, size, 1)) > 0.8).astype(jnp.float32)  # ink-like
    fast = lambda p, x: embed(p, x, stats_rows)  # noqa: E731
    reference = lambda p, x: ConvEmbedding(channels).apply({"params": p}, x, stats_rows)  # noqa: E731

    def grad(f, p, x):
        return jax.grad(lambda q: jnp.sum(jnp.sin(f(q, x))))(p)

    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        x64 = np.asarray(images, np.float64)
        np.testing.assert_allclose(fast(p64, x64), reference(p64, x64), rtol=1e-10, atol=1e-10)
        exact = jax.tree.map(np.asarray, grad(reference, p64, x64))
        assert max(_tree_errors(grad(fast, p64, x64), exact).values()) < 1e-10  # the fold is exact
    # Embeddings are O(1) and sums of at most 30,720 products: float32 within 1e-4 absolute on any CPU.
    np.testing.assert_allclose(fast(params, images), reference(params, images), atol=1e-4)
    for name, f in (("fast", fast), ("flax reference", reference)):
        errors = _tree_errors(grad(f, params, images), exact)
        worst = max(errors, key=errors.get)
        assert errors[worst] <= FLOAT32_GRADIENT_RTOL, f"{name}: {worst} off float64 by {errors[worst]:.1e}"
