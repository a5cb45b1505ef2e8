"""The scale policy: a sweep's budget preset (`scale=paper|cpu|smoke`) applied to a validated run.

`scaled` caps the population and the shards that run (the requested ones stay in the config, so a smoke run
of a paper configuration is still found under that configuration); `check_fits_scale` refuses a population
the scale leaves to an accelerator.
"""

from __future__ import annotations

import dataclasses

from esmeta.config import Config
from esmeta.errors import NeedsAcceleratorError


def scaled(config: Config) -> Config:
    """The configuration a run executes: `scale`'s caps applied to the population and the shards.

    The requested values stay in `config` (and in the summary's `config`), so that a smoke run of a
    paper configuration is still found under that configuration; the summary records what ran.
    """
    s, e, h = config.scale, config.estimator, config.hardware
    if s.max_pop_per_shard and e.is_es and e.pop_per_shard > s.max_pop_per_shard:
        e = dataclasses.replace(e, pop_per_shard=s.max_pop_per_shard)
    if s.max_shards and h.shards > s.max_shards:
        h = dataclasses.replace(h, shards=s.max_shards)
    return dataclasses.replace(config, estimator=e, hardware=h)


def check_fits_scale(config: Config) -> None:
    """Refuse a configuration whose requested population exceeds `scale.max_population` (NeedsAcceleratorError):
    at `scale=cpu` the paper's v3-256 and v2-512 rows are not shrunk to fit, they are left to an accelerator."""
    s, e = config.scale, config.estimator
    if s.max_population and e.is_es and e.pop_per_shard * config.hardware.shards > s.max_population:
        population = e.pop_per_shard * config.hardware.shards
        raise NeedsAcceleratorError(
            f"population {population} ({e.pop_per_shard} per shard x {config.hardware.shards} shards) exceeds "
            f"scale={s.name}'s max_population {s.max_population}: this configuration needs an accelerator; "
            "run it there with scale=paper (or raise scale.max_population)"
        )
