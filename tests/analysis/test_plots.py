"""Tests for lth.analysis.plots: the drawn data, axes and legends of each figure, and the saved
files."""

import os
import shutil
import stat
import statistics

import matplotlib
import numpy as np
import pytest
import torch

import lth.analysis.mask_analysis as analysis_module
from helpers import (
    BRANCHES,
    LAYERS,
    acc_end,
    es_acc,
    es_iter,
    layer_counts,
    level_tensors,
    make_run,
    make_tensor_run,
    val_acc,
    val_loss,
    weights_remaining,
)
from lth.analysis.figure_style import default_levels, fmt_tick
from lth.analysis.mask_analysis import (
    ANALYSIS_COLUMNS,
    analyze_run,
    ensure_analysis,
    load_analysis,
    load_histograms,
    magnitude_histograms,
    write_analysis,
)
from lth.analysis.plots import plot_runs
from lth.core.fileio import save_tensors
from lth.errors import LTHError
from lth.runfolder.layout import level_dir


def line(ax, label):
    """The Line2D with this legend label (its gid equals the label)."""
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def collection(ax, gid):
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, [c.get_gid() for c in ax.collections]
    return found[0]


def legend_texts(fig):
    """Texts of the figure's legend (one per figure, outside the axes)."""
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    return {
        "one": make_run(base / "one", replicates=1, levels=3),
        "three": make_run(base / "three", replicates=3, levels=3),
        "other": make_run(base / "other", replicates=1, levels=2, branches=("ticket", "reinit")),
        "diverged": make_run(
            base / "diverged", replicates=3, levels=3, diverged={("ticket", 1, 2)}
        ),
    }


def test_accuracy_single_replicate(runs):
    grid, size = matplotlib.rcParams["axes.grid"], matplotlib.rcParams["font.size"]
    figs = plot_runs([runs["one"]], formats=())
    # styling is scoped: global rcParams are untouched
    assert (matplotlib.rcParams["axes.grid"], matplotlib.rcParams["font.size"]) == (grid, size)
    assert set(figs) == {"accuracy_vs_weights", "curves", "early_stop", "layer_remaining"}
    ax_end, ax_es = figs["accuracy_vs_weights"].axes
    wr = weights_remaining(3)
    for b in BRANCHES:
        ln = line(ax_end, b)
        np.testing.assert_allclose(ln.get_xdata(), wr)
        np.testing.assert_allclose(ln.get_ydata(), [acc_end(b, 0, lv) for lv in range(4)])
        np.testing.assert_allclose(
            line(ax_es, b).get_ydata(), [es_acc(b, 0, lv) for lv in range(4)]
        )
        assert ln.get_marker() not in (None, "None", "")
    # one replicate: no error bars
    assert not ax_end.collections
    for ax in (ax_end, ax_es):
        assert ax.get_xscale() == "log"
        assert ax.xaxis_inverted()
        assert "Weights remaining (%" in ax.get_xlabel()
    assert ax_end.get_ylabel() == "Test accuracy (%)"
    assert legend_texts(ax_end.figure) == [
        *BRANCHES,
        "dense network (level 0)",
        "single run (n = 1): no error bars",
    ]
    # ticks at the levels' percentages, labelled like the paper
    np.testing.assert_allclose(sorted(ax_end.get_xticks(), reverse=True), wr)
    assert fmt_tick(100.0) == "100" and fmt_tick(51.28) == "51.3" and fmt_tick(3.6) == "3.6"
    assert fmt_tick(80.0) == "80" and fmt_tick(0.4712) == "0.47"
    # consistent colour per branch across figures
    es_ax = figs["early_stop"].axes[0]
    for b in BRANCHES:
        assert line(ax_end, b).get_color() == line(es_ax, b).get_color()


def test_accuracy_three_replicates_error_bars(runs):
    figs = plot_runs([runs["three"]], formats=())
    ax = figs["accuracy_vs_weights"].axes[0]
    wr = weights_remaining(3)
    for b in BRANCHES:
        vals = [[acc_end(b, r, lv) for r in range(3)] for lv in range(4)]
        means = [statistics.mean(v) for v in vals]
        stds = [statistics.stdev(v) for v in vals]
        ln = line(ax, b)
        np.testing.assert_allclose(ln.get_xdata(), wr)
        np.testing.assert_allclose(ln.get_ydata(), means)
        segs = collection(ax, f"errorbar:{b}").get_segments()
        assert len(segs) == 4
        for seg, x, m, s in zip(segs, wr, means, stds):
            np.testing.assert_allclose(seg[:, 0], [x, x])
            np.testing.assert_allclose(seg[:, 1], [m - s, m + s])


