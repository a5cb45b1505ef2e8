"""Measured peak memory of one MAML outer step against its inner steps K: a table and a figure.

The input is what `benchmarks/memory_vs_inner_steps.py` prints, one JSON object a line for each (estimator, K):
`estimator` (second_order, first_order, forward_mode, wsr, finite_diff), `inner_steps`, `peak_bytes` (XLA's
compiled memory analysis: argument + output + temp - alias bytes) and the configuration it measured (`channels`,
`way`, `shot`, `query`, `image_size`, `backend`, `jax`). Its archive is `results/maml/memory_vs_inner_steps.jsonl`;
the scripts read `<results>/memory_vs_inner_steps.jsonl` unless `--memory-jsonl FILE` names another.

Table: a row per estimator, a column per K (MiB), and the growth from the smallest K to the largest
(peak at K_max / peak at K_min: second order grows with K, the others stay flat). Figure: peak MiB against K,
log-scale axes, a line per estimator. A file that is missing, empty or has a line that is not such a record is
a ValueError naming the file and the line, never a partial table.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

JSONL_NAME = "memory_vs_inner_steps.jsonl"
BENCHMARK = "python benchmarks/memory_vs_inner_steps.py"
MIB = 2**20
# The benchmark's estimators, in its order, and how the tables name them.
LABELS = {
    "second_order": "second-order (backprop)",
    "first_order": "first-order",
    "forward_mode": "forward mode",
    "wsr": "ES (wsr)",
    "finite_diff": "finite differences",
}
SETTING = ("channels", "way", "shot", "query", "image_size")  # one file measures one configuration
TITLE = "MAML: peak memory of one outer step against inner steps K"


def _count(value: Any) -> int | None:
    """A JSON integer (1.0 too), None for anything else."""
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return int(value) if ok and float(value).is_integer() else None


def read_memory(path: Path) -> pd.DataFrame:
    """The benchmark's records, a row per (estimator, K), in the benchmark's estimator order then K; a ValueError
    naming the file (and the line) where it is missing, empty, or holds anything else."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file; write it with `{BENCHMARK} > {path}`") from None
    except OSError as e:
        raise ValueError(f"{path}: unreadable ({e.strerror or e})") from None
    rows, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            row = json.loads(line)
        except ValueError:
            raise ValueError(f"{where}: not JSON ({line[:40]!r}); expected one record of {BENCHMARK} a line") from None
        if not isinstance(row, dict):
            raise ValueError(f"{where}: {line[:40]!r} is not a JSON object")
        if row.get("estimator") not in LABELS:
            raise ValueError(f"{where}: estimator {row.get('estimator')!r} is not one of {', '.join(LABELS)}")
        for key in ("inner_steps", "peak_bytes", *SETTING):
            value = _count(row.get(key))
            if value is None or value < (1 if key != "peak_bytes" else 0):
                raise ValueError(f"{where}: {key} is {row.get(key)!r}, not a positive whole number")
            row[key] = value
        key = (row["estimator"], row["inner_steps"])
        if key in seen:
            raise ValueError(f"{where}: {key[0]} at K={key[1]} again (first on line {seen[key]}); one run a file")
        seen[key] = number
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no records; write it with `{BENCHMARK} > {path}`")
    frame = pd.DataFrame.from_records(rows)
    mixed = [f"{k} {sorted(frame[k].unique())}" for k in SETTING if frame[k].nunique() > 1]
    if mixed:
        raise ValueError(f"{path}: records of several configurations ({'; '.join(mixed)}); one run a file")
    order = {name: i for i, name in enumerate(LABELS)}
    return frame.sort_values(["estimator", "inner_steps"], key=lambda s: s.map(order) if s.name == "estimator" else s,
                             kind="stable").reset_index(drop=True)


