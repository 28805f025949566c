"""Tickets as artifacts (lth.runfolder.export, lth.pruning.shrink, lth.pruning.sparse, masks in the
user's own loop).

One tiny real study (conftest's session ``pruned_run``: MNIST, 3 levels x 200 iterations, 75%
of the hidden weights pruned per level so that the last level has dead units) is exported in
every format; every round trip is checked on the whole real MNIST test set.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn
from torch.nn.utils import prune

from conftest import assert_one_line, real_data
from helpers import PRUNED_RUN
from lth.cli import main
from lth.core.models import create_model
from lth.data import load_dataset
from lth.errors import LTHError
from lth.pruning.masks import (
    apply_masks,
    attach_masks,
    detach_masks,
    masks_from_torch_prune,
    ones_mask,
    remaining_fraction,
)
from lth.pruning.selection import layer_rates, prune_layerwise
from lth.pruning.shrink import build_architecture, dead_units, shrink
from lth.pruning.sparse import csr_parts, from_csr_parts, index_dtype, sparse_inference
from lth.runfolder.export import (
    FORMATS,
    apply_torch_prune,
    export_model,
    export_ticket,
    from_torch_prune,
    load_export,
    read_metadata,
)
from lth.runfolder.runs import load_ticket

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "inference.py"
CONFIG = PRUNED_RUN  # the settings of the run the tests export (conftest: pruned_run)
LAST = CONFIG.levels  # the run's last level
assert LAST == 3  # the level range the tests name ("levels 0 to 3")


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every test here trains on one thread (see conftest)."""


@pytest.fixture(scope="module")
def data():
    """The run's data (the same split)."""
    return load_dataset("mnist", real_data("mnist"), val_size=CONFIG.val_size)


@pytest.fixture(scope="module")
def run(pruned_run):
    """The shared pruned run (conftest), only read here: every export goes to a tmp_path."""
    return pruned_run


def outputs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


def same_masks(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k].cpu(), b[k].cpu()) for k in a)


# ------------------------------------------------------------------------------ formats


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_round_trips_on_the_real_test_set(run, data, tmp_path, fmt):
    ticket, masks = load_ticket(run, LAST)
    reference = outputs(ticket, data.test_x)
    info = export_ticket(run, LAST, format=fmt, out=tmp_path / "t.safetensors")
    assert info.path.is_file() and info.size == info.path.stat().st_size
    assert info.weights_remaining == pytest.approx(100 * remaining_fraction(masks))
    model, loaded = load_export(info.path)
    got = outputs(model, data.test_x)
    if fmt.startswith("shrunk"):
        small = shrink(ticket, masks)
        assert sum(small.removed.values()) > 0  # the ticket has dead units
        assert type(model) is nn.Sequential
        assert info.metadata["layer_sizes"] == small.sizes
        assert info.metadata["units_removed"] == small.removed
        # what lth.runfolder.runs has when it saves a level
        template = create_model("lenet_300_100")
        assert dead_units(masks, template, weights=ticket.state_dict()) == small.removed
        assert same_masks(loaded, small.masks)
        torch.testing.assert_close(got, reference, rtol=1e-5, atol=1e-5)
    else:  # the identical model
        assert torch.equal(got, reference)
        assert same_masks(loaded, masks)
        state = ticket.state_dict()
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    meta = read_metadata(info.path)
    assert meta["lth_format"] == fmt
    assert (meta["model"], meta["dataset"], meta["level"], meta["branch"]) == (
        "lenet_300_100", "mnist", LAST, "ticket"
    )  # fmt: skip
    assert meta["model_args"] == {"input_shape": [1, 28, 28], "num_classes": 10}
    assert meta["replicate"] == 0 and meta["config"] == CONFIG.to_dict()
    assert meta["weights_remaining"] == pytest.approx(info.weights_remaining)


