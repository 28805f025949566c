"""The text report of a study, from one or several run folders.

:func:`report` renders the per-level accuracy of every branch first (test accuracy after
training, at the early-stop iteration, and the early-stop iteration, as mean ± std over
replicates), then on request (``layers=True``) the ticket's per-layer sparsity at every level,
as aligned text, GitHub markdown, LaTeX (booktabs) or CSV (the CSV of one run is also its
``summary_stats.csv``, :func:`write_summary_stats`).

Several run folders (or a folder holding run folders) make one table: runs whose settings
differ only in ``seed`` (:func:`poolable`) are one study run as several jobs and their
replicates are pooled (:func:`pooled_summary`); other runs stand side by side, headed by the
settings in which they differ (:func:`run_labels`). It reads ``summary.csv``, ``layers.csv`` and
``config.toml`` through :mod:`lth.runfolder.readers`, where their format is declared. Percentages
and accuracies are in percent (0-100) throughout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lth.analysis.stats import matches, mean_interval, verdict, welch_interval
from lth.core.fileio import atomic_write
from lth.errors import LTHError
from lth.runfolder.csvio import csv_text
from lth.runfolder.layout import branch_order
from lth.runfolder.manifest import RunWriter
from lth.runfolder.ownership import check_output_path, check_replace
from lth.runfolder.readers import LayerRow, SummaryRow, load_config, load_layers, load_summary
from lth.runfolder.tables import SUMMARY, SUMMARY_STATS

__all__ = [
    "FORMATS",
    "POOLABLE",
    "Run",
    "Stat",
    "aggregate",
    "describe_config",
    "differing_settings",
    "fmt_pct",
    "latex_escape",
    "load_runs",
    "load_summary",
    "poolable",
    "pooled_summary",
    "report",
    "run_folders",
    "run_labels",
    "save_report",
    "split_labels",
    "statistics_lines",
    "used_values",
    "write_summary_stats",
]

FORMATS = ("table", "md", "latex", "csv")
#: The first line of a report file :func:`save_report` writes, in the formats that have
#: comments: it tells lth that it may replace the file (a table or CSV file has none).
SIGNATURES = {
    "md": "<!-- written by lth report: lth report --output replaces this file -->",
    "latex": "% written by lth report: lth report --output replaces this file",
}


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


# ----------------------------------------------------------------------------- run folders


@dataclass
class Run:
    """One run folder as the report and the figures read it."""

    path: Path
    summary: list[SummaryRow]
    config: dict  # config.toml, flattened (lth.runfolder.readers.load_config)
    label: str = ""  # how tables and legends name it (:func:`run_labels`)

    @property
    def settings(self) -> dict:
        """The study's settings (the information tables of config.toml left out)."""
        return {k: v for k, v in self.config.items() if k in _setting_names()}


def _setting_names() -> list[str]:
    from lth.config import field_kinds  # the settings of a study, in declaration order

    return list(field_kinds())


def run_folders(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run folders named by ``paths``: a folder holding no summary.csv but run folders
    (a sweep) stands for those, sorted by name; the same folder twice counts once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        found = [p]
        if p.is_dir() and not (p / SUMMARY.file).exists():
            subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / SUMMARY.file).is_file())
            found = subs or found
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise LTHError("no run folders given; pass at least one folder a study wrote")
    return out


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """Settings whose values are not the same in every run (a missing one differs from any
    value), in declaration order; ``max_parallel`` (how tickets are grouped) is left out."""
    if len(runs) < 2 or any(not r.settings for r in runs):
        return []
    keys = [k for k in _setting_names() if k != "max_parallel"]
    return [k for k in keys if len({repr(r.settings.get(k)) for r in runs}) > 1]


def _show(value: object) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short names of runs: their differing settings ('seed 1', 'rate 0.3, seed 1'), else
    their folder names (with the parent folder when two are the same)."""
    keys = differing_settings(runs)
    if keys:
        labels = [", ".join(f"{k} {_show(r.settings.get(k, '-'))}" for k in keys) for r in runs]
        if len(set(labels)) == len(labels):
            return labels
    names = [r.path.resolve().name or str(r.path) for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.path.resolve().parent.name}/{r.path.resolve().name}" for r in runs]


def load_runs(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    labels: Sequence[str] | None = None,
) -> list[Run]:
    """The runs of :func:`run_folders`, each with its summary, config and label (``labels``,
    one per run, else :func:`run_labels`)."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    runs = [Run(p, load_summary(p), load_config(p)) for p in run_folders(run_dirs)]
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(runs):
            raise LTHError(
                f"{len(labels)} labels for {len(runs)} run folders; give one label per run"
            )
    for run, label in zip(runs, labels or run_labels(runs)):
        run.label = label
    return runs


