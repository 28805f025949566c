"""Publication-quality figures of one or several run folders (Frankle & Carbin's figure style).

:func:`plot_runs` draws four figures (six with a mask analysis), saves each as PNG and PDF
and returns the :class:`matplotlib.figure.Figure` objects by name:

- ``accuracy_vs_weights``: test accuracy at the end of training (and at the early-stop
  iteration) against percent of weights remaining, log x axis running from 100% down;
- ``curves``: validation accuracy and loss over training for a few levels of the ticket;
- ``early_stop``: the early-stop iteration against weights remaining;
- ``layer_remaining``: percent of weights remaining per layer against pruning level;

and, when the first run folder has a mask analysis (``analysis.csv``, written by
:func:`lth.analysis.ensure_analysis`, which ``lth run`` and ``lth plot`` call first):

- ``mask_analysis``: Jaccard overlap of each mask with the previous level's and of the ticket
  with the random-pruning control, and the fraction of survivors that kept their sign from
  θ-start to the end of training, against weights remaining (means over replicates);
- ``weight_histograms``: histograms of the surviving weights' magnitudes at θ-start and at the
  end of training for a few levels of the ticket (first replicate), on shared log bins.

This module only reads run folders (through :mod:`lth.storage`) and writes the figures.
Figures are built as bare ``Figure`` objects (no pyplot), so nothing global is created or has
to be closed; styling is applied through a temporary ``rc_context``. Colours identify the
branch (ticket, reinit, random_prune); line styles and markers identify the run folder.

Artists carry their legend label, and ``gid`` values for tests and tools: a branch's mean
line has ``gid == label``; its error bars (a LineCollection) ``"errorbar:" + label``; its
min-max band ``"band:" + label``; its diverged replicates ``"diverged:" + label``. In
``mask_analysis`` the lines are labelled ``"<branch> vs. previous level"`` and ``"ticket vs.
random_prune"`` (left panel) and ``"<branch>"`` (right panel); in ``weight_histograms`` the step
patches have ``gid`` ``"init:<level>"`` and ``"final:<level>"``.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullLocator,
)

from .errors import LTHError
from .report import aggregate
from .storage import (
    ALL,
    ANALYSIS,
    ANALYSIS_FIGURES,
    ANALYSIS_HISTOGRAMS,
    CONTROL,
    FIGURES,
    PLOTS,
    LayerRow,
    SummaryRow,
    atomic_write,
    branch_order,
    load_analysis,
    load_config,
    load_histograms,
    load_layers,
    load_metrics,
    load_summary,
)

__all__ = ["ANALYSIS_FIGURES", "BANDS", "FIGURES", "default_levels", "fmt_tick", "plot_runs"]
BANDS = ("std", "minmax")

BRANCH_COLORS = {"ticket": "#1f77b4", "reinit": "#d62728", "random_prune": "#2ca02c"}
OVERLAP_COLOR = "#ff7f0e"  # ticket vs. random_prune overlap
HIST_COLORS = {"init": "#7f7f7f", "final": "#1f77b4"}
HIST_LEVELS = 4
_EXTRA_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
RUN_LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)))
RUN_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MAX_X_TICKS = 10

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
    name: str
    path: Path
    summary: list[SummaryRow]
    layers: list[LayerRow]
    config: dict = field(default_factory=dict)
    analysis: list[dict] | None = None  # analysis.csv rows (lth.storage.load_analysis)
    histograms: list[dict] | None = None  # analysis_histograms.csv rows


def fmt_tick(value: float) -> str:
    """Tick label for a percentage: '100', '80', '51.2', '3.6', '0.47'."""
    if value >= 1:
        text = f"{value:.1f}"
        return text[:-2] if text.endswith(".0") else text
    return f"{value:.2g}"


def default_levels(available: Sequence[int], count: int = 5) -> list[int]:
    """About ``count`` levels spread out: the first, the last and evenly between."""
    levels = sorted(set(available))
    if len(levels) <= count:
        return levels
    n = len(levels) - 1
    picks = sorted({round(i * n / (count - 1)) for i in range(count)})
    return [levels[i] for i in picks]


def _branch_color(branch: str, extras: dict[str, str]) -> str:
    if branch in BRANCH_COLORS:
        return BRANCH_COLORS[branch]
    return extras.setdefault(branch, _EXTRA_COLORS[len(extras) % len(_EXTRA_COLORS)])


def _run_names(paths: list[Path]) -> list[str]:
    """Folder names; when two runs share one, include the parent folder too."""
    names = [p.resolve().name or str(p) for p in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{p.resolve().parent.name}/{p.resolve().name}" for p in paths]


def _load_runs(run_dirs: Sequence[str | os.PathLike[str]]) -> list[_Run]:
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise LTHError("no run folders given; pass at least one folder a study wrote")
    return [
        _Run(name, p, load_summary(p), load_layers(p), load_config(p))
        for name, p in zip(_run_names(paths), paths)
    ]


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


def _branch_panel(ax, runs: list[_Run], quantity: str, band: str) -> bool:
    """Mean over replicates of a summary quantity against weights remaining, one line per run
    and branch, with std error bars or min-max bands; diverged replicates as hollow markers.
    Returns whether any diverged replicate was drawn or left out."""
    multi = len(runs) > 1
    extras: dict[str, str] = {}
    any_diverged = False
    xs_all = []
    for ri, run in enumerate(runs):
        stats = aggregate(run.summary, quantity)
        ls = RUN_LINESTYLES[ri % len(RUN_LINESTYLES)]
        marker = RUN_MARKERS[ri % len(RUN_MARKERS)]
        for branch in branch_order({s.branch for s in stats}):
            group = [s for s in stats if s.branch == branch]
            color = _branch_color(branch, extras)
            label = f"{run.name}: {branch}" if multi else branch
            x = [s.weights_remaining for s in group]
            xs_all += x
            y = [s.mean for s in group]
            ax.plot(
                x, y, color=color, linestyle=ls, marker=marker, label=label, gid=label, zorder=3
            )
            spread = [s for s in group if s.n >= 2]
            if spread and band == "std":
                bars = ax.errorbar(
                    [s.weights_remaining for s in spread],
                    [s.mean for s in spread],
                    yerr=[s.std for s in spread],
                    fmt="none",
                    ecolor=color,
                    elinewidth=1.2,
                    capsize=3,
                    label="_nolegend_",
                    zorder=2,
                )
                bars.lines[2][0].set_gid(f"errorbar:{label}")
            elif spread and band == "minmax":
                ax.fill_between(
                    [s.weights_remaining for s in spread],
                    [s.min for s in spread],
                    [s.max for s in spread],
                    color=color,
                    alpha=0.18,
                    linewidth=0,
                    label="_nolegend_",
                    gid=f"band:{label}",
                    zorder=1,
                )
            dx, dy = [], []
            for s in group:
                any_diverged |= bool(s.diverged)
                for rep, value in s.values:
                    if rep in s.diverged and math.isfinite(value):
                        dx.append(s.weights_remaining)
                        dy.append(value)
            if dx:
                ax.plot(
                    dx,
                    dy,
                    linestyle="none",
                    marker=marker,
                    markerfacecolor="none",
                    markeredgecolor=color,
                    markeredgewidth=1.3,
                    label="_nolegend_",
                    gid=f"diverged:{label}",
                    zorder=3,
                )
    _log_x_axis(ax, xs_all)
    return any_diverged


def _legend(
    fig: Figure, ax, diverged: bool = False, loc: str = "outside lower center", ncol=None
) -> None:
    """One legend for the figure, outside the axes, from ``ax``'s labelled lines."""
    handles = [h for h in ax.get_lines() if not h.get_label().startswith("_")]
    if diverged:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markerfacecolor="none",
                markeredgecolor="0.3",
                label="diverged replicate (hollow; not in mean)",
            )
        )
    if handles:
        if ncol is None:
            ncol = 1 if "right" in loc else min(len(handles), 3)
        fig.legend(handles=handles, loc=loc, ncol=ncol)


