"""Tests for lth.core.models: registry, architectures, parameter counts and seeded
initialisation."""

from __future__ import annotations

import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from lth.core.init import INIT_SCHEMES, init_names, initialize
from lth.core.models import (
    ALLOWED_LAYERS,
    MODELS,
    check_flat_sequential,
    count_parameters,
    create_model,
    is_flat_model,
    is_flat_sequential,
    model_names,
    output_layer,
    register_model,
)
from lth.errors import LTHError
from lth.pruning.masks import prunable_parameters

MNIST = (1, 28, 28)
CIFAR = (3, 32, 32)
SHAPES = [MNIST, CIFAR]
ALL_MODELS = ["lenet_300_100", "lenet5", "conv2", "conv4", "conv6"]
GENERAL_MODELS = ["resnet20", "vgg16"]


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
        block = weight_hh[k * hidden : (k + 1) * hidden].detach().double()  # no float32 sums
        eye = torch.eye(hidden, dtype=torch.float64)
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
        block = lstm.weight_hh_l0[k * 16 : (k + 1) * 16].detach().double()
        assert torch.allclose(block.T @ block, torch.eye(8, dtype=torch.float64), atol=1e-5)
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


# ---------------------------------------------------------------------------------------------
# CIFAR ResNet-20 and VGG-16 (general, non-flat models)
# ---------------------------------------------------------------------------------------------


def conv_nobias(c_in: int, c_out: int, k: int) -> int:
    return c_in * c_out * k * k


def bn(c: int) -> int:
    return 2 * c  # weight and bias (running stats are buffers, not parameters)


def expected_resnet20(c: int = 3, classes: int = 10) -> int:
    total = conv_nobias(c, 16, 3) + bn(16)
    c_in = 16
    for stage, width in enumerate([16, 32, 64]):
        for block in range(3):
            total += conv_nobias(c_in, width, 3) + bn(width)
            total += conv_nobias(width, width, 3) + bn(width)
            if stage > 0 and block == 0:  # 1x1 conv + BN projection shortcut
                total += conv_nobias(c_in, width, 1) + bn(width)
            c_in = width
    return total + linear(64, classes)


