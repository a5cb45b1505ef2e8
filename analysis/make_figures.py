"""Rebuild the paper's Figures 1-5 from our runs, as PNG and PDF; and the MAML memory figure beyond the paper.

    python analysis/make_figures.py --results multirun/figure2_paper [--out DIR]
    python analysis/make_figures.py --results results/maml --only maml_memory
    python analysis/make_figures.py --source wandb --entity E --project P

Writes `figureN.png` (960 x 720 pixels) and `figureN.pdf` under --out (default: <results>/figures)
and prints one line per figure: the files written, or why it was skipped (no runs for any of its
configurations) with the sweep that produces them. `maml_memory` draws the MAML memory benchmark's
peak memory against inner steps (--memory-jsonl, default DIR/memory_vs_inner_steps.jsonl; without --only,
drawn where that file is). MAML runs are never drawn in Figures 1-5 (their meta-learner is the ProtoNet); without
--only, Figures 1-5 are tried where there are ProtoNet runs. Where no paper figure is drawn (a multirun of your
own, MAML runs), `runs.png` and `runs.pdf` show the runs' validation curves instead, a line per group of runs that
differ only in their seed (see esmeta-compare).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python analysis/make_figures.py`): its folder is the package
    # Installed, the folder is `esmeta.analysis`; run from a checkout it is imported as the package `analysis`
    # from the repository root (PEP 366), installed or not, and never its modules as top-level ones.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))
    __package__ = _here.name

from . import cli  # noqa: E402
from .figures import SPECS, make_figures, runs_figure  # noqa: E402
from .maml_memory import memory_figure  # noqa: E402
from .paper import TABLE_KEYS, load_paper_table  # noqa: E402
from .tables import SPECS as SPECS_TABLES  # noqa: E402
from .tables import unplaced_runs  # noqa: E402
from .wandb_source import FIGURE_KEYS  # noqa: E402

PROG = "make_figures"
NAMES = (*SPECS, "maml_memory")
DESCRIPTION = (
    "Rebuild Figures 1-5 of Sheng & He 2021 from esmeta runs (PNG and PDF): 1 test accuracy against train way, "
    "2 validation curves per channel count, 3 finite-differences learning rate against accuracy, 4 one-shot "
    "against five-shot curves, 5 wsr against finite differences; and maml_memory, the MAML memory benchmark's "
    "peak memory against inner steps (--memory-jsonl). Writes to --out (default: DIR/figures under --results); a "
    "figure with no runs at all is reported and skipped; where none is drawn, runs.png shows the runs' validation "
    "curves, a line per group of runs that differ only in their seed."
)


def run(argv: list[str] | None) -> int:
    args, entries, results = cli.prepare(PROG, DESCRIPTION, "figures", NAMES, argv, history_keys=FIGURE_KEYS,
                                         require=False)
    paper_results = cli.split_maml(results)[0]  # MAML runs fill no paper figure
    memory_path, asked = cli.memory_jsonl(args)
    if args.only:
        keys = list(args.only)
    else:
        keys = list(SPECS) if not paper_results.runs.empty else []
        keys += ["maml_memory"] if asked or (memory_path is not None and memory_path.exists()) else []
    if set(keys) - {"maml_memory"} or results.runs.empty and not keys:
        cli.require_runs(results)
    cli.report_skipped(PROG, results)
    benchmark = cli.read_memory(memory_path) if "maml_memory" in keys else None
    print(f"{cli.describe(results)}.")
    out = cli.out_dir(args, "figures")
    paper_keys = [k for k in keys if k in SPECS]
    outcomes = make_figures(paper_results, entries, out, paper_keys) if paper_keys else []
    for outcome in outcomes:
        print(outcome.report(entries[outcome.key].command))
    if benchmark is not None:
        files = memory_figure(benchmark, out)
        print(f"maml_memory: wrote {', '.join(str(f) for f in files)}")
    if not args.only and not results.runs.empty and all(outcome.skipped for outcome in outcomes):
        drawn = runs_figure(results, out)  # no paper figure's runs: theirs, a line a group
        print(f"{drawn.key} skipped: {drawn.skipped}" if drawn.skipped else drawn.report(""))
    tables = [(SPECS_TABLES[key], load_paper_table(entries[key])) for key in TABLE_KEYS]
    for line in unplaced_runs(paper_results.runs, tables):  # in no paper row, so in no figure
        print(f"not placed: {line}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
