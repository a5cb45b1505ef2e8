"""The public constructors: their validation, their sameness with make_estimator, and the documented example."""

from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import esmeta.estimators as es
from esmeta.config import from_mapping
from esmeta.errors import ConfigError
from esmeta.estimators import BackpropConfig, FiniteDiffConfig, ForwardModeConfig, WsrConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "estimators.md"  # "Use the estimators on your own model"
MU = {"w": jnp.linspace(-1.0, 1.0, 12).reshape(3, 4), "b": jnp.array([0.5, -0.25, 2.0])}


def quadratic_loss(params, batch):
    """Squared distance of every parameter to `batch`."""
    return sum(jnp.sum((p - batch) ** 2) for p in jax.tree.leaves(params))


def flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def readme_snippet(name: str) -> str:
    """The python block between the estimators page's `<!-- snippet: name -->` markers."""
    text = DOC.read_text()
    found = re.search(rf"<!-- snippet: {name} -->\n```python\n(.*?)```\n<!-- /snippet: {name} -->", text, re.S)
    assert found, f"docs/estimators.md has no python block between the {name} markers"
    return found.group(1)


def test_readme_example_trains_a_flax_mlp():
    namespace: dict = {"__name__": "readme_example"}
    exec(compile(readme_snippet("estimators-example"), "docs/estimators.md:estimators-example", "exec"), namespace)
    first, last = namespace["first"], namespace["last"]
    assert np.isfinite(last) and last < 0.1 * first, f"loss {first:.4f} -> {last:.4f}: WSR did not fit the MLP"
    assert int(namespace["metrics"]["candidates"]) == 64


def test_exported():
    for name in ("wsr", "finite_diff", "forward_mode", "backprop", "make_estimator"):
        assert name in es.__all__ and callable(getattr(es, name)) and not isinstance(getattr(es, name), type(es))


SAME = {  # constructor call -> the make_estimator call it must equal
    "wsr": (
        lambda loss: es.wsr(loss, sigma=0.1, population=8, shards=2, antithetic=True, fitness_shaping="centered_rank"),
        lambda loss: es.make_estimator(
            WsrConfig(pop_per_shard=4, antithetic=True, fitness_shaping="centered_rank"), 0.1, loss, None, 2
        ),
    ),
    "wsr_global_low_rank": (
        lambda loss: es.wsr(loss, sigma=0.05, population=6, shards=3, normalize="global", rank=1),
        lambda loss: es.make_estimator(
            WsrConfig(pop_per_shard=2, normalize="global", rank=1), 0.05, loss, None, 3
        ),
    ),
    "finite_diff": (
        lambda loss: es.finite_diff(loss, coordinates=6, shards=2, sigma=1e-2, central=True),
        lambda loss: es.make_estimator(
            FiniteDiffConfig(pop_per_shard=3, fd_sigma=1e-2, central=True), 0.0, loss, None, 2
        ),
    ),
    "forward_mode": (
        lambda loss: es.forward_mode(loss, chunk_size=4),
        lambda loss: es.make_estimator(ForwardModeConfig(chunk_size=4), 0.0, loss, None, 1),
    ),
    "backprop": (
        lambda loss: es.backprop(loss),
        lambda loss: es.make_estimator(BackpropConfig(), 0.0, loss, None, 1),
    ),
}


@pytest.mark.parametrize("case", SAME)
def test_constructor_is_make_estimator(case):
    public, factory = SAME[case]
    key = jax.random.key(3)
    g, metrics = jax.jit(public(quadratic_loss))(key, MU, 0.3)
    g_ref, metrics_ref = jax.jit(factory(quadratic_loss))(key, MU, 0.3)
    # exact by construction: one implementation traced to the same program, the same key
    np.testing.assert_array_equal(flat(g), flat(g_ref))
    assert set(metrics) == set(metrics_ref)
    for name in metrics:
        np.testing.assert_array_equal(np.asarray(metrics[name]), np.asarray(metrics_ref[name]), err_msg=name)
    assert np.linalg.norm(flat(g)) > 0  # a real update, not the zero a bad setting would give


def test_wsr_ascends_the_fitness():
    """g points towards lower loss: from MU, the quadratic's minimum at 0.3 is along 0.3 - MU."""
    g, _ = jax.jit(es.wsr(quadratic_loss, sigma=0.01, population=256))(jax.random.key(0), MU, 0.3)
    descent = flat(jax.tree.map(lambda p: 0.3 - p, MU))
    assert flat(g) @ descent / np.linalg.norm(flat(g)) / np.linalg.norm(descent) > 0.5