def test_layers_csv_and_report_count_the_units_shrink_removes(run, capsys):
    """layers.csv's dead_units is what shrink removes from each branch's network, every level;
    the report's per-layer table shows them and their total."""
    from lth.runfolder.readers import load_layers

    rows = load_layers(run)
    assert {r.branch for r in rows} == {"ticket", "reinit"}
    for branch in ("ticket", "reinit"):
        for level in range(LAST + 1) if branch == "ticket" else range(1, LAST + 1):
            model, masks = load_ticket(run, level, branch=branch)
            removed = shrink(model, masks).removed
            got = {r.layer: r.dead_units for r in rows if (r.branch, r.level) == (branch, level)}
            assert got == removed, (branch, level)
    last = {r.layer: r.dead_units for r in rows if (r.branch, r.level) == ("ticket", LAST)}
    assert sum(last.values()) > 0  # the test means something: the last ticket has dead units
    assert main(["report", str(run), "--layers", "--format", "md"]) == 0
    text = capsys.readouterr().out
    assert "dead units" in text
    totals = [line.split("|") for line in text.splitlines() if line.startswith("| total")]
    assert [int(t[5]) for t in totals][-1] == sum(last.values())


def test_dense_file_loads_with_plain_pytorch(run, data, tmp_path):
    out = tmp_path / "dense.safetensors"
    export_ticket(run, LAST, format="dense", out=out)
    ticket, masks = load_ticket(run, LAST)
    model = create_model("lenet_300_100", (1, 28, 28), 10)  # only the model is built with lth
    model.load_state_dict(load_file(out))  # strict: exactly the model's keys
    assert torch.equal(outputs(model, data.test_x), outputs(ticket, data.test_x))
    for name, mask in masks.items():
        assert not model.state_dict()[name][~mask].any()


def test_sparse_file_layout(run, tmp_path):
    export_ticket(run, LAST, format="sparse", out=tmp_path / "s.safetensors")
    export_ticket(run, LAST, format="dense", out=tmp_path / "d.safetensors")
    _, masks = load_ticket(run, LAST)
    with safe_open(str(tmp_path / "s.safetensors"), "pt") as f:
        keys = set(f.keys())
        tensors = {k: f.get_tensor(k) for k in keys}
    parts = ("crow_indices", "col_indices", "values")
    csr = {f"fc{i}.weight.{p}" for i in (1, 2, 3) for p in parts}
    assert keys == csr | {"fc1.bias", "fc2.bias", "fc3.bias"}
    kept = int(masks["fc1.weight"].sum())
    assert (
        tensors["fc1.weight.values"].dtype == torch.float32
        and tensors["fc1.weight.values"].numel() == kept
    )
    assert tensors["fc1.weight.col_indices"].dtype == torch.uint16  # 784 columns
    assert tensors["fc3.weight.col_indices"].dtype == torch.uint8  # 100 columns
    assert tensors["fc1.weight.crow_indices"].dtype == index_dtype(kept)
    meta = read_metadata(tmp_path / "s.safetensors")
    assert meta["sparse"]["fc1.weight"]["shape"] == [300, 784]
    size = (tmp_path / "s.safetensors").stat().st_size
    assert size < 0.2 * (tmp_path / "d.safetensors").stat().st_size


def test_csr_parts_round_trip_keeps_zero_valued_kept_weights():
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(6, 3, 2, 2, generator=g)
    mask = torch.rand(6, 3, 2, 2, generator=g) < 0.3
    mask[0] = False  # an empty row
    weight[mask.nonzero()[0].tolist()] = 0.0  # a kept weight that is 0
    parts = csr_parts(weight, mask)
    assert parts["col_indices"].dtype == torch.uint8 and parts["values"].dtype == torch.float32
    back, back_mask = from_csr_parts(parts, weight.shape)
    assert torch.equal(back_mask, mask) and torch.equal(back, weight.masked_fill(~mask, 0))
    assert [index_dtype(n) for n in (255, 256, 65535, 65536, 2**32)] == [
        torch.uint8, torch.uint16, torch.uint16, torch.uint32, torch.int64
    ]  # fmt: skip
    parts["col_indices"] = parts["col_indices"].clone().fill_(200)
    with pytest.raises(LTHError, match="inconsistent"):
        from_csr_parts(parts, weight.shape)


# -------------------------------------------------------------------------- torch-prune