def _title(runs: list[_Run]) -> str:
    if len(runs) > 1:
        return " vs. ".join(r.name for r in runs)
    cfg = runs[0].config
    what = " on ".join(str(cfg[k]) for k in ("model", "dataset") if k in cfg)
    return f"{runs[0].name} ({what})" if what else runs[0].name


def _spread_note(runs: list[_Run], band: str) -> str:
    reps = max(max((r.replicate for r in run.summary), default=0) + 1 for run in runs)
    if reps < 2:
        return ""
    return "; mean over replicates, " + ("error bars ±1 std" if band == "std" else "band min-max")


def _accuracy_figure(runs: list[_Run], band: str, early_stop_panel: bool) -> Figure:
    ncols = 2 if early_stop_panel else 1
    fig = Figure(figsize=(5.6 * ncols, 4.4), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False, sharey=True)[0]
    diverged = _branch_panel(axes[0], runs, "test_acc", band)
    axes[0].set_ylabel("Test accuracy (%)")
    axes[0].set_title("At the end of training")
    if early_stop_panel:
        _branch_panel(axes[1], runs, "test_acc_at_early_stop", band)
        axes[1].set_title("At the early-stop iteration (min. val. loss)")
        axes[1].tick_params(labelleft=True)
    _legend(fig, axes[0], diverged)
    note = _spread_note(runs, band)
    fig.suptitle(f"Test accuracy vs. weights remaining\n{_title(runs)}{note}", wrap=True)
    return fig


