"""Publication-quality figures of one or several run folders (Frankle & Carbin's figure style).

:func:`plot_runs` draws four figures (six with a mask analysis), saves each as PNG (and PDF
on request) and returns the :class:`matplotlib.figure.Figure` objects by name:

- ``accuracy_vs_weights``: test accuracy at the end of training (and at the early-stop
  iteration) against percent of weights remaining, log x axis running from 100% down;
- ``curves``: validation accuracy and loss over training for a few levels of the ticket, the
  y axes zoomed to the curves from 10% of training on (the steep first evaluations run off);
- ``early_stop``: the early-stop iteration against weights remaining;
- ``layer_remaining``: percent of weights remaining per layer against pruning level; layers
  (and runs) whose curves are the same (within rounding: 0.5%) are one line, labelled with
  all of them;

and, when the first run folder has a mask analysis (``analysis.csv``, written by
:func:`lth.analysis.mask_analysis.ensure_analysis`, which ``lth run`` and ``lth plot`` call first):

- ``mask_analysis``: Jaccard overlap of masks (the ticket with the random-pruning control,
  and each branch with its previous level's mask) and the fraction of survivors that kept
  their sign from θ-start to the end of training, against weights remaining (means over
  replicates). Series that carry no information are left out and the figure says so: the
  overlap with the previous level of nested masks (the ticket's: each level keeps a subset of
  the last, so the overlap is just the fraction kept, 1 - rate) and a branch whose values are
  those of another branch (reinit trains on the ticket's masks);
- ``weight_histograms``: histograms of the surviving weights' magnitudes at θ-start and at the
  end of training for the same levels as ``curves`` (ticket, first replicate), on shared log
  bins, the x axis spanning the central 99% of the weights.

Every series in a legend stays visible: series that meet at the same points (the ticket and
random_prune at level 0 are the same network; early-stop iterations are often the same) are
shifted sideways by a few points (a display offset: the artists' data are the true values),
the ticket is drawn on top, and each branch has its own marker. Legends sit below the axes,
with as many columns as fit; the figure grows to hold them, so no text is ever cut off.

Titles describe the study from its config (model on dataset), never by folder name;
``title`` replaces that line ("" draws no title). Several runs are told apart by ``labels``
(default: the settings in which they differ, e.g. "seed 1", else their folder names). Where
replicates give a spread, a legend entry says what it is and over how many replicates
("±1 std, n = 2 replicates").

This module only reads run folders (through :mod:`lth.runfolder.readers`) and writes the figures.
Figures are built as bare ``Figure`` objects (no pyplot), so nothing global is created or has
to be closed; styling is applied through a temporary ``rc_context``. With one run, colours and
markers identify the branch (ticket, reinit, random_prune); with several, colours identify the
run and markers and line styles the branch.

Artists carry their legend label, and ``gid`` values for tests and tools: a branch's mean
line has ``gid == label``; its error bars (a LineCollection) ``"errorbar:" + label``; its
min-max band ``"band:" + label``; its diverged replicates ``"diverged:" + label``. In
``mask_analysis`` the lines are labelled ``"<branch> vs. previous level"`` and ``"ticket vs.
random_prune"`` (left panel) and ``"<branch>"`` (right panel); in ``weight_histograms`` the step
patches have ``gid`` ``"init:<level>"`` and ``"final:<level>"``.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullLocator,
)
from matplotlib.transforms import ScaledTranslation

from lth.analysis.report import aggregate, load_runs, used_values
from lth.analysis.stats import matches, mean_interval
from lth.core.fileio import atomic_write
from lth.errors import LTHError
from lth.runfolder.layout import ALL, ANALYSIS_FIGURES, CONTROL, FIGURES, PLOTS, branch_order
from lth.runfolder.manifest import RunWriter
from lth.runfolder.ownership import check_output_path, check_replace
from lth.runfolder.readers import (
    LayerRow,
    SummaryRow,
    load_analysis,
    load_histograms,
    load_layers,
    load_metrics,
)
from lth.runfolder.tables import ANALYSIS, ANALYSIS_HISTOGRAMS

__all__ = [
    "ANALYSIS_FIGURES", "BANDS", "FIGURES", "check_targets", "default_levels", "fmt_tick",
    "is_lth_figure", "plot_runs",
]  # fmt: skip
BANDS = ("std", "minmax", "ci")
#: What every figure lth saves carries in its metadata (PNG: Software, PDF and SVG: Creator),
#: and the bytes that show it in the file: lth replaces a figure only if it carries them.
SIGNATURE = "lth plot"
SIGNED = {
    "png": ("Software", b"tEXtSoftware\x00lth plot"),
    "pdf": ("Creator", b"/Creator (lth plot)"),
    "svg": ("Creator", b"<dc:title>lth plot</dc:title>"),
}

BRANCH_COLORS = {"ticket": "#1f77b4", "reinit": "#d62728", "random_prune": "#2ca02c"}
BRANCH_MARKERS = {"ticket": "o", "reinit": "s", "random_prune": "^"}
BRANCH_LINESTYLES = {"ticket": "-", "reinit": "--", "random_prune": "-."}
OVERLAP_COLOR = "#ff7f0e"  # ticket vs. random_prune overlap
HIST_COLORS = {"init": "#7f7f7f", "final": "#1f77b4"}
FIGURE_LEVELS = 4  # levels drawn by default in curves and weight_histograms
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
_EXTRA_MARKERS = ("D", "v", "P", "X", "<", ">")
RUN_COLORS = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
RUN_LINESTYLES = (
    "-",
    (0, (5, 2)),
    (0, (1, 1.5)),
    (0, (6, 1.5, 1, 1.5)),
    (0, (10, 3)),
    (0, (3, 1.5, 1, 1.5, 1, 1.5)),
    (0, (2, 2)),
    (0, (8, 1.5, 2, 1.5)),
)
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<")
MAX_X_TICKS = 10
DODGE_PT = 4.5  # sideways step between series that meet, in points
DODGE_SPREAD_PT = 27.0  # the most a group of meeting series is spread over
CURVE_ZOOM_FROM = 0.1  # curves: y axes fit the evaluations from this fraction of training on
HIST_KEEP = 0.99  # weight histograms: x axis spans this central share of the weights
LAYER_SAME = 0.005  # layer_remaining: curves this close (relative) at every level are one line

STYLE = {
    "font.size": 11,
    "axes.titlesize": 12,
    "axes.labelsize": 12,
    "xtick.labelsize": 10,
    "ytick.labelsize": 10,
    "legend.fontsize": 9,
    "figure.titlesize": 13,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.alpha": 0.35,
    "grid.linestyle": "-",
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.8,
    "lines.markersize": 5.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.framealpha": 0.9,
    "pdf.fonttype": 42,  # embed TrueType: text stays editable/searchable in the PDF
    "ps.fonttype": 42,
}


@dataclass
class _Run:
    name: str  # the run's label in legends
    path: Path
    summary: list[SummaryRow]
    layers: list[LayerRow]
    config: dict = field(default_factory=dict)
    analysis: list[dict] | None = None  # analysis.csv rows (lth.runfolder.readers.load_analysis)
    histograms: list[dict] | None = None  # analysis_histograms.csv rows


def fmt_tick(value: float) -> str:
    """Tick label for a percentage: '100', '80', '51.2', '3.6', '0.47'."""
    if value >= 1:
        text = f"{value:.1f}"
        return text[:-2] if text.endswith(".0") else text
    return f"{value:.2g}"


def default_levels(available: Sequence[int], count: int = FIGURE_LEVELS) -> list[int]:
    """About ``count`` levels spread out: the first, the last and evenly between."""
    levels = sorted(set(available))
    if len(levels) <= count:
        return levels
    n = len(levels) - 1
    picks = sorted({round(i * n / (count - 1)) for i in range(count)})
    return [levels[i] for i in picks]


def _load_runs(
    run_dirs: Sequence[str | os.PathLike[str]], labels: Sequence[str] | None
) -> list[_Run]:
    runs = load_runs(list(run_dirs), labels)
    return [_Run(r.label, r.path, r.summary, load_layers(r.path), r.config) for r in runs]


# ----------------------------------------------------------------------------- styles


class _Styles:
    """Colour, marker and line style of each (run, branch): with one run the branch decides
    all three (solid lines); with several, the colour is the run's."""

    def __init__(self, nruns: int):
        self.multi = nruns > 1
        self.extras: dict[str, int] = {}

    def _extra(self, branch: str) -> int:
        return self.extras.setdefault(branch, len(self.extras))

    def color(self, ri: int, branch: str) -> str:
        if self.multi:
            return RUN_COLORS[ri % len(RUN_COLORS)]
        if branch in BRANCH_COLORS:
            return BRANCH_COLORS[branch]
        return _EXTRA_COLORS[self._extra(branch) % len(_EXTRA_COLORS)]

    def marker(self, branch: str) -> str:
        if branch in BRANCH_MARKERS:
            return BRANCH_MARKERS[branch]
        return _EXTRA_MARKERS[self._extra(branch) % len(_EXTRA_MARKERS)]

    def linestyle(self, branch: str):
        return BRANCH_LINESTYLES.get(branch, ":") if self.multi else "-"


