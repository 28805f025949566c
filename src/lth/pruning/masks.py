"""Pruning masks: plain ``dict[str, torch.Tensor]`` of bool tensors keyed by parameter name.

A mask has the same shape as its parameter; ``True`` means the weight is kept. Functions here
are small and pure except :func:`apply_masks` (in place, by design) and :func:`save_masks`.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Mapping, Sequence
from fnmatch import fnmatch
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import parametrize

from lth.core.fileio import load_tensors, save_tensors
from lth.errors import LTHError

__all__ = [
    "MaskSet",
    "apply_masks",
    "check_masks",
    "count_remaining",
    "jaccard",
    "load_masks",
    "masked_weights",
    "named_weights",
    "nonzero_table",
    "ones_mask",
    "prunable_parameters",
    "remaining_fraction",
    "save_masks",
]

MaskSet = dict[str, torch.Tensor]


def names_preview(names: Iterable[str], limit: int = 8) -> str:
    """Return a short comma-separated preview of ``names`` for error messages."""
    names = list(names)
    if not names:
        return "(none)"
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def as_name_set(names: Collection[str] | str, what: str) -> set[str]:
    """Return ``names`` as a set, treating a lone string as one name rather than its characters."""
    if isinstance(names, str):
        return {names}
    try:
        return set(names)
    except TypeError:
        raise LTHError(f"{what} must be a collection of parameter names, got {names!r}") from None


def named_weights(
    model_or_weights: nn.Module | Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Return ``{name: tensor}`` from a module (its named parameters) or a mapping of tensors."""
    if isinstance(model_or_weights, nn.Module):
        return dict(model_or_weights.named_parameters())
    if isinstance(model_or_weights, Mapping):
        return dict(model_or_weights)
    raise LTHError(
        f"expected an nn.Module or a dict of tensors, got {type(model_or_weights).__name__}; "
        "pass the model or model.state_dict()"
    )


def prunable_parameters(
    model: nn.Module,
    layer_types: Sequence[type[nn.Module] | str] | type[nn.Module] = (nn.Linear, nn.Conv2d),
    exclude: Collection[str] = (),
    patterns: Sequence[str] = (),
) -> list[str]:
    """The names of the parameters to prune, in parameter order.

    By default the ``weight`` of every module of ``layer_types`` (classes, matched with
    ``isinstance``, or class names such as ``"Linear"``, matched exactly); with ``patterns``,
    every parameter whose name matches one of these ``fnmatch`` patterns instead. Names in
    ``exclude`` are left out (each must be one of the selected names).

    >>> prunable_parameters(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
    ['0.weight', '2.weight']
    """
    if isinstance(layer_types, type | str):
        layer_types = (layer_types,)
    excluded = as_name_set(exclude, "exclude")
    if patterns:
        wanted = {n for n, _ in model.named_parameters() if any(fnmatch(n, p) for p in patterns)}
    else:
        classes = tuple(t for t in layer_types if isinstance(t, type))
        type_names = {t for t in layer_types if isinstance(t, str)}
        wanted = {
            f"{mod_name}.weight" if mod_name else "weight"
            for mod_name, module in model.named_modules()
            if (isinstance(module, classes) or type(module).__name__ in type_names)
            and isinstance(getattr(module, "weight", None), nn.Parameter)
        }
    names = [name for name, _ in model.named_parameters() if name in wanted]
    unknown = sorted(excluded - set(names))
    if unknown:
        raise LTHError(
            f"exclude names {names_preview(unknown)} are not prunable parameters of the model; "
            f"choose among: {names_preview(names)}"
        )
    return [name for name in names if name not in excluded]


def ones_mask(
    model_or_weights: nn.Module | Mapping[str, torch.Tensor], names: Iterable[str] | None = None
) -> MaskSet:
    """All-True masks (nothing pruned yet): the start of every lottery-ticket chain.

    Args:
        model_or_weights: A model, whose prunable parameters get masks (the ``weight`` of
            every ``nn.Linear`` and ``nn.Conv2d``, see ``lth.pruning.masks.prunable_parameters``),
            or a dict of tensors, every entry of which gets one.
        names: Only these parameters get masks, in this order (a lone string is one name);
            ``None`` (the default) picks them as above.

    Returns:
        ``{name: bool tensor of the parameter's shape, on its device, all True}``.

    Raises:
        LTHError: A name that matches no parameter, or neither a model nor a dict given.

    Examples:
        >>> masks = ones_mask(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)))
        >>> {n: tuple(m.shape) for n, m in masks.items()}
        {'0.weight': (3, 4), '2.weight': (2, 3)}
        >>> list(ones_mask(nn.Linear(4, 3), names=["weight", "bias"]))
        ['weight', 'bias']
    """
    weights = named_weights(model_or_weights)
    if names is None:
        if isinstance(model_or_weights, nn.Module):
            names = prunable_parameters(model_or_weights)
        else:
            names = list(weights)
    elif isinstance(names, str):
        names = [names]
    names = list(names)
    missing = [name for name in names if name not in weights]
    if missing:
        raise LTHError(
            f"no parameter named {names_preview(missing)}; choose among: {names_preview(weights)}"
        )
    return {name: torch.ones_like(weights[name], dtype=torch.bool) for name in names}


