"""The look of every lth figure, and the drawing helpers the figures share.

Colours, markers and line styles of branches and runs, the matplotlib style (:data:`STYLE`,
applied through ``rc_context``), series of points drawn so that none hides another
(:class:`Series`, :func:`draw_series`), the inverted log axis of weights remaining
(:func:`log_x_axis`), legends below the axes that the figure grows to hold
(:func:`add_legend`), titles, and saving a figure with lth's signature in its metadata
(:func:`save_figure`, :func:`is_lth_figure`). Used by :mod:`lth.analysis.plots` and
:mod:`lth.stability.plots`.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, NullLocator
from matplotlib.transforms import ScaledTranslation

from lth.analysis.figure_text import PercentTicks, study_title
from lth.analysis.results import FigureRun, method_parts
from lth.core.fileio import atomic_write

__all__ = [
    "BRANCH_COLORS", "BRANCH_MARKERS", "FIGURE_LEVELS", "RUN_COLORS", "RUN_LINESTYLES",
    "RUN_MARKERS", "SIGNATURE", "STYLE", "Series", "Spread", "Styles", "add_legend", "add_title",
    "branch_zorder", "default_levels", "draw_series", "figure_levels", "fmt_tick",
    "is_lth_figure", "log_x_axis", "new_figure", "save_figure",
]  # fmt: skip
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


def figure_levels(available: Sequence[int], levels: Sequence[int] | None) -> list[int]:
    """The levels a figure draws: those asked for that exist, else :func:`default_levels`
    (the same choice in ``curves`` and ``weight_histograms``)."""
    if levels is None:
        return default_levels(available)
    return [lv for lv in levels if lv in set(available)]


# ----------------------------------------------------------------------------- styles


class Styles:
    """Colour, marker and line style of each (run, branch): with one run the branch decides
    all three (solid lines); with several, the colour is the run's."""

    def __init__(self, nruns: int):
        self.multi = nruns > 1
        self.extras: dict[str, int] = {}

    def _extra(self, branch: str) -> int:
        return self.extras.setdefault(branch, len(self.extras))

    def color(self, ri: int, branch: str) -> str:
        """The colour of run ``ri``'s ``branch``."""
        if self.multi:
            return RUN_COLORS[ri % len(RUN_COLORS)]
        if branch in BRANCH_COLORS:
            return BRANCH_COLORS[branch]
        return _EXTRA_COLORS[self._extra(branch) % len(_EXTRA_COLORS)]

    def marker(self, branch: str) -> str:
        """The marker of ``branch`` (the same in every run)."""
        if branch in BRANCH_MARKERS:
            return BRANCH_MARKERS[branch]
        return _EXTRA_MARKERS[self._extra(branch) % len(_EXTRA_MARKERS)]

    def linestyle(self, branch: str) -> str:
        """The line style of ``branch``: solid with one run, the branch's own with several."""
        return BRANCH_LINESTYLES.get(branch, ":") if self.multi else "-"


def branch_zorder(branch: str) -> float:
    """The ticket on top, then the controls in their usual order."""
    order = ("ticket", "reinit", "random_prune")
    return 3.0 + (len(order) - order.index(branch)) * 0.1 if branch in order else 3.0


# ----------------------------------------------------------------------------- series


@dataclass
class Series:
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
    bounds: tuple[float, float] = (-math.inf, math.inf)  # error bars are clipped to these
    ringed: list[int] = field(default_factory=list)  # points that reached the iteration budget


def _dodge(series: Sequence[Series], log_x: bool) -> list[float]:
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


