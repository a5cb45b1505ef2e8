"""Every benchmark runs in its --quick form and prints well-formed JSON lines (their figures live in the README)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(script: str, tmp_path: Path) -> list[dict]:
    args = [sys.executable, str(BENCHMARKS / script), "--quick"]
    if script in ("backprop_reference.py", "es_reference.py", "accelerator_check.py"):
        args += ["--out", str(tmp_path)]
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.mark.parametrize(
    "script,rows,keys",
    [
        ("backprop_reference.py", 2, {"shot", "test_accuracy", "paper_accuracy", "episodes", "minutes"}),
        ("es_reference.py", 1, {"estimator", "population", "test_accuracy", "paper_accuracy", "episodes", "minutes"}),
    ],
)
def test_reference_benchmarks_quick(script, rows, keys, tmp_path, omniglot32):
    lines = run_quick(script, tmp_path)
    assert len(lines) == rows
    for row in lines:
        assert keys <= row.keys()
        assert 0.2 < row["test_accuracy"] <= 1.0  # above 5-way chance even after a few episodes
        assert (Path(row["run_dir"]) / "done").exists()


def test_grad_quality_quick(tmp_path, omniglot32):
    lines = run_quick("grad_quality.py", tmp_path)
    by = {(r["estimator"], r["population"]): r for r in lines}
    assert {"estimator", "population", "cosine_to_backprop"} <= lines[0].keys()
    fd = [r for r in lines if r["estimator"].startswith("finite_diff")]
    assert fd and all(r["cosine_to_backprop"] > 0.99 for r in fd)  # all coordinates of a small net
    wsr = sorted((p, r["cosine_to_backprop"]) for (e, p), r in by.items() if e == "wsr")
    assert len(wsr) >= 2 and wsr[-1][1] > wsr[0][1]  # more candidates, closer to the gradient


def test_population_throughput_quick(tmp_path, omniglot32):
    lines = run_quick("population_throughput.py", tmp_path)
    assert {r["impl"] for r in lines} == {"esmeta", "esmeta_own_episodes", "naive_vmap"}
    for row in lines:
        assert {"channels", "population", "impl", "candidates_per_s", "gflops", "matmul_peak_gflops"} <= row.keys()
        assert row["candidates_per_s"] > 0 and 0 < row["gflops"] < row["matmul_peak_gflops"] * 1.5


def test_memory_vs_task_length_quick(tmp_path, omniglot32):
    lines = run_quick("memory_vs_task_length.py", tmp_path)
    assert {r["estimator"] for r in lines} == {"backprop", "forward_mode", "wsr"}
    assert all({"estimator", "support_size", "peak_bytes", "temp_bytes"} <= r.keys() and r["peak_bytes"] > 0
               for r in lines)
    peaks = {name: [r["peak_bytes"] for r in sorted(lines, key=lambda r: r["support_size"]) if r["estimator"] == name]
             for name in ("backprop", "forward_mode", "wsr")}
    assert all(len(p) == 3 for p in peaks.values())
    # Streamed in chunks, forward mode and wsr hold the same memory at every support size; backprop's grows.
    for name in ("wsr", "forward_mode"):
        assert max(peaks[name]) <= min(peaks[name]) * 1.01, (name, peaks[name])
    assert peaks["backprop"][0] < peaks["backprop"][1] < peaks["backprop"][2]
    executed = [r for r in lines if r.get("executed")]  # the smallest task runs; forward mode's loss is backprop's
    assert {r["estimator"] for r in executed} == {"backprop", "forward_mode", "wsr"}
    assert next(r for r in executed if r["estimator"] == "forward_mode")["loss_matches_backprop"] is True


def test_population_scale_quick(tmp_path, omniglot32):
    [row] = run_quick("population_scale.py", tmp_path)
    keys = {"population", "channels", "peak_bytes", "rss_step_peak_bytes", "process_peak_rss_bytes", "seconds"}
    assert keys <= row.keys()
    assert row["population"] == row["shards"] * row["pop_per_shard"] and row["nonfinite"] == 0
    assert 0 < row["peak_bytes"] < row["population_matrix_bytes"]  # the population matrix is never built


@pytest.mark.parametrize(
    "script,args", [("population_throughput.py", ["--quick"]), ("es_reference.py", ["--quick", "--out", "{tmp}/out"])]
)
def test_benchmark_without_data_says_so_in_one_line(script, args, tmp_path):
    nowhere = tmp_path / "nowhere"
    env = {**os.environ, "ESMETA_DATA_DIR": str(nowhere), "ESMETA_CACHE_DIR": str(tmp_path / "cache")}
    command = [sys.executable, str(BENCHMARKS / script), *(a.format(tmp=tmp_path) for a in args)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{Path(script).stem}: error: "), proc.stderr
    assert str(nowhere) in lines[0]  # says where it looked


def test_accelerator_check_quick(tmp_path, omniglot32):
    lines = run_quick("accelerator_check.py", tmp_path)
    checks = {r["check"] for r in lines}
    assert checks == {"throughput", "precision", "table1"}
    throughput = [r for r in lines if r["check"] == "throughput"]
    assert {r["impl"] for r in throughput} == {"esmeta", "naive_vmap"} and all(r["candidates_per_s"] > 0 for r in throughput)
    [precision] = [r for r in lines if r["check"] == "precision"]
    assert 0.0 <= precision["max_rel_fitness_diff"] < 1e-2 and precision["fitness_std"] > 0
    [row] = [r for r in lines if r["check"] == "table1"]
    assert row["status"] == "completed" and row["episodes"] == 2 and 0.0 <= row["test_accuracy"] <= 1.0
    assert (Path(row["run_dir"]) / "done").exists()


def test_vs_evosax_quick(tmp_path, omniglot32):
    pytest.importorskip("evosax", reason='evosax (the optional extra `pip install -e ".[bench]"`) is not installed')
    lines = run_quick("vs_evosax.py", tmp_path)
    rows = [r for r in lines if "impl" in r]
    assert sorted(r["impl"] for r in rows) == sorted(["esmeta", "evosax_vmap", "evosax_map", "evosax_naive"])
    for row in rows:
        assert {"channels", "population", "candidates_per_s", "share_of_matmul_peak", "matmul_peak_gflops",
                "peak_bytes", "processor"} <= row.keys()
        assert math.isfinite(row["candidates_per_s"]) and row["candidates_per_s"] > 0, row
        assert 0 < row["share_of_matmul_peak"] < 1.5 and row["peak_bytes"] > 0
    [check] = [r for r in lines if r.get("check") == "same_noise_cosine"]
    # evosax's tell is given wsr's own candidates and their losses, so both compute eq. 9 from the same numbers:
    # the cosine is 1 and the norm ratio 1 up to float32 rounding (measured 1.0 and 1.000001). The thresholds
    # leave that rounding room and still fail a real difference: evosax's default centered ranks in place of
    # z-scores give cosine 0.97 (norm ratio 0.29), a sign error -1, other noise ~0 (|g| is mostly noise at D >> N).
    assert check["cosine"] > 0.999 and abs(check["norm_ratio"] - 1) < 1e-3, check


def test_vs_evosax_without_evosax_says_how_to_install(tmp_path):
    shadow = tmp_path / "evosax"  # an `evosax` that fails to import, found before the installed one (if any)
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('No module named evosax')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "vs_evosax.py"), "--quick"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert proc.returncode == 0 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'pip install -e ".[bench]"' in lines[0], proc.stderr


def test_profile_step_quick(tmp_path, omniglot32):
    lines = run_quick("profile_step.py", tmp_path)
    parts = {r["part"]: r for r in lines if "part" in r}
    assert {"wsr_full", "fitness_only", "noise_regen", "noise_sum", "residual", "hlo"} <= parts.keys()
    for name in ("wsr_full", "fitness_only", "noise_regen", "noise_sum"):
        assert parts[name]["ms_per_candidate"] > 0 and parts[name]["matmul_peak_gflops"] > 0, parts[name]
    assert parts["hlo"]["convolutions"] >= 3  # blocks 2-4 are convolutions in the compiled fitness
    stages = {r["stage"]: r for r in lines if "stage" in r}
    main = ("block1", "block2", "block3", "block4", "head")
    assert set(main) | {"block1.patches", "block1.moments", "block1.apply", "loss_fused"} <= stages.keys()
    assert sum(stages[s]["share_of_stage_sum"] for s in main) == pytest.approx(1.0, abs=1e-3)
    # block 2 at 16 channels: a 3x3 conv 16 -> 16 on 100 images of 16x16, 2*H*W*9*Cin*Cout*images FLOPs.
    assert stages["block2"]["flops"] == 2 * 16 * 16 * 9 * 16 * 16 * 100
    kernels = {r["n"]: r for r in lines if r.get("kernel") == "matmul"}
    assert kernels.keys() == {16, 64}
    for n, r in kernels.items():  # block 2's pixels x patch values, times n output columns
        assert (r["m"], r["k"]) == (100 * 16 * 16, 9 * 16) and r["share_of_matmul_peak"] > 0
        assert r["gflops"] == pytest.approx(2 * r["m"] * r["k"] * n / (r["ms"] / 1e3) / 1e9, rel=1e-2)


def test_accelerator_check_help_says_every_check_and_option() -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "accelerator_check.py"), "--help"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for part in ("check=throughput", "check=precision", "check=table1", "--episodes", "--quick", "--out"):
        assert part in proc.stdout, f"accelerator_check.py --help does not mention {part}"
    assert "`--quick` (the test suite, on CPU) shrinks every part" in proc.stdout  # the description's last sentence


def test_memory_vs_inner_steps_quick(tmp_path, omniglot32):
    """MAML's outer step: second order keeps every inner step (its memory grows with K); first order, ES and finite
    differences keep one step's activations and forward mode carries tangents, never the steps: all four stay flat
    within 10% from K = 2 to 16 (measured at 4 channels: second order x5.1, the others x1.00)."""
    lines = run_quick("memory_vs_inner_steps.py", tmp_path)
    peak = {(r["estimator"], r["inner_steps"]): r["peak_bytes"] for r in lines}
    names = ("second_order", "first_order", "forward_mode", "wsr", "finite_diff")
    assert set(peak) == {(name, k) for name in names for k in (2, 16)}
    assert peak["second_order", 16] > 3 * peak["second_order", 2]
    for name in names[1:]:
        assert max(peak[name, 2], peak[name, 16]) <= 1.1 * min(peak[name, 2], peak[name, 16]), name
