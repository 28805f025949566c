"""The text report of a study, from its run folder.

:func:`report` renders the ticket's per-layer sparsity at every level and the per-level
accuracy of every branch, as aligned text, GitHub markdown or CSV (the CSV is also the run's
``summary_stats.csv``, :func:`write_summary_stats`). It reads ``summary.csv``, ``layers.csv``
and ``config.toml`` through :mod:`lth.storage`, where their format is declared. Percentages
and accuracies are in percent (0-100) throughout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import LTHError
from .storage import (
    SUMMARY_STATS,
    LayerRow,
    SummaryRow,
    atomic_write,
    branch_order,
    check_output_path,
    csv_text,
    load_config,
    load_layers,
    load_summary,
)

__all__ = [
    "FORMATS",
    "Stat",
    "aggregate",
    "describe_config",
    "fmt_pct",
    "load_summary",
    "report",
    "save_report",
    "write_summary_stats",
]

FORMATS = ("table", "md", "csv")


def describe_config(config: dict) -> str:
    """A one-line description of a study from its config, e.g. 'lenet_300_100 on mnist, ...'."""
    parts = []
    if "model" in config:
        parts.append(
            str(config["model"]) + (f" on {config['dataset']}" if "dataset" in config else "")
        )
    elif "dataset" in config:
        parts.append(str(config["dataset"]))
    if "pruning" in config:
        parts.append(f"{config['pruning']} pruning")
    if "rate" in config:
        out = config.get("output_rate")
        extra = f" (output layer {out})" if out not in (None, "", config["rate"]) else ""
        parts.append(f"rate {config['rate']}{extra}")
    if "reset" in config:
        k = config.get("rewind_iteration") or 0
        at = f" to iteration {k}" if config["reset"] == "rewind" and k else ""
        parts.append(f"reset {config['reset']}{at}")
    for key, fmt in (
        ("levels", "{} levels"),
        ("iterations", "{} iterations per level"),
        ("replicates", "{} replicates"),
    ):
        if config.get(key):
            parts.append(fmt.format(config[key]))
    return ", ".join(parts)


# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """One quantity of one branch at one level, over its replicates.

    ``mean``/``std``/``min``/``max``/``n`` use only replicates that did not diverge and have a
    finite value; ``std`` is the sample standard deviation (ddof=1), NaN when ``n < 2``.
    ``values`` holds every replicate's value by replicate, ``diverged`` the diverged replicates.
    """

    branch: str
    level: int
    weights_remaining: float
    mean: float
    std: float
    min: float
    max: float
    n: int
    replicates: int
    diverged: tuple[int, ...]
    values: tuple[tuple[int, float], ...]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def aggregate(rows: Iterable[SummaryRow], field: str) -> list[Stat]:
    """Per branch and level, statistics of summary column ``field`` over replicates.

    Ordered by branch (see :func:`branch_order`) then level.
    """
    groups: dict[tuple[str, int], list[SummaryRow]] = {}
    for r in rows:
        groups.setdefault((r.branch, r.level), []).append(r)
    order = {b: i for i, b in enumerate(branch_order(b for b, _ in groups))}
    out = []
    for (branch, level), group in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])
    ):
        group.sort(key=lambda r: r.replicate)
        used = [getattr(r, field) for r in group if not r.diverged]
        used = [v for v in used if not math.isnan(v)]
        mean, std = _mean_std(used)
        wr = [r.weights_remaining for r in group if not math.isnan(r.weights_remaining)]
        out.append(
            Stat(
                branch=branch,
                level=level,
                weights_remaining=math.fsum(wr) / len(wr) if wr else math.nan,
                mean=mean,
                std=std,
                min=min(used) if used else math.nan,
                max=max(used) if used else math.nan,
                n=len(used),
                replicates=len(group),
                diverged=tuple(r.replicate for r in group if r.diverged),
                values=tuple((r.replicate, getattr(r, field)) for r in group),
            )
        )
    return out


# ----------------------------------------------------------------------------- formatting


def fmt_pct(value: float) -> str:
    """A percentage without the sign: one decimal, two significant digits below 1 ('0.47')."""
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2g}"


def _fmt_stat(stat: Stat | None, digits: int, replicates: int) -> str:
    """'mean ± std' (or the single value), with '(n=k)' when fewer than the run's replicates."""
    if stat is None:
        return ""
    if stat.n == 0:
        return "diverged" if stat.diverged else "-"
    text = f"{stat.mean:.{digits}f}"
    if stat.n >= 2:
        text += f" ± {stat.std:.{digits}f}"
    if stat.n != replicates:
        text += f" (n={stat.n})"
    return text


