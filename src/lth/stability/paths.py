"""The path between two networks' weights (Frankle et al. 2020): the line
(1 - α) θ_A + α θ_B, the errors along it, and the instability they give.

:class:`PathEvaluator` measures the test error and the error on a fixed training subset at
every α with the Trainer's own evaluation, several α at once where the stacked engine can run
the model; networks with BatchNorm get their running statistics recomputed at every α on the
same fixed training batches (:mod:`lth.stability.measure` trains the copies whose paths these are).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from lth.config import TrainConfig
from lth.core.engine import supports
from lth.core.training import TicketJob, Trainer
from lth.pruning.masks import MaskSet

__all__ = [
    "PathEvaluator",
    "alphas",
    "batchnorms",
    "error",
    "instability",
    "interpolate",
    "stackable",
]

TRAIN_SUBSET = 10_000  # training images the train error is measured on (a fixed subset)
BN_BATCHES = 50  # training batches that recompute BatchNorm statistics at each α


def alphas(points: int) -> list[float]:
    """``points`` evenly spaced interpolation coefficients from 0 to 1 (both exactly)."""
    return [i / (points - 1) for i in range(points)]


def instability(errors: Sequence[float]) -> float:
    """Frankle et al. 2020, Definition 2: max over α of err(α) - mean(err(0), err(1)), for the
    errors at evenly spaced α from 0 to 1 (percent in, percent out)."""
    return max(errors) - (errors[0] + errors[-1]) / 2


def error(accuracy: float) -> float:
    """Error in percent from an accuracy in percent (rounded off float noise, 1e-10)."""
    return round(100.0 - accuracy, 10)


def interpolate(a: dict[str, Tensor], b: dict[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """(1 - α) a + α b for every floating-point tensor (exactly a at 0 and b at 1); integer
    buffers (BatchNorm's batch count) are a's."""
    return {
        n: (1 - alpha) * t + alpha * b[n] if t.is_floating_point() else t.clone()
        for n, t in a.items()
    }


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class PathEvaluator:
    """Errors (percent) on the test set and a fixed training subset along the line between two
    networks, with the Trainer's own evaluation (so α = 0 and 1 give the copies' own errors)."""

    def __init__(self, template: nn.Module, data, config: TrainConfig, seed: int, device):
        self.template, self.data, self.config, self.device = template, data, config, device
        n = data.train_x.shape[0]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        subset = order[:TRAIN_SUBSET].to(data.train_x.device)
        self.train_x = data.train_x.index_select(0, subset)
        self.train_y = data.train_y.index_select(0, subset)
        self.batchnorm = bool(batchnorms(template))
        b = config.batch_size
        bn = order[: BN_BATCHES * b].to(data.train_x.device)
        self.bn_batches = [
            data.train_x.index_select(0, bn[i : i + b]) for i in range(0, len(bn), b)
        ]
        self.stack = 1 if self.batchnorm or not stackable(template) else 16

    def errors(
        self, a: dict[str, Tensor], b: dict[str, Tensor], masks: MaskSet, alphas: Sequence[float]
    ) -> list[tuple[float, float]]:
        """(train error, test error) at each α."""
        out: list[tuple[float, float]] = []
        for start in range(0, len(alphas), self.stack):
            chunk = alphas[start : start + self.stack]
            jobs = [TicketJob(interpolate(a, b, x), masks, 0, f"alpha/{x}") for x in chunk]
            trainer = Trainer(self.template, jobs, self.data, self.config, self.device)
            if self.batchnorm:
                self._recompute_statistics(trainer)
            _, train_acc = trainer.evaluate(self.train_x, self.train_y)
            _, test_acc = trainer.evaluate(self.data.test_x, self.data.test_y)
            out += [(error(tr), error(te)) for tr, te in zip(train_acc, test_acc)]
        return out

    @torch.no_grad()
    def _recompute_statistics(self, trainer: Trainer) -> None:
        """BatchNorm running statistics of the (one) network, averaged over the fixed batches."""
        norms = batchnorms(trainer.model.module)
        momenta = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
        trainer.model.train(True)
        for x in self.bn_batches:
            trainer.model.forward(x, shared=True)
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum


def stackable(template: nn.Module) -> bool:
    """Whether the stacked engine trains several copies of ``template`` together."""
    return supports(template)
