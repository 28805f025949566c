"""Crafted export files (issue 25, item 7): ``load_export`` refuses every malformed file with a
one-line LTHError, and checks what a file claims against its size and the model before it
allocates anything.

Every crafted file starts from a real export that lth's own exporter wrote (LeNet-300-100, 90%
of its hidden weights pruned, every format); one metadata entry or tensor is then changed and
the file written again with safetensors.
"""

from __future__ import annotations

import json
import random
import resource
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from conftest import assert_one_line
from lth.core.models import create_model
from lth.errors import LTHError
from lth.pruning.masks import ones_mask
from lth.pruning.selection import layer_rates, prune_layerwise
from lth.runfolder.export import FORMATS, export_model, load_export

MODEL_ARGS = {"input_shape": [1, 28, 28], "num_classes": 10}
#: No crafted file may make load_export take this much more memory (its peak, in KiB).
MEMORY_KIB = 200 * 1024


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """One thread, as every test here is small (see conftest)."""


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """A real export of a pruned LeNet-300-100 in every format."""
    model = create_model("lenet_300_100", generator=0)
    names = ["fc1.weight", "fc2.weight", "fc3.weight"]
    masks = prune_layerwise(model, ones_mask(model), layer_rates(names, 0.9, 0.5))
    folder = tmp_path_factory.mktemp("exports")
    meta = {"model": "lenet_300_100", "model_args": MODEL_ARGS}
    for fmt in FORMATS:
        export_model(model, masks, folder / f"{fmt}.safetensors", format=fmt, metadata=meta)
    return {fmt: folder / f"{fmt}.safetensors" for fmt in FORMATS}


