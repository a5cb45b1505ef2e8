"""esmeta.tracking: real offline W&B runs in a temp dir, read back from their own `.wandb` files.

Offline runs have no API to query, so `read_offline_run` parses the run's data file: W&B's
LevelDB-style record log (a 7-byte `:W&B` header, then CRC-checked chunks in 32 KiB blocks), each
record a `wandb.proto.wandb_internal_pb2.Record`. wandb 0.31 no longer ships a Python reader.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from esmeta.config import Config, HardwareConfig, LoggerConfig, ScaleConfig
from esmeta.errors import EsmetaError
from esmeta.estimators import FiniteDiffConfig, WsrConfig
from esmeta.tracking import (
    RUN_ID_FILE,
    NullTracker,
    WandbTracker,
    default_group,
    epoch_row,
    open_tracker,
    run_name,
    run_tags,
    wandb_mode,
)

pytestmark = pytest.mark.codegen_independent

WANDB = LoggerConfig(name="wandb", project="esmeta-test")
NONE = LoggerConfig(name="none")

# --- reading an offline run's .wandb file ---------------------------------------------------

_BLOCK, _HEADER = 32768, 7
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _chunks(data: bytes) -> Iterator[bytes]:
    """Record payloads of W&B's log format (LevelDB's log layout, W&B's own file header)."""
    ident, magic, version = struct.unpack("<4sHB", data[:_HEADER])
    assert (ident, magic, version) == (b":W&B", 0xBEE1, 0), f"not a W&B data file: {data[:_HEADER]!r}"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is zero padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + _HEADER])
        if (crc, length, kind) == (0, 0, 0):  # zero-filled rest of a block
            pos += left
            continue
        payload = data[pos + _HEADER : pos + _HEADER + length]
        assert zlib.crc32(payload, zlib.crc32(bytes([kind]))) == crc, f"bad checksum at byte {pos}"
        pos += _HEADER + length
        if kind == _FULL:
            yield payload
        elif kind == _FIRST:
            pending = payload
        elif kind == _MIDDLE:
            pending += payload
        elif kind == _LAST:
            yield pending + payload
            pending = b""


def _key(item: Any) -> str:
    return item.key or ".".join(item.nested_key)


@dataclass
class OfflineRun:
    """What an offline run's data file holds, decoded."""

    run_id: str
    name: str
    group: str
    tags: list[str]
    project: str
    config: dict[str, Any]
    history: dict[int, dict[str, Any]] = field(default_factory=dict)  # _step -> row
    metrics: dict[str, tuple[str, bool]] = field(default_factory=dict)  # define_metric: name -> (step metric, max?)
    summary: dict[str, Any] = field(default_factory=dict)
    exit_code: int | None = None