def split_labels(text: str) -> list[str]:
    """A comma list of labels (``--labels``); ``\\,`` is a comma inside a label."""
    labels = [p.replace("\0", ",").strip() for p in text.replace("\\,", "\0").split(",")]
    if not all(labels):
        raise LTHError(f"--labels {text!r} has an empty label; give one name per run")
    return labels


#: settings in which runs may differ and still be one study (their replicates are pooled)
POOLABLE = ("seed", "replicates")


def poolable(runs: Sequence[Run]) -> bool:
    """Whether the runs are one study run as several jobs: their settings differ only in
    ``seed`` (all different) and the number of replicates."""
    if len(runs) < 2 or any(not r.settings for r in runs):
        return False
    seeds = [r.settings.get("seed") for r in runs]
    return set(differing_settings(runs)) <= set(POOLABLE) and len(set(seeds)) == len(seeds)


def pooled_summary(runs: Sequence[Run]) -> list[SummaryRow]:
    """The runs' summary rows as one study: replicates renumbered run after run."""
    out: list[SummaryRow] = []
    start = 0
    for run in runs:
        reps = sorted({r.replicate for r in run.summary})
        number = {rep: start + i for i, rep in enumerate(reps)}
        out += [replace(r, replicate=number[r.replicate]) for r in run.summary]
        start += len(reps)
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


@dataclass
class _Table:
    """A table to render: columns as (group, name) — group "" for none — rows of cells, and
    the left-aligned columns (the rest are right-aligned)."""

    columns: list[tuple[str, str]]
    rows: list[list[str]]
    left: set[int]

    def groups(self) -> list[tuple[str, int, int]]:
        """(group, first column, last column) of each run of columns with one group."""
        out: list[tuple[str, int, int]] = []
        for i, (g, _) in enumerate(self.columns):
            if out and out[-1][0] == g:
                out[-1] = (g, out[-1][1], i)
            else:
                out.append((g, i, i))
        return out


def _text_table(table: _Table) -> list[str]:
    """Aligned plain text: a line of group names (when any), the column names, a rule."""
    names = [n for _, n in table.columns]
    rows = table.rows
    ncol = len(names)
    widths = [max(len(r[i]) for r in [names, *rows]) for i in range(ncol)]
    for g, a, b in table.groups():  # a group name wider than its columns widens them
        span = sum(widths[a : b + 1]) + 2 * (b - a)
        for i in range(max(0, len(g) - span)):
            widths[a + i % (b - a + 1)] += 1

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(widths[i]) if i in table.left else c.rjust(widths[i])
            for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    lines = []
    if any(g for g, _ in table.columns):
        out = ""
        for g, a, _ in table.groups():
            if g:
                out = out.ljust(sum(widths[:a]) + 2 * a) + g
        lines.append(out.rstrip())
    lines.append(line(names))
    lines.append("-" * (sum(widths) + 2 * (ncol - 1)))
    lines.extend(line(r) for r in rows)
    return lines


