"""Analysis of esmeta runs: load results into one DataFrame, rebuild the paper's tables and figures.

Modules, one job each:
  load          a results directory (the sweeps' output trees) -> `Results` (runs, curves, skipped)
  wandb_source  the same `Results` from W&B's public API
  paper         the paper's Tables I-VII (copied as CSV into `paper_tables/`) and the sweep manifest
  tables        match runs to the paper's rows; format, render (markdown, LaTeX, CSV)
  settings      the settings a paper row leaves unnamed: one per cell, the defaults first
  memory        the analytic memory table of Section II.E (backprop, forward mode, ES)
  figures       Figures 1-5 (matplotlib, Agg)
  cli           argument parsing and error reporting shared by the two scripts

Installed as `esmeta.analysis` (package-dir in pyproject.toml), never as a top-level `analysis`.
Scripts: `esmeta-tables --results DIR` and `esmeta-figures --results DIR`; from a checkout, the same as
`python analysis/make_tables.py --results DIR` and `python analysis/make_figures.py --results DIR`.
The results files (`summary.json`, `metrics.jsonl`, `done`) are the only interface to training:
nothing here imports the training code to load runs.
"""
