"""Archive finished runs for the repository: their small files, then the tables and figures rebuilt from them.

    python analysis/archive.py --results multirun/cpu --out results/cpu

Copies, for every complete run under --results (one with a `done` marker), `summary.json`, `metrics.jsonl`
and `done` to the same relative path under --out; never checkpoints, parameters or W&B folders. Runs already
in the archive are replaced by the new copy. Then rebuilds --out/tables and --out/figures from the whole
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
from .load import DONE, METRICS, SUMMARY, load_results  # noqa: E402

PROG = "archive"
KEPT = (SUMMARY, METRICS, DONE)  # `done` last: a half-copied run is never read as complete


def archive_runs(results: Path, out: Path) -> list[str]:
    """Copy every complete run's small files from `results` to `out` (same relative paths); their run ids."""
    loaded = load_results(results)
    if loaded.runs.empty:
        raise cli.UsageError(f"no complete runs in {results} (a run is complete once it writes `done`)")
    copied = []
    for run_id in loaded.runs["run_id"]:
        source, target = results / run_id, out / run_id
        (target / DONE).unlink(missing_ok=True)
        target.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (source / name).exists():
                shutil.copyfile(source / name, target / name)
        copied.append(run_id)
    return copied


def run(argv: list[str] | None) -> int:
    parser = cli.Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, required=True, metavar="DIR", help="where the sweeps wrote")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="the archive, e.g. results/cpu")
    args = parser.parse_args(argv)
    if not args.results.is_dir():
        raise cli.UsageError(f"--results {args.results}: no such directory")
    cli.out_dir(args, "")  # writable, checked before anything is copied
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
