"""What a run shows while it runs: the terminal's progress bar and the one log line of each epoch."""

from __future__ import annotations

import math
import sys


class ProgressBar:
    """A tqdm bar on a terminal; silent otherwise (or as `train.progress` says). While the bar shows, log records
    that would go to the console (Hydra's stdout handler) are written above it instead of through it; the job's
    `.log` file is not touched."""

    def __init__(self, total: int, mode: str, initial: int = 0):
        enabled = mode == "on" or (mode == "auto" and sys.stderr.isatty())
        self.bar = None
        self._redirect = None
        if enabled:
            from tqdm import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(total=total, initial=initial, unit="ep", dynamic_ncols=True, leave=False)
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()

    def update(self, n: int = 1, **postfix: float) -> None:
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix({k: f"{v:.3f}" for k, v in postfix.items()}, refresh=False)
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None


def _clock(seconds: float) -> str:
    """Seconds as h:mm:ss."""
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def epoch_line(record: dict[str, float], total: int, epochs: int, elapsed: float, eta: float) -> str:
    """The one progress line an epoch logs (`esmeta.train`, INFO): what a job's `.log` shows of a run."""
    val = record.get("val/accuracy")
    return (
        f"epoch {record['epoch']}/{epochs} | episode {record['episode']}/{total} | "
        f"train loss {record['train/loss']:.4f} | val accuracy {'-' if val is None else f'{val:.4f}'} | "
        f"{_rate(record)} | elapsed {_clock(elapsed)} | ETA {_clock(eta)}"
    )


def _rate(record: dict[str, float]) -> str:
    """The pace that means something for the estimator: candidates/s for a population, else episodes/s."""
    key, unit = ("es/candidates_per_s", "candidates/s") if "es/candidates_per_s" in record else \
        ("train/episodes_per_s", "episodes/s")
    value = record.get(key, math.nan)
    return f"{value:.1f} {unit}" if math.isfinite(value) else f"- {unit}"
