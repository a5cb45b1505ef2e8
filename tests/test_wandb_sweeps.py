"""esmeta.wandb_sweeps: the committed W&B sweep files run the same jobs as the stored Hydra sweeps.

A W&B agent builds each job's command line with W&B's own code (`create_sweep_command_args`),
used here too; every grid point must compose and validate into the row it names.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from wandb.sdk.launch.sweeps.utils import create_sweep_command_args

from esmeta.prelaunch import plan_command
from esmeta.sweep_expansion import expand, sweep_names
from esmeta.wandb_sweeps import main, render

pytestmark = pytest.mark.codegen_independent

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "sweeps" / "wandb"
# Table II's rows (conf/point/table2-*.yaml): (alpha, sigma), all wsr on a v3-8 with 16 channels.
TABLE2 = {
    "table2-a0.1-s0.001": (0.1, 0.001),
    "table2-a1-s0.01": (1.0, 0.01),
    "table2-a10-s0.1": (10.0, 0.1),
    "table2-a25-s0.25": (25.0, 0.25),
}


def agent_overrides(sweep: dict, point: dict[str, str]) -> list[str]:
    """The Hydra overrides a W&B agent passes to `python -m esmeta.run` for one grid point."""
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})
    head = ["${env}", "${interpreter}", "-m", "esmeta.run"]
    assert sweep["command"][: len(head)] == head
    out: list[str] = []
    for part in sweep["command"][len(head) :]:
        out += args["args_no_hyphens"] if part == "${args_no_hyphens}" else [part]
    return out


def test_table2_grid_points_compose_into_their_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)  # the job's run directory is relative to the working directory
    monkeypatch.setenv("WANDB_SWEEP_ID", "sweep01")  # what the agent sets for each job
    sweep = yaml.safe_load((COMMITTED / "table2.yaml").read_text())
    assert (sweep["method"], sweep["project"], list(sweep["parameters"])) == ("grid", "esmeta", ["point"])
    assert sorted(sweep["parameters"]["point"]["values"]) == sorted(TABLE2)
    for i, point in enumerate(sweep["parameters"]["point"]["values"]):
        monkeypatch.setenv("WANDB_RUN_ID", f"run{i}")
        overrides = agent_overrides(sweep, {"point": point})
        assert overrides[:2] == ["sweep=table2", "hydra.mode=RUN"] and overrides[-1] == f"point={point}"
        (config,), out, multirun = plan_command(overrides)  # one job, not the stored sweep's multirun
        assert (config.alpha, config.sigma) == TABLE2[point]
        assert (config.estimator.name, config.hardware.name, config.model.channels) == ("wsr", "tpu-v3-8", 16)
        assert (config.estimator.pop_per_shard, config.task.train_way, config.task.shot) == (128, 10, 5)
        # one directory per W&B run, planned, not created: checking a command writes nothing
        assert not multirun and out == Path("multirun") / "table2_wandb" / "sweep01" / f"run{i}"
        assert not (tmp_path / "multirun").exists()


@pytest.mark.parametrize("name", sweep_names())
def test_committed_files_are_what_the_generator_writes_now(name: str):
    path = COMMITTED / f"{name}.yaml"
    assert path.is_file(), f"{path} is missing; run `python -m esmeta.wandb_sweeps`"
    assert path.read_text() == render(name), f"{path} is out of date; run `python -m esmeta.wandb_sweeps`"


def test_no_committed_file_without_a_stored_sweep():
    assert sorted(p.stem for p in COMMITTED.glob("*.yaml")) == sweep_names()


def test_expand_follows_hydras_sweep_syntax():
    assert expand("point", "glob(table2-*)") == sorted(TABLE2)
    assert expand("point", "glob(table2-a1*,exclude=table2-a10*)") == ["table2-a1-s0.01"]
    assert expand("seed", "0,1,2") == ["0", "1", "2"]
    assert expand("seed", "range(0,6,2)") == ["0", "2", "4"]
    assert expand("alpha", "0.5") == ["0.5"]


def test_generator_writes_and_checks_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["--out", str(tmp_path), "table2", "figure5"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure5.yaml", "table2.yaml"]
    assert main(["--out", str(tmp_path), "--check", "table2"]) == 0
    (tmp_path / "table2.yaml").write_text("stale\n")
    assert main(["--out", str(tmp_path), "--check", "table2"]) == 1
    assert "out of date" in capsys.readouterr().err


def test_a_variant_gives_every_job_the_extra_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = tmp_path / "wandb_smoke"
    assert main(["table2", "--extra", "scale=smoke", "--extra", "seed=3", "--out", str(out)]) == 0
    text = (out / "table2.yaml").read_text()
    assert f"--extra scale=smoke --extra seed=3 --out {out}" in text.splitlines()[0]
    sweep = yaml.safe_load(text)
    assert sweep["name"] == "table2 scale=smoke seed=3"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_SWEEP_ID", "s")
    monkeypatch.setenv("WANDB_RUN_ID", "r")
    (config,), run_dir, multirun = plan_command(agent_overrides(sweep, {"point": "table2-a10-s0.1"}))
    assert not multirun and (config.alpha, config.seed, config.scale.name, config.train.epochs) == (10, 3, "smoke", 2)
    assert run_dir == Path("multirun") / "table2_wandb_scale-smoke_seed-3" / "s" / "r"  # apart from paper-scale runs
    assert main(["--out", str(out), "--check", "--extra", "scale=smoke", "--extra", "seed=3", "table2"]) == 0


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tabel2"], "sweep 'tabel2' is not a stored sweep; choose one of: figure1,"),
        (["--bogus"], "unrecognized arguments: --bogus"),
        (["table2", "--extra", "scale"], "--extra 'scale' is not KEY=VALUE"),
        (["table2", "--extra", "scale=bogus"], "scale=bogus is not an option; choose one of: cpu, paper, smoke"),
        (["table2", "--extra", "seed=0,1"], "--extra seed=0,1 sweeps values; a W&B grid takes only fixed settings"),
        (["table2", "--extra", "sweep=table3"], "the generated command sets sweep itself"),
    ],
)
def test_bad_input_is_one_line_and_exit_status_2(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert message in err and err.count("\n") == 1


def test_a_variant_without_out_is_written_apart_from_the_paper_scale_files(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch):
    """`--extra scale=smoke` alone neither overwrites sweeps/wandb/ nor sends its runs to table2_wandb/."""
    (tmp_path / "sweeps" / "wandb").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert main(["table2", "--extra", "scale=smoke"]) == 0
    assert not list((tmp_path / "sweeps" / "wandb").iterdir())
    sweep = yaml.safe_load((tmp_path / "sweeps" / "wandb_scale-smoke" / "table2.yaml").read_text())
    assert "hydra.run.dir=multirun/table2_wandb_scale-smoke/${oc.env:WANDB_SWEEP_ID}/${oc.env:WANDB_RUN_ID}" in \
        sweep["command"]
