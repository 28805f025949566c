"""Which figures a finished run draws: the mask figures only where a level was pruned."""

from __future__ import annotations

import csv

from lth.study.runner import pruned


def test_mask_figures_are_drawn_only_for_a_pruned_level(tiny_run):
    assert not pruned(None)
    assert not pruned(([{"level": 0}, {"level": "0"}], []))
    assert pruned(([{"level": 0}, {"level": 1}], []))
    with open(tiny_run / "analysis.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert pruned((rows, [])) and (tiny_run / "plots" / "mask_analysis.png").is_file()
    assert (tiny_run / "plots" / "weight_histograms.png").is_file()