def read_offline_run(sync_dir: Path) -> OfflineRun:
    """Decode `wandb/offline-run-*/run-<id>.wandb`: run metadata, config, history rows, final summary, exit."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = sync_dir.glob("run-*.wandb")
    out: OfflineRun | None = None
    for payload in _chunks(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            config = {u.key: json.loads(u.value_json) for u in r.config.update if u.key != "_wandb"}
            out = OfflineRun(r.run_id, r.display_name, r.run_group, list(r.tags), r.project, config)
        elif kind == "history":
            row = {_key(i): json.loads(i.value_json) for i in record.history.item}
            out.history.setdefault(row["_step"], {}).update(row)
        elif kind == "metric":
            m = record.metric
            out.metrics[m.name or m.glob_name] = (m.step_metric, m.summary.max)
        elif kind == "summary":
            out.summary.update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    assert out is not None, f"{path} has no run record"
    return out


def sync_dirs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def offline_wandb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Offline, silent W&B whose own settings and caches live in a temp dir, never the user's."""
    home = tmp_path_factory.mktemp("wandb_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        mp.setenv("WANDB_SILENT", "true")
        for var in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
            mp.setenv(var, str(home))
        yield


CONFIG = Config(alpha=0.5, estimator=WsrConfig(pop_per_shard=4)).to_dict()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One job's run directory after a tracked run: two per-step rows, an epoch row, a summary."""
    path = tmp_path_factory.mktemp("job")
    with open_tracker(
        WANDB, path, name="alpha=0.5", group="table2", tags=["wsr", "cpu"], config=CONFIG
    ) as tracker:
        tracker.log({"train/loss": 2.5, "train/accuracy": np.float32(0.25)}, step=50)
        tracker.log({"train/loss": 1.5}, step=100)
        tracker.log({"epoch": 1, "val/accuracy": float("nan")}, step=100)  # same step: merged into one row
        tracker.summary(
            {"status": "completed", "test_accuracy": 0.75, "test_accuracy_std": 0.125, "test_accuracy_ci95": 0.0173,
             "wall_time_s": 12.5, "population": 4, "num_params": np.int64(7248), "best_val_accuracy": float("nan"),
             "sigma": None, "devices": ["cpu:0"]}
        )
    return path


@pytest.fixture(scope="module")
def offline_run(run_dir: Path) -> OfflineRun:
    (sync_dir,) = sync_dirs(run_dir)
    return read_offline_run(sync_dir)


# --- one run --------------------------------------------------------------------------------


def test_wandb_files_are_inside_the_run_directory_and_the_id_is_stored(run_dir: Path, offline_run: OfflineRun):
    (sync_dir,) = sync_dirs(run_dir)
    assert sync_dir.name.endswith(f"-{offline_run.run_id}")
    assert (run_dir / RUN_ID_FILE).read_text().strip() == offline_run.run_id


def test_config_arrives_resolved_and_nested(offline_run: OfflineRun):
    assert offline_run.config["alpha"] == 0.5
    assert offline_run.config["estimator"]["name"] == "wsr"
    assert offline_run.config["estimator"]["pop_per_shard"] == 4
    assert offline_run.config["task"]["shot"] == CONFIG["task"]["shot"]


def test_run_name_group_tags_and_project(offline_run: OfflineRun):
    assert (offline_run.name, offline_run.group, offline_run.project) == ("alpha=0.5", "table2", "esmeta-test")
    assert offline_run.tags == ["wsr", "cpu"]


def test_history_rows_by_step_with_same_step_rows_merged(offline_run: OfflineRun):
    assert sorted(offline_run.history) == [50, 100]
    assert offline_run.history[50]["train/loss"] == 2.5
    assert offline_run.history[50]["train/accuracy"] == 0.25
    row = offline_run.history[100]
    assert row["train/loss"] == 1.5 and row["epoch"] == 1
    assert math.isnan(row["val/accuracy"])


def test_metrics_plot_against_episodes_and_the_summary_holds_the_best_validation_accuracy(tmp_path: Path):
    """define_metric as W&B's users set it up: x-axis `episode` (every row carries it), and `val/accuracy` in the
    summary is the max over epochs (0.8 here), not the last epoch's 0.6."""
    with open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config=CONFIG) as tracker:
        tracker.log({"train/loss": 2.0}, step=10)
        for step, acc in ((10, 0.5), (20, 0.8), (30, 0.6)):
            tracker.log(epoch_row({"epoch": step // 10, "episode": step, "train/loss": 1.0, "val/accuracy": acc}),
                        step=step)
    (sync_dir,) = sync_dirs(tmp_path)
    run = read_offline_run(sync_dir)
    assert run.metrics["val/accuracy"] == ("episode", True)
    for pattern in ("train/*", "es/*", "epoch/*"):
        assert run.metrics[pattern][0] == "episode"
    assert all(row["episode"] == step for step, row in run.history.items())
    assert run.summary["val/accuracy"] == {"max": 0.8}


def test_summary_values_arrive_including_non_finite_and_none(offline_run: OfflineRun):
    s = offline_run.summary
    assert (s["status"], s["test_accuracy"], s["test_accuracy_std"], s["test_accuracy_ci95"]) == (
        "completed", 0.75, 0.125, 0.0173
    )
    assert (s["wall_time_s"], s["population"], s["num_params"]) == (12.5, 4, 7248)
    assert s["best_val_accuracy"] is None  # W&B keeps a NaN summary value as null (as summary.json does)
    assert s["sigma"] is None and s["devices"] == ["cpu:0"]
    assert s["train/loss"] == 1.5  # W&B's own: the last logged value of each metric
    assert offline_run.exit_code == 0


# --- several runs, failures, resume ---------------------------------------------------------


def test_jobs_in_one_process_get_separate_runs_with_their_own_metrics(tmp_path: Path):
    dirs = [tmp_path / "0_seed=0", tmp_path / "1_seed=1"]
    first = open_tracker(WANDB, dirs[0], name="seed=0", group="g", tags=[], config={"seed": 0})
    first.log({"m": 1.0}, step=1)
    # The first job "forgot" to finish: opening the next one must still not log into its run.
    second = open_tracker(WANDB, dirs[1], name="seed=1", group="g", tags=[], config={"seed": 1})
    second.log({"m": 2.0}, step=2)
    second.finish()
    first.finish()  # a late finish of an already closed run is harmless
    runs = [read_offline_run(d) for path in dirs for d in sync_dirs(path)]
    assert [r.config["seed"] for r in runs] == [0, 1]
    assert runs[0].run_id != runs[1].run_id
    assert [{s: row["m"] for s, row in r.history.items()} for r in runs] == [{1: 1.0}, {2: 2.0}]


def test_an_exception_in_the_with_block_marks_the_run_failed(tmp_path: Path):
    with pytest.raises(ZeroDivisionError):
        with open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={}) as tracker:
            tracker.log({"m": 1.0}, step=1)
            1 / 0  # noqa: B018 (the error is the point: the run must end as failed)
    (sync_dir,) = sync_dirs(tmp_path)
    assert read_offline_run(sync_dir).exit_code == 1


def test_resuming_a_run_directory_continues_its_wandb_run(tmp_path: Path):
    with open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={}) as tracker:
        tracker.log({"m": 1.0}, step=100)
    with open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={}) as tracker:
        tracker.log({"m": 2.0}, step=200)
    first, second = (read_offline_run(d) for d in sync_dirs(tmp_path))
    assert first.run_id == second.run_id == (tmp_path / RUN_ID_FILE).read_text().strip()
    assert (sorted(first.history), sorted(second.history)) == ([100], [200])


