"""lth report --paper: the paper's data file, the nearest-level matching and the verdicts,
checked against a direct computation on a run folder made from known numbers."""

from __future__ import annotations

import math
import statistics

import pytest

from helpers import es_acc, es_iter, make_run, weights_remaining
from lth.analysis.papers import TOO_FAR, load_paper, paper_names
from lth.analysis.report import report
from lth.cli import main
from lth.config import ExperimentConfig
from lth.errors import LTHError
from lth.presets import preset_config
from lth.runfolder.tables import SUMMARY

LEVELS, REPLICATES = 16, 3


def test_the_data_file_names_a_source_for_every_point_and_matches_the_paper_preset():
    assert "frankle2019" in paper_names()
    paper = load_paper("frankle2019")
    assert paper.points and all(p.source.strip() for p in paper.points)
    assert all(p.quantity in SUMMARY.names for p in paper.points)
    preset = preset_config("lenet_300_100_paper").to_dict()
    assert set(paper.protocol) <= set(ExperimentConfig().to_dict())
    assert {k: preset[k] for k in paper.protocol} == paper.protocol
    assert (preset["model"], preset["dataset"]) == (paper.model, paper.dataset)


def expected(point, summary_value):
    """The verdict of one paper point, recomputed from make_run's known numbers."""
    wr = weights_remaining(LEVELS)
    level = min(range(LEVELS + 1), key=lambda lv: abs(math.log(wr[lv] / point.weights_remaining)))
    if abs(math.log(wr[level] / point.weights_remaining)) > math.log(TOO_FAR):
        return level, "not compared"
    values = [summary_value(point.branch, r, level) for r in range(REPLICATES)]
    mean, std = statistics.mean(values), statistics.stdev(values)
    if not math.isnan(point.mean):
        return level, "agrees" if abs(mean - point.mean) <= math.hypot(
            std, point.std
        ) else "differs"
    dense = [summary_value("ticket", r, 0) for r in range(REPLICATES)]
    if point.at_least_dense:
        gap = statistics.mean(dense) - mean
        bar = math.hypot(std, statistics.stdev(dense))
        return (
            level,
            "holds" if gap <= 0 else "holds within error bars" if gap <= bar else "does not hold",
        )
    return level, f"{mean / statistics.mean(dense):.2f}"


@pytest.mark.parametrize("shift", [0.0, 0.6, -0.8])
def test_each_point_is_matched_to_the_nearest_level_and_judged_by_the_error_bars(tmp_path, shift):
    run = tmp_path / "run"
    make_run(run, replicates=REPLICATES, levels=LEVELS, shift=shift)
    text = report(run, "md", paper="frankle2019")
    table = text.split("## Against the paper (frankle2019)")[1]
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| ")][1:]
    paper = load_paper("frankle2019")
    assert len(rows) == len(paper.points)
    verdicts = set()
    for point, row in zip(paper.points, rows):
        if point.quantity == "early_stop_iteration":
            level, verdict = expected(point, es_iter)
        else:
            level, verdict = expected(point, lambda b, r, lv: es_acc(b, r, lv) + shift)
        assert int(row[4]) == level, point.what
        if point.ratio_to_dense == point.ratio_to_dense:  # a ratio: reported, not judged
            assert row[7] == "ratio" and row[8].startswith(verdict), point.what
        else:
            assert row[7] == verdict, point.what
        verdicts.add(row[7])
    assert len(verdicts) >= 3  # the known numbers exercise several verdicts


def test_a_run_too_shallow_for_a_point_says_so(tmp_path):
    make_run(tmp_path / "run", replicates=2, levels=3)  # 100% .. 51%: nothing near 10.7%
    text = report(tmp_path / "run", "table", paper="frankle2019")
    assert text.count("not compared") == 4
    assert "| agrees |" in report(tmp_path / "run", "md", paper="frankle2019")  # the dense point


def test_protocol_differences_are_named(tmp_path):
    make_run(tmp_path / "run", levels=2, settings="iterations = 20000\nlr = 0.001")
    text = report(tmp_path / "run", "md", paper="frankle2019")
    assert "iterations 20000 (paper: 50000)" in text and "lr 0.001 (paper: 0.0012)" in text


def test_bad_input_is_one_line(tmp_path, capsys):
    make_run(tmp_path / "a", levels=2)
    make_run(tmp_path / "b", levels=2, settings="rate = 0.3")
    for args in (
        ["report", str(tmp_path / "a"), "--paper", "smith2030"],
        ["report", str(tmp_path / "a"), "--paper", "frankle2019", "--format", "csv"],
        ["report", str(tmp_path / "a"), str(tmp_path / "b"), "--paper", "frankle2019"],
    ):
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.startswith("lth: error: ") and err.count("\n") == 1, err
    with pytest.raises(LTHError, match="choose one of frankle2019"):
        load_paper("smith2030")


def test_latex_has_the_paper_table(tmp_path):
    make_run(tmp_path / "run", replicates=2, levels=LEVELS)
    text = report(tmp_path / "run", "latex", paper="frankle2019")
    assert text.count("\\begin{tabular}") >= 2 and "Against the paper" in text
