"""Sparse inference for tickets: CSR storage and kernels, chosen per layer.

:func:`sparse_inference` turns a loaded ticket (a model and its masks) into an inference
module whose layers each run one of three kernels:

* ``dense``: the ordinary matrix product (zeros included);
* ``shrunk``: the dense product over only the inputs some kept weight reads (the pixels at the
  edge of an MNIST image, say, that a sparse first layer never looks at);
* ``sparse``: the layer's CSR matrix times the activations: FBGEMM's ``embedding_bag`` (each
  output row a weighted sum of input rows) for batches of :data:`EMBEDDING_BAG_FROM` and
  more, ``torch.sparse`` CSR (Intel MKL) below.

The choice follows the layer's density (kept weights / all weights): at or below
:data:`LINEAR_SPARSE_BELOW` (or :data:`LINEAR_SPARSE_BELOW_SMALL` for small batches) a Linear
runs sparse; else, when at least :data:`SHRUNK_UNUSED_ABOVE` of its inputs are unused, shrunk;
else dense. Conv2d layers run dense (or shrunk) unless forced: a sparse convolution never
paid (:data:`CONV_SPARSE_BELOW`). The thresholds were measured on a shared 2-core CPU (see
``benchmarks/inference.py``). Before choosing, a flat ``nn.Sequential`` is shrunk
(:func:`lth.pruning.shrink.shrink`): dead units are removed exactly, and its fully connected part
then runs with activations kept as (features, batch), the layout the sparse kernels read and
write without transposes.

Outputs equal the dense masked model's up to float rounding.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.errors import LTHError
from lth.pruning.masks import check_masks
from lth.pruning.shrink import ELEMENTWISE, can_shrink, shrink

__all__ = [
    "CONV_SPARSE_BELOW",
    "EMBEDDING_BAG_FROM",
    "KERNELS",
    "LINEAR_SPARSE_BELOW",
    "LINEAR_SPARSE_BELOW_SMALL",
    "SHRUNK_UNUSED_ABOVE",
    "CSRMatrix",
    "LinearKernel",
    "SparseConv2d",
    "SparseLinear",
    "TicketInference",
    "choose_kernel",
    "csr_parts",
    "from_csr_parts",
    "index_dtype",
    "sparse_inference",
]

#: Linear layers with at most this fraction of their weights kept run sparse, for batches of
#: :data:`EMBEDDING_BAG_FROM` and more. Measured (784x300 layer, 1 thread of a shared 2-core
#: CPU, batch 64 to 1,024): the sparse product takes ~0.05x the dense time at 3.5% density,
#: ~0.4x at 20%, ~0.6x at 35% and about as long at 50%.
LINEAR_SPARSE_BELOW = 0.3
#: The same for batches below :data:`EMBEDDING_BAG_FROM` (``sparse_inference(batch_size=)``).
#: 0: never. MKL's CSR product alone takes ~0.5x the dense time of a 784x300 layer at 3.5%
#: density for one image, but a whole LeNet-300-100 forward pass of one image is ~0.1 ms of
#: per-layer overhead, and the sparse network measured 1.0-1.4x the dense one at every
#: density down to 1.2%; the shrunk network (fewer units) is what pays there.
LINEAR_SPARSE_BELOW_SMALL = 0.0
#: Conv2d layers at or below this density run sparse (CSR times the unfolded patches). 0: never
#: by default, because it never paid: unfolding copies every input value kh*kw times, and the
#: sparse convolution took 1.0-1.8x oneDNN's dense time at batch 1 and 3-14x at batch 64, for
#: densities from 50% down to 2% (1->64 and 64->64 3x3 convs on 28x28, 6->16 5x5 on 14x14).
CONV_SPARSE_BELOW = 0.0
#: A layer not run sparse gathers its used inputs first when at least this fraction is unused.
SHRUNK_UNUSED_ABOVE = 0.25
KERNELS = ("dense", "shrunk", "sparse")
#: The sparse product runs FBGEMM's embedding_bag from this many columns (batch x positions)
#: on, MKL's CSR product below: measured ~2-4x faster than MKL at 64 to 1,024 columns,
#: slower at 1 to 16.
EMBEDDING_BAG_FROM = 32


# ----------------------------------------------------------------------------- CSR storage


def index_dtype(largest: int) -> torch.dtype:
    """The narrowest integer type holding 0..``largest``: uint8, uint16, uint32 or int64."""
    for dtype, top in (
        (torch.uint8, 2**8 - 1),
        (torch.uint16, 2**16 - 1),
        (torch.uint32, 2**32 - 1),
    ):
        if largest <= top:
            return dtype
    return torch.int64


def _rows(tensor: Tensor) -> Tensor:
    """The 2-D view of a weight: (out, in) for Linear, (out, in*kh*kw) for Conv."""
    return tensor.reshape(tensor.shape[0], -1) if tensor.dim() != 2 else tensor


def csr_parts(weight: Tensor, mask: Tensor, narrow: bool = True) -> dict[str, Tensor]:
    """The CSR form of ``weight``'s 2-D view, keeping exactly the entries ``mask`` keeps.

    Returns ``{"crow_indices", "col_indices", "values"}``: values float32 in row-major order,
    indices in the narrowest unsigned type that fits (``narrow``; else int64). Kept weights that
    happen to be 0 are kept, so the mask comes back exactly (:func:`from_csr_parts`).
    """
    m2 = _rows(mask).bool().cpu()
    w2 = _rows(weight).detach().cpu()
    crow = torch.zeros(m2.shape[0] + 1, dtype=torch.int64)
    crow[1:] = m2.sum(1).cumsum(0)
    col = m2.nonzero()[:, 1]
    values = w2[m2].to(torch.float32)
    if narrow:
        crow = crow.to(index_dtype(int(crow[-1])))
        col = col.to(index_dtype(max(m2.shape[1] - 1, 0)))
    return {"crow_indices": crow, "col_indices": col, "values": values}


def from_csr_parts(
    parts: Mapping[str, Tensor], shape: tuple[int, ...] | list[int], dtype=torch.float32
) -> tuple[Tensor, Tensor]:
    """``(weight, mask)`` of ``shape`` back from :func:`csr_parts`; LTHError if inconsistent."""
    try:
        crow = parts["crow_indices"].to(torch.int64)
        col = parts["col_indices"].to(torch.int64)
        values = parts["values"]
    except KeyError as e:
        raise LTHError(f"a CSR weight lacks its {e.args[0]}") from None
    rows = int(shape[0]) if len(shape) else 0
    cols = 1
    for s in shape[1:]:
        cols *= int(s)
    ok = (
        crow.dim() == col.dim() == values.dim() == 1
        and crow.numel() == rows + 1
        and int(crow[0]) == 0
        and bool((crow[1:] >= crow[:-1]).all())
        and int(crow[-1]) == col.numel() == values.numel()
        and (col.numel() == 0 or (int(col.min()) >= 0 and int(col.max()) < cols))
    )
    if not ok:
        raise LTHError(f"a CSR weight of shape {list(shape)} has inconsistent indices")
    row = torch.repeat_interleave(torch.arange(rows), crow[1:] - crow[:-1])
    flat = row * cols + col
    weight = torch.zeros(rows * cols, dtype=dtype)
    mask = torch.zeros(rows * cols, dtype=torch.bool)
    weight[flat] = values.to(dtype)
    mask[flat] = True
    if int(mask.sum()) != flat.numel():
        raise LTHError(f"a CSR weight of shape {list(shape)} names an entry twice")
    return weight.view(*shape), mask.view(*shape)


# ------------------------------------------------------------------------------- kernels


class CSRMatrix(nn.Module):
    """A CSR matrix kept as three buffers (so ``.to()``, ``state_dict`` and deep copies work);
    the ``torch.sparse_csr_tensor`` the kernels use is built once and cached."""

    def __init__(self, weight2d: Tensor, mask2d: Tensor):
        super().__init__()
        parts = csr_parts(weight2d, mask2d, narrow=False)
        small = weight2d.numel() < 2**31
        index = torch.int32 if small else torch.int64  # MKL's own index type
        device, dtype = weight2d.device, weight2d.dtype
        self.register_buffer("crow_indices", parts["crow_indices"].to(device, index))
        self.register_buffer("col_indices", parts["col_indices"].to(device, index))
        self.register_buffer("values", _rows(weight2d).detach()[_rows(mask2d).bool()].to(dtype))
        self.shape = tuple(_rows(weight2d).shape)
        self._cache: tuple | None = None

    def matrix(self) -> Tensor:
        """The ``torch`` CSR tensor (rebuilt after ``.to()`` moved the buffers)."""
        key = (self.values.data_ptr(), self.values.device, self.values.dtype)
        if self._cache is None or self._cache[0] != key:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Sparse CSR tensor support is in beta")
                matrix = torch.sparse_csr_tensor(
                    self.crow_indices,
                    self.col_indices,
                    self.values,
                    self.shape,
                    check_invariants=True,  # checked once, when built
                )
            self._cache = (key, matrix)
        return self._cache[1]

    def product(self, h: Tensor, bias: Tensor | None = None) -> Tensor:
        """``self @ h + bias`` for ``h`` of shape (columns, batch): FBGEMM's
        ``embedding_bag`` (each output row a weighted sum of rows of ``h``) from
        :data:`EMBEDDING_BAG_FROM` columns of ``h`` on, MKL's CSR product below."""
        if h.shape[1] >= EMBEDDING_BAG_FROM:
            out = F.embedding_bag(
                self.col_indices,
                h.contiguous(),
                self.crow_indices[:-1],
                mode="sum",
                per_sample_weights=self.values,
            )
            return out if bias is None else out.add_(bias)
        matrix = self.matrix()
        return torch.mm(matrix, h) if bias is None else torch.addmm(bias, matrix, h)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_cache"] = None  # sparse tensors cannot be deep-copied; rebuilt on first use
        return state