def test_a_fresh_start_in_an_old_run_directory_gets_a_new_run(tmp_path: Path):
    open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={}).finish()
    old = (tmp_path / RUN_ID_FILE).read_text().strip()
    open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={}, resume=False).finish()
    new = (tmp_path / RUN_ID_FILE).read_text().strip()
    assert new != old
    assert sorted(read_offline_run(d).run_id for d in sync_dirs(tmp_path)) == sorted([old, new])


def test_a_corrupt_stored_run_id_is_a_one_line_error(tmp_path: Path):
    (tmp_path / RUN_ID_FILE).write_text("not/an id\n")
    with pytest.raises(EsmetaError, match="delete it to start a new W&B run"):
        open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={})


# --- no tracking ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logger, enabled, mode",
    [(NONE, True, "offline"), (WANDB, False, "offline"), (WANDB, True, "disabled")],
    ids=["logger=none", "not-process-0", "WANDB_MODE=disabled"],
)
def test_no_tracking_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, logger, enabled, mode):
    monkeypatch.setenv("WANDB_MODE", mode)
    with open_tracker(logger, tmp_path, name="n", group=None, tags=[], config={"a": 1}, enabled=enabled) as tracker:
        tracker.log({"m": 1.0}, step=1)
        tracker.summary({"status": "completed"})
    assert isinstance(tracker, NullTracker)
    assert list(tmp_path.iterdir()) == []


def test_wandb_mode_defaults_to_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    tracker = open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={})
    assert isinstance(tracker, WandbTracker) and tracker.run.settings.mode == "offline"
    tracker.finish()
    assert len(sync_dirs(tmp_path)) == 1


def test_a_job_started_by_a_wandb_sweep_agent_defaults_to_online(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # set by `wandb agent` for the jobs it starts
    assert wandb_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "offline")  # an explicit mode still wins
    assert wandb_mode() == "offline"


def test_an_unknown_wandb_mode_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", "ofline")
    with pytest.raises(EsmetaError, match="WANDB_MODE='ofline' is not an option; choose one of: offline, online"):
        open_tracker(WANDB, tmp_path, name="n", group=None, tags=[], config={})
    assert not (tmp_path / "wandb").exists()


def test_online_without_a_login_is_a_one_line_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path))
    with pytest.raises(EsmetaError, match="W&B could not start a run .*logger=none") as err:
        open_tracker(WANDB, tmp_path / "job", name="n", group=None, tags=[], config={})
    assert "\n" not in str(err.value)
    assert not (tmp_path / "job" / RUN_ID_FILE).exists()


