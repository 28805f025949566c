"""Pruning at initialisation as published: each level's mask computed in one shot from θ0 at the
density IMP reaches at that level, ranked over every prunable layer (the output layer included)
by default; each against an implementation written here from its paper (SNIP: Lee et al. 2019,
eq. 6, top-k of |g ⊙ θ| over all layers; GraSP: Wang et al. 2020, eq. 8, the lowest -θ ⊙ Hg
kept; SynFlow: Tanaka et al. 2020, Algorithm 1, 100 rounds on the exponential schedule), with
the per-layer densities each gives LeNet-300-100 at about 7% and 2% of its weights."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from conftest import TEST_DATA, assert_one_line, real_data
from helpers import mnist_slice, quick
from lth.cli import main
from lth.core.fileio import load_tensors
from lth.errors import LTHError
from lth.pruning.controls import CONTROLS, ControlInput
from lth.pruning.criteria import EXAMPLES_PER_CLASS, GRASP_TEMPERATURE, _examples, get_criterion
from lth.pruning.masks import ones_mask
from lth.pruning.policy import derive_seed
from lth.study.experiment import Experiment

NAMES = ["fc1.weight", "fc2.weight", "fc3.weight"]
SIZES = {"fc1.weight": 235_200, "fc2.weight": 30_000, "fc3.weight": 1000}
SEVEN, TWO = 12, 18  # levels at which IMP (20% hidden, 10% output) keeps 6.9% and 1.9%


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1500, 300)


def imp_counts(level: int, rates=(0.2, 0.2, 0.1)) -> dict[str, int]:
    """Frankle & Carbin's layer-wise IMP: each level removes round(rate × survivors)."""
    out = {}
    for name, rate in zip(NAMES, rates):
        kept = SIZES[name]
        for _ in range(level):
            kept -= round(rate * kept)
        out[name] = kept
    return out


def batch(data, seed: int, replicate: int = 0):
    """The first 10 examples of each class in a random order drawn with the replicate's
    criterion generator (GraSP's reference: samples_per_class = 10)."""
    gen = torch.Generator().manual_seed(derive_seed(seed, "criterion", replicate))
    order = torch.randperm(data.train_x.shape[0], generator=gen).tolist()
    seen: dict[int, int] = {}
    pick = []
    for i in order:
        c = int(data.train_y[i])
        if seen.get(c, 0) < EXAMPLES_PER_CLASS:
            seen[c] = seen.get(c, 0) + 1
            pick.append(i)
    return data.train_x[pick], data.train_y[pick]


def top_k(scores: dict[str, torch.Tensor], k: int) -> tuple[dict[str, torch.Tensor], float]:
    """The k highest scores over every layer together, and the score at the cut."""
    flat = torch.cat([scores[n].reshape(-1).double() for n in NAMES])
    order = torch.argsort(flat, descending=True, stable=True)
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[order[:k]] = True
    parts = keep.split([SIZES[n] for n in NAMES])
    return {n: p.view(scores[n].shape) for n, p in zip(NAMES, parts)}, float(flat[order[k - 1]])


def agree(got: dict, expected: dict, scores: dict, cut: float, rtol: float) -> None:
    """Masks equal, except where the oracle's score is within ``rtol`` (of the largest) of the
    cut: there float rounding may order near-equal scores either way."""
    scale = max(float(s.abs().max()) for s in scores.values())
    for n in NAMES:
        differ = got[n] != expected[n]
        near = (scores[n].double() - cut).abs() <= rtol * scale
        assert not (differ & ~near).any(), (n, int(differ.sum()))
        assert int(got[n].sum()) == int(expected[n].sum()) or differ.any(), n


def densities(mask: dict) -> list[float]:
    return [round(100 * int(mask[n].sum()) / SIZES[n], 2) for n in NAMES]


def one_shot(criterion: str, data, level: int, **config) -> tuple[dict, dict, Experiment]:
    exp = Experiment(quick(criterion=criterion, levels=TWO, controls=(), **config), data)
    theta0 = exp.theta0(0)
    # what masks keep is ignored: a one-shot criterion starts from all ones
    half = {n: torch.rand(m.shape) < 0.5 for n, m in ones_mask(exp.template).items()}
    return exp.prune(theta0, half, level, 0, theta0), theta0, exp


def test_examples_are_ten_per_class_from_the_replicates_generator(small):
    crit = get_criterion("snip")
    seen, captured = {}, {}
    for replicate in (0, 1):

        def spy(model, masks, data, generator, replicate=replicate):
            captured[replicate] = _examples(data, generator)
            return crit.function(model=model, masks=masks, data=data, generator=generator)

        exp = Experiment(quick(criterion="snip", levels=2), small)
        exp.policy.criterion = type(crit)("spy", spy, True, 1)
        theta0 = exp.theta0(replicate)
        for level in (1, 2):
            exp.prune(theta0, ones_mask(exp.template), level, replicate, theta0)
            x, y = captured[replicate]
            assert torch.bincount(y, minlength=10).tolist() == [EXAMPLES_PER_CLASS] * 10
            ex, ey = batch(small, 0, replicate)
            assert torch.equal(x, ex) and torch.equal(y, ey)  # the same at every level
        seen[replicate] = x
    assert not torch.equal(seen[0], seen[1])


