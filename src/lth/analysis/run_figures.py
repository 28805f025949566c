"""The four figures of every run folder: accuracy and early-stop iteration against weights
remaining, training curves of selected levels, and weights remaining per layer (see
:mod:`lth.analysis.plots`, which draws and saves them)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import matplotlib
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

from lth.analysis.figure_style import (
    RUN_LINESTYLES,
    RUN_MARKERS,
    Series,
    Spread,
    Styles,
    add_legend,
    add_title,
    branch_zorder,
    draw_series,
    figure_levels,
    fmt_tick,
    log_x_axis,
    new_figure,
)
from lth.analysis.results import FigureRun, aggregate, used_values
from lth.analysis.stats import matches, mean_interval
from lth.errors import LTHError
from lth.runfolder.layout import branch_order
from lth.runfolder.readers import load_metrics

__all__ = ["accuracy_figure", "curves_figure", "early_stop_figure", "layer_figure"]

CURVE_ZOOM_FROM = 0.1  # curves: y axes fit the evaluations from this fraction of training on
LAYER_SAME = 0.005  # layer_remaining: curves this close (relative) at every level are one line


def _branch_series(
    runs: list[FigureRun], quantity: str, band: str, spread: Spread, styles: Styles
) -> list[Series]:
    """Mean over replicates of a summary quantity against weights remaining, one series per
    run and branch, with std error bars or min-max bands; diverged replicates as hollow marks."""
    out = []
    for ri, run in enumerate(runs):
        stats = aggregate(run.summary, quantity)
        for branch in branch_order({s.branch for s in stats}):
            group = [s for s in stats if s.branch == branch]
            label = f"{run.name}: {branch}" if styles.multi else branch
            s = Series(
                label,
                [g.weights_remaining for g in group],
                [g.mean for g in group],
                styles.color(ri, branch),
                styles.marker(branch),
                styles.linestyle(branch),
                branch_zorder(branch),
            )
            if band == "std":
                s.err = [g.std if g.n >= 2 else math.nan for g in group]
            elif band == "ci":
                cis = [mean_interval(used_values(g)) for g in group]
                s.band = ([c.low for c in cis], [c.high for c in cis])
            else:
                s.band = (
                    [g.min if g.n >= 2 else math.nan for g in group],
                    [g.max if g.n >= 2 else math.nan for g in group],
                )
            spread.counts |= {g.n for g in group if g.n >= 2}
            dense = next((g for g in stats if g.branch == "ticket" and g.level == 0), None)
            if quantity == "test_acc" and dense is not None:
                hits = [i for i, g in enumerate(group) if matches(g.mean, dense.mean, dense.std)]
                if hits:
                    s.matching = max(hits, key=lambda i: group[i].level)
                    spread.matching = True
            dx, dy = [], []
            for g in group:
                spread.diverged |= bool(g.diverged)
                for rep, value in g.values:
                    if rep in g.diverged and math.isfinite(value):
                        dx.append(g.weights_remaining)
                        dy.append(value)
            s.hollow = (dx, dy)
            out.append(s)
    return out


def _branch_panel(ax, runs, quantity, band, spread: Spread, styles: Styles) -> None:
    series = _branch_series(runs, quantity, band, spread, styles)
    draw_series(ax, series, log_x=True)
    log_x_axis(ax, [x for s in series for x in s.x])


def _branch_columns(runs: list[FigureRun]) -> int:
    """Legend columns of a branch figure: one row for one run; a column per run (and one for
    the notes) for several, so that each column lists one run's branches, when they fit."""
    return 4 if len(runs) == 1 else len(runs) + 1


def accuracy_figure(
    runs: list[FigureRun], band: str, early_stop_panel: bool, title: str | None
) -> Figure:
    """``accuracy_vs_weights``: test accuracy against weights remaining (and at early stop)."""
    ncols = 2 if early_stop_panel else 1
    fig = new_figure(5.6 * ncols, 4.1)
    axes = fig.subplots(1, ncols, squeeze=False, sharey=True)[0]
    styles, spread = Styles(len(runs)), Spread(band)
    _branch_panel(axes[0], runs, "test_acc", band, spread, styles)
    axes[0].set_ylabel("Test accuracy (%)")
    axes[0].set_title("At the end of training")
    if early_stop_panel:
        _branch_panel(axes[1], runs, "test_acc_at_early_stop", band, spread, styles)
        axes[1].set_title("At the early-stop iteration (min. val. loss)")
        axes[1].tick_params(labelleft=True)
    add_legend(fig, axes[0].get_lines(), spread, max_cols=_branch_columns(runs))
    add_title(fig, "Test accuracy vs. weights remaining", title, runs)
    return fig


