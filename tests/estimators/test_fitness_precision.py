"""estimator.fitness_precision reaches the compiled step: every conv and matmul of a fitness runs at HIGHEST.

On CPU both settings compute the same float32 numbers; on GPUs (TF32) and TPUs (bf16 passes) `default`
is faster and coarser. What a test can hold on any machine is the precision XLA is asked for.
"""

from __future__ import annotations

import re

import jax
import pytest

from esmeta.estimators import ESTIMATORS, make_estimator


def compiled_precisions(name: str, precision: str, tiny_protonet) -> tuple[list[str], list[str]]:
    """(precision of every convolution, precision of every dot) in the compiled HLO of one estimate."""
    loss, params, episode = tiny_protonet
    config = ESTIMATORS[name][0](pop_per_shard=4, fitness_precision=precision)
    step = jax.jit(make_estimator(config, 0.01, loss, None, 2))
    hlo = step.lower(jax.random.key(0), params, episode).compile().as_text()
    convs = [re.search(r"operand_precision=\{(\w+),", line) for line in hlo.splitlines() if " convolution(" in line]
    dots = [re.search(r"operand_precision=\{(\w+),", line) for line in hlo.splitlines() if " dot(" in line]
    as_text = lambda found: [m.group(1) if m else "default" for m in found]  # noqa: E731
    return as_text(convs), as_text(dots)


@pytest.mark.parametrize("name", ["wsr", "finite_diff"])
def test_fitnesses_run_at_highest_precision_by_default_and_at_the_backends_on_request(name, tiny_protonet):
    assert ESTIMATORS[name][0]().fitness_precision == "highest"
    convs, dots = compiled_precisions(name, "highest", tiny_protonet)
    # The candidates' 3 convolutions (blocks 1-3; block 0 is a patch matmul) all at HIGHEST.
    assert convs and set(convs) == {"highest"}
    assert "highest" in dots  # the first block's patch matmul, the distances
    convs, dots = compiled_precisions(name, "default", tiny_protonet)
    assert convs and "highest" not in convs and "highest" not in dots
