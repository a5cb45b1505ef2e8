"""A run's output directory: the only interface between training runs and analysis.

Layout (one directory per Hydra job):
  metrics.jsonl    one JSON object per logged point (episode, train/..., val/..., wall_time_s)
  summary.json     status, test accuracy (mean, std, 95% CI), config, versions, and what the analysis reads
                   (esmeta.record: point, sigma, test protocol, budget, differences); written atomically
  params.msgpack   the trained embedding parameters (flax.serialization)
  batch_stats.msgpack  the batch-norm running averages, {"EpisodeBatchNorm_<b>": {"mean", "var"}} (idem)
  checkpoint.msgpack  while the run is unfinished: what a resumed run continues from (esmeta.checkpoint)
  done             written last: a directory without it is incomplete, whatever else it holds
"""

from __future__ import annotations

import errno
import fcntl
import json
import math
import os
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from esmeta.errors import ConfigError, DataError

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
PARAMS = "params.msgpack"
BATCH_STATS = "batch_stats.msgpack"
DONE = "done"
CHECKPOINT = "checkpoint.msgpack"  # see esmeta.checkpoint; removed when the run is done
LOCK = ".esmeta.lock"  # held (an OS lock) by the one process writing the directory; says which
TMP_SUFFIX = ".tmp"  # atomic writes go through `.<name>.<random>.tmp` beside their target
RESUME_HINT = "free space (or fix the permissions) and rerun the same command: it resumes from the last checkpoint"


def _jsonable(value: Any) -> Any:
    """Plain JSON values; non-finite floats become null (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / jax scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def file_mode() -> int:
    """The mode a plainly created file gets (0o666 less the umask): what temporary files must be given
    before their rename, since mkstemp makes them 0600 and a shared results folder must stay readable."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _locked_temporary(path: Path) -> tuple[int, str]:
    """A new temporary file beside `path`, open and locked by this process until its rename (so that
    `remove_stale_temporaries` leaves it alone); one a cleaner removed before the lock was taken is replaced."""
    while True:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError:  # a filesystem without locks: written unlocked, and no cleaner can lock it either
            return fd, tmp
        if os.fstat(fd).st_nlink:
            return fd, tmp
        os.close(fd)


