"""The controls beside reinit and random_prune: sign_keep, signed_constant, inverted and
shuffle_init, each with the ticket's exact per-layer counts; lth verify audits them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import edit, first, mnist_slice, quick, reseal
from lth.cli import main
from lth.pruning.controls import CONTROLS, control_help
from lth.runfolder.verify import VerifyError, verify_run
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1500, 300)


@pytest.fixture(scope="module")
def study(small):
    """Two levels of IMP with every control (rewinding to θ0)."""
    exp = Experiment(quick(levels=2, iterations=20, controls=tuple(CONTROLS.names())), small)
    results = {(r.branch, r.level): r for r in exp.run()}
    return exp, results


def survivors(weights, masks, name):
    return weights[name][masks[name]]


def test_every_control_keeps_the_tickets_per_layer_counts(study):
    exp, results = study
    for (branch, level), r in results.items():
        ticket = results["ticket", level]
        for name, m in r.masks.items():
            assert int(m.sum()) == int(ticket.masks[name].sum()), (branch, level, name)
        for name, t in r.init.items():  # biases: the ticket's start (reinit: fresh)
            if name not in r.masks and branch != "reinit":
                assert torch.equal(t, ticket.init[name]), (branch, name)


def test_sign_keep_has_theta0s_signs_and_fresh_magnitudes(study):
    exp, results = study
    for level in (1, 2):  # the controls start at level 1
        r, ticket = results["sign_keep", level], results["ticket", level]
        for name, m in r.masks.items():
            assert torch.equal(m, ticket.masks[name])
            mine = survivors(r.init, r.masks, name)
            theirs = survivors(ticket.init, r.masks, name)
            assert torch.equal(torch.sign(mine), torch.sign(theirs))
            assert not torch.equal(mine.abs(), theirs.abs())


def test_signed_constant_is_theta0s_signs_times_the_layers_init_std(study):
    exp, results = study
    theta0 = exp.theta0(0)
    for level in (1, 2):  # the controls start at level 1
        r, ticket = results["signed_constant", level], results["ticket", level]
        for name, m in r.masks.items():
            assert torch.equal(m, ticket.masks[name])
            std = np.std(theta0[name].numpy().astype(np.float64), ddof=1)
            mine = survivors(r.init, r.masks, name).numpy()
            theirs = survivors(ticket.init, r.masks, name).numpy()
            np.testing.assert_allclose(mine, np.sign(theirs) * std, rtol=1e-6)


def test_inverted_keeps_the_survivors_magnitude_pruning_would_remove_first(study):
    exp, results = study
    assert ("inverted", 0) not in results, "level 0: the ticket itself, trained once"
    for level in (1, 2):
        r, previous = results["inverted", level], results["ticket", level - 1]
        for name, m in r.masks.items():
            alive = previous.masks[name]
            assert not (m & ~alive).any(), "within the ticket's previous mask"
            kept = previous.final[name][m].abs()
            dropped = previous.final[name][alive & ~m].abs()
            assert kept.max() <= dropped.min(), name
        theta0 = exp.theta0(0)
        assert all(torch.equal(r.init[n], theta0[n] * r.masks[n]) for n in r.masks)


def test_shuffle_init_permutes_the_surviving_values_within_each_layer(study):
    exp, results = study
    for level in (1, 2):  # the controls start at level 1
        r, ticket = results["shuffle_init", level], results["ticket", level]
        for name, m in r.masks.items():
            assert torch.equal(m, ticket.masks[name])
            mine, theirs = survivors(r.init, r.masks, name), survivors(ticket.init, r.masks, name)
            assert torch.equal(mine.sort().values, theirs.sort().values)
            assert not torch.equal(mine, theirs)


def test_lth_verify_audits_the_new_controls_and_catches_a_wrong_one(small, tmp_path, monkeypatch):
    monkeypatch.setattr("lth.study.runner.finish_run", lambda out, warn: None)  # no figures needed
    config = quick(levels=1, iterations=20, criterion="snip", controls=tuple(CONTROLS.names()))
    run = tmp_path / "run"
    run_experiment(config, small, out=run, quiet=True, device="cpu")
    lines = verify_run(run)
    # sign_keep, signed_constant, inverted, shuffle_init, layer_shuffle at level 1 (none at 0)
    assert any(line.startswith("ok controls: 5 ") for line in lines), lines
    i = first(run, "signed_constant", 1, "fc2.weight", kept=True)
    edit(run, "signed_constant", 1, "init", lambda t: t["fc2.weight"].view(-1)[i].mul_(1.5))
    reseal(run)
    with pytest.raises(VerifyError, match="check controls failed: signed_constant replicate 0"):
        verify_run(run)


def test_lth_run_help_says_what_each_control_isolates_in_one_line(capsys):
    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for name, what in control_help().items():
        assert f"{name}: {' '.join(what.split())}" in text


def test_a_new_control_is_one_registry_entry(small, tmp_path):
    """Adding a control is one register_control call: the study trains it, the run folder holds
    its branch, --help lists it, lth verify runs its expectations, and an unknown name is still
    refused in one line."""
    from lth.errors import LTHError
    from lth.pruning.controls import Control, check_controls, register_control
    from lth.runfolder.ownership import file_kind

    audited = []

    def make(inp):  # the ticket's mask, θ0's survivors negated
        return inp.masks, {n: -w if n in inp.masks else w for n, w in inp.start.items()}

    def expect(audit, key, masks, init):
        audited.append(key)

    register_control(Control("negated", "the ticket's mask, its start negated", make,
                             "controls", expect))  # fmt: skip
    try:
        assert control_help()["negated"] == "the ticket's mask, its start negated"
        out = tmp_path / "run"
        results = run_experiment(
            quick(levels=1, iterations=20, controls=("negated",)), small, out=out, quiet=True
        )
        by = {(r.branch, r.level): r for r in results}
        ticket, negated = by["ticket", 1], by["negated", 1]
        for name, m in ticket.masks.items():
            assert torch.equal(negated.masks[name], m)
            assert torch.equal(negated.init[name], -ticket.init[name])
        assert file_kind("negated/0/level_01/mask.safetensors") == "run"
        verify_run(out)
        assert len(audited) >= 2  # both levels' networks of the new branch
    finally:
        del CONTROLS["negated"], CONTROLS.descriptions["negated"]
    with pytest.raises(LTHError, match="unknown control 'negated'; choose from reinit"):
        check_controls(("negated",))
