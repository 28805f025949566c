"""Tests for lth.pruning.masks: mask construction, application, counting, tables, I/O and
overlap."""

import os

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from lth.errors import LTHError
from lth.pruning.masks import (
    apply_masks,
    check_masks,
    count_remaining,
    jaccard,
    load_masks,
    masked_weights,
    named_weights,
    nonzero_table,
    ones_mask,
    prunable_parameters,
    remaining_fraction,
    save_masks,
)


def small_net() -> nn.Sequential:
    """Linear + BatchNorm + Conv2d + Linear; only the Linear/Conv2d weights are prunable."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 4),
        nn.BatchNorm1d(4),
        nn.ReLU(),
        nn.Conv2d(3, 5, 3),
        nn.Linear(4, 2, bias=False),
    )


# ---------------------------------------------------------------- prunable_parameters / ones_mask


def test_prunable_parameters_weights_only_in_parameter_order():
    """Only Linear/Conv2d weights are listed: no biases, no BatchNorm parameters."""
    assert prunable_parameters(small_net()) == ["0.weight", "3.weight", "4.weight"]


def test_prunable_parameters_nested_and_custom_types():
    """Nested module names are dotted; layer_types selects other module types."""
    net = nn.Sequential()
    net.add_module("block", nn.Sequential(nn.Conv1d(2, 3, 3), nn.Linear(3, 3)))
    net.add_module("head", nn.Linear(3, 1))
    assert prunable_parameters(net) == ["block.1.weight", "head.weight"]
    assert prunable_parameters(net, layer_types=(nn.Conv1d,)) == ["block.0.weight"]
    assert prunable_parameters(nn.Linear(2, 2)) == ["weight"]


def test_prunable_parameters_exclude():
    """exclude leaves names out; a lone string counts as one name; unknown names are errors."""
    net = small_net()
    assert prunable_parameters(net, exclude={"4.weight"}) == ["0.weight", "3.weight"]
    assert prunable_parameters(net, exclude="4.weight") == ["0.weight", "3.weight"]
    with pytest.raises(LTHError, match="fc9.weight"):
        prunable_parameters(net, exclude=["fc9.weight"])


def test_ones_mask_from_module():
    """All-True bool masks shaped like the prunable weights; BN and biases excluded."""
    net = small_net()
    masks = ones_mask(net)
    assert list(masks) == ["0.weight", "3.weight", "4.weight"]
    params = dict(net.named_parameters())
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert mask.shape == params[name].shape
        assert bool(mask.all())
    assert not any("bias" in n or n.startswith("1.") for n in masks)


def test_ones_mask_from_dict_and_names():
    """From a dict every entry by default; ``names`` picks some; unknown names are errors."""
    weights = {"a": torch.zeros(2, 3), "b": torch.zeros(4)}
    assert {k: tuple(v.shape) for k, v in ones_mask(weights).items()} == {"a": (2, 3), "b": (4,)}
    assert list(ones_mask(weights, names=["b"])) == ["b"]
    assert list(ones_mask(small_net(), names=["0.bias"])) == ["0.bias"]
    with pytest.raises(LTHError, match="nope"):
        ones_mask(weights, names=["nope"])
    with pytest.raises(LTHError):
        ones_mask([torch.zeros(2)])


# ----------------------------------------------------------------------------------- apply_masks


def test_apply_masks_zeroes_exactly_the_pruned_entries():
    """Pruned entries become exactly +0.0; kept entries are bit-identical."""
    net = small_net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    masks = ones_mask(net)
    gen = torch.Generator().manual_seed(1)
    for name in masks:
        masks[name] = torch.rand(masks[name].shape, generator=gen) > 0.5
    apply_masks(net, masks)
    after = dict(net.named_parameters())
    for name, p in after.items():
        if name in masks:
            m = masks[name]
            assert torch.equal(p[m], before[name][m])
            assert torch.equal(p[~m], torch.zeros_like(p[~m]))
            assert not torch.signbit(p[~m]).any()  # no -0.0 from negative weights
        else:
            assert torch.equal(p, before[name])  # biases and BN untouched


def test_apply_masks_on_state_dict_and_nonfinite():
    """A state dict is changed in place (so the model too); NaN/inf pruned entries become 0."""
    net = small_net()
    with torch.no_grad():
        net[0].weight[0, 0] = float("nan")
        net[0].weight[0, 1] = float("inf")
    masks = ones_mask(net)
    masks["0.weight"][0, :2] = False
    apply_masks(net.state_dict(), masks)
    assert net[0].weight[0, 0].item() == 0.0 and net[0].weight[0, 1].item() == 0.0
    plain = {"w": torch.tensor([1.0, -2.0, 3.0])}
    apply_masks(plain, {"w": torch.tensor([True, False, True])})
    assert plain["w"].tolist() == [1.0, 0.0, 3.0]


def test_apply_masks_errors_leave_model_untouched():
    """Unknown name or wrong shape -> LTHError, raised before any parameter is changed."""
    net = small_net()
    before = net[0].weight.detach().clone()
    good = torch.zeros_like(net[0].weight, dtype=torch.bool)
    with pytest.raises(LTHError, match="fc9.weight"):
        apply_masks(net, {"0.weight": good, "fc9.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(LTHError, match="shape"):
        apply_masks(net, {"0.weight": good, "4.weight": torch.ones(3, 3, dtype=torch.bool)})
    assert torch.equal(net[0].weight, before)


# ---------------------------------------------------------------------------------- check_masks


def test_check_masks_errors():
    """Names, shapes, dtypes and types are validated."""
    net = small_net()
    check_masks(ones_mask(net), net)
    check_masks(ones_mask(net), named_weights(net))
    with pytest.raises(LTHError, match="no parameter|matches no parameter"):
        check_masks({"x.weight": torch.ones(2, dtype=torch.bool)}, net)
    with pytest.raises(LTHError, match="shape"):
        check_masks({"0.weight": torch.ones(6, 4, dtype=torch.bool)}, net)
    with pytest.raises(LTHError, match="bool"):
        check_masks({"0.weight": torch.ones(4, 6)}, net)
    with pytest.raises(LTHError, match="not a tensor"):
        check_masks({"0.weight": [[True]]}, net)
    with pytest.raises(LTHError):
        check_masks([torch.ones(2)], net)


# ---------------------------------------------------------------------------------- counting


def test_count_remaining_and_fraction():
    """(kept, total) per layer and kept/total over all layers."""
    masks = {
        "a": torch.tensor([[True, False], [True, True]]),
        "b": torch.tensor([False, False, False, False, True, True]),
    }
    assert count_remaining(masks) == {"a": (3, 4), "b": (2, 6)}
    assert remaining_fraction(masks) == pytest.approx(0.5)
    with pytest.raises(LTHError):
        remaining_fraction({})


def test_nonzero_table_content():
    """Numbers, shapes and the total row appear; columns are aligned."""
    masks = {
        "fc1.weight": torch.tensor([[True, False, True, False]] * 3),  # 6 / 12
        "conv.weight": torch.ones(2, 1, 2, 2, dtype=torch.bool),  # 8 / 8
        "out.weight": torch.tensor([True, False, False, False] * 5),  # 5 / 20
    }
    table = nonzero_table(masks)
    lines = table.splitlines()
    header = lines[0]
    for word in ("layer", "nonzero", "total", "% remaining", "shape"):
        assert word in header
    rows = {line.split()[0]: line for line in lines if line.split()[0].endswith(".weight")}
    assert rows["fc1.weight"].split()[1:4] == ["6", "12", "50.0%"]
    assert rows["conv.weight"].split()[1:4] == ["8", "8", "100.0%"]
    assert rows["out.weight"].split()[1:4] == ["5", "20", "25.0%"]
    assert "(3, 4)" in rows["fc1.weight"] and "(2, 1, 2, 2)" in rows["conv.weight"]
    total = lines[-1]
    assert total.split()[:3] == ["total", "19", "40"]
    assert "(47.5% remaining, 2.11× compression)" in total
    # right-aligned numeric columns end where their header ends
    for col in ("nonzero", "total", "% remaining"):
        end = header.index(col) + len(col)
        for line in rows.values():
            assert line[end - 1] != " " and line[end] == " "


def test_nonzero_table_counts_actual_weights():
    """With ``weights`` the nonzero column counts real nonzero values, not mask entries."""
    masks = {"w": torch.ones(4, dtype=torch.bool)}
    weights = {"w": torch.tensor([0.0, 1.0, -2.0, 0.0])}
    table = nonzero_table(masks, weights)
    assert table.splitlines()[2].split()[1:4] == ["2", "4", "50.0%"]
    assert "(50.0% remaining, 2.00× compression)" in table.splitlines()[-1]
    assert "0.0%" in nonzero_table({"w": torch.zeros(3, dtype=torch.bool)})
    with pytest.raises(LTHError):
        nonzero_table(masks, {"v": torch.ones(4)})


# ---------------------------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    """Bool masks come back exactly, in their original (non-alphabetical) order."""
    gen = torch.Generator().manual_seed(3)
    masks = {
        "z.weight": torch.rand(5, 7, generator=gen) > 0.3,
        "a.weight": torch.rand(2, 3, 3, 3, generator=gen) > 0.5,
        "m.weight": torch.zeros(4, dtype=torch.bool),
    }
    path = tmp_path / "sub" / "masks.safetensors"
    save_masks(masks, path)
    loaded = load_masks(path)
    assert list(loaded) == list(masks)
    for name in masks:
        assert loaded[name].dtype == torch.bool
        assert torch.equal(loaded[name], masks[name])
    # overwriting works and leaves no temporary files behind
    save_masks({"a.weight": masks["a.weight"]}, str(path))
    assert list(load_masks(str(path))) == ["a.weight"]
    assert os.listdir(path.parent) == ["masks.safetensors"]


def test_saved_mask_file_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        save_masks({"w": torch.ones(3, dtype=torch.bool)}, tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


def test_load_uint8_file_as_bool(tmp_path):
    """A file written with uint8 tensors loads as bool."""
    path = tmp_path / "u8.safetensors"
    save_file({"w": torch.tensor([0, 1, 1, 0], dtype=torch.uint8)}, str(path))
    loaded = load_masks(path)
    assert loaded["w"].dtype == torch.bool
    assert loaded["w"].tolist() == [False, True, True, False]
    save_file({"w": torch.ones(3)}, str(tmp_path / "f.safetensors"))
    with pytest.raises(LTHError, match="dtype"):
        load_masks(tmp_path / "f.safetensors")


def test_load_missing_or_corrupt_file(tmp_path):
    """Missing, garbage and truncated files all raise LTHError."""
    with pytest.raises(LTHError, match="does not exist"):
        load_masks(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(LTHError, match="corrupt"):
        load_masks(garbage)
    good = tmp_path / "good.safetensors"
    save_masks({"w": torch.ones(1000, dtype=torch.bool)}, good)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-100])
    with pytest.raises(LTHError):
        load_masks(truncated)


def test_save_rejects_non_bool(tmp_path):
    """Float masks are refused rather than silently converted."""
    with pytest.raises(LTHError, match="bool"):
        save_masks({"w": torch.ones(3)}, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()


# ---------------------------------------------------------------------------------- jaccard


def test_jaccard_hand_cases():
    """|A∩B| / |A∪B| over kept entries, summed over layers."""
    a = torch.tensor([True, True, False, False])
    b = torch.tensor([True, False, True, False])
    assert jaccard(a, b) == pytest.approx(1 / 3)
    assert jaccard(a, a) == 1.0
    assert jaccard(torch.zeros(3, dtype=torch.bool), torch.zeros(3, dtype=torch.bool)) == 1.0
    sa = {"x": a, "y": torch.tensor([True, True])}
    sb = {"x": b, "y": torch.tensor([True, False])}
    assert jaccard(sa, sb) == pytest.approx((1 + 1) / (3 + 2))
    with pytest.raises(LTHError):
        jaccard(sa, {"x": b})
    with pytest.raises(LTHError, match="shape"):
        jaccard({"x": a}, {"x": torch.ones(5, dtype=torch.bool)})


def test_masked_weights_copies_with_pruned_entries_at_plus_zero():
    w = torch.tensor([[-1.5, 2.0], [float("nan"), -0.25]])
    bias = torch.tensor([3.0, -4.0])
    mask = torch.tensor([[True, False], [False, True]])
    out = masked_weights({"w": w, "b": bias}, {"w": mask})
    assert torch.equal(out["w"], torch.tensor([[-1.5, 0.0], [0.0, -0.25]]))
    assert not torch.signbit(out["w"][~mask]).any()  # +0, not -0
    assert out["b"] is bias and w[0, 1] == 2.0  # unmasked shared, the input untouched