def _zorder(branch: str) -> float:
    """The ticket on top, then the controls in their usual order."""
    order = ("ticket", "reinit", "random_prune")
    return 3.0 + (len(order) - order.index(branch)) * 0.1 if branch in order else 3.0


# ----------------------------------------------------------------------------- series


@dataclass
class _Series:
    """One line of points: mean values, with optional error bars / band and hollow marks."""

    label: str
    x: list[float]
    y: list[float]
    color: str
    marker: str
    linestyle: object = "-"
    zorder: float = 3.0
    err: list[float] | None = None  # ±1 std per point (NaN: none)
    band: tuple[list[float], list[float]] | None = None  # (low, high) per point
    hollow: tuple[list[float], list[float]] = ((), ())  # diverged replicates (x, y)
    linewidth: float | None = None
    matching: int | None = None  # the point marked as the sparsest matching level


def _dodge(series: Sequence[_Series], log_x: bool) -> list[float]:
    """Sideways offsets in points, one per series, so that no series hides another.

    Two series meet when they have a point at (nearly) the same place: x within 1% of the
    axis span and y within 1.5% of it. Series linked by meeting points are spread evenly
    around their true position, DODGE_PT apart (closer for large groups); the others stay."""

    def fx(v: float) -> float:
        return math.log(v) if log_x else v

    pts = [
        [(fx(x), y) for x, y in zip(s.x, s.y) if math.isfinite(y) and (x > 0 or not log_x)]
        for s in series
    ]
    xs = [p[0] for ps in pts for p in ps]
    ys = [p[1] for ps in pts for p in ps]
    for s in series:
        if s.err:
            ys += [y + e for y, e in zip(s.y, s.err) if math.isfinite(y + e)]
            ys += [y - e for y, e in zip(s.y, s.err) if math.isfinite(y - e)]
    if not xs:
        return [0.0] * len(series)
    tol_x = 0.01 * ((max(xs) - min(xs)) or 1.0)
    tol_y = 0.015 * ((max(ys) - min(ys)) or abs(max(ys)) or 1.0)
    parent = list(range(len(series)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in range(len(series)):
        for j in range(i + 1, len(series)):
            if root(i) == root(j):
                continue
            if any(
                abs(a[0] - b[0]) <= tol_x and abs(a[1] - b[1]) <= tol_y
                for a in pts[i]
                for b in pts[j]
            ):
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for i in range(len(series)):
        groups.setdefault(root(i), []).append(i)
    offsets = [0.0] * len(series)
    for members in groups.values():
        k = len(members)
        if k < 2:
            continue
        step = min(DODGE_PT, DODGE_SPREAD_PT / (k - 1))
        for j, i in enumerate(members):
            offsets[i] = (j - (k - 1) / 2) * step
    return offsets


def _draw_series(ax, series: Sequence[_Series], log_x: bool) -> None:
    """Draw each series (line and markers, error bars or band, hollow diverged marks),
    shifted sideways by :func:`_dodge`'s offsets (axis limits come from the true values)."""
    fig = ax.figure
    for s, dx in zip(series, _dodge(series, log_x)):
        shift = ax.transData + ScaledTranslation(dx / 72, 0, fig.dpi_scale_trans)
        artists = []
        style = {"linewidth": s.linewidth} if s.linewidth else {}
        artists += ax.plot(
            s.x,
            s.y,
            color=s.color,
            linestyle=s.linestyle,
            marker=s.marker,
            label=s.label,
            gid=s.label,
            zorder=s.zorder,
            **style,
        )
        if s.err is not None:
            keep = [i for i, e in enumerate(s.err) if math.isfinite(e)]
            if keep:
                bars = ax.errorbar(
                    [s.x[i] for i in keep],
                    [s.y[i] for i in keep],
                    yerr=[s.err[i] for i in keep],
                    fmt="none",
                    ecolor=s.color,
                    elinewidth=1.2,
                    capsize=3,
                    label="_nolegend_",
                    zorder=s.zorder - 1,
                )
                bars.lines[2][0].set_gid(f"errorbar:{s.label}")
                artists += [*bars.lines[1], *bars.lines[2]]
        if s.band is not None:
            lo, hi = s.band
            keep = [i for i in range(len(s.x)) if math.isfinite(lo[i]) and math.isfinite(hi[i])]
            if keep:
                artists.append(
                    ax.fill_between(
                        [s.x[i] for i in keep],
                        [lo[i] for i in keep],
                        [hi[i] for i in keep],
                        color=s.color,
                        alpha=0.18,
                        linewidth=0,
                        label="_nolegend_",
                        gid=f"band:{s.label}",
                        zorder=1,
                    )
                )
        if s.hollow[0]:
            artists += ax.plot(
                list(s.hollow[0]),
                list(s.hollow[1]),
                linestyle="none",
                marker=s.marker,
                markerfacecolor="none",
                markeredgecolor=s.color,
                markeredgewidth=1.3,
                label="_nolegend_",
                gid=f"diverged:{s.label}",
                zorder=s.zorder,
            )
        if s.matching is not None:
            artists += ax.plot(
                [s.x[s.matching]],
                [s.y[s.matching]],
                linestyle="none",
                marker="*",
                markersize=17,
                markerfacecolor="none",
                markeredgecolor=s.color,
                markeredgewidth=1.2,
                label="_nolegend_",
                gid=f"matching:{s.label}",
                zorder=s.zorder + 0.5,
            )
        if dx:
            for artist in artists:  # added first, so the axes' data limits are the true ones
                artist.set_transform(shift)


def _log_x_axis(ax, values: Iterable[float]) -> None:
    """Log-scaled x axis running from 100% on the left down, ticked at the given percentages."""
    vals = sorted({v for v in values if v > 0 and math.isfinite(v)}, reverse=True)
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    if not vals:
        return
    # at most about MAX_X_TICKS labels: keep a value only if it is far enough (on the log
    # axis) from the last kept one; the smallest value replaces a last tick too close to it
    gap = 0.999 * max(math.log(vals[0] / vals[-1]) / (MAX_X_TICKS - 1), math.log(1.04))
    ticks = [vals[0]]
    for v in vals[1:]:
        if math.log(ticks[-1] / v) >= gap:
            ticks.append(v)
    if ticks[-1] != vals[-1]:
        if len(ticks) > 1 and math.log(ticks[-1] / vals[-1]) < gap:
            ticks.pop()
        ticks.append(vals[-1])
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_tick(v)))
    ax.set_xlim(vals[0] * 1.12, vals[-1] / 1.12)  # left > right: inverted, as in the paper
    ax.set_xlabel("Weights remaining (%, log scale)")