def raw(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A safetensors file's metadata (undecoded strings) and tensors."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    return meta, load_file(path)


def craft(source: Path, out: Path, change: Callable[[dict, dict], None]) -> Path:
    """``source`` written again to ``out`` after ``change(meta, tensors)``: metadata entries
    are decoded JSON where lth stores JSON, strings otherwise."""
    meta, tensors = raw(source)
    decoded = {k: json.loads(v) if k not in ("lth_format", "model", "lth_version") else v
               for k, v in meta.items()}  # fmt: skip
    change(decoded, tensors)
    text = {k: v if isinstance(v, str) and k in ("lth_format", "model") else json.dumps(v)
            for k, v in decoded.items()}  # fmt: skip
    save_file(tensors, out, metadata=text)
    return out


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def refused(path: Path, *needles: str) -> str:
    """load_export refuses ``path`` in one line naming the file and ``needles``, without
    taking memory for what the file claims."""
    before = peak_kib()
    with pytest.raises(LTHError) as exc:
        load_export(path)
    assert peak_kib() - before < MEMORY_KIB, "the file's claims were allocated before checking"
    return assert_one_line(exc, path.name, *needles)


# ------------------------------------------------------------------ the changes (issue 25)


def sparse_dtype(meta, tensors):
    meta["sparse"]["fc1.weight"]["dtype"] = "torch.load"


def sparse_huge_shape(meta, tensors):
    """fc1 as one row of 1e11 columns, its CSR indices made consistent with that."""
    meta["sparse"]["fc1.weight"]["shape"] = [1, 1e11]
    kept = tensors["fc1.weight.values"].numel()
    tensors["fc1.weight.crow_indices"] = torch.tensor([0, kept], dtype=torch.int64)


def sparse_huge_int_shape(meta, tensors):
    meta["sparse"]["fc1.weight"]["shape"] = [1, 10**11]
    kept = tensors["fc1.weight.values"].numel()
    tensors["fc1.weight.crow_indices"] = torch.tensor([0, kept], dtype=torch.int64)


def sparse_as_list(meta, tensors):
    meta["sparse"] = list(meta["sparse"])


def classes_float(meta, tensors):
    meta["model_args"]["num_classes"] = 1e10


def classes_huge(meta, tensors):
    meta["model_args"]["num_classes"] = 10**9


def classes_million(meta, tensors):
    """A model of 400 MB that the file's 10 outputs do not fit: refused before it is built."""
    meta["model_args"]["num_classes"] = 10**6


def input_huge(meta, tensors):
    meta["model_args"]["input_shape"] = [1, 100_000, 100_000]


def shrunk_huge_linear(meta, tensors):
    first = next(e for e in meta["architecture"] if e["type"] == "Linear")
    first.update(in_features=10**7, out_features=10**7)


def shrunk_dotted_name(meta, tensors):
    meta["architecture"][0]["name"] = "a.b"


def pruned_dotted_name(meta, tensors):
    meta["pruned"] = ["fc1.weight", "a.b"]


def complex_tensor(meta, tensors):
    tensors["fc1.bias"] = tensors["fc1.bias"].to(torch.complex64) * (1 + 1j)


# ----------------------------------------------------------------------- further changes


def int_weights(meta, tensors):
    tensors["fc1.weight"] = tensors["fc1.weight"].to(torch.int32)


def pruned_as_str(meta, tensors):
    meta["pruned"] = "fc1.weight"


def model_args_as_list(meta, tensors):
    meta["model_args"] = [[1, 28, 28], 10]


def input_shape_bool(meta, tensors):
    meta["model_args"]["input_shape"] = [True, 28, 28]


def architecture_as_dict(meta, tensors):
    meta["architecture"] = {"fc1": "Linear"}


def architecture_negative(meta, tensors):
    first = next(e for e in meta["architecture"] if e["type"] == "Linear")
    first["out_features"] = -5


def sparse_layout(meta, tensors):
    meta["sparse"]["fc1.weight"]["layout"] = "coo"


def sparse_unknown_layer(meta, tensors):
    meta["sparse"]["fc9.weight"] = meta["sparse"].pop("fc1.weight")
    for part in ("crow_indices", "col_indices", "values"):
        tensors[f"fc9.weight.{part}"] = tensors.pop(f"fc1.weight.{part}")


def sparse_float_indices(meta, tensors):
    tensors["fc1.weight.col_indices"] = tensors["fc1.weight.col_indices"].to(torch.float32)


def sparse_complex_values(meta, tensors):
    tensors["fc1.weight.values"] = tensors["fc1.weight.values"].to(torch.complex64)


def sparse_2d_values(meta, tensors):
    tensors["fc1.weight.values"] = tensors["fc1.weight.values"].reshape(1, -1)


def mask_half(meta, tensors):
    tensors["fc1.weight_mask"] = tensors["fc1.weight_mask"] * 0.5


def mask_missing(meta, tensors):
    del tensors["fc1.weight_mask"]


def extra_tensor(meta, tensors):
    tensors["fc4.weight"] = torch.zeros(3, 3)


def format_unknown(meta, tensors):
    meta["lth_format"] = "pickle"


CASES = [
    ("sparse", sparse_dtype, ("fc1.weight", "dtype", "torch.load")),
    ("sparse", sparse_huge_shape, ("fc1.weight", "shape")),
    ("shrunk-sparse", sparse_huge_int_shape, ("fc1.weight", "shape")),
    ("sparse", sparse_as_list, ("sparse",)),
    ("dense", classes_float, ("num_classes",)),
    ("dense", classes_huge, ("num_classes", "limit")),
    ("dense", classes_million, ("fc3.", "[1000000]")),
    ("sparse", input_huge, ("input_shape",)),
    ("shrunk", shrunk_huge_linear, ("limit",)),
    ("shrunk-sparse", shrunk_huge_linear, ("limit",)),
    ("shrunk", shrunk_dotted_name, ("'a.b'",)),
    ("dense", pruned_dotted_name, ("'a.b'",)),
    ("dense", complex_tensor, ("fc1.bias", "complex64")),
    ("torch-prune", complex_tensor, ("fc1.bias", "complex64")),
    ("dense", int_weights, ("fc1.weight", "int32")),
    ("dense", pruned_as_str, ("pruned",)),
    ("dense", model_args_as_list, ("model_args",)),
    ("dense", input_shape_bool, ("input_shape",)),
    ("shrunk", architecture_as_dict, ("architecture",)),
    ("shrunk", architecture_negative, ("out_features",)),
    ("sparse", sparse_layout, ("fc1.weight", "coo")),
    ("sparse", sparse_unknown_layer, ("fc9.weight",)),
    ("sparse", sparse_float_indices, ("fc1.weight.col_indices", "float32")),
    ("shrunk-sparse", sparse_complex_values, ("fc1.weight.values", "complex64")),
    ("sparse", sparse_2d_values, ("fc1.weight.values",)),
    ("torch-prune", mask_half, ("fc1.weight_mask",)),
    ("torch-prune", mask_missing, ("fc1.weight",)),
    ("dense", extra_tensor, ("fc4.weight",)),
    ("dense", format_unknown, ("pickle",)),
]


@pytest.mark.parametrize(
    ("fmt", "change", "needles"), CASES, ids=[f"{c[0]}-{c[1].__name__}" for c in CASES]
)
def test_a_crafted_file_is_refused_in_one_line_before_any_allocation(
    exports, tmp_path, fmt, change, needles
):
    path = craft(exports[fmt], tmp_path / "crafted.safetensors", change)
    refused(path, *needles)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_files_the_crafted_ones_start_from_load(exports, tmp_path, fmt):
    """The untouched files (written again by craft) load: the checks refuse only the damage."""
    path = craft(exports[fmt], tmp_path / "same.safetensors", lambda meta, tensors: None)
    model, masks = load_export(path)
    assert list(masks) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert sum(int(m.sum()) for m in masks.values()) < sum(m.numel() for m in masks.values())


# ------------------------------------------------------------------------------ fuzzing

ODD_VALUES = [
    None, True, -1, 0, 1, 3, 2**40, 10**30, 1e10, 0.5, float("nan"), "", "x", "a.b",
    "torch.complex64", [], [0], [1, 28, 28], [-1, 5], {}, {"a": 1}, [[1]],
]  # fmt: skip


def fuzz(rng: random.Random, value: object, depth: int = 0) -> object:
    """``value`` with one of its parts (itself, or one entry at some depth) replaced."""
    if isinstance(value, dict) and value and rng.random() < 0.8:
        key = rng.choice(sorted(value))
        return {**value, key: fuzz(rng, value[key], depth + 1)}
    if isinstance(value, list) and value and rng.random() < 0.8:
        i = rng.randrange(len(value))
        return [*value[:i], fuzz(rng, value[i], depth + 1), *value[i + 1 :]]
    return rng.choice(ODD_VALUES)


#: The metadata entries load_export reads.
READ = ("lth_format", "model", "model_args", "pruned", "sparse", "architecture")
DTYPES = [torch.float64, torch.bfloat16, torch.complex64, torch.int64, torch.uint8, torch.bool]


def damage_metadata(rng: random.Random, meta: dict, tensors: dict) -> None:
    key = rng.choice([k for k in READ if k in meta])
    meta[key] = fuzz(rng, meta[key])


def damage_tensors(rng: random.Random, meta: dict, tensors: dict) -> None:
    key = rng.choice(sorted(tensors))
    how = rng.randrange(4)
    if how == 0:
        tensors[key] = tensors[key].to(rng.choice(DTYPES))
    elif how == 1:
        tensors[key] = tensors[key].reshape(-1, 1) if rng.random() < 0.5 else tensors[key][:-1]
    elif how == 2:
        del tensors[key]
    else:
        tensors[f"{key}{rng.choice(['_orig', '_mask', '.values', 'x'])}"] = tensors[key].clone()


@pytest.mark.parametrize("damage", [damage_metadata, damage_tensors])
def test_random_damage_loads_or_is_refused_in_one_line(exports, tmp_path, damage):
    """200 files, each with one entry that load_export reads damaged at random (fixed seed):
    each loads or raises a one-line LTHError, never another exception, and never takes the
    memory a damaged size asks for."""
    rng = random.Random(25)
    outcomes = {"loaded": 0, "refused": 0}
    for i in range(200):
        fmt = rng.choice(FORMATS)
        path = craft(exports[fmt], tmp_path / f"{i}.safetensors", lambda m, t: damage(rng, m, t))
        before = peak_kib()
        try:
            load_export(path)
            outcomes["loaded"] += 1
        except LTHError as e:
            assert "\n" not in str(e), str(e)
            outcomes["refused"] += 1
        assert peak_kib() - before < MEMORY_KIB, (fmt, raw(path)[0])
        path.unlink()
    assert outcomes["refused"] > 100, outcomes


@pytest.mark.parametrize("fmt", ["shrunk", "shrunk-sparse"])
def test_a_shrunk_plain_sequential_with_numbered_layers_loads(tmp_path, fmt):
    """Layer names are checked (no "a.b"), but torch's own "0", "1", ... pass."""
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(784, 20), torch.nn.ReLU(), torch.nn.Linear(20, 10)
    )
    masks = prune_layerwise(model, ones_mask(model), {"1.weight": 0.5, "3.weight": 0.2})
    path = export_model(model, masks, tmp_path / "t.safetensors", format=fmt).path
    loaded, got = load_export(path)
    assert [name for name, _ in loaded.named_children()] == ["0", "1", "2", "3"]
    x = torch.randn(4, 1, 28, 28)
    masked = {k: v * masks[k] if k in masks else v for k, v in model.state_dict().items()}
    model.load_state_dict(masked)
    torch.testing.assert_close(loaded(x), model(x))