def _md_table(table: _Table) -> list[str]:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    header = [f"{g} {n}" if g else n for g, n in table.columns]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append(
        "|" + "|".join(":---" if i in table.left else "---:" for i in range(len(header))) + "|"
    )
    lines.extend("| " + " | ".join(esc(c) for c in r) + " |" for r in table.rows)
    return lines


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "θ": r"$\theta$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
    """``text`` for LaTeX: special characters escaped, ± as $\\pm$."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def _latex_table(table: _Table, caption: str = "") -> list[str]:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = "".join("l" if i in table.left else "r" for i in range(len(table.columns)))
    lines = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    groups = table.groups()
    if any(g for g, _, _ in groups):
        cells, rules = [], []
        for g, a, b in groups:
            if not g:
                cells += [""] * (b - a + 1)
                continue
            cells.append(rf"\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{a + 1}-{b + 1}}}")
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(n) for _, n in table.columns) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(latex_escape(c) for c in r) + r" \\" for r in table.rows)
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return lines


# ----------------------------------------------------------------------------- tables


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
        here = [r for r in mine if r.level == level]
        for r in here:
            kept += r.kept
            total += r.total
            pct = 100.0 * r.kept / r.total if r.total else 100.0
            rows.append(
                [r.layer, str(r.kept), str(r.total), fmt_pct(pct), _dead(r.dead_units), r.shape]
            )
        pct = 100.0 * kept / total if total else 100.0
        ratio = f"{total / kept:.2f}x" if kept else "inf"
        known = [r.dead_units for r in here if r.dead_units is not None]
        dead = _dead(sum(known) if len(known) == len(here) else None)
        rows.append(["total", str(kept), str(total), fmt_pct(pct), dead, f"{ratio} compression"])
        tables.append((level, rows))
    return branch, replicate, tables


def _dead(units: int | None) -> str:
    """A dead-units cell: the count, or "-" where shrink cannot tell (or an older run folder)."""
    return "-" if units is None else str(units)


QUANTITIES = (
    ("test_acc", "test %", 2),
    ("test_acc_at_early_stop", "test@ES %", 2),
    ("early_stop_iteration", "ES iter", 0),
)


def _accuracy(summary: list[SummaryRow]):
    """Per (branch, level) statistics of the three reported quantities."""
    stats = {f: {(s.branch, s.level): s for s in aggregate(summary, f)} for f, _, _ in QUANTITIES}
    branches = branch_order({r.branch for r in summary})
    levels = sorted({r.level for r in summary})
    replicates = max(s.replicates for s in stats["test_acc"].values())
    return stats, branches, levels, replicates


def used_values(stat: Stat | None) -> list[float]:
    """The values a statistic's mean is over: replicates that did not diverge, finite."""
    if stat is None:
        return []
    return [v for rep, v in stat.values if rep not in stat.diverged and math.isfinite(v)]


def _dense(stats: dict) -> Stat | None:
    """The dense network's test accuracy: the ticket's at level 0 (else the first branch's)."""
    at0 = [st for (b, lv), st in stats["test_acc"].items() if lv == 0]
    return next((st for st in at0 if st.branch == "ticket"), at0[0] if at0 else None)


def _stats_rows(summary: list[SummaryRow]) -> list[dict]:
    """Rows of :data:`lth.runfolder.tables.SUMMARY_STATS`, one per branch and level."""
    stats, branches, levels, _ = _accuracy(summary)
    dense = _dense(stats)
    rows = []
    for b in branches:
        for lv in levels:
            acc = stats["test_acc"].get((b, lv))
            if acc is None:
                continue
            es_acc = stats["test_acc_at_early_stop"][(b, lv)]
            es_it = stats["early_stop_iteration"][(b, lv)]
            ci = mean_interval(used_values(acc))
            match = None if dense is None else matches(acc.mean, dense.mean, dense.std)
            row = {
                "branch": b,
                "level": lv,
                "weights_remaining": acc.weights_remaining,
                "replicates": acc.replicates,
                "n": acc.n,
                "diverged": len(acc.diverged),
                "test_acc_mean": acc.mean,
                "test_acc_std": acc.std,
                "test_acc_ci_low": ci.low,
                "test_acc_ci_high": ci.high,
                "test_acc_at_early_stop_mean": es_acc.mean,
                "test_acc_at_early_stop_std": es_acc.std,
                "early_stop_iteration_mean": es_it.mean,
                "early_stop_iteration_std": es_it.std,
                "matching": None if match is None else int(match),
                "ticket_minus": None,
                "ticket_minus_ci_low": None,
                "ticket_minus_ci_high": None,
                "ticket_is": "",
            }
            ticket = stats["test_acc"].get(("ticket", lv))
            if b != "ticket" and ticket is not None:
                diff = welch_interval(used_values(ticket), used_values(acc))
                row |= {
                    "ticket_minus": diff.estimate,
                    "ticket_minus_ci_low": diff.low,
                    "ticket_minus_ci_high": diff.high,
                    "ticket_is": verdict(diff),
                }
            rows.append(row)
    return rows