def _density(mask: Tensor) -> float:
    return float(mask.float().mean()) if mask.numel() else 1.0


def _used_inputs(mask: Tensor) -> Tensor:
    """bool per input feature (Linear) or channel (Conv2d): does a kept weight read it?"""
    m = mask.bool()
    return m.any(0) if m.dim() == 2 else m.flatten(2).any(2).any(0)


class LinearKernel(nn.Module):
    """A Linear layer running one kernel: ``dense``, ``shrunk`` (only the used inputs) or
    ``sparse`` (CSR), on activations laid out (batch, features), or (features, batch) with
    ``feature_major=True``: the layout the sparse product reads and writes without copies."""

    def __init__(self, linear: nn.Linear, mask: Tensor | None, kernel: str):
        super().__init__()
        if kernel not in KERNELS:
            raise LTHError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
        weight = linear.weight.detach()
        mask = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask.bool()
        weight = weight.masked_fill(~mask.to(weight.device), 0)
        self.kernel = kernel
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.density = _density(mask)
        bias = None if linear.bias is None else linear.bias.detach().clone()
        self.register_buffer("bias", bias)
        self.csr: CSRMatrix | None = None
        if kernel == "sparse":
            self.csr = CSRMatrix(weight, mask)
            self.register_buffer("weight", None)
            self.register_buffer("cols", None)
        elif kernel == "shrunk":
            cols = _used_inputs(mask).nonzero().squeeze(1).to(weight.device)
            self.register_buffer("cols", cols)
            self.register_buffer("weight", weight.index_select(1, cols).contiguous())
        else:
            self.register_buffer("cols", None)
            self.register_buffer("weight", weight.clone())

    def forward(self, x: Tensor, feature_major: bool = False) -> Tensor:
        if self.csr is not None:
            bias = None if self.bias is None else self.bias[:, None]
            if feature_major:
                return self.csr.product(x, bias)
            return self.csr.product(x.t(), bias).t()
        if self.cols is not None:
            x = x.index_select(0 if feature_major else 1, self.cols)
        if feature_major:  # through F.linear: MKL's (out, in) @ (in, batch) is slow for 2-8
            return F.linear(x.t(), self.weight, self.bias).t()
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"kernel={self.kernel}, density={self.density:.4f}"
        )


