"""Figures a paper can use as they are: for 1, 2 and 8 overlaid runs, every series in a legend
is visible (not fully covered by another artist) and every text lies inside the figure; titles
name the study, not folders; the spread says n; axes fit the data.

Visibility is checked on the rendered pixels: hiding a series' artist must change the image.
The synthetic runs (``helpers.make_run`` plus a mask analysis made here with
the structure a real one has: nested ticket masks, reinit on the ticket's masks, the ticket and
random_prune the same network at level 0) are checked for every figure; two tiny real runs
(2 levels x 200 iterations, seeds 0 and 1) are checked too, with ``lth report`` over both.
"""

import csv
import io
import math
import statistics
from pathlib import Path

import numpy as np
import pytest
from matplotlib.text import Text

from conftest import TINY_RUN, figures_off, real_data
from helpers import BRANCHES, make_run, val_acc, weights_remaining
from lth.analysis.figure_style import FIGURE_LEVELS, default_levels
from lth.analysis.mask_analysis import ensure_analysis
from lth.analysis.plots import plot_runs
from lth.analysis.report import report
from lth.runfolder.layout import ANALYSIS_FIGURES, FIGURES
from lth.runfolder.readers import load_summary
from lth.runfolder.tables import ANALYSIS_HISTOGRAMS

LEVELS = 3
PROXIES = (
    "error bars:",
    "band:",
    "diverged replicate",
    "sparsest matching level",
    "single run (n = 1)",
    "ringed:",
)  # legend entries that explain


# ----------------------------------------------------------------------------- synthetic runs


def analysis_rows(seed, replicates, levels=LEVELS, branches=BRANCHES):
    """analysis.csv rows ('all' layer) shaped like a real study's."""
    wr = weights_remaining(levels)
    rows = []
    for b in branches:
        for r in range(replicates):
            for lv in range(levels + 1):
                p = wr[lv] / 100
                prev = wr[lv] / wr[lv - 1] if lv else math.nan
                ticket_sign = 0.90 + 0.03 * lv + 0.004 * seed + 0.002 * r
                if b == "ticket":
                    j_rp = 1.0 if lv == 0 else p / (2 - p) + 0.01 * seed
                    j_prev, sign = prev, ticket_sign
                elif b == "reinit":
                    j_prev, j_rp, sign = prev, math.nan, 0.905 - 0.01 * lv + 0.003 * seed
                else:
                    j_prev = prev if lv <= 1 else prev / (2 - prev) + 0.005 * seed
                    sign = ticket_sign if lv == 0 else 0.90 - 0.013 * lv + 0.002 * seed
                    j_rp = math.nan
                rows.append(
                    {
                        "branch": b,
                        "replicate": r,
                        "level": lv,
                        "layer": "all",
                        "weights_remaining": wr[lv],
                        "jaccard_previous_level": j_prev,
                        "jaccard_random_prune": j_rp,
                        "sign_kept": sign,
                    }
                )
    return rows


def histogram_rows(seed, levels=LEVELS, bins=40):
    """analysis_histograms.csv rows of the ticket's replicate 0: log-normal-ish magnitudes on
    bins from 1e-8 (a few tiny weights) to 1."""
    edges = np.geomspace(1e-8, 1.0, bins + 1)
    centre = np.log10(edges[:-1] * edges[1:]) / 2
    rows = []
    for lv in range(levels + 1):
        for which, mu in (("init", -1.6), ("final", -1.45 + 0.05 * seed)):
            counts = np.round(50000 * np.exp(-((centre - mu) ** 2) / 0.18) * 0.8**lv)
            counts[0] += 3  # the lowest bin holds a few weights: the full range starts at 1e-8
            for i, c in enumerate(counts):
                values = ("ticket", 0, lv, which, i, float(edges[i]), float(edges[i + 1]), int(c))
                rows.append(dict(zip(ANALYSIS_HISTOGRAMS.names, values, strict=True)))
    return rows


def synthetic_runs(base, count, replicates=2):
    """``count`` runs of one study, seeds 0..count-1, in timestamped folders."""
    runs = [
        make_run(
            base / f"lenet_300_100-mnist-20250101-12{i:02d}00",
            replicates=replicates,
            levels=LEVELS,
            shift=0.15 * i,  # accuracies stay below 100%
            settings=f"seed = {i}",
        )
        for i in range(count)
    ]
    analyses = [
        (analysis_rows(i, replicates), histogram_rows(i)) for i in range(count)
    ]  # as lth.analysis.mask_analysis.ensure_analysis returns them
    return runs, analyses


@pytest.fixture(scope="module")
def overlays(tmp_path_factory):
    base = tmp_path_factory.mktemp("overlays")
    out = {}
    for n in (1, 2, 8):
        runs, analyses = synthetic_runs(base / f"n{n}", n)
        # pool=False: each seed its own series (the hardest case for visibility)
        out[n] = (runs, plot_runs(runs, formats=(), analyses=analyses, dpi=72, pool=False))
    return out