def _levels_text(rows: list[dict]) -> str:
    """'levels 3-5, 8 (51%-33%, 17% of weights)': levels in runs, with their remaining %."""
    if not rows:
        return "no level"
    runs: list[list[dict]] = []
    for r in rows:
        if runs and r["level"] == runs[-1][-1]["level"] + 1:
            runs[-1].append(r)
        else:
            runs.append([r])

    def span(run: list[dict], key) -> str:
        a, b = key(run[0]), key(run[-1])
        return a if a == b else f"{a}-{b}"

    levels = ", ".join(span(run, lambda r: str(r["level"])) for run in runs)
    pct = ", ".join(span(run, lambda r: fmt_pct(r["weights_remaining"]) + "%") for run in runs)
    return f"level{'s' if len(rows) > 1 else ''} {levels} ({pct} of weights)"


def statistics_lines(summary: list[SummaryRow], who: str = "") -> list[str]:
    """The report's lines on uncertainty: where each branch is matching, and for each control
    where the ticket is significantly better, equal or worse (95% Welch intervals)."""
    rows = _stats_rows(summary)
    branches = branch_order({r["branch"] for r in rows})
    dense = next((r for r in rows if r["branch"] == "ticket" and r["level"] == 0), None)
    if dense is None:
        return []
    lines = []
    std = dense["test_acc_std"]
    if not math.isfinite(std):
        lines.append(
            f"{who}Matching: needs two or more replicates of the dense network (its standard "
            "deviation)."
        )
    else:
        parts = []
        for b in branches:
            mine = [r for r in rows if r["branch"] == b and r["matching"]]
            if mine:
                best = max(mine, key=lambda r: r["level"])
                parts.append(
                    f"{b} down to level {best['level']} ({fmt_pct(best['weights_remaining'])}%)"
                )
            else:
                parts.append(f"{b} at no level")
        lines.append(
            f"{who}Matching (mean test accuracy no lower than the dense network's "
            f"{dense['test_acc_mean']:.2f}% minus one std {std:.2f}; Frankle et al. 2020): "
            + "; ".join(parts)
            + "."
        )
    for b in branches[1:]:
        mine = [r for r in rows if r["branch"] == b]
        if not any(r["ticket_is"] for r in mine):
            if mine and "ticket" in branches:
                lines.append(
                    f"{who}Ticket vs {b}: too few replicates for a 95% interval (need n >= 2)."
                )
            continue
        said = [
            f"{word} at {_levels_text([r for r in mine if r['ticket_is'] == word])}"
            for word in ("better", "equal", "worse")
        ]
        lines.append(
            f"{who}Ticket vs {b} (95% Welch interval of the difference in mean test accuracy): "
            + "; ".join(said)
            + "."
        )
    return lines


def _interval_table(summary: list[SummaryRow]) -> _Table | None:
    """Rows: levels; columns: each branch's 95% interval of the mean test accuracy, then
    each control's ticket − control difference with its 95% Welch interval. None when no
    branch has two replicates."""
    rows = _stats_rows(summary)
    if not any(math.isfinite(r["test_acc_ci_low"]) for r in rows):
        return None
    branches = branch_order({r["branch"] for r in rows})
    by_key = {(r["branch"], r["level"]): r for r in rows}
    controls = [b for b in branches if b != "ticket"] if "ticket" in branches else []
    columns = [("", "level")] + [(b, "test % 95% CI") for b in branches]
    columns += [(f"ticket − {b}", "diff [95% CI]") for b in controls]
    out = []
    for lv in sorted({r["level"] for r in rows}):
        line = [str(lv)]
        for b in branches:
            r = by_key.get((b, lv))
            ok = r is not None and math.isfinite(r["test_acc_ci_low"])
            line.append(f"[{r['test_acc_ci_low']:.2f}, {r['test_acc_ci_high']:.2f}]" if ok else "-")
        for b in controls:
            r = by_key.get((b, lv))
            if r is None or r["ticket_minus"] is None or not r["ticket_is"]:
                line.append("-")
                continue
            line.append(
                f"{r['ticket_minus']:+.2f} [{r['ticket_minus_ci_low']:+.2f}, "
                f"{r['ticket_minus_ci_high']:+.2f}] {r['ticket_is']}"
            )
        out.append(line)
    return _Table(columns, out, set())


