"""The checks :func:`lth.runfolder.export.load_export` makes of an export file before it builds
the model or allocates any tensor the file describes: its metadata entries have the types lth
writes, the model (built first on the meta device) has at most :data:`MAX_ELEMENTS` elements,
and the file's tensors are exactly the model's, in its shapes and in real floating types
(:data:`REAL_FLOATS`; CSR indices in :data:`INDEX_TYPES`). Each failure is a one-line
:class:`~lth.errors.LTHError` naming the file (:func:`damaged`).
"""

from __future__ import annotations

import json
import os
import re

import torch
from torch import Tensor, nn

from lth.core.models import MODELS, create_model
from lth.errors import LTHError
from lth.pruning.shrink import build_architecture

CSR = ("crow_indices", "col_indices", "values")
_SPARSE = ("sparse", "shrunk-sparse")
#: The arguments of a shrunk file's layers that size its weights.
_SIZES = ("in_features", "out_features", "in_channels", "out_channels", "kernel_size")
#: The types a file may store a floating-point weight in: real floating types only (a complex
#: one would lose its imaginary part).
REAL_FLOATS = {str(t): t for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)}
#: The types a sparse file may store CSR indices in.
INDEX_TYPES = (torch.uint8, torch.uint16, torch.uint32, torch.int32, torch.int64)
#: The most elements (weights and buffers) a model described by a file may have: 2**31, 8 GiB
#: in float32. Checked before the model is built.
MAX_ELEMENTS = 2**31
_NOT_SIZES = f"not whole numbers from 0 to {MAX_ELEMENTS}"


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def damaged(path: str | os.PathLike[str], what: str) -> LTHError:
    """The one-line error for a file whose contents are malformed."""
    what = " ".join(what.split())  # names read from the file may hold line breaks
    return LTHError(f"{path}: {what}; the file is damaged or was not written by lth export")


def show(value: object) -> str:
    """``repr(value)``, cut short: crafted metadata can be long."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _whole(value: object, low: int = 0) -> bool:
    """Whether ``value`` is an int (not a bool) from ``low`` to ``MAX_ELEMENTS``."""
    return type(value) is int and low <= value <= MAX_ELEMENTS


def check_meta(path, fmt: str, meta: dict) -> None:
    """Every metadata entry that ``load_export`` reads has the type and range it must have."""
    pruned = meta.get("pruned", [])
    if not isinstance(pruned, list) or not all(isinstance(n, str) for n in pruned):
        raise damaged(path, f"'pruned' is {show(pruned)}, not a list of parameter names")
    if not isinstance(meta.get("model", ""), str):
        raise damaged(path, f"'model' is {show(meta['model'])}, not a name")
    if "model_args" in meta:
        _check_model_args(path, meta["model_args"])
    if fmt in _SPARSE:
        _check_sparse_meta(path, meta.get("sparse", {}))
    if fmt.startswith("shrunk"):
        _check_architecture(path, meta.get("architecture", []))


def _check_model_args(path, args: object) -> None:
    if not isinstance(args, dict):
        raise damaged(path, f"'model_args' is {show(args)}, not a dict")
    shape, classes = args.get("input_shape"), args.get("num_classes")
    if shape is not None and not (
        isinstance(shape, list) and len(shape) == 3 and all(_whole(d, 1) for d in shape)
    ):
        raise damaged(path, f"model_args.input_shape is {show(shape)}, not [C, H, W]")
    if (shape is not None or classes is not None) and not _whole(classes, 1):
        raise damaged(
            path, f"model_args.num_classes is {show(classes)}, not a whole number from 1 to "
            f"{MAX_ELEMENTS}"
        )  # fmt: skip


def _check_sparse_meta(path, sparse: object) -> None:
    if not isinstance(sparse, dict):
        raise damaged(path, f"'sparse' is {show(sparse)}, not a dict of layers")
    for name, info in sparse.items():
        if not isinstance(info, dict):
            raise damaged(path, f"sparse layer {name!r} is described by {show(info)}")
        if info.get("layout") != "csr":
            layout = show(info.get("layout"))
            raise damaged(path, f"sparse layer {name!r} has layout {layout}, not 'csr'")
        shape = info.get("shape")
        if not isinstance(shape, list) or not shape or not all(_whole(d) for d in shape):
            raise damaged(path, f"sparse layer {name!r} has shape {show(shape)}, {_NOT_SIZES}")
        if str(info.get("dtype", "torch.float32")) not in REAL_FLOATS:
            raise damaged(
                path, f"sparse layer {name!r} has dtype {show(info.get('dtype'))}, not one of "
                f"{', '.join(REAL_FLOATS)}"
            )  # fmt: skip


def _check_architecture(path, spec: object) -> None:
    if not isinstance(spec, list) or not all(isinstance(e, dict) for e in spec):
        raise damaged(path, f"'architecture' is {show(spec)}, not a list of layers")
    seen: set[str] = set()
    for entry in spec:
        name = entry.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"\w+", name) or name in seen:
            raise damaged(
                path, f"the architecture names a layer {show(name)}, not a word (letters, "
                "digits, _) used once"
            )  # fmt: skip
        seen.add(name)
        for arg in _SIZES:
            value = entry.get(arg, 1)
            if not all(_whole(v) for v in (value if isinstance(value, list) else [value])):
                raise damaged(path, f"layer {name!r} has {arg} {show(value)}, {_NOT_SIZES}")


def model_skeleton(path, fmt: str, meta: dict, model) -> nn.Module | None:
    """The model the file describes, on the meta device (it takes no memory), checked to have
    at most :data:`MAX_ELEMENTS` elements; None where the user's code builds it."""
    name, args = meta.get("model", ""), meta.get("model_args") or {}
    try:
        if fmt.startswith("shrunk"):
            net, what = build_architecture(meta.get("architecture", []), "meta"), "architecture"
        elif model is None and name in MODELS and "input_shape" in args:
            with torch.device("meta"):
                net = create_model(name, args["input_shape"], args["num_classes"])
            what = f"{name} for model_args {json.dumps(args)}"
        else:
            return None
    except LTHError as e:
        raise damaged(path, str(e)) from None
    except Exception as e:  # noqa: BLE001 - whatever the described layers' arguments raise
        problem = f"{type(e).__name__}: {one_line(e)}"
        raise damaged(path, f"its model cannot be built ({problem})") from None
    size = sum(v.numel() for v in net.state_dict().values())
    if size > MAX_ELEMENTS:
        raise damaged(path, f"its {what} has {size:,} weights, over the limit of {MAX_ELEMENTS:,}")
    return net


