"""Pruning criteria: functions that score every prunable weight, higher scores kept.

A criterion is a plain function that takes, by keyword, only what it names among

- ``weights``: the weights being pruned, ``{name: tensor}`` (the ticket's trained weights in
  IMP; θ0 restricted by the current masks for criteria that prune at initialisation);
- ``init``: θ0 of the replicate; ``masks``: the current masks;
- ``model``: an ``nn.Module`` on the data's device holding ``weights``, masks applied;
- ``data``: the :class:`~lth.data.Dataset` (``data.train_x``, ``data.train_y`` on the device);
- ``generator``: a seeded ``torch.Generator`` (CPU) for anything random;

and returns ``{name: scores}``, one tensor shaped like each mask. The selection (layer-wise,
global, per-type rates, ``exclude``, ``target``: :mod:`lth.pruning.selection`) is the same for every
criterion. Register one with :func:`register_criterion`, or name ``package.module:function``
(``--criterion``, as ``--model`` takes a factory).

A criterion that prunes at initialisation (``at_init``) scores θ0, and every level trains from
θ0. By default it is **one-shot**, as SNIP, GraSP and SynFlow are published: each level's mask
is computed afresh from θ0 and the all-ones mask, at the density IMP reaches at that level
(:meth:`lth.pruning.policy.PruningPolicy.one_shot_targets`), so a study gives the method at
every sparsity of IMP's; with ``pruning = "auto"`` (the default) every prunable layer, the
output layer included, is ranked together, so the method chooses its own per-layer densities
(Frankle et al. 2021, "Pruning Neural Networks at Initialization: Why Are We Missing the
Mark?"). ``iterative=True`` instead scores θ0 restricted by the previous level's mask and
prunes it further at each level (the ``*_iterative`` criteria). ``rounds`` > 1 prunes each mask
in that many rounds on an exponential schedule, rescoring after each (SynFlow: 100).

Built in: ``magnitude`` (|w| of the trained weights: IMP, Frankle & Carbin 2019), ``random``,
and at initialisation ``magnitude_init`` (|θ0|), ``snip`` (Lee et al. 2019), ``grasp`` (Wang et
al. 2020) and ``synflow`` (Tanaka et al. 2020), each one-shot, and ``snip_iterative``,
``grasp_iterative``, ``synflow_iterative``: the same scores pruned level by level from the
previous mask (iterative SNIP: de Jorge et al. 2021, "Progressive Skeletonization"; iterative
GraSP has no reference; iterative SynFlow continues one exponential schedule across levels).

SNIP and GraSP score on ``EXAMPLES_PER_CLASS`` training examples of each class (10, GraSP's
reference code's ``samples_per_class``: 100 examples for MNIST or CIFAR-10), drawn with the
replicate's generator: with a one-shot criterion the same examples at every level.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lth.errors import LTHError
from lth.registry import Registry
from lth.usercode import NO_TRUST, CodeTrust, import_code

__all__ = [
    "CRITERIA",
    "INPUTS",
    "Criterion",
    "criterion_names",
    "get_criterion",
    "grasp",
    "magnitude",
    "random_scores",
    "register_criterion",
    "snip",
    "synflow",
]

#: What a criterion may ask for, by keyword.
INPUTS = ("weights", "init", "masks", "model", "data", "generator")

#: Training examples per class that SNIP and GraSP score on (GraSP's reference code:
#: ``samples_per_class = 10``; Synaptic-Flow's code too).
EXAMPLES_PER_CLASS = 10

#: GraSP's softmax temperature (Wang et al. 2020's code; Synaptic-Flow's too).
GRASP_TEMPERATURE = 200.0

#: SynFlow's rounds per level (Tanaka et al. 2020: 100).
SYNFLOW_ROUNDS = 100


@dataclass(frozen=True)
class Criterion:
    """A scoring function with how it prunes: at initialisation or not, in how many rounds."""

    name: str
    function: Callable[..., Mapping[str, Tensor]]
    at_init: bool = False
    rounds: int = 1
    iterative: bool = False

    @property
    def one_shot(self) -> bool:
        """Whether each level's mask is computed afresh from θ0 (at-init, not iterative)."""
        return self.at_init and not self.iterative

    def wants(self) -> set[str]:
        """The inputs the function names (every input when it takes ``**kwargs``)."""
        try:
            params = inspect.signature(self.function).parameters.values()
        except (TypeError, ValueError):
            return set(INPUTS)
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return set(INPUTS)
        names = set()
        for p in params:
            if p.kind in (p.VAR_POSITIONAL, p.POSITIONAL_ONLY) or (
                p.name not in INPUTS and p.default is inspect.Parameter.empty
            ):
                raise LTHError(
                    f"criterion {self.name} takes {p.name!r}; a criterion takes by keyword "
                    f"only some of {', '.join(INPUTS)}"
                )
            if p.name in INPUTS:
                names.add(p.name)
        return names

    def scores(
        self, masks: Mapping[str, Tensor], inputs: Mapping[str, Callable[[], object]]
    ) -> dict[str, Tensor]:
        """Call the function with the inputs it names (``inputs``: name -> a maker, called only
        when named) and check that it scored every masked layer in the mask's shape."""
        kwargs = {name: inputs[name]() for name in sorted(self.wants())}
        try:
            result = self.function(**kwargs)
        except (KeyboardInterrupt, LTHError):
            raise
        except BaseException as e:  # noqa: BLE001 - user code
            raise LTHError(f"criterion {self.name} failed: {type(e).__name__}: {e}") from None
        if not isinstance(result, Mapping):
            raise LTHError(
                f"criterion {self.name} returned {type(result).__name__}; return a dict "
                "{parameter name: scores shaped like the weights}"
            )
        out = {}
        for name, mask in masks.items():
            score = result.get(name)
            if not isinstance(score, Tensor) or tuple(score.shape) != tuple(mask.shape):
                got = "nothing" if score is None else f"shape {tuple(getattr(score, 'shape', ()))}"
                raise LTHError(
                    f"criterion {self.name} gave {got} for {name!r}; it must score every "
                    f"prunable weight, shape {tuple(mask.shape)}"
                )
            out[name] = score.detach()
        return out