def _one_table(summary: list[SummaryRow]) -> _Table:
    """Rows: levels; columns: weights remaining, then each branch's three quantities."""
    stats, branches, levels, replicates = _accuracy(summary)
    columns = [("", "level"), ("", "remaining %")]
    columns += [(b, name) for b in branches for _, name, _ in QUANTITIES]
    rows = []
    for lv in levels:
        present = [stats["test_acc"][(b, lv)] for b in branches if (b, lv) in stats["test_acc"]]
        wr = [s.weights_remaining for s in present if not math.isnan(s.weights_remaining)]
        row = [str(lv), fmt_pct(wr[0]) if wr else "-"]
        for b in branches:
            row += [_fmt_stat(stats[f].get((b, lv)), d, replicates) for f, _, d in QUANTITIES]
        rows.append(row)
    return _Table(columns, rows, set())


def _side_by_side_table(runs: Sequence[Run]) -> _Table:
    """Rows: branch and level; columns: each run's three quantities (and its weights
    remaining when the runs' differ), headed by the run's label."""
    per_run = [_accuracy(r.summary) for r in runs]
    branches = branch_order({b for _, bs, _, _ in per_run for b in bs})
    levels = sorted({lv for _, _, lvs, _ in per_run for lv in lvs})
    keys = [(b, lv) for b in branches for lv in levels]
    keys = [k for k in keys if any(k in st["test_acc"] for st, _, _, _ in per_run)]

    def remaining(st, key) -> str:
        s = st["test_acc"].get(key)
        return fmt_pct(s.weights_remaining) if s is not None else ""

    shared = all(
        len({remaining(st, k) for st, _, _, _ in per_run if k in st["test_acc"]}) == 1 for k in keys
    )
    columns = [("", "branch"), ("", "level")] + ([("", "remaining %")] if shared else [])
    for run in runs:
        columns += [] if shared else [(run.label, "remaining %")]
        columns += [(run.label, name) for _, name, _ in QUANTITIES]
    rows = []
    for b, lv in keys:
        row = [b, str(lv)]
        if shared:
            row.append(
                next(remaining(st, (b, lv)) for st, *_ in per_run if (b, lv) in st["test_acc"])
            )
        for st, _, _, reps in per_run:
            row += [] if shared else [remaining(st, (b, lv))]
            row += [_fmt_stat(st[f].get((b, lv)), d, reps) for f, _, d in QUANTITIES]
        rows.append(row)
    return _Table(columns, rows, {0})


def _layer_sections(runs: Sequence[Run]) -> list[tuple[str, list[tuple[str, _Table]]]]:
    """Per-layer tables, once for each group of runs whose tables are the same."""
    groups: list[tuple[list[Run], tuple]] = []
    for run in runs:
        branch, replicate, tables = _layer_tables(load_layers(run.path))
        key = (branch, replicate, tuple((lv, tuple(map(tuple, rows))) for lv, rows in tables))
        for members, k in groups:
            if k == key:
                members.append(run)
                break
        else:
            groups.append(([run], key))
    out = []
    columns = [
        ("", "layer"), ("", "nonzero"), ("", "total"), ("", "% remaining"), ("", "dead units"),
        ("", "shape"),
    ]  # fmt: skip
    for members, (branch, replicate, tables) in groups:
        who = ""
        if len(runs) > 1:
            who = "all runs" if len(members) == len(runs) else ", ".join(r.label for r in members)
            who = f"; {who}"
        title = f"Weights remaining per layer ({branch}, replicate {replicate}{who})"
        sections = [
            (
                f"Level {lv}: {rows[-1][3]}% of weights remaining",
                _Table(columns, list(map(list, rows)), {0, 5}),
            )
            for lv, rows in tables
        ]
        out.append((title, sections))
    return out


# ----------------------------------------------------------------------------- the report


def _diverged_notes(runs: Sequence[Run], pooled: bool) -> list[str]:
    notes = []
    for run in runs:
        bad = sorted(
            (r for r in run.summary if r.diverged), key=lambda r: (r.level, r.branch, r.replicate)
        )
        where = f" ({run.label})" if len(runs) > 1 else ""
        notes += [
            f"{r.branch} replicate {r.replicate}{where} at level {r.level} diverged at "
            f"iteration {r.diverged_at}"
            for r in bad
        ]
    return notes