class SparseLinear(nn.Module):
    """A drop-in ``nn.Linear`` (inputs (..., features)) running a :class:`LinearKernel`."""

    def __init__(self, linear: nn.Linear, mask: Tensor | None, kernel: str):
        super().__init__()
        self.core = LinearKernel(linear, mask, kernel)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        y = self.core(x.reshape(-1, self.core.in_features))
        return y.reshape(*lead, self.core.out_features)


class SparseConv2d(nn.Module):
    """A drop-in ``nn.Conv2d`` with kernel ``sparse`` (CSR of the out x in*kh*kw weight times
    the unfolded patches) or ``shrunk`` (the dense convolution over the used input channels)."""

    def __init__(self, conv: nn.Conv2d, mask: Tensor | None, kernel: str):
        super().__init__()
        if kernel not in ("sparse", "shrunk"):
            raise LTHError(f"SparseConv2d runs kernel sparse or shrunk, not {kernel!r}")
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise LTHError("SparseConv2d needs groups=1 and numeric zero padding")
        weight = conv.weight.detach()
        mask = torch.ones_like(weight, dtype=torch.bool) if mask is None else mask.bool()
        weight = weight.masked_fill(~mask.to(weight.device), 0)
        self.kernel = kernel
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.density = _density(mask)
        self.csr: CSRMatrix | None = None
        bias = None if conv.bias is None else conv.bias.detach().clone()
        if kernel == "sparse":
            self.csr = CSRMatrix(weight, mask)
            self.register_buffer("bias", None if bias is None else bias.reshape(-1, 1))
            self.register_buffer("cols", None)
            self.register_buffer("weight", None)
        else:
            cols = _used_inputs(mask).nonzero().squeeze(1).to(weight.device)
            self.register_buffer("bias", bias)
            self.register_buffer("cols", cols)
            self.register_buffer("weight", weight.index_select(1, cols).contiguous())

    def forward(self, x: Tensor) -> Tensor:
        if self.csr is None:
            x = x.index_select(1, self.cols)
            return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)
        batch, _, height, width = x.shape
        size = [
            (n + 2 * p - d * (k - 1) - 1) // s + 1
            for n, p, d, k, s in zip(
                (height, width), self.padding, self.dilation, self.kernel_size, self.stride
            )
        ]
        patches = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        patches = patches.transpose(0, 1).reshape(patches.shape[1], -1)  # (in*kh*kw, B*L)
        out = self.csr.product(patches, self.bias)
        out = out.view(self.out_channels, batch, -1).transpose(0, 1)
        return out.reshape(batch, self.out_channels, *size)

    def extra_repr(self) -> str:
        return f"out_channels={self.out_channels}, kernel={self.kernel}, density={self.density:.4f}"