def test_snip_is_one_shot_global_top_k_of_g_times_theta_at_imps_density(small, capsys):
    for level in (1, SEVEN, TWO):
        got, theta0, exp = one_shot("snip", small, level)
        k = sum(imp_counts(level).values())
        assert sum(int(m.sum()) for m in got.values()) == k
        x, y = batch(small, 0)
        net = exp.template
        params = {n: theta0[n].clone().requires_grad_(n in NAMES) for n in theta0}
        loss = F.cross_entropy(functional_call(net, params, (x,)), y)
        grads = torch.autograd.grad(loss, [params[n] for n in NAMES])
        scores = {n: (g * theta0[n]).abs() for n, g in zip(NAMES, grads)}
        expected, cut = top_k(scores, k)
        agree(got, expected, scores, cut, 1e-6)
        with capsys.disabled():
            print(f"\nSNIP one-shot global, level {level}: {100 * k / 266_200:.2f}% kept, "
                  f"per layer {densities(got)}%")  # fmt: skip
    assert densities(got)[2] > 5 * densities(got)[0]  # it keeps far more of the output layer


def test_grasp_keeps_the_lowest_minus_theta_hg_over_every_layer(small):
    got, theta0, exp = one_shot("grasp", small, SEVEN)
    k = sum(imp_counts(SEVEN).values())
    x, y = batch(small, 0)
    net = copy.deepcopy(exp.template).double()
    flat0 = torch.cat([theta0[n].reshape(-1).double() for n in NAMES])

    def loss(flat):
        ws = dict(zip(NAMES, flat.split([SIZES[n] for n in NAMES])))
        params = {n: (ws[n].view(t.shape) if n in ws else t.double()) for n, t in theta0.items()}
        out = functional_call(net, params, (x.double(),))
        return F.cross_entropy(out / GRASP_TEMPERATURE, y)

    g = torch.func.grad(loss)(flat0)
    hg = torch.func.jvp(torch.func.grad(loss), (flat0,), (g,))[1]
    s = -(flat0 * hg)  # GraSP's S(-θ) = -θ ⊙ Hg: the highest are removed
    parts = dict(zip(NAMES, (-s).split([SIZES[n] for n in NAMES])))
    scores = {n: parts[n].view(theta0[n].shape) for n in NAMES}
    expected, cut = top_k(scores, k)
    assert sum(int(m.sum()) for m in got.values()) == k
    agree(got, expected, scores, cut, 1e-4)


def synflow_oracle(theta0: dict, k: int, rounds: int = 100) -> dict[str, np.ndarray]:
    """Tanaka et al. 2020, Algorithm 1: R = 1ᵀ(∏|W|)1 on an all-ones input, with the biases'
    |b|; scores ∂R/∂θ ⊙ θ; after round r keep round(N (k / N)^(r / rounds)) of all N weights
    ranked together, the highest among the survivors."""
    ws = [np.abs(theta0[n].double().numpy()) for n in NAMES]
    bs = [np.abs(theta0[n.replace("weight", "bias")].double().numpy()) for n in NAMES]
    masks = [np.ones(w.shape, dtype=bool) for w in ws]
    total = sum(w.size for w in ws)
    for r in range(1, rounds + 1):
        live = [w * m for w, m in zip(ws, masks)]
        acts = [np.ones(784)]
        for w, b in zip(live, bs):
            acts.append(w @ acts[-1] + b)
        u, scores = np.ones(10), [None] * 3
        for i in (2, 1, 0):
            scores[i] = np.outer(u, acts[i]) * live[i]
            u = live[i].T @ u
        keep = k if r == rounds else max(k, round(total * (k / total) ** (r / rounds)))
        flat = np.concatenate([np.where(m, s, -np.inf).ravel() for s, m in zip(scores, masks)])
        kept = np.zeros(total, dtype=bool)
        kept[np.argsort(-flat, kind="stable")[:keep]] = True
        masks = [p.reshape(w.shape) for p, w in zip(np.split(kept, [235_200, 265_200]), ws)]
    return dict(zip(NAMES, masks))


