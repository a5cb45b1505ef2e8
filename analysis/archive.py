"""Archive finished runs for the repository: their small files, then the tables and figures rebuilt from them.

    python analysis/archive.py --results multirun/cpu --out results/cpu

Copies, for every complete run under --results (one with a `done` marker, a summary whose results lie in their
range and a readable `metrics.jsonl`), `summary.json`, `metrics.jsonl` and `done` to the same relative path under
--out; never checkpoints, parameters or W&B folders. A run already in the archive is replaced whole (a file the new
run lacks goes too); every run not archived is listed with why. --results and --out must not overlap: the archive
never writes into its source nor reads its own copies. Then rebuilds --out/tables and --out/figures from the whole
archive, as `make_tables` and `make_figures` would (tests/analysis/test_archive.py holds the two together).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: see make_tables.py
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))
    __package__ = _here.name

from . import cli, make_figures, make_tables  # noqa: E402
from .load import DONE, METRICS, SUMMARY, Skipped, load_results  # noqa: E402

PROG = "archive"
KEPT = (SUMMARY, METRICS, DONE)  # `done` last: a half-copied run is never read as complete


def overlap(a: Path, b: Path) -> bool:
    """Whether two directories are one, or one lies inside the other (after resolving links)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def archive_runs(results: Path, out: Path) -> list[str]:
    """Copy every complete run's small files from `results` to `out` (same relative paths); their run ids.
    Runs left out (incomplete, unreadable, out of range, linked into `out`) are listed on stderr."""
    loaded = load_results(results)
    cli.require_runs(loaded)
    left_out = [*loaded.skipped, *loaded.curveless]  # a curve that cannot be read is not published
    copied = []
    for run_id in sorted(set(loaded.runs["run_id"]) - {s.run for s in loaded.curveless}):
        source, target = results / run_id, out / run_id
        if overlap(source, out) or overlap(target, results):
            left_out.append(Skipped(run_id, "a symbolic link joins it to the other tree (--results, --out): the "
                                            "archive never writes into its source"))
            continue
        (target / DONE).unlink(missing_ok=True)  # first: a half-replaced run never reads as complete
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
            else:  # replaced whole: nothing of the earlier copy stays beside the new one
                (target / name).unlink(missing_ok=True)
        copied.append(run_id)
    for skipped in sorted(left_out, key=lambda s: s.run):
        print(f"{PROG}: not archived: {skipped}", file=sys.stderr)
    return copied


def run(argv: list[str] | None) -> int:
    parser = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, metavar="DIR", help="where the sweeps wrote")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the archive, e.g. results/cpu")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        raise cli.UsageError(f"--results {args.results}: no such directory")
    if overlap(args.results, args.out):
        raise cli.UsageError(f"--results {args.results} and --out {args.out} overlap: the archive would write into "
                             "its source or read its own copies; pass an --out outside --results")
    cli.out_dir(args, "")  # writable, checked before anything is copied, and so must the rebuild's folders be:
    for folder in ("tables", "figures"):  # copied runs are never left without their tables
        cli.writable(args.out / folder, create=False)
    try:
        copied = archive_runs(args.results, args.out)
    except OSError as e:
        raise cli.UsageError(f"cannot archive into {args.out} ({e.strerror or e}); pass --out <a writable directory>") from None
    print(f"archived {cli.count(len(copied), 'run')} into {args.out}", file=sys.stderr)
    rebuild = ["--results", str(args.out)]
    make_tables.run([*rebuild, "--out", str(args.out / "tables")])
    make_figures.run([*rebuild, "--out", str(args.out / "figures")])
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