class TicketInference(nn.Module):
    """A flat ticket for inference: ``head`` (up to the first Linear, NCHW), then ``tail``
    (the fully connected part). The tail switches to activations laid out (features, batch)
    at its first sparse layer and back at the end, so the sparse layers copy nothing.

    ``plan``: one dict per weighted layer: ``layer``, ``kernel``, ``density``, ``shape``.
    ``shrunk``: the :class:`lth.pruning.shrink.ShrinkResult` the layers were cut by (None if not).
    """

    def __init__(self, head: nn.Sequential, tail: nn.Sequential, plan: list[dict], shrunk=None):
        super().__init__()
        self.head, self.tail = head, tail
        self.plan = plan
        self.shrunk = shrunk

    def forward(self, x: Tensor) -> Tensor:
        x = self.head(x)
        if x.dim() != 2:
            raise LTHError(f"the first Linear got a {x.dim()}-D input; expected (batch, features)")
        feature_major = False
        for layer in self.tail:
            if isinstance(layer, LinearKernel):
                if layer.csr is not None and not feature_major:
                    x, feature_major = x.t().contiguous(), True
                x = layer(x, feature_major)
            else:
                x = layer(x)  # elementwise: any layout
        return x.t().contiguous() if feature_major else x


def choose_kernel(
    mask: Tensor | None,
    conv: bool = False,
    threshold: float = LINEAR_SPARSE_BELOW,
    conv_threshold: float = CONV_SPARSE_BELOW,
) -> str:
    """``sparse`` at or below the density threshold (only for a layer with pruned weights);
    else ``shrunk`` when at least :data:`SHRUNK_UNUSED_ABOVE` of the inputs are unused; else
    ``dense``."""
    if mask is None:
        return "dense"
    density = _density(mask)
    if density < 1 and density <= (conv_threshold if conv else threshold):
        return "sparse"
    used = _used_inputs(mask)
    if used.numel() and 1 - float(used.float().mean()) >= SHRUNK_UNUSED_ABOVE:
        return "shrunk"
    return "dense"


def _derive_masks(model: nn.Module) -> dict[str, Tensor]:
    """Masks from the zeros of every Linear / Conv2d weight (for a model given without masks)."""
    return {
        f"{name}.weight" if name else "weight": module.weight.detach() != 0
        for name, module in model.named_modules()
        if isinstance(module, (nn.Linear, nn.Conv2d))
    }


def _tail_start(children: list[tuple[str, nn.Module]]) -> int | None:
    """Index of the first Linear when only Linear layers and elementwise ones follow it."""
    for i, (_, child) in enumerate(children):
        if type(child) is nn.Linear:
            rest = [c for _, c in children[i:]]
            ok = all(type(c) is nn.Linear or type(c) in ELEMENTWISE for c in rest)
            return i if ok else None
    return None


def _kernel_for(name: str, mask, conv: bool, kernels, threshold, conv_threshold) -> str:
    layer = name.rpartition(".")[0] if name.endswith(".weight") else name
    kernel = kernels.get(layer) if kernels else None
    if kernel is None:
        return choose_kernel(mask, conv, threshold, conv_threshold)
    if kernel not in KERNELS:
        raise LTHError(f"unknown kernel {kernel!r} for {layer}; choose one of {', '.join(KERNELS)}")
    return kernel


