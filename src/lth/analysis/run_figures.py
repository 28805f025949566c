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
from lth.analysis.results import FigureRun, Stat, aggregate, member_rows, used_values
from lth.analysis.stats import matches, mean_interval
from lth.errors import LTHError
from lth.runfolder.layout import branch_order
from lth.runfolder.readers import load_metrics

__all__ = ["accuracy_figure", "curves_figure", "early_stop_figure", "layer_figure"]

CURVE_ZOOM_FROM = 0.1  # curves: y axes fit the evaluations from this fraction of training on
LAYER_SAME = 0.005  # layer_remaining: curves this close (relative) at every level are one line


ACCURACIES = ("test_acc", "test_acc_at_early_stop")  # summary columns in percent (0-100)


def _branch_series(
    runs: list[FigureRun], quantity: str, band: str, spread: Spread, styles: Styles
) -> list[Series]:
    """Mean over replicates of a summary quantity against weights remaining, one series per
    run and branch, with std error bars or bands (accuracies clipped to [0, 100]); diverged
    replicates as hollow marks; in the early-stop figure, ringed points where a replicate
    reached the iteration budget."""
    out = []
    bounds = (0.0, 100.0) if quantity in ACCURACIES else (-math.inf, math.inf)
    for ri, run in enumerate(runs):
        stats = aggregate(run.summary, quantity)
        budget = _budget(run) if quantity == "early_stop_iteration" else None
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
            s.bounds = bounds
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
            if s.band is not None:
                s.band = tuple([min(max(v, bounds[0]), bounds[1]) for v in b] for b in s.band)
            spread.counts |= {g.n for g in group if g.n >= 2}
            spread.single |= any(g.n == 1 for g in group)
            dense = _dense(stats)
            if quantity in ACCURACIES and dense is not None:
                hits = [i for i, g in enumerate(group) if matches(g.mean, dense.mean, dense.std)]
                if hits:
                    s.matching = max(hits, key=lambda i: group[i].level)
                    spread.matching = True
            if budget is not None:
                s.ringed = [i for i, g in enumerate(group) if any(v >= budget for _, v in g.values)]
                spread.budget |= bool(s.ringed)
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


def _dense(stats: list[Stat]):
    """The dense network: the ticket at level 0 (else the first branch's level 0)."""
    at0 = [g for g in stats if g.level == 0]
    return next((g for g in at0 if g.branch == "ticket"), at0[0] if at0 else None)


def _budget(run: FigureRun) -> float | None:
    """The training length of each level (config ``iterations``), when the run says it."""
    value = run.config.get("iterations")
    return float(value) if isinstance(value, (int, float)) and value > 0 else None


def _branch_panel(ax, runs, quantity, band, spread: Spread, styles: Styles) -> list[Series]:
    series = _branch_series(runs, quantity, band, spread, styles)
    draw_series(ax, series, log_x=True)
    log_x_axis(ax, [x for s in series for x in s.x])
    return series


def _branch_columns(runs: list[FigureRun]) -> int:
    """Legend columns of a branch figure: one row for one run; a column per run (and one for
    the notes) for several, so that each column lists one run's branches, when they fit."""
    return 4 if len(runs) == 1 else len(runs) + 1


def _dense_lines(ax, runs: list[FigureRun], quantity: str, styles: Styles, legend: bool) -> dict:
    """A dotted line at the dense network's mean (level 0) with a band of ± 1 std, per run (one
    grey line when every run has the same dense network); returns {run index: line}."""
    found = []
    for ri, run in enumerate(runs):
        dense = _dense(aggregate(run.summary, quantity))
        if dense is not None and math.isfinite(dense.mean):
            found.append((ri, dense))
    if not found:
        return {}
    same = all(d.mean == found[0][1].mean and d.n == found[0][1].n for _, d in found)
    if same:
        found = found[:1]
    lines = {}
    for ri, d in found:
        what = "dense network (level 0)"
        if d.n >= 2:
            what += f", mean ± std over n = {d.n}"
        label = f"{runs[ri].name}: {what}" if styles.multi and not same else what
        color = "0.35" if same or not styles.multi else styles.color(ri, "ticket")
        line = ax.axhline(
            d.mean, color=color, linestyle=(0, (1.5, 1.5)), linewidth=1.3, zorder=2,
            label=label if legend else "_nolegend_", gid=f"dense:{label}",
        )  # fmt: skip
        if d.n >= 2 and math.isfinite(d.std):
            ax.axhspan(
                max(d.mean - d.std, 0.0), min(d.mean + d.std, 100.0), color=color, alpha=0.12,
                linewidth=0, zorder=0.5, label="_nolegend_", gid=f"dense_band:{label}",
            )  # fmt: skip
        lines[ri] = line
    return lines


