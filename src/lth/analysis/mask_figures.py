"""The figures of a run folder's mask analysis: mask overlaps and signs kept against weights
remaining, and histograms of the surviving weights' magnitudes (see :mod:`lth.analysis.plots`,
which draws and saves them, and :mod:`lth.analysis.mask_analysis`, which computes what they show).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from lth.analysis.figure_style import (
    Series,
    Spread,
    Styles,
    add_legend,
    add_title,
    branch_zorder,
    default_levels,
    draw_series,
    figure_levels,
    fmt_tick,
    log_x_axis,
    new_figure,
)
from lth.analysis.results import FigureRun
from lth.runfolder.layout import ALL, CONTROL, branch_order

__all__ = ["histogram_figure", "mask_figure"]

OVERLAP_COLOR = "#ff7f0e"  # ticket vs. random_prune overlap
HIST_COLORS = {"init": "#7f7f7f", "final": "#1f77b4"}
HIST_KEEP = 0.99  # weight histograms: x axis spans this central share of the weights


def _means_over_replicates(rows: list[dict], column: str):
    """Per level, (x, mean, std, n) of ``column`` over replicates (finite values only)
    against the level's weights remaining."""
    by_level: dict[int, list[dict]] = {}
    for r in rows:
        by_level.setdefault(r["level"], []).append(r)
    points = []
    for level in sorted(by_level):
        group = by_level[level]
        values = [r[column] for r in group if math.isfinite(r[column])]
        if not values:
            continue
        x = math.fsum(r["weights_remaining"] for r in group) / len(group)
        mean = math.fsum(values) / len(values)
        std = (
            math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else math.nan
        )
        points.append((x, mean, std, len(values)))
    return points


def _nested(rows: list[dict]) -> bool:
    """Whether every mask of these rows (one branch, layer 'all') keeps a subset of its
    previous level's: then the overlap with the previous level is the fraction kept."""
    wr = {(r["replicate"], r["level"]): r["weights_remaining"] for r in rows}
    seen = False
    for r in rows:
        j, prev = r["jaccard_previous_level"], wr.get((r["replicate"], r["level"] - 1))
        if not math.isfinite(j) or prev is None or not prev > 0:
            continue
        seen = True
        if abs(j - r["weights_remaining"] / prev) > 1e-6:
            return False
    return seen


def _same_values(a: list[dict], b: list[dict], column: str) -> bool:
    va = {(r["replicate"], r["level"]): r[column] for r in a}
    vb = {(r["replicate"], r["level"]): r[column] for r in b}
    if va.keys() != vb.keys():
        return False
    return all((math.isnan(va[k]) and math.isnan(vb[k])) or abs(va[k] - vb[k]) <= 1e-9 for k in va)


NESTED = "nested masks (each level keeps a subset of the last), so the overlap is the fraction kept"


def _twin(rows_by_branch: dict[str, list[dict]], branch: str, column: str) -> str | None:
    """An earlier branch whose ``column`` has the same values as ``branch``'s, if any."""
    earlier = list(rows_by_branch)[: list(rows_by_branch).index(branch)]
    mine = rows_by_branch[branch]
    return next((o for o in earlier if _same_values(rows_by_branch[o], mine, column)), None)


def _left_out_note(left_out: dict[tuple[str, str, str], list[str]], nruns: int) -> str:
    """'Not drawn: ticket and reinit vs. previous level (nested masks ...)': what was left
    out and why, branches with the same series and reason (and runs) together.
    ``left_out``: (branch, series, reason) -> names of the runs."""
    grouped: dict[tuple[str, str, str], list[str]] = {}
    for (branch, what, why), names in left_out.items():
        who = "" if len(names) == nruns else ", ".join(names) + ": "
        grouped.setdefault((who, what, why), []).append(branch)
    parts = [
        f"{who}{' and '.join(branches)}{what} ({why})"
        for (who, what, why), branches in grouped.items()
    ]
    return "Not drawn: " + "; ".join(parts) + "." if parts else ""


