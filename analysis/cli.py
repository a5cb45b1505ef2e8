"""What `make_tables` and `make_figures` share: arguments, loading a source, one-line errors.

Bad input (a missing results directory, one with no complete run, an unknown source, W&B without
--entity/--project, an unknown table or figure name, a missing or malformed memory benchmark file) raises
`UsageError`; `main` prints it as
`<prog>: error: <message>` on stderr and returns 2, before anything is written.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from esmeta.errors import first_line

from .load import Results, load_results
from .paper import Entry, load_manifest

SOURCES = ("local", "wandb")


class UsageError(Exception):
    """Bad command-line input: reported in one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), raised for `main` to report."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser(prog: str, description: str, out_name: str, only: Sequence[str]) -> Parser:
    """The common arguments; `out_name` is the default output folder under the results directory."""
    parser = Parser(prog=prog, description=description)
    parser.add_argument("--results", metavar="DIR", type=Path,
                        help="results directory: every run (a folder with summary.json and a `done` marker) "
                             "below it is read; required for --source local")
    parser.add_argument("--out", metavar="DIR", type=Path,
                        help=f"output directory (default: DIR/{out_name} under --results; with --source wandb "
                             f"and no --results: ./wandb-ENTITY-PROJECT/{out_name})")
    parser.add_argument("--source", default="local",
                        help="where the runs are: local (default, --results) or wandb (--entity, --project; "
                             "W&B's public API, full histories)")
    parser.add_argument("--entity", help="W&B entity (user or team), for --source wandb")
    parser.add_argument("--project", help="W&B project, for --source wandb")
    parser.add_argument("--group", help="only the runs of this W&B group (a sweep's: its name is in each run's "
                                        "group column), for --source wandb")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"only these ({', '.join(only)})")
    parser.add_argument("--manifest", type=Path, metavar="FILE",
                        help="sweep manifest (default: sweeps/manifest.yaml; built-in defaults without it)")
    parser.add_argument("--memory-jsonl", type=Path, metavar="FILE",
                        help="the MAML memory benchmark's output, for maml_memory (default: "
                             "DIR/memory_vs_inner_steps.jsonl under --results, used where it exists)")
    return parser


def check_args(args: argparse.Namespace, only: Sequence[str]) -> None:
    """Reject bad combinations before any work."""
    if args.source not in SOURCES:
        raise UsageError(f"--source {args.source!r} is not one of: {', '.join(SOURCES)}")
    if args.source == "local":
        if args.results is None:
            raise UsageError("--results DIR is required (the directory the sweeps wrote)")
        if not args.results.is_dir():
            raise UsageError(f"--results {args.results}: no such directory")
    else:
        lacking = [flag for flag, value in (("--entity", args.entity), ("--project", args.project)) if not value]
        if lacking:
            raise UsageError(f"--source wandb needs {' and '.join(lacking)}")
    if args.group and args.source != "wandb":
        raise UsageError("--group filters W&B runs: it goes with --source wandb")
    unknown = [name for name in args.only or [] if name not in only]
    if unknown:
        raise UsageError(f"--only {' '.join(unknown)}: unknown; choose from {', '.join(only)}")


def manifest(path: Path | None) -> dict[str, Entry]:
    """The sweep manifest (--manifest, else sweeps/manifest.yaml, else the built-in defaults)."""
    if path is not None and not path.is_file():
        raise UsageError(f"--manifest {path}: no such file")
    try:
        return load_manifest(path)
    except (ValueError, OSError) as e:
        raise UsageError(str(e)) from None


def out_dir(args: argparse.Namespace, out_name: str) -> Path:
    """--out, or its default (see --help), created and checked writable (a UsageError otherwise)."""
    if args.out is not None:
        out = args.out
    elif args.results is not None:
        out = args.results / out_name
    else:
        out = Path(f"wandb-{args.entity}-{args.project}") / out_name
    return writable(out)


def writable(out: Path, create: bool = True) -> Path:
    """`out`, created (with `create=False`: only checked that it could be) and writable, else a UsageError."""
    from esmeta.errors import ConfigError
    from esmeta.run_dir import ensure_writable_dir

    try:
        ensure_writable_dir(out, "--out", create=create)
    except ConfigError as e:
        raise UsageError(str(e).replace("set --out=", "pass --out ")) from None
    return out


def write_outputs(out: Path, files: dict[str, Callable[[Path], object]]) -> None:
    """Create `out` and call each writer on its file; a failed write is a UsageError naming the file."""
    path = out
    try:
        out.mkdir(parents=True, exist_ok=True)
        for name, write in files.items():
            path = out / name
            write(path)
    except OSError as e:
        raise UsageError(f"cannot write {path} ({e.strerror or e}); pass --out <a writable directory>") from None