# --- names, groups, tags --------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides, name",
    [
        ([], "default"),
        (["hydra.run.dir=/tmp/x", "data.root=/data/omniglot", "data.cache_dir=/c"], "default"),
        (["task.shot=1", "estimator=wsr"], "estimator=wsr,task.shot=1"),  # sorted by key: stable across orders
        (["estimator=wsr", "task.shot=1"], "estimator=wsr,task.shot=1"),
        (["sweep=table2", "point=table2-alpha1", "hydra.mode=RUN"], "point=table2-alpha1"),
        (["+extra=1", "~distance", "hydra/launcher=submitit_local"], "~distance,+extra=1"),
    ],
)
def test_run_name_from_overrides(overrides: list[str], name: str):
    assert run_name(overrides) == name


def test_default_group():
    assert default_group("table2", "multirun/table2/2026-11-25_12-00-00") == "table2"
    assert default_group(None, "/scratch/me/multirun/2026-11-25/12-00-00") == "2026-11-25/12-00-00"
    assert default_group(None, None) is None


def test_logger_group_wins_over_the_default(tmp_path: Path):
    logger = LoggerConfig(name="wandb", project="esmeta-test", group="mine")
    with open_tracker(logger, tmp_path, name="n", group="table2", tags=[], config={}):
        pass
    (sync_dir,) = sync_dirs(tmp_path)
    assert read_offline_run(sync_dir).group == "mine"


def test_run_tags_name_estimator_hardware_and_scale():
    config = Config(
        estimator=FiniteDiffConfig(), hardware=HardwareConfig(name="tpu-v3-8"),
        scale=ScaleConfig(name="smoke"),
    )
    assert run_tags(config) == ["finite_diff", "tpu-v3-8", "smoke"]


def test_a_training_job_of_a_sweep_arrives_in_its_own_wandb_run(table2_smoke_sweep: Path):
    """End to end (sweep=table2 scale=smoke): config, per-step and per-epoch history, summary, name and group."""
    job = sorted(p.parent for p in table2_smoke_sweep.glob("*/summary.json"))[0]
    summary = json.loads((job / "summary.json").read_text())
    (sync_dir,) = sync_dirs(job)
    run = read_offline_run(sync_dir)
    assert run.config["alpha"] == summary["alpha"] and run.config["estimator"]["name"] == "wsr"
    assert run.group == "table2" and run.name == summary["overrides"][0] and run.exit_code == 0  # scale: a tag, not the name
    epe, epochs = summary["config"]["train"]["episodes_per_epoch"], summary["config"]["train"]["epochs"]
    assert sorted(run.history) == list(range(1, epe * epochs + 1))  # one row per training step
    assert all(math.isfinite(row["train/loss"]) for row in run.history.values())
    assert all("es/fitness_std" in row and "es/grad_norm" in row for row in run.history.values())
    metrics = [json.loads(line) for line in (job / "metrics.jsonl").read_text().splitlines()]
    for record in metrics:  # each epoch's means sit beside, not over, its last step's own values
        row = run.history[record["episode"]]
        assert row["epoch"] == record["epoch"] and row["epoch/train_loss"] == pytest.approx(record["train/loss"])
    assert run.summary["test_accuracy"] == pytest.approx(summary["test_accuracy"])
    assert run.summary["status"] == summary["status"] and run.summary["population"] == 32


def test_epoch_rows_read_back_under_the_metrics_file_names() -> None:
    """W&B epoch rows (`epoch/<namespace>_<name>`) undone by the analysis reader give metrics.jsonl's record back,
    for every record the reproduction archive holds (every estimator's metric names)."""
    from esmeta.analysis.wandb_source import epoch_metrics

    archive = Path(__file__).resolve().parents[1] / "results" / "cpu"
    records = [json.loads(line) for f in sorted(archive.glob("*/*/metrics.jsonl")) for line in f.read_text().splitlines()]
    assert {json.loads(f.read_text().splitlines()[0])["es/fitness_std"] == 0.0
            for f in archive.glob("*/*/metrics.jsonl")} == {True, False}  # backprop and population rows both
    for record in records:
        row = epoch_row(record)
        assert "train/loss" not in row  # the epoch's mean must not overwrite the last step's own value
        assert epoch_metrics(row) == record

