"""First-order MAML (Finn et al. 2017, Sec. 5.2): backprop through the outer loss with every inner-loop gradient
held constant, so the adapted parameters move with the meta-parameters by the identity and the meta-gradient is
the query loss's gradient at the adapted parameters. No second derivatives are taken and no inner step's
activations are kept for the outer pass: memory stays flat in the number of inner steps.

The learner builds the loss with its inner gradients stopped (`FIRST_ORDER`); the estimate itself is backprop's.
It needs a learner with an inner loop (learner=maml): esmeta.config refuses it with the ProtoNet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from esmeta.estimators.backprop import make_backprop
from esmeta.estimators.base import EstimatorConfig
from esmeta.rules import setting


@dataclass(frozen=True)
class FirstOrderConfig(EstimatorConfig):
    """first_order reads only the update rule: Adam at alpha 1e-3, constant (Finn et al.'s meta-optimizer)."""

    NAME: ClassVar[str] = "first_order"
    TOP_LEVEL: ClassVar[dict[str, float]] = {"alpha": 1e-3}
    FIRST_ORDER: ClassVar[bool] = True

    name: str = setting(NAME, "result")


make_first_order = make_backprop  # jax.grad of the learner's first-order loss
