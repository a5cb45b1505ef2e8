"""The ProtoNet loss with the episode streamed in chunks: exact, in O(chunk) memory whatever the support size.

`protonet.loss_and_accuracy` embeds support and query as one batch, so its activations (and a backward
pass's residuals) grow with the task. Here images are addressed by index, rows [0, n_support) the
support and rows [n_support, n_support + n_query) the query, both class-major as in an `Episode`, and
`images_at(idx)` returns the float32 images (len(idx), S, S, 1) of a chunk of rows. Batch norm (see
`protonet`) normalizes with the statistics of all statistic rows (support + query under norm_stats
"episode" and, in training, "running"; the support alone under "support"), so a block's statistics
must be complete before any row can pass through it. Given fixed `running` averages (evaluation under
norm_stats="running") passes 0-3 are skipped: every row goes straight through. Every pass below is
a `lax.scan` over chunks of `chunk` rows (the last one padded and masked), holding one chunk's
activations at a time:

  pass 0      mean and covariance of the 3x3 input patches (parameter-free): block 0's mean and
              variance follow from them exactly as in `protonet.embed` (its folded first block);
  pass b=1-3  each chunk through blocks < b (their statistics known), then the per-channel count,
              mean and sum of squared deviations of block b's conv output, merged over chunks with
              Chan et al.'s parallel update (exact, and stable where sum/sum-of-squares is not);
  pass 4      each support chunk through all blocks, its embeddings added to its classes' sums:
              the prototypes;
  pass 5      each query chunk through all blocks, its log-softmax cross-entropy and correct
              predictions summed.

The result equals `protonet.loss_and_accuracy` up to float rounding (tests/test_streaming.py). The
price of constant memory is compute: block b is recomputed in every later pass, so the second
block, which dominates the FLOPs at 32x32, runs 4 times instead of once (about 3.5x the FLOPs of
one forward pass). Differentiated in forward mode (`jax.jvp`) or evaluated by ES candidates, the
loss keeps this O(chunk) memory; reverse mode (`jax.grad`) stores every chunk's residuals, O(support).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from esmeta.data.episodes import Episode
from esmeta.protonet import (
    BatchStats,
    Params,
    conv_output,
    first_block,
    first_conv_moments,
    norm_inverse,
    normalize_block,
    num_blocks,
    patches_3x3,
    similarity,
)

ImagesAt = Callable[[jax.Array], jax.Array]  # row indices (c,) int32 -> float32 images (c, S, S, 1)


class Moments(NamedTuple):
    """Count, mean and sum of squared deviations (M2) of the rows seen so far: Chan et al.'s merge state."""

    count: jax.Array  # scalar float32
    mean: jax.Array  # (k,) or (k, ...) feature mean
    m2: jax.Array  # same shape as a per-feature variance (k,), or a (k, k) co-moment matrix


def merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint row sets (Chan, Golub & LeVeque 1979); M2 may be a matrix."""
    count = a.count + b.count
    delta = b.mean - a.mean
    frac = b.count / jnp.maximum(count, 1.0)
    cross = jnp.outer(delta, delta) if a.m2.ndim == 2 else jnp.square(delta)
    return Moments(count, a.mean + delta * frac, a.m2 + b.m2 + cross * a.count * frac)


def chunk_moments(x_nk: jax.Array, valid_n: jax.Array, matrix: bool) -> Moments:
    """Moments of the valid rows of x (n, k): per-feature M2 (k,), or the co-moment matrix (k, k)."""
    w = valid_n.astype(x_nk.dtype)[:, None]
    count = jnp.sum(w)
    mean = jnp.sum(x_nk * w, axis=0) / jnp.maximum(count, 1.0)
    centered = (x_nk - mean) * w
    m2 = centered.T @ centered if matrix else jnp.sum(jnp.square(centered), axis=0)
    return Moments(count, mean, m2)


class BlockNorm(NamedTuple):
    """A block's batch norm as applied: y * inv + shift (block 0: inv folded into the conv, see `embed`)."""

    mean: jax.Array
    inv: jax.Array


def _block0_norm(params: Params, patch: Moments) -> BlockNorm:
    """Block 0's batch-norm mean and scale from the patch moments (as `protonet.embed_with_moments`)."""
    mean, var = first_conv_moments(params, patch.mean, patch.m2 / patch.count)
    return BlockNorm(mean, norm_inverse(params, 0, var))


def forward_chunk(params: Params, images: jax.Array, norms: tuple[BlockNorm, ...]) -> jax.Array:
    """Images through the blocks whose norms are given: the next block's pre-norm conv output, or, after all
    blocks, the flattened embeddings. The blocks of `protonet.embed_with_moments`, with given statistics."""
    x = first_block(params, patches_3x3(images), *norms[0])  # block 0's statistics come from pass 0's patches
    for block, bn in enumerate(norms[1:], start=1):
        x = normalize_block(params, block, conv_output(params, block, x), *bn)
    if len(norms) < num_blocks(params):
        return conv_output(params, len(norms), x)
    return x.reshape(images.shape[0], -1)


