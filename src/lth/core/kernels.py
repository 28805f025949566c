"""Sparse kernels for masked layers, the density below which they pay on this machine, and
the dtype of the training products (``--precision``, :func:`compute_dtype`).

A ticket at 3.6% of its weights still costs a dense trainer 100% of the arithmetic. Here a
masked layer of K tickets becomes one block-diagonal CSR matrix (ticket k's rows
``k*out..``, columns ``k*in..``) whose structure is built once per level. Its values are the
layer's surviving weights themselves, kept compact (in CSR order) for the whole level by the
engine (:meth:`lth.core.engine.FlatParameters.use_kernels`), with their gradients and the
optimizer's state: nothing is gathered from or scattered into a dense layout during a step. The
three products of a step cost in proportion to the surviving weights:

* forward ``h = W @ x``: CSR times dense;
* input gradient ``W^T @ d``: CSR of the transposed pattern (values permuted) times dense;
* weight gradient ``d @ x^T`` only at the surviving positions
  (``torch.sparse.sampled_addmm``), written straight into the compact gradient.

The structures' indices are 32-bit where they fit: MKL's CSR product (torch's on CPU) takes
32-bit indices, and converts 64-bit ones at every call.

Below a density measured on the machine (:func:`threshold`: a short calibration of a
LeNet-300-100 layer's step, cached per machine, CPU model, torch version and thread count) the
engine runs a layer sparse, above it dense. The cache lives in ``$XDG_CACHE_HOME/lth``
(``~/.cache/lth``); ``LTH_KERNELS_CACHE=DIR`` puts it elsewhere, ``LTH_KERNELS_CACHE=off``
neither reads nor writes one (calibrating in each process). ``LTH_KERNELS_THRESHOLD=D`` fixes
the threshold at density D instead of measuring it, so that ``auto`` picks the same kernels on
every machine (the tests use it).

``--precision bf16`` runs the training step's dense products in bfloat16
(:func:`compute_dtype`); it pays where the hardware multiplies bfloat16 natively (CPUs with
AMX or AVX512-BF16, GPUs) and is emulated, slowly, elsewhere (:func:`native_bf16`).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from lth.errors import LTHError

#: densities tried by the calibration, highest first
CALIBRATION_DENSITIES = (0.5, 0.4, 0.33, 0.28, 0.24, 0.21, 0.18, 0.15, 0.12, 0.08, 0.05, 0.03)
#: bumped when the sparse path changes: a calibration of an older one is not reused
CALIBRATION_VERSION = 2
_THRESHOLDS: dict[str, float] = {}


def _csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """A CSR matrix over a structure built here (valid by construction: not re-checked)."""
    return torch.sparse_csr_tensor(crow, col, values, size, check_invariants=False)


with warnings.catch_warnings():  # torch warns once per process that CSR support is in beta
    warnings.simplefilter("ignore")
    _csr(
        torch.zeros(2, dtype=torch.int64), torch.zeros(0, dtype=torch.int64), torch.zeros(0), (1, 1)
    )


def _index(t: Tensor, limit: int) -> Tensor:
    """``t`` as 32-bit integers when ``limit`` fits them (MKL's CSR product wants them)."""
    return t.to(torch.int32) if limit < 2**31 else t


def _product(a: Tensor, x: Tensor, bias: Tensor | None) -> Tensor:
    """``a @ x``, plus ``bias`` (one value per row of ``a``) where given."""
    if bias is None:
        return a @ x
    return torch.addmm(bias.reshape(-1, 1).expand(a.shape[0], x.shape[1]), a, x)


class Pattern:
    """The surviving positions of K masks ``(K, out, in)`` as block-diagonal CSR structures.

    A layer's surviving weights, in the order of :attr:`index` (row-major, which is the CSR
    order), are its *values*: :meth:`values` gathers them from a dense ``(K, out, in)`` tensor.
    """

    def __init__(self, mask: Tensor):
        k, out, inp = mask.shape
        self.shape = (k, out, inp)
        flat = mask.reshape(-1) != 0
        self.index = flat.nonzero().squeeze(1)  # row-major order = the CSR order below
        limit = max(mask.numel(), k * max(out, inp) + 1)
        ticket = self.index // (out * inp)
        row = self.index // inp  # ticket * out + o
        col = ticket * inp + self.index % inp
        counts = torch.bincount(row, minlength=k * out)
        self.crow = _index(torch.cat([counts.new_zeros(1), counts.cumsum(0)]), limit)
        self.col = _index(col, limit)
        # every ticket reads the same input (evaluation)
        self.shared_col = _index(self.index % inp, limit)
        # the transposed pattern: CSR of W^T, and where each of its entries sits in W's values
        order = torch.argsort(col * (k * out) + row)
        self.perm = order
        counts_t = torch.bincount(col, minlength=k * inp)
        self.crow_t = _index(torch.cat([counts_t.new_zeros(1), counts_t.cumsum(0)]), limit)
        self.col_t = _index(row[order], limit)
        self.zeros = torch.zeros(self.index.numel(), dtype=mask.dtype, device=mask.device)
        self.density = self.index.numel() / max(1, mask.numel())

    @property
    def nnz(self) -> int:
        """How many weights survive, all K tickets together."""
        return self.index.numel()

    def values(self, w: Tensor) -> Tensor:
        """The surviving weights of ``w`` (K, out, in), in CSR order."""
        return w.reshape(-1).index_select(0, self.index)

    def matrix(self, values: Tensor) -> Tensor:
        k, out, inp = self.shape
        return _csr(self.crow, self.col, values, (k * out, k * inp))

    def forward(self, values: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``W @ x (+ bias)`` for every ticket: x ``(K, in, B)`` -> ``(K, out, B)``; bias
        ``(K, out, 1)``, added by the product itself (one pass less over the output)."""
        k, out, inp = self.shape
        return _product(self.matrix(values), x.reshape(k * inp, -1), bias).view(k, out, -1)

    def forward_shared(self, values: Tensor, x: Tensor, bias: Tensor | None = None) -> Tensor:
        """``W @ x (+ bias)`` for every ticket on one shared input x ``(in, B)`` ->
        ``(K, out, B)``."""
        k, out, inp = self.shape
        a = _csr(self.crow, self.shared_col, values, (k * out, inp))
        return _product(a, x, bias).view(k, out, -1)

    def input_grad(self, values: Tensor, d: Tensor) -> Tensor:
        """``W^T @ d`` for every ticket: d ``(K, out, B)`` -> ``(K, in, B)``."""
        k, out, inp = self.shape
        at = _csr(self.crow_t, self.col_t, values.index_select(0, self.perm), (k * inp, k * out))
        return (at @ d.reshape(k * out, -1)).view(k, inp, -1)

    def weight_grad(self, d: Tensor, x: Tensor, out: Tensor) -> None:
        """Write ``d @ x^T`` at the surviving positions into ``out``, the compact gradient
        (one entry per surviving weight, in CSR order)."""
        k, rows, inp = self.shape
        pattern = self.matrix(self.zeros.to(d.dtype))  # the mask may be float32, d float64
        torch.sparse.sampled_addmm(
            pattern,
            d.reshape(k * rows, -1),
            x.reshape(k * inp, -1).t(),
            beta=0.0,
            out=self.matrix(out),  # its values are ``out``: written in place
        )


class _SparseProduct(torch.autograd.Function):
    """``W @ x`` through a :class:`Pattern` from W's compact values, with its backward (the
    gradient of the values, compact too), for the autograd path."""

    @staticmethod
    def forward(ctx, values: Tensor, x: Tensor, pattern: Pattern) -> Tensor:
        values = values.detach()
        ctx.save_for_backward(x, values)
        ctx.pattern = pattern
        return pattern.forward(values, x.contiguous())

    @staticmethod
    def backward(ctx, d: Tensor):
        x, values = ctx.saved_tensors
        pattern: Pattern = ctx.pattern
        d = d.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[0]:
            grad_values = torch.empty_like(values, dtype=d.dtype)
            pattern.weight_grad(d, x.contiguous(), grad_values)
        if ctx.needs_input_grad[1]:
            grad_x = pattern.input_grad(values, d)
        return grad_values, grad_x, None


def sparse_bmm(values: Tensor, x: Tensor, pattern: Pattern) -> Tensor:
    """``W @ x`` for K tickets (W's compact ``values`` by ``(K, in, B)``), differentiable."""
    return _SparseProduct.apply(values, x, pattern)


def sparse_conv2d(
    x: Tensor,
    values: Tensor,
    bias: Tensor | None,
    pattern: Pattern,
    kernel_size,
    stride,
    padding,
    dilation,
) -> Tensor:
    """A convolution of K tickets in the grouped layout (``(B, K*C, H, W)``, weights
    ``(K, out, C, kh, kw)`` given by their compact ``values``) as sparse products over the
    unfolded input; differentiable."""
    k, out, fan_in = pattern.shape
    kh, kw = kernel_size
    c = fan_in // (kh * kw)
    batch = x.shape[0]
    cols = F.unfold(
        x.reshape(batch * k, c, *x.shape[2:]), (kh, kw), dilation, padding, stride
    )  # (B*K, C*kh*kw, L)
    length = cols.shape[2]
    cols = (
        cols.view(batch, k, c * kh * kw, length).permute(1, 2, 0, 3).reshape(k, -1, batch * length)
    )
    h = sparse_bmm(values, cols, pattern)  # (K, out, B*L)
    if bias is not None:
        h = h + bias.reshape(k, out, 1)
    oh = (x.shape[2] + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (x.shape[3] + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return h.view(k, out, batch, oh, ow).permute(2, 0, 1, 3, 4).reshape(batch, k * out, oh, ow)


# ------------------------------------------------------------------------------- precision
#: the values of ``--precision``, and the dtype of the training products under each
PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}
_WARNED: set[str] = set()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` multiplies bfloat16 matrices natively: any CUDA GPU torch supports
    bfloat16 on, or a CPU with AMX or AVX512-BF16 (torch's own checks, else /proc/cpuinfo).

    Args:
        device: The device the products would run on.

    Returns:
        True where bfloat16 products run at native speed.

    Example:
        >>> isinstance(native_bf16("cpu"), bool)
        True
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    if any(getattr(torch.cpu, name, lambda: False)() for name in checks):
        return True
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def compute_dtype(precision: str, device: torch.device | str = "cpu") -> torch.dtype:
    """The dtype of the training step's dense products under ``--precision``; for bf16 on a
    device without native bfloat16, first a one-line warning on stderr (once per process).

    Args:
        precision: ``"fp32"`` or ``"bf16"`` (:data:`PRECISIONS`).
        device: Where the products run.

    Returns:
        ``torch.float32`` or ``torch.bfloat16``.

    Example:
        >>> compute_dtype("fp32")
        torch.float32
    """
    if precision not in PRECISIONS:
        raise LTHError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    device = torch.device(device)
    if dtype != torch.float32 and device.type not in _WARNED and not native_bf16(device):
        _WARNED.add(device.type)
        print(
            f"lth: warning: this {device.type} has no native bfloat16 arithmetic (AMX, "
            "AVX512-BF16 or a GPU): --precision bf16 will be slow here; use fp32",
            file=sys.stderr,
            flush=True,
        )
    return dtype


# ----------------------------------------------------------------------------- calibration
def _cache_file() -> Path | None:
    """Where the calibration is cached, or None when caching is off."""
    chosen = os.environ.get("LTH_KERNELS_CACHE", "")
    if chosen.strip().lower() in ("off", "0", "none", "no"):
        return None
    if chosen:
        return Path(chosen).expanduser() / "kernels.json"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lth" / "kernels.json"


def machine_key(device: torch.device) -> str:
    """What a calibration depends on: device (CPU model), torch version, threads, and the
    version of the sparse path (:data:`CALIBRATION_VERSION`)."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    threads = torch.get_num_threads()
    return (
        f"{device.type}|{name}|torch {torch.__version__}|threads {threads}"
        f"|kernels v{CALIBRATION_VERSION}"
    )


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_cache(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path | None, key: str, value: float) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path) | {key: value}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # no cache: calibrate again next time


def threshold(device: torch.device | str = "cpu") -> float:
    """The density below which a layer's step runs faster sparse than dense on this machine.

    Measured once (about a second) on first need, then cached (see the module's docstring).
    """
    fixed = fixed_threshold()
    if fixed is not None:
        return fixed
    device = torch.device(device)
    key = machine_key(device)
    if key in _THRESHOLDS:
        return _THRESHOLDS[key]
    path = _cache_file()
    cached = _read_cache(path).get(key)
    if isinstance(cached, int | float) and 0.0 <= cached <= 1.0:
        value = float(cached)
    else:
        value = calibrate(device)
        _write_cache(path, key, value)
    _THRESHOLDS[key] = value
    return value


def pin_threshold(device: torch.device | str, value: float) -> float:
    """Make :func:`threshold` answer ``value`` in this process (a resumed run's recorded one)."""
    _THRESHOLDS[machine_key(torch.device(device))] = value
    return value


def fixed_threshold() -> float | None:
    """``LTH_KERNELS_THRESHOLD``'s density, checked; None when it is not set."""
    text = os.environ.get("LTH_KERNELS_THRESHOLD", "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise LTHError(
            f"LTH_KERNELS_THRESHOLD={text!r} is not a density between 0 and 1; "
            "set it to e.g. 0.1, or unset it to calibrate on this machine"
        )
    return value


def _adam(params: Tensor, grads: Tensor, state: list[Tensor]) -> None:
    """One fused Adam update, as the trainer's optimizer makes it (:mod:`lth.core.optim`)."""
    state[2].add_(1)
    torch._fused_adam_(
        [params], [grads], [state[0]], [state[1]], [], [state[2]], lr=1e-9, beta1=0.9,
        beta2=0.999, weight_decay=0.0, eps=1e-8, amsgrad=False, maximize=False,
    )  # fmt: skip


def _layer_step(w: Tensor, x: Tensor, d: Tensor, pattern: Pattern | None):
    """One layer's share of a training step: its three products and its Adam update, over
    all its weights (dense) or over its compact surviving ones (``pattern``)."""
    g = torch.zeros_like(w if pattern is None else pattern.values(w))
    state = [torch.zeros_like(g), torch.zeros_like(g), torch.zeros((), device=w.device)]
    if pattern is None:

        def dense() -> None:
            torch.bmm(w, x)
            torch.bmm(w.transpose(1, 2), d)
            torch.bmm(d, x.transpose(1, 2), out=g)
            _adam(w, g, state)

        return dense
    values = pattern.values(w)

    def sparse() -> None:
        pattern.forward(values, x)
        pattern.input_grad(values, d)
        pattern.weight_grad(d, x, g)
        _adam(values, g, state)

    return sparse


def calibrate(device: torch.device, out: int = 300, inp: int = 784, batch: int = 60) -> float:
    """Time one layer's step (its three products and its Adam update) dense and sparse at
    rising densities, in turns; the highest density at which sparse is faster, of those below
    the first one where it is not (0.0 if it never is)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1, out, inp, generator=gen).to(device)
    x = torch.randn(1, inp, batch, generator=gen).to(device)
    d = torch.randn(1, out, batch, generator=gen).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    dense = _layer_step(w.clone(), x, d, None)
    score = torch.rand(1, out, inp, generator=gen).to(device)
    best = 0.0
    for density in sorted(CALIBRATION_DENSITIES):  # lowest first: stop at the first loss
        pattern = Pattern((score < density).float())
        sparse = _layer_step(w * (score < density), x, d, pattern)
        times: dict[str, list[float]] = {"dense": [], "sparse": []}
        for fn in (dense, sparse):
            fn()
        for _ in range(5):
            for name, fn in (("dense", dense), ("sparse", sparse)):
                sync()
                start = time.perf_counter()
                for _ in range(5):
                    fn()
                sync()
                times[name].append(time.perf_counter() - start)
        if statistics.median(times["sparse"]) < statistics.median(times["dense"]):
            best = density
        else:
            break
    return best


def use_sparse(mode: str, density: float, device: torch.device) -> bool:
    """Whether a layer of this density runs sparse under ``--kernels mode``."""
    if mode == "dense" or density >= 1.0:
        return False
    if mode == "sparse":
        return True
    return density < threshold(device)