BAD = [  # (constructor, kwargs, what the one-line message must say)
    (es.wsr, {"sigma": 0.0, "population": 8}, "sigma=0 must be positive"),
    (es.wsr, {"sigma": -0.1, "population": 8}, "sigma=-0.1 must be positive"),
    (es.wsr, {"sigma": float("nan"), "population": 8}, "sigma=nan must be a finite number"),
    (es.wsr, {"sigma": "0.1", "population": 8}, "sigma='0.1' must be a number"),
    (es.wsr, {"sigma": 0.1, "population": 1}, "population=1 must be at least 2"),
    (es.wsr, {"sigma": 0.1, "population": 1, "normalize": "global"}, "population=1 must be at least 2"),
    (es.wsr, {"sigma": 0.1, "population": 0}, "population=0 must be a positive integer"),
    (es.wsr, {"sigma": 0.1, "population": 8.0}, "population=8.0 must be a positive integer"),
    (es.wsr, {"sigma": 0.1, "population": 10, "shards": 4}, "population=10 must be a multiple of shards=4"),
    (es.wsr, {"sigma": 0.1, "population": 8, "shards": 8}, "population / shards (8 / 8)=1 must be at least 2"),
    (es.wsr, {"sigma": 0.1, "population": 8, "shards": 0}, "shards=0 must be a positive integer"),
    (es.wsr, {"sigma": 0.1, "population": 7, "antithetic": True}, "needs an even population"),
    (es.wsr, {"sigma": 0.1, "population": 8, "fitness_shaping": "rank"}, "fitness_shaping='rank' is not an option"),
    (es.wsr, {"sigma": 0.1, "population": 8, "normalize": "none"}, "normalize='none' is not an option"),
    (es.wsr, {"sigma": 0.1, "population": 8, "rank": -1}, "rank=-1 must be at least 0"),
    (es.wsr, {"sigma": 0.1, "population": 8, "eval_mode": "pmap"}, "eval_mode='pmap' is not an option"),
    (es.wsr, {"sigma": 0.1, "population": 8, "chunk_size": -1}, "chunk_size=-1 must be at least 0"),
    (es.wsr, {"sigma": 0.1, "population": 8, "antithetic": 1}, "antithetic=1 must be true or false"),
    (es.wsr, {"sigma": 0.1, "population": 8, "mesh": "gpu"}, "mesh='gpu' must be a jax.sharding.Mesh"),
    (es.finite_diff, {"population": 8, "sigma": 0.0}, "sigma=0 must be positive"),
    (es.finite_diff, {"population": 9, "shards": 2}, "population=9 must be a multiple of shards=2"),
    (es.finite_diff, {"coordinates": 9, "shards": 2}, "coordinates=9 must be a multiple of shards=2"),
    (es.finite_diff, {"coordinates": 0}, "coordinates=0 must be a positive integer"),
    (es.finite_diff, {}, "finite_diff takes coordinates=N, the coordinates probed a step"),
    (es.finite_diff, {"coordinates": 4, "population": 4}, "finite_diff takes coordinates=N"),
    (es.finite_diff, {"population": 4, "central": "yes"}, "central='yes' must be true or false"),
    (es.forward_mode, {"chunk_size": -2}, "chunk_size=-2 must be at least 0"),
    (es.forward_mode, {"chunk_size": 2.5}, "chunk_size=2.5 must be an integer"),
]


@pytest.mark.parametrize("constructor,kwargs,message", BAD, ids=[f"{c.__name__}:{m}" for c, _, m in BAD])
def test_constructor_validates_its_arguments(constructor, kwargs, message):
    with pytest.raises(ConfigError) as info:
        constructor(quadratic_loss, **kwargs)
    text = str(info.value)
    assert message in text and "\n" not in text
    assert "estimator." not in text and "hardware." not in text  # the constructor's argument names, not the config's


@pytest.mark.parametrize("constructor", [es.wsr, es.finite_diff, es.forward_mode, es.backprop])
def test_constructor_needs_a_function(constructor):
    kwargs = {"wsr": {"sigma": 0.1, "population": 8}, "finite_diff": {"population": 8}}.get(constructor.__name__, {})
    with pytest.raises(ConfigError, match=r"^loss_fn=None must be a function"):
        constructor(None, **kwargs)


