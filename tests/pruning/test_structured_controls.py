"""Structured studies (``--granularity neuron|channel``) all the way through: the controls keep
whole units (``random_prune`` random whole units with the ticket's per-layer unit counts,
``layer_shuffle`` the ticket's units permuted, ``inverted`` the lowest-scored units), and an
at-initialisation criterion prunes each level in one shot from θ0 to structured IMP's per-layer
unit counts. Expected masks are computed here by hand from the definitions; ``lth verify``
checks both and catches a control with a partly pruned unit."""

from __future__ import annotations

import shutil

import pytest
import torch

from conftest import TEST_DATA, assert_one_line
from helpers import edit, mnist_slice, quick, reseal
from lth.cli import main
from lth.core.fileio import load_tensors
from lth.errors import LTHError
from lth.pruning.controls import (
    CONTROLS,
    Control,
    check_controls,
    control_help,
    register_control,
)
from lth.pruning.granularity import random_units_like, shuffle_units
from lth.runfolder.verify import VerifyError, verify_run
from lth.study.experiment import Experiment
from lth.study.runner import run_experiment

HIDDEN = ("fc1.weight", "fc2.weight")  # LeNet-300-100's layers pruned by neurons
#: Alive units after each level of structured IMP at rate 0.2, by hand: n -= round(0.2 n).
IMP_UNITS = {"fc1.weight": [300, 240, 192, 154, 123], "fc2.weight": [100, 80, 64, 51, 41]}


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1000, 200)


def whole(mask: torch.Tensor) -> bool:
    """Every unit (dim 0) all kept or all pruned."""
    rows = mask.reshape(mask.shape[0], -1)
    return bool((rows.all(1) | ~rows.any(1)).all())


def units(mask: torch.Tensor) -> int:
    return int(mask.reshape(mask.shape[0], -1).any(1).sum())