def _cap_accuracy_axis(ax) -> None:
    """An accuracy axis never runs above 100% or below 0%."""
    lo, hi = ax.get_ylim()
    ax.set_ylim(max(lo, 0.0), min(hi, 100.0))


def accuracy_figure(runs: list[FigureRun], band: str, panels: str, title: str | None) -> Figure:
    """``accuracy_vs_weights``: test accuracy against weights remaining, at the end of training
    and/or at the early-stop iteration (``panels``: end, early, both), with the dense line."""
    chosen = {"both": ACCURACIES, "end": ACCURACIES[:1], "early": ACCURACIES[1:]}[panels]
    fig = new_figure(5.6 * len(chosen), 4.1)
    axes = fig.subplots(1, len(chosen), squeeze=False, sharey=True)[0]
    styles, spread = Styles(len(runs)), Spread(band)
    names = {
        "test_acc": "At the end of training",
        "test_acc_at_early_stop": "At the early-stop iteration (min. val. loss)",
    }
    dense = {}
    for i, (ax, quantity) in enumerate(zip(axes, chosen)):
        _branch_panel(ax, runs, quantity, band, spread, styles)
        found = _dense_lines(ax, runs, quantity, styles, legend=i == 0)
        dense = dense or found
        ax.set_title(names[quantity])
        ax.tick_params(labelleft=True)
    axes[0].set_ylabel("Test accuracy (%)")
    for ax in axes:
        _cap_accuracy_axis(ax)
    handles = _legend_order(axes[0], runs, dense, styles)
    add_legend(fig, handles, spread, max_cols=_branch_columns(runs))
    add_title(fig, "Test accuracy vs. weights remaining", title, runs)
    return fig


def _legend_order(ax, runs, dense: dict, styles: Styles) -> list:
    """The branch lines run by run, each run's dense line after its branches."""
    lines = [ln for ln in ax.get_lines() if not ln.get_label().startswith("_")]
    extra = set(map(id, dense.values()))
    series = [ln for ln in lines if id(ln) not in extra]
    if not styles.multi or len(dense) <= 1:
        return series + list(dense.values())
    out = []
    for ri, run in enumerate(runs):
        out += [ln for ln in series if ln.get_label().startswith(f"{run.name}: ")]
        out += [dense[ri]] if ri in dense else []
    return out + [ln for ln in series if ln not in out]


def early_stop_figure(runs: list[FigureRun], band: str, title: str | None) -> Figure:
    """``early_stop``: the early-stop iteration against weights remaining, with the iteration
    budget (the training length: a point there never stopped early) marked."""
    fig = new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    styles, spread = Styles(len(runs)), Spread(band)
    _branch_panel(ax, runs, "early_stop_iteration", band, spread, styles)
    budgets = sorted({b for b in map(_budget, runs) if b is not None})
    for b in budgets:
        label = "iteration budget (training length)"
        if len(budgets) > 1:
            label += f": {b:,.0f}"
        ax.axhline(b, color="0.3", linestyle="--", linewidth=1.1, zorder=2, label=label,
                   gid=f"budget:{b:g}")  # fmt: skip
    ax.set_ylabel("Early-stop iteration")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.set_title("Iteration of minimum validation loss", fontsize=10)
    add_legend(fig, ax.get_lines(), spread, max_cols=_branch_columns(runs))
    add_title(fig, "Early-stop iteration vs. weights remaining", title, runs)
    return fig


def _main_branch(rows: Iterable) -> str:
    return branch_order({r.branch for r in rows})[0]


def _zoom(ax, curves: list[tuple[list[int], list[float]]], top: float | None = None) -> str:
    """Fit the y axis to the curves' values from CURVE_ZOOM_FROM of training on, and say in
    the axes what runs off it ('axis cut at 94.7: earlier values down to 10.2'); returns it."""
    last = max((max(it) for it, _ in curves if it), default=0)
    values = [
        v
        for its, ys in curves
        for i, v in zip(its, ys)
        if i >= CURVE_ZOOM_FROM * last and math.isfinite(v)
    ]
    if not values:
        return ""
    lo, hi = min(values), max(values)
    pad = 0.06 * (hi - lo) if hi > lo else max(abs(hi) * 0.01, 0.01)
    lo, hi = lo - pad, hi + pad
    if top is not None:
        hi = min(hi, top)
    ax.set_ylim(lo, hi)
    every = [v for _, ys in curves for v in ys if math.isfinite(v)]
    notes = []
    if every and min(every) < lo:
        notes.append(f"↓ axis cut at {lo:.3g}: earlier values down to {min(every):.3g}")
    if every and max(every) > hi:
        notes.append(f"↑ axis cut at {hi:.3g}: earlier values up to {max(every):.3g}")
    note = "; ".join(notes)
    if note:
        ax.text(
            0.99, 0.02 if min(every) < lo else 0.98, note, transform=ax.transAxes, ha="right",
            va="bottom" if min(every) < lo else "top", fontsize=7.5, color="0.3", gid="clipped",
        )  # fmt: skip
    return note


