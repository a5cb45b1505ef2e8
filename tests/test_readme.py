"""Every `python -m esmeta.run` command the README and docs/ show composes and validates as written (nothing
runs), so the documentation cannot rot; the cluster examples keep each row's logical hardware preset."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from esmeta.prelaunch import plan_command
from esmeta.run import _split_argv

pytestmark = pytest.mark.codegen_independent

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def readme_commands() -> list[str]:
    """The pages' esmeta.run command lines (in code blocks; continued lines joined, comments dropped)."""
    commands, in_block, pending = [], False, ""
    for line in "\n".join(page.read_text() for page in PAGES).splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = pending + line.split(" #", 1)[0].rstrip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if re.match(r"\s*python -m esmeta\.run\b", line):
            commands.append(line.strip())
    return commands


COMMANDS = sorted(set(readme_commands()))


def test_the_readme_shows_the_main_commands():
    assert len(COMMANDS) >= 15
    assert any("sweep=table2 scale=cpu" in c for c in COMMANDS)  # the reproduction's command
    assert any("hydra/launcher=slurm_gpu" in c for c in COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_each_readme_command_composes_and_validates(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative output directories are checked here, and nothing is written
    args = re.sub(r"--cfg \w+", "", command).split(maxsplit=3)[3:]  # --cfg job, --help: Hydra's own flags
    overrides, multirun, _ = _split_argv(shlex.split(args[0]) if args else [])
    configs, _, _ = plan_command(overrides, multirun)
    assert configs
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [c for c in COMMANDS if "hydra/launcher=slurm" in c])
def test_cluster_examples_keep_the_rows_logical_hardware_presets(command):
    overrides, multirun, _ = _split_argv(shlex.split(command)[3:])
    configs, _, _ = plan_command(overrides, multirun)
    for config in configs:
        assert config.hardware.name.startswith("tpu-") and config.hardware.shards in (8, 256, 512)
        assert config.hardware.platform == "gpu"


def test_the_readme_is_what_a_user_reads_first_and_links_every_page():
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert readme.index("python -m pytest") < readme.index("## Layout")
    for page in PAGES[1:]:
        assert f"](docs/{page.name})" in readme, f"README does not link docs/{page.name}"
    for module in sorted((REPO / "esmeta").glob("*.py")):
        if module.name != "__init__.py":
            assert f" {module.name} " in readme, f"README's layout misses esmeta/{module.name}"