def test_minmax_band(runs):
    figs = plot_runs([runs["three"]], formats=(), band="minmax")
    ax = figs["accuracy_vs_weights"].axes[0]
    band = collection(ax, "band:ticket")
    verts = band.get_paths()[0].vertices
    lo = [min(acc_end("ticket", r, lv) for r in range(3)) for lv in range(4)]
    hi = [max(acc_end("ticket", r, lv) for r in range(3)) for lv in range(4)]
    assert np.min(verts[:, 1]) == pytest.approx(min(lo))
    assert np.max(verts[:, 1]) == pytest.approx(max(hi))
    assert not [c for c in ax.collections if (c.get_gid() or "").startswith("errorbar:")]
    with pytest.raises(LTHError, match="unknown band"):
        plot_runs([runs["three"]], formats=(), band="iqr")


def test_two_runs_overlay(runs):
    # the runs differ in levels: the legend names them by it, not by their folders
    figs = plot_runs([runs["one"], runs["other"]], formats=())
    ax = figs["accuracy_vs_weights"].axes[0]
    texts = legend_texts(ax.figure)[:5]  # then the dense line (the same network) and n
    assert texts == [
        "levels 3: ticket",
        "levels 3: reinit",
        "levels 3: random_prune",
        "levels 2: ticket",
        "levels 2: reinit",
    ]
    # colour: the run; marker and line style: the branch
    a, b = line(ax, "levels 3: ticket"), line(ax, "levels 2: ticket")
    assert a.get_color() != b.get_color() and a.get_marker() == b.get_marker()
    c = line(ax, "levels 3: reinit")
    assert c.get_color() == a.get_color()
    assert (c.get_linestyle(), c.get_marker()) != (a.get_linestyle(), a.get_marker())
    np.testing.assert_allclose(b.get_xdata(), weights_remaining(2))
    curves = figs["curves"].axes[0]
    labels = [ln.get_label() for ln in curves.get_lines()]
    assert any(t.startswith("levels 3: level") for t in labels)
    assert any(t.startswith("levels 2: level") for t in labels)
    # --labels
    figs = plot_runs([runs["one"], runs["other"]], formats=(), labels=["A", "B"])
    assert legend_texts(figs["early_stop"])[:2] == ["A: ticket", "A: reinit"]


def test_diverged_excluded_and_hollow(runs):
    figs = plot_runs([runs["diverged"]], formats=())
    ax = figs["accuracy_vs_weights"].axes[0]
    means = line(ax, "ticket").get_ydata()
    assert means[2] == pytest.approx(statistics.mean([acc_end("ticket", r, 2) for r in (0, 2)]))
    marks = [ln for ln in ax.get_lines() if ln.get_gid() == "diverged:ticket"]
    assert len(marks) == 1 and marks[0].get_markerfacecolor() == "none"
    np.testing.assert_allclose(marks[0].get_ydata(), [acc_end("ticket", 1, 2)])
    assert any("diverged" in t for t in legend_texts(ax.figure))
    curves = figs["curves"].axes[0]
    lab = next(ln.get_label() for ln in curves.get_lines() if ln.get_label().startswith("level 2"))
    assert "1 diverged excluded" in lab