# ----------------------------------------------------------------------------- checks


def render(fig):
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba()).copy()


def legend_entries(fig):
    """(label, legend) of every legend of the figure (its own and its axes')."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return [(t.get_text(), leg) for leg in legends for t in leg.get_texts()]


def series_artists(fig):
    """The labelled artists of the axes: the series a legend names."""
    found = []
    for ax in fig.axes:
        for artist in [*ax.get_lines(), *ax.collections, *ax.patches]:
            label = artist.get_label()
            if label and not label.startswith("_"):
                found.append(artist)
    return found


def axes_image(ax):
    """The pixels of one axes drawn alone (the figure's layout as last drawn)."""
    renderer = ax.figure.canvas.get_renderer()
    renderer.clear()
    ax.draw(renderer)
    return np.asarray(renderer.buffer_rgba()).copy()


def assert_every_series_visible(fig, min_pixels=3, only=None, laid_out=False):
    """Every legend entry names series that are drawn, and none is fully covered: hiding
    one changes at least ``min_pixels`` pixels of its axes (of the axes ``only``, if given:
    the curves' rows of every branch are drawn alike, one row is checked when they are many).
    ``laid_out``: the figure was drawn (:func:`render`) and not changed since, so its layout
    is not computed again."""
    labels = [label for label, _ in legend_entries(fig)]
    artists = series_artists(fig)
    drawn = {a.get_label() for a in artists}
    for label in labels:
        assert label in drawn or label.startswith(PROXIES), (label, sorted(drawn))
    assert drawn <= set(labels), drawn - set(labels)  # every series is in a legend
    if not laid_out:
        render(fig)  # the layout
    checked = fig.axes if only is None else only
    bases = {id(ax): axes_image(ax) for ax in checked}
    for artist in [a for a in artists if a.axes in checked]:
        artist.set_visible(False)
        try:
            image = axes_image(artist.axes)
        finally:
            artist.set_visible(True)
        changed = int(np.any(image != bases[id(artist.axes)], axis=-1).sum())
        assert changed >= min_pixels, f"{artist.get_label()!r} is hidden by other artists"


def assert_texts_inside(fig, tol=1.0):
    """Every drawn text (titles, labels, ticks, legends) lies inside the figure."""
    render(fig)
    renderer = fig.canvas.get_renderer()
    box = fig.bbox
    tight = fig.get_tightbbox(renderer)  # inches: everything drawn
    w, h = fig.get_size_inches()
    assert tight.x0 >= -tol / fig.dpi and tight.y0 >= -tol / fig.dpi, tight
    assert tight.x1 <= w + tol / fig.dpi and tight.y1 <= h + tol / fig.dpi, (tight, w, h)
    texts = [fig._suptitle, *fig.texts] if fig._suptitle else list(fig.texts)
    for legend in list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]:
        texts += [legend.get_title(), *legend.get_texts()]
    for ax in fig.axes:
        texts += _axes_texts(ax)
    texts = [t for t in texts if t.get_visible() and t.get_text().strip()]
    assert len(texts) > 10
    for t in texts:
        e = t.get_window_extent(renderer)
        inside = (
            e.x0 >= box.x0 - tol
            and e.y0 >= box.y0 - tol
            and e.x1 <= box.x1 + tol
            and e.y1 <= box.y1 + tol
        )
        assert inside, (t.get_text(), e, box)


def _axes_texts(ax):
    """The texts an axes draws: title, axis labels, tick labels in view, its own texts."""
    ticks = []
    for axis in (ax.xaxis, ax.yaxis):
        lo, hi = sorted(axis.get_view_interval())
        locs = axis.get_majorticklocs()
        for tick, loc in zip(axis.get_major_ticks(len(locs)), locs):
            if lo - 1e-9 * abs(hi - lo) <= loc <= hi + 1e-9 * abs(hi - lo):
                ticks.append(tick.label1)
    return [ax.title, ax.xaxis.label, ax.yaxis.label, *ticks, *ax.texts]


def all_texts(fig):
    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


# ----------------------------------------------------------------------------- every figure


@pytest.mark.parametrize("n", [1, 2, 8])
@pytest.mark.parametrize("name", FIGURES + ANALYSIS_FIGURES)
def test_every_series_visible_and_every_text_inside(overlays, n, name):
    runs, figures = overlays[n]
    fig = figures[name]
    assert_texts_inside(fig)  # draws the figure: its layout
    only = fig.axes[:2] if name == "curves" and n > 2 else None
    assert_every_series_visible(fig, only=only, laid_out=True)
    labels = [label for label, _ in legend_entries(fig)]
    if n > 1 and name not in ("layer_remaining", "weight_histograms"):
        # every run is in the legend, named by its seed (layers are the same in every run,
        # one line each; the histograms are of the first run)
        assert all(any(t.startswith(f"seed {i}: ") for t in labels) for i in range(n)), labels