def top_units(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """The mask keeping the ``keep`` units of highest summed score, written unit by unit (ties:
    the lower index is removed first)."""
    sums = [(float(scores[u].double().sum()), u) for u in range(scores.shape[0])]
    gone = {u for _, u in sorted(sums)[: scores.shape[0] - keep]}
    mask = torch.ones(scores.shape, dtype=torch.bool)
    for u in gone:
        mask[u] = False
    return mask


# ---------------------------------------------------------------- the controls' masks


def ticket_masks() -> dict[str, torch.Tensor]:
    """A structured ticket: a conv layer with 2 of 6 filters, a linear layer with 3 of 5 units,
    and a layer pruned weight by weight."""
    conv = torch.zeros(6, 3, 2, 2, dtype=torch.bool)
    conv[[1, 4]] = True
    lin = torch.zeros(5, 4, dtype=torch.bool)
    lin[[0, 2, 3]] = True
    plain = torch.rand(3, 5, generator=torch.Generator().manual_seed(1)) < 0.5
    return {"conv.weight": conv, "lin.weight": lin, "out.weight": plain}


def test_random_units_are_whole_with_the_tickets_counts_and_uniform():
    """Each structured layer keeps as many whole units as the ticket, every unit equally likely
    (uniform draws: over 900 seeds each of the 6 filters is kept close to 2/6 of the time); the
    layer pruned by weights keeps its weight count; the same seed gives the same masks."""
    ticket = ticket_masks()
    kept = torch.zeros(6)
    for seed in range(900):
        m = random_units_like(ticket, {"conv.weight", "lin.weight"},
                              generator=torch.Generator().manual_seed(seed))  # fmt: skip
        for name in ("conv.weight", "lin.weight"):
            assert whole(m[name]) and units(m[name]) == units(ticket[name]), name
            assert int(m[name].sum()) == int(ticket[name].sum())
        assert int(m["out.weight"].sum()) == int(ticket["out.weight"].sum())
        kept += m["conv.weight"].reshape(6, -1).all(1)
    assert ((kept / 900 - 1 / 3).abs() < 0.05).all(), kept / 900
    again = random_units_like(ticket, {"conv.weight", "lin.weight"},
                              generator=torch.Generator().manual_seed(899))  # fmt: skip
    assert all(torch.equal(again[n], m[n]) for n in m)


def test_shuffled_units_are_the_tickets_units_permuted():
    mask = ticket_masks()["conv.weight"]
    mask[4, 0, 0, 0] = False  # a unit's own pattern moves with it
    moved = shuffle_units(mask, torch.Generator().manual_seed(3))
    rows = sorted(map(tuple, moved.reshape(6, -1).tolist()))
    assert rows == sorted(map(tuple, mask.reshape(6, -1).tolist()))
    assert not torch.equal(moved, mask)


def test_every_builtin_control_keeps_whole_units_and_a_new_one_must_say_so():
    check_controls(CONTROLS.names(), "neuron")
    check_controls(CONTROLS.names(), "channel")
    assert "whole units" in control_help()["random_prune"]
    assert "whole units" in control_help()["layer_shuffle"]

    def make(inp):
        return inp.masks, inp.start

    register_control(Control("doc_partial", "x", make, "controls", lambda *a: None))
    try:
        check_controls(("doc_partial",))  # weight granularity: fine
        with pytest.raises(LTHError) as e:
            check_controls(("reinit", "doc_partial"), "neuron")
        assert_one_line(e, "control 'doc_partial'", "whole units", "granularity neuron")
    finally:
        del CONTROLS["doc_partial"], CONTROLS.descriptions["doc_partial"]


# --------------------------------------------------- one-shot at-init criteria, structured


@pytest.mark.parametrize("criterion", ["snip", "synflow"])
def test_one_shot_structured_masks_ignore_the_previous_mask(small, criterion):
    """Level L of an at-init criterion scores θ0 under the all-ones mask: the mask it is given
    (a previous level's) changes nothing; whole units at structured IMP's unit counts."""
    exp = Experiment(quick(levels=4, granularity="neuron", criterion=criterion), small)
    theta0 = exp.theta0(0)
    ones = {n: torch.ones_like(theta0[n], dtype=torch.bool) for n in exp.prunable}
    other = {n: m.clone() for n, m in ones.items()}
    other["fc1.weight"][100:] = False  # a previous level's whole-unit mask
    other["fc2.weight"][::3] = False
    got = exp.prune(theta0, ones, 3, 0, theta0)
    again = exp.prune(theta0, other, 3, 0, theta0)
    assert all(torch.equal(again[n], got[n]) for n in got)
    for name in HIDDEN:
        assert whole(got[name]) and units(got[name]) == IMP_UNITS[name][3], name
    assert bool(got["fc3.weight"].all())  # the classes stay


def test_one_shot_snip_keeps_the_highest_unit_sums_of_theta0s_scores(small):
    """At each level: sum SNIP's scores of θ0 (all-ones mask) per neuron and keep the top
    neurons at structured IMP's counts, independently of the previous level's mask."""
    exp = Experiment(quick(levels=4, granularity="neuron", criterion="snip"), small)
    theta0 = exp.theta0(0)
    ones = {n: torch.ones_like(theta0[n], dtype=torch.bool) for n in exp.prunable}
    scores = exp.policy.scorer(theta0, theta0, 0, 4)(ones)
    prev = ones
    for level in (1, 2, 4):
        got = exp.prune(theta0, prev, level, 0, theta0)
        for name in HIDDEN:
            assert torch.equal(got[name], top_units(scores[name], IMP_UNITS[name][level]))
        prev = got


def test_structured_synflow_still_prunes_in_rounds(small):
    """SynFlow's 100 rounds per mask (rescoring after each) choose other units than one
    scoring would: the rounds are kept in structured pruning."""
    exp = Experiment(quick(levels=2, granularity="neuron", criterion="synflow"), small)
    theta0 = exp.theta0(0)
    ones = {n: torch.ones_like(theta0[n], dtype=torch.bool) for n in exp.prunable}
    got = exp.prune(theta0, ones, 2, 0, theta0)
    once = exp.policy.scorer(theta0, theta0, 0, 2)(ones)
    assert any(not torch.equal(got[n], top_units(once[n], IMP_UNITS[n][2])) for n in HIDDEN)


# ------------------------------------------------------ a study and lth verify, end to end


@pytest.fixture(scope="module")
def study(small, tmp_path_factory):
    """Two replicates, two levels at rates 0.2 then 0.5 of magnitude_init (one shot from θ0)
    with whole neurons and every control."""
    out = tmp_path_factory.mktemp("structured_controls") / "run"
    config = quick(levels=2, iterations=20, eval_every=20, replicates=2, granularity="neuron",
                   criterion="magnitude_init", rate_schedule=(0.2, 0.5),
                   controls=tuple(CONTROLS.names()))  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:  # no figures needed
        mp.setattr("lth.study.runner.finish_run", lambda out, warn: None)
        run_experiment(config, small, out=out, quiet=True, device="cpu")
    return out


def tensors_of(run, branch, rep, level, which="mask"):
    return load_tensors(run / branch / str(rep) / f"level_{level:02d}" / f"{which}.safetensors")


def masks_of(run, branch, rep, level):
    return {n: t.bool() for n, t in tensors_of(run, branch, rep, level).items()}


def test_every_branch_keeps_whole_units_at_the_tickets_unit_counts(study):
    """By hand from θ0: the ticket at level L keeps the neurons of largest L1 norm of θ0 at
    IMP's unit counts (300 -> 240 -> 120, 100 -> 80 -> 40 at rates 0.2 then 0.5); every
    control's units are whole with the same counts; random_prune differs between replicates."""
    for level, counts in ((1, (240, 80)), (2, (120, 40))):
        drawn = []
        for rep in (0, 1):
            theta0 = tensors_of(study, "ticket", rep, 0, "init")
            ticket = masks_of(study, "ticket", rep, level)
            for name, n in zip(HIDDEN, counts, strict=True):
                assert torch.equal(ticket[name], top_units(theta0[name].abs(), n)), name
            for branch in CONTROLS.names():
                m = masks_of(study, branch, rep, level)
                for name, n in zip(HIDDEN, counts, strict=True):
                    assert whole(m[name]) and units(m[name]) == n, (branch, rep, level, name)
                assert bool(m["fc3.weight"].all()), branch
            drawn.append(masks_of(study, "random_prune", rep, level)["fc1.weight"])
        assert not torch.equal(*drawn)


def test_inverted_keeps_the_lowest_scored_whole_units(study):
    """inverted at level 2: of the neurons the ticket kept at level 1, the ones of lowest L1
    norm of θ0 (magnitude_init's unit score), as many as the ticket keeps at level 2."""
    theta0 = tensors_of(study, "ticket", 0, 0, "init")
    before = masks_of(study, "ticket", 0, 1)
    inverted = masks_of(study, "inverted", 0, 2)
    for name, n in zip(HIDDEN, (120, 40), strict=True):
        l1 = theta0[name].abs().double().sum(1)
        alive = before[name].any(1).nonzero().reshape(-1).tolist()
        keep = sorted(alive, key=lambda u: float(l1[u]))[:n]
        assert sorted(inverted[name].any(1).nonzero().reshape(-1).tolist()) == sorted(keep)
        assert whole(inverted[name])


def test_verify_passes_and_catches_a_control_with_a_partly_pruned_unit(study, tmp_path):
    lines = verify_run(study)
    assert any(ln.startswith("ok magnitude: 4 ") for ln in lines), lines
    assert any(ln.startswith("ok random-prune-control: 4 ") for ln in lines), lines
    run = tmp_path / "run"
    shutil.copytree(study, run)
    mask = masks_of(run, "random_prune", 0, 1)["fc2.weight"]
    u, v = int(mask.any(1).nonzero()[0]), int((~mask.any(1)).nonzero()[0])
    theta0 = tensors_of(run, "ticket", 0, 0, "init")["fc2.weight"]

    def move(value):  # one weight moved from a kept neuron to a pruned one: the same count
        def change(t):
            t["fc2.weight"][u, 0] = 0
            t["fc2.weight"][v, 0] = value

        return change

    edit(run, "random_prune", 1, "mask", move(1))
    edit(run, "random_prune", 1, "init", move(theta0[v, 0]))  # the ticket's start, θ0
    edit(run, "random_prune", 1, "final", move(0.5))
    reseal(run)
    with pytest.raises(VerifyError) as e:
        verify_run(run)
    assert_one_line(e, "check random-prune-control failed", "random_prune replicate 0 level 1",
                    f"unit {min(u, v)} is partly pruned", "fc2.weight")  # fmt: skip


def test_lth_run_and_verify_a_structured_snip_study_on_mnist(tmp_path, capsys, no_figures):
    """The command line on real MNIST: whole neurons, SNIP in one shot per level, the reinit
    and random pruning controls; lth verify passes on the run and on its published folder."""
    out, pub = tmp_path / "run", tmp_path / "pub"
    argv = ["run", "--levels", "2", "--iterations", "20", "--eval-every", "20", "--val-size",
            "1000", "--granularity", "neuron", "--controls", "reinit,random_prune",
            "--criterion", "snip", "--data-dir", str(TEST_DATA), "--out", str(out),
            "--quiet"]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ok random-prune-control: 2 " in text and "skipped mask-chain" in text, text
    for level, n in ((1, 240), (2, 192)):
        for branch in ("ticket", "reinit", "random_prune"):
            m = masks_of(out, branch, 0, level)["fc1.weight"]
            assert whole(m) and units(m) == n, (branch, level)
    assert main(["publish", str(out), str(pub), "--no-report"]) == 0
    assert main(["verify", str(pub)]) == 0


# ------------------------------------------------------------- channel granularity (conv)

#: LeNet-5 at rate 0.2 (output layer 0.1), by hand: filters of the conv layers, weights of
#: the linear layers (pruned weight by weight with channel), after levels 0, 1, 2.
LENET5 = {
    "conv1.weight": [6, 5, 4],
    "conv2.weight": [16, 13, 10],
    "fc1.weight": [48000, 38400, 30720],
    "fc2.weight": [10080, 8064, 6451],
    "fc3.weight": [840, 756, 680],
}


def test_channel_one_shot_magnitude_init_and_its_controls_by_hand(small):
    """channel: the conv filters of largest L1 norm of θ0, the linear layers' largest |θ0|,
    at IMP's per-layer counts; random_prune and layer_shuffle keep whole filters at the
    ticket's filter counts and the linear layers' weight counts."""
    config = quick(model="lenet5", levels=2, granularity="channel", criterion="magnitude_init")
    exp = Experiment(config, small)
    theta0 = exp.theta0(0)
    ones = {n: torch.ones_like(theta0[n], dtype=torch.bool) for n in exp.prunable}
    ticket = exp.prune(theta0, ones, 2, 0, theta0)
    for name, counts in LENET5.items():
        if name.startswith("conv"):
            assert torch.equal(ticket[name], top_units(theta0[name].abs(), counts[2])), name
        else:
            cut = theta0[name].abs().reshape(-1).sort(descending=True).values[counts[2] - 1]
            assert torch.equal(ticket[name], theta0[name].abs() >= cut), name
    for control in ("random_prune", "layer_shuffle"):
        masks, _ = exp.control(control, 0, 2, ticket, theta0, theta0, (theta0, ones))
        for name, counts in LENET5.items():
            assert int(masks[name].sum()) == int(ticket[name].sum()), (control, name)
            if name.startswith("conv"):
                assert whole(masks[name]) and units(masks[name]) == counts[2], (control, name)
                assert not torch.equal(masks[name], ticket[name]), (control, name)


def test_a_channel_snip_study_verifies(small, tmp_path, no_figures):
    controls = ("random_prune", "layer_shuffle", "inverted")
    config = quick(model="lenet5", levels=1, iterations=10, eval_every=10, granularity="channel",
                   criterion="snip", controls=controls)  # fmt: skip
    run_experiment(config, small, out=tmp_path / "run", quiet=True, device="cpu")
    lines = verify_run(tmp_path / "run")
    assert any(ln.startswith("ok controls: 2 ") for ln in lines), lines