def test_synflow_is_one_shot_in_100_rounds_over_every_layer(small, capsys):
    for level in (TWO,):  # (SEVEN: 4.81 / 20.83 / 95.4% per layer)
        got, theta0, _ = one_shot("synflow", small, level)
        k = sum(imp_counts(level).values())
        expected = synflow_oracle(theta0, k)
        for n in NAMES:
            assert np.array_equal(got[n].numpy(), expected[n]), (level, n)
        with capsys.disabled():
            print(f"\nSynFlow one-shot global, level {level}: {100 * k / 266_200:.2f}% kept, "
                  f"per layer {densities(got)}%")  # fmt: skip


def test_magnitude_init_ranks_theta0_over_every_layer(small):
    got, theta0, _ = one_shot("magnitude_init", small, SEVEN)
    scores = {n: theta0[n].abs() for n in NAMES}
    expected, cut = top_k(scores, sum(imp_counts(SEVEN).values()))
    agree(got, expected, scores, cut, 0.0)


def test_layerwise_or_an_output_rate_sets_the_layers_apart(small):
    got, theta0, _ = one_shot("magnitude_init", small, SEVEN, pruning="layerwise")
    assert {n: int(m.sum()) for n, m in got.items()} == imp_counts(SEVEN)
    for n in NAMES:  # each layer's own largest |θ0|
        expected, _ = top_k({m: theta0[m].abs() * (m == n) for m in NAMES}, imp_counts(SEVEN)[n])
        assert torch.equal(got[n], expected[n]), n
    got, _, _ = one_shot("snip", small, SEVEN, output_rate=0.05)
    output = imp_counts(SEVEN, (0.2, 0.2, 0.05))["fc3.weight"]
    assert int(got["fc3.weight"].sum()) == output
    hidden = 265_200
    for _ in range(SEVEN):
        hidden -= round(0.2 * hidden)  # the other layers ranked together, as global IMP
    assert int(got["fc1.weight"].sum() + got["fc2.weight"].sum()) == hidden


def test_the_iterative_variants_prune_the_previous_mask_further(small):
    exp = Experiment(quick(criterion="snip_iterative", levels=2), small)
    theta0 = exp.theta0(0)
    first = exp.prune(theta0, ones_mask(exp.template), 1, 0, theta0)
    second = exp.prune(theta0, first, 2, 0, theta0)
    assert {n: int(m.sum()) for n, m in second.items()} == imp_counts(2)  # layer-wise, as IMP
    assert all(not (second[n] & ~first[n]).any() for n in NAMES)
    oneshot = Experiment(quick(criterion="snip", levels=2), small)
    again = oneshot.prune(theta0, first, 2, 0, theta0)
    assert any(not torch.equal(again[n], second[n]) for n in NAMES)
    for name in ("snip_iterative", "grasp_iterative", "synflow_iterative"):
        crit = get_criterion(name)
        assert crit.at_init and crit.iterative and not crit.one_shot
    assert get_criterion("synflow_iterative").rounds == 100
    assert all(get_criterion(n).one_shot for n in ("snip", "grasp", "synflow", "magnitude_init"))


def test_a_one_shot_study_runs_stores_and_verifies(tmp_path, monkeypatch):
    real_data("mnist")
    monkeypatch.setattr("lth.study.runner.finish_run", lambda out, warn: None)  # no figures
    out = tmp_path / "snip"
    args = ["run", "--levels", "2", "--iterations", "10", "--eval-every", "10", "--val-size",
            "300", "--controls", "inverted,layer_shuffle", "--quiet", "--criterion", "snip",
            "--data-dir", str(TEST_DATA), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    for level in (1, 2):
        mask = load_tensors(out / "ticket" / "0" / f"level_{level:02d}" / "mask.safetensors")
        assert sum(int(m.sum()) for m in mask.values()) == sum(imp_counts(level).values())
    assert main(["verify", str(out)]) == 0


def test_inverted_takes_a_mask_that_did_not_nest_from_all_weights():
    """A one-shot mask may keep weights its previous level pruned (SynFlow's may): the inverted
    control then ranks every weight, keeping the ticket's counts."""
    ticket = {"w": torch.tensor([True, True, False, False, True, False])}
    previous = {"w": torch.tensor([True, False, True, True, True, False])}
    theta = {"w": torch.arange(6.0)}

    def scorer(weights, init, replicate, level):
        return lambda masks: {"w": weights["w"].clone()}

    inp = ControlInput(0, 2, ticket, theta, theta, (theta, previous), torch.Generator(),
                       lambda *k: theta, scorer)  # fmt: skip
    mask, start = CONTROLS["inverted"].make(inp)
    assert mask["w"].tolist() == [True, True, True, False, False, False]  # the 3 lowest
    assert start is theta


def test_at_init_criteria_still_refuse_late_rewinding(small):
    with pytest.raises(LTHError) as e:
        Experiment(quick(criterion="synflow", rewind_iteration=10), small)
    assert_one_line(e, "synflow", "rewind_iteration 0")
