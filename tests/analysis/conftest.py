"""Synthetic results trees in the exact on-disk format of a run (summary.json, metrics.jsonl, done)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

DEFAULT_OPTIMIZER = {"backprop": "adam", "finite_diff": "adam", "forward_mode": "adam", "wsr": "sgd"}
SHARDS = {"cpu": 1, "cpu8": 8, "gpu": 0, "tpu-v3-8": 8, "tpu-v3-256": 256, "tpu-v2-512": 512}


def run_config(
    *,
    estimator: str = "wsr",
    hardware: str = "tpu-v3-8",
    alpha: float = 1.0,
    sigma: float = 0.01,
    channels: int = 16,
    pop_per_shard: int = 128,
    train_way: int = 10,
    shot: int = 5,
    test_way: int = 5,
    distance: str = "euclidean",
    seed: int = 0,
    scale: str = "paper",
    norm_stats: str = "running",
    max_minutes: float = 0,
    optimizer: str | None = None,
) -> dict[str, Any]:
    """The nested requested config a run records (esmeta.config.Config.to_dict's shape)."""
    return {
        "seed": seed,
        "alpha": alpha,
        "sigma": sigma,
        "task": {"train_way": train_way, "shot": shot, "query": 5, "test_way": test_way, "test_shot": shot,
                 "test_query": 15},
        "model": {"channels": channels, "norm_stats": norm_stats},
        "distance": {"name": distance, "scale": 1.0},
        "data": {"root": None, "image_size": 32, "split": "paper", "split_seed": 0, "resize_filter": "antialias"},
        "train": {"epochs": 200, "episodes_per_epoch": 100, "max_minutes": max_minutes,
                  **({"budget_clock": "cpu"} if max_minutes else {})},
        "eval": {"val_episodes": 1, "test_episodes": 200, "seed": 2021},
        "estimator": {"name": estimator, "optimizer": optimizer or DEFAULT_OPTIMIZER.get(estimator, "sgd"),
                      "pop_per_shard": pop_per_shard, "fd_sigma": 0.001,
                      "central": False, "antithetic": False},
        "hardware": {"name": hardware, "shards": SHARDS[hardware], "platform": "any"},
        "logger": {"name": "none"},
        "scale": {"name": scale, "max_pop_per_shard": 4 if scale == "smoke" else 0,
                  "max_shards": 8 if scale == "smoke" else 0},
    }


def flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


def record(config: dict[str, Any], episodes: int | None, overrides: list[str]) -> dict[str, Any]:
    """The fields esmeta/record.py adds to a summary; differences from this fixture's stand-in estimator defaults
    (the real defaults' shape: cpu hardware, 64 channels, 20-way, running averages, the estimator's optimizer)."""
    estimator = config["estimator"]["name"]
    reference = flat(run_config(estimator=estimator, hardware="cpu", channels=64, train_way=20))
    ours = flat(config)
    train = config["train"]
    return {
        "point": next((o.split("=", 1)[1] for o in overrides if o.startswith("point=")), None),
        "sigma": {"wsr": config["sigma"], "finite_diff": config["estimator"]["fd_sigma"]}.get(estimator),
        "population_estimator": estimator in ("wsr", "finite_diff"),
        "test_protocol": {"norm_stats": config["model"]["norm_stats"], "way": config["task"]["test_way"],
                          "shot": config["task"]["test_shot"], "query": config["task"]["test_query"],
                          "episodes": config["eval"]["test_episodes"], "seed": config["eval"]["seed"]},
        "budget": {"episodes_requested": train["epochs"] * train["episodes_per_epoch"],
                   "max_minutes": train["max_minutes"], "budget_clock": train.get("budget_clock", "wall"),
                   "scale": config["scale"]["name"], "episodes_reached": episodes},
        "differences": {k: v for k, v in ours.items() if k in reference and v != reference[k]
                        and not k.startswith(("train.", "scale.", "logger."))},
    }


def write_run(
    root: Path,
    name: str,
    *,
    accuracy: float | None = 0.9,
    accuracy_std: float | None = 0.01,
    status: str = "completed",
    done: bool = True,
    sweep: str | None = None,
    val_curve: list[float] | None = None,
    finished_at: str | None = None,
    episodes: int = 20000,
    legacy: bool = False,
    **config_kwargs: Any,
) -> Path:
    """One run directory under `root/name` in the results format (`legacy`: as written before esmeta/record.py,
    without its fields); returns its path."""
    path = root / name
    path.mkdir(parents=True)
    config = run_config(**config_kwargs)
    scale = config["scale"]["name"]
    estimator = config["estimator"]["name"]
    shards = config["hardware"]["shards"] or 1
    pop = config["estimator"]["pop_per_shard"]
    if scale == "smoke":
        shards, pop = min(shards, 8), min(pop, 4)
    if status == "failed":
        summary: dict[str, Any] = {"status": "failed", "error": "RuntimeError: out of memory\ntraceback...",
                                   "config": config}
    elif status == "skipped":  # what esmeta.run records for a job its scale refuses
        summary = {"status": "skipped", "config": config, "scale": scale,
                   "error": f"population {pop * shards} ({pop} per shard x {shards} shards) exceeds scale={scale}'s "
                            "max_population 4096: this configuration needs an accelerator; run it there"}
    else:
        summary = {
            "status": status,
            "test_accuracy": accuracy,
            "test_accuracy_std": accuracy_std,
            "test_accuracy_ci95": None if accuracy_std is None else 1.96 * accuracy_std / math.sqrt(200),
            "test_episodes": 200,
            "best_val_accuracy": max(val_curve) if val_curve else None,
            "final_val_accuracy": val_curve[-1] if val_curve else None,
            "episodes": episodes,
            "stopped_by_budget": episodes < 20000,
            "wall_time_s": 12.5,
            "num_params": 7248,
            "estimator": estimator,
            "alpha": config["alpha"],
            "sigma": {"wsr": config["sigma"], "finite_diff": 0.001}.get(estimator),
            "population": pop * shards if estimator != "backprop" else None,
            "pop_per_shard": pop if estimator != "backprop" else None,
            "shards": shards,
            "sweep": sweep,
            "scale": scale,
            "test_norm_stats": config["model"]["norm_stats"],
            "backend": "cpu",
            "versions": {"jax": "0.10.2"},
            "overrides": [],
            "config": config,
        }
    if not legacy:
        summary.update(record(config, None if status in ("failed", "skipped") else episodes, summary.get("overrides", [])))
    if finished_at is not None:
        summary["finished_at"] = finished_at
    (path / "summary.json").write_text(json.dumps(summary, indent=2))
    with open(path / "metrics.jsonl", "w") as f:
        for epoch, val in enumerate(val_curve or [], start=1):
            f.write(json.dumps({"epoch": epoch, "episode": epoch * 100, "train/loss": 1.0 / epoch,
                                "train/accuracy": val, "val/accuracy": val, "wall_time_s": float(epoch)}) + "\n")
    if done:
        (path / "done").write_text("")
    return path


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """An empty results directory."""
    path = tmp_path / "results"
    path.mkdir()
    return path


@pytest.fixture
def make_run(results_dir: Path):
    """`make_run(name, **kwargs)`: write one run under `results_dir` (see `write_run`)."""
    return lambda name, **kwargs: write_run(results_dir, name, **kwargs)