def mask_figure(runs: list[FigureRun], title: str | None) -> Figure:
    """``mask_analysis``: mask overlaps and signs kept against weights remaining."""
    styles = Styles(len(runs))
    spread = Spread("std")
    left: list[Series] = []
    right: list[Series] = []
    left_out: dict[tuple[str, str, str], list[str]] = {}  # (branch, series, why) -> runs
    xs: list[float] = []

    def series(rows, column, label, color, marker, linestyle, zorder) -> Series | None:
        points = _means_over_replicates(rows, column)
        if not points:
            return None
        spread.counts |= {p[3] for p in points if p[3] >= 2}
        return Series(
            label,
            [p[0] for p in points],
            [p[1] for p in points],
            color,
            marker,
            linestyle,
            zorder,
            err=[p[2] for p in points],
        )

    for ri, run in enumerate(runs):
        if not run.analysis:
            continue
        rows = [r for r in run.analysis if r["layer"] == ALL]
        prefix = f"{run.name}: " if styles.multi else ""
        xs += [r["weights_remaining"] for r in rows]
        branches = branch_order({r["branch"] for r in rows})
        mine = {b: [r for r in rows if r["branch"] == b] for b in branches}
        for b in branches:
            color, marker = styles.color(ri, b), styles.marker(b)
            ls, z = styles.linestyle(b), branch_zorder(b)
            twin = _twin(mine, b, "jaccard_previous_level")
            if _nested(mine[b]):
                left_out.setdefault((b, " vs. previous level", NESTED), []).append(run.name)
            elif twin is not None:
                left_out.setdefault((b, " vs. previous level", f"the same as {twin}'s"), []).append(
                    run.name
                )
            else:
                s = series(mine[b], "jaccard_previous_level", f"{prefix}{b} vs. previous level",
                           color, marker, ls, z)  # fmt: skip
                if s is not None:
                    left.append(s)
            if b == "ticket":
                overlap = OVERLAP_COLOR if not styles.multi else color
                s = series(mine[b], "jaccard_random_prune", f"{prefix}ticket vs. {CONTROL}",
                           overlap, "D", ":" if styles.multi else "-", z + 0.05)  # fmt: skip
                if s is not None:
                    left.append(s)
            twin = _twin(mine, b, "sign_kept")
            if twin is not None:
                left_out.setdefault((b, "'s signs", f"the same as {twin}'s"), []).append(run.name)
                continue
            s = series(mine[b], "sign_kept", f"{prefix}{b}", color, marker, ls, z)
            if s is not None:
                right.append(s)

    fig = new_figure(11.2, 4.3)
    ax_j, ax_s = fig.subplots(1, 2)
    draw_series(ax_j, left, log_x=True)
    draw_series(ax_s, right, log_x=True)
    for ax in (ax_j, ax_s):
        log_x_axis(ax, xs)
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, -0.02), min(hi, 1.02))  # fractions: keep error bars in [0, 1]
    if not left:
        ax_j.text(0.5, 0.5, "no overlap to show", ha="center", va="center",
                  transform=ax_j.transAxes, color="0.4")  # fmt: skip
    ax_j.set_ylabel("Jaccard overlap of kept weights")
    ax_j.set_title("Mask overlap |A ∩ B| / |A ∪ B|", fontsize=11)
    ax_s.set_ylabel("Fraction of survivors")
    ax_s.set_title("Survivors that kept their sign from θ-start to the end", fontsize=11)
    note = _left_out_note(left_out, sum(1 for r in runs if r.analysis))
    add_legend(fig, [*ax_j.get_lines(), *ax_s.get_lines()], spread, max_cols=3, note=note)
    add_title(fig, "Mask analysis (all prunable layers)", title, runs)
    return fig


def histogram_figure(
    runs: list[FigureRun], levels: Sequence[int] | None, title: str | None
) -> Figure | None:
    """``weight_histograms`` of the first run with histograms (None when none has)."""
    run = next((r for r in runs if r.histograms), None)
    if run is None:
        return None
    branch = branch_order({r["branch"] for r in run.histograms})[0]
    replicate = min(r["replicate"] for r in run.histograms if r["branch"] == branch)
    rows = [r for r in run.histograms if r["branch"] == branch and r["replicate"] == replicate]
    available = sorted({r["level"] for r in rows})
    chosen = figure_levels(available, levels) or default_levels(available)
    remaining = {
        r["level"]: r["weights_remaining"]
        for r in run.analysis or []
        if r["branch"] == branch and r["replicate"] == replicate and r["layer"] == ALL
    }
    fig = new_figure(3.0 * len(chosen) + 0.8, 3.7)
    axes = fig.subplots(1, len(chosen), squeeze=False, sharex=True)[0]
    labels = {"init": "at θ-start (init)", "final": "at the end of training (final)"}
    totals: dict[int, int] = {}  # bin -> count over the drawn panels
    edges_of: dict[int, tuple[float, float]] = {}
    for ax, level in zip(axes, chosen):
        for which in ("init", "final"):
            mine = sorted(
                (r for r in rows if r["level"] == level and r["weights"] == which),
                key=lambda r: r["bin"],
            )
            if not mine:
                continue
            for r in mine:
                totals[r["bin"]] = totals.get(r["bin"], 0) + r["count"]
                edges_of[r["bin"]] = (r["bin_low"], r["bin_high"])
            edges = [r["bin_low"] for r in mine] + [mine[-1]["bin_high"]]
            ax.stairs(
                [r["count"] for r in mine],
                edges,
                color=HIST_COLORS[which],
                linewidth=1.5,
                label=labels[which],
                gid=f"{which}:{level}",
            )
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        wr = remaining.get(level)
        where = f" ({fmt_tick(wr)}% remaining)" if wr is not None and math.isfinite(wr) else ""
        ax.set_title(f"level {level}{where}", fontsize=10)
        ax.set_xlabel("|weight| (log scale)")
    span = _central_bins(totals, edges_of)
    if span is not None:
        axes[0].set_xlim(*span)
    axes[0].set_ylabel("Surviving weights per bin")
    add_legend(fig, [p for p in axes[0].patches], max_cols=2)
    share = f"{100 * HIST_KEEP:g}%"
    add_title(
        fig,
        f"Magnitudes of the surviving weights ({branch}, replicate {replicate}; x axis: the "
        f"central {share} of them)",
        title,
        runs[:1],
    )
    return fig


def _central_bins(
    totals: dict[int, int], edges: dict[int, tuple[float, float]]
) -> tuple[float, float] | None:
    """The x range of the bins holding the central HIST_KEEP share of the counts."""
    bins = sorted(b for b in totals)
    total = sum(totals.values())
    if not bins or total <= 0:
        return None
    cut = (1 - HIST_KEEP) / 2 * total
    acc, first = 0, bins[0]
    for b in bins:
        acc += totals[b]
        if acc > cut:
            first = b
            break
    acc, last = 0, bins[-1]
    for b in reversed(bins):
        acc += totals[b]
        if acc > cut:
            last = b
            break
    return edges[first][0], edges[last][1]