def _conv_module(conv: nn.Conv2d, mask, kernel: str) -> nn.Module:
    if kernel == "dense" or mask is None:
        return copy.deepcopy(conv)
    return SparseConv2d(conv, mask, kernel)


def sparse_inference(
    model: nn.Module,
    masks: Mapping[str, Tensor] | None = None,
    *,
    shrink_first: bool = True,
    batch_size: int | None = None,
    threshold: float | None = None,
    conv_threshold: float = CONV_SPARSE_BELOW,
    kernels: Mapping[str, str] | None = None,
) -> nn.Module:
    """An inference module computing what the ticket ``model`` (with ``masks``) computes,
    with each layer's kernel chosen for speed (see :mod:`lth.pruning.sparse`).

    ``masks``: the ticket's masks (default: the zeros of every Linear / Conv2d weight).
    ``shrink_first``: remove dead units first (flat ``nn.Sequential`` models only).
    ``threshold`` / ``conv_threshold``: the densities at or below which a Linear / Conv2d
    runs sparse (1.0: every layer with a pruned weight); by default
    :data:`LINEAR_SPARSE_BELOW`, or :data:`LINEAR_SPARSE_BELOW_SMALL` when ``batch_size``
    (the batch size it will mostly run) is below :data:`EMBEDDING_BAG_FROM`, and
    :data:`CONV_SPARSE_BELOW` (convs run dense). ``kernels``: force a kernel per layer,
    e.g. ``{"fc1": "sparse"}``. The module is in eval mode; ``.plan`` lists each layer's
    kernel and density. ``model`` is not changed::

        model, masks = load_ticket("runs/lenet", level=15)
        fast = sparse_inference(model, masks)
        logits = fast(images)
    """
    if masks is None:
        masks = _derive_masks(model)
    check_masks(masks, model)
    if threshold is None:
        small = batch_size is not None and batch_size < EMBEDDING_BAG_FROM
        threshold = LINEAR_SPARSE_BELOW_SMALL if small else LINEAR_SPARSE_BELOW
    for value, what in ((threshold, "threshold"), (conv_threshold, "conv_threshold")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise LTHError(f"{what} must be a density in [0, 1], got {value!r}")
    shrunk = None
    if shrink_first and can_shrink(model, masks):
        shrunk = shrink(model, masks)
        model, masks = shrunk.model, shrunk.masks
    children = list(model.named_children()) if type(model) is nn.Sequential else []
    start = _tail_start(children)
    choose = (kernels, threshold, conv_threshold)
    plan: list[dict] = []
    if start is not None:
        head: list[tuple[str, nn.Module]] = []
        tail: list[tuple[str, nn.Module]] = []
        for i, (name, child) in enumerate(children):
            mask = masks.get(f"{name}.weight")
            if type(child) in (nn.Linear, nn.Conv2d):
                conv = type(child) is nn.Conv2d
                kernel = _kernel_for(f"{name}.weight", mask, conv, *choose)
                if conv and (isinstance(child.padding, str) or child.groups != 1):
                    kernel = "dense"
                plan.append(_plan_row(name, child.weight, mask, kernel))
                if conv:
                    child = _conv_module(child, mask, kernel)
                else:
                    child = LinearKernel(child, mask, kernel)
            else:
                child = copy.deepcopy(child)
            (tail if i >= start else head).append((name, child))
        result = TicketInference(
            nn.Sequential(OrderedDict(head)), nn.Sequential(OrderedDict(tail)), plan, shrunk
        )
        return result.eval()
    result = copy.deepcopy(model)
    for name, module in list(result.named_modules()):
        mask = masks.get(f"{name}.weight" if name else "weight")
        if type(module) not in (nn.Linear, nn.Conv2d) or mask is None:
            continue
        conv = type(module) is nn.Conv2d
        kernel = _kernel_for(f"{name}.weight", mask, conv, *choose)
        if conv and (isinstance(module.padding, str) or module.groups != 1):
            kernel = "dense"
        plan.append(_plan_row(name, module.weight, mask, kernel))
        if kernel == "dense":
            continue
        new = SparseConv2d(module, mask, kernel) if conv else SparseLinear(module, mask, kernel)
        parent, _, attr = name.rpartition(".")
        setattr(result.get_submodule(parent) if parent else result, attr, new)
    result.plan = plan
    result.shrunk = shrunk
    return result.eval()


def _plan_row(name: str, weight: Tensor, mask: Tensor | None, kernel: str) -> dict:
    return {
        "layer": name,
        "kernel": kernel,
        "density": 1.0 if mask is None else _density(mask),
        "shape": list(weight.shape),
    }
