"""Figures, second pass (issue 22): what a paper author reads off them. Overlays go to a folder
of their own; runs that differ only in seed are one series (as ``lth report`` pools them); labels
are short; bars and bands stay inside [0, 100] and say n; the dense network is a line; ticks
have one precision; the curves show every branch and say what runs off the axes; the early-stop
figure marks the iteration budget; stability figures keep the 2% threshold in view; titles use
display names. Checked on the matplotlib objects (limits, legend entries, gids, texts) and on the
files written, with oracles computed here from helpers' known numbers."""

import csv
import hashlib
import io
import shutil
import statistics
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_one_line
from helpers import BRANCHES, acc_end, es_acc, es_iter, make_run, val_acc, weights_remaining
from lth.analysis.figure_text import fmt_fixed, study_title, tick_decimals
from lth.analysis.plots import plot_runs
from lth.analysis.stats import t_quantile
from lth.cli import main
from lth.errors import LTHError
from lth.runfolder.readers import load_summary
from lth.stability.measure import STABLE
from lth.stability.plots import error_figure, network_name

REPO = Path(__file__).resolve().parents[2]


def legend_texts(fig):
    (legend,) = fig.legends
    return [t.get_text() for t in legend.get_texts()]


def line(ax, label):
    found = [ln for ln in ax.get_lines() if ln.get_label() == label]
    assert len(found) == 1, [ln.get_label() for ln in ax.get_lines()]
    return found[0]


def by_gid(ax, prefix):
    return [a for a in [*ax.get_lines(), *ax.collections, *ax.patches, *ax.texts]
            if (a.get_gid() or "").startswith(prefix)]  # fmt: skip


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def set_accuracies(run: Path, values: dict[int, float]) -> None:
    """Every ticket row's test_acc (and at early stop) of replicate r becomes values[r]."""
    path = run / "summary.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    for r in rows:
        if r["branch"] == "ticket":
            r["test_acc"] = r["test_acc_at_early_stop"] = repr(values[int(r["replicate"])])
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


# ----------------------------------------------------------------------------- overlays


def test_an_overlay_goes_to_a_new_folder_and_never_touches_a_runs_plots(tmp_path, capsys):
    a = make_run(tmp_path / "runA", settings="rate = 0.3")
    b = make_run(tmp_path / "runB")
    plot_runs([a], formats=("png",), dpi=40)  # runA's own figures
    before = tree_digest(a / "plots")
    assert before
    assert main(["plot", str(a), str(b)]) == 0
    out = tmp_path / "plots_runA+runB"
    assert {p.name for p in out.iterdir()} >= {"accuracy_vs_weights.png", "early_stop.png"}
    assert str(out / "accuracy_vs_weights.png") in capsys.readouterr().out
    assert tree_digest(a / "plots") == before  # byte-identical
    assert not list((b / "plots").iterdir())
    # asked to write into a run's own plots/: refused in one line, nothing written
    assert main(["plot", str(a), str(b), "--out", str(b / "plots")]) == 2
    err = capsys.readouterr().err
    assert "never replaces a run's own figures" in err and len(err.strip().splitlines()) == 1
    assert not list((b / "plots").iterdir()) and tree_digest(a / "plots") == before
    with pytest.raises(LTHError) as exc:
        plot_runs([a, b], out_dir=a / "plots", formats=("png",))
    assert_one_line(exc, "plots_runA+runB")


def test_runs_that_differ_only_in_seed_are_one_pooled_series(tmp_path):
    runs = [
        make_run(tmp_path / f"s{i}", replicates=1, shift=0.3 * i, settings=f"seed = {i}")
        for i in range(3)
    ]
    figs = plot_runs(runs, formats=())
    ax = figs["accuracy_vs_weights"].axes[0]
    assert [t for t in legend_texts(ax.figure) if t in BRANCHES] == list(BRANCHES)  # one each
    for b in BRANCHES:
        values = [[acc_end(b, 0, lv) + 0.3 * i for i in range(3)] for lv in range(4)]
        np.testing.assert_allclose(line(ax, b).get_ydata(), [statistics.mean(v) for v in values])
        (bars,) = by_gid(ax, f"errorbar:{b}")
        tops = [seg[1, 1] - seg[0, 1] for seg in bars.get_segments()]
        np.testing.assert_allclose(tops, [2 * statistics.stdev(v) for v in values])
    assert "error bars: ±1 std over n = 3 replicates" in legend_texts(ax.figure)
    assert "3 runs pooled: seeds 0, 1, 2" in ax.figure.get_suptitle()
    # runs of two settings, two seeds each: two series, named by the setting that differs
    more = [make_run(tmp_path / f"r{i}", settings=f"rate = 0.3\nseed = {i}") for i in range(2)]
    figs = plot_runs([*runs[:2], *more], formats=())
    texts = legend_texts(figs["accuracy_vs_weights"])
    assert "rate 0.2: ticket" in texts and "rate 0.3: ticket" in texts
    assert not [t for t in texts if "seed" in t]
    # --no-pool draws each run apart
    figs = plot_runs(runs, formats=(), pool=False)
    assert "seed 2: ticket" in legend_texts(figs["early_stop"])


