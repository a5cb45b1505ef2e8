"""What produced a result: the versions, the command, this checkout's commit and the machine."""

import subprocess
from pathlib import Path

import jax

from esmeta.provenance import available_cores, cpu_name, provenance, versions

PACKAGE = Path(__file__).resolve().parents[1] / "esmeta"


def test_versions_name_the_libraries_that_ran():
    v = versions()
    assert v["jax"] == jax.__version__ and {"esmeta", "flax", "optax", "numpy", "python"} <= set(v)


def test_provenance_names_this_checkouts_commit_and_the_machine():
    head = subprocess.run(["git", "-C", str(PACKAGE), "rev-parse", "HEAD"], capture_output=True, text=True)
    p = provenance()
    assert p["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert isinstance(p["dirty"], bool) or p["commit"] is None
    assert p["command"].split()[1:3] == ["-m", "esmeta.run"]
    assert p["machine"]["processor"] == cpu_name() != "" and p["machine"]["cores"] == available_cores() >= 1
