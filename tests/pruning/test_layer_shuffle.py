"""The layer-wise shuffle ablation of Frankle et al. 2021 ("Pruning Neural Networks at
Initialization: Why Are We Missing the Mark?"): the ticket's mask permuted within each layer,
so each layer keeps its density but not its choice of weights, trained from the ticket's start.
``lth verify`` audits it and catches a shuffle that changed a layer's density."""

from __future__ import annotations

import pytest
import torch

from helpers import edit, first, mnist_slice, quick, reseal
from lth.pruning.controls import CONTROLS
from lth.runfolder.verify import VerifyError, verify_run
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1000, 200)


def check_shuffle(results: dict, level: int, start: dict) -> None:
    """Per-layer densities equal the ticket's, the mask differs, the start is ``start``."""
    ticket, shuffled = results["ticket", level], results["layer_shuffle", level]
    for name, m in shuffled.masks.items():
        assert int(m.sum()) == int(ticket.masks[name].sum()), name
        assert not torch.equal(m, ticket.masks[name]), name
        assert torch.equal(shuffled.init[name], start[name] * m), name
    for name, t in shuffled.init.items():
        if name not in shuffled.masks:
            assert torch.equal(t, ticket.init[name]), name


def test_a_one_shot_snip_mask_shuffled_within_each_layer(small):
    exp = Experiment(quick(levels=2, iterations=20, criterion="snip",
                           controls=("layer_shuffle",)), small)  # fmt: skip
    results = {(r.branch, r.level): r for r in exp.run()}
    assert ("layer_shuffle", 0) not in results  # level 0 trains the dense network once
    theta0 = exp.theta0(0)
    for level in (1, 2):
        check_shuffle(results, level, theta0)
    # snip chooses its own per-layer densities, and the shuffle keeps them
    fc3 = results["layer_shuffle", 2].masks["fc3.weight"]
    fc1 = results["layer_shuffle", 2].masks["fc1.weight"]
    assert fc3.float().mean() > fc1.float().mean() + 0.05


def test_with_late_rewinding_it_starts_from_theta_k(small):
    exp = Experiment(quick(levels=1, iterations=20, rewind_iteration=10,
                           controls=("layer_shuffle",)), small)  # fmt: skip
    results = {(r.branch, r.level): r for r in exp.run()}
    check_shuffle(results, 1, results["ticket", 0].snapshots[10])


def test_verify_passes_and_catches_a_shuffle_that_changed_a_density(small, tmp_path, monkeypatch):
    monkeypatch.setattr("lth.study.runner.finish_run", lambda out, warn: None)  # no figures
    assert "layer_shuffle" in CONTROLS
    config = quick(levels=1, iterations=20, criterion="synflow", controls=("layer_shuffle",))
    run = tmp_path / "run"
    run_experiment(config, small, out=run, quiet=True, device="cpu")
    lines = verify_run(run)
    assert any(line.startswith("ok controls: ") for line in lines), lines
    assert any(line.startswith("skipped mask-chain: ") for line in lines), lines
    i = first(run, "layer_shuffle", 1, "fc2.weight", kept=True)
    edit(run, "layer_shuffle", 1, "mask", lambda t: t["fc2.weight"].view(-1).__setitem__(i, False))
    edit(run, "layer_shuffle", 1, "init", lambda t: t["fc2.weight"].view(-1).__setitem__(i, 0.0))
    edit(run, "layer_shuffle", 1, "final", lambda t: t["fc2.weight"].view(-1).__setitem__(i, 0.0))
    reseal(run)
    with pytest.raises(VerifyError, match="check controls failed: layer_shuffle replicate 0"):
        verify_run(run)