def test_labels_are_the_differing_values_and_can_be_given(tmp_path, capsys):
    a = make_run(tmp_path / "a", settings='criterion = "magnitude"\nrate = 0.2')
    b = make_run(tmp_path / "b", settings='criterion = "snip"\nrate = 0.3')
    texts = legend_texts(plot_runs([a, b], formats=())["accuracy_vs_weights"])
    assert texts[:2] == ["rate 0.2, magnitude: ticket", "rate 0.2, magnitude: reinit"]
    assert "rate 0.3, snip: random_prune" in texts  # settings in declaration order
    out = tmp_path / "figs"
    assert main(["plot", str(a), str(b), "--out", str(out), "--labels", "IMP,SNIP"]) == 0
    texts = legend_texts(plot_runs([a, b], formats=(), labels=["IMP", "SNIP"])["early_stop"])
    assert texts[:2] == ["IMP: ticket", "IMP: reinit"]


# ----------------------------------------------------------------------------- bands and bars


@pytest.mark.parametrize("band", ["ci95", "std", "minmax"])
def test_bands_and_bars_never_leave_0_to_100(tmp_path, band):
    run = make_run(tmp_path / "run", replicates=2)
    set_accuracies(run, {0: 99.4, 1: 100.0})  # mean 99.7: the 95% interval reaches 103.5
    half = t_quantile(0.975, 1) * statistics.stdev([99.4, 100.0]) / 2**0.5
    assert 99.7 + half > 103
    fig = plot_runs([run], formats=(), band=band)["accuracy_vs_weights"]
    for ax in fig.axes:
        assert ax.get_ylim()[1] <= 100.0
        tops = []
        for c in by_gid(ax, "band:ticket"):
            tops += list(c.get_paths()[0].vertices[:, 1])
        for c in by_gid(ax, "errorbar:ticket"):
            tops += [seg[:, 1].max() for seg in c.get_segments()]
        assert tops and max(tops) == pytest.approx(100.0) and min(tops) >= 0.0
    what = {"ci95": "band: 95% CI of the mean", "std": "error bars: ±1 std", "minmax": "band"}
    assert any(t.startswith(what[band]) and "n = 2" in t for t in legend_texts(fig))
    if band == "ci95":  # the command line's option
        assert main(["plot", str(run), "--interval", band, "--formats", "png"]) == 0
        assert (run / "plots" / "accuracy_vs_weights.png").is_file()


def test_n_is_stated_on_every_figure(tmp_path):
    one = plot_runs([make_run(tmp_path / "one", replicates=1)], formats=())
    for name in ("accuracy_vs_weights", "early_stop"):
        assert "single run (n = 1): no error bars" in legend_texts(one[name])
        assert not by_gid(one[name].axes[0], "errorbar:")  # no bars for one replicate
    assert all("single run" in ax.get_title() for ax in one["curves"].axes)
    two = plot_runs([make_run(tmp_path / "two", replicates=2)], formats=())
    assert "error bars: ±1 std over n = 2 replicates" in legend_texts(two["early_stop"])
    assert all("n = 2 replicates" in ax.get_title() for ax in two["curves"].axes)


def test_the_dense_network_is_a_line_with_its_band(tmp_path):
    run = make_run(tmp_path / "run", replicates=3)
    fig = plot_runs([run], formats=())["accuracy_vs_weights"]
    dense = [acc_end("ticket", r, 0) for r in range(3)]
    early = [es_acc("ticket", r, 0) for r in range(3)]
    label = "dense network (level 0), mean ± std over n = 3"
    assert label in legend_texts(fig)
    for ax, values in zip(fig.axes, (dense, early)):
        (ln,) = [a for a in by_gid(ax, "dense:") if a in ax.get_lines()]
        assert ln.get_ydata()[0] == pytest.approx(statistics.mean(values))
        (span,) = by_gid(ax, "dense_band:")
        if hasattr(span, "get_height"):  # a Rectangle (matplotlib >= 3.9)
            ys = [span.get_y(), span.get_y() + span.get_height()]
        else:
            ys = span.get_xy()[:, 1]
        m, s = statistics.mean(values), statistics.stdev(values)
        assert min(ys) == pytest.approx(m - s) and max(ys) == pytest.approx(m + s)
        assert by_gid(ax, "matching:ticket")  # the stars on both panels