@dataclass
class _Spread:
    """What the spread drawn in a figure is: error bars or bands, over how many replicates."""

    band: str
    counts: set[int] = field(default_factory=set)  # usable replicates (n) of drawn points
    diverged: bool = False
    matching: bool = False  # a matching level is marked

    def entry(self) -> Line2D | None:
        """A legend entry saying what the bars are and n, or None when none were drawn."""
        if not self.counts:
            return None
        lo, hi = min(self.counts), max(self.counts)
        n = f"n = {lo}" if lo == hi else f"n = {lo}-{hi}"
        if self.band == "std":
            return Line2D(
                [], [], color="0.35", marker="|", markersize=11, markeredgewidth=1.3,
                linestyle="none", label=f"error bars: ±1 std over {n} replicates",
            )  # fmt: skip
        what = "95% CI of the mean" if self.band == "ci" else "min-max"
        return Line2D(
            [], [], color="0.6", linewidth=7, alpha=0.45,
            label=f"band: {what} over {n} replicates",
        )  # fmt: skip


def _branch_series(
    runs: list[_Run], quantity: str, band: str, spread: _Spread, styles: _Styles
) -> list[_Series]:
    """Mean over replicates of a summary quantity against weights remaining, one series per
    run and branch, with std error bars or min-max bands; diverged replicates as hollow marks."""
    out = []
    for ri, run in enumerate(runs):
        stats = aggregate(run.summary, quantity)
        for branch in branch_order({s.branch for s in stats}):
            group = [s for s in stats if s.branch == branch]
            label = f"{run.name}: {branch}" if styles.multi else branch
            s = _Series(
                label,
                [g.weights_remaining for g in group],
                [g.mean for g in group],
                styles.color(ri, branch),
                styles.marker(branch),
                styles.linestyle(branch),
                _zorder(branch),
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


def _branch_panel(ax, runs, quantity, band, spread: _Spread, styles: _Styles) -> None:
    series = _branch_series(runs, quantity, band, spread, styles)
    _draw_series(ax, series, log_x=True)
    _log_x_axis(ax, [x for s in series for x in s.x])


# ----------------------------------------------------------------------------- layout


def _renderer(fig: Figure):
    return fig.canvas.get_renderer()


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure text with
    return fig


def _legend(
    fig: Figure,
    handles: list,
    spread: _Spread | None = None,
    max_cols: int = 4,
    note: str = "",
):
    """One legend below the axes, for the whole figure: as many columns as fit in the
    figure's width (the figure widens when even one column does not), and the figure grows
    taller by the legend's height so the axes keep their size. ``note``: a line of small
    print over the entries (wrapped to the figure's width)."""
    handles = [h for h in handles if not h.get_label().startswith("_")]
    if spread is not None:
        if spread.diverged:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker="o",
                    markerfacecolor="none",
                    markeredgecolor="0.3",
                    label="diverged replicate (hollow; not in mean)",
                )  # fmt: skip
            )
        entry = spread.entry()
        if entry is not None:
            handles.append(entry)
        if spread.matching:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker="*",
                    markersize=12,
                    markerfacecolor="none",
                    markeredgecolor="0.3",
                    label="sparsest matching level (within 1 std of the dense network)",
                )  # fmt: skip
            )
    if not handles:
        return None
    renderer = _renderer(fig)
    room = fig.get_figwidth() * fig.dpi - 24  # a margin on both sides
    legend = None
    for ncol in range(min(max_cols, len(handles)), 0, -1):
        if legend is not None:
            legend.remove()
        legend = fig.legend(handles=handles, loc="outside lower center", ncol=ncol)
        if note:
            chars = max(40, int(room / (0.55 * 8.5 * fig.dpi / 72)))
            legend.set_title(textwrap.fill(note, chars), prop={"size": 8.5})
            legend.get_title().set_color("0.25")
        width = legend.get_window_extent(renderer).width
        if width <= room:
            break
    box = legend.get_window_extent(renderer)
    if box.width > room:
        fig.set_figwidth((box.width + 30) / fig.dpi)
    fig.set_figheight(fig.get_figheight() + box.height / fig.dpi + 0.1)
    return legend