def test_torch_prune_file_loads_into_a_custom_from_mask_model(run, data, tmp_path):
    out = tmp_path / "tp.safetensors"
    export_ticket(run, LAST, format="torch-prune", out=out)
    ticket, masks = load_ticket(run, LAST)
    model = create_model("lenet_300_100")
    for name in ("fc1", "fc2", "fc3"):  # plain PyTorch: prune, then load
        module = getattr(model, name)
        prune.custom_from_mask(module, "weight", torch.ones_like(module.weight))
    model.load_state_dict(load_file(out))
    assert torch.equal(outputs(model, data.test_x), outputs(ticket, data.test_x))
    assert same_masks(masks_from_torch_prune(model), masks)
    # lth's helper does the same pruning
    other = apply_torch_prune(create_model("lenet_300_100"), masks)
    other.load_state_dict(load_file(out))
    assert same_masks(masks_from_torch_prune(other), masks)


def test_a_model_pruned_with_torch_prune_goes_in_and_comes_out(data, tmp_path):
    model = create_model("lenet_300_100", generator=1)
    for name, amount in (("fc1", 0.8), ("fc2", 0.8), ("fc3", 0.5)):
        prune.l1_unstructured(getattr(model, name), "weight", amount=amount)
    expected = {f"{n}.weight": getattr(model, n).weight_mask.bool() for n in ("fc1", "fc2", "fc3")}
    masks = masks_from_torch_prune(model)
    assert same_masks(masks, expected)
    assert same_masks(masks_from_torch_prune(model.state_dict()), expected)
    # into lth: a plain model with the same outputs, and masks lth can keep pruning
    state, masks = from_torch_prune(model)
    plain = create_model("lenet_300_100")
    plain.load_state_dict(state)
    assert torch.equal(outputs(plain, data.test_x), outputs(model, data.test_x))
    rates = layer_rates(list(masks), 0.2, 0.1)
    deeper = prune_layerwise(plain, masks, rates)
    assert all(bool((deeper[n] <= masks[n]).all()) for n in masks)
    # and out again: the same masks in torch.nn.utils.prune's layout
    out = tmp_path / "back.safetensors"
    export_model(plain, masks, out, format="torch-prune", metadata={"model": "lenet_300_100"})
    again = apply_torch_prune(create_model("lenet_300_100"), ones_mask(plain))
    again.load_state_dict(load_file(out))
    assert same_masks(masks_from_torch_prune(again), expected)
    assert torch.equal(outputs(again, data.test_x), outputs(model, data.test_x))
    with pytest.raises(LTHError, match="no torch.nn.utils.prune masks"):
        masks_from_torch_prune(create_model("lenet_300_100"))


# ------------------------------------------------------------ masks in the user's own loop


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3),
        lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
        lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
    ],
    ids=["sgd-momentum", "adam", "adamw"],
)
def test_attached_masks_hold_under_the_users_optimizer(data, make):
    model = create_model("lenet_300_100", generator=0)
    rates = layer_rates(["fc1.weight", "fc2.weight", "fc3.weight"], 0.9, 0.5)
    masks = prune_layerwise(model, ones_mask(model), rates)
    x, y = data.train_x[:256], data.train_y[:256]

    def steps(opt, n=10):
        for i in range(n):
            batch = slice(i * 25, i * 25 + 25)
            loss = nn.functional.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()

    apply_masks(model, masks)  # zeroes once: the user's own optimizer brings weights back
    steps(make(model.parameters()), 1)
    assert model.fc1.weight[~masks["fc1.weight"]].count_nonzero() > 0

    apply_masks(model, masks)
    opt = make(model.parameters())  # made before attaching: the same parameter objects
    attach_masks(model, masks)
    steps(opt)
    steps(make(model.parameters()))  # and one made after
    for name, mask in masks.items():
        layer = getattr(model, name.split(".")[0])
        assert not layer.weight[~mask].any(), name
        assert layer.weight[mask].count_nonzero() > 0.9 * mask.sum()  # the rest trains
    with pytest.raises(LTHError, match="attached twice"):
        attach_masks(model, masks)
    back = detach_masks(model)
    assert same_masks(back, masks)
    assert set(model.state_dict()) == set(create_model("lenet_300_100").state_dict())
    assert all(not model.get_parameter(n)[~m].any() for n, m in masks.items())
    with pytest.raises(LTHError, match="no masks attached"):
        detach_masks(model)