def scan_chunks(fold: Callable, init, n_rows: int, chunk: int, offset: int = 0):
    """fold(acc, rows, valid) over chunks of rows [offset, offset + n_rows), in order. A chunk's row indices
    are built inside the loop (clipped into range, `valid` marking the padding of the last chunk), so
    nothing of the size of the task is held, not even its indices."""

    def step(acc, k):
        rows = k * chunk + jnp.arange(chunk, dtype=jnp.int32)
        return fold(acc, jnp.minimum(rows, n_rows - 1) + offset, rows < n_rows), None

    return jax.lax.scan(step, init, jnp.arange(-(-n_rows // chunk), dtype=jnp.int32))[0]


def running_norms(params: Params, running: BatchStats) -> tuple[BlockNorm, ...]:
    """Every block's batch-norm (mean, scale) from fixed running averages (`protonet.update_running`)."""
    stats = (running[f"EpisodeBatchNorm_{b}"] for b in range(len(running)))
    return tuple(BlockNorm(r["mean"], norm_inverse(params, b, r["var"])) for b, r in enumerate(stats))


def batch_norms(params: Params, images_at: ImagesAt, n_stats: int, chunk: int) -> tuple[BlockNorm, ...]:
    """Every block's batch-norm (mean, scale) over rows [0, n_stats), one chunked pass per block."""
    def patch_fold(acc: Moments, rows, valid):
        p = patches_3x3(images_at(rows))
        valid_pixels = jnp.repeat(valid, p.shape[1] * p.shape[2])
        return merge(acc, chunk_moments(p.reshape(-1, p.shape[-1]), valid_pixels, matrix=True))

    k = 9  # 3x3 patches of one-channel images
    zero = Moments(jnp.float32(0.0), jnp.zeros(k, jnp.float32), jnp.zeros((k, k), jnp.float32))
    norms = (_block0_norm(params, scan_chunks(patch_fold, zero, n_stats, chunk)),)
    blocks = num_blocks(params)
    for block in range(1, blocks):
        def fold(acc: Moments, rows, valid, norms=norms):
            y = forward_chunk(params, images_at(rows), norms)
            valid_pixels = jnp.repeat(valid, y.shape[1] * y.shape[2])
            return merge(acc, chunk_moments(y.reshape(-1, y.shape[-1]), valid_pixels, matrix=False))

        c = params[f"Conv_{block}"]["bias"].shape[0]
        zero = Moments(jnp.float32(0.0), jnp.zeros(c, jnp.float32), jnp.zeros(c, jnp.float32))
        m = scan_chunks(fold, zero, n_stats, chunk)
        norms = norms + (BlockNorm(m.mean, norm_inverse(params, block, m.m2 / m.count)),)
    return norms


def streamed_loss_and_accuracy(
    params: Params,
    images_at: ImagesAt,
    *,
    n_support: int,
    n_query: int,
    way: int,
    chunk: int,
    distance: str,
    scale: float,
    norm_stats: str,
    running: BatchStats | None = None,
) -> tuple[jax.Array, jax.Array]:
    """`protonet.loss_and_accuracy` of the episode whose rows `images_at` returns, `chunk` rows at a time."""
    shot, per_query = n_support // way, n_query // way
    if running is None:
        n_stats = n_support if norm_stats == "support" else n_support + n_query
        norms = batch_norms(params, images_at, n_stats, chunk)
    else:
        norms = running_norms(params, running)

    def proto_fold(sums, rows, valid):  # class sums of the support embeddings
        z = forward_chunk(params, images_at(rows), norms)
        onehot = jax.nn.one_hot(rows // shot, way, dtype=z.dtype) * valid[:, None]
        return sums + onehot.T @ z

    dim = jax.eval_shape(lambda r: forward_chunk(params, images_at(r), norms), jnp.zeros(1, jnp.int32)).shape[-1]
    protos = scan_chunks(proto_fold, jnp.zeros((way, dim), jnp.float32), n_support, chunk) / shot

    def query_fold(acc, rows, valid):  # (sum of -log p(label), correct predictions)
        logits = similarity(forward_chunk(params, images_at(rows), norms), protos, distance, scale)
        labels = (rows - n_support) // per_query
        log_p = jax.nn.log_softmax(logits, axis=-1)
        nll = -jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]
        correct = jnp.argmax(logits, axis=-1) == labels
        return acc[0] + jnp.sum(jnp.where(valid, nll, 0.0)), acc[1] + jnp.sum(valid & correct)

    total, correct = scan_chunks(query_fold, (jnp.float32(0.0), jnp.int32(0)), n_query, chunk, offset=n_support)
    return total / n_query, correct.astype(jnp.float32) / n_query


def episode_images_at(episode: Episode) -> ImagesAt:
    """Rows of an `Episode` (support rows first, then query rows), gathered a chunk at a time."""
    n_support = episode.support.shape[0]

    def images_at(rows: jax.Array) -> jax.Array:
        support = episode.support[jnp.minimum(rows, n_support - 1)]
        query = episode.query[jnp.clip(rows - n_support, 0, episode.query.shape[0] - 1)]
        return jnp.where((rows < n_support)[:, None, None, None], support, query)

    return images_at
