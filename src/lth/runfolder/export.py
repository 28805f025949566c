"""Tickets as artifacts: one safetensors file other code can load (``lth export``).

Formats (:data:`FORMATS`); every file is safetensors, with metadata saying what it holds
(model and its arguments, dataset, level, branch, replicate, weights remaining, the run's
config; :func:`read_metadata`):

* ``dense``: the model's plain ``state_dict``, pruned weights 0. Loads with
  ``model.load_state_dict(safetensors.torch.load_file(path))`` into the registry's model; no
  ``lth`` needed beyond building the model.
* ``sparse``: every pruned weight as CSR of its 2-D view (a conv's as out x in*kh*kw):
  ``<name>.crow_indices``, ``<name>.col_indices`` (the narrowest unsigned integer type that
  fits) and ``<name>.values`` (float32); everything else dense. :func:`load_export` gives the
  identical model and its exact masks.
* ``torch-prune``: the ``state_dict`` of the model after ``torch.nn.utils.prune``: each pruned
  ``<name>`` as ``<name>_orig`` and ``<name>_mask``; loads into a model on which
  ``prune.custom_from_mask`` was applied (:func:`apply_torch_prune`). The way back, from any
  model pruned with ``torch.nn.utils.prune``: :func:`from_torch_prune`.
* ``shrunk``: a physically smaller dense ``nn.Sequential`` (dead units removed, exactly:
  :mod:`lth.pruning.shrink`); the metadata's ``architecture`` describes its layers and
  ``layer_sizes`` their sizes; :func:`load_export` rebuilds it, no model code needed.
* ``shrunk-sparse``: the smaller network with its pruned weights stored as in ``sparse``: the
  smallest file.

From Python::

    export_ticket("runs/lenet", level=15, format="sparse", out="ticket.safetensors")
    model, masks = load_export("ticket.safetensors")
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor, nn
from torch.nn.utils import prune

from lth.configfile import read_run_config, read_run_info
from lth.core.fileio import ORDER_KEY, atomic_write
from lth.core.models import MODELS, build_model, call_factory
from lth.data import get_spec
from lth.errors import LTHError
from lth.pruning.masks import MaskSet, check_masks, masks_from_torch_prune, remaining_fraction
from lth.pruning.shrink import architecture, build_architecture, shrink
from lth.pruning.sparse import csr_parts, from_csr_parts
from lth.runfolder.export_checks import (  # noqa: F401 - documented here
    CSR,
    INDEX_TYPES,
    MAX_ELEMENTS,
    REAL_FLOATS,
    check_meta,
    check_tensors,
    damaged,
    model_skeleton,
    one_line,
    show,
    sparse_layers,
)
from lth.runfolder.ownership import check_output_path, check_replace
from lth.runfolder.runs import load_ticket
from lth.usercode import CodeTrust, as_trust
from lth.version import __version__

__all__ = [
    "FORMATS",
    "ExportInfo",
    "apply_torch_prune",
    "export_bytes",
    "export_model",
    "export_ticket",
    "from_torch_prune",
    "load_export",
    "read_metadata",
]

FORMATS = ("dense", "sparse", "torch-prune", "shrunk", "shrunk-sparse")
FORMAT_KEY = "lth_format"
#: Metadata entries stored as JSON (the others are plain strings).
_JSON = (
    "model_args", "level", "replicate", "weights_remaining", "config", "pruned", "sparse",
    "architecture", "layer_sizes", "units_removed", "units_folded", "unused_inputs",
)  # fmt: skip


@dataclass
class ExportInfo:
    """What :func:`export_model` / :func:`export_ticket` wrote: the file, its format and size,
    the ticket's weights remaining (percent) and the file's metadata (decoded)."""

    path: Path
    format: str
    size: int
    weights_remaining: float
    metadata: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line about the file, as ``lth export`` prints it."""
        meta = self.metadata
        what = f"{self.format} ticket of {meta.get('model', 'the model')}"
        if "level" in meta:
            where = f"{meta.get('branch')}, replicate {meta.get('replicate')}"
            what += f", level {meta['level']} ({where})"
        line = (
            f"wrote {self.path}: {what}, {self.weights_remaining:.3g}% of weights remaining, "
            f"{self.size:,} bytes"
        )
        if "units_removed" in meta:
            removed = ", ".join(
                f"{name.removesuffix('.weight')} -{n}" for name, n in meta["units_removed"].items()
            )
            line += f"; units removed: {removed}"
        return line


