"""Per-level rates: ``rate_schedule`` gives level L's rate for the layers other than the output
and conv layers (the ranked group in global pruning); the output and conv layers keep their
fixed rates. Recorded in config.toml, recomputed by ``lth verify``, refused in one line when
malformed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from conftest import TEST_DATA, assert_one_line, real_data
from helpers import mnist_slice, quick, reseal
from lth.cli import main
from lth.config import ExperimentConfig
from lth.configfile import read_run_config
from lth.core.fileio import load_tensors
from lth.errors import LTHError
from lth.pruning.masks import ones_mask
from lth.runfolder.recompute import removals
from lth.study.experiment import Experiment

SIZES = {"fc1.weight": 235_200, "fc2.weight": 30_000, "fc3.weight": 1000}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1000, 200)


def chain(size: int, rates) -> list[int]:
    """Weights kept after each level removing round(rate × survivors)."""
    kept = [size]
    for r in rates:
        kept.append(kept[-1] - round(r * kept[-1]))
    return kept


@pytest.mark.parametrize(
    "values, needles",
    [
        (
            {"levels": 3, "rate_schedule": (0.2, 0.5)},
            ["2 rates for 3 levels", "one rate per level"],
        ),
        ({"levels": 2, "rate_schedule": (0.2, 1.0)}, ["1.0", "[0, 1)"]),
        ({"levels": 2, "rate_schedule": (-0.1, 0.2)}, ["-0.1", "[0, 1)"]),
        ({"levels": 2, "rate_schedule": (0.2, 0.3), "target": 0.1}, ["target", "one of them"]),
    ],
)
def test_bad_schedules_are_one_line_errors(values, needles):
    with pytest.raises(LTHError) as e:
        ExperimentConfig(**values)
    assert_one_line(e, "rate_schedule", *needles)


def test_a_bad_schedule_on_the_command_line_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", "--levels", "2", "--rate-schedule", "0.2,1.5", "--out", str(out)])
    assert code == 2 and not out.exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "[0, 1)" in err and "1.5" in err
    assert main(["run", "--levels", "2", "--rate-schedule", "0.2,x", "--out", str(out)]) == 2


def test_layerwise_levels_follow_the_schedule_and_the_output_rate_stays(small):
    schedule = (0.2, 0.5, 0.0)
    exp = Experiment(quick(levels=3, rate_schedule=schedule, controls=()), small)
    theta0 = exp.theta0(0)
    masks = ones_mask(exp.template)
    for level in (1, 2, 3):
        masks = exp.prune(theta0, masks, level, 0, theta0)
        for name, size in SIZES.items():
            rates = (0.1,) * 3 if name == "fc3.weight" else schedule
            assert int(masks[name].sum()) == chain(size, rates)[level], (level, name)


def test_global_pruning_ranks_the_group_at_the_levels_rate(small):
    schedule = (0.5, 0.3)
    exp = Experiment(quick(levels=2, rate_schedule=schedule, pruning="global"), small)
    theta0 = exp.theta0(0)
    masks = ones_mask(exp.template)
    for level in (1, 2):
        masks = exp.prune(theta0, masks, level, 0, theta0)
        hidden = int(masks["fc1.weight"].sum() + masks["fc2.weight"].sum())
        assert hidden == chain(265_200, schedule)[level]
        assert int(masks["fc3.weight"].sum()) == chain(1000, (0.1, 0.1))[level]


def test_one_shot_criteria_reach_the_scheduled_density(small):
    schedule = (0.6, 0.5)
    exp = Experiment(quick(levels=2, rate_schedule=schedule, criterion="magnitude_init"), small)
    theta0 = exp.theta0(0)
    got = exp.prune(theta0, ones_mask(exp.template), 2, 0, theta0)
    expected = sum(chain(SIZES[n], schedule)[2] for n in ("fc1.weight", "fc2.weight"))
    expected += chain(1000, (0.1, 0.1))[2]
    assert sum(int(m.sum()) for m in got.values()) == expected


def test_a_scheduled_run_records_verifies_and_a_changed_schedule_fails(tmp_path, monkeypatch):
    real_data("mnist")
    monkeypatch.setattr("lth.study.runner.finish_run", lambda out, warn: None)  # no figures
    out = tmp_path / "run"
    args = ["run", "--levels", "2", "--rate-schedule", "0.5,0.25", "--iterations", "20",
            "--eval-every", "10", "--val-size", "300", "--controls", "none", "--quiet",
            "--data-dir", str(TEST_DATA), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    config = read_run_config(out)
    assert config.rate_schedule == (0.5, 0.25)
    assert "rate_schedule = [0.5, 0.25]" in (out / "config.toml").read_text()
    mask = load_tensors(out / "ticket" / "0" / "level_02" / "mask.safetensors")
    assert int(mask["fc1.weight"].sum()) == chain(235_200, (0.5, 0.25))[2]
    prev = load_tensors(out / "ticket" / "0" / "level_01" / "mask.safetensors")
    counted = removals(config, prev, 2, "fc3.weight", set())
    assert counted[("fc1.weight",)] == round(0.25 * int(prev["fc1.weight"].sum()))
    assert main(["verify", str(out)]) == 0
    text = (out / "config.toml").read_text().replace("[0.5, 0.25]", "[0.5, 0.2]")
    (out / "config.toml").write_text(text)
    reseal(out)
    assert main(["verify", str(out)]) == 1


def test_without_a_schedule_every_level_prunes_at_rate(small):
    base = quick(levels=2, controls=())
    same = dataclasses.replace(base, rate_schedule=(0.2, 0.2))
    a, b = Experiment(base, small), Experiment(same, small)
    theta0 = a.theta0(0)
    ma = mb = ones_mask(a.template)
    for level in (1, 2):
        ma = a.prune(theta0, ma, level, 0, theta0)
        mb = b.prune(theta0, mb, level, 0, theta0)
        assert all(torch.equal(ma[n], mb[n]) for n in ma)
