"""Tests for lth.models: registry, architectures, parameter counts and seeded initialisation."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from lth.errors import LTHError
from lth.models import (
    ALLOWED_LAYERS,
    INIT_SCHEMES,
    MODELS,
    check_flat_sequential,
    count_parameters,
    create_model,
    init_names,
    initialize,
    model_names,
    output_layer,
    register_model,
)

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
SHAPES = [MNIST, CIFAR]
ALL_MODELS = ["lenet_300_100", "lenet5", "conv2", "conv4", "conv6"]


# ---------------------------------------------------------------------------------------------
# Independent hand arithmetic for parameter counts
# ---------------------------------------------------------------------------------------------


def linear(n_in: int, n_out: int) -> int:
    return n_in * n_out + n_out


def conv(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k + c_out


def expected_params(name: str, shape: tuple[int, int, int], classes: int = 10) -> int:
    c, h, w = shape
    if name == "lenet_300_100":
        return linear(c * h * w, 300) + linear(300, 100) + linear(100, classes)
    if name == "lenet5":
        # conv 5x5 pad 2 keeps size, pool halves, conv 5x5 shrinks by 4, pool halves
        side_h, side_w = (h // 2 - 4) // 2, (w // 2 - 4) // 2
        flat = 16 * side_h * side_w
        return (
            conv(c, 6, 5)
            + conv(6, 16, 5)
            + linear(flat, 120)
            + linear(120, 84)
            + linear(84, classes)
        )
    blocks = {"conv2": [64], "conv4": [64, 128], "conv6": [64, 128, 256]}[name]
    total, c_in = 0, c
    for ch in blocks:
        total += conv(c_in, ch, 3) + conv(ch, ch, 3)
        c_in = ch
        h, w = h // 2, w // 2
    return total + linear(c_in * h * w, 256) + linear(256, 256) + linear(256, classes)


def expected_layer_names(name: str) -> list[str]:
    if name == "lenet_300_100":
        return ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]
    if name == "lenet5":
        return [
            "conv1", "relu1", "pool1", "conv2", "relu2", "pool2",
            "flatten", "fc1", "relu3", "fc2", "relu4", "fc3",
        ]  # fmt: skip
    n_blocks = {"conv2": 1, "conv4": 2, "conv6": 3}[name]
    names, conv_i, relu_i = [], 0, 0
    for b in range(1, n_blocks + 1):
        for _ in range(2):
            conv_i += 1
            relu_i += 1
            names += [f"conv{conv_i}", f"relu{relu_i}"]
        names.append(f"pool{b}")
    names += ["flatten", "fc1", f"relu{relu_i + 1}", "fc2", f"relu{relu_i + 2}", "fc3"]
    return names


def test_hand_counts_match_published_numbers():
    # Literal values, computed on paper.
    assert expected_params("lenet_300_100", MNIST) == 266_610
    assert expected_params("lenet5", MNIST) == 61_706
    assert expected_params("lenet5", CIFAR) == 83_126
    assert expected_params("conv2", CIFAR) == 4_301_642
    assert expected_params("conv4", CIFAR) == 2_425_930
    assert expected_params("conv6", CIFAR) == 2_262_602
    # Frankle & Carbin 2019, Figure 2 table: Conv-2 4.3M, Conv-4 2.4M, Conv-6 2.3M (CIFAR-10).
    assert round(expected_params("conv2", CIFAR) / 1e6, 1) == 4.3
    assert round(expected_params("conv4", CIFAR) / 1e6, 1) == 2.4
    assert round(expected_params("conv6", CIFAR) / 1e6, 1) == 2.3


# ---------------------------------------------------------------------------------------------
# Architectures
# ---------------------------------------------------------------------------------------------


def test_registry_lists_all_models():
    assert set(ALL_MODELS) <= set(model_names())
    assert model_names() == sorted(model_names())
    assert set(model_names()) == set(MODELS)


@pytest.mark.parametrize("shape", SHAPES, ids=["mnist", "cifar"])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_structure(name, shape):
    model = create_model(name, input_shape=shape, num_classes=10)
    assert type(model) is nn.Sequential
    assert [n for n, _ in model.named_children()] == expected_layer_names(name)
    for child in model.children():
        assert type(child) in ALLOWED_LAYERS
        assert list(child.children()) == []
    check_flat_sequential(model)

    out = model(torch.zeros(4, *shape))
    assert out.shape == (4, 10)

    assert count_parameters(model) == expected_params(name, shape)
    assert output_layer(model) == "fc3.weight"
    assert dict(model.named_parameters())["fc3.weight"].shape[0] == 10
    for pname, _ in model.named_parameters():
        layer, kind = pname.split(".")
        assert kind in ("weight", "bias")
        assert layer.startswith(("conv", "fc"))


def test_specific_layer_shapes():
    m = create_model("lenet_300_100")
    assert (m.fc1.in_features, m.fc1.out_features) == (784, 300)
    assert (m.fc2.in_features, m.fc2.out_features) == (300, 100)
    assert (m.fc3.in_features, m.fc3.out_features) == (100, 10)
    assert count_parameters(m) == 266_610
    assert create_model("lenet_300_100", CIFAR).fc1.in_features == 3072

    m = create_model("lenet5", MNIST)
    assert m.conv1.padding == (2, 2) and m.conv1.kernel_size == (5, 5)
    assert m.conv2.padding == (0, 0) and m.conv2.out_channels == 16
    assert m.fc1.in_features == 16 * 5 * 5
    assert create_model("lenet5", CIFAR).fc1.in_features == 16 * 6 * 6

    for name, flat_cifar, flat_mnist in [
        ("conv2", 16 * 16 * 64, 14 * 14 * 64),
        ("conv4", 8 * 8 * 128, 7 * 7 * 128),
        ("conv6", 4 * 4 * 256, 3 * 3 * 256),
    ]:
        m = create_model(name, CIFAR)
        assert m.fc1.in_features == flat_cifar
        assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in _convs(m))
        assert create_model(name, MNIST).fc1.in_features == flat_mnist


def _convs(model):
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_num_classes_and_other_shapes():
    m = create_model("conv4", input_shape=(3, 64, 48), num_classes=100)
    assert m(torch.zeros(2, 3, 64, 48)).shape == (2, 100)
    assert count_parameters(m) == expected_params("conv4", (3, 64, 48), 100)
    m = create_model("lenet5", input_shape=[1, 12, 12], num_classes=2)
    assert m(torch.zeros(1, 1, 12, 12)).shape == (1, 2)


def test_create_model_leaves_global_rng_alone():
    state = torch.get_rng_state()
    create_model("conv2", CIFAR)
    assert torch.equal(state, torch.get_rng_state())


def test_create_model_with_generator_initialises():
    a = create_model("lenet_300_100", generator=3)
    b = create_model("lenet_300_100", generator=torch.Generator().manual_seed(3))
    c = create_model("lenet_300_100", generator=3, scheme="kaiming_normal")
    assert torch.equal(a.fc1.weight, b.fc1.weight)
    assert not torch.equal(a.fc1.weight, c.fc1.weight)
    assert torch.count_nonzero(a.fc1.bias) == 0


# ---------------------------------------------------------------------------------------------
# Registry errors
# ---------------------------------------------------------------------------------------------


def _one_line(exc_info) -> str:
    msg = str(exc_info.value)
    assert "\n" not in msg and msg
    return msg


def test_unknown_model_lists_valid_names():
    with pytest.raises(LTHError) as ei:
        create_model("resnet9000")
    msg = _one_line(ei)
    assert "resnet9000" in msg
    for name in ALL_MODELS:
        assert name in msg


@pytest.mark.parametrize(
    "shape",
    [(28, 28), (1, 28, 28, 1), (0, 28, 28), (1, -1, 28), (1, 28.0, 28), "1x28x28", 784, None,
     (True, 28, 28)],
)  # fmt: skip
def test_bad_input_shape(shape):
    with pytest.raises(LTHError) as ei:
        create_model("lenet5", input_shape=shape)
    assert "(C, H, W)" in _one_line(ei)


@pytest.mark.parametrize("classes", [0, -3, 2.5, "10", True])
def test_bad_num_classes(classes):
    with pytest.raises(LTHError) as ei:
        create_model("lenet5", num_classes=classes)
    assert "num_classes" in _one_line(ei)


def test_input_too_small_says_minimum():
    with pytest.raises(LTHError) as ei:
        create_model("lenet5", input_shape=(1, 11, 11))
    assert "at least 12" in _one_line(ei)
    with pytest.raises(LTHError) as ei:
        create_model("conv6", input_shape=(3, 7, 32))
    assert "at least 8" in _one_line(ei)
    create_model("conv6", input_shape=(3, 8, 8))


def test_register_model_and_flatness_check():
    @register_model("_test_tiny")
    def tiny(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(
            OrderedDict(flatten=nn.Flatten(), fc1=nn.Linear(c * h * w, num_classes))
        )

    @register_model("_test_nested")
    def nested(input_shape, num_classes):
        return nn.Sequential(OrderedDict(block=nn.Sequential(nn.Flatten()), fc1=nn.Linear(1, 1)))

    @register_model("_test_bn")
    def with_bn(input_shape, num_classes):
        return nn.Sequential(OrderedDict(bn=nn.BatchNorm2d(1), fc1=nn.Linear(1, 1)))

    try:
        assert "_test_tiny" in model_names()
        m = create_model("_test_tiny", (2, 3, 3), 4)
        assert output_layer(m) == "fc1.weight"
        with pytest.raises(LTHError) as ei:
            register_model("_test_tiny")(tiny)
        assert "already registered" in _one_line(ei)
        with pytest.raises(LTHError) as ei:
            create_model("_test_nested")
        assert "'block'" in _one_line(ei)
        with pytest.raises(LTHError) as ei:
            create_model("_test_bn")
        assert "BatchNorm2d" in _one_line(ei)
    finally:
        for name in ("_test_tiny", "_test_nested", "_test_bn"):
            MODELS.pop(name, None)

    with pytest.raises(LTHError):
        check_flat_sequential(nn.Sequential(nn.Flatten(), nn.ReLU()))
    with pytest.raises(LTHError):
        check_flat_sequential(nn.Linear(3, 3))


def test_output_layer_on_other_models():
    assert output_layer(nn.Linear(2, 2)) == "weight"
    model = nn.Sequential(OrderedDict(body=nn.Sequential(nn.Linear(2, 3)), head=nn.Linear(3, 1)))
    assert output_layer(model) == "head.weight"
    with pytest.raises(LTHError) as ei:
        output_layer(nn.Sequential(nn.Conv2d(1, 1, 3)))
    _one_line(ei)


# ---------------------------------------------------------------------------------------------
# Initialisation
# ---------------------------------------------------------------------------------------------


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_init_names():
    assert init_names() == sorted(INIT_SCHEMES)
    assert set(init_names()) == {
        "xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform", "pytorch_default",
    }  # fmt: skip


def _big_net() -> nn.Sequential:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(32, 64, 3),  # fan_in 288, fan_out 576
            flatten=nn.Flatten(),
            fc1=nn.Linear(1000, 600),
        )
    )


@pytest.mark.parametrize(
    "scheme, std_fn",
    [
        ("xavier_normal", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("xavier_uniform", lambda fi, fo: math.sqrt(2 / (fi + fo))),
        ("kaiming_normal", lambda fi, fo: math.sqrt(2 / fi)),
        ("kaiming_uniform", lambda fi, fo: math.sqrt(2 / fi)),
        ("pytorch_default", lambda fi, fo: 1 / math.sqrt(3 * fi)),
    ],
)
def test_weight_statistics(scheme, std_fn):
    model = _big_net()
    initialize(model, scheme, gen(1))
    for layer, fan_in, fan_out in [(model.fc1, 1000, 600), (model.conv1, 288, 576)]:
        w = layer.weight.detach()
        expected = std_fn(fan_in, fan_out)
        assert abs(w.mean().item()) < 0.02 * expected + 1e-4
        assert w.std().item() == pytest.approx(expected, rel=0.03)
        if scheme.endswith("uniform") or scheme == "pytorch_default":
            assert w.abs().max().item() <= expected * math.sqrt(3) * (1 + 1e-6)
            assert w.abs().max().item() > expected * math.sqrt(3) * 0.99
        else:  # Gaussian: some values beyond 3 sigma (uniform never exceeds 1.74 sigma)
            assert w.abs().max().item() > 3 * expected
        if scheme == "pytorch_default":
            assert torch.count_nonzero(layer.bias) == layer.bias.numel()
            assert layer.bias.abs().max().item() <= 1 / math.sqrt(fan_in)
        else:
            assert torch.count_nonzero(layer.bias) == 0


def test_pytorch_default_matches_torch_bit_for_bit():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        reference = nn.Sequential(
            nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 5), nn.LSTM(5, 7, num_layers=2)
        )
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 5), nn.LSTM(5, 7, num_layers=2)
    )
    initialize(model, "pytorch_default", gen(123))
    ref, got = reference.state_dict(), model.state_dict()
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


@pytest.mark.parametrize("scheme", sorted(INIT_SCHEMES))
@pytest.mark.parametrize("name", ["lenet5", "conv2"])
def test_determinism_and_global_rng_untouched(name, scheme):
    a = create_model(name, CIFAR)
    b = create_model(name, CIFAR)
    c = create_model(name, CIFAR)
    state = torch.get_rng_state()
    initialize(a, scheme, gen(7))
    initialize(b, scheme, gen(7))
    initialize(c, scheme, gen(8))
    assert torch.equal(state, torch.get_rng_state())
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key]), key
        if key.endswith("weight"):
            assert not torch.equal(value, c.state_dict()[key]), key


def test_int_seed_equals_generator():
    a, b = create_model("lenet_300_100"), create_model("lenet_300_100")
    initialize(a, "xavier_normal", 5)
    initialize(b, "xavier_normal", gen(5))
    assert torch.equal(a.fc2.weight, b.fc2.weight)


def test_reinitialising_overwrites_everything():
    model = create_model("lenet5", CIFAR)
    initialize(model, "xavier_normal", gen(0))
    first = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    initialize(model, "xavier_normal", gen(0))
    for key, value in model.state_dict().items():
        assert torch.equal(value, first[key]), key


def _check_gate_blocks_orthogonal(weight_hh: torch.Tensor, hidden: int, gates: int) -> None:
    assert weight_hh.shape[0] == gates * hidden
    for k in range(gates):
        block = weight_hh[k * hidden : (k + 1) * hidden].detach()
        eye = torch.eye(hidden)
        assert torch.allclose(block @ block.T, eye, atol=1e-5)


@pytest.mark.parametrize("scheme", ["xavier_normal", "kaiming_normal", "xavier_uniform"])
@pytest.mark.parametrize("cls, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_init(cls, gates, scheme):
    hidden, inp = 64, 48
    model = nn.Sequential(cls(inp, hidden, num_layers=2, bidirectional=True), nn.Linear(hidden, 3))
    state = torch.get_rng_state()
    initialize(model, scheme, gen(0))
    assert torch.equal(state, torch.get_rng_state())
    rnn = model[0]
    for pname, p in rnn.named_parameters():
        if pname.startswith("bias"):
            assert torch.count_nonzero(p) == 0, pname
        elif pname.startswith("weight_hh"):
            _check_gate_blocks_orthogonal(p, hidden, gates)
        elif pname.startswith("weight_ih"):
            fan_in = p.shape[1]
            expected = (
                math.sqrt(2 / (fan_in + hidden))
                if scheme.startswith("xavier")
                else math.sqrt(2 / fan_in)
            )
            for k in range(gates):
                block = p[k * hidden : (k + 1) * hidden].detach()
                assert block.std().item() == pytest.approx(expected, rel=0.1), pname
            # input weights are not orthogonal
            assert not torch.allclose(p[:hidden] @ p[:hidden].T, torch.eye(hidden), atol=1e-2)
    other = nn.Sequential(cls(inp, hidden, num_layers=2, bidirectional=True), nn.Linear(hidden, 3))
    initialize(other, scheme, gen(0))
    for (k, v), v2 in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(v, v2), k


def test_lstm_projection_and_cells():
    lstm = nn.LSTM(10, 16, proj_size=8)
    initialize(lstm, "xavier_normal", gen(0))
    # weight_hh is (4H, P): each (H, P) gate block has orthonormal columns
    for k in range(4):
        block = lstm.weight_hh_l0[k * 16 : (k + 1) * 16].detach()
        assert torch.allclose(block.T @ block, torch.eye(8), atol=1e-5)
    assert torch.count_nonzero(lstm.bias_ih_l0) == 0

    for cls, gates in [(nn.LSTMCell, 4), (nn.GRUCell, 3), (nn.RNNCell, 1)]:
        cell = cls(12, 20)
        initialize(cell, "kaiming_uniform", gen(1))
        _check_gate_blocks_orthogonal(cell.weight_hh, 20, gates)
        assert torch.count_nonzero(cell.bias_hh) == 0
        assert cell.weight_ih.abs().max().item() <= math.sqrt(6 / 12) + 1e-6


def test_norm_layers_and_embedding():
    model = nn.Sequential(
        nn.Embedding(50, 8, padding_idx=0),
        nn.LayerNorm(8),
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.GroupNorm(2, 4),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(2, 3)
    model[3].running_mean.fill_(5.0)
    initialize(model, "xavier_normal", gen(0))
    for norm in (model[1], model[3], model[4]):
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    assert torch.all(model[3].running_mean == 0) and torch.all(model[3].running_var == 1)
    emb = model[0].weight.detach()
    assert torch.all(emb[0] == 0)
    assert emb[1:].std().item() == pytest.approx(1.0, rel=0.2)


class _Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.empty(100))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.scale)


class _NoReset(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(3))


def test_unknown_module_types():
    a, b = nn.Sequential(_Scale(), nn.Linear(2, 2)), nn.Sequential(_Scale(), nn.Linear(2, 2))
    state = torch.get_rng_state()
    initialize(a, "xavier_normal", gen(4))
    initialize(b, "xavier_normal", gen(4))
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(a[0].scale, b[0].scale)

    with pytest.raises(LTHError) as ei:
        initialize(nn.Sequential(_NoReset()), "xavier_normal", gen(0))
    assert "_NoReset" in _one_line(ei)


def test_init_errors():
    model = create_model("lenet_300_100")
    with pytest.raises(LTHError) as ei:
        initialize(model, "glorot", gen(0))
    msg = _one_line(ei)
    assert "glorot" in msg
    for name in INIT_SCHEMES:
        assert name in msg
    with pytest.raises(LTHError) as ei:
        initialize(model, "xavier_normal")
    assert "generator" in _one_line(ei)
    with pytest.raises(LTHError) as ei:
        initialize(model, "xavier_normal", "seed")
    _one_line(ei)
    with pytest.raises(LTHError):
        create_model("lenet_300_100", generator=0, scheme="nope")