def _early_stop_figure(runs: list[_Run], band: str) -> Figure:
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    diverged = _branch_panel(ax, runs, "early_stop_iteration", band)
    ax.set_ylabel("Early-stop iteration")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 2.5, 5, 10]))
    note = _spread_note(runs, band)
    ax.set_title(f"Iteration of minimum validation loss{note}", fontsize=10)
    _legend(fig, ax, diverged, ncol=2)
    fig.suptitle(f"Early-stop iteration vs. weights remaining\n{_title(runs)}", wrap=True)
    return fig


def _main_branch(rows: Iterable) -> str:
    return branch_order({r.branch for r in rows})[0]


def _curves_figure(runs: list[_Run], levels: Sequence[int] | None) -> Figure:
    plan = []  # (run, branch, selected levels)
    for run in runs:
        branch = _main_branch(run.summary)
        available = sorted({r.level for r in run.summary if r.branch == branch})
        if levels is None:
            chosen = default_levels(available)
        else:
            chosen = [lv for lv in levels if lv in available]
        plan.append((run, branch, chosen))
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

    fig = Figure(figsize=(11.2, 4.4), layout="constrained")
    ax_acc, ax_loss = fig.subplots(1, 2)
    multi = len(runs) > 1
    branches = set()
    for ri, (run, branch, chosen) in enumerate(plan):
        branches.add(branch)
        metrics = load_metrics(run.path, branch=branch, levels=chosen)
        ls = RUN_LINESTYLES[ri % len(RUN_LINESTYLES)]
        for lv in chosen:
            rows_s = [r for r in run.summary if r.branch == branch and r.level == lv]
            excluded = {r.replicate for r in rows_s if r.diverged}
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
                ax.plot(
                    iters,
                    [_nanmean(by_iter[i][k]) for i in iters],
                    color=colors[lv],
                    linestyle=ls,
                    linewidth=1.5,
                    label=label,
                    gid=label,
                )
    for ax in (ax_acc, ax_loss):
        ax.set_xlabel("Training iteration")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax_acc.set_ylabel("Validation accuracy (%)")
    ax_loss.set_ylabel("Validation loss")
    ax_acc.set_title("Validation accuracy")
    ax_loss.set_title("Validation loss")
    _legend(fig, ax_acc)
    who = ", ".join(sorted(branches))
    reps = max(max((r.replicate for r in run.summary), default=0) + 1 for run in runs)
    note = "; mean over replicates" if reps > 1 else ""
    fig.suptitle(
        f"Training curves of the {who} at selected levels\n{_title(runs)}{note}", wrap=True
    )
    return fig


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return math.fsum(finite) / len(finite) if finite else math.nan