def test_curves_default_and_selected_levels(runs):
    figs = plot_runs([runs["three"]], formats=())
    ax_acc, ax_loss = figs["curves"].axes[:2]  # the ticket's row
    wr = weights_remaining(3)
    iters = list(range(0, 501, 100))
    assert len(ax_acc.get_lines()) == 4  # 4 levels <= 5: all of them
    for lv in range(4):
        label = f"level {lv} ({fmt_tick(wr[lv])}% remaining)"
        ln = line(ax_acc, label)
        np.testing.assert_allclose(ln.get_xdata(), iters)
        want = [statistics.mean(val_acc("ticket", r, lv, it) for r in range(3)) for it in iters]
        np.testing.assert_allclose(ln.get_ydata(), want)
        loss = [statistics.mean(val_loss("ticket", r, lv, it) for r in range(3)) for it in iters]
        np.testing.assert_allclose(line(ax_loss, label).get_ydata(), loss)
    assert ax_acc.get_xlabel() == "Training iteration"
    assert ax_acc.get_ylabel() == "Validation accuracy (%)"
    assert ax_loss.get_ylabel() == "Validation loss"
    assert legend_texts(ax_acc.figure)[0] == "level 0 (100% remaining)"

    figs = plot_runs([runs["three"]], formats=(), levels=[1, 3])
    labels = [ln.get_label() for ln in figs["curves"].axes[0].get_lines()]
    assert [t.split(" (")[0] for t in labels] == ["level 1", "level 3"]
    with pytest.raises(LTHError, match="level 9"):
        plot_runs([runs["three"]], formats=(), levels=[9])


def test_many_levels_ticks_thinned(tmp_path):
    run = make_run(tmp_path / "deep", levels=16, branches=("ticket",), iterations=200)
    ax = plot_runs([run], formats=())["accuracy_vs_weights"].axes[0]
    wr = weights_remaining(16)
    ticks = sorted(ax.get_xticks(), reverse=True)
    assert 5 <= len(ticks) <= 10
    assert ticks[0] == pytest.approx(100.0) and ticks[-1] == pytest.approx(wr[-1])
    assert all(min(abs(t - w) for w in wr) < 1e-9 for t in ticks)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "100" and labels[-1] == fmt_tick(wr[-1])
    lo, hi = ax.get_xlim()
    assert lo > 100 and hi < wr[-1]


def test_default_levels_spread():
    assert default_levels([0, 1, 2]) == [0, 1, 2]
    assert default_levels(range(21)) == [0, 7, 13, 20]  # four by default
    assert default_levels(range(9)) == [0, 3, 5, 8]
    assert default_levels(range(21), 5) == [0, 5, 10, 15, 20]
    assert default_levels(range(16), 5) == [0, 4, 8, 11, 15]


def test_early_stop_figure(runs):
    ax = plot_runs([runs["three"]], formats=())["early_stop"].axes[0]
    for b in BRANCHES:
        ln = line(ax, b)
        np.testing.assert_allclose(ln.get_xdata(), weights_remaining(3))
        want = [statistics.mean(es_iter(b, r, lv) for r in range(3)) for lv in range(4)]
        np.testing.assert_allclose(ln.get_ydata(), want)
    assert ax.get_xscale() == "log" and ax.xaxis_inverted()
    assert ax.get_ylabel() == "Early-stop iteration"
    assert set(BRANCHES) <= set(legend_texts(ax.figure))


def test_layer_remaining_figure(runs):
    ax = plot_runs([runs["one"]], formats=())["layer_remaining"].axes[0]
    counts = layer_counts(3)
    # fc1 and fc2 are pruned at the same rate: one line, named after both
    assert legend_texts(ax.figure) == ["fc1.weight, fc2.weight", "fc3.weight"]
    assert len(ax.get_lines()) == 2
    for label, (name, rows, cols, _) in (
        ("fc1.weight, fc2.weight", LAYERS[0]),
        ("fc3.weight", LAYERS[2]),
    ):
        ln = line(ax, label)
        np.testing.assert_allclose(ln.get_xdata(), range(4))
        np.testing.assert_allclose(
            ln.get_ydata(), [100.0 * counts[lv][name] / (rows * cols) for lv in range(4)]
        )
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Pruning level"
    # several runs with the same layers: still one line per distinct curve
    ax = plot_runs([runs["one"], runs["three"]], formats=())["layer_remaining"].axes[0]
    assert legend_texts(ax.figure) == ["fc1.weight, fc2.weight", "fc3.weight"]
    ax = plot_runs([runs["one"], runs["other"]], formats=())["layer_remaining"].axes[0]
    assert legend_texts(ax.figure) == [
        "levels 3: fc1.weight, fc2.weight",
        "levels 3: fc3.weight",
        "levels 2: fc1.weight, fc2.weight",
        "levels 2: fc3.weight",
    ]