def draw_series(ax, series: Sequence[Series], log_x: bool) -> None:
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
                lo, hi = s.bounds
                below = [max(0.0, s.y[i] - max(s.y[i] - s.err[i], lo)) for i in keep]
                above = [max(0.0, min(s.y[i] + s.err[i], hi) - s.y[i]) for i in keep]
                bars = ax.errorbar(
                    [s.x[i] for i in keep],
                    [s.y[i] for i in keep],
                    yerr=[below, above],
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
        if s.ringed:
            artists += ax.plot(
                [s.x[i] for i in s.ringed],
                [s.y[i] for i in s.ringed],
                linestyle="none",
                marker="o",
                markersize=13,
                markerfacecolor="none",
                markeredgecolor=s.color,
                markeredgewidth=1.0,
                label="_nolegend_",
                gid=f"budget_hit:{s.label}",
                zorder=s.zorder + 0.4,
            )
        if dx:
            for artist in artists:  # added first, so the axes' data limits are the true ones
                artist.set_transform(shift)


def log_x_axis(ax, values: Iterable[float]) -> None:
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
    ax.xaxis.set_major_formatter(PercentTicks())
    ax.set_xlim(vals[0] * 1.12, vals[-1] / 1.12)  # left > right: inverted, as in the paper
    ax.set_xlabel("Weights remaining (%, log scale)")


@dataclass
class Spread:
    """What the spread drawn in a figure is: error bars or bands, over how many replicates."""

    band: str
    counts: set[int] = field(default_factory=set)  # usable replicates (n) of drawn points
    diverged: bool = False
    matching: bool = False  # a matching level is marked
    single: bool = False  # some point is of one replicate (no spread)
    budget: bool = False  # some point reached the iteration budget (ringed)

    def entry(self) -> Line2D | None:
        """A legend entry saying what the bars are and n ("single run (n = 1)" when no
        point has two replicates), or None when nothing was drawn."""
        if not self.counts:
            if not self.single:
                return None
            return Line2D([], [], linestyle="none", label="single run (n = 1): no error bars")
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


# ----------------------------------------------------------------------------- layout


def _renderer(fig: Figure):
    return fig.canvas.get_renderer()


def new_figure(width: float, height: float) -> Figure:
    """A bare figure (no pyplot) with constrained layout and a canvas to measure text with."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # a renderer to measure text with
    return fig


def add_legend(
    fig: Figure,
    handles: list,
    spread: Spread | None = None,
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
        if spread.budget:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker="o",
                    markersize=10,
                    markerfacecolor="none",
                    markeredgecolor="0.3",
                    label="ringed: a replicate reached the budget (no early stop)",
                )  # fmt: skip
            )
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


def add_title(fig: Figure, subject: str, title: str | None, runs: Sequence[FigureRun]) -> None:
    """'subject' over the study's description (or ``title``); no title at all when ``title``
    is ""."""
    if title == "":
        return
    second = _describe(runs) if title is None else title
    fig.suptitle(f"{subject}\n{second}" if second else subject, wrap=True)


def _describe(runs: list[FigureRun]) -> str:
    """What the runs have in common: 'LeNet-300-100 on MNIST', the method's settings that are
    not the default ('criterion snip, init model') and the seeds pooled."""
    values = {k: {str(r.config.get(k)) for r in runs} for k in ("model", "dataset")}
    model, dataset = (next(iter(v)) if len(v) == 1 else None for v in values.values())
    text = study_title(model, dataset)
    shared = [p for p in (method_parts(runs[0].config) if runs else []) if all(
        p in method_parts(r.config) for r in runs[1:])]  # fmt: skip
    if shared:  # criterion, init, precision, granularity when not the default (issue 24)
        text += f"; {', '.join(shared)}"
    pooled = [r for r in runs if len(r.members) > 1]
    if len(runs) == 1 and pooled:
        seeds = ", ".join(map(str, pooled[0].seeds))
        text += f" ({len(pooled[0].members)} runs pooled: seeds {seeds})"
    return text


# ----------------------------------------------------------------------------- files


def save_figure(
    fig: Figure,
    out_dir: Path,
    name: str,
    fmt: str,
    dpi: int,
    write: Callable[[Path, bytes], object] = atomic_write,
) -> Path:
    """Write ``name.fmt`` atomically (:func:`lth.core.fileio.atomic_write`, or ``write``: a
    run folder's :meth:`lth.runfolder.manifest.RunWriter.write`)."""
    target = out_dir / f"{name}.{fmt}"
    buffer = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else {}
    if fmt in SIGNED:
        metadata[SIGNED[fmt][0]] = SIGNATURE
    # PNG: zlib level 1 instead of 6 saves a fifth of the save time for a fifth more bytes
    extra = {"pil_kwargs": {"compress_level": 1}} if fmt == "png" else {}
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata, **extra)
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
