"""Exact gradient by forward-mode differentiation: the third method of Sheng & He 2021, Sec. II.E.

g = grad F (F = -loss), the same direction as `backprop`, computed forwards: for a block of T basis
tangents e_j of the flattened parameters phi, `jax.jvp` pushes them through the loss beside one primal
evaluation and returns the T directional derivatives dF/dphi_j = g_j. `lax.map(..., batch_size=T)`
runs the ceil(D_phi / T) blocks one after another, so what is held at once is T tangent copies of the
forward pass's working set (activations and the model state, the prototypes) plus T x D_phi tangent
inputs, never the whole D_psi x D_phi Jacobian. The paper's Omega_FM = D_psi x D_phi is the T = D_phi
end of this trade; every block costs one more primal pass over the task (forward mode's time is that of
D_phi forward passes, the "prohibitive computational complexity" the paper cites). No reverse pass is
taken, so with a streamed loss (`esmeta.streaming`) memory does not grow with the task.

T is `estimator.chunk_size`, or TANGENTS when 0. Tangents are batched with `vmap`: a batch of kernel
tangents against unbatched activations (and the reverse) lowers to ordinary convolutions, not the
grouped convolutions of per-candidate weights that make a vmapped ES population slow on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from esmeta import rules
from esmeta.estimators.base import (
    Batch,
    EstimateFn,
    EstimatorConfig,
    LossFn,
    Params,
    command_line_name,
    exact_gradient_result,
    fitness_from_loss,
)
from esmeta.rules import Namer, setting

TANGENTS = 32  # basis tangents pushed forward together when estimator.chunk_size is 0


@dataclass(frozen=True)
class ForwardModeConfig(EstimatorConfig):
    """forward_mode's settings: basis tangents pushed forward together; backprop's update rule (the same gradient):
    Adam at alpha 1e-3, halved every 2000 episodes (Snell et al. 2017)."""

    NAME: ClassVar[str] = "forward_mode"
    TOP_LEVEL: ClassVar[dict[str, float]] = {"alpha": 1e-3}

    name: str = setting(NAME, "result")
    lr_decay_every: int = setting(2000, "result")
    chunk_size: int = setting(0, "placement")  # 0 = TANGENTS

    def validate(self, sigma: float, shards: int, name: Namer = command_line_name) -> None:
        super().validate(sigma, shards, name)
        rules.positive(name("chunk_size"), self.chunk_size, allow_zero=True)
        rules.int32(name("chunk_size"), self.chunk_size)


def directional_derivatives(
    fitness_of_flat, flat: jax.Array, coords: jax.Array, tangents: int
) -> tuple[jax.Array, jax.Array]:
    """(F(flat), dF/dflat[coords]): one jvp per basis tangent, `tangents` of them at a time."""

    def along(j: jax.Array) -> tuple[jax.Array, jax.Array]:
        return jax.jvp(fitness_of_flat, (flat,), (jnp.zeros_like(flat).at[j].set(1.0),))

    value_n, slope_n = jax.lax.map(along, coords, batch_size=min(tangents, coords.shape[0]))
    return value_n[0], slope_n


def make_forward_mode(
    config: ForwardModeConfig, sigma: float, loss_fn: LossFn, mesh: Mesh | None, shards: int
) -> EstimateFn:
    """The exact gradient, D_phi jvps in blocks of `chunk_size` (or TANGENTS); sigma, the mesh and shards are unused."""
    del sigma, mesh, shards
    tangents = config.chunk_size or TANGENTS

    def estimate(key: jax.Array, params: Params, batch: Batch) -> tuple[Params, dict[str, jax.Array]]:
        del key  # deterministic
        flat, unravel = ravel_pytree(params)
        fitness_of_flat = lambda f: fitness_from_loss(loss_fn(unravel(f), batch))  # noqa: E731
        fitness, g_flat = directional_derivatives(fitness_of_flat, flat, jnp.arange(flat.shape[0]), tangents)
        return exact_gradient_result(fitness, unravel(g_flat))

    return estimate
