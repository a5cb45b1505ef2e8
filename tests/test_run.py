"""The real command line: a tiny training run, a two-job multirun, load_run, and bad input end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import esmeta
from esmeta.data import sample_episode, split_classes
from esmeta.errors import DataError
from esmeta.protonet import loss_and_accuracy, prototypes, similarity
from esmeta.run_dir import read_metrics, read_summary

TINY = [
    "task.train_way=5",
    "task.shot=1",
    "task.query=2",
    "task.test_query=5",
    "model.channels=8",
    "train.epochs=3",
    "train.episodes_per_epoch=20",
    "eval.val_episodes=4",
    "eval.test_episodes=20",
]


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "esmeta.run", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, omniglot_root, omniglot32) -> Path:
    """One tiny backprop run through the CLI (data preprocessed once by the omniglot32 fixture), into a directory
    named to the microsecond: resolved twice, `${now:...}` would name two."""
    parent = tmp_path_factory.mktemp("run")
    proc = run_cli(*TINY, f"hydra.run.dir={parent}/tiny-" + "${now:%H-%M-%S-%f}", cwd=tmp_path_factory.mktemp("cwd"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sorted(parent.iterdir())[0]


def test_an_exact_gradient_records_episodes_per_second_and_no_fitness_statistics(tiny_run):
    """backprop's one candidate (mu) has fitness -loss, std 0: no es/fitness_* and no candidates/s are recorded."""
    for record in read_metrics(tiny_run):
        assert record["train/episodes_per_s"] > 0 and "es/candidates_per_s" not in record
        assert not [k for k in record if k.startswith("es/fitness_")] and "es/grad_norm" in record


def test_one_run_writes_one_folder_the_one_it_checked_and_locked(tiny_run):
    """The pre-run check and Hydra use the same directory (not `${now}` resolved twice: a folder holding only
    `.esmeta.lock` beside the real one); the recorded command is the one typed."""
    assert list(tiny_run.parent.iterdir()) == [tiny_run]
    assert (tiny_run / "done").exists() and (tiny_run / ".hydra" / "config.yaml").exists()
    command = read_summary(tiny_run)["provenance"]["command"]
    assert "${now:%H-%M-%S-%f}" in command and str(tiny_run) not in command