def check_masks(
    masks: Mapping[str, torch.Tensor], weights_or_model: nn.Module | Mapping[str, torch.Tensor]
) -> None:
    """Raise LTHError unless every mask is a bool tensor matching a parameter's name and shape."""
    if not isinstance(masks, Mapping):
        raise LTHError(f"masks must be a dict name -> bool tensor, got {type(masks).__name__}")
    weights = named_weights(weights_or_model)
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor):
            raise LTHError(f"mask {name!r} is a {type(mask).__name__}, not a tensor")
        if mask.dtype != torch.bool:
            raise LTHError(
                f"mask {name!r} has dtype {mask.dtype}; masks must be bool tensors "
                "(convert with mask.bool())"
            )
        if name not in weights:
            raise LTHError(
                f"mask {name!r} matches no parameter; known names: {names_preview(weights)} "
                "(build masks with lth.ones_mask(model))"
            )
        if tuple(mask.shape) != tuple(weights[name].shape):
            raise LTHError(
                f"mask {name!r} has shape {tuple(mask.shape)} but the parameter has shape "
                f"{tuple(weights[name].shape)}; the masks belong to a different model"
            )


def masked_weights(
    weights: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """A copy of ``weights`` with pruned entries set to exactly +0 (unmasked tensors shared)."""
    return {n: w.masked_fill(~masks[n], 0.0) if n in masks else w for n, w in weights.items()}


def apply_masks(
    model_or_state: nn.Module | Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]
) -> None:
    """Zero, in place, every parameter entry whose mask is False (pruned entries become 0).

    Everything is checked (names, shapes, dtypes) before anything changes. This zeroes the
    weights once: training with ``lth`` keeps them at 0; a training loop of your own must mask
    gradients or weights (``attach_masks`` does that for any optimizer).

    Args:
        model_or_state: A model (its parameters are changed) or a dict of tensors such as a
            ``state_dict()`` (its tensors are changed).
        masks: ``{parameter name: bool tensor of its shape}``, True where the weight is
            kept; parameters without a mask are left alone.

    Returns:
        None; the zeros are written into the tensors (``+0.0``, also where they held NaN).

    Raises:
        LTHError: A mask that is not a bool tensor, names no parameter or has another shape
            than its parameter; then nothing is changed.

    Examples:
        >>> model = nn.Linear(2, 2)
        >>> apply_masks(model, {"weight": torch.tensor([[True, False], [False, True]])})
        >>> int(model.weight.count_nonzero())
        2
    """
    check_masks(masks, model_or_state)  # validate everything before touching anything
    weights = named_weights(model_or_state)
    with torch.no_grad():
        for name, mask in masks.items():
            tensor = weights[name]
            # masked_fill_ rather than mul_: gives +0.0 (not -0.0) and clears NaN/inf entries too.
            tensor.masked_fill_(~mask.to(tensor.device), 0)


def count_remaining(masks: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, int]]:
    """How many weights each mask keeps, to report or check a mask set's sparsity.

    Args:
        masks: ``{name: bool tensor}``, True where the weight is kept.

    Returns:
        ``{name: (kept, total)}``, in the order of ``masks``.

    Examples:
        >>> count_remaining({"w": torch.tensor([True, False, True])})
        {'w': (2, 3)}
    """
    return {name: (int(mask.count_nonzero()), mask.numel()) for name, mask in masks.items()}


def remaining_fraction(masks: Mapping[str, torch.Tensor]) -> float:
    """Return the fraction of entries kept over all masks together."""
    counts = count_remaining(masks).values()
    total = sum(t for _, t in counts)
    if total == 0:
        raise LTHError("the mask set is empty; build masks with lth.ones_mask(model) first")
    return sum(k for k, _ in counts) / total


def _pct(fraction: float) -> str:
    """Format a fraction as a percentage: one decimal, more significant digits below 1%."""
    pct = 100.0 * fraction
    return f"{pct:.1f}%" if pct >= 1 or pct == 0 else f"{pct:.2g}%"


