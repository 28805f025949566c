"""K copies of one flat ``nn.Sequential``, stacked on a leading ticket dimension, run as one.

Training many tickets of the same architecture is the main cost of a lottery-ticket study.
Stacking them turns K small matrix products into one batched product (``bmm``) and K
convolutions into one grouped convolution, and lets one fused optimizer kernel update all of
them. A single ticket is simply K = 1.

Layouts (per ticket the parameters keep their usual PyTorch shapes):

* Linear weight ``(K, out, in)``, bias ``(K, out, 1)``. Activations are feature-major,
  ``(K, features, batch)``, so that ``h = W @ x + b`` is a plain ``baddbmm`` and the weight
  gradient ``dh @ x^T`` comes out in the weight's own layout.
* Conv2d weight ``(K, out, in, kh, kw)``, bias ``(K, out)``. Activations are
  ``(batch, K * channels, H, W)`` and a convolution runs with ``groups = K``.

All parameters live in one flat buffer (``flat``) and all gradients in another
(``grad_flat``); ``params`` and ``grads`` are views into them. So masking is one multiply and
the optimizer one fused kernel over one tensor, whatever the architecture. (The gradient
buffer is contiguous like the parameters: ``torch._fused_adam_`` silently mis-reads
gradients whose strides differ from their parameter's.)

Compact levels: when some layers run on sparse kernels (:meth:`FlatParameters.use_kernels`),
training reads and writes ``live`` and ``live_grads``, views into two *compact* buffers
(``live_flat``, ``live_grad_flat``): a sparse layer's weight is there as its surviving values
alone (1-D, in its pattern's CSR order), every other parameter whole, in its engine layout.
The optimizer runs over the compact buffer, so a step touches no pruned weight. ``flat``, the
dense layout, is brought up to date only when something reads it (:meth:`write_dense`: export,
checkpoints) and read back after something writes it (:meth:`read_dense`). Without sparse
layers ``live`` *is* ``params`` (and ``live_flat`` is ``flat``): nothing is copied.

``loss_and_grad`` computes the per-ticket cross-entropy and fills ``grad_flat``. For the
multilayer perceptrons of the lottery-ticket papers (Flatten, then Linear layers each
optionally followed by ReLU) it runs a hand-written backward pass: the same matrix products as
autograd, written straight into the gradient buffer, without building a graph. Everything else
goes through autograd.

Precision (``--precision bf16``): ``compute_dtype`` bfloat16 makes the training step's dense
matrix products (and convolutions) take bfloat16 operands, cast at the product, and return
float32 results; parameters, gradient buffer, masks, biases, activations, loss and optimizer
stay float32 (the master weights). Evaluation (``forward(shared=True)``) and sparse-kernel
layers always run in float32. With ``compute_dtype`` float32 (the default) no cast happens:
the float32 path is the same code, bit for bit.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.core.kernels import Pattern, sparse_bmm, sparse_conv2d, use_sparse
from lth.core.models import check_flat_sequential, is_flat_sequential
from lth.errors import LTHError


def supports(model: nn.Module) -> bool:
    """True when the stacked engine can run ``model``
    (:func:`lth.core.models.is_flat_sequential`)."""
    return is_flat_sequential(model)


def build(template: nn.Module, k: int, device: torch.device | str) -> StackedModel | ModuleModel:
    """The fastest engine for ``template``: stacked when supported, else the module itself."""
    if supports(template):
        return StackedModel(template, k, device)
    if k != 1:
        raise LTHError(
            f"{type(template).__name__} cannot be stacked; train its tickets one at a time"
        )
    return ModuleModel(template, device)


class FlatParameters:
    """Parameters and gradients of K tickets in two flat buffers, with a view per parameter.

    ``shapes`` are the parameters' usual PyTorch shapes; ``engine_shapes`` their layout here,
    with the leading ticket dimension.
    """

    device: torch.device
    shapes: dict[str, torch.Size]
    params: dict[str, Tensor]

    def _allocate(self, engine_shapes: Mapping[str, tuple[int, ...]]) -> None:
        self.engine_shapes = dict(engine_shapes)
        total = sum(math.prod(shape) for shape in self.engine_shapes.values())
        self.flat = torch.zeros(total, device=self.device)
        self.grad_flat = torch.zeros(total, device=self.device)
        self.params = {n: v.requires_grad_() for n, v in self.views(self.flat).items()}
        self.grads = self.views(self.grad_flat)
        # masks (engine layout) that loss_and_grad multiplies into their gradients as it
        # writes them, while they are in cache: a pruned weight's gradient is exactly 0
        self.masks: dict[str, Tensor] = {}
        self.patterns: dict[str, Pattern] = {}  # weights that run on sparse kernels
        self._dense_training()
        # dtype of the training step's dense products (float32: no cast at all)
        self.compute_dtype: torch.dtype = torch.float32

    def _dense_training(self) -> None:
        """Train on the dense buffers themselves (no sparse layer: nothing compact)."""
        self.live, self.live_grads = self.params, self.grads
        self.live_flat, self.live_grad_flat = self.flat, self.grad_flat
        self.compact_index: Tensor | None = None  # where each live_flat entry sits in flat

    def _compact_training(self) -> None:
        """Train on compact buffers: each sparse layer's surviving weights alone, every other
        parameter whole (see the module's docstring); gathered from ``flat`` once, here."""
        where, offset = [], 0
        for name, shape in self.engine_shapes.items():
            size = math.prod(shape)
            pattern = self.patterns.get(name)
            part = torch.arange(size, device=self.device) if pattern is None else pattern.index
            where.append(part + offset)
            offset += size
        self.compact_index = torch.cat(where)
        self.live_flat = self.flat.detach().index_select(0, self.compact_index)
        self.live_grad_flat = torch.zeros_like(self.live_flat)
        self.live = {n: v.requires_grad_() for n, v in self._live_views(self.live_flat).items()}
        self.live_grads = self._live_views(self.live_grad_flat)

    def _live_views(self, buffer: Tensor) -> dict[str, Tensor]:
        out, offset = {}, 0
        for name, shape in self.engine_shapes.items():
            pattern = self.patterns.get(name)
            size = math.prod(shape) if pattern is None else pattern.nnz
            view = buffer[offset : offset + size]
            out[name] = view if pattern is not None else view.view(shape)
            offset += size
        return out

    @torch.no_grad()
    def write_dense(self) -> None:
        """Bring ``flat`` (and ``params``) up to date with the compact weights trained since;
        a no-op without sparse layers. (Pruned weights stay 0 in ``flat``: never written.)"""
        if self.compact_index is not None:
            self.flat.index_copy_(0, self.compact_index, self.live_flat)

    @torch.no_grad()
    def read_dense(self) -> None:
        """Take the compact weights from ``flat`` after something wrote it (a checkpoint, a
        load); a no-op without sparse layers."""
        if self.compact_index is not None:
            torch.index_select(self.flat, 0, self.compact_index, out=self.live_flat)

    def low(self, t: Tensor) -> Tensor:
        """``t`` cast to the training products' dtype (itself under float32)."""
        return t if self.compute_dtype == torch.float32 else t.to(self.compute_dtype)

    def use_kernels(self, mode: str = "auto") -> None:
        """Run the masked layers below the machine's sparse threshold on sparse kernels
        (:mod:`lth.core.kernels`; ``mode`` "dense": none, "sparse": all). Call after ``masks``."""

    def views(self, flat: Tensor) -> dict[str, Tensor]:
        """Per-parameter views (engine layout) of a buffer laid out like ``flat``."""
        out, offset = {}, 0
        for name, shape in self.engine_shapes.items():
            size = math.prod(shape)
            out[name] = flat[offset : offset + size].view(shape)
            offset += size
        return out

    def flatten(self, tensors: Mapping[str, Tensor], fill: float) -> Tensor:
        """A buffer laid out like ``flat``: ``tensors`` (engine layout) where given, else fill."""
        flat = torch.full_like(self.flat, fill)
        views = self.views(flat)
        for name, t in tensors.items():
            views[name].copy_(t)
        return flat

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
        self.read_dense()

    def export(self, index: int) -> dict[str, Tensor]:
        """One ticket's weights with their usual PyTorch shapes, as fresh CPU tensors."""
        self.write_dense()
        return {
            name: p[index].detach().reshape(self.shapes[name]).to("cpu", copy=True)
            for name, p in self.params.items()
        }

    def to_engine_layout(self, name: str, tensors: list[Tensor]) -> Tensor:
        """Stack per-ticket tensors shaped like parameter ``name`` into the engine's layout."""
        shape = self.engine_shapes[name][1:]
        return torch.stack([t.reshape(shape) for t in tensors]).to(self.device)

    def forward(self, x: Tensor, shared: bool = False, dtype: torch.dtype | None = None) -> Tensor:
        raise NotImplementedError

    def loss_and_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-ticket mean cross-entropy on ``(x, y)``; fills ``grad_flat`` (autograd)."""
        dtype = None if self.compute_dtype == torch.float32 else self.compute_dtype
        logits = self.forward(x, dtype=dtype)
        losses = F.cross_entropy(logits, y, reduction="none").mean(1)
        names = list(self.live)
        grads = torch.autograd.grad(losses.sum(), [self.live[n] for n in names], allow_unused=True)
        for name, g in zip(names, grads):
            if g is None:
                self.live_grads[name].zero_()
            elif name in self.masks and name not in self.patterns:  # sparse: survivors only
                torch.mul(g, self.masks[name], out=self.live_grads[name])
            else:
                self.live_grads[name].copy_(g)
        return losses.detach()


def bmm(a: Tensor, b: Tensor, bias: Tensor | None = None, out: Tensor | None = None) -> Tensor:
    """``bias + a @ b`` for every ticket, as ``torch.baddbmm``, balanced across CPU threads.

    On CPU, ``bmm`` gives each thread whole tickets, so 3 tickets on 2 threads take as long as
    4. The tickets beyond a multiple of the thread count go through ``mm``, which splits one
    product across all threads. (Under autograd, ``out=`` is not allowed: plain ``bmm``.)
    """
    k = a.shape[0]
    balance = (
        a.device.type == "cpu"
        and k > 1
        and not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
    )
    rest = k % torch.get_num_threads() if balance else 0
    if rest == 0:
        return torch.bmm(a, b, out=out) if bias is None else torch.baddbmm(bias, a, b, out=out)
    if out is None:
        out = torch.empty(k, a.shape[1], b.shape[2], device=a.device, dtype=a.dtype)
    head = k - rest
    if head:
        bmm(a[:head], b[:head], None if bias is None else bias[:head], out[:head])
    for i in range(head, k):
        if bias is None:
            torch.mm(a[i], b[i], out=out[i])
        else:
            torch.addmm(bias[i], a[i], b[i], out=out[i])
    return out


def mlp_layers(layers: list[tuple[str, nn.Module]]) -> list[tuple[str, bool]] | None:
    """``[(linear name, followed by ReLU)]`` when the layers are Flatten, (Linear, ReLU?)+."""
    if not layers or not isinstance(layers[0][1], nn.Flatten):
        return None
    plan: list[tuple[str, bool]] = []
    for name, layer in layers[1:]:
        if isinstance(layer, nn.Linear):
            plan.append((name, False))
        elif isinstance(layer, nn.ReLU) and plan and not plan[-1][1]:
            plan[-1] = (plan[-1][0], True)
        else:
            return None
    return plan if plan and not plan[-1][1] else None


def _low_conv2d(h: Tensor, w: Tensor, b: Tensor | None, layer: nn.Conv2d, k: int, dtype) -> Tensor:
    """The stacked grouped convolution with ``dtype`` operands, float32 result and bias."""
    out = F.conv2d(
        h.to(dtype),
        w.reshape(-1, *w.shape[2:]).to(dtype),
        None,
        layer.stride,
        layer.padding,
        layer.dilation,
        layer.groups * k,
    ).float()
    return out if b is None else out + b.reshape(1, -1, 1, 1)


class StackedModel(FlatParameters):
    """K tickets of one architecture as stacked parameter tensors with a batched forward pass."""

    def __init__(self, template: nn.Module, k: int, device: torch.device | str = "cpu"):
        check_flat_sequential(template, name=type(template).__name__)  # else: one at a time
        if k < 1:
            raise LTHError(f"need at least one ticket to stack, got k={k}")
        self.k = k
        self.device = torch.device(device)
        self.layers: list[tuple[str, nn.Module]] = list(template.named_children())
        self.shapes: dict[str, torch.Size] = {
            name: p.shape for name, p in template.named_parameters()
        }
        self._allocate({n: (k, *self._engine_shape(n, shape)) for n, shape in self.shapes.items()})
        self.mlp = mlp_layers(self.layers)
        if self.mlp is not None:
            self._bind_mlp()
            self._mlp_weights = [f"{n}.weight" for n, _ in self.mlp]
            classes = self.shapes[f"{self.mlp[-1][0]}.weight"][0]
            self._eye = torch.eye(classes, device=self.device)  # rows are one-hot targets

    def _bind_mlp(self) -> None:
        """Look the MLP's tensors up once: (weight, bias, weight grad, bias grad, followed by
        ReLU) per layer, as training reads them (``live``: compact or dense)."""
        if self.mlp is None:
            return
        p, g = self.live, self.live_grads
        self._mlp_tensors = [
            (p[f"{n}.weight"], p.get(f"{n}.bias"), g[f"{n}.weight"], g.get(f"{n}.bias"), relu)
            for n, relu in self.mlp
        ]

    def use_kernels(self, mode: str = "auto") -> None:
        """Run the masked layers below the machine's sparse threshold on sparse kernels
        (:mod:`lth.core.kernels`; ``mode`` "dense": none, "sparse": all), their surviving
        weights compact from here on (see the module's docstring). Call after ``masks``, with
        the pruned weights at 0 in ``flat``."""
        self.write_dense()  # what trained so far in any compact layout
        self.patterns = {}
        layers = dict(self.layers)
        for name, mask in self.masks.items():
            layer = layers.get(name.rsplit(".", 1)[0])
            if not name.endswith(".weight") or not isinstance(layer, nn.Linear | nn.Conv2d):
                continue
            if isinstance(layer, nn.Conv2d) and layer.groups != 1:
                continue
            density = float(mask.count_nonzero()) / mask.numel()
            if use_sparse(mode, density, self.device):
                self.patterns[name] = Pattern(mask.reshape(self.k, mask.shape[1], -1))
        if self.patterns:
            self._compact_training()
        else:
            self._dense_training()
        self._bind_mlp()

    def _is_linear_bias(self, name: str) -> bool:
        layer = dict(self.layers)[name.rsplit(".", 1)[0]]
        return isinstance(layer, nn.Linear) and name.endswith(".bias")

    def _engine_shape(self, name: str, shape: torch.Size) -> tuple[int, ...]:
        return (*shape, 1) if self._is_linear_bias(name) else tuple(shape)

    @property
    def sparse_first(self) -> bool:
        """Whether the first product runs sparse on flattened inputs (so a shared input is
        best given feature-major: ``forward(..., feature_major=True)``)."""
        first = self.mlp[0][0] if self.mlp else None
        return f"{first}.weight" in self.patterns

    def forward(
        self,
        x: Tensor,
        shared: bool = False,
        dtype: torch.dtype | None = None,
        feature_major: bool = False,
    ) -> Tensor:
        """Logits ``(K, classes, batch)`` for inputs ``(K, batch, *input_shape)``.

        ``shared=True``: one input batch ``(batch, *input_shape)`` for every ticket (evaluation).
        The first weight layer then runs as one product with all K weight matrices stacked,
        instead of K products over K copies of the input. ``dtype`` (e.g. bfloat16): the
        dense products and convolutions take operands of that dtype and return float32.
        ``feature_major`` (with ``shared``, a model starting with Flatten): ``x`` is already
        the flattened batch transposed, ``(features, batch)``.
        """
        k = self.k
        batch = (x.shape[1] if feature_major else x.shape[0]) if shared else x.shape[1]
        if feature_major and shared:
            h, mode = x, "features"
        elif isinstance(self.layers[0][1], nn.Flatten):
            h = x.reshape(batch, -1).t() if shared else x.reshape(k, batch, -1).transpose(1, 2)
            mode = "features"
        else:
            h = x if shared else x.transpose(0, 1).reshape(batch, k * x.shape[2], *x.shape[3:])
            mode = "image"
        p = self.live  # a sparse layer's weight: its compact values
        # without a graph, a ReLU may overwrite what an earlier layer made here (not x)
        in_place = not torch.is_grad_enabled()
        for index, (name, layer) in enumerate(self.layers):
            if isinstance(layer, nn.Linear):
                b = p.get(f"{name}.bias")
                w = p[f"{name}.weight"]
                pattern = self.patterns.get(f"{name}.weight")
                if pattern is not None:
                    if shared:
                        h = pattern.forward_shared(w.detach(), h.contiguous(), b)
                        shared = False
                    elif not torch.is_grad_enabled():  # evaluation: no graph, bias fused
                        h = pattern.forward(w, h.contiguous(), b)
                    else:
                        h = sparse_bmm(w, h, pattern)
                        h = h if b is None else h + b
                elif shared:
                    w2 = w.reshape(-1, w.shape[2])
                    h = torch.mm(w2, h) if b is None else torch.addmm(b.reshape(-1, 1), w2, h)
                    h = h.view(k, -1, batch)
                    shared = False
                elif dtype is not None:
                    h = torch.bmm(w.to(dtype), h.to(dtype)).float()
                    h = h if b is None else h + b
                else:
                    h = bmm(w, h, b)
            elif isinstance(layer, nn.Conv2d):
                w = p[f"{name}.weight"]
                b = p.get(f"{name}.bias")
                pattern = self.patterns.get(f"{name}.weight")
                if shared and (layer.groups != 1 or pattern is not None):
                    h = h.repeat(1, k, 1, 1)  # each ticket needs its own copy
                    shared = False
                if pattern is not None:
                    h = sparse_conv2d(
                        h, w, b, pattern, layer.kernel_size, layer.stride, layer.padding,
                        layer.dilation,
                    )  # fmt: skip
                    continue
                if dtype is not None and not shared:
                    h = _low_conv2d(h, w, b, layer, k, dtype)
                    continue
                h = F.conv2d(
                    h,
                    w.reshape(-1, *w.shape[2:]),
                    None if b is None else b.reshape(-1),
                    layer.stride,
                    layer.padding,
                    layer.dilation,
                    layer.groups * (1 if shared else k),
                )
                shared = False
            elif isinstance(layer, nn.ReLU):
                made_here = any(not isinstance(m, nn.Flatten) for _, m in self.layers[:index])
                h = h.relu_() if in_place and made_here else torch.relu(h)
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
                h = h.reshape(batch, -1).t() if shared else h.reshape(batch, k, -1).permute(1, 2, 0)
                mode = "features"
        if mode != "features":
            raise LTHError("the model must end in a Linear layer to be stacked")
        return h

    def loss_and_grad(self, x: Tensor, y: Tensor) -> Tensor:
        """Per-ticket mean cross-entropy on ``(x, y)``; fills ``grad_flat``."""
        if self.mlp is None:
            return super().loss_and_grad(x, y)
        with torch.no_grad():
            return self._mlp_loss_and_grad(x, y)

    def _mlp_loss_and_grad(self, x: Tensor, y: Tensor) -> Tensor:
        k, batch = self.k, x.shape[1]
        layers = self._mlp_tensors
        low = self.compute_dtype != torch.float32
        h = x.reshape(k, batch, -1).transpose(1, 2)
        inputs, values = [], []
        lows: list[tuple[Tensor, Tensor] | None] = []  # (weight, input) cast, under low
        for (w, b, _, _, relu), name in zip(layers, self._mlp_weights):
            pattern = self.patterns.get(name)
            lows.append(None)
            if pattern is None and low:
                inputs.append(h)
                values.append(None)
                lows[-1] = (self.low(w), self.low(h))
                h = bmm(*lows[-1]).float()
                if b is not None:
                    h.add_(b)
            elif pattern is None:
                inputs.append(h)
                values.append(None)
                h = bmm(w, h, b)
            else:
                h = h.contiguous()
                inputs.append(h)
                values.append(w)  # compact: the surviving weights themselves
                h = pattern.forward(values[-1], h, b)
            if relu:
                h.relu_()
        # cross-entropy and its gradient (softmax - one_hot) / batch, in place
        log_p = torch.log_softmax(h, 1)
        losses = log_p.gather(1, y.unsqueeze(1)).mean((1, 2)).neg_()
        # one-hot rows by index_select, not scatter: deterministic on CUDA too
        one_hot = self._eye.index_select(0, y.reshape(-1)).view(k, batch, -1)
        d = log_p.exp_().sub_(one_hot.transpose(1, 2)).mul_(1.0 / batch)
        for i in reversed(range(len(layers))):
            w, _, grad_w, grad_b, relu = layers[i]
            if relu:  # the ReLU's output is the next layer's input; it is > 0 where z > 0
                d = torch.ops.aten.threshold_backward(d, inputs[i + 1], 0)
            pattern = self.patterns.get(self._mlp_weights[i])
            cast = lows[i]  # a dense layer under low precision: (weight, input) cast
            d_low = self.low(d) if cast is not None else None
            if cast is not None:  # the products in compute_dtype, results float32
                grad_w.copy_(bmm(d_low, cast[1].transpose(1, 2)))
            elif pattern is not None:  # compact: the surviving positions alone
                pattern.weight_grad(d, inputs[i], grad_w)
            else:
                bmm(d, inputs[i].transpose(1, 2), out=grad_w)
            mask = self.masks.get(self._mlp_weights[i]) if pattern is None else None
            if mask is not None:
                grad_w.mul_(mask)
            if grad_b is not None:
                torch.sum(d, 2, keepdim=True, out=grad_b)
            if i > 0:
                if cast is not None:
                    d = bmm(cast[0].transpose(1, 2), d_low).float()
                elif pattern is not None:
                    d = pattern.input_grad(values[i], d)
                else:
                    d = bmm(w.transpose(1, 2), d)
        return losses

    def train(self, mode: bool = True) -> None:
        """No-op: the stacked layers behave the same in training and evaluation."""


class ModuleModel(FlatParameters):
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
        self._allocate({n: (1, *shape) for n, shape in self.shapes.items()})
        self.buffers = dict(self.module.named_buffers())

    def load(self, index: int, state: Mapping[str, Tensor]) -> None:
        """Copy weights (and any buffers in ``state``) into the ticket."""
        super().load(index, state)
        with torch.no_grad():
            for name, b in self.buffers.items():
                if name in state:
                    b.copy_(state[name])

    def export(self, index: int) -> dict[str, Tensor]:
        """The ticket's weights and buffers, as fresh CPU tensors."""
        out = super().export(index)
        out |= {n: b.detach().to("cpu", copy=True) for n, b in self.buffers.items()}
        return out

    def train(self, mode: bool = True) -> None:
        """Switch the module between training and evaluation behaviour (BatchNorm, dropout)."""
        self.module.train(mode)

    def forward(self, x: Tensor, shared: bool = False, dtype: torch.dtype | None = None) -> Tensor:
        """Logits ``(1, classes, batch)`` for inputs ``(1, batch, *input_shape)``.

        ``shared=True``: the input is ``(batch, *input_shape)`` (there is only one ticket).
        ``dtype`` (e.g. bfloat16): the module runs under ``torch.autocast`` to it (an
        arbitrary module's products cannot be cast one by one); logits come back float32.
        """
        weights = {n: p[0] for n, p in self.params.items()}
        args = (x if shared else x[0],)
        if dtype is None:
            out = torch.func.functional_call(self.module, weights, args)
        else:
            with torch.autocast(self.device.type, dtype=dtype):
                out = torch.func.functional_call(self.module, weights, args).float()
        return out.t().unsqueeze(0)
