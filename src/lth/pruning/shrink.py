"""Physically smaller tickets: remove, exactly, the dead units an unstructured mask leaves.

Pruning single weights leaves whole units without use. In a flat ``nn.Sequential`` of
``Linear`` / ``Conv2d`` layers joined by elementwise activations, ``MaxPool2d`` and ``Flatten``:

* a hidden unit (a Linear output feature, or a conv output channel) whose incoming weights
  are all pruned outputs a constant: its bias, through the activation. That constant is
  folded into the next layer's bias (for a Linear, or a conv without padding; a padded conv
  would see it differ at the borders, so there it is folded only when it is 0), and the unit
  is removed. Constants propagate: a unit fed only by constant units is constant too.
* a hidden unit none of whose outgoing weights reaches a kept unit of the next layer has no
  effect on the output, and is removed.

:func:`shrink` does both and builds the smaller ``nn.Sequential`` (same layer names, smaller
sizes); its outputs equal the ticket's up to float rounding. The output layer's units and the
network's inputs are never removed, so the smaller network takes the same inputs.
:func:`dead_units` counts the removed units per layer without building anything.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from lth.errors import LTHError
from lth.pruning.masks import check_masks

__all__ = [
    "ShrinkResult",
    "architecture",
    "build_architecture",
    "can_shrink",
    "dead_units",
    "shrink",
]

#: Layers a constant passes through as ``f(constant)`` (elementwise; Dropout as in eval mode).
ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity, nn.Dropout,
)  # fmt: skip
#: Layers that keep a per-unit constant constant and never mix units.
PASS_THROUGH: tuple[type[nn.Module], ...] = (nn.MaxPool2d, nn.Flatten)
WEIGHTED: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)

#: Constructor arguments of every layer type a shrunk network may hold (its file records them).
_ARGS: dict[str, tuple[type[nn.Module], tuple[str, ...]]] = {
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "Conv2d": (
        nn.Conv2d,
        (
            "in_channels",
            "out_channels",
            "kernel_size",
            "stride",
            "padding",
            "dilation",
            "groups",
            "padding_mode",
        ),
    ),  # fmt: skip
    "MaxPool2d": (nn.MaxPool2d, ("kernel_size", "stride", "padding", "dilation", "ceil_mode")),
    "Flatten": (nn.Flatten, ("start_dim", "end_dim")),
    "ReLU": (nn.ReLU, ()),
    "LeakyReLU": (nn.LeakyReLU, ("negative_slope",)),
    "ELU": (nn.ELU, ("alpha",)),
    "GELU": (nn.GELU, ("approximate",)),
    "SiLU": (nn.SiLU, ()),
    "Tanh": (nn.Tanh, ()),
    "Sigmoid": (nn.Sigmoid, ()),
    "Identity": (nn.Identity, ()),
    "Dropout": (nn.Dropout, ("p",)),
}


@dataclass
class ShrinkResult:
    """What :func:`shrink` returns.

    ``model``: the smaller ``nn.Sequential``; ``masks``: the ticket's masks cut to its shapes
    (same parameter names); ``kept``: per layer (child name) the indices of the units kept,
    in the original numbering; ``removed``: per weight (e.g. ``fc1.weight``) how many of its
    layer's units were removed; ``folded``: how many of those were constant units folded into
    the next layer's bias; ``sizes``: per layer ``[inputs, outputs]`` (features or channels)
    of the smaller network; ``unused_inputs``: network inputs (features or channels) that no
    kept weight reads (they stay: the network takes the same inputs).
    """

    model: nn.Sequential
    masks: dict[str, Tensor]
    kept: dict[str, Tensor] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)
    folded: dict[str, int] = field(default_factory=dict)
    sizes: dict[str, list[int]] = field(default_factory=dict)
    unused_inputs: int = 0


@dataclass
class _Layer:
    """One Linear / Conv2d of the chain and what the planner knows about it."""

    index: int  # position among the Sequential's children
    name: str  # child name, e.g. "fc1"
    module: nn.Module
    weight: Tensor  # masked, float64
    mask: Tensor  # bool, same shape as the weight
    bias: Tensor  # float64 (zeros when the layer has none)
    ops: list[nn.Module]  # the layers between this one and the next weighted one
    block: int = 1  # input columns per unit of the previous layer (H*W after a Flatten)

    @property
    def conv(self) -> bool:
        return isinstance(self.module, nn.Conv2d)

    @property
    def param(self) -> str:
        return f"{self.name}.weight"

    def pairs(self, tensor: Tensor) -> Tensor:
        """A weight-shaped ``tensor`` as (out units, in units, the entries joining two units)."""
        return tensor.reshape(tensor.shape[0], self.weight.shape[1] // self.block, -1)

    def links(self) -> Tensor:
        """(out units, in units) bool: whether any kept weight joins the two units."""
        return self.pairs(self.mask).any(2)

    def unit_sums(self) -> Tensor:
        """(out units, in units): the sum of the weights joining them (for bias folding)."""
        return self.pairs(self.weight).sum(2)


def _padded(conv: nn.Conv2d) -> bool:
    if isinstance(conv.padding, str):
        return conv.padding != "valid"
    return any(p != 0 for p in conv.padding)


def _chain(
    model: nn.Module, masks: Mapping[str, Tensor], values: Mapping[str, Tensor] | None
) -> list[_Layer]:
    """The weighted layers of ``model`` with the layers between them; LTHError if unsupported."""
    if type(model) is not nn.Sequential:
        raise LTHError(
            f"shrinking needs a flat nn.Sequential of Linear/Conv2d layers, activations, "
            f"MaxPool2d and Flatten; {type(model).__name__} is not one"
        )
    check_masks(masks, model)
    state = dict(model.state_dict())
    if values is not None:
        state.update(values)
    layers: list[_Layer] = []
    for index, (name, child) in enumerate(model.named_children()):
        kind = type(child)
        if kind in WEIGHTED:
            if kind is nn.Conv2d and (child.groups != 1 or child.padding_mode != "zeros"):
                raise LTHError(f"cannot shrink {name}: only zero-padded convs with groups=1")
            weight = state[f"{name}.weight"].detach().to("cpu", torch.float64)
            mask = masks.get(f"{name}.weight")
            mask = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask.cpu()
            bias = state.get(f"{name}.bias") if child.bias is not None else None
            bias = torch.zeros(weight.shape[0], dtype=torch.float64) if bias is None else bias
            weight = weight.masked_fill(~mask, 0)
            bias = bias.detach().to("cpu", torch.float64)
            layers.append(_Layer(index, name, child, weight, mask, bias, []))
        elif kind in ELEMENTWISE or kind in PASS_THROUGH:
            if kind is nn.Flatten and (child.start_dim != 1 or child.end_dim != -1):
                raise LTHError(f"cannot shrink through {name}: only Flatten(1, -1)")
            if layers:
                layers[-1].ops.append(child)
        else:
            raise LTHError(
                f"cannot shrink through layer {name!r} ({kind.__name__}); shrinking handles "
                f"Linear, Conv2d, {', '.join(t.__name__ for t in ELEMENTWISE)}, MaxPool2d and "
                "Flatten"
            )
    other = [n for n in masks if n not in {layer.param for layer in layers}]
    if other:
        raise LTHError(f"cannot shrink with masks on {other[0]}: only layer weights are handled")
    if not layers:
        raise LTHError("the model has no Linear or Conv2d layer to shrink")
    for prev, cur in zip(layers, layers[1:]):
        flattened = any(isinstance(op, nn.Flatten) for op in prev.ops)
        pooled = any(isinstance(op, nn.MaxPool2d) for op in prev.ops)
        units = prev.weight.shape[0]
        if not prev.conv and (cur.conv or pooled):
            raise LTHError(f"cannot shrink {cur.name}: it follows a Linear with 2-D layers")
        if prev.conv and cur.conv:
            if flattened:
                raise LTHError(f"cannot shrink {cur.name}: a conv after a Flatten")
            inputs = cur.weight.shape[1]
        elif prev.conv:
            inputs = cur.weight.shape[1]
            if not flattened or inputs % units:
                raise LTHError(
                    f"cannot shrink {cur.name}: its {inputs} inputs are not {prev.name}'s "
                    f"{units} channels flattened"
                )
            cur.block = inputs // units
            inputs = units
        else:
            inputs = cur.weight.shape[1]
        if inputs != units:
            raise LTHError(f"{cur.name} takes {inputs} inputs but {prev.name} gives {units}")
    return layers


def _through(ops: list[nn.Module], values: Tensor) -> Tensor:
    """Per-unit constants after the layers between two weighted layers."""
    for op in ops:
        if isinstance(op, (nn.Identity, nn.Dropout, *PASS_THROUGH)):
            continue
        values = op(values)
    return values


@dataclass
class _Plan:
    layers: list[_Layer]
    keep: list[Tensor]  # bool per unit of each layer
    folded: list[Tensor]  # bool per unit: constant, folded into the next layer
    bias: list[Tensor]  # float64, after folding
    biased: list[bool]  # whether the smaller layer needs a bias


def _plan(
    model: nn.Module, masks: Mapping[str, Tensor], values: Mapping[str, Tensor] | None = None
) -> _Plan:
    layers = _chain(model, masks, values)
    n = len(layers)
    bias = [layer.bias.clone() for layer in layers]
    biased = [layer.module.bias is not None for layer in layers]
    constant: list[Tensor] = []
    for i, layer in enumerate(layers):
        links = layer.links()
        live = torch.ones(links.shape[1], dtype=torch.bool) if i == 0 else ~constant[i - 1]
        const = ~(links & live).any(1)
        if i == n - 1:
            constant.append(torch.zeros_like(const))
            break
        nxt = layers[i + 1]
        value = _through(layer.ops, bias[i])
        if nxt.conv and _padded(nxt.module):
            const &= value == 0  # a padded conv sees 0, not the constant, at the borders
        if const.any():
            add = nxt.unit_sums()[:, const] @ value[const]
            bias[i + 1] += add
            biased[i + 1] = biased[i + 1] or bool(add.ne(0).any())
        constant.append(const)
    keep = [torch.ones(layers[-1].weight.shape[0], dtype=torch.bool)]
    for i in range(n - 2, -1, -1):
        reaches = (layers[i + 1].links() & keep[0][:, None]).any(0)
        keep.insert(0, ~constant[i] & reaches)
    return _Plan(layers, keep, constant, bias, biased)


def can_shrink(model: nn.Module, masks: Mapping[str, Tensor] | None = None) -> bool:
    """Whether :func:`shrink` handles ``model`` (a flat Sequential of supported layers)."""
    try:
        _chain(model, masks or {}, None)
    except LTHError:
        return False
    return True


def dead_units(
    masks: Mapping[str, Tensor], model: nn.Module, weights: Mapping[str, Tensor] | None = None
) -> dict[str, int]:
    """How many units of each weighted layer :func:`shrink` removes, by weight name.

    ``{"fc1.weight": 37, "fc2.weight": 5, "fc3.weight": 0}``: hidden units (Linear features,
    conv channels) whose incoming weights are all pruned (constant, folded into the next bias)
    or whose outgoing weights are all pruned (unused). ``weights`` (a state_dict) replaces the
    model's own values; only biases matter, and only for a conv followed by a padded conv.
    Returns ``{}`` for a model :func:`shrink` does not handle (not a flat Sequential).
    """
    try:
        plan = _plan(model, masks, weights)
    except LTHError:
        return {}
    return {layer.param: int((~k).sum()) for layer, k in zip(plan.layers, plan.keep)}


def _new_layer(layer: _Layer, rows: Tensor, cols: Tensor, bias: Tensor | None) -> nn.Module:
    """The smaller Linear / Conv2d holding ``weight[rows][:, cols]`` and ``bias``."""
    module = layer.module
    source = module.weight.detach()
    weight = source[rows][:, cols].masked_fill(~layer.mask[rows][:, cols].to(source.device), 0)
    kw = {"bias": bias is not None, "device": source.device, "dtype": source.dtype}
    if isinstance(module, nn.Linear):
        new = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], **kw)
    else:
        args = {a: getattr(module, a) for a in _ARGS["Conv2d"][1][2:]}
        new = nn.utils.skip_init(nn.Conv2d, weight.shape[1], weight.shape[0], **args, **kw)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.to(source.device, source.dtype))
    return new


def shrink(model: nn.Module, masks: Mapping[str, Tensor]) -> ShrinkResult:
    """The ticket (``model`` with ``masks``) as a physically smaller ``nn.Sequential``.

    Removes every hidden unit that is constant (its bias folded into the next layer) or
    unused, as described in :mod:`lth.pruning.shrink`; the result computes the same outputs up to
    float rounding, on the same inputs. ``model`` is not changed. Only flat ``nn.Sequential`` models
    of Linear / Conv2d layers, elementwise activations, MaxPool2d and Flatten can be shrunk
    (:func:`can_shrink`); others raise :class:`LTHError`::

        small = shrink(model, masks)
        small.model, small.removed      # nn.Sequential, {"fc1.weight": 41, ...}
    """
    plan = _plan(model, masks)
    first = {layer.index: i for i, layer in enumerate(plan.layers)}
    children: OrderedDict[str, nn.Module] = OrderedDict()
    result = ShrinkResult(nn.Sequential(), {})
    for index, (name, child) in enumerate(model.named_children()):
        if index not in first:
            children[name] = copy.deepcopy(child)
            continue
        i = first[index]
        layer, keep = plan.layers[i], plan.keep[i]
        if i == 0:
            cols = torch.ones(layer.weight.shape[1], dtype=torch.bool)
        else:
            cols = plan.keep[i - 1].repeat_interleave(layer.block)
        rows = keep.nonzero().squeeze(1)
        col_idx = cols.nonzero().squeeze(1)
        bias = plan.bias[i][rows] if plan.biased[i] else None
        children[name] = _new_layer(layer, rows, col_idx, bias)
        if layer.param in masks:
            result.masks[layer.param] = layer.mask[rows][:, col_idx].to(masks[layer.param].device)
        result.kept[name] = rows
        result.removed[layer.param] = int((~keep).sum())
        result.folded[layer.param] = int(plan.folded[i].sum())
        result.sizes[name] = [int(col_idx.numel()), int(rows.numel())]
    result.model = nn.Sequential(children)
    result.model.train(model.training)
    first_layer = plan.layers[0]
    result.unused_inputs = int((~first_layer.links().any(0)).sum())
    return result


def architecture(model: nn.Module) -> list[dict]:
    """A JSON-able description of a flat ``nn.Sequential`` that :func:`build_architecture`
    rebuilds: one ``{"name", "type", ...constructor arguments}`` per layer."""
    if type(model) is not nn.Sequential:
        raise LTHError(f"expected a flat nn.Sequential, got {type(model).__name__}")
    spec = []
    for name, child in model.named_children():
        kind = type(child).__name__
        if kind not in _ARGS or type(child) is not _ARGS[kind][0]:
            raise LTHError(f"layer {name!r} ({kind}) cannot be described; {', '.join(_ARGS)} can")
        entry: dict = {"name": name, "type": kind}
        for arg in _ARGS[kind][1]:
            value = getattr(child, arg)
            entry[arg] = list(value) if isinstance(value, tuple) else value
        if kind in ("Linear", "Conv2d"):
            entry["bias"] = child.bias is not None
        spec.append(entry)
    return spec


def build_architecture(spec: list[dict], device: str | torch.device = "cpu") -> nn.Sequential:
    """The ``nn.Sequential`` that :func:`architecture` described (weights uninitialised)."""
    children: OrderedDict[str, nn.Module] = OrderedDict()
    try:
        for entry in spec:
            entry = dict(entry)
            name, kind = entry.pop("name"), entry.pop("type")
            if kind not in _ARGS:
                raise LTHError(f"unknown layer type {kind!r}; known: {', '.join(_ARGS)}")
            cls = _ARGS[kind][0]
            args = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items()}
            if kind in ("Linear", "Conv2d"):
                children[name] = nn.utils.skip_init(cls, device=device, **args)
            else:
                children[name] = cls(**args)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise LTHError(f"the layer description is damaged ({type(e).__name__}: {e})") from None
    return nn.Sequential(children)