def test_ticks_have_one_precision(tmp_path):
    assert tick_decimals([100, 80, 64, 51.2, 7.0]) == 1
    assert tick_decimals([100, 80, 60, 40]) == 0
    assert [fmt_fixed(v, 1) for v in (100.0, 10.8, 7.0, 0.47)] == ["100", "10.8", "7.0", "0.47"]
    run = make_run(tmp_path / "deep", levels=16, branches=("ticket",), iterations=200)
    ax = plot_runs([run], formats=())["accuracy_vs_weights"].axes[0]
    ax.figure.canvas.draw()
    labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    mid = [t for t in labels if t != "100" and float(t) >= 1]
    assert mid and all(len(t.split(".")[1]) == 1 for t in mid), labels


@pytest.mark.parametrize("panels, titles", [
    ("end", ["At the end of training"]),
    ("early", ["At the early-stop iteration (min. val. loss)"]),
    ("both", ["At the end of training", "At the early-stop iteration (min. val. loss)"]),
])  # fmt: skip
def test_panels(tmp_path, panels, titles):
    run = make_run(tmp_path / "run", replicates=2)
    fig = plot_runs([run], formats=(), panels=panels)["accuracy_vs_weights"]
    assert [ax.get_title() for ax in fig.axes] == titles
    with pytest.raises(LTHError, match="unknown panels 'left'"):
        plot_runs([run], formats=(), panels="left")
    out = tmp_path / f"cli-{panels}"
    assert main(["plot", str(run), "--out", str(out), "--panels", panels]) == 0


# ----------------------------------------------------------------------------- curves, budget


def test_curves_draw_every_branch_and_say_what_runs_off(tmp_path):
    run = make_run(tmp_path / "run", replicates=2)
    fig = plot_runs([run], formats=())["curves"]
    assert len(fig.axes) == 2 * len(BRANCHES)
    for bi, b in enumerate(BRANCHES):
        ax_acc, ax_loss = fig.axes[2 * bi : 2 * bi + 2]
        assert ax_acc.get_title().startswith(f"{b}: validation accuracy")
        ln = ax_acc.get_lines()[0]
        want = [statistics.mean(val_acc(b, r, 0, it) for r in range(2)) for it in ln.get_xdata()]
        np.testing.assert_allclose(ln.get_ydata(), want)
        lo = ax_acc.get_ylim()[0]
        first = min(ln.get_ydata())
        assert first < lo  # the first evaluation runs off the zoomed axis...
        (note,) = by_gid(ax_acc, "clipped")  # ...and the panel says so
        assert note.get_text() == f"↓ axis cut at {lo:.3g}: earlier values down to {first:.3g}"
        assert by_gid(ax_loss, "clipped")[0].get_text().startswith("↑ axis cut at")


def test_early_stop_marks_the_budget_and_the_points_that_reach_it(tmp_path):
    run = make_run(tmp_path / "run", replicates=2, settings="iterations = 500")
    ax = plot_runs([run], formats=())["early_stop"].axes[0]
    budget = line(ax, "iteration budget (training length)")
    assert list(budget.get_ydata()) == [500, 500] and ax.get_ylim()[1] >= 500
    for b in BRANCHES:
        hit = [lv for lv in range(4) if any(es_iter(b, r, lv) >= 500 for r in range(2))]
        (ringed,) = by_gid(ax, f"budget_hit:{b}")
        wr = weights_remaining(3)
        np.testing.assert_allclose(ringed.get_xdata(), [wr[lv] for lv in hit])
    assert "ringed: a replicate reached the budget (no early stop)" in legend_texts(ax.figure)


# ----------------------------------------------------------------------------- stability, titles