def _check_tensor(path, key: str, tensor: Tensor, like: Tensor) -> None:
    """``tensor`` (the file's ``key``) has the shape and a type that fits ``like``."""
    if tuple(tensor.shape) != tuple(like.shape):
        raise damaged(path, f"{key} has shape {list(tensor.shape)}, the model's {list(like.shape)}")
    if like.is_floating_point() and str(tensor.dtype) not in REAL_FLOATS:
        allowed = ", ".join(REAL_FLOATS)
        raise damaged(path, f"{key} is {tensor.dtype}, not a real floating type ({allowed})")
    if not like.is_floating_point() and tensor.dtype != like.dtype:
        raise damaged(path, f"{key} is {tensor.dtype}, the model's {like.dtype}")


def _check_csr(path, name: str, info: dict, tensors: dict[str, Tensor], like: Tensor) -> None:
    """The CSR parts of sparse layer ``name`` fit its shape, the model's."""
    if info["shape"] != list(like.shape):
        raise damaged(path, f"sparse layer {name} has shape {info['shape']}, the model's "
                             f"{list(like.shape)}")  # fmt: skip
    parts = {p: tensors.get(f"{name}.{p}") for p in CSR}
    for part, tensor in parts.items():
        key = f"{name}.{part}"
        if tensor is None:
            raise damaged(path, f"it lacks {key}")
        allowed = REAL_FLOATS.values() if part == "values" else INDEX_TYPES
        if tensor.dtype not in allowed:
            names = ", ".join(str(t) for t in allowed)
            raise damaged(path, f"{key} is {tensor.dtype}, not one of {names}")
        if tensor.dim() != 1:
            raise damaged(path, f"{key} has shape {list(tensor.shape)}, not one dimension")
    rows, count = like.shape[0], parts["values"].numel()
    if parts["crow_indices"].numel() != rows + 1 or parts["col_indices"].numel() != count:
        raise damaged(path, f"the CSR parts of {name} do not fit its shape {info['shape']}")


def sparse_layers(fmt: str, meta: dict) -> tuple[dict, set[str]]:
    """A file's sparse layers (name -> layout) and the keys of their CSR parts."""
    sparse = meta.get("sparse", {}) if fmt in _SPARSE else {}
    return sparse, {f"{name}.{part}" for name in sparse for part in CSR}


def check_tensors(path, fmt: str, meta: dict, tensors: dict[str, Tensor], model: nn.Module):
    """The file's tensors are exactly the model's entries (dense, CSR or torch-prune's
    ``_orig`` and ``_mask``), in shapes and types that fit; its pruned names are the model's."""
    expected = model.state_dict()
    unknown = [n for n in meta.get("pruned", []) if n not in expected]
    if unknown:
        raise damaged(path, f"it prunes {unknown[0]!r}, which the model does not have")
    sparse, skip = sparse_layers(fmt, meta)
    paired = set()
    if fmt == "torch-prune":
        paired = {k[:-5] for k in tensors if k.endswith("_orig") and f"{k[:-5]}_mask" in tensors}
        skip |= {f"{name}_mask" for name in paired}
    found = set(sparse)
    for key, tensor in sorted(tensors.items()):  # safetensors' order varies by process
        if key in skip:
            continue
        name = key[:-5] if key[:-5] in paired and key.endswith("_orig") else key
        if name not in expected or name in found:
            raise damaged(path, f"it holds {key}, which the model does not have")
        _check_tensor(path, key, tensor, expected[name])
        if name in paired:
            _check_mask(path, f"{name}_mask", tensors[f"{name}_mask"], expected[name])
        found.add(name)
    for name, info in sparse.items():
        if name not in expected:
            raise damaged(path, f"it holds sparse layer {name!r}, which the model does not have")
        _check_csr(path, name, info, tensors, expected[name])
    missing = [n for n in expected if n not in found]
    if missing:
        raise damaged(path, f"it lacks {missing[0]}, which the model has")


def _check_mask(path, key: str, mask: Tensor, like: Tensor) -> None:
    """A torch-prune mask: its weight's shape, a real floating type, only 0 and 1."""
    _check_tensor(path, key, mask, like)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise damaged(path, f"{key} holds values other than 0 and 1")