def memory_long(frame: pd.DataFrame) -> pd.DataFrame:
    """The CSV: a row per (estimator, K) with MiB and each estimator's growth from its smallest K."""
    out = frame[["estimator", "inner_steps", "peak_bytes"]].copy()
    out.insert(1, "label", out["estimator"].map(LABELS))
    out["peak_mib"] = out["peak_bytes"] / MIB
    first = out.groupby("estimator")["peak_bytes"].transform("first")  # sorted by K: the smallest K's
    out["growth_from_min_k"] = out["peak_bytes"] / first
    for key in (*SETTING, "backend", "jax"):
        if key in frame.columns:
            out[key] = frame[key]
    return out


def _mib(value: float) -> str:
    return f"{value / MIB:,.2f}"


def memory_display(frame: pd.DataFrame) -> pd.DataFrame:
    """Estimator x K in MiB, and the growth K_max / K_min; a K an estimator was not measured at reads "-"."""
    ks = sorted(frame["inner_steps"].unique())
    rows = []
    for estimator, runs in frame.groupby("estimator", sort=False):
        peak = dict(zip(runs["inner_steps"], runs["peak_bytes"]))
        low, high = min(peak), max(peak)
        growth = f"{peak[high] / peak[low]:.2f}x" if peak[low] and high > low else "-"
        rows.append([LABELS[estimator], *(_mib(peak[k]) if k in peak else "-" for k in ks), growth])
    growth = f"Growth K={ks[-1]} / K={ks[0]}" if len(ks) > 1 else "Growth"
    return pd.DataFrame(rows, columns=["Estimator", *(f"K={k} (MiB)" for k in ks), growth])


def setting_text(frame: pd.DataFrame) -> str:
    """"32 channels, 5-way 1-shot, 1 query a class, 28 px" (one file holds one configuration)."""
    row = frame.iloc[0]
    return (f"{row['channels']} channels, {row['way']}-way {row['shot']}-shot, {row['query']} "
            f"quer{'y' if row['query'] == 1 else 'ies'} a class, {row['image_size']} px")


def caption(frame: pd.DataFrame) -> str:
    row = frame.iloc[0]
    where = ", ".join(f"{k} {row[k]}" for k in ("backend", "jax") if k in frame.columns and isinstance(row[k], str))
    return (f"Peak bytes of one jitted outer step (XLA's compiled memory analysis: arguments + outputs + temporaries "
            f"- aliases), {setting_text(frame)}{f'; {where}' if where else ''}; from `{BENCHMARK}`. Second order keeps "
            "every inner step's activations for the reverse pass; the others keep one.")


def render_markdown(frame: pd.DataFrame, source: Path) -> str:
    from .tables import markdown_table

    parts = [f"## {TITLE}", "", markdown_table(memory_display(frame)), "", caption(frame), "", f"Source: `{source}`."]
    return "\n".join(parts) + "\n"


def render_latex(frame: pd.DataFrame) -> str:
    from .tables import frame_latex

    return frame_latex(memory_display(frame), f"{TITLE}. {caption(frame)}", "tab:maml_memory")


def memory_figure(frame: pd.DataFrame, out: Path, key: str = "maml_memory") -> list[Path]:
    """Peak MiB against K (both axes logarithmic, ticks at the measured K), a line per estimator; the files
    written (`out/<key>.png`, `.pdf`)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullLocator

    from .figures import DPI, _new_axes

    fig, ax = _new_axes()
    try:
        for estimator, runs in frame.groupby("estimator", sort=False):
            ax.plot(runs["inner_steps"], runs["peak_bytes"] / MIB, marker="o", label=LABELS[estimator])
        ks = sorted(frame["inner_steps"].unique())
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(ks, [str(k) for k in ks])
        ax.set_xlabel("inner steps K")
        ax.set_ylabel("peak memory of one outer step (MiB)")
        ax.set_title(f"{TITLE}\n{setting_text(frame)}", fontsize="medium")
        ax.legend(fontsize="small")
        out.mkdir(parents=True, exist_ok=True)
        files = [out / f"{key}.png", out / f"{key}.pdf"]
        for f in files:
            fig.savefig(f, dpi=DPI)
        return files
    finally:
        plt.close(fig)