def report(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    fmt: str = "table",
    *,
    layers: bool = False,
    labels: Sequence[str] | None = None,
    paper: str | None = None,
) -> str:
    """The text report of one or several run folders.

    ``fmt``: ``"table"`` (aligned plain text for a terminal), ``"md"`` (GitHub markdown),
    ``"latex"`` (booktabs tables, needs ``\\usepackage{booktabs}``) or ``"csv"`` (the accuracy
    table only, one row per branch and level: the columns of
    :data:`lth.runfolder.tables.SUMMARY_STATS`; std empty when fewer than two replicates).

    The accuracy table comes first: per branch and level the test accuracy after training,
    at the early-stop iteration, and the early-stop iteration, as mean ± sample std (ddof=1)
    over the replicates that did not diverge. ``layers``: also the ticket's per-layer
    sparsity at every level (not in CSV). ``paper``: also a published paper's numbers beside
    the run's nearest levels (:mod:`lth.analysis.papers`; not in CSV; one study only).

    Several run folders (or a folder of run folders): when their settings differ only in
    ``seed`` (and the number of replicates), they are one study run as several jobs, and the
    table pools their replicates (mean ± std over all of them, n in the notes and the CSV);
    otherwise the runs stand side by side, each headed by ``labels`` (one per run; default:
    the settings in which they differ), and the CSV has a ``run`` column plus one column per
    differing setting.
    """
    if fmt not in FORMATS:
        raise LTHError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if layers and fmt == "csv":
        raise LTHError(
            "--layers is not available with --format csv; the per-layer counts are in each "
            "run's layers.csv"
        )
    if paper is not None and fmt == "csv":
        raise LTHError("--paper is not available with --format csv; use table, md or latex")
    runs = load_runs(run_dirs, labels)
    pooled = poolable(runs)
    single = len(runs) == 1
    summary = runs[0].summary if single else pooled_summary(runs) if pooled else None
    if paper is not None and summary is None:
        raise LTHError(
            "--paper compares one study with the paper: give one run folder, or runs that "
            "differ only in seed"
        )
    if fmt == "csv":
        if summary is not None:
            return csv_text(_stats_rows(summary), SUMMARY_STATS)
        keys = differing_settings(runs)
        rows = [
            {"run": r.label, **{k: _show(r.settings.get(k, "")) for k in keys}, **row}
            for r in runs
            for row in _stats_rows(r.summary)
        ]
        return csv_text(rows, ["run", *keys, *SUMMARY_STATS.names])

    common = runs[0].settings
    if not single:
        keys = set(differing_settings(runs)) | ({"seed", "replicates"} if pooled else set())
        common = {k: v for k, v in common.items() if k not in keys}
        if pooled:
            common["replicates"] = sum(len({r.replicate for r in run.summary}) for run in runs)
    if single:
        title = f"LTH report: {runs[0].path.resolve().name}"
    elif pooled:
        title = f"LTH report: {len(runs)} runs pooled ({'; '.join(r.label for r in runs)})"
    else:
        title = f"LTH report: {len(runs)} runs side by side"
    desc = describe_config(common)
    table = _side_by_side_table(runs) if summary is None else _one_table(summary)
    against = None
    if paper is not None:
        from lth.analysis.papers import paper_section

        head, columns, rows, left, paper_notes = paper_section(paper, summary, common)
        against = (head, _Table(columns, rows, left), paper_notes)

    notes = [
        "test % = test accuracy (%) after the last training iteration; "
        "test@ES % = test accuracy (%) at the early-stop (ES) iteration, "
        "the evaluation with the lowest validation loss."
    ]
    if summary is not None:
        reps = _accuracy(summary)[3]
        if pooled:
            each = sorted({len({r.replicate for r in run.summary}) for run in runs})
            per = "/".join(map(str, each))
            notes.append(
                f"Mean ± sample std over n = {reps} replicates: {len(runs)} runs that differ "
                f"only in seed, {per} replicate{'s' if each != [1] else ''} each, pooled; "
                "(n=k) marks fewer usable ones."
            )
        elif reps > 1:
            notes.append(
                f"Mean ± sample std over n = {reps} replicates; (n=k) marks fewer usable ones."
            )
        else:
            notes.append("One replicate per branch and level (n = 1).")
    else:
        reps = sorted({_accuracy(r.summary)[3] for r in runs})
        n = "/".join(map(str, reps))
        keys = differing_settings(runs)
        differ = f"they differ in {', '.join(keys)}" if keys else "settings as recorded"
        notes.append(
            f"Runs side by side ({differ}); mean ± sample std over each run's replicates "
            f"(n = {n}); (n=k) marks fewer usable ones."
        )
    diverged = _diverged_notes(runs, pooled)
    if diverged:
        notes.append("Diverged runs, left out of the means: " + "; ".join(diverged) + ".")
    sources = [f"{r.label}: {r.path}" for r in runs] if not single else []

    if summary is not None:
        intervals, verdicts = _interval_table(summary), statistics_lines(summary)
    else:
        intervals = None
        verdicts = [line for r in runs for line in statistics_lines(r.summary, f"{r.label}: ")]
    out: list[str] = []
    if fmt == "latex":
        out += [f"% {title}", *(f"% {line}" for line in [desc, *sources] if line)]
        out += ["% needs \\usepackage{booktabs}", ""]
        caption = (
            "Test accuracy per level" + (f" ({desc})" if desc else "") + ". " + " ".join(notes)
        )
        out += _latex_table(table, caption)
        if intervals is not None or verdicts:
            what = "95% confidence intervals of the mean test accuracy (t) and of the ticket's "
            what += "difference from each control (Welch). " + " ".join(verdicts)
            out += [""] + (_latex_table(intervals, what) if intervals else [f"% {what}"])
        if against is not None:
            out += [""] + _latex_table(against[1], f"{against[0]}. " + " ".join(against[2]))
        if layers:
            for head, sections in _layer_sections(runs):
                for sub, t in sections:
                    out += [""] + _latex_table(t, f"{head}. {sub}.")
        return "\n".join(out) + "\n"

    md = fmt == "md"

    def heading(text: str, level: int) -> None:
        if md:
            out.extend(["#" * level + " " + text, ""])
        elif level < 3:
            out.extend([text, ("=" if level == 1 else "-") * len(text), ""])
        else:
            out.append(text)

    def put(t: _Table) -> None:
        out.extend(_md_table(t) if md else _text_table(t))
        out.append("")

    heading(title, 1)
    if desc:
        out.extend([desc, ""])
    if sources:
        out.extend([f"- {s}" if md else f"  {s}" for s in sources] + [""])
    heading("Test accuracy per level", 2)
    put(table)
    out.extend(n + "\n" if md else n for n in notes)
    if intervals is not None or verdicts:
        out.append("")
        heading("Uncertainty: 95% intervals", 2)
        if intervals is not None:
            put(intervals)
        out.extend(n + "\n" if md else n for n in verdicts)
    if against is not None:
        out.append("")
        heading(against[0], 2)
        put(against[1])
        out.extend(n + "\n" if md else n for n in against[2])
    if layers:
        out.append("")
        for head, sections in _layer_sections(runs):
            heading(head, 2)
            for sub, t in sections:
                heading(sub, 3)
                put(t)
    return "\n".join(out).rstrip() + "\n"


def save_report(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    output: str | os.PathLike[str],
    fmt: str = "table",
    *,
    force: bool = False,
    **options,
) -> Path:
    """Write :func:`report` to ``output``, atomically; refuses a path that is one of a run
    folder's own files (:func:`lth.runfolder.ownership.check_output_path`), and an existing file lth
    did not write unless ``force``: markdown and LaTeX files written here start with a comment
    line (:data:`SIGNATURES`) that says so; a table or CSV file is replaced only by the same
    text. Returns the path written."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    for run_dir in run_folders(run_dirs):
        check_output_path(run_dir, output)
    text = report(run_dirs, fmt, **options)
    signature = SIGNATURES.get(fmt)
    if signature:
        text = f"{signature}\n{text}"

    def ours(path: Path) -> bool:
        with open(path, "rb") as f:
            head = f.read(len(text.encode()) + 1)
        return head.startswith(signature.encode()) if signature else head == text.encode()

    check_replace(output, "--output", ours, force)
    atomic_write(output, text)
    return Path(output)


def write_summary_stats(run_dir: str | os.PathLike[str]) -> Path:
    """Write RUN_DIR/summary_stats.csv: the accuracy table of :func:`report` as CSV (recorded in
    the run's manifest)."""
    path = Path(run_dir) / SUMMARY_STATS.file
    RunWriter(run_dir).write_files({path: report(run_dir, "csv")})
    return path
