"""Uncertainty over replicates: t quantiles against closed forms, tables and integration;
intervals that cover at their level; summary_stats.csv, lth report and the plot's marks."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest

from helpers import REP_OFFSET, acc_end, make_run, weights_remaining
from lth.analysis.plots import plot_runs
from lth.analysis.report import report
from lth.analysis.stats import matches, mean_interval, t_cdf, t_quantile, verdict, welch_interval
from lth.errors import LTHError
from lth.runfolder.csvio import read_table
from lth.runfolder.tables import SUMMARY_STATS


@pytest.mark.parametrize(
    "df, expected",
    [
        (1, math.tan(0.475 * math.pi)),  # Cauchy: tan(π(p - 1/2))
        (2, 0.95 / math.sqrt(2 * 0.975 * 0.025)),  # (2p - 1) / sqrt(2p(1 - p))
        (5, 2.570582),  # printed tables (4-6 significant digits)
        (10, 2.228139),
        (30, 2.042272),
        (math.inf, 1.959964),
    ],
)
def test_t_quantile_matches_closed_forms_and_tables(df, expected):
    tol = 1e-9 if df in (1, 2) else 1e-6
    assert t_quantile(0.975, df) == pytest.approx(expected, abs=tol)
    assert t_quantile(0.025, df) == pytest.approx(-expected, abs=tol)


def test_t_cdf_of_a_fractional_df_is_the_integral_of_the_density():
    for df in (2.5, 3.7, 17.3):
        c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
        t = np.linspace(0.0, 1.9, 40_001)
        f = c * (1 + t * t / df) ** (-(df + 1) / 2)
        area = np.sum((f[:-1] + f[1:]) / 2 * np.diff(t))  # trapezoid, error ~1e-10
        assert t_cdf(1.9, df) == pytest.approx(0.5 + area, abs=1e-8)
        q = t_quantile(0.975, df)
        assert t_cdf(q, df) == pytest.approx(0.975, abs=1e-12)
    assert t_quantile(0.975, 2) > t_quantile(0.975, 2.5) > t_quantile(0.975, 3)


def test_bad_arguments_are_one_line_errors():
    for call in (lambda: t_quantile(1.0, 3), lambda: t_quantile(0.5, 0), lambda: t_cdf(1, -1)):
        with pytest.raises(LTHError):
            call()


def test_the_intervals_cover_the_truth_at_their_level():
    """Monte Carlo: 95% intervals of a mean (n = 3) and of a difference of means with unequal
    spreads (Welch, n = 3 and 5) hold the true value in about 95% of samples."""
    rng = np.random.default_rng(0)
    trials = 1000  # the coverage's standard error is 0.007
    hit_mean = hit_diff = 0
    for _ in range(trials):
        a = rng.normal(1.0, 1.0, 3)
        b = rng.normal(0.0, 3.0, 5)
        ci = mean_interval(list(a))
        hit_mean += ci.low <= 1.0 <= ci.high
        d = welch_interval(list(a), list(b))
        hit_diff += d.low <= 1.0 <= d.high
    assert abs(hit_mean / trials - 0.95) < 0.025
    assert abs(hit_diff / trials - 0.95) < 0.025


def test_welch_by_hand():
    """a = [1, 3] (var 2), b = [4, 6, 8] (var 4): se² = 2/2 + 4/3, ν = se⁴ / (1/1 + (4/3)²/2)."""
    d = welch_interval([1.0, 3.0], [4.0, 6.0, 8.0])
    se2 = 1 + 4 / 3
    df = se2**2 / (1 + (4 / 3) ** 2 / 2)
    assert d.estimate == -4.0 and d.df == pytest.approx(df) and df == pytest.approx(2.882352941)
    half = t_quantile(0.975, df) * math.sqrt(se2)
    assert (d.low, d.high) == pytest.approx((-4 - half, -4 + half))
    assert verdict(d) == "worse" if d.high < 0 else "equal"
    assert verdict(welch_interval([5.0, 5.0], [5.0, 5.0])) == "equal"
    assert verdict(welch_interval([6.0, 6.1], [5.0, 5.1])) == "better"
    assert verdict(welch_interval([6.0], [5.0, 5.1])) == ""
    assert matches(97.7, 98.0, 0.3) and not matches(97.69, 98.0, 0.3)
    assert matches(98.0, 98.0, math.nan) is None


def test_summary_stats_and_report_give_intervals_matching_and_verdicts(tmp_path):
    run = make_run(tmp_path / "run", replicates=3, levels=4)
    (run / SUMMARY_STATS.file).write_text(report(run, "csv"))
    rows = {
        (r["branch"], r["level"]): r for r in read_table(run / SUMMARY_STATS.file, SUMMARY_STATS)
    }
    q = 4.302653  # t(0.975, 2)
    for level in range(5):
        values = [acc_end("ticket", rep, level) for rep in range(3)]
        mean, sd = statistics.mean(values), statistics.stdev(values)
        row = rows["ticket", level]
        assert row["test_acc_ci_low"] == pytest.approx(mean - q * sd / math.sqrt(3), abs=1e-5)
        assert row["test_acc_ci_high"] == pytest.approx(mean + q * sd / math.sqrt(3), abs=1e-5)
        assert row["matching"] == 1
        control = rows["reinit", level]
        assert control["ticket_minus"] == pytest.approx(0.1 + 0.6 * level)
        # the replicates' offsets are shared, so the spreads are equal: ν = 2(n - 1) = 4
        half = 2.776445 * sd * math.sqrt(2 / 3)
        assert control["ticket_minus_ci_low"] == pytest.approx(0.1 + 0.6 * level - half, abs=1e-5)
        assert control["ticket_is"] == ("equal" if level == 0 else "better")
    # random_prune at level 0: 97.65%, below the dense 97.95% - 0.29
    assert [rows["random_prune", lv]["matching"] for lv in range(5)] == [0] * 5
    assert math.isnan(rows["ticket", 0]["ticket_minus"]) and rows["ticket", 0]["ticket_is"] == ""
    assert REP_OFFSET[:3] == (0.0, 0.37, -0.21)

    text = report(run)
    assert (
        "ticket down to level 4 (41.1%); reinit down to level 0 (100.0%); random_prune at no level"
        in text
    )
    assert "Ticket vs reinit (95% Welch interval" in text
    assert (
        "better at levels 1-4 (80.0%-41.1% of weights); equal at level 0 (100.0% of weights); "
        "worse at no level." in text
    )
    assert "+0.70 [+0.03, +1.37] better" in text  # ticket − reinit at level 1
    one = report(make_run(tmp_path / "one", replicates=1, levels=2))
    assert "Ticket vs reinit: too few replicates for a 95% interval (need n >= 2)." in one
    assert "Matching: needs two or more replicates of the dense network" in one


def test_the_accuracy_plot_draws_confidence_bands_and_marks_matching(tmp_path):
    run = make_run(tmp_path / "run", replicates=3, levels=4)
    figures = plot_runs(run, out_dir=tmp_path / "plots", formats=(), band="ci")
    ax = figures["accuracy_vs_weights"].axes[0]
    gids = {a.get_gid(): a for a in [*ax.lines, *ax.collections]}
    for branch in ("ticket", "reinit", "random_prune"):
        assert f"band:{branch}" in gids
    star = gids["matching:ticket"]
    assert list(star.get_xdata()) == pytest.approx([weights_remaining(4)[4]])
    assert list(gids["matching:reinit"].get_xdata()) == pytest.approx([100.0])
    assert "matching:random_prune" not in gids
    legend = [t.get_text() for t in figures["accuracy_vs_weights"].legends[0].get_texts()]
    assert "band: 95% CI of the mean over n = 3 replicates" in legend
    assert any(t.startswith("sparsest matching level") for t in legend)