# --------------------------------------------------------------------------------- writing


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise LTHError(f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")


def check_out(out: str | os.PathLike[str] | None, force: bool = False) -> Path:
    """The output file's path, or LTHError when it cannot be written (checked, not created):
    an existing file is replaced only if it is an lth export file, or with ``force``."""
    if out is None or not str(out).strip():
        raise LTHError("--out is empty; give a file path, e.g. ticket.safetensors")
    path = Path(out).expanduser()
    if path.is_dir():
        raise LTHError(f"--out {out} is a folder; give a file path, e.g. {out}/ticket.safetensors")
    blocker = next((p for p in path.parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise LTHError(f"cannot write --out {out}: {blocker} is a file, not a folder")
    if blocker is not None and not os.access(blocker, os.W_OK | os.X_OK):
        raise LTHError(f"cannot write --out {out}: {blocker} is not writable")
    check_replace(path, "--out", _is_export, force)
    return path


def _is_export(path: Path) -> bool:
    """Whether ``path`` is an export file lth wrote (its metadata names the format)."""
    try:
        return FORMAT_KEY in read_metadata(path)
    except LTHError:
        return False


def _masked_state(model: nn.Module, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The model's state_dict on the CPU, pruned entries 0."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    for name, mask in masks.items():
        state[name] = state[name].masked_fill(~mask.cpu(), 0)
    return state


def _sparse_state(
    state: dict[str, Tensor], masks: Mapping[str, Tensor], meta: dict
) -> dict[str, Tensor]:
    """``state`` with every pruned weight replaced by its CSR parts (described in ``meta``)."""
    out: dict[str, Tensor] = {}
    layout = {}
    for key, value in state.items():
        mask = masks.get(key)
        if mask is None or bool(mask.all()):
            out[key] = value
            continue
        for part, tensor in csr_parts(value, mask).items():
            out[f"{key}.{part}"] = tensor
        layout[key] = {"layout": "csr", "shape": list(value.shape), "dtype": str(value.dtype)}
    meta["sparse"] = layout
    return out


def export_bytes(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    format: str = "dense",
    metadata: Mapping[str, object] | None = None,
) -> tuple[bytes, dict]:
    """The bytes of the export file of ``model`` with ``masks`` in ``format``, and its
    metadata (decoded). Nothing is written; see :func:`export_model`."""
    _check_format(format)
    check_masks(masks, model)
    meta: dict = dict(metadata or {})
    meta.setdefault("model", type(model).__name__)
    meta[FORMAT_KEY] = format
    meta["weights_remaining"] = 100.0 * remaining_fraction(masks) if masks else 100.0
    meta["pruned"] = list(masks)
    meta["lth_version"] = __version__
    if format.startswith("shrunk"):
        small = shrink(model, masks)
        model, masks = small.model, small.masks
        meta["architecture"] = architecture(model)
        meta["layer_sizes"] = small.sizes
        meta["units_removed"] = small.removed
        meta["units_folded"] = small.folded
        meta["unused_inputs"] = small.unused_inputs
    state = _masked_state(model, masks)
    if format in ("sparse", "shrunk-sparse"):
        state = _sparse_state(state, masks, meta)
    elif format == "torch-prune":
        pruned: dict[str, Tensor] = {}
        for key, value in state.items():
            if key in masks:
                pruned[f"{key}_orig"] = value
                pruned[f"{key}_mask"] = masks[key].cpu().to(value.dtype)
            else:
                pruned[key] = value
        state = pruned
    text = {k: json.dumps(v) if k in _JSON else str(v) for k, v in meta.items()}
    text[ORDER_KEY] = json.dumps(list(state))
    return _st_save(state, metadata=text), meta


def export_model(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    out: str | os.PathLike[str],
    *,
    format: str = "dense",
    metadata: Mapping[str, object] | None = None,
    force: bool = False,
) -> ExportInfo:
    """Write ``model`` with ``masks`` (e.g. from :func:`lth.runfolder.runs.load_ticket`) to ``out``
    in ``format`` (:data:`FORMATS`), atomically; missing folders are created. ``metadata``
    entries (``model``, ``model_args`` = ``{"input_shape", "num_classes"}``, ...) are stored
    with the file. Everything is checked before anything is written; an existing ``out`` is
    replaced only if it is an lth export file, or with ``force``."""
    _check_format(format)
    path = check_out(out, force)
    data, meta = export_bytes(model, masks, format, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, data)
    return ExportInfo(path, format, len(data), meta["weights_remaining"], meta)


def _run_shape(run_dir: Path, dataset: str) -> tuple[list[int], int]:
    """The input shape and class count a run's model was built for."""
    source = read_run_info(run_dir).get("source", {})
    if "data_input_shape" in source:
        return list(source["data_input_shape"]), int(source["data_num_classes"])
    spec = get_spec(dataset)
    return list(spec.input_shape), spec.num_classes


def export_ticket(
    run_dir: str | os.PathLike[str],
    level: int,
    *,
    out: str | os.PathLike[str],
    format: str = "dense",
    branch: str = "ticket",
    replicate: int = 0,
    which: str = "final",
    model: nn.Module | Callable[..., nn.Module] | None = None,
    trust_code: bool | CodeTrust = False,
    force: bool = False,
) -> ExportInfo:
    """Write one network of a run folder (``lth export``) to ``out`` in ``format``.

    ``level``, ``branch``, ``replicate``, ``which`` (``final``: trained weights; ``init``: the
    weights the level started from), ``model`` and ``trust_code`` are as in
    :func:`lth.runfolder.runs.load_ticket`. Bad input (a missing level, an unknown branch or format,
    an output that cannot be written, a folder that is not a run, an existing ``out`` that is not
    an lth export file, unless ``force``) raises :class:`LTHError` before anything is
    written.

    Args:
        run_dir: The run folder (``lth run --out``).
        level: The pruning level.
        out: The file to write (atomically; missing folders are made).
        format: ``dense``, ``sparse``, ``torch-prune``, ``shrunk`` or ``shrunk-sparse``.
        branch: ``"ticket"`` or one of the run's controls.
        replicate: The replicate, from 0.
        which: ``"final"`` (the trained weights) or ``"init"`` (where the level started).
        model: For a run of a user model: an ``nn.Module`` of its architecture, or its factory.
        trust_code: Import a ``package.module:function`` model the run names.
        force: Replace an existing ``out`` that is not an lth export file.

    Returns:
        ExportInfo: What was written (``summary()`` is the line ``lth export`` prints).

    Examples:
        >>> import tempfile, torch, lth
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(200, 1, 4, 4, generator=g), torch.randint(0, 3, (200,), generator=g)
        >>> data = lth.dataset_from_tensors("toy", x[:160], y[:160], x[160:], y[160:], val_size=20)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> config = lth.ExperimentConfig(levels=1, iterations=20, eval_every=10, batch_size=20)
        >>> run = tempfile.mkdtemp() + "/run"
        >>> results = lth.run_experiment(config, data, model=net, out=run, quiet=True)
        >>> info = lth.export_ticket(run, 1, out=run + "/../t.safetensors", format="sparse",
        ...                          model=net)
        >>> print(info.summary())
        wrote ...t.safetensors: sparse ticket of user model, level 1 (ticket, replicate 0),
        81.6% of weights remaining, ... bytes
    """
    _check_format(format)
    path = check_out(out, force=True)  # writable; whether it may be replaced: below
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        what = "is a file" if run.exists() else "does not exist"
        raise LTHError(f"run folder {run_dir} {what}; give the --out of an lth run")
    try:
        check_output_path(run, path)
    except LTHError:
        raise LTHError(
            f"--out {out} is one of the run folder's own files; choose a path outside them"
        ) from None
    check_replace(path, "--out", _is_export, force)
    config = read_run_config(run)
    net, masks = load_ticket(
        run, level, branch, replicate, which, model=model, trust_code=trust_code
    )
    shape, classes = _run_shape(run, config.dataset)
    metadata = {
        "model": config.model,
        "model_args": {"input_shape": shape, "num_classes": classes},
        "dataset": config.dataset,
        "level": level,
        "branch": branch,
        "replicate": replicate,
        "which": which,
        "config": config.to_dict(),
    }
    return export_model(net, masks, path, format=format, metadata=metadata, force=force)


# --------------------------------------------------------------------------------- reading


def read_metadata(path: str | os.PathLike[str]) -> dict:
    """The metadata of an export file, JSON entries decoded (``{}`` for a plain file)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LTHError(f"{path} does not exist or is not a file")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # noqa: BLE001 - OSError, safetensors' own error types
        raise LTHError(f"{path} is not a readable safetensors file ({one_line(e)})") from None
    meta = {}
    for key, value in raw.items():
        try:
            meta[key] = json.loads(value) if key in _JSON else value
        except (ValueError, RecursionError):
            raise damaged(path, f"its metadata entry {key!r} is not valid JSON") from None
    return meta


def _read(path: str | os.PathLike[str]) -> tuple[dict[str, Tensor], dict]:
    """The tensors and metadata of a file (safetensors checks every tensor against the file's
    size: the tensors take no more memory than the file)."""
    meta = read_metadata(path)
    try:
        tensors = _st_load(Path(path).expanduser().read_bytes())
    except Exception as e:  # noqa: BLE001 - safetensors raises several types
        raise LTHError(f"{path} is not a readable safetensors file ({one_line(e)})") from None
    return tensors, meta


def from_torch_prune(
    model_or_state: nn.Module | Mapping[str, Tensor],
) -> tuple[dict[str, Tensor], MaskSet]:
    """A model pruned with ``torch.nn.utils.prune`` (or its state_dict) as a plain state_dict
    (``<name>`` = ``<name>_orig`` x ``<name>_mask``) and ``lth`` masks, to go on with ``lth``::

        state, masks = from_torch_prune(pruned_model)
        model = create_model("lenet_300_100"); model.load_state_dict(state)
        # e.g. retrain from θ0 with the same masks, or run the controls
    """
    masks = masks_from_torch_prune(model_or_state)
    source = (
        model_or_state.state_dict()
        if isinstance(model_or_state, nn.Module)
        else dict(model_or_state)
    )
    state: dict[str, Tensor] = {}
    for key, value in source.items():
        if key.endswith("_orig") and key[:-5] in masks:
            name = key[:-5]
            state[name] = value.detach().masked_fill(~masks[name].to(value.device), 0)
        elif key.endswith("_mask") and key[:-5] in masks:
            continue
        else:
            state[key] = value
    return state, masks


def apply_torch_prune(model: nn.Module, masks: Mapping[str, Tensor]) -> nn.Module:
    """Prune ``model`` in place with ``torch.nn.utils.prune.custom_from_mask``, one mask per
    parameter, so that it takes a ``torch-prune`` export's state_dict. Returns ``model``."""
    check_masks(masks, model)
    for name, mask in masks.items():
        prefix, _, attr = name.rpartition(".")
        module = model.get_submodule(prefix) if prefix else model
        prune.custom_from_mask(module, attr, mask.to(getattr(module, attr).device))
    return model


def _model_for(meta: dict, model, trust_code: bool | CodeTrust) -> nn.Module:
    """The network an export file's metadata names: ``model`` if given, else built by name
    (code only as ``trust_code`` allows, :func:`lth.usercode.import_code`)."""
    args = meta.get("model_args") or {}
    shape, classes = args.get("input_shape"), args.get("num_classes")
    name = meta.get("model", "")
    if isinstance(model, nn.Module):
        return model
    if model is not None and shape is not None:
        return call_factory(model, tuple(shape), int(classes), repr(model))
    if model is not None:
        return call_factory(lambda: model(), (), 0, repr(model))
    if shape is None or (name not in MODELS and ":" not in name):
        raise LTHError(
            f"the file holds {_model_words(name)} that lth cannot build; "
            "pass load_export(..., model=...) (the module or its factory)"
        )
    return build_model(name, shape, int(classes), as_trust(trust_code))


def _model_words(name: str) -> str:
    """'a user model' (no name, or the ``"user model"`` a run of an ``nn.Module`` records),
    else 'a NAME model'."""
    return "a user model" if name in ("", "user model") else f"a {name} model"


def _decoded(path, fmt: str, meta: dict, tensors: dict[str, Tensor]) -> tuple[dict, MaskSet]:
    """The state_dict and masks a checked file holds (sparse layers decoded, torch-prune's
    pairs joined); masks in the order of its ``pruned`` names."""
    masks: MaskSet = {}
    sparse, csr = sparse_layers(fmt, meta)
    state = {k: v for k, v in tensors.items() if k not in csr}
    for name, info in sparse.items():
        parts = {p: tensors[f"{name}.{p}"] for p in CSR}
        dtype = REAL_FLOATS[info.get("dtype", "torch.float32")]
        try:
            state[name], masks[name] = from_csr_parts(parts, info["shape"], dtype)
        except LTHError as e:
            raise damaged(path, str(e)) from None
    if fmt == "torch-prune" and any(k.endswith("_orig") for k in state):
        state, masks = from_torch_prune(state)
    pruned = meta.get("pruned", [])
    for name in pruned:
        if name not in masks:
            nonzero = fmt in ("dense", "shrunk")  # these files keep no mask
            masks[name] = state[name] != 0 if nonzero else torch.ones_like(state[name]).bool()
    return state, {n: masks[n] for n in pruned}


def load_export(
    path: str | os.PathLike[str],
    *,
    model: nn.Module | Callable[..., nn.Module] | None = None,
    trust_code: bool | CodeTrust = False,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, MaskSet]:
    """Read an export file back as ``(model, masks)``, like :func:`lth.runfolder.runs.load_ticket`.

    ``shrunk`` files rebuild their smaller ``nn.Sequential`` from the metadata; the others
    build the registry model named in the file (or use ``model=``, an ``nn.Module`` whose
    weights are replaced or its factory; ``package.module:function`` only with
    ``trust_code``). ``sparse`` and ``torch-prune`` files give the exact masks; ``dense`` and
    ``shrunk`` files keep none, so their masks are the nonzero entries of the pruned weights.

    A malformed file raises a one-line :class:`LTHError` naming it, before the model or any
    tensor it describes is allocated: its metadata entries have the types lth writes, the model
    (built first on the meta device) has at most :data:`MAX_ELEMENTS` elements, and the file's
    tensors are exactly the model's, in its shapes and in real floating types
    (:data:`REAL_FLOATS`; CSR indices in :data:`INDEX_TYPES`).

    Args:
        path: The export file.
        model: An ``nn.Module`` to fill (or its factory) instead of the model the file names.
        trust_code: Import a ``package.module:function`` model the file names.
        device: Where the model is placed.

    Returns:
        tuple[nn.Module, dict[str, torch.Tensor]]: The model and its masks.

    Raises:
        LTHError: A file that is not an lth export, or a damaged one (one line naming it).

    Examples:
        >>> import tempfile, torch, lth
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(200, 1, 4, 4, generator=g), torch.randint(0, 3, (200,), generator=g)
        >>> data = lth.dataset_from_tensors("toy", x[:160], y[:160], x[160:], y[160:], val_size=20)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> config = lth.ExperimentConfig(levels=1, iterations=20, eval_every=10, batch_size=20)
        >>> run = tempfile.mkdtemp() + "/run"
        >>> results = lth.run_experiment(config, data, model=net, out=run, quiet=True)
        >>> _ = lth.export_ticket(run, 1, out=run + "/../t.safetensors", format="sparse", model=net)
        >>> loaded, masks = lth.load_export(run + "/../t.safetensors", model=net)
        >>> ticket, ticket_masks = lth.load_ticket(run, level=1, model=net)
        >>> all(torch.equal(masks[n], ticket_masks[n]) for n in masks)
        True
    """
    tensors, meta = _read(path)
    fmt = meta.get(FORMAT_KEY)
    if fmt is None:
        raise LTHError(f"{path} is not an lth export file (no {FORMAT_KEY} in its metadata)")
    if not isinstance(fmt, str) or fmt not in FORMATS:
        raise damaged(path, f"its {FORMAT_KEY} is {show(fmt)}, not one of {', '.join(FORMATS)}")
    check_meta(path, fmt, meta)
    skeleton = model_skeleton(path, fmt, meta, model)
    net = _model_for(meta, model, trust_code) if skeleton is None else skeleton
    check_tensors(path, fmt, meta, tensors, net)  # before the model takes any memory
    if fmt.startswith("shrunk"):
        net = build_architecture(meta.get("architecture", []), device="cpu")
    elif skeleton is not None:
        net = _model_for(meta, model, trust_code)
    state, masks = _decoded(path, fmt, meta, tensors)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        problem = " ".join(str(e).split())
        raise LTHError(f"{path} does not fit the model: {problem}") from None
    net.to(device)
    return net, {n: m.to(device) for n, m in masks.items()}