@contextmanager
def atomic_writer(path: Path, hint: str = RESUME_HINT) -> Iterator[IO[bytes]]:
    """A file to write `path` through: a temporary file in the same directory, renamed over `path` when the
    block ends, so readers never see half a file. A failed write (a full disk, a directory in the way)
    leaves `path` as it was and raises a one-line DataError naming it, with `hint`."""
    tmp = None
    try:
        fd, tmp = _locked_temporary(path)
        with os.fdopen(fd, "wb") as f:  # closing releases the lock: only after the rename
            yield f
            f.flush()
            os.fsync(f.fileno())
            os.chmod(tmp, file_mode())
            os.replace(tmp, path)
    except OSError as e:
        raise DataError(f"cannot write {path} ({e.strerror or e}); {hint}") from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (see `atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)


def remove_stale_temporaries(directory: Path, prefix: str = "") -> None:
    """Delete the temporary files of atomic writes (of targets named `prefix*`) in `directory` whose writer is gone:
    a live writer holds an OS lock on its file until the rename, the kernel drops a killed one's."""
    for tmp in directory.glob(f".{prefix}*{TMP_SUFFIX}"):
        try:
            fd = os.open(tmp, os.O_RDWR)
        except OSError:  # gone meanwhile, a directory, or not ours to open: never fatal
            continue
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            tmp.unlink()
        except OSError:  # a live writer holds it
            pass
        finally:
            os.close(fd)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(_jsonable(obj), indent=2, sort_keys=True) + "\n").encode())


def ensure_writable_dir(path: Path, key: str = "hydra.run.dir", create: bool = True) -> None:
    """Create `path` (and parents), or with `create=False` only check that it could be created and written;
    raise a one-line ConfigError saying which setting to change."""
    try:
        if create:
            path.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe.", delete=True)
            probe.close()
            return
        existing = next(p for p in (path, *path.parents) if p.exists())
        if not existing.is_dir():
            raise OSError(errno.ENOTDIR, "Not a directory")
        check_name_lengths(path, existing, key)
        # a probe file, removed at once: os.access says yes to root even on read-only or pseudo filesystems (/proc)
        tempfile.NamedTemporaryFile(dir=existing, prefix=".write-probe.", delete=True).close()
    except OSError as e:
        raise ConfigError(
            f"output directory {path} is not writable ({e.strerror or e}); set {key}=<a writable directory>"
        ) from None


def check_no_directory_in_the_way(path: Path, key: str = "hydra.run.dir") -> None:
    """A one-line ConfigError when a directory stands where a run writes `done`, its summary, metrics or checkpoint
    (all removed or replaced when it starts): found before anything is written."""
    for name in (DONE, SUMMARY, METRICS, CHECKPOINT):
        if (path / name).is_dir():
            raise ConfigError(f"{path / name} is a directory where esmeta writes its {name} file; remove it, "
                              f"or set {key}=<another directory>")


def check_name_lengths(path: Path, existing: Path, key: str) -> None:
    """Every name in `path` fits the filesystem of `existing` (its nearest existing folder): a ConfigError
    naming the setting otherwise, where mkdir would fail later with "File name too long"."""
    limit = os.pathconf(existing, "PC_NAME_MAX")
    for name in path.parts:
        if len(os.fsencode(name)) > limit:
            raise ConfigError(
                f"output directory name {name[:40]}... is {len(os.fsencode(name))} bytes, over the {limit} this "
                f"filesystem allows; set {key}=<a shorter name>"
            )


class DirLock:
    """An exclusive OS lock on a directory (its `.esmeta.lock` file) for one writer at a time.

    A POSIX record lock (fcntl.lockf): the kernel releases it when the holding process ends, however it
    ends (SIGKILL included), so a killed run never leaves a directory locked; and a process may take it
    again while it holds it (the command line locks before Hydra writes, training locks again).
    """

    def __init__(self, directory: Path, key: str = "hydra.run.dir"):
        self.directory = Path(directory)
        self.key = key
        self.fd: int | None = None

    def acquire(self) -> DirLock:
        """Take the lock (creating the directory) or raise a one-line ConfigError naming the holder."""
        ensure_writable_dir(self.directory, self.key)
        fd = os.open(self.directory / LOCK, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"{self.directory} is in use by another run ({holder}); wait for it to finish, "
                f"or set {self.key}=<another directory>"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Let go (closing the file releases this process's lock on it)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class RunDir:
    """Writes one run's results; `done` is written last so partial runs are recognisable.

    `enabled=False` (every process but process 0 of a multi-process run) writes nothing.
    """

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def start(self, keep_checkpoint: bool = False, record: Iterable[tuple[str, str]] = ()) -> None:
        """Prepare the directory: an old `done` marker, summary or metrics must not survive into this run;
        a checkpoint survives only when the run resumes from it. Then write `record`'s (path, text) files
        (the job's .hydra/ configuration)."""
        if not self.enabled:
            return
        ensure_writable_dir(self.path)
        for directory in {self.path, *((self.path / relative).parent for relative, _ in record)}:  # .hydra/ too
            remove_stale_temporaries(directory)
        for name in (DONE, SUMMARY, METRICS) + (() if keep_checkpoint else (CHECKPOINT,)):
            try:
                (self.path / name).unlink(missing_ok=True)
            except OSError as e:  # a directory in the way (checked before), or no permission
                raise DataError(f"cannot remove {self.path / name} ({e.strerror or e}); remove it, "
                                "or set hydra.run.dir=<another directory>") from None
        for relative, text in record:
            (self.path / relative).parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path / relative, text.encode())

    def lock(self) -> DirLock | None:
        """Take this directory's lock (None where this process writes nothing); see DirLock."""
        return DirLock(self.path).acquire() if self.enabled else None

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.enabled:
            try:
                with open(self.path / METRICS, "a") as f:
                    f.write(json.dumps(_jsonable(record), sort_keys=True) + "\n")
            except OSError as e:
                raise DataError(f"cannot write {self.path / METRICS} ({e.strerror or e}); {RESUME_HINT}") from None

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl by `records` (a resumed run's epochs up to its checkpoint), atomically."""
        if self.enabled:
            text = "".join(json.dumps(_jsonable(r), sort_keys=True) + "\n" for r in records)
            atomic_write_bytes(self.path / METRICS, text.encode())

    def write_params(self, params: bytes, batch_stats: bytes) -> None:
        """The trained state: parameters and batch-norm running averages (serialized), side by side."""
        if self.enabled:
            atomic_write_bytes(self.path / PARAMS, params)
            atomic_write_bytes(self.path / BATCH_STATS, batch_stats)

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the summary, stamped with `finished_at` (UTC, ISO 8601), then the `done` marker; return it."""
        summary = {**summary, "finished_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if self.enabled:
            atomic_write_json(self.path / SUMMARY, summary)
            atomic_write_bytes(self.path / DONE, b"")
        return summary

    @property
    def done(self) -> bool:
        return (self.path / DONE).exists()


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def read_finished_summary(path: Path) -> dict[str, Any]:
    """A finished run's summary.json, or a one-line DataError naming the file when it is damaged."""
    try:
        summary = read_summary(path)
        if not isinstance(summary, dict) or not isinstance(summary.get("config", {}), dict):
            raise ValueError("not a summary object")
    except (OSError, ValueError) as e:
        raise DataError(
            f"{path / SUMMARY} is unreadable ({type(e).__name__}: {' '.join(str(e).split())}); "
            f"delete {path / DONE} to run it again, or pass train.resume=false"
        ) from None
    return summary


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every row of a run's metrics file ([] where it has none); ValueError naming the first unreadable line."""
    file = Path(run_dir) / METRICS
    if not file.is_file():
        return []
    rows = []
    for number, line in enumerate(file.read_text().splitlines(), start=1):
        if line.strip():
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"unreadable {METRICS} line {number}: {e.msg}") from None
            if not isinstance(row, dict):
                raise ValueError(f"unreadable {METRICS} line {number}: {type(row).__name__}, not a JSON object")
            rows.append(row)
    return rows