def _layer_figure(runs: list[_Run]) -> Figure:
    fig = Figure(figsize=(7.0, 4.8), layout="constrained")
    ax = fig.add_subplot()
    multi = len(runs) > 1
    all_layers = {r.layer for run in runs for r in run.layers}
    palette = matplotlib.colormaps["tab10" if len(all_layers) <= 10 else "tab20"].colors
    colors: dict[str, tuple] = {}
    picked = []
    max_level = 0
    for ri, run in enumerate(runs):
        branch = _main_branch(run.layers)
        replicate = min(r.replicate for r in run.layers if r.branch == branch)
        picked.append(f"{branch}, replicate {replicate}")
        rows = [r for r in run.layers if r.branch == branch and r.replicate == replicate]
        names = list(dict.fromkeys(r.layer for r in rows))
        for name in names:
            color = colors.setdefault(name, palette[len(colors) % len(palette)])
            mine = sorted((r for r in rows if r.layer == name), key=lambda r: r.level)
            label = f"{run.name}: {name}" if multi else name
            max_level = max(max_level, mine[-1].level)
            ax.plot(
                [r.level for r in mine],
                [r.remaining for r in mine],
                color=color,
                linestyle=RUN_LINESTYLES[ri % len(RUN_LINESTYLES)],
                marker=RUN_MARKERS[ri % len(RUN_MARKERS)],
                label=label,
                gid=label,
            )
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_tick(v)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(max_level, 10) or 1))
    ax.set_xlabel("Pruning level")
    ax.set_ylabel("Weights remaining in layer (%, log scale)")
    _legend(fig, ax, ncol=3 if len(ax.get_lines()) <= 12 else 4)
    ax.set_title("; ".join(dict.fromkeys(picked)), fontsize=10)
    fig.suptitle(f"Weights remaining per layer\n{_title(runs)}", wrap=True)
    return fig


def _read_analysis(path: Path) -> tuple[list[dict], list[dict]] | None:
    """A run folder's analysis files, when it has analysis.csv (a damaged one raises)."""
    if not (path / ANALYSIS.file).is_file():
        return None
    hist = path / ANALYSIS_HISTOGRAMS.file
    return load_analysis(path), load_histograms(path) if hist.is_file() else []


def _mean_over_replicates(ax, rows: list[dict], column: str, label: str, **style) -> list[float]:
    """Mean of ``column`` over replicates per level (finite values only) against the level's
    weights remaining, with ±1 std error bars where two or more replicates have a value.
    Returns the x values drawn."""
    by_level: dict[int, list[dict]] = {}
    for r in rows:
        by_level.setdefault(r["level"], []).append(r)
    points = []  # (x, mean, std, n)
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
    if not points:
        return []
    xs = [p[0] for p in points]
    ax.plot(xs, [p[1] for p in points], label=label, gid=label, **({"zorder": 3} | style))
    spread = [p for p in points if p[3] >= 2]
    if spread:
        bars = ax.errorbar(
            [p[0] for p in spread],
            [p[1] for p in spread],
            yerr=[p[2] for p in spread],
            fmt="none",
            ecolor=style.get("color"),
            elinewidth=1.2,
            capsize=3,
            label="_nolegend_",
            zorder=style.get("zorder", 3) - 1,
        )
        bars.lines[2][0].set_gid(f"errorbar:{label}")
    return xs