def test_make_estimator_validates_its_config():
    """A wsr population of 1 used to return a zero update silently."""
    with pytest.raises(ConfigError, match=r"^estimator\.pop_per_shard=1 must be at least 2"):
        es.make_estimator(WsrConfig(pop_per_shard=1), 0.01, quadratic_loss, None, 1)
    with pytest.raises(ConfigError, match=r"^estimator\.pop_per_shard x hardware\.shards=1 must be at least 2"):
        es.make_estimator(WsrConfig(pop_per_shard=1, normalize="global"), 0.01, quadratic_loss, None, 1)
    with pytest.raises(ConfigError, match=r"^estimator\.pop_per_shard='4' must be an integer"):
        es.make_estimator(WsrConfig(pop_per_shard="4"), 0.01, quadratic_loss, None, 1)
    with pytest.raises(ConfigError, match=r"^sigma=0 must be positive"):
        es.make_estimator(WsrConfig(pop_per_shard=4), 0.0, quadratic_loss, None, 1)
    with pytest.raises(ConfigError, match=r"^estimator\.name='es' is not an option"):
        es.make_estimator(es.EstimatorConfig(name="es"), 0.01, quadratic_loss, None, 1)
    # two shards of one candidate, z-scored together: a real update
    estimate = es.make_estimator(WsrConfig(pop_per_shard=1, normalize="global"), 0.01, quadratic_loss, None, 2)
    g, metrics = jax.jit(estimate)(jax.random.key(0), MU, 0.3)
    assert float(metrics["zero_update"]) == 0.0 and np.linalg.norm(flat(g)) > 0


def test_one_rule_for_config_and_constructor():
    """The run's config validation and the constructor refuse the same population of 1 with the same rule."""
    raw = {"estimator": {"name": "wsr", "pop_per_shard": 1, "normalize": "global"}, "hardware": {"shards": 1}}
    with pytest.raises(ConfigError) as config_error:
        from_mapping(raw)
    with pytest.raises(ConfigError) as constructor_error:
        es.wsr(quadratic_loss, sigma=0.01, population=1, normalize="global")
    rule = "must be at least 2 for wsr (a lone candidate's shaped fitness is 0: a zero update)"
    assert rule in str(config_error.value) and rule in str(constructor_error.value)
    from_mapping(raw | {"hardware": {"shards": 2}})  # two shards of one candidate, z-scored globally: valid


CONSTRUCTORS = {
    "wsr": lambda loss: es.wsr(loss, sigma=0.1, population=8, shards=2),
    "finite_diff": lambda loss: es.finite_diff(loss, coordinates=6),
    "forward_mode": lambda loss: es.forward_mode(loss),
    "backprop": lambda loss: es.backprop(loss),
}


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_a_loss_that_is_not_a_scalar_is_refused_in_one_line_at_the_first_call(name, jit):
    """Not wsr's "cannot reshape array of shape (8, 3)" nor finite_diff's "incompatible shapes for broadcasting"."""
    def vector_loss(params, batch):
        return jnp.ones((8, 3)) * quadratic_loss(params, batch)

    estimate = CONSTRUCTORS[name](vector_loss)
    with pytest.raises(ConfigError) as info:
        (jax.jit(estimate) if jit else estimate)(jax.random.key(0), MU, 0.3)
    text = str(info.value)
    assert text.startswith(f"{name}: loss_fn(params, batch) returns shape (8, 3) float32, not a float scalar")
    assert "jnp.mean" in text and "\n" not in text


@pytest.mark.parametrize("name", CONSTRUCTORS)
def test_an_integer_parameter_leaf_is_refused_not_given_a_zero_gradient(name):
    params = {**MU, "steps": jnp.int32(3)}
    with pytest.raises(ConfigError, match=re.escape(f"{name}: params['steps'] is int32; the estimators perturb")):
        CONSTRUCTORS[name](quadratic_loss)(jax.random.key(0), params, 0.3)


def test_the_loss_and_parameters_are_checked_once_at_the_first_call(monkeypatch):
    calls = []
    monkeypatch.setattr(es, "check_loss_and_params", lambda *args: calls.append(args[-1]))
    estimate = es.wsr(quadratic_loss, sigma=0.1, population=4)
    for i in range(3):
        estimate(jax.random.key(i), MU, 0.3)
    assert calls == ["wsr"]


def test_finite_diff_counts_coordinates_probed_and_population_is_that_count_by_its_old_name():
    """coordinates=6 probes 6 coordinates: 7 candidates a step (mu too); population=6 is the same estimator."""
    key = jax.random.key(4)
    g, metrics = es.finite_diff(quadratic_loss, coordinates=6)(key, MU, 0.3)
    g_old, metrics_old = es.finite_diff(quadratic_loss, population=6)(key, MU, 0.3)
    assert int(metrics["candidates"]) == 7 == int(metrics_old["candidates"])
    assert int(np.count_nonzero(flat(g))) == 6
    np.testing.assert_array_equal(flat(g), flat(g_old))