def early_stop_figure(runs: list[FigureRun], band: str, title: str | None) -> Figure:
    """``early_stop``: the early-stop iteration against weights remaining."""
    fig = new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    styles, spread = Styles(len(runs)), Spread(band)
    _branch_panel(ax, runs, "early_stop_iteration", band, spread, styles)
    ax.set_ylabel("Early-stop iteration")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.set_title("Iteration of minimum validation loss", fontsize=10)
    add_legend(fig, ax.get_lines(), spread, max_cols=_branch_columns(runs))
    add_title(fig, "Early-stop iteration vs. weights remaining", title, runs)
    return fig


def _main_branch(rows: Iterable) -> str:
    return branch_order({r.branch for r in rows})[0]


def _zoom(ax, curves: list[tuple[list[int], list[float]]], top: float | None = None) -> None:
    """Fit the y axis to the curves' values from CURVE_ZOOM_FROM of training on."""
    last = max((max(it) for it, _ in curves if it), default=0)
    values = [
        v
        for its, ys in curves
        for i, v in zip(its, ys)
        if i >= CURVE_ZOOM_FROM * last and math.isfinite(v)
    ]
    if not values:
        return
    lo, hi = min(values), max(values)
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 0.01, 0.01)
    lo, hi = lo - pad, hi + pad
    if top is not None:
        hi = min(hi, top)
    ax.set_ylim(lo, hi)