def test_tiny_run_writes_a_complete_sane_summary(tiny_run):
    assert (tiny_run / "done").exists()
    s = read_summary(tiny_run)
    assert s["status"] == "completed"
    assert s["estimator"] == "backprop" and s["test_episodes"] == 20 and s["episodes"] == 60
    # 5-way test: chance is 0.2; even 60 episodes of training put an 8-channel ProtoNet far above it.
    assert 0.5 < s["test_accuracy"] <= 1.0
    assert 0 <= s["test_accuracy_std"] < 0.5
    assert s["test_accuracy_ci95"] == pytest.approx(1.96 * s["test_accuracy_std"] / np.sqrt(20))
    assert 0.2 < s["best_val_accuracy"] <= 1.0
    assert s["num_params"] == (9 * 8 + 8) + 3 * (9 * 64 + 8) + 4 * 16
    assert s["config"]["model"]["channels"] == 8 and s["config"]["task"]["test_shot"] == 1
    assert s["versions"]["jax"] and s["backend"] == "cpu" and s["wall_time_s"] > 0
    assert "model.channels=8" in s["overrides"]
    # What produced it: the command line, the commit of the checkout esmeta runs from, the machine.
    p = s["provenance"]
    assert p["command"].split()[1:3] == ["-m", "esmeta.run"] and "model.channels=8" in p["command"].split()
    head = subprocess.run(["git", "-C", str(Path(esmeta.__file__).parent), "rev-parse", "HEAD"], capture_output=True,
                          text=True)
    assert p["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert p["machine"]["cores"] >= 1 and p["machine"]["processor"]


def test_tiny_run_logs_one_line_per_epoch(tiny_run):
    lines = list(read_metrics(tiny_run))
    assert [m["episode"] for m in lines] == [20, 40, 60]
    for m in lines:
        assert np.isfinite(m["train/loss"]) and 0 <= m["train/accuracy"] <= 1 and 0 <= m["val/accuracy"] <= 1
    assert lines[-1]["wall_time_s"] > lines[0]["wall_time_s"]
    # Training lowers the loss: last epoch's mean below the first's (5-way, 1-shot: from ~1 nat).
    assert lines[-1]["train/loss"] < lines[0]["train/loss"]


def test_tiny_run_tells_its_story_in_the_job_log(tiny_run):
    """stderr a pipe (no terminal, no bar): Hydra's job log says what happens before the first epoch (data,
    compilation), then holds one progress line per epoch, with backprop's rate in episodes/s, and the result."""
    log = (tiny_run / "run.log").read_text()  # <hydra.run.dir>/<job name>.log, written by Hydra's file handler
    epochs = re.findall(
        r"\[esmeta\.train\]\[INFO\] - epoch (\d)/3 \| episode (\d+)/60 \| train loss (\S+) \| "
        r"val accuracy (0\.\d{4}|1\.0000) \| (\d+\.\d) episodes/s \| elapsed \d+:\d\d:\d\d \| ETA (\d+:\d\d:\d\d)",
        log,
    )
    assert [(e[0], e[1]) for e in epochs] == [("1", "20"), ("2", "40"), ("3", "60")], log
    assert all(float(e[4]) > 0 for e in epochs) and epochs[-1][5] == "0:00:00"
    assert "candidates/s" not in log  # backprop evaluates no population
    before = log[: log.index("epoch 1/3")]
    assert "[esmeta.train][INFO] - preparing the data (Omniglot at 32 px, split paper)" in before
    assert before.index("preparing the data") < before.index("compiling the training step") < before.index(
        "compiled and ran the first step in")
    # Epoch 1's rate leaves the compilation out: it was 3.6 then 255.3 candidates/s; now of one order with epoch 2's.
    assert float(epochs[0][4]) > float(epochs[1][4]) / 5, log
    metrics = list(read_metrics(tiny_run))
    assert [float(e[2]) for e in epochs] == pytest.approx([m["train/loss"] for m in metrics], abs=1e-4)
    s = read_summary(tiny_run)
    final = re.findall(r"\[esmeta\.run\]\[INFO\] - \[completed\] backprop: test accuracy (\S+) ± (\S+) "
                       r"\(5-way 1-shot, 20 episodes\) -> (.+)", log)
    assert len(final) == 1 and float(final[0][0]) == pytest.approx(s["test_accuracy"], abs=1e-4)
    assert final[0][2] == str(tiny_run)
    assert log.index("epoch 3/3") < log.index("test accuracy")


def test_load_run_embeds_like_training(tiny_run, omniglot32):
    """Prototypes from `load_run(...).embed` classify a test episode exactly as the training loss does."""
    run = esmeta.load_run(tiny_run)
    assert run.config.model.channels == 8
    split = split_classes(omniglot32.class_names, run.config.data.split, run.config.data.split_seed)
    images = jnp.asarray(omniglot32.images[split["test"]])
    ep = sample_episode(jax.random.key(7), images, 5, 1, 5)
    z = run.embed(jnp.concatenate([ep.support, ep.query]))
    assert z.shape == (5 + 25, 2 * 2 * 8)
    logits = similarity(z[5:], prototypes(z[:5], 5), "euclidean")
    acc = float(jnp.mean(jnp.argmax(logits, 1) == jnp.repeat(jnp.arange(5), 5)))
    assert run.config.model.norm_stats == "running"  # the default: embed and the test use the running averages
    _, expected = loss_and_accuracy(
        run.params, ep, way=5, distance="euclidean", scale=1.0, norm_stats="running",
        running=run.batch_stats,
    )
    assert acc == pytest.approx(float(expected))
    # uint8 images straight from the preprocessed array are accepted too.
    uint8 = omniglot32.images[split["test"][:3], 0]
    assert run.embed(uint8).shape == (3, 32)


def test_load_run_refuses_another_image_size_and_prepares_a_users_own(tiny_run, omniglot_root, omniglot32):
    """A 32-pixel model given 28- or 105-pixel images is refused in one line (not (2, 32) or (2, 1152) vectors of
    nothing); `run.prepare` makes a user's PNG the training images' way, so it embeds as the training image."""
    run = esmeta.load_run(tiny_run)
    for shape in [(2, 28, 28), (2, 105, 105), (32, 32), (2, 32, 32, 3)]:
        with pytest.raises(DataError, match=re.escape(f"got shape {shape}; make them with run.prepare(images)")) as err:
            run.embed(np.zeros(shape, np.uint8))
        assert "\n" not in str(err.value) and "(n, 32, 32) uint8" in str(err.value)
    with zipfile.ZipFile(omniglot_root / "images_background.zip") as zf:
        first = sorted(n for n in zf.namelist() if "/Alphabet_of_the_Magi/character01/" in n)[0]
        png = zf.read(first)
    mine = run.prepare([png])
    np.testing.assert_array_equal(mine, omniglot32.images[0, :1])
    np.testing.assert_array_equal(run.embed(mine), run.embed(omniglot32.images[0, :1]))


def test_load_run_embeds_one_image_as_inside_a_batch(tiny_run, omniglot32):
    """Under running statistics an image's embedding is its own: alone or among 30 others, the same vector."""
    run = esmeta.load_run(tiny_run)
    assert run.summary["test_norm_stats"] == "running"
    assert set(run.batch_stats) == {f"EpisodeBatchNorm_{b}" for b in range(4)}
    # Trained averages, not the initial (0, 1): 60 EMA steps moved them.
    assert float(jnp.abs(run.batch_stats["EpisodeBatchNorm_1"]["var"] - 1.0).max()) > 1e-3
    batch = omniglot32.images[:30, 0]
    together = run.embed(batch)
    for i in (0, 17):
        alone = run.embed(batch[i : i + 1])
        # Row-wise operations of different batch shapes may reassociate sums: 1e-5 of the embedding's scale.
        np.testing.assert_allclose(alone[0], together[i], rtol=0, atol=1e-5 * float(jnp.abs(together).max()))


@pytest.mark.codegen_independent
def test_two_job_multirun(tmp_path, omniglot32):
    proc = run_cli("-m", *TINY, "train.epochs=1", "task.shot=1,2", f"hydra.sweep.dir={tmp_path}/sweep/" + "${now:%f}",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep,) = (tmp_path / "sweep").iterdir()  # one sweep folder: the one checked and locked is the one Hydra uses
    summaries = [read_summary(p.parent) for p in sorted(sweep.glob("*/done"))]
    assert len(summaries) == 2
    assert sorted(s["config"]["task"]["shot"] for s in summaries) == [1, 2]
    assert all(s["status"] == "completed" for s in summaries)


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("esmeta: error: ")
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        (["estimator=bogus"], "estimator=bogus is not an option; choose one of: backprop"),
        (["task.train_way=5000"], "task.train_way=5000 exceeds the 4804 train classes"),
        (["task.wya=3"], "unknown setting task.wya"),
    ],
)
def test_cli_bad_overrides_exit_2_with_one_line(tmp_path, overrides, fragment):
    proc = run_cli(*overrides, f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not (tmp_path / "out").exists()  # nothing written


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--help", "estimator=wsr,finite_diff"], "estimator=wsr,finite_diff lists several values, which only a "
                                                  "multirun runs: add -m (--multirun)"),
        (["--cfg", "job", "estimator=bogus"], "estimator=bogus is not an option; choose one of: backprop"),
        (["--cfg", "job", "task.wya=3"], "unknown setting task.wya"),
    ],
)
def test_hydras_own_flags_with_overrides_that_do_not_compose_exit_2_with_one_line(tmp_path, args, fragment):
    proc = run_cli(*args, cwd=tmp_path)
    assert_one_line_error(proc, fragment)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("dry", [False, True], ids=["run", "dry-run"])