def load_source(args: argparse.Namespace, history_keys: tuple[str, ...] | None = None, require: bool = True
                ) -> Results:
    """The runs of the chosen source (from W&B, only the history columns `history_keys`); no complete run at all
    is a usage error (with `require=False`, the caller decides)."""
    if args.source == "local":
        results = load_results(args.results)
    else:
        from .wandb_source import load_wandb

        try:
            results = load_wandb(args.entity, args.project, group=args.group, history_keys=history_keys)
        except Exception as e:  # network, auth, unknown project: report, never a traceback
            raise UsageError(f"could not read W&B project {args.entity}/{args.project}: "
                             f"{type(e).__name__}: {first_line(e)}") from None
    if require:
        require_runs(results)
    return results


def require_runs(results: Results, shown: int = 3) -> None:
    """A UsageError when no run was loaded, naming why the first `shown` skipped runs were left out."""
    if results.runs.empty:
        reasons = "; ".join(str(s) for s in results.skipped[:shown])
        more = f"; and {len(results.skipped) - shown} more" if len(results.skipped) > shown else ""
        detail = f"; {count(len(results.skipped), 'run')} skipped: {reasons}{more}" if results.skipped else ""
        raise UsageError(f"no complete runs in {results.source} (a run is complete once it writes `done`){detail}")


def split_maml(results: Results) -> tuple[Results, pd.DataFrame, pd.DataFrame]:
    """(the results less the MAML runs, for the paper's tables and figures; the MAML runs; those in progress)."""
    from dataclasses import replace

    from .maml import is_maml

    runs, going = results.runs, results.in_progress
    maml, maml_going = is_maml(runs), is_maml(going)
    paper = replace(results, runs=runs[~maml].reset_index(drop=True),
                    in_progress=going[~maml_going].reset_index(drop=True) if not going.empty else going)
    return paper, runs[maml], going[maml_going] if not going.empty else going


def memory_jsonl(args: argparse.Namespace) -> tuple[Path | None, bool]:
    """(the MAML memory benchmark's file, whether it was asked for): --memory-jsonl, else the default beside the
    results (None with neither)."""
    from .maml_memory import JSONL_NAME

    if args.memory_jsonl is not None:
        return args.memory_jsonl, True
    return (None if args.results is None else args.results / JSONL_NAME), False


def read_memory(path: Path | None) -> Any:
    """The benchmark's records (`maml_memory.read_memory`); a missing or malformed file is a UsageError."""
    from .maml_memory import JSONL_NAME, read_memory

    if path is None:
        raise UsageError(f"maml_memory needs --memory-jsonl FILE (or --results DIR holding {JSONL_NAME})")
    try:
        return read_memory(path)
    except ValueError as e:
        raise UsageError(f"maml_memory: {e}") from None


def describe(results: Results) -> str:
    """One line: how many runs, by status, how many were skipped and how many curves left out."""
    counts = results.runs["status"].value_counts() if not results.runs.empty else pd.Series(dtype=int)
    parts = ", ".join(f"{counts[s]} {s}" for s in counts.index)
    line = f"{count(len(results.runs), 'run')} from {results.source}" + (f" ({parts})" if parts else "")
    if results.skipped:
        line += f"; {count(len(results.skipped), 'run')} skipped"
    if results.curveless:
        line += f"; {count(len(results.curveless), 'curve')} left out"
    return line


def count(n: int, noun: str) -> str:
    """"1 run", "2 runs"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def report_skipped(prog: str, results: Results) -> None:
    """Every skipped run on stderr, one line each, then every run whose curve was left out."""
    for skipped in results.skipped:
        print(f"{prog}: skipped run {skipped.run}: {skipped.reason}", file=sys.stderr)
    for run in results.curveless:
        print(f"{prog}: left out the curve of run {run.run} (its summary is used): {run.reason}", file=sys.stderr)


def prepare(
    prog: str, description: str, out_name: str, only: Sequence[str], argv: list[str] | None,
    history_keys: tuple[str, ...] | None = None, require: bool = True,
) -> tuple[argparse.Namespace, dict[str, Entry], Results]:
    """What both scripts do first: parse and check the arguments, read the manifest, load the runs (with the
    history columns `history_keys`, for W&B) and list the skipped ones on stderr; with `require=False`, checking
    that there are runs and listing the skipped ones are the caller's (`require_runs`, `report_skipped`).
    Returns (args, manifest entries, results)."""
    args = build_parser(prog, description, out_name, only).parse_args(argv)
    check_args(args, only)
    entries = manifest(args.manifest)
    results = load_source(args, history_keys, require=require)
    if require:  # otherwise the caller reports them once it has checked what it needs
        report_skipped(prog, results)
    return args, entries, results


def main(prog: str, body: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run `body`, turning a `UsageError` into one line on stderr and exit status 2."""
    try:
        return body(argv)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
