"""Pruning criteria: each built-in against an independent implementation from its paper's
equations (LeNet-300-100 and conv nets, float64), SynFlow's iterative schedule and its layer
collapse property, magnitude bit for bit as before, and a user's ``package.module:function``."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from conftest import TEST_DATA, assert_one_line, real_data
from helpers import mnist_slice, quick
from lth.cli import main
from lth.core.fileio import load_tensors
from lth.core.models import create_model, initialize
from lth.errors import LTHError
from lth.pruning.criteria import (
    EXAMPLES_PER_CLASS,
    GRASP_TEMPERATURE,
    get_criterion,
    grasp,
    model_holding,
    register_criterion,
    snip,
    synflow,
)
from lth.pruning.masks import ones_mask
from lth.pruning.selection import prune_layerwise, round_rate, select_global
from lth.study.experiment import Experiment
from lth.usercode import CodeTrust


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here runs on one thread (see conftest)."""


@pytest.fixture(scope="module")
def small():
    return mnist_slice(1500, 300)


def data64(data, pool: int = 1) -> SimpleNamespace:
    """The training set in float64 (average-pooled by ``pool``), as criteria read it."""
    x = data.train_x.double()
    if pool > 1:
        x = F.avg_pool2d(x, pool)
    return SimpleNamespace(
        train_x=x, train_y=data.train_y, num_classes=data.num_classes, input_shape=x.shape[1:]
    )


def tiny_conv() -> nn.Sequential:
    """A conv net without pooling for 7x7 images: 540 prunable weights."""
    net = nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 4, 3), relu1=nn.ReLU(), conv2=nn.Conv2d(4, 4, 3),
            relu2=nn.ReLU(), flatten=nn.Flatten(), fc1=nn.Linear(36, 10),
        )
    )  # fmt: skip
    initialize(net, "xavier_normal", torch.Generator().manual_seed(3))
    return net.double()


def lenet64(name: str = "lenet_300_100") -> nn.Module:
    return create_model(name, generator=torch.Generator().manual_seed(1)).double()


def some_masks(net: nn.Module, keep: float = 0.6) -> dict[str, torch.Tensor]:
    """Random masks keeping about ``keep`` of each layer, applied to ``net``."""
    gen = torch.Generator().manual_seed(7)
    masks = {n: torch.rand(m.shape, generator=gen) < keep for n, m in ones_mask(net).items()}
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return masks


