"""The full-budget reproduction queue: runs that take many allocations, continued one at a time, in order.

`sweeps/full_budget.yaml` lists the runs (point, seed); each lives in `<results>/<point>/seed<seed>/`.

  python -m esmeta.reproduce status                  finished, in progress (episode N of M) or not started
  python -m esmeta.reproduce continue --minutes 170  train the first unfinished run for the rest of this
                                                     allocation, then the next one, until the time is spent
  ... continue --minutes 170 --commit-every 40       also commit the run's directory to git (results only:
                                                     never its W&B folder) every 40 minutes and when it stops

Each run is `python -m esmeta.run point=<p> seed=<s> hydra.run.dir=<dir> train.allocation_minutes=<left>`, in
its own process: the same command a user would type, so it resumes, stops and records exactly as that does
(esmeta.allocation). SIGTERM (the end of a SLURM job) is passed on to it: it checkpoints after its step, is
committed if asked, and the command exits as the run did (143). Exit 3: the allocation ended first.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, NoReturn

import yaml

from esmeta.allocation import ALLOCATION_EXIT
from esmeta.errors import EsmetaError, first_line
from esmeta.run_dir import CHECKPOINT, DONE, LOCK, SUMMARY, TMP_SUFFIX

QUEUE = Path("sweeps/full_budget.yaml")
MIN_MINUTES = 5.0  # below this, a run would spend its allocation compiling: leave it to the next one


@dataclass(frozen=True)
class Entry:
    """One run of the queue and where it lives."""

    point: str
    seed: int
    directory: Path
    overrides: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.point} seed {self.seed}"

    def command(self, minutes: float) -> list[str]:
        """The esmeta.run command that starts or continues this run for `minutes` of wall clock."""
        return [sys.executable, "-m", "esmeta.run", f"point={self.point}", f"seed={self.seed}", *self.overrides,
                f"hydra.run.dir={self.directory}", f"train.allocation_minutes={max(minutes, 0.01):.2f}"]


@dataclass
class State:
    """What an entry's directory holds: finished (with its summary), in progress (its checkpoint), or neither."""

    kind: str  # "finished", "in progress", "not started"
    episode: int = 0
    total: int = 0
    cpu_seconds: float = 0.0
    commits: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)  # in progress: the last epoch's record (metrics.jsonl's row)

    def describe(self) -> str:
        cost = (f"{self.cpu_seconds / 3600:.1f} CPU-h" if self.cpu_seconds else "CPU time not recorded") + (
            f" ({', '.join(self.commits)})" if self.commits else "")
        if self.kind == "finished":
            s = self.summary
            accuracy = s.get("test_accuracy")
            shown = "no test accuracy" if accuracy is None else (
                f"test {accuracy:.3f} ± {s.get('test_accuracy_std') or 0:.3f} over {s.get('test_episodes')} episodes")
            return f"finished: {self.episode:,} episodes, {shown}; {cost}"
        if self.kind == "in progress":
            return f"in progress: episode {self.episode:,} of {self.total:,}; {cost} so far" + self._pace()
        return self.kind


    def _pace(self) -> str:
        """The last epoch's loss, validation accuracy and pace, and the hours left at that pace."""
        r, parts = self.last, []
        if isinstance(r.get("train/loss"), float):
            parts.append(f"train loss {r['train/loss']:.3f}")
        if isinstance(r.get("val/accuracy"), float):
            parts.append(f"val {r['val/accuracy']:.3f}")
        rate = r.get("train/episodes_per_s")
        if isinstance(rate, float) and rate > 0:
            parts.append(f"{rate:.2f} episodes/s, about {(self.total - self.episode) / rate / 3600:.1f} h left at that pace")
        return f"; last epoch: {', '.join(parts)}" if parts else ""


class UsageError(EsmetaError):
    """A bad queue file or command line: one line, exit status 2."""


def load_queue(path: Path, results: Path | None = None) -> list[Entry]:
    """The queue file's runs, each point checked against conf/point/ before anything runs."""
    if not path.is_file():
        raise UsageError(f"no queue file {path}; pass --queue with a file like sweeps/full_budget.yaml")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise UsageError(f"{path} is not valid YAML ({first_line(e)}); fix the file") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, list) or not runs:
        raise UsageError(f"{path} lists no runs; it needs `runs:` with entries like {{point: table1-backprop-1shot, "
                         "seed: 0}")
    root = Path(results if results is not None else data.get("results", "results/paper")).resolve()
    points = resources.files("esmeta.conf") / "point"
    entries = []
    for i, run in enumerate(runs, 1):
        if not isinstance(run, dict) or not isinstance(run.get("point"), str):
            raise UsageError(f"{path}: run {i} has no point; write it as {{point: <name>, seed: <int>}}")
        point, seed, overrides = run["point"], run.get("seed", 0), run.get("overrides", [])
        if not (points / f"{point}.yaml").is_file():
            raise UsageError(f"{path}: run {i}: no point {point!r} in conf/point/; fix the name")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise UsageError(f"{path}: run {i} ({point}): seed must be a non-negative integer, got {seed!r}")
        if not isinstance(overrides, list) or not all(isinstance(o, str) and "=" in o for o in overrides):
            raise UsageError(f"{path}: run {i} ({point}): overrides must be a list of key=value strings")
        entries.append(Entry(point, seed, root / point / f"seed{seed}", tuple(overrides)))
    seen = set()
    for e in entries:
        if e.directory in seen:
            raise UsageError(f"{path}: {e.name} is listed twice; list each run once")
        seen.add(e.directory)
    return entries


