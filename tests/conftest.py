"""Shared fixtures: the Omniglot zips (from $ESMETA_DATA_DIR), a private cache dir, a 32px dataset."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from esmeta.data.omniglot import ZIP_NAMES, Omniglot, load_omniglot


def _session_env_dir(name: str, factory: pytest.TempPathFactory, shared: bool = False) -> Iterator[Path]:
    """Yield $name, or set it to a fresh temp dir for the session (restored afterwards): this worker's, or with
    `shared` one for all the session's workers."""
    preset = os.environ.get(name)
    if preset:
        yield Path(preset)
        return
    if shared:
        path = _session_root(factory) / name.lower()
        path.mkdir(exist_ok=True)
    else:
        path = factory.mktemp(name.lower())
    os.environ[name] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(name, None)


@pytest.fixture(scope="session", autouse=True)
def esmeta_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point ESMETA_CACHE_DIR at a session temp dir (unless the caller set it) so tests never write the user's cache."""
    yield from _session_env_dir("ESMETA_CACHE_DIR", tmp_path_factory, shared=True)  # its writes are atomic


@pytest.fixture(scope="session", autouse=True)
def jax_compilation_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """JAX's persistent compilation cache in a session temp dir (unless the caller set one), shared by the
    suite's subprocesses, never the user's."""
    yield from _session_env_dir("JAX_COMPILATION_CACHE_DIR", tmp_path_factory)


@pytest.fixture(scope="session", autouse=True)
def wandb_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """W&B's config, cache and artifact folders in a session temp dir: tests never touch the user's home."""
    path = tmp_path_factory.mktemp("wandb_home")
    names = ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")
    saved = {name: os.environ.get(name) for name in names}
    for name in names:
        os.environ[name] = str(path / name.lower())
    try:
        yield path
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _session_root(factory: pytest.TempPathFactory) -> Path:
    """The session's temp folder, shared by all its workers under pytest-xdist (`-n 2`)."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@contextlib.contextmanager
def _session_lock(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """Hold the session-wide lock `name` (one worker at a time makes what the others then reuse)."""
    root = _session_root(factory)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield root
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def table2_smoke_sweep(tmp_path_factory: pytest.TempPathFactory, omniglot32: Omniglot) -> Path:
    """`python -m esmeta.run sweep=table2 scale=smoke` (the real CLI, offline W&B), run once per session (by the
    first worker that needs it; the others wait for it and read it)."""
    with _session_lock(tmp_path_factory, "table2_smoke") as root:
        sweep_dir, done = root / "sweeps" / "table2_smoke", root / "sweeps" / "table2_smoke.done"
        if done.exists():
            return sweep_dir
        sweep_dir.parent.mkdir(exist_ok=True)
        env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
        proc = subprocess.run(
            [sys.executable, "-m", "esmeta.run", "sweep=table2", "scale=smoke", f"hydra.sweep.dir={sweep_dir}"],
            cwd=sweep_dir.parent, env=env, capture_output=True, text=True, timeout=1200,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        done.touch()
        return sweep_dir


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """Folder with the official Omniglot zips, from $ESMETA_DATA_DIR; skip (or fail if ESMETA_REQUIRE_DATA=1) without it."""
    env = os.environ.get("ESMETA_DATA_DIR")
    root = Path(env) if env else None
    if root is None or not all((root / name).is_file() for name in ZIP_NAMES):
        problem = (
            "ESMETA_DATA_DIR is not set" if root is None else f"ESMETA_DATA_DIR={root} lacks {' or '.join(ZIP_NAMES)}"
        )
        message = f"{problem}; set ESMETA_DATA_DIR to a folder holding the official Omniglot zips to run the data tests"
        if os.environ.get("ESMETA_REQUIRE_DATA") == "1":
            pytest.fail(message + " (ESMETA_REQUIRE_DATA=1)")
        pytest.skip(message)
    return root


@pytest.fixture(scope="session")
def omniglot32(omniglot_root: Path, esmeta_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Omniglot:
    """All 6492 classes at 32x32 with the antialias filter, preprocessed once per session (one worker preprocesses,
    the others read its cache)."""
    with _session_lock(tmp_path_factory, "omniglot32"):
        return load_omniglot(omniglot_root, image_size=32, resize_filter="antialias", download=False)