def _mask_figure(runs: list[_Run]) -> Figure:
    fig = Figure(figsize=(11.2, 4.6), layout="constrained")
    ax_j, ax_s = fig.subplots(1, 2)
    multi = len(runs) > 1
    extras: dict[str, str] = {}
    xs: list[float] = []
    for ri, run in enumerate(runs):
        if not run.analysis:
            continue
        rows = [r for r in run.analysis if r["layer"] == ALL]
        style = {
            "linestyle": RUN_LINESTYLES[ri % len(RUN_LINESTYLES)],
            "marker": RUN_MARKERS[ri % len(RUN_MARKERS)],
        }
        prefix = f"{run.name}: " if multi else ""
        xs += [r["weights_remaining"] for r in rows]
        for branch in branch_order({r["branch"] for r in rows}):
            mine = [r for r in rows if r["branch"] == branch]
            color = _branch_color(branch, extras)
            # the ticket on top: reinit trains with the ticket's masks, so its overlap line
            # coincides with the ticket's
            style["zorder"] = 4 if branch == "ticket" else 3
            _mean_over_replicates(
                ax_j,
                mine,
                "jaccard_previous_level",
                f"{prefix}{branch} vs. previous level",
                color=color,
                **style,
            )
            if branch == "ticket":
                _mean_over_replicates(
                    ax_j,
                    mine,
                    "jaccard_random_prune",
                    f"{prefix}ticket vs. {CONTROL}",
                    color=OVERLAP_COLOR,
                    **style,
                )
            _mean_over_replicates(
                ax_s, mine, "sign_kept", f"{prefix}{branch}", color=color, **style
            )
    for ax in (ax_j, ax_s):
        _log_x_axis(ax, xs)
        lo, hi = ax.get_ylim()
        ax.set_ylim(max(lo, -0.02), min(hi, 1.02))  # fractions: keep error bars in [0, 1]
        if ax.get_lines():
            ax.legend(loc="best")
    ax_j.set_ylabel("Jaccard overlap of kept weights")
    ax_j.set_title("Mask overlap |A ∩ B| / |A ∪ B|")
    ax_s.set_ylabel("Fraction of survivors")
    ax_s.set_title("Survivors that kept their sign from θ-start to the end")
    reps = max(
        (
            max((r["replicate"] for r in run.analysis), default=0) + 1
            for run in runs
            if run.analysis
        ),
        default=1,
    )
    note = "; mean over replicates, error bars ±1 std" if reps > 1 else ""
    fig.suptitle(f"Mask analysis (all prunable layers)\n{_title(runs)}{note}", wrap=True)
    return fig


def _histogram_figure(runs: list[_Run], levels: Sequence[int] | None) -> Figure | None:
    run = next((r for r in runs if r.histograms), None)
    if run is None:
        return None
    branch = branch_order({r["branch"] for r in run.histograms})[0]
    replicate = min(r["replicate"] for r in run.histograms if r["branch"] == branch)
    rows = [r for r in run.histograms if r["branch"] == branch and r["replicate"] == replicate]
    available = sorted({r["level"] for r in rows})
    chosen = [lv for lv in levels if lv in available] if levels is not None else []
    chosen = chosen or default_levels(available, HIST_LEVELS)
    remaining = {
        r["level"]: r["weights_remaining"]
        for r in run.analysis or []
        if r["branch"] == branch and r["replicate"] == replicate and r["layer"] == ALL
    }
    fig = Figure(figsize=(3.3 * len(chosen) + 0.8, 4.0), layout="constrained")
    axes = fig.subplots(1, len(chosen), squeeze=False, sharex=True)[0]
    labels = {"init": "at θ-start (init)", "final": "at the end of training (final)"}
    for ax, level in zip(axes, chosen):
        for which in ("init", "final"):
            mine = sorted(
                (r for r in rows if r["level"] == level and r["weights"] == which),
                key=lambda r: r["bin"],
            )
            if not mine:
                continue
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
    axes[0].set_ylabel("Surviving weights per bin")
    handles = [p for p in axes[0].patches if not p.get_label().startswith("_")]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles))
    fig.suptitle(
        f"Magnitudes of the surviving weights ({branch}, replicate {replicate})\n{run.name}",
        wrap=True,
    )
    return fig