def curves_figure(runs: list[FigureRun], levels: Sequence[int] | None, title: str | None) -> Figure:
    """``curves``: validation accuracy and loss over training at a few levels, one row of two
    panels per branch (the ticket first), means over replicates; the y axes fit the curves
    from 10% of training on, and a note in the panel says what runs off."""
    plan = []  # (run, selected levels)
    for run in runs:
        available = sorted({r.level for r in run.summary})
        plan.append((run, figure_levels(available, levels)))
    if levels is not None:
        known = {lv for _, chosen in plan for lv in chosen}
        absent = [lv for lv in levels if lv not in known]
        if absent:
            have = sorted({r.level for run in runs for r in run.summary})
            raise LTHError(
                f"level {absent[0]} is not in the run folder(s); choose levels from "
                f"{', '.join(map(str, have))}"
            )
    branches = branch_order({r.branch for run in runs for r in run.summary})
    all_levels = sorted({lv for _, chosen in plan for lv in chosen})
    cmap = matplotlib.colormaps["viridis"]
    colors = {lv: cmap(0.85 * i / max(1, len(all_levels) - 1)) for i, lv in enumerate(all_levels)}

    fig = new_figure(11.2, 3.4 * len(branches) + 0.7)
    grid = fig.subplots(len(branches), 2, squeeze=False)
    multi = len(runs) > 1
    reps = 1
    for ri, (run, chosen) in enumerate(plan):
        metrics = member_rows(run, lambda p, chosen=chosen: load_metrics(p, levels=chosen))
        ls = RUN_LINESTYLES[ri % len(RUN_LINESTYLES)]
        for bi, branch in enumerate(branches):
            for lv in chosen:
                drawn = _draw_curve(grid[bi], run, branch, lv, metrics, (colors[lv], ls), multi)
                reps = max(reps, drawn)
    mean = f"mean of n = {reps} replicates" if reps > 1 else "single run"
    for bi, branch in enumerate(branches):
        ax_acc, ax_loss = grid[bi]
        for ax, k in ((ax_acc, 0), (ax_loss, 1)):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
            curves = [(list(ln.get_xdata()), list(ln.get_ydata())) for ln in ax.get_lines()]
            _zoom(ax, curves, top=100.5 if k == 0 else None)
        ax_acc.set_ylabel("Validation accuracy (%)")
        ax_loss.set_ylabel("Validation loss")
        ax_acc.set_title(f"{branch}: validation accuracy ({mean})", fontsize=11)
        ax_loss.set_title(f"{branch}: validation loss ({mean})", fontsize=11)
    for ax in grid.flat:
        ax.set_xlabel("Training iteration")
    handles = {}
    for ax in grid[:, 0]:
        for ln in ax.get_lines():
            handles.setdefault(ln.get_label(), ln)
    add_legend(fig, list(handles.values()), max_cols=4 if multi else 5)
    add_title(fig, "Training curves at selected levels, every branch", title, runs)
    return fig


def _draw_curve(axes, run: FigureRun, branch: str, lv: int, metrics, look, multi: bool) -> int:
    """One level's mean accuracy and loss curves of one branch; returns its replicates."""
    rows_s = [r for r in run.summary if r.branch == branch and r.level == lv]
    excluded = {r.replicate for r in rows_s if r.diverged}
    by_iter: dict[int, tuple[list[float], list[float]]] = {}
    for m in metrics:
        if m.branch == branch and m.level == lv and m.replicate not in excluded:
            acc, loss = by_iter.setdefault(m.iteration, ([], []))
            acc.append(m.val_acc)
            loss.append(m.val_loss)
    if not by_iter:
        return 1
    wr = [r.weights_remaining for r in rows_s]
    iters = sorted(by_iter)
    label = f"level {lv} ({fmt_tick(sum(wr) / len(wr))}% remaining)"
    if excluded:
        label += f", {len(excluded)} diverged excluded"
    if multi:
        label = f"{run.name}: {label}"
    color, ls = look
    for ax, k in zip(axes, (0, 1)):
        ys = [_nanmean(by_iter[i][k]) for i in iters]
        ax.plot(iters, ys, color=color, linestyle=ls, linewidth=1.5, label=label, gid=label)
    return len(rows_s) - len(excluded)


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