def test_stability_error_figure_keeps_the_threshold_in_view():
    rows = [
        {"k": 0, "pair": 0, "alpha": a, "test_error": e, "train_error": e - 2.0}
        for a, e in zip((0.0, 0.25, 0.5, 0.75, 1.0), (2.37, 2.45, 2.66, 2.5, 2.33))
    ]
    fig = error_figure(rows, "t")
    for ax, split, ends in zip(fig.axes, ("test", "train"), (2.35, 0.35)):
        (stable,) = by_gid(ax, f"{split}:stable:k=0")
        assert stable.get_ydata()[0] == pytest.approx(ends + STABLE)
        lo, hi = ax.get_ylim()
        assert lo <= ends and hi >= ends + STABLE  # 0.3 points of noise look like noise
    assert network_name("ticket", 0, 100.0) == "dense network (level 0)"
    assert "ticket" not in network_name("ticket", 0, 100.0)
    assert network_name("ticket", 7, 21.1) == "IMP ticket, level 7 (21.1% of weights)"
    assert network_name("reinit", 7, 21.1).startswith("reinit control")


def test_titles_use_the_registries_display_names(tmp_path, tiny_run):
    assert study_title("lenet_300_100", "mnist") == "LeNet-300-100 on MNIST"
    assert study_title("conv6", "fashion_mnist") == "Conv-6 on Fashion-MNIST"
    assert study_title("my_pkg.nets:tiny", "mnist") == "my_pkg.nets:tiny on MNIST"
    figs = plot_runs([tiny_run], formats=())  # a real run: read only
    for fig in figs.values():
        assert fig.get_suptitle().endswith("\nLeNet-300-100 on MNIST")
    # every branch of the real run has its curves; the dense line is the ticket's level 0
    assert len(figs["curves"].axes) == 6
    dense = [r.test_acc for r in load_summary(tiny_run) if (r.branch, r.level) == ("ticket", 0)]
    ax = figs["accuracy_vs_weights"].axes[0]
    assert line(ax, "dense network (level 0)").get_ydata()[0] == pytest.approx(dense[0])


def test_published_results_plot_from_their_csv_files(tmp_path):
    """A folder holding only a published study's config and summary plots what those allow."""
    src = REPO / "results" / "lenet_300_100_mnist"
    run = tmp_path / "mnist"
    run.mkdir()
    for name in ("config.toml", "summary.csv"):
        shutil.copy(src / name, run / name)
    figs = plot_runs([run], out_dir=tmp_path / "figs", formats=("png",), dpi=40)
    assert set(figs) == {"accuracy_vs_weights", "early_stop"}  # no metrics.csv, no layers.csv
    fig = figs["accuracy_vs_weights"]
    assert "error bars: ±1 std over n = 3 replicates" in legend_texts(fig)
    assert all(ax.get_ylim()[1] <= 100 for ax in fig.axes)
    assert fig.get_suptitle().endswith("LeNet-300-100 on MNIST")
    assert "iteration budget (training length)" in legend_texts(figs["early_stop"])


def test_pooled_runs_pool_their_mask_analysis_too(tmp_path):
    from helpers import make_tensor_run
    from lth.analysis.mask_analysis import ensure_analysis

    runs = []
    for i in range(2):
        run = make_tensor_run(tmp_path / f"s{i}", replicates=1)
        (run / "config.toml").write_text((run / "config.toml").read_text() + f"seed = {i}\n")
        runs.append(run)
    analyses = [ensure_analysis(r) for r in runs]
    pooled = plot_runs(runs, formats=(), analyses=analyses)["mask_analysis"]
    alone = plot_runs(runs[:1], formats=(), analyses=analyses[:1])["mask_analysis"]
    # the two runs hold the same tensors: the pooled means are the single run's values
    for label in ("ticket vs. random_prune", "random_prune vs. previous level"):
        np.testing.assert_allclose(
            line(pooled.axes[0], label).get_ydata(), line(alone.axes[0], label).get_ydata()
        )
    assert not [t for t in legend_texts(pooled) if "seed" in t]


def test_titles_name_the_criterion_and_initialisation_when_not_the_default(tmp_path):
    """A run with another criterion and the model's own initialisation says so under every
    figure's title (issue 24), as the report's header does; the defaults are not named."""
    other = make_run(tmp_path / "other", settings='criterion = "mycrit:movement"\ninit = "model"')
    for fig in plot_runs([other], formats=()).values():
        assert fig.get_suptitle().endswith("; criterion mycrit:movement, init model")
    plain = make_run(tmp_path / "plain")
    for fig in plot_runs([plain], formats=()).values():
        assert "criterion" not in fig.get_suptitle() and "init" not in fig.get_suptitle()
