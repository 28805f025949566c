"""Seeded weight initialisation: :func:`initialize` and its schemes (:data:`INIT_SCHEMES`).

:func:`initialize` draws only from the ``torch.Generator`` it is given, so the same seed gives
the same weights and the global RNG is never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from lth.errors import LTHError

__all__ = ["INIT_SCHEMES", "init_names", "initialize"]

_RELU_GAIN = math.sqrt(2.0)

InitFn = Callable[[torch.Tensor, torch.Generator], None]


def _xavier_normal(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.xavier_normal_(t, generator=g)


def _xavier_uniform(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.xavier_uniform_(t, generator=g)


def _kaiming_normal(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.kaiming_normal_(t, mode="fan_in", nonlinearity="relu", generator=g)


def _kaiming_uniform(t: torch.Tensor, g: torch.Generator) -> None:
    nn.init.kaiming_uniform_(t, mode="fan_in", nonlinearity="relu", generator=g)


def _pytorch_default(t: torch.Tensor, g: torch.Generator) -> None:
    # What nn.Linear / nn.Conv2d reset_parameters do: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    nn.init.kaiming_uniform_(t, a=math.sqrt(5), generator=g)


#: Weight initialisers for Linear / Conv weights (and recurrent input weights), by scheme name.
#: Biases are zero for every scheme except ``pytorch_default``, which draws them like PyTorch.
INIT_SCHEMES: dict[str, InitFn] = {
    "xavier_normal": _xavier_normal,
    "xavier_uniform": _xavier_uniform,
    "kaiming_normal": _kaiming_normal,
    "kaiming_uniform": _kaiming_uniform,
    "pytorch_default": _pytorch_default,
}


def init_names() -> list[str]:
    """Names of the initialisation schemes, sorted."""
    return sorted(INIT_SCHEMES)


def _as_generator(generator: object) -> torch.Generator:
    if isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    raise LTHError(
        f"initialize() needs a torch.Generator or an int seed, got {type(generator).__name__}; "
        "pass e.g. generator=torch.Generator().manual_seed(0)"
    )


def _fill(param: torch.Tensor, g: torch.Generator, fn: Callable[[torch.Tensor], object]) -> None:
    """Draw ``param``'s values with ``fn`` into a scratch tensor on the generator's device, then
    copy them in. This lets a CPU generator initialise a GPU model and makes the weights
    independent of the model's device and dtype."""
    dtype = param.dtype if param.dtype in (torch.float32, torch.float64) else torch.float32
    scratch = torch.empty(param.shape, dtype=dtype, device=g.device)
    fn(scratch)
    with torch.no_grad():
        param.copy_(scratch)


def _zero(param: torch.Tensor | None) -> None:
    if param is not None:
        with torch.no_grad():
            param.zero_()


def _init_fan_layer(module: nn.Module, scheme: str, g: torch.Generator) -> None:
    """Linear / Conv*d / ConvTranspose*d: weight by scheme, bias zero (or PyTorch-like)."""
    weight = module.weight
    _fill(weight, g, lambda t: INIT_SCHEMES[scheme](t, g))
    bias = getattr(module, "bias", None)
    if bias is None:
        return
    if scheme == "pytorch_default":
        fan_in, _ = nn.init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
        _fill(bias, g, lambda t: nn.init.uniform_(t, -bound, bound, generator=g))
    else:
        _zero(bias)


def _init_recurrent(module: nn.Module, scheme: str, g: torch.Generator) -> None:
    """RNN / LSTM / GRU (and their Cell versions).

    ``pytorch_default`` reproduces PyTorch: every parameter U(-1/sqrt(H), 1/sqrt(H)). Otherwise,
    per gate block: ``weight_ih`` by scheme, ``weight_hh`` orthogonal, ``weight_hr`` (LSTM
    projection) by scheme, biases zero.
    """
    hidden = module.hidden_size
    if scheme == "pytorch_default":
        stdv = 1.0 / math.sqrt(hidden) if hidden > 0 else 0.0
        for param in module.parameters(recurse=False):
            _fill(param, g, lambda t: nn.init.uniform_(t, -stdv, stdv, generator=g))
        return
    for pname, param in module.named_parameters(recurse=False):
        if pname.startswith("bias"):
            _zero(param)
        elif pname.startswith(("weight_ih", "weight_hh")):
            fn: Callable[[torch.Tensor], object]
            if pname.startswith("weight_ih"):
                fn = lambda t: INIT_SCHEMES[scheme](t, g)  # noqa: E731
            else:
                fn = lambda t: nn.init.orthogonal_(t, generator=g)  # noqa: E731
            gates = param.shape[0] // hidden if hidden > 0 else 1
            for k in range(gates):
                _fill(param[k * hidden : (k + 1) * hidden], g, fn)
        else:  # weight_hr (LSTM projection) or anything else 2-D
            _fill(param, g, lambda t: INIT_SCHEMES[scheme](t, g))