# ------------------------------------------------------------------------------ shrinking


def mlp_with_dead_units():
    """An MLP whose masks leave: fc1 unit 0 with no incoming weight and a positive bias
    (constant, folded), fc1 unit 1 with no outgoing weight (unused), fc2 unit 2 fed only by
    unit 0 (constant too, through the chain)."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(OrderedDict(
        flatten=nn.Flatten(), fc1=nn.Linear(784, 6), relu1=nn.ReLU(),
        fc2=nn.Linear(6, 5), relu2=nn.ReLU(), fc3=nn.Linear(5, 10),
    ))  # fmt: skip
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        model.fc1.bias[0] = 0.5
        model.fc2.bias[2] = 0.3
    masks = {n: torch.rand(p.shape, generator=g) < 0.7 for n, p in model.named_parameters()
             if n.endswith("weight")}  # fmt: skip
    masks["fc1.weight"][0] = False  # unit 0: constant relu(0.5)
    masks["fc2.weight"][:, 1] = False  # unit 1: unused
    masks["fc2.weight"][2] = False
    masks["fc2.weight"][2, 0] = True  # fc2 unit 2: reads only the constant unit 0
    masks["fc2.weight"][:, 0] |= torch.tensor([True, True, True, False, False])
    apply_masks(model, masks)
    return model, masks


def test_shrink_folds_constant_units_into_the_next_bias(data):
    model, masks = mlp_with_dead_units()
    small = shrink(model, masks)
    assert small.removed == {"fc1.weight": 2, "fc2.weight": 1, "fc3.weight": 0}
    assert small.folded == {"fc1.weight": 1, "fc2.weight": 1, "fc3.weight": 0}
    assert small.sizes == {"fc1": [784, 4], "fc2": [4, 4], "fc3": [4, 10]}
    assert small.kept["fc1"].tolist() == [2, 3, 4, 5]
    assert dead_units(masks, model) == small.removed
    torch.testing.assert_close(
        outputs(small.model, data.test_x), outputs(model, data.test_x), rtol=1e-5, atol=1e-6
    )
    # the biases changed by exactly the folded constants
    w2 = model.fc2.weight.detach()
    expected = model.fc2.bias.detach() + w2[:, 0] * 0.5
    c2 = torch.relu(expected[2])
    expected3 = model.fc3.bias.detach() + model.fc3.weight.detach()[:, 2] * c2
    torch.testing.assert_close(small.model.fc2.bias, expected[[0, 1, 3, 4]])
    torch.testing.assert_close(small.model.fc3.bias, expected3)


def conv_net() -> nn.Sequential:
    """LeNet-5 (convs without padding) and Conv-2 (convs padded) in one small net."""
    return nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(1, 6, 3, padding=1), relu1=nn.ReLU(),
        conv2=nn.Conv2d(6, 8, 3), relu2=nn.ReLU(), pool1=nn.MaxPool2d(2),
        conv3=nn.Conv2d(8, 8, 3, padding=1), relu3=nn.ReLU(), pool2=nn.MaxPool2d(2),
        flatten=nn.Flatten(), fc1=nn.Linear(8 * 6 * 6, 20), relu4=nn.ReLU(),  # 28x28 in
        fc2=nn.Linear(20, 10),
    ))  # fmt: skip


def test_shrink_conv_channels_exactly(data):
    torch.manual_seed(0)
    model = conv_net()
    masks = {n: torch.rand(p.shape) < 0.5 for n, p in model.named_parameters() if "weight" in n}
    with torch.no_grad():
        masks["conv1.weight"][0] = False  # constant relu(+0.2): folds into conv2 (no padding)
        model.conv1.bias[0] = 0.2
        masks["conv2.weight"][1] = False  # constant relu(+0.2), conv3 padded: must stay
        model.conv2.bias[1] = 0.2
        masks["conv2.weight"][2] = False  # constant relu(-0.2) = 0: removed
        model.conv2.bias[2] = -0.2
        masks["conv3.weight"][3] = False  # constant relu(+0.3): folds into fc1 over 36 inputs
        model.conv3.bias[3] = 0.3
        masks["fc1.weight"][:, 4 * 36 : 5 * 36] = False  # conv3 channel 4: unused
    apply_masks(model, masks)
    small = shrink(model, masks)
    assert small.removed["conv1.weight"] == 1 and small.folded["conv1.weight"] == 1
    assert small.kept["conv2"].tolist() == [0, 1, 3, 4, 5, 6, 7]
    assert set(small.kept["conv3"].tolist()) == {0, 1, 2, 5, 6, 7}
    assert small.sizes["fc1"][0] == 6 * 36
    assert dead_units(masks, model) == small.removed
    x = data.test_x[:2000]
    torch.testing.assert_close(outputs(small.model, x), outputs(model, x), rtol=1e-5, atol=1e-5)


def test_shrink_refuses_what_it_cannot_do_and_dead_units_says_nothing():
    resnet = create_model("resnet20", (3, 32, 32), 10)
    masks = ones_mask(resnet)
    with pytest.raises(LTHError, match="flat nn.Sequential"):
        shrink(resnet, masks)
    assert dead_units(masks, resnet) == {}
    odd = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    with pytest.raises(LTHError, match="LayerNorm"):
        shrink(odd, ones_mask(odd))
    spec = [{"name": "fc", "type": "Bilinear"}]
    with pytest.raises(LTHError, match="unknown layer type"):
        build_architecture(spec)


# ------------------------------------------------------------------------- sparse inference


def test_sparse_inference_matches_the_dense_masked_model(run, data):
    ticket, masks = load_ticket(run, LAST)
    reference = outputs(ticket, data.test_x)
    default = sparse_inference(ticket, masks)
    kernels = {row["layer"]: row["kernel"] for row in default.plan}
    assert kernels["fc1"] == "sparse"  # 1.6% of fc1's weights remain
    one = sparse_inference(ticket, masks, batch_size=1)  # batch 1: sparse never paid
    assert "sparse" not in {row["kernel"] for row in one.plan}
    torch.testing.assert_close(outputs(one, data.test_x), reference, rtol=1e-5, atol=1e-5)
    for module in (
        default,
        sparse_inference(ticket, masks, shrink_first=False, threshold=1.0),
        sparse_inference(ticket, masks, kernels={"fc1": "shrunk", "fc2": "dense"}),
        sparse_inference(ticket, masks, kernels={"fc2": "dense", "fc3": "shrunk"}),
    ):
        torch.testing.assert_close(outputs(module, data.test_x), reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(outputs(module, data.test_x[:1]), reference[:1])
    assert all(p is not None for p in ticket.parameters())  # the ticket is left as it was
    with pytest.raises(LTHError, match="unknown kernel"):
        sparse_inference(ticket, masks, kernels={"fc1": "fast"})
    with pytest.raises(LTHError, match="threshold"):
        sparse_inference(ticket, masks, threshold=2)


@pytest.mark.parametrize("name", ["lenet5", "resnet20"])
def test_sparse_inference_on_conv_nets(data, name):
    shape = (3, 32, 32) if name == "resnet20" else (1, 28, 28)
    torch.manual_seed(0)
    model = create_model(name, shape, 10, generator=0)
    masks = {n: torch.rand(p.shape) < 0.04 for n, p in model.named_parameters()
             if n.endswith("weight") and p.dim() > 1}  # fmt: skip
    apply_masks(model, masks)
    x = data.test_x[:64]
    if name == "resnet20":  # real images as 3 x 32 x 32
        x = nn.functional.pad(x[:16].expand(-1, 3, -1, -1), (2, 2, 2, 2))
    reference = outputs(model, x)
    for kw in ({}, {"threshold": 1.0, "conv_threshold": 1.0}):
        fast = sparse_inference(model, masks, **kw)
        torch.testing.assert_close(outputs(fast, x), reference, rtol=1e-4, atol=1e-5)
    assert {row["kernel"] for row in fast.plan} == {"sparse"}


# ------------------------------------------------------------------------------ bad input


def test_bad_input_is_one_line_and_writes_nothing(run, tmp_path):
    (tmp_path / "a_file").write_text("x")
    out = tmp_path / "new" / "t.safetensors"
    cases = [
        ({"level": 7, "out": out}, "levels 0 to 3"),
        ({"level": 1, "branch": "random_prune", "out": out}, "this run has ticket, reinit"),
        ({"level": 1, "format": "onnx", "out": out}, "unknown format 'onnx'"),
        ({"level": 1, "out": tmp_path}, "is a folder"),
        ({"level": 1, "out": tmp_path / "a_file" / "t.safetensors"}, "is a file"),
        ({"level": 1, "out": run / "config.toml"}, "run folder's own files"),
        ({"level": 1, "out": run / "ticket" / "0" / "x.safetensors"}, "run folder's own files"),
        ({"level": 1, "out": ""}, "--out is empty"),
    ]
    before = sorted(p for p in tmp_path.rglob("*"))
    run_before = sorted(p for p in run.rglob("*"))
    for kwargs, needle in cases:
        with pytest.raises(LTHError) as exc:
            export_ticket(run, **kwargs)
        assert_one_line(exc, needle)
    for folder, what in (
        (run / "ticket", "not an lth run folder"),
        (tmp_path / "nope", "does not exist"),
    ):
        with pytest.raises(LTHError) as exc:
            export_ticket(folder, 1, out=out)
        assert_one_line(exc, what)
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert sorted(p for p in run.rglob("*")) == run_before
    with pytest.raises(LTHError) as exc:
        load_export(tmp_path / "a_file")
    assert_one_line(exc, "not a readable safetensors file")
    export_model(create_model("lenet_300_100"), {}, tmp_path / "plain.safetensors")
    with pytest.raises(LTHError) as exc:
        load_export(tmp_path / "plain.safetensors")
    assert_one_line(exc, "lth cannot build")


def test_cli_export(run, tmp_path, capsys):
    out = tmp_path / "cli.safetensors"
    args = ["export", str(run), "--level", str(LAST), "--format", "shrunk-sparse"]
    assert main([*args, "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and str(out) in line and "units removed" in line
    assert load_export(out)[0] is not None
    bad = [
        (["export", str(run), "--level", "9", "--format", "dense"], "levels 0 to 3"),
        (["export", str(run), "--level", "1", "--format", "zip"], "unknown format"),
        (["export", str(run), "--level", "1", "--format", "dense", "--branch", "x"], "branch"),
        (["export", str(tmp_path / "none"), "--level", "1", "--format", "dense"], "not exist"),
        (["export", str(run / "ticket"), "--level", "1", "--format", "dense"], "not an lth run"),
        (["export", str(run), "--format", "dense"], "required: --level"),
    ]
    for argv, needle in bad:
        target = tmp_path / "bad.safetensors"
        assert main([*argv, "--out", str(target)]) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("lth: error:") and needle in err, err
        assert not target.exists()
    assert main([*args, "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["export", "--help"]) == 0
    help_text = capsys.readouterr().out
    assert all(fmt in help_text for fmt in FORMATS)


# ------------------------------------------------------------------------------ benchmark


def test_inference_benchmark_script_prints_table_and_json():
    cmd = [sys.executable, str(SCRIPT), "--data-dir", str(real_data("mnist")),
           "--train-steps", "20", "--finetune-steps", "5", "--repeats", "1"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("file_ratio_at_3.6", "latency_ratio_at_3.6_b1024", "latency_ratio_at_1.2_b1024"):
        assert result[key] > 0, key
    assert set(result["tickets"]) == {"100.0", "21.0", "3.6", "1.2"}
    ticket = result["tickets"]["3.6"]
    assert ticket["weights_remaining"] == pytest.approx(3.6, abs=0.1)
    assert set(ticket["file_bytes"]) == set(ticket["latency_ms"]["1024"]) == {
        "dense", "sparse", "shrunk", "best"
    }  # fmt: skip
    assert set(ticket["latency_ms"]) == {"1", "64", "1024"}
    table = "\n".join(lines[:-1])
    assert "| weights | batch | dense ms |" in table and "shrunk-sparse" in table