def test_files_saved_atomically(runs, tmp_path):
    run = make_run(tmp_path / "saved", replicates=1, levels=2, branches=("ticket",))
    figs = plot_runs([run], formats=("png", "pdf"))
    out = run / "plots"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{n}.{ext}" for n in figs for ext in ("png", "pdf"))  # no temp left
    for n in figs:
        png, pdf = (out / f"{n}.png").read_bytes(), (out / f"{n}.pdf").read_bytes()
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
        assert pdf.startswith(b"%PDF") and len(pdf) > 1000
    other = tmp_path / "elsewhere" / "figs"
    plot_runs([run], out_dir=other, formats=("png",))
    assert sorted(p.suffix for p in other.iterdir()) == [".png"] * 4
    with pytest.raises(LTHError, match="cannot save figures as 'xyz'"):
        plot_runs([run], formats=("xyz",))


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_figure_files_follow_the_umask(tmp_path, umask):
    run = make_run(tmp_path / "run", replicates=1, levels=1, branches=("ticket",))
    old = os.umask(umask)
    try:
        plot_runs([run], formats=("png", "pdf"), dpi=30)
    finally:
        os.umask(old)
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (run / "plots").iterdir()}
    assert modes == {0o666 & ~umask}  # like every other file of the run, not 0600


def test_missing_files_raise(tmp_path):
    run = make_run(tmp_path / "run")
    (run / "layers.csv").unlink()  # as in a published results/ copy: that figure left out
    assert set(plot_runs([run], formats=())) == {"accuracy_vs_weights", "curves", "early_stop"}
    (run / "summary.csv").unlink()
    with pytest.raises(LTHError, match="summary.csv"):
        plot_runs([run], formats=())
    with pytest.raises(LTHError, match="no run folders"):
        plot_runs([], formats=())


# ----------------------------------------------------------------------------- mask analysis


def analysis_means(rows, branch, column):
    """(x, y) a mask-analysis line should show: per level, the mean over replicates of the
    'all' rows' ``column`` (levels without a value left out) against weights remaining."""
    xs, ys = [], []
    for level in sorted({r["level"] for r in rows}):
        group = [r for r in rows if (r["branch"], r["level"], r["layer"]) == (branch, level, "all")]
        values = [r[column] for r in group if not np.isnan(r[column])]
        if values:
            xs.append(statistics.mean(r["weights_remaining"] for r in group))
            ys.append(statistics.mean(values))
    return xs, ys