def _init_norm(module: nn.Module) -> None:
    """BatchNorm / GroupNorm / LayerNorm / InstanceNorm: weight 1, bias 0, fresh running stats."""
    with torch.no_grad():
        if getattr(module, "weight", None) is not None:
            module.weight.fill_(1.0)
        if getattr(module, "bias", None) is not None:
            module.bias.zero_()
    if hasattr(module, "reset_running_stats") and getattr(module, "track_running_stats", False):
        module.reset_running_stats()


def _init_embedding(module: nn.Embedding, g: torch.Generator) -> None:
    """PyTorch's own Embedding init, N(0, 1), with the padding row zeroed."""
    _fill(module.weight, g, lambda t: nn.init.normal_(t, generator=g))
    if module.padding_idx is not None:
        with torch.no_grad():
            module.weight[module.padding_idx].zero_()


def _init_other(module: nn.Module, g: torch.Generator) -> None:
    """A module type we do not know that owns parameters: run its own ``reset_parameters`` with
    the CPU global RNG temporarily seeded from ``g`` (state restored afterwards)."""
    own = list(module.parameters(recurse=False))
    reset = getattr(module, "reset_parameters", None)
    kind = type(module).__name__
    if not callable(reset):
        raise LTHError(
            f"initialize() does not know how to initialise {kind} (it has parameters but no "
            "reset_parameters method); add a reset_parameters() method to it or initialise it "
            "yourself"
        )
    if any(p.device.type != "cpu" for p in own):
        raise LTHError(
            f"initialize() can only initialise the unknown module type {kind} on the CPU; "
            "call initialize() before moving the model to the accelerator"
        )
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=g.device).item())
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        with torch.no_grad():
            reset()


_NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.GroupNorm,
    nn.LayerNorm,
)


def initialize(
    model: nn.Module,
    scheme: str = "xavier_normal",
    generator: torch.Generator | int | None = None,
) -> None:
    """Initialise ``model`` in place with ``scheme``, drawing only from ``generator``.

    Walks ``model.modules()``: Linear / Conv weights by scheme (biases zero, except
    ``pytorch_default`` which reproduces PyTorch's own ``reset_parameters`` draws bit for bit);
    norm layers weight 1, bias 0; RNN / LSTM / GRU (+ Cells): ``weight_ih`` by scheme,
    ``weight_hh`` orthogonal per gate block, biases zero; Embedding N(0, 1). Any other module that
    owns parameters is reset with its own ``reset_parameters`` under a generator-derived seed.
    The global RNG is not used, so the same seed gives the same weights.

    Args:
        model: The model to initialise, changed in place (any ``nn.Module``, on any device).
        scheme: ``"xavier_normal"`` (the default), ``"xavier_uniform"``,
            ``"kaiming_normal"``, ``"kaiming_uniform"`` or ``"pytorch_default"``.
        generator: A ``torch.Generator`` or an int seed; required (``None`` is refused, so
            that runs are reproducible).

    Returns:
        None.

    Raises:
        LTHError: An unknown scheme, or a generator that is missing or neither a
            ``torch.Generator`` nor an int.

    Examples:
        >>> import torch, lth
        >>> from torch import nn
        >>> a, b = nn.Linear(4, 3), nn.Linear(4, 3)
        >>> lth.initialize(a, "kaiming_normal", generator=0)
        >>> lth.initialize(b, "kaiming_normal", torch.Generator().manual_seed(0))
        >>> torch.equal(a.weight, b.weight), a.bias.abs().sum().item()
        (True, 0.0)
    """
    if scheme not in INIT_SCHEMES:
        raise LTHError(f"unknown init scheme {scheme!r}; valid schemes: {', '.join(init_names())}")
    if generator is None:
        raise LTHError(
            "initialize() needs an explicit generator so runs are reproducible; "
            "pass generator=torch.Generator().manual_seed(seed) or an int seed"
        )
    g = _as_generator(generator)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            _init_fan_layer(module, scheme, g)
        elif isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            _init_recurrent(module, scheme, g)
        elif isinstance(module, _NORM_TYPES):
            _init_norm(module)
        elif isinstance(module, nn.Embedding):
            _init_embedding(module, g)
        elif any(True for _ in module.parameters(recurse=False)):
            _init_other(module, g)