def _segments_summary(segments: list[dict[str, Any]]) -> tuple[float, list[str]]:
    """Total CPU seconds and the short commits (in order, once each) of the processes that trained a run."""
    commits: list[str] = []
    for s in segments:
        short = (s.get("commit") or "unknown")[:7]
        if short not in commits:
            commits.append(short)
    return sum(float(s.get("cpu_s") or 0) for s in segments), commits


def state_of(entry: Entry) -> State:
    """Read the entry's directory: a `done` marker means finished; a checkpoint, in progress; else not started."""
    from esmeta.checkpoint import read  # checksummed, reads no JAX arrays into devices

    d = entry.directory
    if (d / DONE).is_file() and (d / SUMMARY).is_file():
        summary = json.loads((d / SUMMARY).read_text())
        cpu, commits = _segments_summary(summary.get("segments") or [])
        commits = commits or [c[:7] for c in [(summary.get("provenance") or {}).get("commit")] if c]
        return State("finished", int(summary.get("episodes") or 0), int(summary.get("episodes") or 0),
                     float(summary.get("cpu_seconds") or cpu), commits, summary)
    if (d / CHECKPOINT).is_file():
        saved = read(d / CHECKPOINT)
        train = saved.config.get("train", {})
        cpu, commits = _segments_summary(saved.progress.segments)
        total = int(train.get("epochs", 0)) * int(train.get("episodes_per_epoch", 0))
        last = saved.progress.records[-1] if saved.progress.records else {}
        return State("in progress", saved.progress.step, total, cpu, commits, last=last)
    return State("not started")


def status(entries: list[Entry]) -> str:
    """One line per run, the next to continue marked."""
    states = [state_of(e) for e in entries]
    nxt = next((i for i, s in enumerate(states) if s.kind != "finished"), None)
    width = max(len(e.name) for e in entries)
    lines = [f"{i + 1:>2}. {e.name:<{width}}  {s.describe()}" + ("   <- next" if i == nxt else "")
             for i, (e, s) in enumerate(zip(entries, states, strict=True))]
    done = sum(s.kind == "finished" for s in states)
    lines.append(f"{done} of {len(entries)} finished" + ("" if nxt is None else f"; next: {entries[nxt].name}"))
    return "\n".join(lines)


class Git:
    """Commits of one run directory, and nothing else, in the repository that holds it."""

    def __init__(self, results: Path):
        results.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["git", "-C", str(results), "rev-parse", "--show-toplevel"], capture_output=True, text=True)
        if done.returncode != 0:
            raise UsageError(f"--commit-every needs {results} inside a git repository (git: {_first(done.stderr)}); "
                             "drop the flag or keep the results in a clone")
        self.top = Path(done.stdout.strip())

    def commit(self, directory: Path, message: str) -> str:
        """Add and commit `directory` (its results, never W&B folders); returns what happened, in a few words."""
        rel = directory.resolve().relative_to(self.top.resolve())
        tracked = self._git("ls-files", "-z", "--", str(rel)).stdout.split("\0")
        paths = sorted({*self._results(rel), *(t for t in tracked if t and not (self.top / t).exists())})
        for args in (["add", "-A", "--", *paths], ["diff", "--cached", "--quiet", "--", str(rel)],
                     ["commit", "-q", "-m", message, "--", str(rel)]):
            done = self._git(*args)
            if args[0] == "diff":
                if done.returncode == 0:
                    return "nothing new to commit"
            elif done.returncode != 0:
                return f"git {args[0]} failed, nothing committed: {_first(done.stderr or done.stdout)}"
        return f"committed: {message}"

    def _results(self, rel: Path) -> list[str]:
        """The run's files, relative to the repository: all but W&B folders, the lock and half-written files."""
        found = []
        for path in sorted((self.top / rel).rglob("*")):
            inside = path.relative_to(self.top / rel).parts
            if path.is_file() and inside[0] != "wandb" and not (path.name == LOCK or (
                    path.name.startswith(".") and path.name.endswith(TMP_SUFFIX))):
                found.append(str(path.relative_to(self.top)))
        return found

    def _git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(self.top), *args], capture_output=True, text=True)