def nonzero_table(
    masks: Mapping[str, torch.Tensor],
    weights: nn.Module | Mapping[str, torch.Tensor] | None = None,
) -> str:
    """A printable per-layer table: kept (or, given ``weights``, nonzero) / total, % remaining.

    Args:
        masks: ``{name: bool tensor}``, one row each, in this order.
        weights: ``None`` (the default) counts the entries each mask keeps; a model or a
            dict of tensors counts the nonzero weights under each mask's name instead (a check
            that pruned weights really are 0).

    Returns:
        The table as a string: a row per mask (nonzero, total, % remaining, shape), then a
        total row with the overall % remaining and the compression ratio.

    Raises:
        LTHError: With ``weights``, masks that do not fit them (names, shapes, dtypes).

    Examples:
        >>> import torch, lth
        >>> from torch import nn
        >>> masks = {"0.weight": torch.tensor([[True, False, True], [False, False, True]]),
        ...          "1.weight": torch.tensor([[True, True]])}
        >>> print(lth.nonzero_table(masks))
        layer     nonzero  total  % remaining  shape
        ---------------------------------------------
        0.weight        3      6        50.0%  (2, 3)
        1.weight        2      2       100.0%  (1, 2)
        ---------------------------------------------
        total           5      8  (62.5% remaining, 1.60× compression)
        >>> model = nn.Sequential(nn.Linear(3, 2, bias=False), nn.Linear(2, 1, bias=False))
        >>> print(lth.nonzero_table(masks, model).splitlines()[-1])   # not pruned yet
        total           8      8  (100.0% remaining, 1.00× compression)
    """
    if weights is not None:
        tensors = named_weights(weights)
        check_masks(masks, tensors)
        nonzero = {name: int(tensors[name].count_nonzero()) for name in masks}
    else:
        nonzero = {name: int(mask.count_nonzero()) for name, mask in masks.items()}
    header = ("layer", "nonzero", "total", "% remaining", "shape")
    rows = []
    for name, mask in masks.items():
        frac = nonzero[name] / mask.numel() if mask.numel() else 1.0
        rows.append(
            (name, str(nonzero[name]), str(mask.numel()), _pct(frac), str(tuple(mask.shape)))
        )
    nz_all = sum(nonzero.values())
    total_all = sum(mask.numel() for mask in masks.values())
    frac_all = nz_all / total_all if total_all else 1.0
    ratio = f"{total_all / nz_all:.2f}×" if nz_all else "inf×"
    total_row = ("total", str(nz_all), str(total_all))
    widths = [max(len(row[i]) for row in [header, *rows, total_row]) for i in range(3)]
    widths += [max(len(row[i]) for row in [header, *rows]) for i in (3, 4)]

    def line(cells: tuple[str, ...]) -> str:
        """Lay out one row: names and shapes left-aligned, numbers right-aligned."""
        out = [cells[0].ljust(widths[0])]
        out += [cell.rjust(widths[i]) for i, cell in enumerate(cells[1:4], start=1)]
        out += [cell.ljust(widths[4]) for cell in cells[4:]]
        return "  ".join(out).rstrip()

    rule = "-" * sum(widths) + "-" * 2 * (len(widths) - 1)
    summary = f"({_pct(frac_all)} remaining, {ratio} compression)"
    total_line = line(total_row) + "  " + summary
    return "\n".join([line(header), rule, *(line(row) for row in rows), rule, total_line])