def _text_table(headers: list[list[str]], rows: list[list[str]], left: set[int]) -> list[str]:
    """Aligned plain-text table; ``headers`` may hold several header lines; ``left`` columns
    are left-aligned, the rest right-aligned."""
    ncol = len(rows[0]) if rows else len(headers[-1])
    widths = [max(len(r[i]) for r in [*headers[-1:], *rows]) for i in range(ncol)]
    lines = []

    def line(cells: list[str]) -> str:
        out = [c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    for extra in headers[:-1]:  # group headers: left-aligned text spanning following columns
        out = ""
        for i, c in enumerate(extra):
            start = sum(widths[:i]) + 2 * i
            if c:
                out = out.ljust(start) + c
        lines.append(out.rstrip())
    lines.append(line(headers[-1]))
    lines.append("-" * (sum(widths) + 2 * (ncol - 1)))
    lines.extend(line(r) for r in rows)
    return lines


def _md_table(header: list[str], rows: list[list[str]], left: set[int]) -> list[str]:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join(":---" if i in left else "---:" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)
    return lines


def _layer_tables(layers: list[LayerRow]) -> tuple[str, int, list[tuple[int, list[list[str]]]]]:
    """Per level, the rows of the per-layer table of the ticket's replicate 0 (or the first
    branch/replicate present), plus a total row with % remaining and compression factor."""
    branches = branch_order({r.branch for r in layers})
    branch = branches[0]
    replicate = min(r.replicate for r in layers if r.branch == branch)
    mine = [r for r in layers if r.branch == branch and r.replicate == replicate]
    tables = []
    for level in sorted({r.level for r in mine}):
        rows = []
        kept = total = 0
        for r in (r for r in mine if r.level == level):
            kept += r.kept
            total += r.total
            pct = 100.0 * r.kept / r.total if r.total else 100.0
            rows.append([r.layer, str(r.kept), str(r.total), fmt_pct(pct), r.shape])
        pct = 100.0 * kept / total if total else 100.0
        ratio = f"{total / kept:.2f}x" if kept else "inf"
        rows.append(["total", str(kept), str(total), fmt_pct(pct), f"{ratio} compression"])
        tables.append((level, rows))
    return branch, replicate, tables


def _accuracy(summary: list[SummaryRow]):
    """Per (branch, level) statistics of the three reported quantities."""
    fields = ("test_acc", "test_acc_at_early_stop", "early_stop_iteration")
    stats = {f: {(s.branch, s.level): s for s in aggregate(summary, f)} for f in fields}
    branches = branch_order({r.branch for r in summary})
    levels = sorted({r.level for r in summary})
    replicates = max(s.replicates for s in stats["test_acc"].values())
    return stats, branches, levels, replicates


def _accuracy_csv(summary: list[SummaryRow]) -> str:
    stats, branches, levels, _ = _accuracy(summary)
    rows = []
    for b in branches:
        for lv in levels:
            acc = stats["test_acc"].get((b, lv))
            if acc is None:
                continue
            es_acc = stats["test_acc_at_early_stop"][(b, lv)]
            es_it = stats["early_stop_iteration"][(b, lv)]
            rows.append(
                {
                    "branch": b,
                    "level": lv,
                    "weights_remaining": acc.weights_remaining,
                    "replicates": acc.replicates,
                    "n": acc.n,
                    "diverged": len(acc.diverged),
                    "test_acc_mean": acc.mean,
                    "test_acc_std": acc.std,
                    "test_acc_at_early_stop_mean": es_acc.mean,
                    "test_acc_at_early_stop_std": es_acc.std,
                    "early_stop_iteration_mean": es_it.mean,
                    "early_stop_iteration_std": es_it.std,
                }
            )
    return csv_text(rows, SUMMARY_STATS)


def report(run_dir: str | os.PathLike[str], fmt: str = "table") -> str:
    """The text report of a run folder.

    ``fmt="table"``: aligned plain text for a terminal; ``"md"``: GitHub markdown with headings;
    ``"csv"``: only the accuracy table, one row per branch and level (the columns of
    :data:`lth.storage.SUMMARY_STATS`; std empty when fewer than two replicates).
    Means and stds are over replicates that did not diverge (sample std, ddof=1).
    """
    if fmt not in FORMATS:
        raise LTHError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    summary = load_summary(run_dir)
    if fmt == "csv":
        return _accuracy_csv(summary)
    layers = load_layers(run_dir)
    config = load_config(run_dir)
    name = Path(run_dir).resolve().name
    md = fmt == "md"
    out: list[str] = []

    def heading(text: str, level: int) -> None:
        if md:
            out.extend(["#" * level + " " + text, ""])
        elif level < 3:
            out.extend([text, ("=" if level == 1 else "-") * len(text), ""])
        else:
            out.append(text)

    def table(headers: list[list[str]], rows: list[list[str]], left: set[int]) -> None:
        if md:
            out.extend(_md_table(headers[-1], rows, left))
        else:
            out.extend(_text_table(headers, rows, left))
        out.append("")

    heading(f"LTH report: {name}", 1)
    desc = describe_config(config)
    if desc:
        out.extend([desc, ""])

    # (a) per-layer sparsity of the ticket
    branch, replicate, tables = _layer_tables(layers)
    heading(f"Weights remaining per layer ({branch}, replicate {replicate})", 2)
    for level, rows in tables:
        heading(f"Level {level}: {rows[-1][3]}% of weights remaining", 3)
        table([["layer", "nonzero", "total", "% remaining", "shape"]], rows, {0, 4})

    # (b) accuracy per level and branch
    stats, branches, levels, replicates = _accuracy(summary)
    heading("Test accuracy per level", 2)
    group = ["", ""]
    header = ["level", "remaining %"]
    for b in branches:
        group += [b, "", ""]
        header += [f"{b} test %", f"{b} test@ES %", f"{b} ES iter"]
    if not md:  # the group line names the branch, so the column names can be short
        header = header[:2] + ["test %", "test@ES %", "ES iter"] * len(branches)
    rows = []
    for lv in levels:
        present = [stats["test_acc"][(b, lv)] for b in branches if (b, lv) in stats["test_acc"]]
        wr = [s.weights_remaining for s in present if not math.isnan(s.weights_remaining)]
        row = [str(lv), fmt_pct(wr[0]) if wr else "-"]
        for b in branches:
            row += [
                _fmt_stat(stats["test_acc"].get((b, lv)), 2, replicates),
                _fmt_stat(stats["test_acc_at_early_stop"].get((b, lv)), 2, replicates),
                _fmt_stat(stats["early_stop_iteration"].get((b, lv)), 0, replicates),
            ]
        rows.append(row)
    table([group, header], rows, set())

    notes = [
        "test % = test accuracy (%) after the last training iteration; "
        "test@ES % = test accuracy (%) at the early-stop (ES) iteration, "
        "the evaluation with the lowest validation loss.",
        (
            f"Mean ± sample std over {replicates} replicates; (n=k) marks fewer usable ones."
            if replicates > 1
            else "One replicate per branch and level."
        ),
    ]
    diverged = sorted(
        (r for r in summary if r.diverged), key=lambda r: (r.level, r.branch, r.replicate)
    )
    if diverged:
        notes.append("Diverged runs, left out of the means:")
        notes.extend(
            f"  {r.branch} replicate {r.replicate} at level {r.level} diverged at iteration "
            f"{r.diverged_at}"
            for r in diverged
        )
    if md:
        out.extend(f"- {n.strip()}" if n.startswith("  ") else n + "\n" for n in notes)
    else:
        out.extend(notes)
    return "\n".join(out).rstrip() + "\n"


def save_report(
    run_dir: str | os.PathLike[str], output: str | os.PathLike[str], fmt: str = "table"
) -> Path:
    """Write :func:`report` to ``output``, atomically; refuses a path that is one of the run
    folder's own files (:func:`lth.storage.check_output_path`). Returns the path written."""
    check_output_path(run_dir, output)
    text = report(run_dir, fmt)
    atomic_write(output, text)
    return Path(output)


def write_summary_stats(run_dir: str | os.PathLike[str]) -> Path:
    """Write RUN_DIR/summary_stats.csv: the accuracy table of :func:`report` as CSV."""
    path = Path(run_dir) / SUMMARY_STATS.file
    atomic_write(path, report(run_dir, "csv"))
    return path
