"""Figures of the stability analyses of a run folder (Frankle et al. 2020's figure style).

Drawn from the CSV files of ``<run>/stability/`` only (plots never write data), into
``<run>/stability/plots/``:

- ``<analysis>_error``: test and training error against α, one line per starting iteration k
  (mean over pairs of copies);
- ``<analysis>_instability`` (find-rewind analyses): instability against k, mean ± std over
  pairs, with the 2% line of "stable";
- ``instability_vs_weights``: instability against weights remaining for the ticket and the
  controls (the level analyses; mean over replicates).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib import rc_context
from matplotlib.ticker import NullLocator

from lth.analysis.figure_style import (
    BRANCH_COLORS,
    BRANCH_MARKERS,
    STYLE,
    log_x_axis,
    new_figure,
    save_figure,
)
from lth.analysis.figure_text import study_title
from lth.errors import LTHError
from lth.runfolder.csvio import read_table
from lth.runfolder.layout import STABILITY_DIR
from lth.runfolder.manifest import RunWriter
from lth.runfolder.runs import read_config
from lth.runfolder.tables import STABILITY_ERRORS, STABILITY_SUMMARY
from lth.stability.measure import STABLE


def _by(rows: list[dict], *keys: str) -> dict[tuple, list[dict]]:
    out: dict[tuple, list[dict]] = {}
    for r in rows:
        out.setdefault(tuple(r[k] for k in keys), []).append(r)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if math.isfinite(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def error_figure(rows: list[dict], title: str):
    """Test and training error against α, one line per k (mean over pairs), with a dotted line
    STABLE points above the mean of the ends (α = 0 and 1): the "stable" threshold of Frankle
    et al. 2020 (instability = the highest error along the path minus that mean), so that the
    y range shows how far a bump is from it."""
    fig = new_figure(9.0, 3.8)
    axes = fig.subplots(1, 2, sharex=True)
    ks = sorted({r["k"] for r in rows})
    cmap = matplotlib.colormaps["viridis"]
    for i, k in enumerate(ks):
        color = cmap(i / max(1, len(ks) - 1) * 0.9)
        by_alpha = _by([r for r in rows if r["k"] == k], "alpha")
        grid = sorted(by_alpha)
        for ax, split in zip(axes, ("test", "train")):
            means = [_mean_std([r[f"{split}_error"] for r in by_alpha[a]])[0] for a in grid]
            ax.plot([a[0] for a in grid], means, color=color, marker="o", markersize=3,
                    label=f"k = {k}", gid=f"{split}:k={k}")  # fmt: skip
            ends = [m for a, m in zip(grid, means) if a[0] in (0.0, 1.0) and math.isfinite(m)]
            if ends:
                label = f"{STABLE:g} points above the ends' mean: stable below"
                ax.axhline(statistics.fmean(ends) + STABLE, color=color, linestyle=":",
                           linewidth=1.1, label=label if i == 0 else "_nolegend_",
                           gid=f"{split}:stable:k={k}")  # fmt: skip
    for ax, split in zip(axes, ("Test", "Train")):
        ax.set_xlabel("Interpolation α")
        ax.set_ylabel(f"{split} error (%)")
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    return fig


def network_name(branch: str, level: int, weights_remaining: float) -> str:
    """What a stability figure is of: 'dense network (level 0)' at level 0 (every branch's
    level 0 is a dense network), else 'IMP ticket' or '<control> control', with its level."""
    if level == 0:
        return "dense network (level 0)" + ("" if branch == "ticket" else f", {branch} branch")
    who = "IMP ticket" if branch == "ticket" else f"{branch} control"
    return f"{who}, level {level} ({weights_remaining:.1f}% of weights)"


def instability_figure(rows: list[dict], title: str):
    """Instability against the rewind iteration k (mean ± std over pairs), 2% marked."""
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    rows = sorted(rows, key=lambda r: r["k"])
    ks = [r["k"] for r in rows]
    for split, style in (("test", "-"), ("train", "--")):
        mean = [r[f"{split}_instability_mean"] for r in rows]
        std = [0.0 if math.isnan(r[f"{split}_instability_std"]) else r[f"{split}_instability_std"]
               for r in rows]  # fmt: skip
        ax.errorbar(ks, mean, yerr=std, linestyle=style, marker="o", capsize=3,
                    label=f"{split} instability", gid=split)  # fmt: skip
    ax.axhline(STABLE, color="0.4", linewidth=1, linestyle=":", label="2%: stable below")
    ax.set_xscale("symlog", linthresh=max(1, min([k for k in ks if k > 0], default=1)))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("Rewind iteration k")
    ax.set_ylabel("Instability (%)")
    ax.legend(loc="best")
    fig.suptitle(title)
    return fig


def weights_figure(rows: list[dict], title: str):
    """Test instability against weights remaining, one line per branch (level analyses)."""
    fig = new_figure(6.4, 4.2)
    ax = fig.subplots()
    remaining = []
    for (branch,), brows in _by(rows, "branch").items():
        by_level = _by(brows, "level")
        levels = sorted(by_level)
        x = [_mean_std([r["weights_remaining"] for r in by_level[lv]])[0] for lv in levels]
        stats = [_mean_std([r["test_instability_mean"] for r in by_level[lv]]) for lv in levels]
        remaining += x
        ax.errorbar(x, [m for m, _ in stats], yerr=[s for _, s in stats], capsize=3,
                    color=BRANCH_COLORS.get(branch), marker=BRANCH_MARKERS.get(branch, "o"),
                    label=branch, gid=branch)  # fmt: skip
    ax.axhline(STABLE, color="0.4", linewidth=1, linestyle=":", label="2%: stable below")
    log_x_axis(ax, remaining)
    ax.set_ylabel("Test instability (%)")
    ax.legend(loc="best")
    fig.suptitle(title)
    return fig


def plot_stability(
    run_dir: str | Path, formats: Sequence[str] = ("png",), dpi: int = 150
) -> list[Path]:
    """Draw every figure the run folder's stability analyses allow; returns the files."""
    root = Path(run_dir) / STABILITY_DIR
    summary_path = root / "summary.csv"
    if not summary_path.is_file():
        raise LTHError(f"{run_dir} has no stability analysis yet; run lth stability first")
    summary = read_table(summary_path, STABILITY_SUMMARY, allow_empty=True)
    config = read_config(run_dir)
    study = study_title(config.model, config.dataset)
    out, written = root / "plots", []
    out.mkdir(exist_ok=True)
    with rc_context(STYLE):
        figures = []
        for key, rows in _by(summary, "analysis", "level", "branch", "replicate").items():
            analysis, level, branch, replicate = key
            stem = f"{branch}_r{replicate}_level_{level:02d}"
            name = stem if analysis == "level" else f"{stem}_{analysis}"
            what = network_name(branch, level, rows[0]["weights_remaining"])
            path = root / STABILITY_ERRORS.file.split("/", 1)[1].replace("<analysis>", name)
            if path.is_file():
                errors = read_table(path, STABILITY_ERRORS, allow_empty=True)
                figures.append((f"{name}_error", error_figure(errors, f"{study}: {what}")))
            if analysis == "rewind":
                figures.append(
                    (f"{name}_instability", instability_figure(rows, f"{study}: {what}"))
                )
        levels = [r for r in summary if r["analysis"] == "level"]
        if levels:
            title = f"{study}: instability of each level's start"
            figures.append(("instability_vs_weights", weights_figure(levels, title)))
        writer = RunWriter(run_dir)  # recorded in the run folder's manifest
        with writer.writing([out / f"{name}.{fmt}" for name, _ in figures for fmt in formats]):
            for name, fig in figures:
                written += [save_figure(fig, out, name, fmt, dpi, writer.write) for fmt in formats]
    return written


__all__ = [
    "error_figure", "instability_figure", "network_name", "plot_stability", "weights_figure",
]  # fmt: skip