@pytest.mark.parametrize("n", [1, 2, 8])
def test_no_folder_names_and_n_beside_the_spread(overlays, n):
    runs, figures = overlays[n]
    for name, fig in figures.items():
        text = " ".join(all_texts(fig))
        assert "20250101" not in text and "mnist-" not in text, (name, text)  # folder names
        assert fig.get_suptitle().endswith("LeNet-300-100 on MNIST"), name
    for name in ("accuracy_vs_weights", "early_stop", "mask_analysis"):
        labels = [label for label, _ in legend_entries(figures[name])]
        assert "error bars: ±1 std over n = 2 replicates" in labels, (name, labels)


def same_network_at_level_zero(run):
    """Make random_prune's level-0 results the ticket's, as in a real study."""
    path = run / "summary.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    ticket = {r["replicate"]: r for r in rows if (r["branch"], r["level"]) == ("ticket", "0")}
    for r in rows:
        if (r["branch"], r["level"]) == ("random_prune", "0"):
            r.update({k: v for k, v in ticket[r["replicate"]].items() if k != "branch"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return run


def test_level_zero_points_that_coincide_are_side_by_side(tmp_path):
    """The ticket and random_prune are one network at level 0: both points are drawn, a
    few points apart on screen, at the same data value."""
    runs, _ = synthetic_runs(tmp_path, 1)
    figures = plot_runs([same_network_at_level_zero(runs[0])], formats=())
    ax = figures["accuracy_vs_weights"].axes[0]
    ticket = next(ln for ln in ax.get_lines() if ln.get_label() == "ticket")
    control = next(ln for ln in ax.get_lines() if ln.get_label() == "random_prune")
    assert ticket.get_xdata()[0] == control.get_xdata()[0] == 100.0  # data untouched
    render(ax.figure)
    a = ticket.get_transform().transform((100.0, ticket.get_ydata()[0]))
    b = control.get_transform().transform((100.0, control.get_ydata()[0]))
    assert a[1] == b[1] and abs(a[0] - b[0]) >= 3  # pixels apart
    assert ticket.get_zorder() > control.get_zorder()  # the ticket on top
    assert ticket.get_marker() != control.get_marker()
    for fig in figures.values():  # the accuracy figure was drawn above: its layout done
        assert_every_series_visible(fig, laid_out=fig is ax.figure)


def test_curves_zoom_to_the_data(overlays):
    _, figures = overlays[2]
    ax_acc, ax_loss = figures["curves"].axes[:2]  # the ticket's row
    lo, hi = ax_acc.get_ylim()
    assert lo > val_acc("ticket", 0, 0, 0) + 30  # the first evaluation (10%) runs off
    for ln in ax_acc.get_lines():
        x, y = ln.get_xdata(), ln.get_ydata()
        late = y[np.asarray(x) >= 0.1 * max(x)]
        assert lo <= late.min() and late.max() <= hi
    assert hi - lo < 55 and hi <= 100.5  # not 0-100
    assert ax_loss.get_ylim()[1] < 2.0  # the loss at iteration 0 (~2.3) runs off too


def test_histograms_fit_the_weights_and_show_the_curves_levels(overlays):
    _, figures = overlays[1]
    fig = figures["weight_histograms"]
    curves = figures["curves"].axes[0]
    hist_levels = [int(ax.get_title().split()[1]) for ax in fig.axes]
    curve_levels = [int(ln.get_label().split()[1]) for ln in curves.get_lines()]
    assert hist_levels == curve_levels == default_levels(range(LEVELS + 1), FIGURE_LEVELS)
    lo, hi = fig.axes[0].get_xlim()
    assert lo > 1e-6 and hi <= 1.0  # not from 1e-8: the few tiny weights are left out
    counts = {}
    for ax in fig.axes:
        for patch in ax.patches:
            values, edges, _ = patch.get_data()
            for v, a, b in zip(values, edges[:-1], edges[1:]):
                counts[(a, b)] = counts.get((a, b), 0) + v
    shown = sum(v for (a, b), v in counts.items() if a >= lo * 0.999 and b <= hi * 1.001)
    assert shown >= 0.99 * sum(counts.values())


def test_mask_analysis_leaves_out_what_is_identical_by_construction(overlays):
    _, figures = overlays[2]
    fig = figures["mask_analysis"]
    labels = [label for label, _ in legend_entries(fig)]
    assert "seed 0: ticket vs. previous level" not in labels  # nested: 1 - rate
    assert "seed 0: reinit vs. previous level" not in labels  # the ticket's masks
    assert "seed 0: random_prune vs. previous level" in labels
    assert "seed 1: ticket vs. random_prune" in labels
    (legend,) = fig.legends
    note = legend.get_title().get_text().replace("\n", " ")
    assert note.startswith("Not drawn: ticket and reinit vs. previous level (nested masks")
    assert "seed" not in note  # the same in every run: said once


def test_title_and_labels(overlays, tmp_path):
    runs, _ = overlays[2]
    figs = plot_runs(runs, formats=(), title="", labels=["dense init", "other init"], pool=False)
    for fig in figs.values():
        assert fig.get_suptitle() == ""
    legend = [label for label, _ in legend_entries(figs["accuracy_vs_weights"])]
    assert legend[0] == "dense init: ticket" and "other init: random_prune" in legend
    figs = plot_runs(runs[:1], formats=(), title="Figure 3: LeNet-300-100, 2 seeds")
    assert figs["curves"].get_suptitle().endswith("\nFigure 3: LeNet-300-100, 2 seeds")
    with pytest.raises(Exception, match="3 labels for 2 run folders"):
        plot_runs(runs, formats=(), labels=["a", "b", "c"], pool=False)


def test_minmax_band_legend_says_n(overlays):
    runs, _ = overlays[1]
    fig = plot_runs(runs, formats=(), band="minmax")["accuracy_vs_weights"]
    labels = [label for label, _ in legend_entries(fig)]
    assert "band: min-max over n = 2 replicates" in labels
    assert_every_series_visible(fig)


def test_long_labels_widen_the_legend_never_cut(overlays):
    runs = overlays[2][0]
    long = ["a very long label for the first run of this comparison " * 2, "second"]
    figs = plot_runs(runs, formats=(), labels=long, title="x " * 80, pool=False)
    for name in ("accuracy_vs_weights", "curves"):
        assert_texts_inside(figs[name])


def test_cli_plot_title_labels_and_sweep_folder(overlays, tmp_path, capsys):
    from lth.cli import main

    runs, _ = overlays[2]
    out = tmp_path / "figs"
    argv = ["plot", str(runs[0].parent), "--out", str(out), "--formats", "png", "--no-pool"]
    assert main([*argv, "--title", "", "--labels", "a\\, 1,b"]) == 0
    assert (out / "accuracy_vs_weights.png").is_file()
    assert main([*argv, "--labels", "only-one"]) == 2
    assert "1 labels for 2 run folders" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real runs


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory, tiny_run):
    """Two tiny real studies of the same settings, seeds 0 and 1, as two separate jobs (seed 0:
    a copy of conftest's session-wide run; seed 1 ends without drawing its own figures, as
    conftest's ``no_figures``: the tests draw them)."""
    import shutil

    from lth.cli import main

    base = tmp_path_factory.mktemp("real")
    runs = [Path(shutil.copytree(tiny_run, base / "lenet-seed0")), base / "lenet-seed1"]
    argv = ["run", *TINY_RUN, "--data-dir", str(real_data("mnist")), "--quiet"]
    with figures_off():
        assert main([*argv, "--seed", "1", "--out", str(runs[1])]) == 0
    return runs


def test_real_runs_figures(real_runs):
    for runs in (real_runs[:1], real_runs):
        analyses = [ensure_analysis(r) for r in runs]
        figs = plot_runs(runs, formats=(), analyses=analyses, dpi=72, pool=False)
        assert set(figs) >= {"accuracy_vs_weights", "mask_analysis", "weight_histograms"}
        for name, fig in figs.items():
            assert_texts_inside(fig)  # draws the figure: its layout
            assert_every_series_visible(fig, laid_out=True)
            assert "lenet-seed" not in " ".join(all_texts(fig)), name
    labels = [label for label, _ in legend_entries(figs["accuracy_vs_weights"])]
    assert labels[:3] == ["seed 0: ticket", "seed 0: reinit", "seed 0: random_prune"]


def test_real_report_over_two_seeds(real_runs):
    a, b = real_runs
    text = report([a, b])
    assert "2 runs pooled (seed 0; seed 1)" in text
    assert "Mean ± sample std over n = 2 replicates" in text
    rows = {
        (r["branch"], r["level"]): r for r in csv.DictReader(io.StringIO(report([a, b], "csv")))
    }
    summaries = [load_summary(run) for run in (a, b)]
    assert {b for b, lv in rows if lv == "0"} == {"ticket"}  # the controls start at level 1
    for branch in BRANCHES:
        for level in range(3) if branch == "ticket" else (1, 2):
            values = [
                next(s.test_acc for s in summary if (s.branch, s.level) == (branch, level))
                for summary in summaries
            ]
            row = rows[(branch, str(level))]
            assert row["n"] == "2"
            assert float(row["test_acc_mean"]) == pytest.approx(statistics.mean(values))
            assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(values))
            cell = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"
            assert cell in text