def examples(data, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples SNIP and GraSP draw with a generator seeded ``seed``: the first
    ``EXAMPLES_PER_CLASS`` of each class in a random order of the training set."""
    order = torch.randperm(data.train_x.shape[0], generator=torch.Generator().manual_seed(seed))
    seen: dict[int, int] = {}
    pick = []
    for i in order.tolist():
        c = int(data.train_y[i])
        if seen.get(c, 0) < EXAMPLES_PER_CLASS:
            seen[c] = seen.get(c, 0) + 1
            pick.append(i)
    return data.train_x[pick], data.train_y[pick]


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-9) -> bool:
    """Equal to within ``rtol`` of the larger's largest entry."""
    a, b = a.detach(), b.detach()
    scale = max(float(a.abs().max()), float(b.abs().max()), 1e-300)
    return float((a - b).abs().max()) <= rtol * scale


# ---------------------------------------------------------------------------- SNIP


@pytest.mark.parametrize("make", [lenet64, lambda: lenet64("lenet5"), tiny_conv])
def test_snip_is_the_loss_derivative_by_each_connection_gate(small, make):
    """Lee et al. 2019: s_j = |∂L(c ⊙ w)/∂c_j| at c = 1 (the gates' gradient, eq. 3-6)."""
    net = make()
    masks = some_masks(net)
    data = data64(small, pool=4 if isinstance(net[0], nn.Conv2d) and net[0].in_channels == 1
                  and net[-1].in_features == 36 else 1)  # fmt: skip
    got = snip(net, masks, data, torch.Generator().manual_seed(5))
    x, y = examples(data, 5)
    params = {n: p.detach() for n, p in net.named_parameters()}
    gates = {n: torch.ones_like(params[n], requires_grad=True) for n in masks}
    gated = {n: p * gates[n] if n in gates else p for n, p in params.items()}
    loss = F.cross_entropy(functional_call(net, gated, (x,)), y)
    sensitivity = torch.autograd.grad(loss, list(gates.values()))
    for (name, s), m in zip(zip(masks, sensitivity), masks.values()):
        assert close(got[name][m], s.abs()[m]), name


# ---------------------------------------------------------------------------- GraSP


def grasp_loss(net, flat, names, shapes, x, y):
    """GraSP's loss (temperature 200) as a function of the prunable weights, flattened."""
    params = {n: p.detach() for n, p in net.named_parameters()}
    parts = flat.split([math.prod(s) for s in shapes])
    params |= {n: t.view(s) for n, t, s in zip(names, parts, shapes)}
    return F.cross_entropy(functional_call(net, params, (x,)) / GRASP_TEMPERATURE, y)


def flat_setup(net, masks, data, seed):
    """GraSP's examples, the prunable weights' names and shapes, θ and the mask, flattened."""
    x, y = examples(data, seed)
    names = list(masks)
    shapes = [masks[n].shape for n in names]
    theta = torch.cat([dict(net.named_parameters())[n].detach().reshape(-1) for n in names])
    m = torch.cat([masks[n].reshape(-1) for n in names]).double()
    return x, y, names, shapes, theta, m


def test_grasp_is_theta_times_the_explicit_hessian_gradient_product(small):
    """Wang et al. 2020, eq. 8: S(-θ) = -θ ⊙ Hg with H the full Hessian (built here), over the
    surviving weights; the kept score is θ ⊙ Hg."""
    net = tiny_conv()
    masks = some_masks(net)
    data = data64(small, pool=4)
    got = grasp(net, masks, data, torch.Generator().manual_seed(2))
    x, y, names, shapes, theta, m = flat_setup(net, masks, data, 2)

    def loss(flat):
        return grasp_loss(net, flat, names, shapes, x, y)

    g = torch.autograd.functional.jacobian(loss, theta) * m
    hessian = torch.autograd.functional.hessian(loss, theta)
    expected = (theta * (hessian @ g)).split([math.prod(s) for s in shapes])
    for name, e in zip(names, expected):
        mask = masks[name]
        assert close(got[name][mask], e.view(mask.shape)[mask], 1e-8), name


def test_grasp_on_lenet_300_100_matches_a_forward_over_reverse_hessian_product(small):
    """Hg by forward-mode differentiation of the gradient (Pearlmutter's R-operator; the
    criterion differentiates backward twice). Finite differences cannot stand in: a ReLU
    net's gradient jumps where a unit switches."""
    net = lenet64()
    masks = some_masks(net, keep=0.8)
    data = data64(small)
    got = grasp(net, masks, data, torch.Generator().manual_seed(4))
    x, y, names, shapes, theta, m = flat_setup(net, masks, data, 4)

    def loss(flat):
        return grasp_loss(net, flat, names, shapes, x, y)

    g = torch.func.grad(loss)(theta) * m
    hg = torch.func.jvp(torch.func.grad(loss), (theta,), (g,))[1]
    expected = (theta * hg).split([math.prod(s) for s in shapes])
    for name, e in zip(names, expected):
        mask = masks[name]
        assert close(got[name][mask], e.view(mask.shape)[mask], 1e-9), name


# ---------------------------------------------------------------------------- SynFlow


def synflow_mlp_oracle(state: dict, names: list[str], masks: dict) -> dict[str, np.ndarray]:
    """Tanaka et al. 2020 in closed form for an MLP on an all-ones input with |θ|: every ReLU
    passes its (non-negative) input, so R = 1ᵀ|W3|(|W2|(|W1|1 + |b1|) + |b2|) + ... and
    ∂R/∂|W_l|[i, j] = (1ᵀ|W_L|...|W_l+1|)_i · a_{l-1, j}."""
    ws = [np.abs(state[n].numpy()) * masks[n].numpy() for n in names]
    bs = [np.abs(state[n.replace("weight", "bias")].numpy()) for n in names]
    acts = [np.ones(ws[0].shape[1])]
    for w, b in zip(ws, bs):
        acts.append(w @ acts[-1] + b)
    u = np.ones(ws[-1].shape[0])
    out = {}
    for i in range(len(ws) - 1, -1, -1):
        out[names[i]] = np.outer(u, acts[i]) * ws[i]
        u = ws[i].T @ u
    return out


def test_synflow_on_lenet_300_100_is_the_closed_form_path_norm_gradient(small):
    net = lenet64()
    masks = some_masks(net)
    got = synflow(net, masks, data64(small))
    names = list(masks)
    state = {n: t.detach() for n, t in net.state_dict().items()}
    expected = synflow_mlp_oracle(state, names, masks)
    for name in names:
        assert got[name].dtype == torch.float64
        assert close(got[name], torch.from_numpy(expected[name]), 1e-12), name


def test_synflow_on_a_conv_net_is_the_change_in_r_when_a_weight_is_removed(small):
    """Without pooling R is affine in each weight (all activations are non-negative), so
    |θ| ∂R/∂|θ| = R(θ) - R(θ with that weight 0), computed here one weight at a time."""
    net = tiny_conv()
    masks = some_masks(net)
    data = data64(small, pool=4)
    got = synflow(net, masks, data)
    positive = {n: t.detach().abs() for n, t in net.state_dict().items()}
    ones = torch.ones(1, *data.input_shape, dtype=torch.float64)

    def flow(params):
        return float(functional_call(net, params, (ones,)).sum())

    r = flow(positive)
    for name, mask in masks.items():
        drop = []
        for i in range(mask.numel()):
            w = positive[name].clone()
            w.view(-1)[i] = 0.0
            drop.append(r - flow(positive | {name: w}))
        assert close(got[name], torch.tensor(drop, dtype=torch.float64).view(mask.shape), 1e-9), (
            name
        )


def oracle_synflow_level(
    state: dict, names: list[str], groups: list[tuple[list[str], float]], rounds: int = 100
) -> dict[str, np.ndarray]:
    """SynFlow's Algorithm 1 from the paper with its exponential schedule: after round k a
    group of n survivors that the level brings to f keeps round(n (f / n)^(k / rounds)), the
    highest-scored, rescored every round."""
    masks = {n: np.ones(state[n].shape, dtype=bool) for n in names}
    targets = [(g, g_n := sum(masks[n].size for n in g), g_n - round(rate * g_n))
               for g, rate in groups]  # fmt: skip
    for k in range(1, rounds + 1):
        scores = synflow_mlp_oracle(
            state, names, {n: torch.from_numpy(m) for n, m in masks.items()}
        )
        for group, n0, final in targets:
            keep = final if k == rounds else max(final, round(n0 * (final / n0) ** (k / rounds)))
            flat = np.concatenate([np.where(masks[n], scores[n], -np.inf).ravel() for n in group])
            order = np.argsort(-flat, kind="stable")
            kept = np.zeros(flat.size, dtype=bool)
            kept[order[:keep]] = True
            sizes = np.cumsum([0] + [masks[n].size for n in group])
            for i, n in enumerate(group):
                masks[n] = kept[sizes[i] : sizes[i + 1]].reshape(masks[n].shape)
    return masks


def test_synflow_prunes_a_level_in_100_rounds_on_the_exponential_schedule(small):
    cfg = quick(criterion="synflow", pruning="global", rate=0.9, output_rate=0.5)
    exp = Experiment(cfg, small)
    theta0 = exp.theta0(0)
    got = exp.prune(theta0, ones_mask(exp.template), 1, 0, theta0)
    names = list(got)
    state = {n: t.double() for n, t in theta0.items()}
    expected = oracle_synflow_level(state, names, [(names[:2], 0.9), (names[2:], 0.5)])
    for name in names:
        assert np.array_equal(got[name].numpy(), expected[name]), name


def test_round_rates_end_on_the_one_shot_count():
    for start, rate in ((266_200, 0.999), (1000, 0.2), (7, 0.5), (1, 0.3)):
        now = start
        for k in range(1, 101):
            now -= round(round_rate(start, rate, now, k, 100) * now)
        assert now == start - round(rate * start)


def global_prune(name: str, net: nn.Module, data, keep: float) -> dict[str, int]:
    """Global pruning of every layer of ``net`` at θ0 to ``keep`` of its weights."""
    criterion = get_criterion(name)
    weights = {n: t.detach() for n, t in net.state_dict().items()}
    masks = start = ones_mask(net)
    total = sum(m.numel() for m in masks.values())
    gen = torch.Generator().manual_seed(0)
    for k in range(1, criterion.rounds + 1):
        inputs = {
            "weights": lambda: weights,
            "init": lambda: weights,
            "masks": lambda m=masks: m,
            "model": lambda m=masks: model_holding(net, weights, m, "cpu"),
            "data": lambda: data,
            "generator": lambda: gen,
        }
        scores = criterion.scores(masks, inputs)
        kept = sum(int(m.sum()) for m in masks.values())
        rate = round_rate(total, 1 - keep, kept, k, criterion.rounds)
        masks = select_global(scores, masks, rate)
    assert sum(int(m.sum()) for m in masks.values()) == round(keep * total)
    assert start is not masks
    return {n: int(m.sum()) for n, m in masks.items()}


def test_synflow_avoids_layer_collapse_where_magnitude_and_snip_empty_a_layer(small):
    """Tanaka et al. 2020: at 0.05% of LeNet-300-100's weights (133 of 266,200) global
    magnitude and SNIP at initialisation keep no weight of fc1; SynFlow keeps every layer."""
    net = create_model("lenet_300_100", generator=torch.Generator().manual_seed(0))
    for keep in (0.001, 0.0005):
        kept = global_prune("synflow", net, small, keep)
        assert min(kept.values()) >= 1, (keep, kept)
    assert global_prune("magnitude_init", net, small, 0.0005)["fc1.weight"] == 0
    assert global_prune("snip", net, small, 0.0005)["fc1.weight"] == 0


# ---------------------------------------------------------------------- in the level loop


def test_the_magnitude_criterion_is_the_default_and_bit_identical(small):
    default = Experiment(quick(levels=2, iterations=20), small).run()
    named = Experiment(quick(levels=2, iterations=20, criterion="magnitude"), small).run()
    assert [(r.branch, r.level) for r in default] == [(r.branch, r.level) for r in named]
    for a, b in zip(default, named):
        for which in ("masks", "init", "final"):
            x, y = getattr(a, which), getattr(b, which)
            assert all(torch.equal(x[n], y[n]) for n in x), (a.branch, a.level, which)
    ticket = {r.level: r for r in named if r.branch == "ticket"}
    rates = {"fc1.weight": 0.2, "fc2.weight": 0.2, "fc3.weight": 0.1}
    for level in (1, 2):
        again = prune_layerwise(ticket[level - 1].final, ticket[level - 1].masks, rates)
        assert all(torch.equal(again[n], ticket[level].masks[n]) for n in again)


def test_magnitude_init_keeps_the_largest_theta0_of_each_layer_and_trains_from_theta0(small):
    exp = Experiment(quick(levels=2, criterion="magnitude_init", controls=()), small)
    results = exp.run()
    theta0 = exp.theta0(0)
    for r in results:
        for name, mask in r.masks.items():
            n = mask.numel()
            kept = int(mask.sum())
            top = torch.argsort(theta0[name].abs().reshape(-1), descending=True, stable=True)
            expected = torch.zeros(n, dtype=torch.bool)
            expected[top[:kept]] = True
            assert torch.equal(mask.reshape(-1), expected), (r.level, name)
            assert torch.equal(r.init[name], theta0[name] * mask)


def test_random_pruning_keeps_the_rates_counts_at_random(small):
    exp = Experiment(quick(levels=2, criterion="random", controls=()), small)
    first, again = exp.run(), exp.run()
    for a, b in zip(first, again):
        assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    by_level = {r.level: r.masks for r in first}
    magnitude = prune_layerwise(first[0].final, by_level[0], {"fc1.weight": 0.2})
    assert not torch.equal(magnitude["fc1.weight"], by_level[1]["fc1.weight"])
    for name, total in (("fc1.weight", 235_200), ("fc3.weight", 1000)):
        rate = 0.1 if name == "fc3.weight" else 0.2
        k1 = total - round(rate * total)
        assert int(by_level[1][name].sum()) == k1
        assert int(by_level[2][name].sum()) == k1 - round(rate * k1)
        assert not (by_level[2][name] & ~by_level[1][name]).any()


def test_at_init_criteria_refuse_resets_that_do_not_train_from_theta0(small):
    with pytest.raises(LTHError) as e:
        Experiment(quick(criterion="snip", reset="finetune"), small)
    assert_one_line(e, "snip", "reset rewind")


@pytest.mark.parametrize(
    "function, needles",
    [
        (lambda masks: {}, ["gave nothing", "fc1.weight"]),
        (lambda masks: [1], ["returned list"]),
        (lambda masks: {n: torch.ones(3) for n in masks}, ["shape (3,)"]),
        (lambda masks: 1 / 0, ["ZeroDivisionError"]),
        (lambda masks, gradients: {}, ["takes 'gradients'"]),
    ],
)
def test_a_bad_criterion_is_a_one_line_error(small, function, needles):
    name = f"bad_{len(needles[0])}_{needles[0][:4]}"
    register_criterion(name)(function)
    try:
        with pytest.raises(LTHError) as e:
            Experiment(quick(criterion=name), small).run()
        assert_one_line(e, name, *needles)
    finally:
        from lth.pruning.criteria import CRITERIA

        del CRITERIA[name]


def test_unknown_criterion_and_duplicate_registration_are_one_line_errors():
    with pytest.raises(LTHError) as e:
        get_criterion("magnitud")
    assert_one_line(e, "magnitud", "synflow")
    with pytest.raises(LTHError) as e:
        register_criterion("snip")(lambda masks: {})
    assert_one_line(e, "already registered")
    with pytest.raises(LTHError) as e:
        get_criterion("no_such_module_here:f", CodeTrust(trusted=True))
    assert_one_line(e, "no_such_module_here", "cannot import")


# ----------------------------------------------------------------------- user criteria


USER_CRITERION = '''
import torch

def by_index(masks):
    """Keeps the highest flat indices of each layer."""
    return {n: torch.arange(m.numel(), dtype=torch.float64).view(m.shape) for n, m in masks.items()}

by_index.at_init = True
'''

ARGS = ["--levels", "1", "--iterations", "40", "--eval-every", "20", "--val-size", "300",
        "--controls", "inverted,shuffle_init", "--quiet"]  # fmt: skip


def test_a_criterion_named_package_module_function_prunes_as_it_says(tmp_path, monkeypatch):
    real_data("mnist")
    monkeypatch.setattr("lth.study.runner.finish_run", lambda out, warn: None)  # no figures needed
    monkeypatch.chdir(tmp_path)
    Path("user_crit_13.py").write_text(USER_CRITERION)
    out = tmp_path / "run"
    argv = ["run", *ARGS, "--data-dir", str(TEST_DATA), "--out", str(out)]
    # a one-shot criterion at its layer-wise counts (--pruning layerwise: as IMP's per layer)
    assert main([*argv, "--criterion", "user_crit_13:by_index", "--pruning", "layerwise"]) == 0
    mask = load_tensors(out / "ticket" / "0" / "level_01" / "mask.safetensors")
    for name, m in mask.items():
        rate = 0.1 if name == "fc3.weight" else 0.2
        pruned = round(rate * m.numel())
        assert not m.reshape(-1)[:pruned].any() and m.reshape(-1)[pruned:].all(), name
    inverted = load_tensors(out / "inverted" / "0" / "level_01" / "mask.safetensors")
    for name, m in inverted.items():
        kept = int(mask[name].sum())
        assert m.reshape(-1)[:kept].all() and not m.reshape(-1)[kept:].any(), name
    assert main(["verify", str(out)]) == 0
    config = tmp_path / "c.toml"
    config.write_text('criterion = "user_crit_13:by_index"\n')
    other = ["run", *ARGS, "--data-dir", str(TEST_DATA), "--out", str(tmp_path / "r2")]
    assert main([*other, "--config", str(config)]) == 2
    assert not (tmp_path / "r2").exists()
