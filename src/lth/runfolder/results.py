"""One trained network's results (:class:`LevelResult`), and how an experiment hands them on:
the :class:`Store` protocol (a run folder, :class:`lth.runfolder.runs.RunFolder`, or memory) and
the :data:`Hook` called at every evaluation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from torch import Tensor

from lth.core.training import History, Trainer
from lth.pruning.masks import MaskSet, count_remaining


@dataclass
class LevelResult:
    """One trained network: a branch (ticket or control) of one replicate at one level.

    ``run_experiment`` returns one for every network a study trained.

    Attributes:
        branch (str): ``"ticket"``, or the control's name (``"reinit"``, ``"random_prune"``,
            ...; see ``ExperimentConfig.controls``).
        replicate (int): The replicate, from 0.
        level (int): The pruning level, 0 for the dense network.
        masks (dict[str, torch.Tensor]): The masks it trained with, ``{name: bool tensor}``.
        init (dict[str, torch.Tensor]): Its starting weights, masked: θ0, the rewound θk,
            the previous level's final weights (fine-tuning), fresh ones, or a control's.
        final (dict[str, torch.Tensor]): Its weights at the end of training.
        history (lth.core.training.History): Its evaluations during training (losses, accuracies
            in percent, the early-stop iteration).
        snapshots (dict[int, dict[str, torch.Tensor]]): Weights kept during training by
            iteration (level 0 keeps θk for late rewinding); empty otherwise.
        exclude (tuple[str, ...]): Masked layers left out of pruning (``config.exclude``);
            ``weights_remaining`` does not count them.
        dead_units (dict[str, int]): Units per layer that ``lth.pruning.shrink`` removes from this
            network; ``{}`` when it cannot shrink it.
        cost (tuple[int, int] | None): Its parameter count and FLOPs per example
            (``lth.pruning.cost``), the ``params`` and ``flops`` of summary.csv; None: unknown.

    Examples:
        >>> import torch
        >>> from lth.core.training import History
        >>> masks = {"fc.weight": torch.tensor([[True, False], [True, True]]),
        ...          "out.weight": torch.ones(1, 2, dtype=torch.bool)}
        >>> weights = {name: torch.ones(mask.shape) for name, mask in masks.items()}
        >>> history = History(iteration=[0, 100], train_loss=[2.3, 0.3], val_loss=[2.3, 0.4],
        ...                   val_acc=[10.0, 90.0], test_loss=[2.3, 0.5], test_acc=[9.8, 89.5])
        >>> result = LevelResult("ticket", 0, 1, masks, weights, weights, history,
        ...                      exclude=("out.weight",))
        >>> result.weights_remaining                # out.weight is left out
        75.0
        >>> result.summary()
        {'branch': 'ticket', 'replicate': 0, 'level': 1, 'weights_remaining': 75.0,
         'test_acc': 89.5, 'early_stop_iteration': 100, 'test_acc_at_early_stop': 89.5,
         'best_val_acc': 90.0, 'diverged_at': None}
    """

    branch: str
    replicate: int
    level: int
    masks: MaskSet
    init: dict[str, Tensor]
    final: dict[str, Tensor]
    history: History
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    exclude: tuple[str, ...] = ()  # masked layers left out of pruning (``config.exclude``)
    # units per layer that lth.pruning.shrink removes from this network ({} when it cannot shrink
    # it)
    dead_units: dict[str, int] = field(default_factory=dict)
    # (parameters, FLOPs per example) of the ticket shrunk (lth.pruning.cost); None: unknown
    cost: tuple[int, int] | None = None

    @property
    def weights_remaining(self) -> float:
        """Percent of the prunable weights still kept by the mask: layers left out of pruning
        (``exclude``) are not counted, the papers' convention (Frankle & Carbin 2019; Frankle
        et al. 2020 report ResNet-20's sparsity over its pruned layers). This is the
        ``weights_remaining`` of summary.csv, metrics.csv, the plots and the reports."""
        counts = count_remaining({n: m for n, m in self.masks.items() if n not in self.exclude})
        total = sum(t for _, t in counts.values())
        return 100.0 * sum(k for k, _ in counts.values()) / total if total else 100.0

    def layer_remaining(self) -> dict[str, float]:
        """Percent of weights kept, per prunable layer."""
        return {n: 100.0 * k / t for n, (k, t) in count_remaining(self.masks).items()}

    def summary(self) -> dict:
        """The per-level statistics: a row of summary.csv."""
        return {
            "branch": self.branch,
            "replicate": self.replicate,
            "level": self.level,
            "weights_remaining": self.weights_remaining,
            **self.history.summary(),
            **({} if self.cost is None else {"params": self.cost[0], "flops": self.cost[1]}),
        }


class Store(Protocol):
    """Where an experiment keeps finished levels and checkpoints (the run folder, or memory)."""

    def load_level(self, level: int) -> list[LevelResult] | None: ...
    def save_level(self, level: int, results: list[LevelResult]) -> None: ...
    def load_checkpoint(self, level: int, group: int) -> dict | None: ...
    def save_checkpoint(self, level: int, group: int, trainer: Trainer) -> None: ...
    def save_unit(self, level: int, group: int, state: dict) -> None: ...


Hook = Callable[[int, int, Trainer], None]