def _save(fig: Figure, out_dir: Path, name: str, fmt: str, dpi: int) -> Path:
    """Write ``name.fmt`` atomically (:func:`lth.storage.atomic_write`)."""
    target = out_dir / f"{name}.{fmt}"
    buffer = io.BytesIO()
    metadata = {"CreationDate": None} if fmt == "pdf" else None
    fig.savefig(buffer, format=fmt, dpi=dpi, metadata=metadata)
    atomic_write(target, buffer.getvalue())
    return target


def plot_runs(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    levels: Sequence[int] | None = None,
    formats: Sequence[str] = ("png", "pdf"),
    *,
    band: str = "std",
    early_stop_panel: bool = True,
    mask_analysis: bool = True,
    analyses: Sequence[tuple[list[dict], list[dict]] | None] | None = None,
    dpi: int = 200,
) -> dict[str, Figure]:
    """Draw the figures of one or several run folders, save them, and return them by name.

    ``run_dirs``: run folders to overlay (a single path is accepted too); legend labels are
    "run-name: branch" when there are several. ``out_dir``: where ``<name>.<fmt>`` files go
    (default: the first run's ``plots/`` folder); ``formats=()`` saves nothing. ``levels``: the
    ticket levels drawn in ``curves`` (default: about five spread out). ``band``: ``"std"``
    draws ±1 sample-std error bars, ``"minmax"`` shaded min-max bands (only where a level has
    two or more usable replicates). ``early_stop_panel``: add a second accuracy panel with the
    test accuracy at the early-stop iteration. Diverged replicates are left out of means and
    drawn as hollow markers. ``mask_analysis``: also draw ``mask_analysis`` and
    ``weight_histograms`` when the first run folder has an analysis: ``analyses`` (one
    ``(analysis rows, histogram rows)`` or None per run folder, as
    :func:`lth.analysis.ensure_analysis` returns them), else its ``analysis.csv`` and
    ``analysis_histograms.csv`` as they are (call ``ensure_analysis`` first to bring them up to
    date); silently left out when there is none.
    """
    if band not in BANDS:
        raise LTHError(f"unknown band {band!r}; choose one of {', '.join(BANDS)}")
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    if levels is not None:
        levels = [int(lv) for lv in levels]
    formats = [f.lower().lstrip(".") for f in formats]
    supported = Figure().canvas.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise LTHError(f"cannot save figures as {bad[0]!r}; choose from {', '.join(supported)}")

    runs = _load_runs(list(run_dirs))
    if analyses is not None and len(analyses) != len(runs):
        raise LTHError(f"analyses has {len(analyses)} entries for {len(runs)} run folders")
    if mask_analysis:
        for i, run in enumerate(runs):
            found = analyses[i] if analyses is not None else _read_analysis(run.path)
            if found is not None:
                run.analysis, run.histograms = found
    with matplotlib.rc_context(STYLE):
        figures = {
            "accuracy_vs_weights": _accuracy_figure(runs, band, early_stop_panel),
            "curves": _curves_figure(runs, levels),
            "early_stop": _early_stop_figure(runs, band),
            "layer_remaining": _layer_figure(runs),
        }
        if runs[0].analysis:
            figures["mask_analysis"] = _mask_figure(runs)
            hist = _histogram_figure(runs[:1], levels)
            if hist is not None:
                figures["weight_histograms"] = hist
        if formats:
            target = Path(out_dir) if out_dir is not None else runs[0].path / PLOTS
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LTHError(
                    f"cannot create plot folder {target} ({e.strerror}); pass a writable out_dir"
                ) from None
            for name, fig in figures.items():
                for fmt in formats:
                    _save(fig, target, name, fmt, dpi)
    return figures
