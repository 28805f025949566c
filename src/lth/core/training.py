"""Masked training of one or many tickets of the same architecture, with periodic evaluation.

:class:`Trainer` trains K tickets together in one :class:`~lth.core.engine.StackedModel`. Each
ticket has its own initial weights, mask, data order (its own seeded generator) and optimizer
state; the results equal training them one at a time, up to float rounding. It is the only
place that knows about optimizers, schedules and batches.

Masking: pruned weights start at exactly 0 and their gradients are multiplied by the mask as
the engine writes them (before the optimizer step), so their Adam moments / SGD momentum stay
0 and the fused update leaves them at exactly 0 (weight decay of 0 is 0). Nothing is masked
by magnitude or sign. A layer on sparse kernels holds no pruned weight at all during a level:
its survivors, their gradients and their optimizer state are compact (see
:mod:`lth.core.engine`); checkpoints and exports see the dense layout.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.config import TrainConfig
from lth.core.engine import ModuleModel, StackedModel, build
from lth.core.kernels import compute_dtype
from lth.core.optim import FusedOptimizer, learning_rate
from lth.data.augment import AUGMENTATIONS
from lth.errors import LTHError

MaskSet = dict[str, Tensor]
CHECKPOINT_FORMAT = 2  # 2: one flat optimizer state, ticket names
#: the most memory the evaluation sets may take again, feature-major (:meth:`Trainer.evaluate`)
FEATURE_MAJOR_BYTES = 64 << 20  # MNIST's validation and test sets fit, a 60k training set not


@dataclass
class TicketJob:
    """One ticket to train: its starting weights (usual shapes), its mask and its data seed.

    ``name`` identifies the ticket in checkpoints (e.g. ``"reinit/2"``), so that a checkpoint
    is never loaded into other tickets.
    """

    init: Mapping[str, Tensor]
    masks: MaskSet
    seed: int
    name: str = ""


@dataclass
class History:
    """Evaluations of one ticket during training (accuracies in percent)."""

    iteration: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    diverged_at: int | None = None

    def early_stop_index(self) -> int | None:
        """Index of the evaluation with the lowest validation loss (the first one on a tie),
        the level's untrained start excluded (iteration 0, or k for a late-rewound level);
        None without a finite validation loss (no validation set): there is no early stop.

        Frankle & Carbin 2019 (section 2): the early-stop iteration is the iteration of
        minimum validation loss; the test set is only read there, never used to choose.
        """
        candidates = [i for i, v in enumerate(self.val_loss) if i > 0 and v == v]
        if not candidates:
            return None
        return min(candidates, key=lambda i: self.val_loss[i])

    def summary(self) -> dict[str, float | int | None]:
        """Final and early-stop figures: what a level reports (early stop None without a
        validation set)."""
        if not self.iteration:
            return {}
        es = self.early_stop_index()
        vals = [v for v in self.val_acc if v == v]
        return {
            "test_acc": self.test_acc[-1],
            "early_stop_iteration": None if es is None else self.iteration[es],
            "test_acc_at_early_stop": None if es is None else self.test_acc[es],
            "best_val_acc": max(vals) if vals else float("nan"),
            "diverged_at": self.diverged_at,
        }


@dataclass
class TrainResult:
    """A trained ticket: final weights, evaluation history and any saved intermediate weights."""

    final: dict[str, Tensor]
    history: History
    snapshots: dict[int, dict[str, Tensor]] = field(default_factory=dict)


def _stack_masks(model: StackedModel | ModuleModel, jobs: Sequence[TicketJob]) -> dict[str, Tensor]:
    names = list(jobs[0].masks)
    for job in jobs:
        if list(job.masks) != names:
            raise LTHError("all tickets trained together must mask the same parameters")
        for name, m in job.masks.items():
            if name not in model.shapes or m.shape != model.shapes[name]:
                raise LTHError(f"mask {name} does not fit the model's parameters")
    return {
        name: model.to_engine_layout(name, [job.masks[name].float() for job in jobs])
        for name in names
    }


def check_batch_size(batch_size: int, data) -> int:
    """The number of training examples, or LTHError when one batch needs more than that."""
    n_train = int(data.train_x.shape[0])
    if n_train < batch_size:
        raise LTHError(
            f"batch size {batch_size} exceeds the {n_train} training examples; use "
            f"--batch-size {n_train} or less (or a smaller --val-size)"
        )
    return n_train


class Trainer:
    """Trains a list of tickets of one architecture together; resumable via state_dict.

    ``start_iteration`` k: train steps k..T-1 (evaluations from k to T) with the schedule as
    it stands at step k (Frankle et al. 2020, "Linear Mode Connectivity and the Lottery
    Ticket Hypothesis", Algorithm 1: train m ⊙ θk from step k to T; open_lth likewise
    fast-forwards the schedule to the start step). The data order is fast-forwarded too: each
    ticket's generator first draws what steps 0..k-1 would have drawn (the epochs' orders
    and any augmentation), so step k gets the batch that a run from step 0 with the same seed
    gets there, and epoch boundaries stay at multiples of the steps per epoch.
    """

    def __init__(
        self,
        template: nn.Module,
        jobs: Sequence[TicketJob],
        data,
        config: TrainConfig,
        device: torch.device | str = "cpu",
        snapshot_at: Sequence[int] = (),
        start_iteration: int = 0,
    ):
        if not jobs:
            raise LTHError("nothing to train: the job list is empty")
        if not 0 <= start_iteration <= config.iterations:
            raise LTHError(
                f"start iteration {start_iteration} is outside the {config.iterations} "
                "training iterations"
            )
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.model: StackedModel | ModuleModel = build(template, len(jobs), self.device)
        for i, job in enumerate(jobs):
            self.model.load(i, job.init)
        model = self.model
        masks = _stack_masks(model, jobs)
        # 1 for unmasked parameters (e.g. biases)
        self.mask_flat = model.flatten(masks, 1.0)
        self.masks = {n: v for n, v in model.views(self.mask_flat).items() if n in masks}
        model.masks = self.masks  # the engine masks each gradient as it writes it
        with torch.no_grad():
            model.flat.masked_fill_(self.mask_flat == 0, 0.0)
        # sparse layers: from here on their surviving weights are compact (model.live_flat)
        model.use_kernels(getattr(config, "kernels", "auto"))
        model.compute_dtype = compute_dtype(getattr(config, "precision", "fp32"), self.device)
        self.optimizer = FusedOptimizer(
            [model.live_flat],
            config.optimizer,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        if model.compact_index is not None:  # Adam/SGD over the compact weights alone
            self.optimizer.compact(model.compact_index, model.flat.numel())
        self.names = [job.name for job in jobs]
        self.generators = [torch.Generator().manual_seed(job.seed) for job in jobs]
        n_train = check_batch_size(config.batch_size, data)
        self.steps_per_epoch = n_train // config.batch_size
        augmentation = getattr(data, "augmentation", None) if config.augment else None
        if augmentation:
            self.augmentation = AUGMENTATIONS[augmentation]
            mean, std = getattr(data, "mean", None), getattr(data, "std", None)
            # pad with black in the raw images, as torchvision's RandomCrop does
            self.pad_value = [-m / s for m, s in zip(mean, std)] if mean and std else 0.0
        else:
            self.augmentation = None
        self.order: Tensor | None = None
        self.start = self.iteration = int(start_iteration)
        self._fast_forward(self.start)
        self.loss_sum = torch.zeros(len(jobs), device=self.device)
        self.loss_steps = 0
        self.histories = [History() for _ in jobs]
        # per ticket: (history index, weights of all tickets there) whose test was skipped
        self._deferred: list[list[tuple[int, Tensor]]] = [[] for _ in jobs]
        self.snapshot_at = sorted(set(int(s) for s in snapshot_at))
        self.snapshots: dict[int, list[dict[str, Tensor]]] = {}
        self.eval_chunk = _eval_chunk(template, data.train_x.shape[1:], len(jobs))
        self._features: dict[int, tuple[Tensor, int, list[Tensor]]] = {}  # _feature_major

    @property
    def k(self) -> int:
        """How many tickets train together."""
        return self.model.k

    def _draw_order(self) -> None:
        n = self.data.train_x.shape[0]
        self.order = torch.stack([torch.randperm(n, generator=g) for g in self.generators]).to(
            self.device
        )

    def _fast_forward(self, steps: int) -> None:
        """Draw from the generators what the first ``steps`` steps would have drawn."""
        for it in range(steps):
            if it % self.steps_per_epoch == 0:
                self._draw_order()
            if self.augmentation is not None:
                for g in self.generators:
                    self.augmentation[0](self.config.batch_size, g)

    def _batch(self) -> tuple[Tensor, Tensor]:
        position = self.iteration % self.steps_per_epoch
        if position == 0 or self.order is None:
            self._draw_order()
        b = self.config.batch_size
        idx = self.order[:, position * b : (position + 1) * b].reshape(-1)
        draw = getattr(self.data, "train_batch", None)  # uint8 gather, if the data has one
        x = draw(idx) if draw is not None else self.data.train_x.index_select(0, idx)
        y = self.data.train_y.index_select(0, idx)
        if self.augmentation is not None:
            draw, apply = self.augmentation
            draws = [draw(b, g) for g in self.generators]
            x = apply(x, *(torch.cat(parts) for parts in zip(*draws)), fill=self.pad_value)
        return x.view(self.k, b, *x.shape[1:]), y.view(self.k, b)

    def step(self) -> None:
        """One training step for every ticket."""
        x, y = self._batch()
        losses = self.model.loss_and_grad(x, y)  # gradients masked
        lr = learning_rate(
            self.config.lr,
            self.iteration,
            self.config.milestones,
            self.config.gamma,
            self.config.warmup,
        )
        self.optimizer.step([self.model.live_grad_flat], lr)
        self.loss_sum += losses
        self.loss_steps += 1
        self.iteration += 1

    @torch.no_grad()
    def evaluate(self, x: Tensor, y: Tensor) -> tuple[list[float], list[float]]:
        """Mean loss and accuracy (percent) of every ticket on (x, y), in large batches."""
        k, n = self.k, x.shape[0]
        if n == 0:
            nan = [float("nan")] * k
            return nan, nan
        loss = torch.zeros(k, device=self.device, dtype=torch.float64)
        correct = torch.zeros(k, device=self.device, dtype=torch.int64)
        self.model.train(False)
        features = self._feature_major(x)
        for i, start in enumerate(range(0, n, self.eval_chunk)):
            ys = y[start : start + self.eval_chunk]
            if features is None:
                logits = self.model.forward(x[start : start + self.eval_chunk], shared=True)
            else:
                logits = self.model.forward(features[i], shared=True, feature_major=True)
            target = ys.unsqueeze(0).expand(k, -1)
            loss += F.cross_entropy(logits, target, reduction="none").sum(1, dtype=torch.float64)
            # the classes made contiguous first: the same first maximum, 5x faster on CPU
            correct += (logits.transpose(1, 2).contiguous().argmax(2) == target).sum(1)
        self.model.train(True)
        return (loss / n).tolist(), (correct.double() * 100.0 / n).tolist()

    def _feature_major(self, x: Tensor) -> list[Tensor] | None:
        """``x``'s evaluation chunks as contiguous ``(features, batch)`` matrices, made once
        per evaluation set and kept, where the model's first product is sparse (it reads
        them so, and transposing each chunk at each evaluation cost as much as the product);
        None otherwise, or when they would take over :data:`FEATURE_MAJOR_BYTES`."""
        if not getattr(self.model, "sparse_first", False):
            return None
        if x.numel() * x.element_size() > FEATURE_MAJOR_BYTES:
            return None
        n, step = x.shape[0], self.eval_chunk
        kept = self._features.get(id(x))
        if kept is None or kept[0] is not x or kept[1] != step:
            chunks = [x[s : s + step].reshape(min(step, n - s), -1).t().contiguous()
                      for s in range(0, n, step)]  # fmt: skip
            kept = self._features[id(x)] = (x, step, chunks)  # x kept: its id stays its own
        return kept[2]

    def _test_due(self) -> bool:
        """Whether the test set is evaluated now (else later, from a copy, if ever needed)."""
        every = getattr(self.config, "test_every", 0)
        return not every or self.iteration % every == 0 or self.iteration >= self.config.iterations

    def _record(self) -> None:
        d = self.data
        val_loss, val_acc = self.evaluate(d.val_x, d.val_y)
        tested = self._test_due()
        if tested:
            test_loss, test_acc = self.evaluate(d.test_x, d.test_y)
        else:
            test_loss = test_acc = [float("nan")] * self.k
        trained = self.loss_steps > 0
        if trained:
            train_loss = (self.loss_sum / self.loss_steps).tolist()
        else:
            train_loss = [float("nan")] * self.k
        self.loss_sum.zero_()
        self.loss_steps = 0
        if not tested:
            self.model.write_dense()  # the copy is kept in the dense layout (checkpoints)
        copy = None if tested else self.model.flat.detach().clone()
        for i, h in enumerate(self.histories):
            if h.diverged_at is not None:
                continue
            # judged on training and validation only: the test set decides nothing
            judged = [train_loss[i]] if trained else []
            judged += [val_loss[i]] if d.val_x.shape[0] else []
            if not all(math.isfinite(v) for v in judged):
                h.diverged_at = self.iteration
                # its last recorded point is now its final one: its test figures are needed
                ends = (len(h.iteration) - 1, h.early_stop_index())
                self._deferred[i] = [p for p in self._deferred[i] if p[0] in ends]
                continue
            h.iteration.append(self.iteration)
            h.train_loss.append(train_loss[i])
            h.val_loss.append(val_loss[i])
            h.val_acc.append(val_acc[i])
            h.test_loss.append(test_loss[i])
            h.test_acc.append(test_acc[i])
            self._defer(i, h, copy)

    def _defer(self, i: int, h: History, copy: Tensor | None) -> None:
        """Keep (a reference to) the weights of ticket ``i``'s points whose test figures are
        skipped now but may be reported later: its best validation loss so far (the early
        stop, if nothing beats it) and its latest point (its final one, should it diverge)."""
        index = len(h.iteration) - 1
        best = h.early_stop_index()
        keep = [p for p in self._deferred[i] if p[0] == best]
        if copy is not None:
            keep.append((index, copy))
        self._deferred[i] = keep

    @torch.no_grad()
    def _resolve_deferred(self) -> None:
        """Evaluate the test set on the kept weights of the points that became the early stop
        or a diverged ticket's final point; identical to evaluating it there and then."""
        needed: dict[int, list[tuple[int, int]]] = {}
        copies: dict[int, Tensor] = {}
        for i, h in enumerate(self.histories):
            wanted = {h.early_stop_index(), len(h.iteration) - 1}
            for index, copy in self._deferred[i]:
                if index in wanted and h.test_acc[index] != h.test_acc[index]:
                    needed.setdefault(id(copy), []).append((i, index))
                    copies[id(copy)] = copy
            self._deferred[i] = []
        if not needed:
            return
        self.model.write_dense()
        current = self.model.flat.detach().clone()
        for key, points in needed.items():
            self.model.flat.detach().copy_(copies[key])
            self.model.read_dense()
            test_loss, test_acc = self.evaluate(self.data.test_x, self.data.test_y)
            for i, index in points:
                self.histories[i].test_loss[index] = test_loss[i]
                self.histories[i].test_acc[index] = test_acc[i]
        self.model.flat.detach().copy_(current)
        self.model.read_dense()

    def _snapshot(self) -> None:
        if self.iteration in self.snapshot_at and self.iteration not in self.snapshots:
            self.snapshots[self.iteration] = [self.model.export(i) for i in range(self.k)]

    def run(
        self,
        callback: Callable[[Trainer], None] | None = None,
        stop_at: int | None = None,
    ) -> list[TrainResult] | None:
        """Train to the configured iteration count (or pause at ``stop_at``).

        ``callback(trainer)`` is called after every evaluation: progress bars and
        checkpoints hook in there. Returns the results when training is complete.
        """
        total = self.config.iterations
        every = self.config.eval_every
        if self.iteration == self.start and not self.histories[0].iteration:
            self._snapshot()
            self._record()
            if callback:
                callback(self)
        while self.iteration < total:
            if stop_at is not None and self.iteration >= stop_at:
                return None
            if all(h.diverged_at is not None for h in self.histories):
                break
            self.step()
            self._snapshot()
            if self.iteration % every == 0 or self.iteration == total:
                self._record()
                if callback:
                    callback(self)
        return self.results()

    def results(self) -> list[TrainResult]:
        """Final weights, histories and snapshots of every ticket."""
        self._resolve_deferred()
        return [
            TrainResult(
                final=self.model.export(i),
                history=self.histories[i],
                snapshots={it: snaps[i] for it, snaps in self.snapshots.items()},
            )
            for i in range(self.k)
        ]

    def state_dict(self) -> dict:
        """Everything needed to continue this training bit-identically (in the dense layout,
        whatever the kernels)."""
        self.model.write_dense()
        return {
            "format": CHECKPOINT_FORMAT,
            "tickets": self.names,
            "start": self.start,
            "iteration": self.iteration,
            "params": {n: p.detach().clone() for n, p in self.model.params.items()},
            "buffers": {n: b.clone() for n, b in getattr(self.model, "buffers", {}).items()},
            "optimizer": self.optimizer.state_dict(),
            "generators": [g.get_state() for g in self.generators],
            "order": None if self.order is None else self.order.clone(),
            "loss_sum": self.loss_sum.clone(),
            "loss_steps": self.loss_steps,
            "histories": [vars(h).copy() for h in self.histories],
            "deferred": [list(d) for d in self._deferred],  # copies never change: shared
            "snapshots": self.snapshots,
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise LTHError(
                "this checkpoint was written by another version of lth; "
                "delete the run's .lth folder to redo the unfinished level"
            )
        if state["tickets"] != self.names or state.get("start", 0) != self.start:
            raise LTHError(
                "this checkpoint holds other tickets (or another start iteration) than the "
                "ones being trained; delete the run's .lth folder to redo the unfinished level"
            )
        self.iteration = int(state["iteration"])
        for n, p in self.model.params.items():
            p.copy_(state["params"][n])
        self.model.read_dense()
        for n, b in getattr(self.model, "buffers", {}).items():
            b.copy_(state["buffers"][n])
        self.optimizer.load_state_dict(state["optimizer"])
        for g, s in zip(self.generators, state["generators"], strict=True):
            g.set_state(s)
        self.order = None if state["order"] is None else state["order"].to(self.device)
        self.loss_sum.copy_(state["loss_sum"])
        self.loss_steps = int(state["loss_steps"])
        self.histories = [History(**h) for h in state["histories"]]
        self._deferred = [
            [(int(i), c.to(self.device)) for i, c in d]
            for d in state.get("deferred", [[] for _ in self.histories])
        ]
        self.snapshots = state["snapshots"]


def _eval_chunk(template: nn.Module, input_shape: torch.Size, k: int) -> int:
    """Evaluation batch size that keeps the largest activation of all K tickets near 4 MB.

    Small enough to stay in cache: measured on LeNet-300-100, LeNet-5 and Conv-2, chunks of
    this size evaluate 1.2-2.5x faster than chunks 16 times larger.
    """
    peak = input_shape.numel()
    if isinstance(template, nn.Sequential):
        # in evaluation mode: BatchNorm takes a batch of one, and no running statistic moves
        modes = {m: m.training for m in template.modules()}
        template.eval()
        try:
            with torch.no_grad():
                h = torch.zeros(1, *input_shape)
                for layer in template.children():
                    h = layer(h)
                    peak = max(peak, h.numel())
        finally:
            for m, mode in modes.items():
                m.training = mode
    else:
        peak *= 64  # a conservative guess for the widest activation of an arbitrary model
    return max(16, min(10_000, (1 << 20) // (k * peak)))


def train(
    model: nn.Module,
    masks: MaskSet,
    data,
    config: TrainConfig,
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train one masked model from its current weights; the model's weights are updated too."""
    job = TicketJob(init=model.state_dict(), masks=masks, seed=seed)
    result = Trainer(model, [job], data, config, device).run()
    assert result is not None
    model.load_state_dict(result[0].final, strict=False)
    return result[0]