def _first(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _commit_message(entry: Entry, why: str) -> str:
    s = state_of(entry)
    reached = f"episode {s.episode:,} of {s.total:,}" if s.kind == "in progress" else f"{s.kind}, {s.episode:,} episodes"
    return f"{entry.point} seed{entry.seed}: {reached} ({why}, by esmeta.reproduce)"


class Signals:
    """SIGTERM passed on to the run (which checkpoints after its step); Ctrl-C reaches it by itself (same process
    group), so it is only noted here."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.received: int | None = None

    def __enter__(self) -> Signals:
        self.previous = {s: signal.signal(s, self._note) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _note(self, signum: int, frame: Any) -> None:
        self.received = signum
        if signum == signal.SIGTERM and self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def __exit__(self, *exc: object) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)


def continue_queue(entries: list[Entry], minutes: float, commit_every: float, min_minutes: float = MIN_MINUTES,
                   say: Any = print) -> int:
    """Train the first unfinished runs, in order, for `minutes` of wall clock in all; the exit status (0: every
    run finished, 3: the allocation ended, otherwise the stopped or failed run's own)."""
    start = time.monotonic()
    git = Git(entries[0].directory.parent.parent) if commit_every else None
    with Signals() as signals:
        for entry in entries:
            state = state_of(entry)
            if state.kind == "finished":
                continue
            left = minutes - (time.monotonic() - start) / 60
            if left < min_minutes:
                say(f"esmeta.reproduce: {left:.1f} minutes left, fewer than {min_minutes:g}: {entry.name} waits for "
                    "the next allocation")
                return ALLOCATION_EXIT
            say(f"esmeta.reproduce: {entry.name} ({state.describe()}) for {left:.1f} minutes")
            code = _train(entry, left, commit_every, git, signals, say)
            if code != 0:
                return code
            if signals.received is not None:
                return 128 + signals.received
    say("esmeta.reproduce: every run in the queue is finished")
    return 0


def _train(entry: Entry, minutes: float, commit_every: float, git: Git | None, signals: Signals, say: Any) -> int:
    """One run for at most `minutes`, committed every `commit_every` minutes and when it ends (with git)."""
    entry.directory.parent.mkdir(parents=True, exist_ok=True)
    child = subprocess.Popen(entry.command(minutes))
    signals.child = child
    last = time.monotonic()
    while True:
        try:
            code = child.wait(timeout=5)
            break
        except subprocess.TimeoutExpired:
            if git is not None and time.monotonic() - last >= 60 * commit_every:
                last = time.monotonic()
                if (entry.directory / CHECKPOINT).is_file():
                    say(f"esmeta.reproduce: {git.commit(entry.directory, _commit_message(entry, 'in progress'))}")
    signals.child = None
    why = {0: "finished", ALLOCATION_EXIT: "allocation end"}.get(code) or (
        signal.Signals(code - 128).name if code > 128 else f"exit {code}")
    if git is not None and state_of(entry).kind != "not started":
        say(f"esmeta.reproduce: {git.commit(entry.directory, _commit_message(entry, why))}")
    if code not in (0, ALLOCATION_EXIT) and code <= 128:
        say(f"esmeta.reproduce: {entry.name} failed (exit {code}); its log: {entry.directory / 'run.log'}")
    return code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m esmeta.reproduce", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("status", "continue"))
    parser.add_argument("--queue", type=Path, default=QUEUE, help=f"the queue file (default {QUEUE})")
    parser.add_argument("--results", type=Path, help="where the runs live (default: the queue file's `results`)")
    parser.add_argument("--minutes", type=float, help="continue: wall-clock minutes this allocation may train")
    parser.add_argument("--commit-every", type=float, default=0.0,
                        help="continue: commit the run's directory every this many minutes and when it stops (0: never)")
    parser.add_argument("--min-minutes", type=float, default=MIN_MINUTES,
                        help=f"continue: start no run with fewer minutes left (default {MIN_MINUTES:g})")
    try:
        args = parser.parse_args(argv)
        entries = load_queue(args.queue, args.results)
        if args.action == "status":
            print(status(entries))
            return 0
        if args.minutes is None or args.minutes <= 0:
            raise UsageError("continue needs --minutes, the wall-clock minutes this allocation may train (> 0)")
        if args.commit_every < 0:
            raise UsageError(f"--commit-every must be >= 0 minutes, got {args.commit_every:g}")
        return continue_queue(entries, args.minutes, args.commit_every, args.min_minutes,
                              say=lambda line: print(line, file=sys.stderr, flush=True))
    except EsmetaError as e:
        print(f"esmeta.reproduce: error: {first_line(e)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