def _suptitle(fig: Figure, subject: str, title: str | None, runs: list[_Run]) -> None:
    """'subject' over the study's description (or ``title``); no title at all when ``title``
    is ""."""
    if title == "":
        return
    second = _describe(runs) if title is None else title
    fig.suptitle(f"{subject}\n{second}" if second else subject, wrap=True)


def _describe(runs: list[_Run]) -> str:
    """What the runs have in common: 'lenet_300_100 on mnist'."""
    values = {k: {str(r.config.get(k)) for r in runs} for k in ("model", "dataset")}
    model, dataset = (next(iter(v)) if len(v) == 1 else None for v in values.values())
    model = model if model not in (None, "None") else None
    dataset = dataset if dataset not in (None, "None") else None
    if model and dataset:
        return f"{model} on {dataset}"
    return model or dataset or ""


# ----------------------------------------------------------------------------- figures


def _branch_columns(runs: list[_Run]) -> int:
    """Legend columns of a branch figure: one row for one run; a column per run (and one for
    the notes) for several, so that each column lists one run's branches, when they fit."""
    return 4 if len(runs) == 1 else len(runs) + 1


def _accuracy_figure(runs, band, early_stop_panel, title) -> Figure:
    ncols = 2 if early_stop_panel else 1
    fig = _new_figure(5.6 * ncols, 4.1)
    axes = fig.subplots(1, ncols, squeeze=False, sharey=True)[0]
    styles, spread = _Styles(len(runs)), _Spread(band)
    _branch_panel(axes[0], runs, "test_acc", band, spread, styles)
    axes[0].set_ylabel("Test accuracy (%)")
    axes[0].set_title("At the end of training")
    if early_stop_panel:
        _branch_panel(axes[1], runs, "test_acc_at_early_stop", band, spread, styles)
        axes[1].set_title("At the early-stop iteration (min. val. loss)")
        axes[1].tick_params(labelleft=True)
    _legend(fig, axes[0].get_lines(), spread, max_cols=_branch_columns(runs))
    _suptitle(fig, "Test accuracy vs. weights remaining", title, runs)
    return fig