#: Registered criteria by name.
CRITERIA: Registry[Criterion] = Registry(
    "criterion",
    sort=True,
    unknown="unknown {kind} {name!r}; choose one of {names} or name package.module:function",
)


def register_criterion(
    name: str,
    *,
    at_init: bool = False,
    rounds: int = 1,
    iterative: bool = False,
    description: str = "",
) -> Callable[[Callable], Callable]:
    """Decorator registering a scoring function as criterion ``name`` (``--criterion NAME``).

    The function takes by keyword only what it names among ``weights``, ``init``, ``masks``,
    ``model``, ``data`` and ``generator`` (see ``lth.pruning.criteria``) and returns
    ``{name: scores}``, one tensor shaped like each mask, higher kept. Registered, its name
    works as ``ExperimentConfig(criterion=name)`` in this process.

    Args:
        name: The criterion's name: new, not empty, without ``:`` (which names
            ``package.module:function``).
        at_init: ``False`` (the default): score the trained weights (as IMP does).
            ``True``: prune at initialisation; the function is given θ0 restricted by the
            current masks (all ones in one-shot pruning), and each level trains from θ0.
        rounds: Compute each mask in this many rounds, rescoring after each, on an exponential
            schedule (SynFlow: 100); default 1.
        iterative: With ``at_init``: ``False`` (the default) computes each level's mask in one
            shot from θ0 at that level's density; ``True`` prunes the previous level's mask
            further, scoring θ0 restricted by it.
        description: A one-line description (default: the function's docstring's first line).

    Returns:
        The decorator; it registers the function and returns it unchanged.

    Raises:
        LTHError: A bad name, ``rounds`` that is not a whole number >= 1, or (when
            decorating) a name already registered.

    Examples:
        >>> @register_criterion("doc_largest_gradient_free", at_init=True)
        ... def largest(weights, masks):
        ...     return {n: weights[n].abs() for n in masks}
        >>> "doc_largest_gradient_free" in criterion_names()
        True
        >>> del CRITERIA["doc_largest_gradient_free"]
    """
    if not isinstance(name, str) or not name.strip() or ":" in name:
        raise LTHError(f"criterion name must be a non-empty name without ':', got {name!r}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LTHError(f"rounds must be a whole number >= 1, got {rounds!r}")

    def decorator(function: Callable) -> Callable:
        doc = (function.__doc__ or "").strip().splitlines()
        what = description or (doc[0] if doc else "")
        criterion = Criterion(name, function, bool(at_init), rounds, bool(iterative))
        CRITERIA.add(name, criterion, what)
        return function

    return decorator


def criterion_names() -> list[str]:
    """Names of the registered criteria, sorted."""
    return CRITERIA.names()


def get_criterion(spec: str, trust: CodeTrust = NO_TRUST) -> Criterion:
    """A registered criterion, or a function named ``package.module:function``, imported only
    if ``trust`` allows it (:func:`lth.usercode.import_code`); its ``at_init``, ``rounds`` and
    ``iterative`` attributes are honoured."""
    if ":" not in spec:
        return CRITERIA.lookup(spec)
    function = import_code(spec, "criterion", trust)
    rounds = getattr(function, "rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise LTHError(f"criterion {spec}: its rounds attribute must be a whole number >= 1")
    at_init, iterative = (bool(getattr(function, a, False)) for a in ("at_init", "iterative"))
    criterion = Criterion(spec, function, at_init, rounds, iterative)
    criterion.wants()  # its signature is checked before anything trains
    return criterion


def model_holding(
    template: nn.Module, weights: Mapping[str, Tensor], masks: Mapping[str, Tensor], device
) -> nn.Module:
    """A copy of ``template`` on ``device`` holding ``weights`` with ``masks`` applied."""
    model = copy.deepcopy(template).to(device)
    state = {n: w.masked_fill(~masks[n].to(w.device), 0) if n in masks else w
             for n, w in weights.items()}  # fmt: skip
    model.load_state_dict(state, strict=False)
    return model


# ------------------------------------------------------------------------------- built-ins


@register_criterion("magnitude")
def magnitude(weights: Mapping[str, Tensor], masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """|w| of the trained weights: iterative magnitude pruning (Frankle & Carbin 2019)."""
    return {name: weights[name].abs() for name in masks}


# |θ0|: weights are θ0 here
register_criterion("magnitude_init", at_init=True, description="|θ0|: magnitude at init")(magnitude)


@register_criterion("random")
def random_scores(masks: Mapping[str, Tensor], generator: torch.Generator) -> dict[str, Tensor]:
    """Uniform random scores: random pruning with the criterion's per-layer or global counts."""
    return {name: torch.rand(m.shape, generator=generator) for name, m in masks.items()}


def _examples(data, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``EXAMPLES_PER_CLASS`` training examples of each class (fewer where a class has fewer),
    the first of each class in a random order drawn with ``generator``, kept in that order."""
    n = data.train_x.shape[0]
    if n == 0:
        raise LTHError("this criterion scores on training data, and the training set is empty")
    order = torch.randperm(n, generator=generator)
    labels = data.train_y.cpu()[order]
    rank = torch.zeros(n, dtype=torch.long)  # how many of its class come before it in order
    for c in range(data.num_classes):
        of_class = labels == c
        rank[of_class] = torch.arange(int(of_class.sum()))
    pick = order[rank < EXAMPLES_PER_CLASS].to(data.train_x.device)
    return data.train_x[pick], data.train_y[pick]


def _masked_parameters(model: nn.Module, masks: Mapping[str, Tensor]) -> list[Tensor]:
    params = dict(model.named_parameters())
    return [params[name] for name in masks]


@register_criterion("snip", at_init=True)
@register_criterion(
    "snip_iterative",
    at_init=True,
    iterative=True,
    description="SNIP's scores pruned level by level from the previous mask (de Jorge et al. "
    "2021, Progressive Skeletonization)",
)
def snip(
    model: nn.Module, masks: Mapping[str, Tensor], data, generator: torch.Generator
) -> dict[str, Tensor]:
    """SNIP's connection sensitivity |∂L/∂w ⊙ w| on a batch of training data at θ0 (Lee et al.
    2019, eq. 6; the normalisation by the sum does not change the ranking)."""
    model.eval()
    x, y = _examples(data, generator)
    ws = _masked_parameters(model, masks)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), ws)
    return {name: (g * w).abs() for name, g, w in zip(masks, grads, ws, strict=True)}


@register_criterion("grasp", at_init=True)
@register_criterion(
    "grasp_iterative",
    at_init=True,
    iterative=True,
    description="GraSP's scores pruned level by level from the previous mask",
)
def grasp(
    model: nn.Module, masks: Mapping[str, Tensor], data, generator: torch.Generator
) -> dict[str, Tensor]:
    """GraSP (Wang et al. 2020, eq. 8): S = -θ ⊙ Hg, the highest pruned, so the kept scores
    are θ ⊙ Hg; g and H of the loss at θ0 (softmax temperature 200, as the paper's code),
    over the surviving weights only."""
    model.eval()
    x, y = _examples(data, generator)
    ws = _masked_parameters(model, masks)
    m = [masks[name].to(w.device, w.dtype) for name, w in zip(masks, ws, strict=True)]
    loss = F.cross_entropy(model(x) / GRASP_TEMPERATURE, y)
    g = [gi.detach() * mi for gi, mi in zip(torch.autograd.grad(loss, ws), m, strict=True)]
    loss = F.cross_entropy(model(x) / GRASP_TEMPERATURE, y)
    grads = torch.autograd.grad(loss, ws, create_graph=True)
    gnorm = sum((gi * gg * mi).sum() for gi, gg, mi in zip(g, grads, m, strict=True))
    hg = torch.autograd.grad(gnorm, ws)
    return {name: w.detach() * h for name, w, h in zip(masks, ws, hg, strict=True)}


@register_criterion("synflow", at_init=True, rounds=SYNFLOW_ROUNDS)
@register_criterion(
    "synflow_iterative",
    at_init=True,
    rounds=SYNFLOW_ROUNDS,
    iterative=True,
    description="SynFlow's 100 rounds per level, each level from the previous mask",
)
def synflow(model: nn.Module, masks: Mapping[str, Tensor], data) -> dict[str, Tensor]:
    """SynFlow (Tanaka et al. 2020, Algorithm 1): with every weight replaced by |θ| (in float64,
    as R overflows float32) and an all-ones input, R = 1ᵀ(∏|θ|)1 is the summed output;
    the score is ∂R/∂θ ⊙ θ. Data-free: only the input's shape is read."""
    net = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        for t in net.state_dict().values():
            if t.is_floating_point():
                t.abs_()
    ws = _masked_parameters(net, masks)
    x = torch.ones(1, *data.input_shape, dtype=torch.float64, device=ws[0].device)
    grads = torch.autograd.grad(net(x).sum(), ws)
    return {name: (g * w).detach() for name, g, w in zip(masks, grads, ws, strict=True)}
