"""CI's two passes (.ci/run): the AVX2 pass skips only tests marked `codegen_independent`, and no such test checks a
computed number against a tolerance (those are the tests whose outcome can depend on the CPU code XLA generates)."""

from __future__ import annotations

import ast
import re
import shlex
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.codegen_independent

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = re.compile(r"allclose|almost_equal|\brtol\b|\batol\b")  # numpy's and jax's tolerance comparisons


def marked(decorators: list[ast.expr]) -> bool:
    return any("codegen_independent" in ast.unparse(d) for d in decorators)


def codegen_independent_sources() -> dict[str, str]:
    """Each module marked as a whole, and each test marked alone, by name: its source."""
    found = {}
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        if path == Path(__file__).resolve():  # this module names the idioms it looks for
            continue
        source = path.read_text()
        tree = ast.parse(source)
        name = str(path.relative_to(REPO))
        if any(isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "pytestmark" and marked([node.value])
               for node in tree.body):
            found[name] = source
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and marked(node.decorator_list):
                found[f"{name}::{node.name}"] = ast.get_source_segment(source, node)
    return found


def test_the_avx2_pass_skips_only_slow_and_codegen_independent_tests_a_declared_marker():
    lines = (REPO / ".ci" / "run").read_text().replace("\\\n", " ").splitlines()
    [avx2] = [line for line in lines if "--xla_cpu_max_isa=AVX2" in line and not line.lstrip().startswith("#")]
    args = shlex.split(avx2.split("python -m pytest", 1)[1])
    assert args[args.index("-m") + 1] == "not slow and not codegen_independent"
    markers = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    assert any(m.startswith("codegen_independent: ") for m in markers)


def test_no_codegen_independent_test_compares_numbers_with_a_tolerance():
    sources = codegen_independent_sources()
    assert "tests/test_resume.py" in sources and "tests/test_run.py::test_two_job_multirun" in sources
    offenders = {name: TOLERANCE.findall(source) for name, source in sources.items() if TOLERANCE.search(source)}
    assert not offenders, f"marked codegen_independent but compares with a tolerance (the AVX2 pass must run it): {offenders}"
