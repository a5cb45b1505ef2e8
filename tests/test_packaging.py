"""The install: console scripts, `analysis/` shipped as `esmeta.analysis` (no top-level `analysis` in
site-packages), the checkout's `python analysis/make_*.py` commands, and declared dependencies."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions, requires
from pathlib import Path

import pytest

pytestmark = pytest.mark.codegen_independent

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the environment's scripts folder, where pip puts console scripts
SCRIPTS = ("esmeta-run", "esmeta-tables", "esmeta-figures", "esmeta-compare")


def clean_env() -> dict[str, str]:
    """The environment without PYTHONPATH: only what the install provides is importable (and the cwd)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script, says", [
    ("esmeta-tables", ["Rebuild Tables I-VII", "--results"]),
    ("esmeta-figures", ["Rebuild Figures 1-5", "--results"]),
    ("esmeta-compare", ["Compare any esmeta runs", "--results"]),
    ("esmeta-run", ["estimator:", "quickstart"]),  # Hydra's help with esmeta's template: groups and options
])
def test_console_scripts_are_installed_and_answer_help(script, says, tmp_path):
    path = BIN / script
    assert path.is_file(), f"{script} is not installed next to {sys.executable} (pip install -e .)"
    proc = run(str(path), "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for text in says:
        assert text in proc.stdout, proc.stdout[-2000:]
    assert not list(tmp_path.iterdir())  # --help writes nothing


def test_the_install_provides_esmeta_analysis_and_no_top_level_analysis(tmp_path):
    """Outside the checkout (cwd elsewhere) `analysis` is not importable; `esmeta.analysis` is, with its CSVs."""
    code = (
        "import importlib.util as u, pathlib\n"
        "print(u.find_spec('analysis'))\n"
        "import esmeta.analysis.paper as p, esmeta.analysis.make_tables as t\n"
        "print(p.PAPER_DIR.is_dir() and len(list(p.PAPER_DIR.glob('table*.csv'))))\n"
        "print(t.__name__, __import__('sys').modules.get('analysis'))\n"
    )
    proc = run(sys.executable, "-c", code, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == ["None", "7", "esmeta.analysis.make_tables None"]


@pytest.mark.parametrize("script", ["make_tables", "make_figures", "compare"])
def test_checkout_scripts_still_run_from_the_repository_root(script):
    proc = run(sys.executable, f"analysis/{script}.py", "--help", cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"usage: {script}" in proc.stdout


def test_the_wheel_has_one_top_level_package_and_the_entry_points(tmp_path):
    """What a regular (non-editable) install would put in site-packages: esmeta only."""
    proc = run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = tmp_path.glob("esmeta-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"esmeta", "esmeta-0.1.0.dist-info"}
    assert "esmeta/analysis/make_tables.py" in names and "esmeta/analysis/paper_tables/table2_alpha_sigma.csv" in names
    assert "esmeta/conf/config.yaml" in names
    entry_points = zipfile.ZipFile(wheel).read("esmeta-0.1.0.dist-info/entry_points.txt").decode()
    for line in ("esmeta-run = esmeta.run:main", "esmeta-tables = esmeta.analysis.make_tables:main",
                 "esmeta-figures = esmeta.analysis.make_figures:main", "esmeta-compare = esmeta.analysis.compare:main"):
        assert line in entry_points


def _imported_distributions() -> dict[str, set[str]]:
    """Distribution -> files, for every third-party module that esmeta/ and analysis/ import by name."""
    owners = packages_distributions()
    found: dict[str, set[str]] = {}
    for f in [*(REPO / "esmeta").rglob("*.py"), *(REPO / "analysis").glob("*.py")]:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                modules = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"esmeta", "analysis"}:
                assert top in owners, f"{f.relative_to(REPO)} imports {top}, which no installed distribution provides"
                for dist in owners[top]:
                    found.setdefault(dist, set()).add(str(f.relative_to(REPO)))
    return found


def test_every_directly_imported_distribution_is_declared():
    normalize = lambda name: re.sub(r"[-_.]+", "-", name).lower()  # noqa: E731
    declared = {normalize(re.split(r"[<>=!~; \[]", r, maxsplit=1)[0]) for r in requires("esmeta") or []
                if "extra ==" not in r}
    imported = _imported_distributions()
    assert {"pyyaml", "omegaconf"} <= {normalize(d) for d in imported}  # the two this check was written for
    missing = {d: sorted(files)[:2] for d, files in imported.items() if normalize(d) not in declared}
    assert not missing, f"imported but not in pyproject.toml's dependencies: {missing}"
