"""Rebuild the paper's Tables I-VII from our runs, beside the paper's numbers, plus the memory table; and the MAML
tables beyond the paper.

    python analysis/make_tables.py --results multirun/table2_smoke [--out DIR]
    python analysis/make_tables.py --results results/maml            # the MAML table and its memory table
    python analysis/make_tables.py --source wandb --entity E --project P

Prints the tables as markdown and writes, under --out (default: <results>/tables), for each table
`tableN.md`, `tableN.tex`, `tableN.csv` (one row per paper row: configuration, the paper's and our
numbers, run counts, notes), the same for `memory`, `maml` (a row per MAML task and outer estimator,
beside Finn et al. 2017) and `maml_memory` (the MAML memory benchmark: estimator x inner steps), and
`tables.md` with everything. Without --only, each table is built where it has input: Tables I-VII and
`memory` where there are ProtoNet runs, `maml` where there are MAML runs (finished or in progress),
`maml_memory` where --memory-jsonl or DIR/memory_vs_inner_steps.jsonl is.
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

from . import cli, maml, maml_memory  # noqa: E402
from .memory import memory_table, render_memory_latex, render_memory_markdown  # noqa: E402
from .paper import TABLE_KEYS, load_paper_table  # noqa: E402
from .tables import SPECS, build_table, render_latex, render_markdown, unplaced_runs  # noqa: E402

PROG = "make_tables"
PAPER_NAMES = (*TABLE_KEYS, "memory")
NAMES = (*PAPER_NAMES, "maml", "maml_memory")
DESCRIPTION = (
    "Rebuild Tables I-VII of Sheng & He 2021 from esmeta runs, each with our value beside the paper's "
    "(mean ± std over seeds, ddof=1; one seed: its test accuracy ± std over test episodes), plus the analytic "
    "memory table of Section II.E; and beyond the paper, the MAML table (our MAML runs beside Finn et al. 2017) "
    "and the MAML memory benchmark's table. Without --only, each is built where it has input. Prints markdown; "
    "writes markdown, LaTeX and CSV files to --out (default: DIR/tables under --results)."
)


def chosen(args, paper: cli.Results, maml_runs, maml_going, memory: tuple) -> list[str]:
    """--only, or every table with input: the paper's where there are ProtoNet runs, the MAML table where there are
    MAML runs, the memory benchmark's where its file was named or lies beside the results."""
    if args.only:
        return list(args.only)
    path, asked = memory
    names = list(PAPER_NAMES) if not (paper.runs.empty and paper.in_progress.empty) else []
    names += ["maml"] if not (maml_runs.empty and maml_going.empty) else []
    return names + (["maml_memory"] if asked or (path is not None and path.exists()) else [])


def run(argv: list[str] | None) -> int:
    args, entries, results = cli.prepare(PROG, DESCRIPTION, "tables", NAMES, argv, history_keys=(),  # summaries only
                                         require=False)
    paper_results, maml_runs, maml_going = cli.split_maml(results)
    memory = cli.memory_jsonl(args)
    names = chosen(args, paper_results, maml_runs, maml_going, memory)
    if not names or (set(names) - {"maml_memory"} and results.runs.empty
                     and not ("maml" in names and not maml_going.empty)):
        cli.require_runs(results)  # no usable run where one is needed: the error names the skipped runs
    cli.report_skipped(PROG, results)
    benchmark = cli.read_memory(memory[0]) if "maml_memory" in names else None
    out = cli.out_dir(args, "tables")  # checked before anything is printed or written

    documents: dict[str, tuple[str, str, object]] = {}  # name -> (markdown, latex, csv frame)
    for key in names:
        if key == "memory":
            table = memory_table(load_paper_table(entries["table3"]))
            documents[key] = (render_memory_markdown(table), render_memory_latex(table), table)
        elif key == "maml":
            built = maml.build_maml_table(entries[key], maml_runs, maml_going)
            documents[key] = (maml.render_markdown(built), maml.render_latex(built), built.long)
        elif key == "maml_memory":
            documents[key] = (maml_memory.render_markdown(benchmark, memory[0]), maml_memory.render_latex(benchmark),
                              maml_memory.memory_long(benchmark))
        else:
            paper = load_paper_table(entries[key])
            built = build_table(SPECS[key], entries[key], paper, paper_results.runs, paper_results.in_progress)
            documents[key] = (render_markdown(built), render_latex(built), built.long)
    # Unplaced means in no paper table at all: with --only, a run of a table not built here is not listed. A MAML
    # run is placed in the MAML table, never in the paper's (their meta-learner is the ProtoNet).
    every_table = [(SPECS[key], load_paper_table(entries[key])) for key in TABLE_KEYS]
    unplaced = unplaced_runs(paper_results.runs, every_table)

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
