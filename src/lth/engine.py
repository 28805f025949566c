"""K copies of one flat ``nn.Sequential``, stacked on a leading ticket dimension, run as one.

Training many tickets of the same architecture is the main cost of a lottery-ticket study.
Stacking them turns K small matrix products into one batched product (``bmm``) and K
convolutions into one grouped convolution, and lets one fused optimizer kernel update all of
them. A single ticket is simply K = 1.

Layouts (per ticket the parameters keep their usual PyTorch shapes):

* Linear weight ``(K, out, in)``, bias ``(K, out, 1)``. Activations are feature-major,
  ``(K, features, batch)``, so that ``h = W @ x + b`` is a plain ``baddbmm`` whose weight
  gradient autograd returns contiguous, in the weight's own layout (a fused optimizer kernel
  silently mis-reads gradients whose strides differ from the parameter's).
* Conv2d weight ``(K, out, in, kh, kw)``, bias ``(K, out)``. Activations are
  ``(batch, K * channels, H, W)`` and a convolution runs with ``groups = K``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LTHError

SUPPORTED_LAYERS = (nn.Linear, nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)


def supports(model: nn.Module) -> bool:
    """True when ``model`` is a flat Sequential of layers the stacked engine can run."""
    return (
        isinstance(model, nn.Sequential)
        and all(type(layer) in SUPPORTED_LAYERS for layer in model.children())
        and isinstance(list(model.children())[-1], nn.Linear)
        and not any(isinstance(m, nn.Conv2d) and m.padding_mode != "zeros" for m in model)
    )


def build(template: nn.Module, k: int, device: torch.device | str) -> StackedModel | ModuleModel:
    """The fastest engine for ``template``: stacked when supported, else the module itself."""
    if supports(template):
        return StackedModel(template, k, device)
    if k != 1:
        raise LTHError(
            f"{type(template).__name__} cannot be stacked; train its tickets one at a time"
        )
    return ModuleModel(template, device)


class StackedModel:
    """K tickets of one architecture as stacked parameter tensors with a batched forward pass."""

    def __init__(self, template: nn.Module, k: int, device: torch.device | str = "cpu"):
        if not supports(template):
            kinds = ", ".join(t.__name__ for t in SUPPORTED_LAYERS)
            raise LTHError(
                f"the stacked engine runs flat nn.Sequential models of {kinds} only; "
                "train other models one at a time"
            )
        if k < 1:
            raise LTHError(f"need at least one ticket to stack, got k={k}")
        self.k = k
        self.device = torch.device(device)
        self.layers: list[tuple[str, nn.Module]] = list(template.named_children())
        self.shapes: dict[str, torch.Size] = {
            name: p.shape for name, p in template.named_parameters()
        }
        self.params: dict[str, Tensor] = {}
        for name, shape in self.shapes.items():
            self.params[name] = torch.zeros(
                (k, *self._engine_shape(name, shape)), device=self.device
            )

    def _is_linear_bias(self, name: str) -> bool:
        layer = dict(self.layers)[name.rsplit(".", 1)[0]]
        return isinstance(layer, nn.Linear) and name.endswith(".bias")

    def _engine_shape(self, name: str, shape: torch.Size) -> tuple[int, ...]:
        return (*shape, 1) if self._is_linear_bias(name) else tuple(shape)

    def load(self, index: int, state: Mapping[str, Tensor]) -> None:
        """Copy one ticket's weights (usual PyTorch shapes, e.g. a state_dict) into ``index``."""
        missing = set(self.shapes) - set(state)
        if missing:
            raise LTHError(f"weights for ticket {index} lack {sorted(missing)}")
        with torch.no_grad():
            for name, p in self.params.items():
                src = state[name]
                if src.shape != self.shapes[name]:
                    raise LTHError(
                        f"weight {name} has shape {tuple(src.shape)}, "
                        f"the model expects {tuple(self.shapes[name])}"
                    )
                p[index].copy_(src.reshape(p.shape[1:]))

    def export(self, index: int) -> dict[str, Tensor]:
        """One ticket's weights with their usual PyTorch shapes, as fresh CPU tensors."""
        return {
            name: p[index].detach().reshape(self.shapes[name]).to("cpu", copy=True)
            for name, p in self.params.items()
        }

    def to_engine_layout(self, name: str, tensors: list[Tensor]) -> Tensor:
        """Stack per-ticket tensors shaped like parameter ``name`` into the engine's layout."""
        shape = self._engine_shape(name, self.shapes[name])
        return torch.stack([t.reshape(shape) for t in tensors]).to(self.device)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(K, classes, batch)`` for inputs ``(K, batch, *input_shape)``."""
        k = self.k
        batch = x.shape[1]
        if isinstance(self.layers[0][1], nn.Flatten):
            h = x.reshape(k, batch, -1).transpose(1, 2)
            mode = "features"
        else:
            h = x.transpose(0, 1).reshape(batch, k * x.shape[2], *x.shape[3:])
            mode = "image"
        p = self.params
        for name, layer in self.layers:
            if isinstance(layer, nn.Linear):
                b = p.get(f"{name}.bias")
                w = p[f"{name}.weight"]
                h = torch.bmm(w, h) if b is None else torch.baddbmm(b, w, h)
            elif isinstance(layer, nn.Conv2d):
                w = p[f"{name}.weight"]
                b = p.get(f"{name}.bias")
                h = F.conv2d(
                    h,
                    w.reshape(-1, *w.shape[2:]),
                    None if b is None else b.reshape(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    layer.groups * k,
                )
            elif isinstance(layer, nn.ReLU):
                h = torch.relu(h)
            elif isinstance(layer, nn.MaxPool2d):
                h = F.max_pool2d(
                    h,
                    layer.kernel_size,
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    ceil_mode=layer.ceil_mode,
                )
            elif isinstance(layer, nn.Flatten) and mode == "image":
                h = h.reshape(batch, k, -1).permute(1, 2, 0)
                mode = "features"
        if mode != "features":
            raise LTHError("the model must end in a Linear layer to be stacked")
        return h

    def train(self, mode: bool = True) -> None:
        """No-op: the stacked layers behave the same in training and evaluation."""


class ModuleModel:
    """One ticket of any ``nn.Module`` behind the StackedModel interface (K = 1).

    Parameters live in ``params`` with a leading ticket dimension of 1 and are fed to the module
    with ``torch.func.functional_call``, so the optimizer and masking code is shared. Buffers
    (e.g. BatchNorm running statistics) stay in the module and are exported with the weights.
    """

    def __init__(self, template: nn.Module, device: torch.device | str = "cpu"):
        self.k = 1
        self.device = torch.device(device)
        self.module = copy.deepcopy(template).to(self.device)
        self.shapes = {n: p.shape for n, p in self.module.named_parameters()}
        self.params = {
            n: torch.zeros((1, *shape), device=self.device) for n, shape in self.shapes.items()
        }
        self.buffers = dict(self.module.named_buffers())

    def load(self, index: int, state: Mapping[str, Tensor]) -> None:
        """Copy weights (and any buffers in ``state``) into the ticket."""
        missing = set(self.shapes) - set(state)
        if missing:
            raise LTHError(f"weights lack {sorted(missing)}")
        with torch.no_grad():
            for name, p in self.params.items():
                if state[name].shape != self.shapes[name]:
                    raise LTHError(
                        f"weight {name} has shape {tuple(state[name].shape)}, "
                        f"the model expects {tuple(self.shapes[name])}"
                    )
                p[0].copy_(state[name])
            for name, b in self.buffers.items():
                if name in state:
                    b.copy_(state[name])

    def export(self, index: int) -> dict[str, Tensor]:
        """The ticket's weights and buffers, as fresh CPU tensors."""
        out = {n: p[0].detach().to("cpu", copy=True) for n, p in self.params.items()}
        out |= {n: b.detach().to("cpu", copy=True) for n, b in self.buffers.items()}
        return out

    def to_engine_layout(self, name: str, tensors: list[Tensor]) -> Tensor:
        """Stack per-ticket tensors shaped like parameter ``name`` (a leading dimension of 1)."""
        return torch.stack(tensors).to(self.device)

    def train(self, mode: bool = True) -> None:
        """Switch the module between training and evaluation behaviour (BatchNorm, dropout)."""
        self.module.train(mode)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(1, classes, batch)`` for inputs ``(1, batch, *input_shape)``."""
        weights = {n: p[0] for n, p in self.params.items()}
        out = torch.func.functional_call(self.module, weights, (x[0],))
        return out.t().unsqueeze(0)