@pytest.mark.parametrize("override", ["alpha=1,10", "seed=0,1", "sigma=0.1,1", "model.channels=4,8",
                                      "estimator=backprop,wsr", "point=glob(table2-*)"])
def test_every_comma_list_without_multirun_says_add_multirun(tmp_path, override, dry):
    """Plain values, a config group and a glob alike, run or dry run: the same one line (not OmegaConf's
    'Unexpected type annotation ... ChoiceSweep'), exit 2, nothing written."""
    proc = run_cli(*(["--dry-run"] if dry else []), override, cwd=tmp_path)
    assert_one_line_error(proc, f"{override} lists several values, which only a multirun runs: add -m (--multirun)")
    assert "ChoiceSweep" not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written


def test_cfg_job_still_shows_a_composed_config_whose_values_a_run_would_refuse(tmp_path):
    proc = run_cli("--cfg", "job", "alpha=-1", cwd=tmp_path)  # composes; `train` would refuse alpha=-1
    assert proc.returncode == 0 and "alpha: -1" in proc.stdout, proc.stderr[-2000:]


def test_cli_bad_sweep_value_launches_nothing(tmp_path):
    proc = run_cli("-m", "task.shot=1,25", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert_one_line_error(proc, "task.shot + task.query = 25 + 5")
    assert not (tmp_path / "sweep").exists()


def test_cli_missing_data_says_where_it_looked(tmp_path):
    empty = tmp_path / "nodata"
    empty.mkdir()
    out = tmp_path / "out"
    proc = run_cli(*TINY, f"data.root={empty}", "data.download=false", f"hydra.run.dir={out}", cwd=tmp_path)
    assert_one_line_error(proc, str(empty), "ESMETA_DATA_DIR")
    assert not (out / "summary.json").exists() and not (out / "done").exists()


def test_cli_corrupt_zip_is_reported(tmp_path, omniglot_root):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images_background.zip").write_bytes(b"this is not a zip file")
    with zipfile.ZipFile(bad / "images_evaluation.zip", "w") as z:
        z.writestr("images_evaluation/Alphabet/character01/0001_01.png", b"")
    proc = run_cli(*TINY, f"data.root={bad}", "data.download=false", f"hydra.run.dir={tmp_path / 'out'}", cwd=tmp_path)
    assert_one_line_error(proc, "images_background.zip")
    assert not (tmp_path / "out" / "done").exists()


def test_cli_help_lists_config_groups(tmp_path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for group in ("estimator:", "distance:", "task:", "model:", "data:", "hardware:", "experiment:"):
        assert group in proc.stdout
    assert "backprop" in proc.stdout and "20way_5shot" in proc.stdout and "quickstart" in proc.stdout


@pytest.mark.codegen_independent
def test_a_failing_job_is_recorded_and_the_sweep_goes_on_then_a_rerun_finishes_only_it(tmp_path, omniglot32):
    """Job 1 cannot write its parameters (a directory is in the way): it records `failed`, jobs 0 and 2 complete,
    the command exits non-zero; rerun into the same sweep directory, only job 1 trains again."""
    sweep = tmp_path / "sweep"
    args = ["-m", *TINY, "train.epochs=1", "task.shot=1,2,3", "logger=none", f"hydra.sweep.dir={sweep}",
            "hydra.sweep.subdir=${hydra.job.num}"]
    blocked = sweep / "1" / "params.msgpack"
    blocked.mkdir(parents=True)
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode != 0
    summaries = {p.parent.name: read_summary(p.parent) for p in sweep.glob("*/summary.json")}
    assert len(summaries) == 3
    failed = summaries[blocked.parent.name]
    assert failed["status"] == "failed" and "params.msgpack" in failed["error"] and failed["config"]["task"]["shot"] == 2
    others = {name: s for name, s in summaries.items() if name != blocked.parent.name}
    assert all(s["status"] == "completed" for s in others.values())

    blocked.rmdir()
    before = {name: (sweep / name / "summary.json").read_bytes() for name in others}
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert read_summary(blocked.parent)["status"] == "completed"
    assert {name: (sweep / name / "summary.json").read_bytes() for name in others} == before  # not retrained


@pytest.mark.parametrize("argv", [["a=1", "b=2", "--multirun"], ["-m", "a=1", "b=2"], ["a=1", "-m"], ["--multirun"]])
def test_the_pinned_directory_joins_the_overrides_wherever_the_multirun_flag_stands(argv):
    """`... seed=0 --multirun` was refused by Hydra's parser (the directory was appended after the flag)."""
    from hydra._internal.utils import get_args_parser

    from esmeta.run import with_pinned

    args = get_args_parser().parse_args(with_pinned(argv, ["hydra.sweep.dir=/tmp/x"]))
    assert args.multirun and args.overrides == [*(a for a in argv if "=" in a), "hydra.sweep.dir=/tmp/x"]
