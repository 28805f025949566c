"""Tests for lth.pruning.selection, with torch.nn.utils.prune and a numpy argsort as oracles."""

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from lth.errors import LTHError
from lth.pruning.masks import apply_masks, ones_mask
from lth.pruning.selection import (
    layer_rates,
    prune_global,
    prune_layerwise,
    prune_random_like,
    target_rate,
)

LEVELS = 5


def make_net(seed: int) -> nn.ModuleDict:
    """Layers of different shapes, including a 4-D conv weight and an odd-sized layer."""
    torch.manual_seed(seed)
    return nn.ModuleDict(
        {
            "fc1": nn.Linear(20, 30),
            "fc2": nn.Linear(30, 10),
            "conv": nn.Conv2d(3, 8, 3),
            "odd": nn.Linear(7, 5),
        }
    )


def weights_of(net: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of the weight tensors, keyed like the parameters."""
    return {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")}


def iterated_counts(n: int, rate: float, levels: int) -> list[int]:
    """Survivor counts n_0..n_levels under n_{k+1} = n_k - round(rate * n_k)."""
    counts = [n]
    for _ in range(levels):
        counts.append(counts[-1] - round(rate * counts[-1]))
    return counts


def numpy_global_oracle(weights, masks, rate, exclude=()):
    """Independent global pruning: stable argsort of |w| over survivors, layers in dict order."""
    names = [n for n in masks if n not in exclude]
    flat_masks = {n: masks[n].numpy().reshape(-1).copy() for n in masks}
    owners, positions, scores = [], [], []
    for i, n in enumerate(names):
        idx = np.flatnonzero(flat_masks[n])
        owners += [i] * len(idx)
        positions += list(idx)
        scores += list(np.abs(weights[n].numpy().reshape(-1)[idx]).astype(np.float64))
    k = round(rate * len(scores))
    for j in np.argsort(np.array(scores), kind="stable")[:k]:
        flat_masks[names[owners[j]]][positions[j]] = False
    return {n: torch.from_numpy(flat_masks[n].reshape(masks[n].shape)) for n in masks}


# ------------------------------------------------------------------------ oracle: torch prune


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_layerwise_matches_torch_l1_unstructured(seed):
    """Identical masks to repeated prune.l1_unstructured at every level, every layer."""
    net = make_net(seed)
    oracle = copy.deepcopy(net)
    weights = weights_of(net)
    rates = {"fc1.weight": 0.2, "fc2.weight": 0.1, "conv.weight": 0.15, "odd.weight": 0.5}
    masks = ones_mask(weights)
    for _level in range(LEVELS):
        masks = prune_layerwise(weights, masks, rates)
        for name, rate in rates.items():
            module = oracle[name.split(".")[0]]
            prune.l1_unstructured(module, "weight", amount=rate)
            assert torch.equal(masks[name], module.weight_mask.bool()), name
    # the masked weights agree too
    pruned = copy.deepcopy(weights)
    apply_masks(pruned, masks)
    for name in rates:
        assert torch.equal(pruned[name], oracle[name.split(".")[0]].weight.detach())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_global_matches_torch_global_unstructured(seed):
    """Identical masks to repeated prune.global_unstructured (it also ranks only survivors)."""
    net = make_net(seed)
    oracle = copy.deepcopy(net)
    weights = weights_of(net)
    params = [(oracle[key], "weight") for key in ("fc1", "fc2", "conv", "odd")]
    masks = ones_mask(weights)
    for _level in range(LEVELS):
        masks = prune_global(weights, masks, 0.2)
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=0.2)
        for module, _ in params:
            name = next(k for k, m in oracle.items() if m is module) + ".weight"
            assert torch.equal(masks[name], module.weight_mask.bool()), name


@pytest.mark.parametrize("seed", [0, 1])
def test_global_matches_numpy_oracle_with_exclude(seed):
    """Several levels against an independent numpy oracle, with an excluded layer."""
    weights = weights_of(make_net(seed))
    masks = ones_mask(weights)
    expected = ones_mask(weights)
    for _level in range(LEVELS):
        masks = prune_global(weights, masks, 0.3, exclude=["odd.weight"])
        expected = numpy_global_oracle(weights, expected, 0.3, exclude=["odd.weight"])
        for name in masks:
            assert torch.equal(masks[name], expected[name]), name
    assert bool(masks["odd.weight"].all())


# ------------------------------------------------------------------------ hand-made cases


def test_layerwise_ties_lower_index_first():
    """Among equal magnitudes the lower flat index goes first; the big ones survive."""
    w = {"w": torch.tensor([1.0, 1.0, 1.0, 1.0, 2.0, -2.0])}
    new = prune_layerwise(w, ones_mask(w), {"w": 0.5})
    assert new["w"].tolist() == [False, False, False, True, True, True]
    w2 = {"w": torch.ones(2, 2)}
    new2 = prune_layerwise(w2, ones_mask(w2), {"w": 0.5})
    assert new2["w"].tolist() == [[False, False], [True, True]]


def test_negative_weights_ranked_by_magnitude():
    """Negative weights are never pruned for being negative."""
    w = {"w": torch.tensor([-5.0, 0.1, -0.2, 3.0, -0.05, -4.0])}
    new = prune_layerwise(w, ones_mask(w), {"w": 0.5})
    assert new["w"].tolist() == [True, False, False, True, False, True]
    g = prune_global(w, ones_mask(w), 0.5)
    assert torch.equal(g["w"], new["w"])


@pytest.mark.parametrize(
    ("n", "rate", "removed"),
    [(5, 0.5, 2), (7, 0.5, 4), (5, 0.3, 2), (10, 0.25, 2), (6, 0.25, 2), (3, 0.1, 0)],
)
def test_count_is_python_round(n, rate, removed):
    """Exactly round(rate * n) removed (Python's round: 2.5 -> 2, 3.5 -> 4), as torch does."""
    assert removed == round(rate * n)
    w = {"w": torch.randn(n, generator=torch.Generator().manual_seed(n))}
    new = prune_layerwise(w, ones_mask(w), {"w": rate})
    assert n - int(new["w"].sum()) == removed
    g = prune_global(w, ones_mask(w), rate)
    assert n - int(g["w"].sum()) == removed


def test_already_pruned_zeros_not_counted():
    """Rates and ranking use only the survivors, whatever the pruned entries hold."""
    mask = torch.tensor([False, False, False, True, True, True, True, True])
    expected = [False, False, False, False, False, True, True, True]
    for pruned_value in (0.0, 100.0):
        w = {"w": torch.tensor([pruned_value] * 3 + [1.0, 2.0, 3.0, 4.0, 5.0])}
        assert prune_layerwise(w, {"w": mask}, {"w": 0.4})["w"].tolist() == expected
        assert prune_global(w, {"w": mask}, 0.4)["w"].tolist() == expected


def test_surviving_zero_weight_is_pruned_first():
    """A surviving weight that is exactly 0 is a survivor with the lowest magnitude."""
    w = {"w": torch.tensor([3.0, 0.0, -1.0, 2.0])}
    assert prune_layerwise(w, ones_mask(w), {"w": 0.25})["w"].tolist() == [True, False, True, True]


def test_global_ties_by_layer_order_then_index():
    """Global ties: the earlier layer in the dict, then the lower flat index."""
    a = torch.tensor([2.0, 1.0, 1.0])
    b = torch.tensor([1.0, 1.0, 5.0])
    new = prune_global({"a": a, "b": b}, ones_mask({"a": a, "b": b}), 0.5)
    assert new["a"].tolist() == [True, False, False]
    assert new["b"].tolist() == [False, True, True]
    new = prune_global({"b": b, "a": a}, ones_mask({"b": b, "a": a}), 0.5)
    assert new["b"].tolist() == [False, False, True]
    assert new["a"].tolist() == [True, False, True]


def test_global_exclude_keeps_layer_and_ignores_its_weights():
    """Excluded layers keep their masks and do not count toward the amount."""
    w = {"small": torch.tensor([0.001, 0.002]), "big": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    masks = {"small": torch.tensor([True, False]), "big": torch.ones(4, dtype=torch.bool)}
    new = prune_global(w, masks, 0.5, exclude="small")  # a lone string is one name
    assert new["small"].tolist() == [True, False]
    assert new["big"].tolist() == [False, False, True, True]
    assert new["small"] is not masks["small"]


def test_layerwise_missing_rate_means_unpruned():
    """Layers absent from ``rates`` keep their masks."""
    weights = weights_of(make_net(0))
    masks = prune_layerwise(weights, ones_mask(weights), {"fc1.weight": 0.2})
    assert int(masks["fc1.weight"].sum()) == 600 - 120
    assert all(bool(masks[n].all()) for n in masks if n != "fc1.weight")


# ------------------------------------------------------------------------ invariants


def test_counts_follow_iterated_round_and_masks_only_shrink():
    """Per-layer counts follow n_{k+1} = n_k - round(p n_k); masks shrink; inputs unchanged."""
    weights = weights_of(make_net(3))
    weights_before = copy.deepcopy(weights)
    rates = layer_rates(list(weights), 0.2, output_rate=0.1)
    assert rates["odd.weight"] == 0.1
    masks = ones_mask(weights)
    history = [masks]
    for _level in range(8):
        old = history[-1]
        old_copy = {n: m.clone() for n, m in old.items()}
        new = prune_layerwise(weights, old, rates)
        for n in new:
            assert not bool((new[n] & ~old[n]).any())  # subset
            assert torch.equal(old[n], old_copy[n])  # input mask unchanged
            assert new[n].data_ptr() != old[n].data_ptr()  # no aliasing
        history.append(new)
    for name, rate in rates.items():
        n = weights[name].numel()
        counts = [int(h[name].sum()) for h in history]
        assert counts == iterated_counts(n, rate, 8)
        for level, count in enumerate(counts):
            assert abs(count - n * (1 - rate) ** level) <= 0.5 * level + 1e-9
    for name in weights:
        assert torch.equal(weights[name], weights_before[name])


def test_global_inputs_unchanged_and_total_count():
    """Global pruning removes round(p * survivors) in total and leaves inputs alone."""
    weights = weights_of(make_net(4))
    masks = ones_mask(weights)
    total = sum(m.numel() for m in masks.values())
    expected = iterated_counts(total, 0.2, LEVELS)
    for level in range(1, LEVELS + 1):
        before = {n: m.clone() for n, m in masks.items()}
        new = prune_global(weights, masks, 0.2)
        assert all(torch.equal(masks[n], before[n]) for n in masks)
        assert all(not bool((new[n] & ~masks[n]).any()) for n in masks)
        assert sum(int(m.sum()) for m in new.values()) == expected[level]
        masks = new


def test_accepts_module_as_weights():
    """A module can stand in for the weights dict."""
    net = make_net(5)
    weights = weights_of(net)
    masks = ones_mask(net)
    assert all(
        torch.equal(a, b)
        for a, b in zip(
            prune_layerwise(net, masks, {"fc1.weight": 0.3}).values(),
            prune_layerwise(weights, masks, {"fc1.weight": 0.3}).values(),
            strict=True,
        )
    )
    g1, g2 = prune_global(net, masks, 0.3), prune_global(weights, masks, 0.3)
    assert all(torch.equal(g1[n], g2[n]) for n in g1)


# ------------------------------------------------------------------------ validation


def test_rate_validation():
    """Rates outside [0, 1), unknown layers, bad masks and NaN weights raise LTHError."""
    w = {"w": torch.randn(10)}
    m = ones_mask(w)
    for bad in (1.0, -0.1, 1.5, float("nan"), "0.2", True):
        with pytest.raises(LTHError):
            prune_layerwise(w, m, {"w": bad})
        with pytest.raises(LTHError):
            prune_global(w, m, bad)
    with pytest.raises(LTHError, match="typo"):
        prune_layerwise(w, m, {"typo": 0.2})
    with pytest.raises(LTHError, match="typo"):
        prune_global(w, m, 0.2, exclude=["typo"])
    with pytest.raises(LTHError, match="bool"):
        prune_layerwise(w, {"w": torch.ones(10)}, {"w": 0.2})
    with pytest.raises(LTHError, match="shape"):
        prune_global(w, {"w": torch.ones(11, dtype=torch.bool)}, 0.2)
    with pytest.raises(LTHError, match="NaN"):
        prune_layerwise({"w": torch.tensor([1.0, float("nan")])}, {"w": torch.ones(2).bool()},
                        {"w": 0.5})  # fmt: skip
    assert torch.equal(prune_layerwise(w, m, {"w": 0.0})["w"], m["w"])


def test_layer_rates():
    """Same rate everywhere, output_rate for the output layer (last by default)."""
    names = ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert layer_rates(names, 0.2) == dict.fromkeys(names, 0.2)
    assert layer_rates(names, 0.2, output_rate=0.1) == {
        "fc1.weight": 0.2,
        "fc2.weight": 0.2,
        "fc3.weight": 0.1,
    }
    assert layer_rates(names, 0.2, 0.0, output_name="fc1.weight")["fc1.weight"] == 0.0
    for bad in (1.0, -0.2, float("nan")):
        with pytest.raises(LTHError):
            layer_rates(names, bad)
        with pytest.raises(LTHError):
            layer_rates(names, 0.2, output_rate=bad)
    with pytest.raises(LTHError, match="fc9"):
        layer_rates(names, 0.2, 0.1, output_name="fc9.weight")


def test_target_rate():
    """Each level keeps round(size x target^(level/levels)); invalid inputs raise."""
    size = 1000
    mask = torch.ones(size, dtype=torch.bool)
    for level in range(1, 16):
        p = target_rate(mask, 0.036, level, 15)
        kept = int(mask.sum())
        mask = mask.clone()
        mask[mask.nonzero().flatten()[: round(kept * p)]] = False  # which survivors go: any
        assert int(mask.sum()) == round(size * 0.036 ** (level / 15)), level
    assert int(mask.sum()) == 36  # the target, exactly
    # hand-computed: 100 kept, target 0.25 over 2 levels -> 50 at level 1 (rate 0.5)
    assert target_rate(torch.ones(100, dtype=torch.bool), 0.25, 1, 2) == 0.5
    assert target_rate(torch.ones(10, dtype=torch.bool), 1.0, 1, 4) == 0.0
    assert target_rate(torch.zeros(10, dtype=torch.bool), 0.5, 1, 2) == 0.0  # nothing left
    for frac, levels in ((0.0, 3), (1.5, 3), (0.5, 0), (0.5, 2.0), (-0.1, 2)):
        with pytest.raises(LTHError):
            target_rate(mask, frac, 1, levels)


# ------------------------------------------------------------------------ prune_random_like


def ticket_chain(seed=0, levels=3):
    """A chain of layer-wise IMP masks to use as references."""
    weights = weights_of(make_net(seed))
    masks = [ones_mask(weights)]
    rates = layer_rates(list(weights), 0.3, output_rate=0.2)
    for _ in range(levels):
        masks.append(prune_layerwise(weights, masks[-1], rates))
    return masks


def test_random_like_counts_and_chain():
    """Same per-layer counts as the reference; each random mask a subset of the previous one."""
    chain = ticket_chain()
    gen = torch.Generator().manual_seed(0)
    rand = [chain[0]]
    for ref in chain[1:]:
        new = prune_random_like(ref, rand[-1], generator=gen)
        for name in ref:
            assert new[name].dtype == torch.bool and new[name].shape == ref[name].shape
            assert int(new[name].sum()) == int(ref[name].sum())
            assert not bool((new[name] & ~rand[-1][name]).any())
        rand.append(new)
    unchained = prune_random_like(chain[-1], generator=gen)
    assert all(int(unchained[n].sum()) == int(chain[-1][n].sum()) for n in unchained)
    assert not all(torch.equal(unchained[n], chain[-1][n]) for n in unchained)


def test_random_like_deterministic_and_no_global_rng():
    """Same seed -> same masks, other seed -> different; the global RNG is not touched."""
    ref = ticket_chain()[2]
    state = torch.get_rng_state()
    a = prune_random_like(ref, generator=torch.Generator().manual_seed(7))
    b = prune_random_like(ref, generator=torch.Generator().manual_seed(7))
    c = prune_random_like(ref, generator=torch.Generator().manual_seed(8))
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert not all(torch.equal(a[n], c[n]) for n in a)


def test_random_like_roughly_uniform():
    """Every allowed entry is kept with frequency close to kept/allowed."""
    gen = torch.Generator().manual_seed(0)
    ref = {"w": torch.tensor([True, True, True] + [False] * 7)}
    prev = {"w": torch.tensor([True] * 6 + [False] * 4)}
    draws = 3000
    free = torch.zeros(10)
    chained = torch.zeros(10)
    for _ in range(draws):
        free += prune_random_like(ref, generator=gen)["w"].float()
        chained += prune_random_like(ref, prev, generator=gen)["w"].float()
    assert torch.allclose(free / draws, torch.full((10,), 0.3), atol=0.04)
    assert torch.allclose(chained[:6] / draws, torch.full((6,), 0.5), atol=0.04)
    assert chained[6:].sum() == 0


def test_random_like_errors():
    """Bad generator, mismatched layers or a reference larger than previous raise LTHError."""
    ref = {"w": torch.tensor([True, True, False])}
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(TypeError):
        prune_random_like(ref)  # generator is a required keyword
    with pytest.raises(LTHError, match="generator"):
        prune_random_like(ref, generator=0)
    with pytest.raises(LTHError, match="only"):
        prune_random_like(ref, {"w": torch.tensor([True, False, False])}, generator=gen)
    with pytest.raises(LTHError):
        prune_random_like(ref, {"v": torch.ones(3, dtype=torch.bool)}, generator=gen)
    with pytest.raises(LTHError, match="shape"):
        prune_random_like(ref, {"w": torch.ones(4, dtype=torch.bool)}, generator=gen)
    with pytest.raises(LTHError, match="bool"):
        prune_random_like({"w": torch.ones(3)}, generator=gen)


# ------------------------------------------------------------------------ devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    """On the GPU the masks live with the weights and equal the CPU results."""
    weights = weights_of(make_net(6))
    rates = layer_rates(list(weights), 0.2, output_rate=0.1)
    cpu = ones_mask(weights)
    gpu_w = {n: w.cuda() for n, w in weights.items()}
    gpu = ones_mask(gpu_w)
    for _ in range(3):
        cpu = prune_layerwise(weights, cpu, rates)
        gpu = prune_layerwise(gpu_w, gpu, rates)
        assert all(gpu[n].is_cuda and torch.equal(gpu[n].cpu(), cpu[n]) for n in cpu)
    g_cpu = prune_global(weights, cpu, 0.2, exclude=["odd.weight"])
    g_gpu = prune_global(gpu_w, cpu, 0.2, exclude=["odd.weight"])  # CPU masks, GPU weights
    assert all(g_gpu[n].is_cuda and torch.equal(g_gpu[n].cpu(), g_cpu[n]) for n in g_cpu)
    r = prune_random_like(gpu, generator=torch.Generator().manual_seed(0))
    assert all(r[n].is_cuda and int(r[n].sum()) == int(gpu[n].sum()) for n in r)
    r2 = prune_random_like(gpu, generator=torch.Generator("cuda").manual_seed(0))
    assert all(r2[n].is_cuda for n in r2)
    apply_masks(gpu_w, g_gpu)
    assert all(int(gpu_w[n].count_nonzero()) == int(g_gpu[n].sum()) for n in g_gpu)
