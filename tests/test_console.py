"""What a run shows while it runs: the epoch's log line, and a progress bar that stays out of logs."""

import math

from esmeta.console import ProgressBar, epoch_line

RECORD = {"epoch": 3, "episode": 300, "train/loss": 1.23456, "val/accuracy": 0.875, "es/candidates_per_s": 512.04}


def test_the_epoch_line_names_progress_loss_accuracy_pace_and_times_as_h_mm_ss():
    line = epoch_line(RECORD, total=1000, epochs=10, elapsed=3725.4, eta=59.6)
    assert line == ("epoch 3/10 | episode 300/1000 | train loss 1.2346 | val accuracy 0.8750 | "
                    "512.0 candidates/s | elapsed 1:02:05 | ETA 0:01:00")


def test_an_epoch_without_validation_or_a_known_eta_says_so_instead_of_a_number():
    line = epoch_line({**RECORD, "val/accuracy": None}, total=1000, epochs=10, elapsed=0.0, eta=math.nan)
    assert "val accuracy - |" in line and line.endswith("elapsed 0:00:00 | ETA ?")


def test_an_exact_gradient_shows_episodes_per_second_and_an_untimed_epoch_a_dash():
    """backprop and forward_mode record no candidates/s (one candidate, mu: it was 0.8 "candidates/s")."""
    exact = {k: v for k, v in RECORD.items() if k != "es/candidates_per_s"} | {"train/episodes_per_s": 12.34}
    assert "| 12.3 episodes/s |" in epoch_line(exact, total=1000, epochs=10, elapsed=1.0, eta=1.0)
    untimed = {**RECORD, "es/candidates_per_s": math.nan}
    assert "| - candidates/s |" in epoch_line(untimed, total=1000, epochs=10, elapsed=1.0, eta=1.0)


def test_the_bar_is_off_when_asked_and_off_the_terminal_by_default(capsys):
    for mode in ("off", "auto"):  # pytest's stderr is not a terminal
        bar = ProgressBar(10, mode)
        bar.update(3, loss=1.0)
        bar.close()
        assert bar.bar is None
    assert capsys.readouterr().err == ""


def test_the_bar_when_forced_counts_episodes_and_shows_the_loss(capsys):
    bar = ProgressBar(10, "on", initial=2)
    bar.update(3, loss=0.5)
    assert bar.bar.n == 5 and bar.bar.postfix == "loss=0.500"
    bar.close()