def _early_stop_figure(runs, band, title) -> Figure:
    fig = _new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    styles, spread = _Styles(len(runs)), _Spread(band)
    _branch_panel(ax, runs, "early_stop_iteration", band, spread, styles)
    ax.set_ylabel("Early-stop iteration")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    ax.set_title("Iteration of minimum validation loss", fontsize=10)
    _legend(fig, ax.get_lines(), spread, max_cols=_branch_columns(runs))
    _suptitle(fig, "Early-stop iteration vs. weights remaining", title, runs)
    return fig


def _main_branch(rows: Iterable) -> str:
    return branch_order({r.branch for r in rows})[0]


def _figure_levels(available: Sequence[int], levels: Sequence[int] | None) -> list[int]:
    """The levels a figure draws: those asked for that exist, else :func:`default_levels`
    (the same choice in ``curves`` and ``weight_histograms``)."""
    if levels is None:
        return default_levels(available)
    return [lv for lv in levels if lv in set(available)]


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


def _curves_figure(runs: list[_Run], levels: Sequence[int] | None, title) -> Figure:
    plan = []  # (run, branch, selected levels)
    for run in runs:
        branch = _main_branch(run.summary)
        available = sorted({r.level for r in run.summary if r.branch == branch})
        plan.append((run, branch, _figure_levels(available, levels)))
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

    fig = _new_figure(11.2, 4.1)
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
    _legend(fig, ax_acc.get_lines(), max_cols=4 if multi else 5)
    who = ", ".join(sorted(branches))
    _suptitle(fig, f"Training curves of the {who} at selected levels", title, runs)
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


