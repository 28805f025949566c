"""``lth verify``: real (tiny, real-MNIST) run folders pass; each kind of tampering is caught by
its own check; ``lth run`` audits every level as it finishes."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
import torch

from conftest import LATE_REWOUND_RUN, TINY_RUN, copy_run
from helpers import edit, first, level_file, mnist_slice, quick, reseal
from lth.cli import main
from lth.config import ExperimentConfig
from lth.core.fileio import load_tensors
from lth.errors import LTHError
from lth.runfolder.verify import CHECKS, VerifyError, layer_kinds, verify_level, verify_run
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment

TINY = ["--levels", "2", "--iterations", "200", "--eval-every", "100", "--val-size", "1000"]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def plain(tiny_run):
    """A real tiny run: 2 levels x 200 iterations, rewinding to θ0, both controls (conftest:
    made once per session)."""
    assert TINY == TINY_RUN
    return tiny_run


@pytest.fixture(scope="module")
def late_global(late_rewound_run):
    """Late rewinding to iteration 50 with global pruning, both controls (conftest: made once
    per session)."""
    assert [*TINY, "--rewind-iteration", "50", "--pruning", "global"] == LATE_REWOUND_RUN
    return late_rewound_run


@pytest.fixture
def copy(plain, tmp_path):
    """A copy of the plain run to tamper with."""
    return copy_run(plain, tmp_path)


def set_entry(run: Path, branch: str, level: int, which: str, layer: str, i: int, value) -> None:
    """Set entry ``i`` of ``layer`` in a level file to ``value`` (or ``value(old)``)."""

    def change(t):
        flat = t[layer].view(-1)
        flat[i] = value(flat[i]) if callable(value) else value

    edit(run, branch, level, which, change)


def caught(run: Path, seal: bool = True) -> VerifyError:
    """The violation verify_run finds (after resealing the manifest, unless ``seal`` is off)."""
    if seal:
        reseal(run)
    with pytest.raises(VerifyError) as err:
        verify_run(run)
    assert "\n" not in str(err.value)
    return err.value


# ---------------------------------------------------------------------- untampered runs


def test_lth_verify_passes_on_real_runs_with_one_line_per_check(plain, late_global, capsys):
    for run in (plain, late_global):
        assert main(["verify", str(run)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split(":")[0] for line in lines] == [f"ok {c}" for c in CHECKS]


def test_late_rewound_run_trains_tickets_from_k_and_the_reinit_control_from_0(late_global):
    from lth.runfolder.readers import load_metrics, load_summary

    rows = load_metrics(late_global, levels=[1])
    start = {r.branch: min(x.iteration for x in rows if x.branch == r.branch) for r in rows}
    assert start == {"ticket": 50, "random_prune": 50, "reinit": 0}
    for row in load_summary(late_global):
        if row.level:
            assert row.early_stop_iteration in (100.0, 200.0)


# ------------------------------------------------------------------------------ tampering


def test_a_nonzero_pruned_weight_is_caught(copy):
    pruned = first(copy, "ticket", 1, "fc1.weight", kept=False)
    set_entry(copy, "ticket", 1, "final", "fc1.weight", pruned, 1e-3)
    err = caught(copy)
    assert err.check == "pruned-zero"
    assert err.where == "ticket replicate 0 level 1 layer fc1.weight"
    assert "0.001" in err.detail


def test_a_revived_weight_is_caught(copy):
    gone = first(copy, "ticket", 1, "fc2.weight", kept=False)
    set_entry(copy, "ticket", 2, "mask", "fc2.weight", gone, True)
    err = caught(copy)
    assert (err.check, err.where) == ("mask-chain", "ticket replicate 0 level 2 layer fc2.weight")
    assert f"flat index {gone}" in err.detail


def test_a_rewound_weight_off_by_one_ulp_is_caught(copy):
    kept = first(copy, "ticket", 2, "fc2.weight", kept=True)
    up = torch.tensor(float("inf"))
    set_entry(copy, "ticket", 2, "init", "fc2.weight", kept, lambda w: torch.nextafter(w, up))
    err = caught(copy)
    assert (err.check, err.where) == ("rewind", "ticket replicate 0 level 2 layer fc2.weight")
    assert "1 of" in err.detail and "θ0" in err.detail


def test_a_control_with_the_wrong_count_is_caught(copy):
    kept = first(copy, "random_prune", 1, "fc1.weight", kept=True)
    for which, value in (("mask", False), ("init", 0.0), ("final", 0.0)):  # pruned cleanly
        set_entry(copy, "random_prune", 1, which, "fc1.weight", kept, value)
    err = caught(copy)
    assert err.check == "random-prune-control"
    assert err.where == "random_prune replicate 0 level 1 layer fc1.weight"
    assert "keeps" in err.detail


def test_a_reinit_control_holding_theta0_is_caught(copy):
    theta0 = load_tensors(level_file(copy, "ticket", 0, "init"))
    mask = load_tensors(level_file(copy, "reinit", 1, "mask"))

    def to_theta0(t):
        for name, m in mask.items():
            t[name] = torch.where(m.bool(), theta0[name], t[name])

    edit(copy, "reinit", 1, "init", to_theta0)
    assert caught(copy).check == "reinit-control"


def test_a_summary_row_that_disagrees_is_caught(copy):
    path = copy / "summary.csv"
    rows = list(csv.DictReader(io.StringIO(path.read_text())))
    row = next(r for r in rows if (r["branch"], r["level"]) == ("reinit", "1"))
    row["test_acc"] = str(float(row["test_acc"]) + 0.01)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue())
    err = caught(copy)
    assert (err.check, err.where) == ("summary", "reinit replicate 0 level 1")
    assert "test_acc" in err.detail


def test_the_manifest_alone_catches_a_swapped_file(copy):
    a = level_file(copy, "ticket", 1, "final")
    b = level_file(copy, "reinit", 1, "final")
    data = a.read_bytes()
    a.write_bytes(b.read_bytes())
    b.write_bytes(data)
    err = caught(copy, seal=False)
    assert err.check == "manifest" and "final.safetensors" in err.detail


def test_lth_verify_exits_1_naming_the_check_and_2_for_bad_input(copy, tmp_path, capsys):
    edit(copy, "ticket", 2, "init", lambda t: t["fc3.bias"].add_(1.0))
    reseal(copy)
    assert main(["verify", str(copy)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "check rewind failed: ticket replicate 0 level 2 layer fc3.bias" in err
    assert main(["verify", str(tmp_path / "nothing")]) == 2
    assert main(["verify", str(tmp_path)]) == 2
    assert "not an lth run folder" in capsys.readouterr().err


# ------------------------------------------------------------------ lth run audits levels


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1500, 300)


def small_config(**overrides) -> ExperimentConfig:
    return quick(**({"levels": 2, "iterations": 40} | overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"reset": "finetune", "milestones": (20,)},
        {"reset": "lr_rewind", "exclude": ("fc3.weight",)},
        {"reset": "reinit", "target": 0.5},
        {"replicates": 2, "rewind_iteration": 10, "pruning": "global", "target": 0.4},
        {"val_size": 0},
    ],
)
def test_runs_of_every_reset_pass_the_audit(small, tmp_path, overrides, monkeypatch):
    monkeypatch.setattr("lth.study.runner.finish_run", lambda out, warn: None)  # no figures needed
    config = small_config(**overrides)
    data = mnist_slice(1500, 300, val_size=0) if config.val_size == 0 else small
    run_experiment(config, data, out=tmp_path / "run", quiet=True, device="cpu")
    assert len(verify_run(tmp_path / "run")) == len(CHECKS)


def test_lth_run_fails_loudly_on_a_broken_level(small, tmp_path, monkeypatch):
    original = Experiment.prune

    def prune_one_too_many(self, weights, masks, level, *args):
        new = original(self, weights, masks, level, *args)
        m = new["fc2.weight"].clone()
        m.view(-1)[int(m.reshape(-1).nonzero()[0])] = False
        return new | {"fc2.weight": m}

    monkeypatch.setattr(Experiment, "prune", prune_one_too_many)
    with pytest.raises(LTHError, match="check pruning-count failed: ticket replicate 0 level 1"):
        run_experiment(small_config(), small, out=tmp_path / "run", quiet=True, device="cpu")


def test_verify_level_checks_one_level_of_a_run(copy):
    edit(copy, "ticket", 2, "init", lambda t: t["fc3.bias"].add_(1.0))
    reseal(copy)
    verify_level(copy, 1)
    with pytest.raises(VerifyError, match="rewind"):
        verify_level(copy, 2)


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5", "conv2", "conv6", "resnet20", "vgg16"])
def test_layer_kinds_find_the_output_and_conv_layers_of_every_registry_model(name):
    from torch import nn

    from lth.core.models import build_model, output_layer

    shape = (1, 28, 28) if name.startswith("lenet") else (3, 32, 32)
    model = build_model(name, shape, 10)
    weights = model.state_dict()
    masks = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters()}
    conv = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    assert layer_kinds(masks, weights) == (output_layer(model), conv)
