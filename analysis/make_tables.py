"""Rebuild the paper's Tables I-VII from our runs, beside the paper's numbers, plus the memory table.

    python analysis/make_tables.py --results multirun/table2_smoke [--out DIR]
    python analysis/make_tables.py --source wandb --entity E --project P

Prints the tables as markdown and writes, under --out (default: <results>/tables), for each table
`tableN.md`, `tableN.tex`, `tableN.csv` (one row per paper row: configuration, the paper's and our
numbers, run counts, notes), the same for `memory`, and `tables.md` with everything.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script (`python analysis/make_tables.py`): its folder is the package
    # Installed, the folder is `esmeta.analysis`; run from a checkout it is imported as the package `analysis`
    # from the repository root (PEP 366), installed or not, and never its modules as top-level ones.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))
    __package__ = _here.name

from . import cli  # noqa: E402
from .memory import memory_table, render_memory_latex, render_memory_markdown  # noqa: E402
from .paper import TABLE_KEYS, load_paper_table  # noqa: E402
from .tables import SPECS, build_table, render_latex, render_markdown, unplaced_runs  # noqa: E402

PROG = "make_tables"
NAMES = (*TABLE_KEYS, "memory")
DESCRIPTION = (
    "Rebuild Tables I-VII of Sheng & He 2021 from esmeta runs, each with our value beside the paper's "
    "(mean ± std over seeds, ddof=1; one seed: its test accuracy ± std over test episodes), plus the analytic "
    "memory table of Section II.E. Prints markdown; writes markdown, LaTeX and CSV files to --out "
    "(default: DIR/tables under --results)."
)


def run(argv: list[str] | None) -> int:
    args, entries, results = cli.prepare(PROG, DESCRIPTION, "tables", NAMES, argv, history_keys=())  # summaries only
    names = args.only or list(NAMES)
    out = cli.out_dir(args, "tables")  # checked before anything is printed or written

    documents: dict[str, tuple[str, str, object]] = {}  # name -> (markdown, latex, csv frame)
    for key in names:
        if key == "memory":
            table = memory_table(load_paper_table(entries["table3"]))
            documents[key] = (render_memory_markdown(table), render_memory_latex(table), table)
        else:
            paper = load_paper_table(entries[key])
            built = build_table(SPECS[key], entries[key], paper, results.runs, results.in_progress)
            documents[key] = (render_markdown(built), render_latex(built), built.long)
    # Unplaced means in no paper table at all: with --only, a run of a table not built here is not listed.
    every_table = [(SPECS[key], load_paper_table(entries[key])) for key in TABLE_KEYS]
    unplaced = unplaced_runs(results.runs, every_table)

    header = f"# Tables\n\n{cli.describe(results)}.\n"
    skipped = "".join(f"- {s}\n" for s in results.skipped)
    full = "\n".join([header] + [doc[0] for doc in documents.values()])
    if unplaced:
        full += (f"\n## Runs not placed in any table ({len(unplaced)})\n\nTheir requested configuration matches no "
                 "paper row; each line names the nearest row and the settings that differ.\n\n"
                 + "".join(f"- {line}\n" for line in unplaced))
    if skipped:
        full += f"\n## Skipped runs (no `done` marker, unreadable, or results out of range)\n\n{skipped}"
    print(full, end="")
    if unplaced:
        print(f"{PROG}: {cli.count(len(unplaced), 'run')} placed in no table (listed under 'Runs not placed')",
              file=sys.stderr)

    files: dict = {}
    for key, (markdown, latex, frame) in documents.items():
        files[f"{key}.md"] = lambda p, text=markdown: p.write_text(text)
        files[f"{key}.tex"] = lambda p, text=latex: p.write_text(text)
        files[f"{key}.csv"] = lambda p, frame=frame: frame.to_csv(p, index=False)
    files["tables.md"] = lambda p: p.write_text(full)
    cli.write_outputs(out, files)
    print(f"\nWrote {cli.count(len(documents), 'table')} (.md, .tex, .csv) and tables.md to {out}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.main(PROG, run, argv)


if __name__ == "__main__":
    sys.exit(main())