def _layer_figure(runs: list[_Run], title) -> Figure:
    """One line per distinct curve: layers (and runs) whose weights remaining are the same at
    every level share a line, labelled with all of them."""
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
            _Series(
                label,
                [lv for lv, _ in key],
                [v for _, v in key],
                palette[ci % len(palette)],
                RUN_MARKERS[ci % len(RUN_MARKERS)],
                zorder=3.0 + 0.01 * (len(curves) - ci),
            )
        )
    fig = _new_figure(7.0, 4.4)
    ax = fig.add_subplot()
    _draw_series(ax, series, log_x=False)
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
    _legend(fig, ax.get_lines(), max_cols=3)
    shared = " (layers with the same curve share a line)"
    ax.set_title("; ".join(dict.fromkeys(picked)) + shared, fontsize=10, wrap=True)
    _suptitle(fig, "Weights remaining per layer", title, runs)
    return fig


def _read_analysis(path: Path) -> tuple[list[dict], list[dict]] | None:
    """A run folder's analysis files, when it has analysis.csv (a damaged one raises)."""
    if not (path / ANALYSIS.file).is_file():
        return None
    hist = path / ANALYSIS_HISTOGRAMS.file
    return load_analysis(path), load_histograms(path) if hist.is_file() else []


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


def _mask_figure(runs: list[_Run], title) -> Figure:
    styles = _Styles(len(runs))
    spread = _Spread("std")
    left: list[_Series] = []
    right: list[_Series] = []
    left_out: dict[tuple[str, str, str], list[str]] = {}  # (branch, series, why) -> runs
    xs: list[float] = []

    def series(rows, column, label, color, marker, linestyle, zorder) -> _Series | None:
        points = _means_over_replicates(rows, column)
        if not points:
            return None
        spread.counts |= {p[3] for p in points if p[3] >= 2}
        return _Series(
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
            ls, z = styles.linestyle(b), _zorder(b)
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

    fig = _new_figure(11.2, 4.3)
    ax_j, ax_s = fig.subplots(1, 2)
    _draw_series(ax_j, left, log_x=True)
    _draw_series(ax_s, right, log_x=True)
    for ax in (ax_j, ax_s):
        _log_x_axis(ax, xs)
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
    _legend(fig, [*ax_j.get_lines(), *ax_s.get_lines()], spread, max_cols=3, note=note)
    _suptitle(fig, "Mask analysis (all prunable layers)", title, runs)
    return fig


def _histogram_figure(runs: list[_Run], levels: Sequence[int] | None, title) -> Figure | None:
    run = next((r for r in runs if r.histograms), None)
    if run is None:
        return None
    branch = branch_order({r["branch"] for r in run.histograms})[0]
    replicate = min(r["replicate"] for r in run.histograms if r["branch"] == branch)
    rows = [r for r in run.histograms if r["branch"] == branch and r["replicate"] == replicate]
    available = sorted({r["level"] for r in rows})
    chosen = _figure_levels(available, levels) or default_levels(available)
    remaining = {
        r["level"]: r["weights_remaining"]
        for r in run.analysis or []
        if r["branch"] == branch and r["replicate"] == replicate and r["layer"] == ALL
    }
    fig = _new_figure(3.0 * len(chosen) + 0.8, 3.7)
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
    _legend(fig, [p for p in axes[0].patches], max_cols=2)
    share = f"{100 * HIST_KEEP:g}%"
    _suptitle(
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


def _save(fig: Figure, out_dir: Path, name: str, fmt: str, dpi: int, write=atomic_write) -> Path:
    """Write ``name.fmt`` atomically (:func:`lth.core.fileio.atomic_write`, or ``write``: a
    run folder's :meth:`lth.runfolder.manifest.RunWriter.write`)."""
    target = out_dir / f"{name}.{fmt}"
    buffer = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else {}
    if fmt in SIGNED:
        metadata[SIGNED[fmt][0]] = SIGNATURE
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    write(target, buffer.getvalue())
    return target


def is_lth_figure(path: Path) -> bool:
    """Whether the figure file ``path`` was saved by lth (its metadata carries
    :data:`SIGNATURE`; a format without metadata never is)."""
    marker = SIGNED.get(path.suffix.lower().lstrip("."), (None, None))[1]
    if marker is None:
        return False
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        f.seek(max(0, os.fstat(f.fileno()).st_size - (1 << 16)))
        return marker in head or marker in f.read()


def check_targets(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None,
    formats: Sequence[str],
    force: bool = False,
) -> Path:
    """The folder the figures of ``run_dirs`` go to (default: the first run's ``plots/``),
    checked before anything is drawn: not one of a run folder's own folders (but its
    ``plots/``), and no figure there that lth did not save (unless ``force``)."""
    target = Path(out_dir) if out_dir is not None else Path(run_dirs[0]) / PLOTS
    if target.exists() and not target.is_dir():
        raise LTHError(f"--out {target} is a file; choose a folder")
    for run_dir in run_dirs:
        check_output_path(run_dir, target, "--out", folder=True)
    for name in FIGURES + ANALYSIS_FIGURES:
        for fmt in formats:
            check_replace(target / f"{name}.{fmt}", "--out", is_lth_figure, force)
    return target


def plot_runs(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    levels: Sequence[int] | None = None,
    formats: Sequence[str] = ("png",),
    *,
    band: str = "std",
    early_stop_panel: bool = True,
    mask_analysis: bool = True,
    analyses: Sequence[tuple[list[dict], list[dict]] | None] | None = None,
    dpi: int = 200,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    force: bool = False,
) -> dict[str, Figure]:
    """Draw the figures of one or several run folders, save them, and return them by name.

    ``run_dirs``: run folders to overlay (a single path is accepted too; a folder holding run
    folders stands for them). ``labels``: one name per run for the legends (default: the
    settings in which the runs differ, else their folder names); legend entries are
    "label: branch" when there are several runs. ``title``: the second title line of every
    figure (default: the study, e.g. "lenet_300_100 on mnist"); "" draws no title.
    ``out_dir``: where ``<name>.<fmt>`` files go (default: the first run's ``plots/`` folder);
    ``formats``: PNG by default (PDF, e.g. ``("png", "pdf")``, on request: embedding its fonts
    takes seconds); ``formats=()`` saves nothing. ``levels``: the ticket levels drawn in
    ``curves`` and ``weight_histograms`` (default: about four spread out). ``band``: ``"std"``
    draws ±1 sample-std error bars, ``"minmax"`` shaded min-max bands, ``"ci"`` shaded bands of
    the mean's 95% confidence interval (t; only where a level has two or more usable
    replicates; a legend entry gives n). In ``accuracy_vs_weights`` a hollow star marks each
    series' sparsest matching level: mean test accuracy no lower than one std below the dense
    ticket's (Frankle et al. 2020). ``early_stop_panel``: add a second
    accuracy panel with the test accuracy at the early-stop iteration. Diverged replicates are
    left out of means and drawn as hollow markers. ``mask_analysis``: also draw
    ``mask_analysis`` and ``weight_histograms`` when the first run folder has an analysis:
    ``analyses`` (one ``(analysis rows, histogram rows)`` or None per entry of ``run_dirs``, as
    :func:`lth.analysis.mask_analysis.ensure_analysis` returns them), else its ``analysis.csv`` and
    ``analysis_histograms.csv`` as they are (call ``ensure_analysis`` first to bring them up to
    date); silently left out when there is none. Nothing is drawn when ``out_dir`` is one of
    a run folder's own folders (but ``plots/``), or holds a figure of the same name that lth
    did not save (its metadata says so; ``force=True`` replaces it).
    """
    if band not in BANDS:
        raise LTHError(f"unknown band {band!r}; choose one of {', '.join(BANDS)}")
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if levels is not None:
        levels = [int(lv) for lv in levels]
    formats = [f.lower().lstrip(".") for f in formats]
    supported = Figure().canvas.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise LTHError(f"cannot save figures as {bad[0]!r}; choose from {', '.join(supported)}")
    if analyses is not None and len(analyses) != len(run_dirs):
        raise LTHError(f"analyses has {len(analyses)} entries for {len(run_dirs)} run folders")

    runs = _load_runs(run_dirs, labels)
    paths = [run.path for run in runs]
    target = check_targets(paths, out_dir, formats, force) if formats else None
    if mask_analysis:
        given = {}
        if analyses is not None:
            given = {Path(p).resolve(): a for p, a in zip(run_dirs, analyses)}
        for run in runs:
            key = run.path.resolve()
            found = given[key] if key in given else _read_analysis(run.path)
            if found is not None:
                run.analysis, run.histograms = found
    with matplotlib.rc_context(STYLE):
        figures = {
            "accuracy_vs_weights": _accuracy_figure(runs, band, early_stop_panel, title),
            "curves": _curves_figure(runs, levels, title),
            "early_stop": _early_stop_figure(runs, band, title),
            "layer_remaining": _layer_figure(runs, title),
        }
        if runs[0].analysis:
            figures["mask_analysis"] = _mask_figure(runs, title)
            hist = _histogram_figure(runs[:1], levels, title)
            if hist is not None:
                figures["weight_histograms"] = hist
        if target is not None:
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LTHError(
                    f"cannot create plot folder {target} ({e.strerror}); pass a writable out_dir"
                ) from None
            home = next((r.path for r in runs if _same_dir(r.path / PLOTS, target)), None)
            writer = None
            if home is not None:  # the run's own plots/: recorded in its manifest
                target, writer = home / PLOTS, RunWriter(home)
            paths = [target / f"{name}.{fmt}" for name in figures for fmt in formats]
            with writer.writing(paths) if writer else contextlib.nullcontext():
                for name, fig in figures.items():
                    for fmt in formats:
                        _save(fig, target, name, fmt, dpi, writer.write if writer else atomic_write)
    return figures


def _same_dir(a: Path, b: Path) -> bool:
    """Whether two paths name the same existing folder."""
    try:
        return a.samefile(b)
    except OSError:
        return False