def expected_vgg16(c: int = 3, classes: int = 10, h: int = 32, w: int = 32) -> int:
    total, c_in = 0, c
    for spec in [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512,
                 512]:  # fmt: skip
        if spec == "M":
            h, w = h // 2, w // 2
        else:
            total += conv(c_in, spec, 3) + bn(spec)
            c_in = spec
    return total + linear(c_in * (h // 2) * (w // 2), classes)


def test_hand_counts_resnet20_vgg16():
    # ResNet-20 on paper: stem 432 + 32; stage 1: 3 x 2 x (2304 + 32) = 14,016; stage 2:
    # 4608 + 9216 + 512 + 3 x 64 (first block) + 2 x 2 x (9216 + 64) = 51,648; stage 3:
    # 18,432 + 36,864 + 2048 + 3 x 128 + 2 x 2 x (36,864 + 128) = 205,696; fc 650.
    assert expected_resnet20() == 432 + 32 + 14_016 + 51_648 + 205_696 + 650 == 272_474
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters.
    assert 260_000 <= expected_resnet20() <= 280_000
    assert round(expected_resnet20() / 1e6, 2) == 0.27
    # VGG-16: convs (with bias) 14,714,688, BN 2 x 4224 = 8448, fc 5130.
    assert expected_vgg16() == 14_714_688 + 8_448 + 5_130 == 14_728_266
    assert round(expected_vgg16() / 1e6, 1) == 14.7


@pytest.mark.parametrize("name", GENERAL_MODELS)
def test_general_models_forward_and_counts(name):
    model = create_model(name, CIFAR, 10)
    assert name in model_names()
    model.eval()
    assert model(torch.zeros(2, *CIFAR)).shape == (2, 10)
    model.train()
    assert model(torch.randn(2, *CIFAR, generator=gen(0))).shape == (2, 10)
    expected = expected_resnet20() if name == "resnet20" else expected_vgg16()
    assert count_parameters(model) == expected
    assert output_layer(model) == "fc.weight"
    assert dict(model.named_parameters())["fc.weight"].shape == (10, 64 if name == "resnet20"
                                                                 else 512)  # fmt: skip
    big = create_model(name, (3, 64, 48), 100)
    assert big(torch.zeros(2, 3, 64, 48)).shape == (2, 100)


def test_resnet20_structure():
    model = create_model("resnet20", CIFAR)
    params = dict(model.named_parameters())
    for pname in [
        "conv.weight",
        "bn.weight",
        "bn.bias",
        "blocks.0.conv1.weight",
        "blocks.0.bn2.bias",
        "blocks.3.shortcut.0.weight",
        "blocks.3.shortcut.1.weight",
        "blocks.6.shortcut.0.weight",
        "blocks.8.conv2.weight",
        "fc.weight",
        "fc.bias",
    ]:
        assert pname in params, pname  # fmt: skip
    assert len(model.blocks) == 9
    shortcuts = [i for i, b in enumerate(model.blocks) if len(b.shortcut) > 0]
    assert shortcuts == [3, 6]
    for i, block in enumerate(model.blocks):
        width = [16, 32, 64][i // 3]
        assert block.conv1.out_channels == block.conv2.out_channels == width
        assert block.conv1.stride == ((2, 2) if i in (3, 6) else (1, 1))
        assert block.conv2.stride == (1, 1)
    assert model.blocks[3].shortcut[0].kernel_size == (1, 1)
    assert model.blocks[3].shortcut[0].stride == (2, 2)
    assert isinstance(model.blocks[3].shortcut[1], nn.BatchNorm2d)
    convs = _convs(model)
    assert len(convs) == 1 + 18 + 2
    assert all(c.bias is None for c in convs)
    # 32x32 -> 32 -> 16 -> 8 spatially: check via hooks on the last block of each stage
    sizes = []
    hooks = [model.blocks[i].register_forward_hook(lambda m, i, o: sizes.append(o.shape[1:]))
             for i in (2, 5, 8)]  # fmt: skip
    model(torch.zeros(2, *CIFAR))
    for h in hooks:
        h.remove()
    assert sizes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    # Other channel counts and sizes (e.g. MNIST) work too.
    mnist = create_model("resnet20", MNIST)
    assert mnist(torch.zeros(2, *MNIST)).shape == (2, 10)
    assert count_parameters(mnist) == expected_resnet20(c=1)


def test_vgg16_structure():
    model = create_model("vgg16", CIFAR)
    convs = _convs(model)
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512,
                                               512, 512, 512]  # fmt: skip
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 4
    assert model.fc.in_features == 512
    assert "layers.0.conv.weight" in dict(model.named_parameters())
    assert "layers.0.bn.weight" in dict(model.named_parameters())
    big = create_model("vgg16", (3, 64, 64), 10)
    assert big.fc.in_features == 512 * 2 * 2
    assert count_parameters(big) == expected_vgg16(h=64, w=64)
    with pytest.raises(LTHError) as ei:
        create_model("vgg16", MNIST)
    assert "at least 32" in _one_line(ei)


def test_flatness():
    for name in ALL_MODELS:
        assert is_flat_model(name)
        assert is_flat_sequential(create_model(name, CIFAR))
    for name in GENERAL_MODELS:
        assert not is_flat_model(name)
        model = create_model(name, CIFAR)
        assert not is_flat_sequential(model)
        with pytest.raises(LTHError) as ei:  # the batched engine would reject it
            check_flat_sequential(model, name=name)
        assert name in _one_line(ei)
    with pytest.raises(LTHError) as ei:
        is_flat_model("resnet9000")
    assert "resnet20" in _one_line(ei)


def test_register_general_model():
    @register_model("_test_general_bn", flat=False)
    def with_bn(input_shape, num_classes):
        c, h, w = input_shape
        return nn.Sequential(
            OrderedDict(bn=nn.BatchNorm2d(c), flatten=nn.Flatten(), fc=nn.Linear(c * h * w, 3))
        )

    @register_model("_test_general_nolinear", flat=False)
    def no_linear(input_shape, num_classes):
        return nn.Sequential(nn.Conv2d(input_shape[0], 2, 1))

    @register_model("_test_general_notmodule", flat=False)
    def not_module(input_shape, num_classes):
        return "model"

    try:
        model = create_model("_test_general_bn", (2, 3, 3))
        assert output_layer(model) == "fc.weight"
        assert not is_flat_sequential(model) and not is_flat_model("_test_general_bn")
        with pytest.raises(LTHError) as ei:
            create_model("_test_general_nolinear")
        assert "nn.Linear" in _one_line(ei)
        with pytest.raises(LTHError) as ei:
            create_model("_test_general_notmodule")
        assert "nn.Module" in _one_line(ei)
    finally:
        for name in ("_test_general_bn", "_test_general_nolinear", "_test_general_notmodule"):
            MODELS.pop(name, None)


@pytest.mark.parametrize("name", GENERAL_MODELS)
def test_general_models_bn_not_prunable(name):
    model = create_model(name, CIFAR)
    bns = [n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == (19 + 2 if name == "resnet20" else 13)
    names = prunable_parameters(model)
    expected = [
        f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))
    ]
    assert sorted(names) == sorted(expected)
    assert len(names) == (1 + 18 + 2 + 1 if name == "resnet20" else 13 + 1)
    assert names[-1] == output_layer(model) == "fc.weight"
    for bn_name in bns:
        assert f"{bn_name}.weight" not in names and f"{bn_name}.bias" not in names
    assert not any(n.endswith("bias") for n in names)


@pytest.mark.parametrize("name", GENERAL_MODELS)
def test_general_models_init(name):
    state = torch.get_rng_state()
    a = create_model(name, CIFAR, generator=gen(3), scheme="kaiming_normal")
    b = create_model(name, CIFAR, generator=gen(3), scheme="kaiming_normal")
    c = create_model(name, CIFAR, generator=gen(4), scheme="kaiming_normal")
    assert torch.equal(state, torch.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys() == sc.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    for pname in prunable_parameters(a):
        assert not torch.equal(sa[pname], sc[pname]), pname
    # conv weights follow the scheme: kaiming normal std sqrt(2 / fan_in)
    w = (a.blocks[8].conv2 if name == "resnet20" else a.layers[-1].conv).weight.detach()
    assert w.std().item() == pytest.approx(math.sqrt(2 / w[0].numel()), rel=0.05)

    # BN: weight 1, bias 0, running stats reset even after they were disturbed by training.
    a.train()
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.5)
        a(torch.randn(2, *CIFAR, generator=gen(0)))
    initialize(a, "kaiming_normal", gen(3))
    for key, value in a.state_dict().items():
        assert torch.equal(value, sb[key]), key
    for m in a.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
            assert torch.all(m.running_mean == 0) and torch.all(m.running_var == 1)
            assert m.num_batches_tracked.item() == 0
        if isinstance(m, nn.Conv2d) and m.bias is not None:
            assert torch.count_nonzero(m.bias) == 0


@pytest.mark.parametrize("name", GENERAL_MODELS)
def test_general_models_train_step(name):
    model = create_model(name, CIFAR, generator=gen(0))
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, *CIFAR, generator=gen(1))
    y = torch.tensor([1, 7])
    loss = nn.functional.cross_entropy(model(x), y)
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    assert model.fc.weight.grad.abs().sum() > 0
    assert _convs(model)[0].weight.grad.abs().sum() > 0  # gradient reaches the first conv
    with torch.no_grad():  # one plain SGD step (torch.optim's first import is slow)
        for p in model.parameters():
            p.sub_(0.1 * p.grad)
    after = model.state_dict()
    for pname in ["fc.weight", prunable_parameters(model)[0], prunable_parameters(model)[-2]]:
        assert not torch.equal(before[pname], after[pname]), pname
    first_bn = next(n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d))
    assert not torch.equal(before[f"{first_bn}.running_mean"], after[f"{first_bn}.running_mean"])
    assert after[f"{first_bn}.num_batches_tracked"].item() == 1
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()
