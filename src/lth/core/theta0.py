"""Where a study's starting weights come from: θ0 of each replicate and the fresh random weights
of the controls that need them (``reinit``, ``sign_keep``), drawn with an initialisation
scheme (:func:`lth.core.init.initialize`) or by the model's own code (``init = "model"``).

With the model's own code (the default for a user model, :func:`lth.config.resolve_init`):

* a factory (``package.module:function``, or a callable passed as ``model=``) is called with
  torch's global CPU generator seeded from the replicate's seed (under ``fork_rng``, so the
  caller's random state is left as it was): random initialisations differ between replicates,
  and a factory that loads a checkpoint gives every replicate the same θ0 (they then differ
  only in the order of their data);
* an ``nn.Module`` object is θ0 itself, the same for every replicate.

Fresh weights for the controls come from the factory called with another derived seed; when
the factory gives the same weights whatever the seed (it loads a checkpoint), and for a module
object, they are the architecture's own random initialisation: every submodule's
``reset_parameters()`` run under a seeded generator (so ``reinit`` of a pretrained network is
a randomly initialised network of its architecture).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lth.config import INIT_MODEL
from lth.core.init import initialize
from lth.errors import LTHError

__all__ = ["INIT_MODEL", "StartingWeights", "seeded_build"]

Weights = dict[str, Tensor]


def seeded_build(make: Callable[[], nn.Module], seed: int) -> nn.Module:
    """``make()`` with torch's global CPU generator seeded with ``seed``; the global random
    state is restored afterwards, so the caller's draws are unchanged.

    >>> from torch import nn
    >>> a = seeded_build(lambda: nn.Linear(3, 2), 7)
    >>> b = seeded_build(lambda: nn.Linear(3, 2), 7)
    >>> torch.equal(a.weight, b.weight)
    True
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        return make()


def _state(model: nn.Module) -> Weights:
    return {n: t.detach().cpu().clone() for n, t in model.state_dict().items()}


def _same(a: Weights, b: Weights) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)


class StartingWeights:
    """θ0 and fresh weights of one study's model, by seed.

    Args:
        scheme: An initialisation scheme (:data:`lth.core.init.INIT_SCHEMES`), drawn into a
            copy of ``template``; or ``"model"``: the model's own code (see the module).
        template: The study's model (any ``nn.Module``), never changed.
        make: The model's factory with no arguments, or ``None`` for a module object.

    Examples:
        >>> import torch
        >>> from torch import nn
        >>> start = StartingWeights("model", nn.Linear(4, 2), lambda: nn.Linear(4, 2))
        >>> a, b = start.theta0(1), start.theta0(2)
        >>> again = start.theta0(1)
        >>> torch.equal(a["weight"], again["weight"]), torch.equal(a["weight"], b["weight"])
        (True, False)
    """

    def __init__(
        self, scheme: str, template: nn.Module, make: Callable[[], nn.Module] | None = None
    ):
        self.scheme = scheme
        self.template = template
        self.make = make
        self._fixed: bool | None = None  # whether the factory ignores the seed (a checkpoint)

    def theta0(self, seed: int) -> Weights:
        """θ0 of the replicate whose seed is ``seed`` (weights and buffers)."""
        if self.scheme != INIT_MODEL:
            return self.fresh(seed)
        if self.make is None:
            return _state(self.template)
        return _state(seeded_build(self.make, seed))

    def fresh(self, seed: int) -> Weights:
        """A new random initialisation of the model, drawn from ``seed``."""
        if self.scheme != INIT_MODEL:
            model = copy.deepcopy(self.template)
            initialize(model, self.scheme, torch.Generator().manual_seed(seed))
            return _state(model)
        if self.make is not None and not self.factory_is_fixed():
            return _state(seeded_build(self.make, seed))
        return self.reset(seed)

    def factory_is_fixed(self) -> bool:
        """Whether the factory builds the same weights whatever the seed (it loads them)."""
        if self._fixed is None:
            assert self.make is not None
            a, b = (_state(seeded_build(self.make, s)) for s in (0, 1))
            self._fixed = _same(a, b)
        return self._fixed

    def reset(self, seed: int) -> Weights:
        """The architecture's own random initialisation: every submodule's
        ``reset_parameters()`` under the global CPU generator seeded with ``seed``."""
        model = copy.deepcopy(self.template)
        for name, module in model.named_modules():
            owns = any(True for _ in module.parameters(recurse=False))
            if owns and not callable(getattr(module, "reset_parameters", None)):
                raise LTHError(
                    f"fresh random weights for a control come from each module's "
                    f"reset_parameters(), and module {name or 'the model'!r} "
                    f"({type(module).__name__}) has none; add one, or name a scheme with --init "
                    "(init= in Python)"
                )
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.default_generator.manual_seed(seed)
            for module in model.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        return _state(model)
