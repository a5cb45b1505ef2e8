"""What a run needs in memory, known before it starts: a formula over its config, checked against XLA's compiled
memory analysis (tests/test_memory.py), and the one-line refusal of a run this machine cannot hold.

The formula counts only what a run must hold at once, so it errs low: it never refuses a run that fits, and it
catches the runs that are orders of magnitude too large (100,000 channels, two billion test episodes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import jax

from esmeta.config import Config
from esmeta.data.omniglot import IMAGES_PER_CLASS
from esmeta.data.splits import split_sizes
from esmeta.errors import ConfigError
from esmeta.maml import parameter_count
from esmeta.scale import scaled

FLOAT = 4  # bytes of a float32 (parameters, activations, fitnesses, accuracies)
KEY = 8  # bytes of a threefry key (two uint32)
EPISODE = 20  # bytes per evaluation episode: its key, the counters it is derived from, its accuracy (XLA: 20)
GIB = 1 << 30


@dataclass(frozen=True)
class Needs:
    """Bytes a run holds at its peak, by part: always held (data, state), and the largest of the step and the
    evaluations (which run one after another)."""

    images: int  # the split's uint8 images on the device
    state: int  # parameters, their optimizer state and one gradient
    step: int  # a training step's population arrays and the activations of the candidates evaluated together
    validation: int  # the validation episodes' keys and accuracies
    test: int  # the test episodes' keys and accuracies, beside the validation keys

    @property
    def total(self) -> int:
        return self.images + self.state + max(self.step, self.validation, self.test)

    def largest(self) -> str:
        """The settings behind the largest part, as a hint of what to lower."""
        parts = {
            "model.channels": self.state,
            "data.image_size": self.images,
            "estimator.pop_per_shard, estimator.chunk_size, model.channels or task.train_way/shot/query": self.step,
            "eval.val_episodes": self.validation,
            "eval.test_episodes": self.test,
        }
        return max(parts, key=parts.get)


def num_params(channels: int, image_size: int) -> int:
    """The embedding's parameter count, from its shapes alone (nothing is allocated)."""
    from esmeta.protonet import init_params

    shapes = jax.eval_shape(partial(init_params, channels=channels, image_size=image_size), jax.random.key(0))
    return int(sum(x.size for x in jax.tree.leaves(shapes)))


def activation_bytes(images: int, image_size: int, channels: int) -> int:
    """The first block's output before its pool, (n, S, S, channels) float32: a training forward's largest array
    (a matmul's output, which XLA does not fuse into the pool)."""
    return images * image_size * image_size * channels * FLOAT


def needs(config: Config, shards: int, devices: int = 1, platform: str = "cpu") -> Needs:
    """The bytes one of `devices` devices of `platform` holds at the peak of `config`'s run over `shards` shards."""
    from esmeta.estimators.population import eval_chunk, resolve_eval_mode

    run = scaled(config)
    t, e, s, c = run.task, run.estimator, config.data.image_size, config.model.channels
    maml = config.learner.name == "maml"
    p = parameter_count(c, s, t.train_way) if maml else num_params(c, s)  # MAML: the head's parameters too
    rows = activation_bytes(t.train_way * (t.shot + t.query), s, c)
    if maml and e.name == "backprop":  # second order keeps each inner step's support activations for the outer pass
        rows += config.learner.inner_steps * activation_bytes(t.train_way * t.shot, s, c)
    rows *= t.meta_batch  # a meta-batch's episodes are evaluated together (vmap)
    moments = 2 if e.optimizer == "adam" else 0
    together, population = 1, 0  # candidates evaluated at once; bytes of the population's arrays
    if e.is_es:
        population = 2 * e.pop_per_shard * max(shards // devices, 1) * FLOAT  # candidate indices and fitnesses
        if resolve_eval_mode(e.eval_mode, platform) == "vmap":
            together = eval_chunk(e.chunk_size, e.pop_per_shard)
    return Needs(
        images=sum(split_sizes(config.data.split)) * IMAGES_PER_CLASS * s * s,
        state=(1 + moments + 1) * p * FLOAT,
        step=population + together * (p * FLOAT + rows),
        validation=config.eval.val_episodes * EPISODE,
        test=config.eval.val_episodes * KEY + config.eval.test_episodes * EPISODE,  # the validation keys stay
    )


def host_memory() -> int:
    """This machine's memory for one process: physical memory, or the cgroup's limit where lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            total = min(total, int(Path(limit).read_text().strip()))
        except (OSError, ValueError):  # no such cgroup file, or "max"
            pass
    return total


def device_memory(mesh: jax.sharding.Mesh) -> int:
    """Memory one device of `mesh` can hold: an accelerator's own limit, else its share of the host's."""
    device = mesh.devices.flat[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    if stats and stats.get("bytes_limit"):
        return int(stats["bytes_limit"])
    return host_memory() // mesh.size


def check_memory(config: Config, mesh: jax.sharding.Mesh, shards: int) -> None:
    """Refuse, in one line, a run whose device cannot hold what `needs` counts (before any data is loaded)."""
    device = mesh.devices.flat[0]
    need, have = needs(config, shards, mesh.size, device.platform), device_memory(mesh)
    if need.total > have:
        raise ConfigError(
            f"this run needs at least {need.total / GIB:.1f} GiB on each {device.platform} device and this machine "
            f"has {have / GIB:.1f} GiB there; most of it for {need.largest()}: lower it"
        )


def compiled_bytes(compiled: jax.stages.Compiled) -> int:
    """What XLA says a compiled computation holds at once: its arguments, outputs and temporaries (aliased
    outputs counted once). The reference the formula is checked against."""
    m = compiled.memory_analysis()
    return m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes

