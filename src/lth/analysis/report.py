"""The text report of a study, from one or several run folders.

:func:`report` renders the per-level accuracy of every branch first (test accuracy after
training, at the early-stop iteration, and the early-stop iteration, as mean ± std over
replicates), then on request (``layers=True``) the ticket's per-layer sparsity at every level,
as aligned text, GitHub markdown, LaTeX (booktabs) or CSV (the CSV of one run is also its
``summary_stats.csv``, :func:`write_summary_stats`).

Several run folders (or a folder holding run folders) make one table: runs whose settings
differ only in ``seed`` (:func:`~lth.analysis.results.poolable`) are one study run as several
jobs and their replicates are pooled (:func:`~lth.analysis.results.pooled_summary`); other runs
stand side by side, headed by the settings in which they differ
(:func:`~lth.analysis.results.run_labels`). The runs and their statistics come from
:mod:`lth.analysis.results`, the tables' text from :mod:`lth.analysis.tables`. Percentages and
accuracies are in percent (0-100) throughout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

from lth.analysis.layer_tables import layer_sections
from lth.analysis.papers import paper_section
from lth.analysis.results import (
    QUANTITIES,
    Run,
    Stat,
    accuracy_stats,
    differing_settings,
    load_runs,
    method_parts,
    poolable,
    pooled_summary,
    run_folders,
    show_setting,
    stats_rows,
)
from lth.analysis.tables import Table, fmt_pct, latex_table, md_table, text_table
from lth.core.fileio import atomic_write
from lth.errors import LTHError
from lth.runfolder.csvio import csv_text
from lth.runfolder.layout import branch_order
from lth.runfolder.manifest import RunWriter
from lth.runfolder.ownership import check_output_path, check_replace
from lth.runfolder.readers import SummaryRow
from lth.runfolder.tables import SUMMARY_STATS

__all__ = [
    "FORMATS",
    "SIGNATURES",
    "describe_config",
    "fmt_pct",
    "report",
    "save_report",
    "statistics_lines",
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
    """A one-line description of a study from its config, e.g. 'lenet_300_100 on mnist, ...',
    naming its criterion, initialisation, precision and granularity where not the default
    (:func:`method_parts`)."""
    parts = []
    if "model" in config:
        parts.append(
            str(config["model"]) + (f" on {config['dataset']}" if "dataset" in config else "")
        )
    elif "dataset" in config:
        parts.append(str(config["dataset"]))
    parts += method_parts(config)
    if "pruning" in config:
        parts.append(f"{config['pruning']} pruning")
    if "rate" in config:
        out = config.get("output_rate")
        extra = f" (output layer {out})" if out not in (None, "", config["rate"]) else ""
        what = f"rate {config['rate']}"
        if config.get("rate_schedule"):  # per-level rates of the hidden layers (rate unused)
            what = "rates per level " + ",".join(str(r) for r in config["rate_schedule"])
        parts.append(what + extra)
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


# ----------------------------------------------------------------------------- formatting


# ----------------------------------------------------------------------------- tables


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
    rows = stats_rows(summary)
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


def _interval_table(summary: list[SummaryRow]) -> Table | None:
    """Rows: levels; columns: each branch's 95% interval of the mean test accuracy, then
    each control's ticket − control difference with its 95% Welch interval. None when no
    branch has two replicates."""
    rows = stats_rows(summary)
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
    return Table(columns, out, set())


def _ticket_cost(summary: list[SummaryRow]) -> dict[int, list[str]]:
    """The ticket's mean parameter count and MFLOPs per example at each level (summary.csv's
    ``params`` and ``flops``, :mod:`lth.pruning.cost`); {} when the run has none."""
    by_level: dict[int, list[SummaryRow]] = {}
    for r in summary:
        if r.branch == "ticket" and r.params is not None and r.flops is not None:
            by_level.setdefault(r.level, []).append(r)
    return {
        lv: [f"{sum(r.params for r in rs) / len(rs):,.0f}",
             f"{sum(r.flops for r in rs) / len(rs) / 1e6:.3f}"]
        for lv, rs in by_level.items()
    }  # fmt: skip


def _one_table(summary: list[SummaryRow]) -> Table:
    """Rows: levels; columns: weights remaining, then each branch's three quantities."""
    stats, branches, levels, replicates = accuracy_stats(summary)
    cost = _ticket_cost(summary)
    columns = [("", "level"), ("", "remaining %")]
    columns += [("ticket", "params"), ("ticket", "MFLOPs")] if cost else []
    columns += [(b, name) for b in branches for _, name, _ in QUANTITIES]
    rows = []
    for lv in levels:
        present = [stats["test_acc"][(b, lv)] for b in branches if (b, lv) in stats["test_acc"]]
        wr = [s.weights_remaining for s in present if not math.isnan(s.weights_remaining)]
        row = [str(lv), fmt_pct(wr[0]) if wr else "-"]
        if cost:
            row += cost.get(lv, ["-", "-"])
        for b in branches:
            row += [_fmt_stat(stats[f].get((b, lv)), d, replicates) for f, _, d in QUANTITIES]
        rows.append(row)
    return Table(columns, rows, set())


def _side_by_side_table(runs: Sequence[Run]) -> Table:
    """Rows: branch and level; columns: each run's three quantities (and its weights
    remaining when the runs' differ), headed by the run's label."""
    per_run = [accuracy_stats(r.summary) for r in runs]
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
    return Table(columns, rows, {0})


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
            return csv_text(stats_rows(summary), SUMMARY_STATS)
        keys = differing_settings(runs)
        rows = [
            {"run": r.label, **{k: show_setting(r.settings.get(k, "")) for k in keys}, **row}
            for r in runs
            for row in stats_rows(r.summary)
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
        head, columns, rows, left, paper_notes = paper_section(paper, summary, common)
        against = (head, Table(columns, rows, left), paper_notes)

    notes = [
        "test % = test accuracy (%) after the last training iteration; "
        "test@ES % = test accuracy (%) at the early-stop (ES) iteration, "
        "the evaluation with the lowest validation loss."
    ]
    if summary is not None:
        reps = accuracy_stats(summary)[3]
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
        reps = sorted({accuracy_stats(r.summary)[3] for r in runs})
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
        out += latex_table(table, caption)
        if intervals is not None or verdicts:
            what = "95% confidence intervals of the mean test accuracy (t) and of the ticket's "
            what += "difference from each control (Welch). " + " ".join(verdicts)
            out += [""] + (latex_table(intervals, what) if intervals else [f"% {what}"])
        if against is not None:
            out += [""] + latex_table(against[1], f"{against[0]}. " + " ".join(against[2]))
        if layers:
            for head, sections in layer_sections(runs):
                for sub, t in sections:
                    out += [""] + latex_table(t, f"{head}. {sub}.")
        return "\n".join(out) + "\n"

    md = fmt == "md"

    def heading(text: str, level: int) -> None:
        if md:
            out.extend(["#" * level + " " + text, ""])
        elif level < 3:
            out.extend([text, ("=" if level == 1 else "-") * len(text), ""])
        else:
            out.append(text)

    def put(t: Table) -> None:
        out.extend(md_table(t) if md else text_table(t))
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
        for head, sections in layer_sections(runs):
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