def curves_figure(runs: list[FigureRun], levels: Sequence[int] | None, title: str | None) -> Figure:
    """``curves``: validation accuracy and loss over training at a few levels of the ticket."""
    plan = []  # (run, branch, selected levels)
    for run in runs:
        branch = _main_branch(run.summary)
        available = sorted({r.level for r in run.summary if r.branch == branch})
        plan.append((run, branch, figure_levels(available, levels)))
    if levels is not None:
        known = {lv for _, _, chosen in plan for lv in chosen}
        absent = [lv for lv in levels if lv not in known]
        if absent:
            have = sorted({r.level for run in runs for r in run.summary})
            raise LTHError(
                f"level {absent[0]} is not in the run folder(s); choose levels from "
                f"{', '.join(map(str, have))}"
            )
    all_levels = sorted({lv for _, _, chosen in plan for lv in chosen})
    cmap = matplotlib.colormaps["viridis"]
    colors = {lv: cmap(0.85 * i / max(1, len(all_levels) - 1)) for i, lv in enumerate(all_levels)}

    fig = new_figure(11.2, 4.1)
    ax_acc, ax_loss = fig.subplots(1, 2)
    multi = len(runs) > 1
    branches = set()
    drawn: dict[int, list[tuple[list[int], list[float]]]] = {0: [], 1: []}
    reps = 1
    for ri, (run, branch, chosen) in enumerate(plan):
        branches.add(branch)
        metrics = load_metrics(run.path, branch=branch, levels=chosen)
        ls = RUN_LINESTYLES[ri % len(RUN_LINESTYLES)]
        for lv in chosen:
            rows_s = [r for r in run.summary if r.branch == branch and r.level == lv]
            excluded = {r.replicate for r in rows_s if r.diverged}
            reps = max(reps, len(rows_s) - len(excluded))
            wr = [r.weights_remaining for r in rows_s]
            by_iter: dict[int, tuple[list[float], list[float]]] = {}
            for m in metrics:
                if m.level == lv and m.replicate not in excluded:
                    acc, loss = by_iter.setdefault(m.iteration, ([], []))
                    acc.append(m.val_acc)
                    loss.append(m.val_loss)
            if not by_iter:
                continue
            iters = sorted(by_iter)
            label = f"level {lv} ({fmt_tick(sum(wr) / len(wr))}% remaining)"
            if excluded:
                label += f", {len(excluded)} diverged excluded"
            if multi:
                label = f"{run.name}: {label}"
            for ax, k in ((ax_acc, 0), (ax_loss, 1)):
                ys = [_nanmean(by_iter[i][k]) for i in iters]
                drawn[k].append((iters, ys))
                ax.plot(
                    iters, ys, color=colors[lv], linestyle=ls, linewidth=1.5, label=label, gid=label
                )
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("Training iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    _zoom(ax_acc, drawn[0], top=100.5)
    _zoom(ax_loss, drawn[1])
    ax_acc.set_ylabel("Validation accuracy (%)")
    ax_loss.set_ylabel("Validation loss")
    mean = f" (mean of n = {reps} replicates)" if reps > 1 else ""
    ax_acc.set_title(f"Validation accuracy{mean}", fontsize=11)
    ax_loss.set_title(f"Validation loss{mean}", fontsize=11)
    add_legend(fig, ax_acc.get_lines(), max_cols=4 if multi else 5)
    who = ", ".join(sorted(branches))
    add_title(fig, f"Training curves of the {who} at selected levels", title, runs)
    return fig


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def _join_runs(names: list[str], every: int) -> str:
    return "" if len(names) == every else ", ".join(names) + ": "


def _same_curve(a: tuple, b: tuple) -> bool:
    """Whether two (level, % remaining) curves are the same level for level, within
    LAYER_SAME (relative): layers pruned at the same rate differ only by rounding."""
    return len(a) == len(b) and all(
        la == lb and abs(va - vb) <= LAYER_SAME * max(abs(va), abs(vb))
        for (la, va), (lb, vb) in zip(a, b)
    )


def layer_figure(runs: list[FigureRun], title: str | None) -> Figure:
    """``layer_remaining``, one line per distinct curve: layers (and runs) whose weights
    remaining are the same at every level share a line, labelled with all of them."""
    curves: dict[tuple, list[tuple[int, str]]] = {}  # (levels, remaining) -> [(run, layer)]
    picked = []
    for ri, run in enumerate(runs):
        branch = _main_branch(run.layers)
        replicate = min(r.replicate for r in run.layers if r.branch == branch)
        picked.append(f"{branch}, replicate {replicate}")
        rows = [r for r in run.layers if r.branch == branch and r.replicate == replicate]
        for name in dict.fromkeys(r.layer for r in rows):
            mine = sorted((r for r in rows if r.layer == name), key=lambda r: r.level)
            key = tuple((r.level, r.remaining) for r in mine)
            same = next((k for k in curves if _same_curve(k, key)), key)
            curves.setdefault(same, []).append((ri, name))
    palette = matplotlib.colormaps["tab10" if len(curves) <= 10 else "tab20"].colors
    series = []
    max_level = 0
    for ci, (key, members) in enumerate(curves.items()):
        by_layers: dict[tuple[str, ...], list[str]] = {}
        for ri in dict.fromkeys(ri for ri, _ in members):
            layers = tuple(name for r, name in members if r == ri)
            by_layers.setdefault(layers, []).append(runs[ri].name)
        label = "; ".join(
            _join_runs(names, len(runs)) + ", ".join(layers) for layers, names in by_layers.items()
        )
        max_level = max(max_level, key[-1][0])
        series.append(
            Series(
                label,
                [lv for lv, _ in key],
                [v for _, v in key],
                palette[ci % len(palette)],
                RUN_MARKERS[ci % len(RUN_MARKERS)],
                zorder=3.0 + 0.01 * (len(curves) - ci),
            )
        )
    fig = new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    draw_series(ax, series, log_x=False)
    ax.set_yscale("log")
    values = [v for s in series for v in s.y if v > 0]
    decades = math.log10(max(values) / min(values)) if values else 1.0
    subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if decades < 1 else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=subs if decades < 3 else (1.0,)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_tick(v)))
    ax.xaxis.set_major_locator(
        MaxNLocator(integer=True, nbins=min(max_level, 10) or 1, min_n_ticks=1)
    )
    if max_level <= 10:
        ax.xaxis.set_major_locator(FixedLocator(range(max_level + 1)))
    ax.set_xlim(-0.4, max_level + 0.4)
    ax.set_xlabel("Pruning level")
    ax.set_ylabel("Weights remaining in layer (%, log scale)")
    add_legend(fig, ax.get_lines(), max_cols=3)
    shared = " (layers with the same curve share a line)"
    ax.set_title("; ".join(dict.fromkeys(picked)) + shared, fontsize=10, wrap=True)
    add_title(fig, "Weights remaining per layer", title, runs)
    return fig
