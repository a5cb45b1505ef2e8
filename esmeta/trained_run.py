"""Use a trained run outside the project: its config and an `embed(images)` function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from esmeta.checkpoint import PARAM_FILES, sha256
from esmeta.config import Config, from_mapping, upgrade_record
from esmeta.data.episodes import to_float
from esmeta.data.omniglot import prepare_images
from esmeta.errors import DataError, EsmetaError
from esmeta.learners import make_learner
from esmeta.protonet import BatchStats, Params
from esmeta.run_dir import BATCH_STATS, DONE, PARAMS, SUMMARY, read_finished_summary


def _read_params(path: Path, template: Params, expected_sha256: str) -> Params:
    """The arrays (parameters or running averages) in `path`, checked against the checksum the summary recorded
    and the config's shapes; a damaged file is a one-line DataError naming it."""
    try:
        data = path.read_bytes()
        if sha256(data) != expected_sha256:
            raise ValueError("checksum mismatch with the checksum summary.json recorded")
        params = serialization.from_bytes(template, data)
        for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(template), strict=True):
            if got.shape != want.shape:
                raise ValueError(f"an array is {list(got.shape)}, the config's model needs {list(want.shape)}")
    except Exception as e:  # msgpack errors, a wrong structure, a checksum or shape mismatch
        raise DataError(f"{path} is damaged ({type(e).__name__}: {' '.join(str(e).split())}); "
                        "it cannot be used, rerun the run with train.resume=false") from None
    return params


@dataclass(frozen=True)
class LoadedRun:
    """A finished run: its validated config, trained parameters, batch-norm running averages and embedding function."""

    config: Config
    params: Params
    batch_stats: BatchStats
    summary: dict
    embed: Callable[[jax.Array], jax.Array]

    def prepare(self, images: Any, dark_ink: bool = True) -> np.ndarray:
        """Your own drawings (PNG bytes, PIL images or arrays) as `embed`'s input, made as this run's training images
        were (its data.image_size and data.resize_filter; see `esmeta.data.prepare_images`)."""
        return prepare_images(images, self.config.data.image_size, self.config.data.resize_filter, dark_ink)


def check_image_shape(shape: tuple[int, ...], size: int) -> None:
    """A one-line DataError unless `shape` is (n, size, size) or (n, size, size, 1): the model takes any size, but
    only the trained one means anything (a 32-pixel model gives (n, 64) at 28 pixels and (n, 2304) at 105)."""
    if len(shape) in (3, 4) and tuple(shape[1:3]) == (size, size) and shape[3:] in ((), (1,)):
        return
    raise DataError(f"embed takes images of this run's size, (n, {size}, {size}) uint8 or (n, {size}, {size}, 1) "
                    f"float, got shape {tuple(shape)}; make them with run.prepare(images) (PNG bytes, PIL images "
                    "or arrays, resized as the training data was)")


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load `run_dir` (a completed run's output directory, with its `done` marker and checksummed parameters).

    `embed(images)` takes images as the training preprocessing produces them: uint8 (n, S, S) with
    255 = ink (a slice of `load_omniglot(...).images`, or `prepare(your images)`), or float32 (n, S, S, 1) in
    [0, 1]; another size S is refused in one line. Batch norm as
    the run was tested: under model.norm_stats=running (the default) with the run's running averages, so
    each image's embedding is its own (embed one image or many alike); under `episode` or `support` with
    the statistics of all the images passed in: embed a whole episode (support and query) at once. A MAML run
    (learner=maml) embeds with its meta-parameters' backbone, before any adaptation, with the images' statistics.
    """
    run_dir = Path(run_dir)
    if not (run_dir / DONE).exists() or not (run_dir / PARAMS).exists():
        raise DataError(f"{run_dir} holds no finished run (no `done` marker or {PARAMS}); pass a run's output directory")
    summary = read_finished_summary(run_dir)
    try:
        config = from_mapping(upgrade_record(summary["config"]))
    except (KeyError, TypeError, EsmetaError) as e:
        raise DataError(f"{run_dir / SUMMARY} holds no valid config ({type(e).__name__}: {e}); it is damaged") from None
    if summary.get("status") != "completed":  # a collapsed run's parameters are not finite: no model to embed with
        raise DataError(f"{run_dir} holds a run whose status is {summary.get('status')!r}, not 'completed': its "
                        "parameters are no trained model; load a completed run")
    missing = [key for _, key in PARAM_FILES if not isinstance(summary.get(key), str)]
    if missing:
        raise DataError(f"{run_dir / SUMMARY} records no {' or '.join(missing)}, so its parameters cannot be "
                        "verified; retrain the run (train.resume=false)")
    learner = make_learner(config)
    template = learner.init_params(jax.random.key(0))
    params = _read_params(run_dir / PARAMS, template, summary["params_sha256"])
    if not (run_dir / BATCH_STATS).exists():
        raise DataError(f"{run_dir} holds no {BATCH_STATS} (a run from before running averages were kept); retrain it")
    batch_stats = _read_params(run_dir / BATCH_STATS, learner.init_running(template), summary["batch_stats_sha256"])

    @jax.jit
    def _embed(x: jax.Array) -> jax.Array:
        return learner.embed(params, x, batch_stats)

    def embed_images(images) -> jax.Array:
        images = jnp.asarray(images)
        check_image_shape(images.shape, config.data.image_size)
        if images.dtype == jnp.uint8:
            images = to_float(images)
        return _embed(images)

    return LoadedRun(config=config, params=params, batch_stats=batch_stats, summary=summary, embed=embed_images)