def save_masks(masks: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Write a mask set to a safetensors file, to keep a ticket's masks or share them.

    The file is written atomically (a reader never sees half of it), holding bool tensors in
    the order of ``masks``; ``load_masks`` reads it back.

    Args:
        masks: ``{name: bool tensor}``.
        path: The file to write; missing parent folders are created, and a file already
            there is replaced.

    Returns:
        None.

    Raises:
        LTHError: A name that is not a string, or an entry that is not a bool tensor.

    Examples:
        >>> import os, tempfile, torch, lth
        >>> masks = {"fc.weight": torch.tensor([[True, False], [True, True]])}
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "ticket", "masks.safetensors")
        ...     lth.save_masks(masks, path)
        ...     lth.load_masks(path)["fc.weight"].tolist()
        [[True, False], [True, True]]
    """
    for name, mask in masks.items():
        if not isinstance(name, str) or not isinstance(mask, torch.Tensor):
            raise LTHError(f"masks must map str -> bool tensor; entry {name!r} does not")
        if mask.dtype != torch.bool:
            raise LTHError(f"mask {name!r} has dtype {mask.dtype}; convert it with mask.bool()")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(target, masks)


def load_masks(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> MaskSet:
    """Read back a mask set that ``save_masks`` wrote, to prune or inspect with it again.

    Args:
        path: A safetensors file of bool or uint8 entries (uint8: nonzero is kept).
        device: Where the masks go, e.g. ``"cpu"`` (the default) or ``"cuda:0"``.

    Returns:
        ``{name: bool tensor}`` in the order they were saved.

    Raises:
        LTHError: A missing or damaged file, or an entry of another dtype.

    Examples:
        >>> import os, tempfile, torch, lth
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "masks.safetensors")
        ...     lth.save_masks({"b": torch.ones(2, dtype=torch.bool),
        ...                     "a": torch.zeros(1, dtype=torch.bool)}, path)
        ...     masks = lth.load_masks(path)
        >>> {name: mask.tolist() for name, mask in masks.items()}
        {'b': [True, True], 'a': [False]}
        >>> lth.load_masks("no/such/masks.safetensors")
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: mask file 'no/such/masks.safetensors' does not exist or is not ...
    """
    path = Path(path)
    if not path.is_file():
        raise LTHError(f"mask file {str(path)!r} does not exist or is not a file; check the path")
    try:
        tensors = load_tensors(path)
    except LTHError as e:
        raise LTHError(f"mask file {e}: re-create it with lth.pruning.masks.save_masks") from None
    masks: MaskSet = {}
    for name, tensor in tensors.items():
        if tensor.dtype not in (torch.bool, torch.uint8):
            raise LTHError(
                f"mask {name!r} in {str(path)!r} has dtype {tensor.dtype}; expected bool or uint8"
            )
        masks[name] = tensor.to(device=device, dtype=torch.bool)
    return masks


def jaccard(
    a: Mapping[str, torch.Tensor] | torch.Tensor, b: Mapping[str, torch.Tensor] | torch.Tensor
) -> float:
    """Return |A ∩ B| / |A ∪ B| of the kept entries of two masks or mask sets (1.0 if empty)."""
    a = {"mask": a} if isinstance(a, torch.Tensor) else dict(a)
    b = {"mask": b} if isinstance(b, torch.Tensor) else dict(b)
    if set(a) != set(b):
        raise LTHError(
            f"mask sets have different layers ({names_preview(sorted(set(a) ^ set(b)))} differ); "
            "compare masks of the same model"
        )
    inter = union = 0
    for name, ma in a.items():
        mb = b[name]
        if ma.shape != mb.shape:
            raise LTHError(
                f"mask {name!r} has shapes {tuple(ma.shape)} and {tuple(mb.shape)}; "
                "compare masks of the same model"
            )
        ma, mb = ma.bool(), mb.bool().to(ma.device)
        inter += int((ma & mb).count_nonzero())
        union += int((ma | mb).count_nonzero())
    return inter / union if union else 1.0


# ------------------------------------------------------------------ masks in the user's own loop


class KeepMask(nn.Module):
    """A ``torch.nn.utils.parametrize`` parametrization that zeroes a tensor's pruned entries.

    Registered by :func:`attach_masks`: the module's ``weight`` becomes
    ``original.masked_fill(~mask, 0)`` at every access, so no optimizer step can bring a
    pruned weight back (its gradient is 0 too). The mask is a buffer, saved in the state_dict.
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.bool())

    def forward(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.masked_fill(~self.mask, 0)


def _owner(model: nn.Module, name: str) -> tuple[nn.Module, str]:
    """The submodule holding parameter ``name`` and the parameter's own name there."""
    prefix, _, attr = name.rpartition(".")
    return (model.get_submodule(prefix) if prefix else model), attr


def attach_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> nn.Module:
    """Keep ``masks`` on ``model`` under any optimizer, in the user's own training loop.

    Zeroes the pruned entries, then registers a ``KeepMask`` parametrization
    (``torch.nn.utils.parametrize``) on every masked parameter: ``model.fc1.weight`` is then
    always the masked tensor, and SGD with momentum, Adam, AdamW (weight decay included) can
    step as they like. The parameter object an optimizer holds is the same before and after
    (it moves to ``fc1.parametrizations.weight.original``), so an optimizer made earlier keeps
    working. Undo with ``lth.pruning.masks.detach_masks``.

    Args:
        model: The model to mask, changed in place.
        masks: ``{parameter name: bool tensor of its shape}``, True where the weight is kept;
            parameters without a mask stay plain.

    Returns:
        ``model`` itself.

    Raises:
        LTHError: A parameter that already has a mask attached, or masks that do not fit the
            model (names, shapes, dtypes); then nothing is changed.

    Examples:
        >>> import torch, lth
        >>> from torch import nn
        >>> from lth.pruning.masks import detach_masks
        >>> model = nn.Sequential(nn.Linear(3, 2))
        >>> masks = {"0.weight": torch.tensor([[True, False, True], [False, True, True]])}
        >>> model = lth.attach_masks(model, masks)
        >>> model(torch.randn(5, 3)).sum().backward()
        >>> with torch.no_grad():   # a step that moves every entry, the pruned ones too
        ...     for p in model.parameters():
        ...         p -= 0.1 * (p.grad + 1.0)
        >>> (model[0].weight == 0).tolist()                  # pruned entries still 0
        [[False, True, False], [True, False, False]]
        >>> list(detach_masks(model))    # plain parameters again, pruned entries exactly 0
        ['0.weight']
    """
    attached = attached_masks(model)
    twice = [name for name in masks if name in attached]
    if twice:
        raise LTHError(
            f"{twice[0]} already has a mask attached (masks attached twice?); "
            "call lth.pruning.masks.detach_masks(model) first"
        )
    check_masks(masks, model)
    apply_masks(model, masks)
    for name, mask in masks.items():
        module, attr = _owner(model, name)
        device = getattr(module, attr).device
        parametrize.register_parametrization(module, attr, KeepMask(mask.to(device)))
    return model


def attached_masks(model: nn.Module) -> MaskSet:
    """The masks :func:`attach_masks` put on ``model`` (by parameter name), in module order."""
    masks: MaskSet = {}
    for prefix, module in model.named_modules():
        for attr, plist in getattr(module, "parametrizations", {}).items():
            for p in plist:
                if isinstance(p, KeepMask):
                    masks[f"{prefix}.{attr}" if prefix else attr] = p.mask.clone()
    return masks


def detach_masks(model: nn.Module) -> MaskSet:
    """Bake the masks of :func:`attach_masks` into ``model``'s parameters and remove them.

    Every masked parameter becomes a plain ``nn.Parameter`` again (same names and state_dict
    keys as before attaching) holding the masked values, pruned entries exactly 0. Returns the
    masks that were attached; a model without attached masks raises :class:`LTHError`.
    """
    masks = attached_masks(model)
    if not masks:
        raise LTHError("the model has no masks attached; attach them with attach_masks")
    for name in masks:
        module, attr = _owner(model, name)
        if len(module.parametrizations[attr]) != 1:
            raise LTHError(
                f"{name} has other parametrizations besides its mask; remove them first "
                "(torch.nn.utils.parametrize.remove_parametrizations)"
            )
    for name in masks:
        module, attr = _owner(model, name)
        parametrize.remove_parametrizations(module, attr, leave_parametrized=True)
    return masks


def masks_from_torch_prune(model_or_state: nn.Module | Mapping[str, torch.Tensor]) -> MaskSet:
    """Read the masks of a model pruned with ``torch.nn.utils.prune`` as ``lth`` masks.

    ``model_or_state`` is the pruned module or its state_dict: every ``<name>_orig`` parameter
    with a ``<name>_mask`` buffer gives the bool mask of ``<name>`` (e.g. ``fc1.weight``), the
    name ``lth`` uses once the pruning is removed (``prune.remove``) or the weights are loaded
    into an unpruned copy (see :func:`lth.runfolder.export.from_torch_prune`)::

        prune.l1_unstructured(model.fc1, "weight", amount=0.8)
        masks = masks_from_torch_prune(model)      # {"fc1.weight": bool tensor}
    """
    if isinstance(model_or_state, nn.Module):
        state = model_or_state.state_dict()
    elif isinstance(model_or_state, Mapping):
        state = dict(model_or_state)
    else:
        raise LTHError(
            f"expected a module pruned with torch.nn.utils.prune or its state_dict, got "
            f"{type(model_or_state).__name__}"
        )
    masks: MaskSet = {}
    for key, value in state.items():
        if key.endswith("_orig") and f"{key[:-5]}_mask" in state:
            mask = state[f"{key[:-5]}_mask"]
            if not isinstance(mask, torch.Tensor) or mask.shape != value.shape:
                raise LTHError(f"{key[:-5]}_mask does not match {key}; the state is damaged")
            masks[key[:-5]] = mask.detach() != 0
    if not masks:
        raise LTHError(
            "no torch.nn.utils.prune masks found (no <name>_orig parameter with a <name>_mask "
            "buffer); prune the model with torch.nn.utils.prune first"
        )
    return masks


__all__ += ["KeepMask", "attach_masks", "attached_masks", "detach_masks", "masks_from_torch_prune"]