def tree(root):
    return {p: p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


def plot_like_lth_plot(runs, **kw):
    """What ``lth plot`` does: bring each run's analysis up to date, then draw."""
    return plot_runs(runs, analyses=[ensure_analysis(r) for r in runs], **kw)


def test_plotting_only_reads(tmp_path):
    run = make_tensor_run(tmp_path / "run", replicates=2)
    before = tree(run)
    figs = plot_runs([run], formats=())  # no analysis.csv yet: none is computed or drawn
    assert "mask_analysis" not in figs
    assert tree(run) == before


def test_mask_analysis_figure_computes_and_draws(tmp_path):
    run = make_tensor_run(tmp_path / "run", replicates=2)
    assert not (run / "analysis.csv").exists()
    figs = plot_like_lth_plot([run], formats=())
    assert set(figs) == {
        "accuracy_vs_weights",
        "curves",
        "early_stop",
        "layer_remaining",
        "mask_analysis",
        "weight_histograms",
    }
    assert (run / "analysis.csv").is_file() and (run / "analysis_histograms.csv").is_file()
    rows = load_analysis(run)
    assert rows and [r["sign_kept"] for r in rows] == [r["sign_kept"] for r in analyze_run(run)]
    ax_j, ax_s = figs["mask_analysis"].axes
    # the ticket's masks are nested (its overlap with the previous level is the fraction
    # kept) and reinit's are the ticket's: neither line is drawn, and the legend says so
    x, y = analysis_means(rows, "random_prune", "jaccard_previous_level")
    assert len(x) == 2  # levels 1 and 2: level 0 has no previous level
    ln = line(ax_j, "random_prune vs. previous level")
    np.testing.assert_array_equal(ln.get_xdata(), x)
    np.testing.assert_array_equal(ln.get_ydata(), y)
    labels = [ln.get_label() for ln in ax_j.get_lines()]
    assert "ticket vs. previous level" not in labels and "reinit vs. previous level" not in labels
    (legend,) = figs["mask_analysis"].legends
    assert (
        legend.get_title()
        .get_text()
        .replace("\n", " ")
        .startswith("Not drawn: ticket and reinit vs. previous level (nested masks")
    )
    for b in BRANCHES:
        x, y = analysis_means(rows, b, "sign_kept")
        np.testing.assert_array_equal(line(ax_s, b).get_xdata(), x)
        np.testing.assert_array_equal(line(ax_s, b).get_ydata(), y)
    x, y = analysis_means(rows, "ticket", "jaccard_random_prune")
    ln = line(ax_j, "ticket vs. random_prune")
    np.testing.assert_array_equal(ln.get_xdata(), x)
    np.testing.assert_array_equal(ln.get_ydata(), y)
    assert y == [1.0, 4 / 10, 3 / 7]  # the same hand-made masks in both replicates
    # two replicates whose signs differ: ±1 std error bars on the sign panel
    assert collection(ax_s, "errorbar:ticket") is not None
    for ax in (ax_j, ax_s):
        assert ax.get_xscale() == "log" and ax.xaxis_inverted()
        assert "Weights remaining (%" in ax.get_xlabel()
    assert ax_j.get_ylabel() == "Jaccard overlap of kept weights"
    assert ax_s.get_ylabel() == "Fraction of survivors"


def test_weight_histograms_figure(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    fig = plot_like_lth_plot([run], formats=())["weight_histograms"]
    hist = load_histograms(run)
    edges = sorted({r["bin_low"] for r in hist}) + [max(r["bin_high"] for r in hist)]
    assert len(fig.axes) == 3  # levels 0, 1 and 2 of the ticket, replicate 0
    for level, ax in enumerate(fig.axes):
        assert ax.get_xscale() == "log"
        assert ax.get_title().startswith(f"level {level} (")
        masks, init, final = level_tensors("ticket", 0, level)
        want = magnitude_histograms(init, final, masks, edges)
        for which in ("init", "final"):
            (patch,) = [p for p in ax.patches if p.get_gid() == f"{which}:{level}"]
            values, drawn_edges, _ = patch.get_data()
            np.testing.assert_array_equal(drawn_edges, edges)  # shared bins in every panel
            np.testing.assert_array_equal(values, want[which])
    assert legend_texts(fig) == ["at θ-start (init)", "at the end of training (final)"]
    # levels= picks the panels
    fig = plot_runs([run], formats=(), levels=[2])["weight_histograms"]
    assert [ax.get_title().split(" (")[0] for ax in fig.axes] == ["level 2"]


def test_no_level_files_no_analysis_figures(tmp_path):
    run = make_run(tmp_path / "run", levels=2)
    figs = plot_runs([run], formats=())
    assert set(figs) == {"accuracy_vs_weights", "curves", "early_stop", "layer_remaining"}
    assert not (run / "analysis.csv").exists()
    # without plot: figures even when the files are there
    run = make_tensor_run(tmp_path / "tensors")
    assert "mask_analysis" not in plot_runs([run], formats=(), mask_analysis=False)
    assert not (run / "analysis.csv").exists()


def test_stale_analysis_is_recomputed(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    (run / "analysis.csv").write_text(",".join(ANALYSIS_COLUMNS) + "\n")  # no rows: stale
    (run / "analysis_histograms.csv").write_text("branch\n")
    figs = plot_like_lth_plot([run], formats=())
    assert {"mask_analysis", "weight_histograms"} <= set(figs)
    keys = [(r["branch"], r["level"], r["layer"]) for r in load_analysis(run)]
    assert keys == [(r["branch"], r["level"], r["layer"]) for r in analyze_run(run)]
    assert len(load_histograms(run)) == 3 * 3 * 2 * 40


def test_analysis_older_than_the_masks_is_recomputed(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    ensure_analysis(run)
    good = (run / "analysis.csv").read_bytes()
    # the level's masks are rewritten after the analysis (a resumed run that went on)
    masks, _, _ = level_tensors("ticket", 0, 2)
    masks["fc2.weight"] = torch.tensor([True, False, False, False])
    save_tensors(level_dir(run, "ticket", 0, 2) / "mask.safetensors", masks)
    stamp = (run / "analysis.csv").stat().st_mtime_ns - 10**9
    for name in ("analysis.csv", "analysis_histograms.csv"):
        os.utime(run / name, ns=(stamp, stamp))
    rows, _ = ensure_analysis(run)
    assert (run / "analysis.csv").read_bytes() != good
    by = {(r["branch"], r["level"], r["layer"]): r for r in rows}
    assert by[("ticket", 2, "fc2.weight")]["weights_remaining"] == 25.0
    # up to date: not rewritten
    written = (run / "analysis.csv").stat().st_mtime_ns
    ensure_analysis(run)
    assert (run / "analysis.csv").stat().st_mtime_ns == written


def test_existing_analysis_is_used_without_level_files(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    write_analysis(run)
    for b in BRANCHES:
        shutil.rmtree(run / b)  # only the CSV files are left
    figs = plot_like_lth_plot([run], formats=())
    rows = load_analysis(run)
    x, y = analysis_means(rows, "ticket", "sign_kept")
    np.testing.assert_array_equal(line(figs["mask_analysis"].axes[1], "ticket").get_ydata(), y)
    assert "weight_histograms" in figs


def test_read_only_run_folder_analysed_in_memory(tmp_path, monkeypatch):
    run = make_tensor_run(tmp_path / "run")
    monkeypatch.setattr(analysis_module.os, "access", lambda *a, **k: False)
    figs = plot_like_lth_plot([run], formats=())
    assert not (run / "analysis.csv").exists()
    rows = analyze_run(run)
    _, y = analysis_means(
        [{k: np.nan if v is None else v for k, v in r.items()} for r in rows],
        "ticket",
        "jaccard_random_prune",
    )
    np.testing.assert_array_equal(
        line(figs["mask_analysis"].axes[0], "ticket vs. random_prune").get_ydata(), y
    )


def test_analysis_figures_saved_and_overlaid(tmp_path):
    a = make_tensor_run(tmp_path / "a")
    b = make_tensor_run(tmp_path / "b", branches=("ticket",))
    figs = plot_like_lth_plot([a, b], formats=("png",), dpi=30)
    assert not list((a / "plots").iterdir())  # an overlay goes to a folder of its own
    names = sorted(p.name for p in (tmp_path / "plots_a+b").iterdir())
    assert "mask_analysis.png" in names and "weight_histograms.png" in names
    labels = [ln.get_label() for ln in figs["mask_analysis"].axes[0].get_lines()]
    assert "a: ticket vs. random_prune" in labels and "a: random_prune vs. previous level" in labels
    assert "b: ticket vs. random_prune" not in labels  # b has no random_prune control
    right = figs["mask_analysis"].axes[1].get_lines()
    assert [ln.get_label() for ln in right if not ln.get_label().startswith("_")] == [
        "a: ticket",
        "a: reinit",
        "a: random_prune",
        "b: ticket",
    ]


def test_corrupt_level_file_is_reported(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    (level_dir(run, "ticket", 0, 1) / "mask.safetensors").write_bytes(b"junk")
    with pytest.raises(LTHError, match="ticket/0/level_01/mask.safetensors"):
        plot_like_lth_plot([run], formats=())


def test_damaged_analysis_csv(tmp_path):
    run = make_tensor_run(tmp_path / "run")
    write_analysis(run)
    good = (run / "analysis.csv").read_text()
    (run / "analysis.csv").write_text(good.replace("ticket,0,1,all,70.0", "ticket,0,1,all,x"))
    assert "mask_analysis" in plot_like_lth_plot([run], formats=())  # recomputed
    assert (run / "analysis.csv").read_text() == good
    (run / "analysis.csv").write_text(good.replace("ticket,0,1,all,70.0", "ticket,0,1,all,x"))
    for b in BRANCHES:
        shutil.rmtree(run / b)
    for plot in (plot_runs, plot_like_lth_plot):
        with pytest.raises(LTHError, match="analysis.csv data row .*weights_remaining = 'x'"):
            plot([run], formats=())
