"""Use a trained run outside the project: its config and an `embed(images)` function."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
from flax import serialization

from esmeta.config import Config, from_mapping
from esmeta.data.episodes import to_float
from esmeta.errors import DataError
from esmeta.protonet import Params, embed, init_params
from esmeta.results import PARAMS, read_summary


@dataclass(frozen=True)
class LoadedRun:
    """A finished run: its validated config, trained parameters and embedding function."""

    config: Config
    params: Params
    summary: dict
    embed: Callable[[jax.Array], jax.Array]


def load_run(run_dir: str | Path) -> LoadedRun:
    """Load `run_dir` (a run's output directory, with its `done` marker).

    `embed(images)` takes images as the training preprocessing produces them: uint8 (n, S, S) with
    255 = ink (a slice of `load_omniglot(...).images`), or float32 (n, S, S, 1) in [0, 1]. Batch norm
    uses the statistics of the images passed in, as in training: embed a whole episode at once.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "done").exists() or not (run_dir / PARAMS).exists():
        raise DataError(f"{run_dir} holds no finished run (no `done` marker or {PARAMS}); pass a run's output directory")
    summary = read_summary(run_dir)
    config = from_mapping(summary["config"])
    template = init_params(jax.random.key(0), config.model.channels, config.data.image_size)
    params = serialization.from_bytes(template, (run_dir / PARAMS).read_bytes())
    channels = config.model.channels

    @jax.jit
    def _embed(x: jax.Array) -> jax.Array:
        return embed(params, x, channels)

    def embed_images(images) -> jax.Array:
        images = jnp.asarray(images)
        if images.dtype == jnp.uint8:
            images = to_float(images)
        return _embed(images)

    return LoadedRun(config=config, params=params, summary=summary, embed=embed_images)
