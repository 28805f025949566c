"""The iterative-pruning experiment: levels, reset modes and controls. Knows nothing about files.

Level 0 trains the dense network from θ0, once per replicate: the ticket alone. Level L >= 1
prunes the ticket's trained weights of level L-1, resets the survivors (rewind to θ0 or θk,
fine-tune, or reinitialise) and trains again. From level 1 on the controls train with the
ticket's exact sparsity: ``reinit`` (the ticket's own mask, fresh random weights) and
``random_prune`` (a random mask with the same per-layer counts, the ticket's starting weights).
At level 0 they would be the dense network again (``random_prune``: the ticket itself;
``reinit``: one more dense seed), so they do not train there
(:func:`lth.runfolder.layout.level_branches`). All branches and replicates of a level train
together in the stacked engine, in groups that share a schedule.

Schedules (:meth:`Experiment.schedule`): with late rewinding to step k (Frankle et al. 2020,
"Linear Mode Connectivity and the Lottery Ticket Hypothesis", Algorithm 1) the ticket and the
random-pruning control of a level >= 1 start from θk (masked) and train from step k to T with
the schedule as it stood at step k, and with the data order at step k of the level's own
data-order seed (as if the level had trained from step 0; open_lth likewise skips the first k
batches of its order); the reinit control starts from fresh weights and trains the whole
schedule 0..T. Fine-tuning (Renda et al. 2020) trains the ticket and the random-pruning
control at the schedule's final learning rate; the reinit control gets the full schedule.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lth.config import ExperimentConfig, TrainConfig, resolve_init
from lth.core.engine import supports as engine_supports
from lth.core.models import model_maker
from lth.core.theta0 import StartingWeights
from lth.core.training import TicketJob, Trainer
from lth.errors import LTHError
from lth.pruning.controls import CONTROLS, ControlInput, check_controls
from lth.pruning.cost import network_cost
from lth.pruning.masks import MaskSet, masked_weights, ones_mask, prunable_parameters
from lth.pruning.policy import PruningPolicy, derive_seed, level_train_config, schedule
from lth.pruning.shrink import dead_units
from lth.runfolder.layout import level_branches
from lth.runfolder.results import Hook, LevelResult, Store
from lth.usercode import NO_TRUST, CodeTrust, check_config, names_code


@dataclass
class Unit:
    """One training group of a level, what an executor trains (:mod:`lth.study.executors`): its
    jobs as planned ``(branch, replicate, TicketJob)``, all on one schedule."""

    level: int
    index: int  # the group's number within the level (its checkpoint's)
    start: int
    train_config: TrainConfig
    jobs: list
    snapshot_at: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        """E.g. ``level 1 group 0 (ticket/0, reinit/0)``: how messages name the unit."""
        names = ", ".join(f"{branch}/{r}" for branch, r, _ in self.jobs)
        return f"level {self.level} group {self.index} ({names})"


class MemoryStore:
    """Keeps nothing: every level is trained, nothing is checkpointed."""

    def load_level(self, level: int) -> list[LevelResult] | None:
        return None

    def save_level(self, level: int, results: list[LevelResult]) -> None:
        pass

    def load_checkpoint(self, level: int, group: int) -> dict | None:
        return None

    def save_checkpoint(self, level: int, group: int, trainer: Trainer) -> None:
        pass

    def save_unit(self, level: int, group: int, state: dict) -> None:
        pass


class Experiment:
    """Runs the level loop of one study on one dataset and device.

    ``model`` overrides ``config.model``: any ``nn.Module`` (used as the template that every
    ticket copies) or a factory ``f(input_shape, num_classes)``. ``config.model`` and
    ``config.criterion`` may name code as ``package.module:function``: it is imported only if
    the caller's ``trust`` allows it (default: none; ``CodeTrust.of(config)`` for a config
    built in Python, see :mod:`lth.usercode`); an executor's workers get the same ``trust``.
    """

    user_loop = None  # a lth.study.userloop.UserLoop trains the levels instead of the engine

    def __init__(
        self,
        config: ExperimentConfig,
        data,
        device: torch.device | str = "cpu",
        model: nn.Module | Callable[..., nn.Module] | None = None,
        *,
        trust: CodeTrust = NO_TRUST,
    ):
        # θ0: a user model's own weights unless init names a scheme (lth.core.theta0)
        config = resolve_init(config, user_model=model is not None or names_code(config.model))
        self.config = config
        self.data = data
        self.device = torch.device(device)
        self.trust = trust
        check_config(config, trust, given=() if model is None else ("model",))
        check_controls(config.controls, config.granularity)
        shape, classes = tuple(data.input_shape), data.num_classes
        self.model_from_config = model is None  # an executor's workers can build it alike
        make = model_maker(config.model if model is None else model, shape, classes, trust)
        if make is not None:
            model = make()
        self.template = model.cpu()
        self.starting = StartingWeights(config.init, self.template, make)
        self.train_config = config.train_config(data.train_x.shape[0])
        self.prunable = prunable_parameters(
            self.template, config.prune_types, patterns=config.prune_patterns
        )
        if not self.prunable:
            how = config.prune_patterns or config.prune_types
            raise LTHError(f"no parameter of the model matches {', '.join(how)}; nothing to prune")
        names = set(self.prunable)
        for name in config.exclude:
            if name not in names:
                raise LTHError(
                    f"cannot leave {name!r} unpruned: the model's prunable weights are "
                    f"{', '.join(self.prunable)}"
                )
        self.policy = PruningPolicy(config, self.template, data, self.device, trust)
        self.output, self.criterion = self.policy.output, self.policy.criterion

    def fresh_weights(self, *keys: object) -> dict[str, Tensor]:
        """A new random initialisation of the model (weights and buffers), seeded by ``keys``."""
        return self.starting.fresh(derive_seed(self.config.seed, *keys))

    def theta0(self, replicate: int) -> dict[str, Tensor]:
        """The replicate's initial weights θ0 (:class:`lth.core.theta0.StartingWeights`)."""
        return self.starting.theta0(derive_seed(self.config.seed, "init", replicate))

    def rates(self, masks: MaskSet, level: int) -> dict[str, float]:
        """Per-layer pruning rates at ``level`` (:meth:`PruningPolicy.rates`)."""
        return self.policy.rates(masks, level)

    def prune(self, *args, **kwargs) -> MaskSet:
        """The ticket's mask for a level (:meth:`PruningPolicy.prune`, the same arguments)."""
        return self.policy.prune(*args, **kwargs)

    def group_size(self) -> int:
        """How many tickets train together: ``max_parallel``, or fewer if memory is short.

        On CPU also at most the thread count (and at least 2): there, stacking more tickets
        than threads runs no faster per ticket and falls out of cache (15 LeNet-300-100 tickets
        train 20% faster in groups of 2 than in one group of 15 on 2 cores). Conv nets train
        one at a time on CPU: grouped convolutions there are slower than separate ones (3
        stacked LeNet-5 tickets step in 11.0 ms, one alone in 2.4 ms).
        """
        if not engine_supports(self.template):
            return 1
        has_conv = any(isinstance(m, nn.Conv2d) for m in self.template.modules())
        if self.device.type == "cpu" and has_conv:
            return 1
        fits = max(1, int(0.5 * _free_memory(self.device) // self.ticket_bytes()))
        if self.device.type == "cpu":
            fits = min(fits, max(2, torch.get_num_threads()))
        return min(self.config.max_parallel, fits)

    def ticket_bytes(self) -> int:
        """Bytes one network of the stacked engine needs to train (an estimate): weights,
        gradients, two optimizer moments and mask, and a batch's activations for backward."""
        n_params = sum(p.numel() for p in self.template.parameters())
        activations = 0
        with torch.no_grad():
            h = torch.zeros(1, *self.data.input_shape)
            for layer in self.template.children():
                h = layer(h)
                activations += h.numel()
        return 4 * (5 * n_params + 3 * activations * self.config.batch_size)

    def plan(self, level: int, previous: dict[int, LevelResult], level0: dict[int, LevelResult]):
        """The (branch, replicate, job) list of one level from the tickets of the level before."""
        c = self.config
        planned = []
        for r in range(c.replicates) if level == 0 else sorted(previous):
            if level == 0:
                masks = ones_mask(self.template, self.prunable)
                start = self.theta0(r)
            else:
                prev = previous[r]
                # criteria that prune at initialisation score θ0 under the previous mask
                pruned = level0[r].init if self.criterion.at_init else prev.final
                prev_masks = prev.masks
                masks = self.prune(pruned, prev.masks, level, r, level0[r].init)
                masks = {n: masks[n] for n in self.prunable}  # a fixed order for random draws
                if c.reset in ("finetune", "lr_rewind"):
                    start = prev.final
                elif c.reset == "reinit":
                    start = self.fresh_weights("reinit-chain", r, level)
                elif c.rewind_iteration == 0:
                    start = level0[r].init
                else:
                    start = level0[r].snapshots[c.rewind_iteration]
            data_seed = derive_seed(c.seed, "data", r, level)
            planned.append(
                (
                    "ticket",
                    r,
                    TicketJob(masked_weights(start, masks), masks, data_seed, f"ticket/{r}"),
                )
            )
            for control in level_branches(c.controls, level)[1:]:
                cmask, init = self.control(
                    control, r, level, masks, start, level0[r].init, (pruned, prev_masks)
                )
                planned.append(
                    (
                        control,
                        r,
                        TicketJob(masked_weights(init, cmask), cmask, data_seed, f"{control}/{r}"),
                    )
                )
        return planned

    def control(
        self,
        name: str,
        replicate: int,
        level: int,
        masks: MaskSet,
        start: dict[str, Tensor],
        theta0: dict[str, Tensor],
        pruned: tuple[dict[str, Tensor], MaskSet],
    ) -> tuple[MaskSet, dict[str, Tensor]]:
        """(mask, starting weights) of control ``name`` (:mod:`lth.pruning.controls`), each
        with the ticket's exact per-layer counts (``masks``) and its start (``start``) except
        where the control changes them; ``pruned``: the weights the criterion scored and the
        previous mask."""
        gen = torch.Generator().manual_seed(derive_seed(self.config.seed, name, replicate, level))
        inp = ControlInput(replicate, level, masks, start, theta0, pruned, gen,
                           self.fresh_weights, self.policy.scorer,
                           frozenset(self.policy.unit_layers(masks)))  # fmt: skip
        return CONTROLS.lookup(name).make(inp)

    def level_train_config(self, level: int, branch: str = "ticket") -> TrainConfig:
        """Training settings of a branch at a level
        (:func:`lth.pruning.policy.level_train_config`)."""
        return level_train_config(self.config, self.train_config, level, branch)

    def schedule(self, level: int, branch: str) -> tuple[int, TrainConfig]:
        """(start iteration, training settings) of a branch at a level
        (:func:`lth.pruning.policy.schedule`)."""
        return schedule(self.config, self.train_config, level, branch)

    def units(self, level: int, planned, size: int) -> list[Unit]:
        """The training groups of a level, in order: jobs of one schedule train together, the
        ticket's first, at most ``size`` at a time. An executor trains each group as a unit."""
        c = self.config
        snapshot_at = (c.rewind_iteration,) if level == 0 and c.rewind_iteration > 0 else ()
        # the ticket's schedule first (never fewer jobs than another's, so a resumed level's
        # group size read from its group 0 regroups alike)
        by_schedule: dict[tuple[int, TrainConfig], list] = {}
        for p in planned:
            if p[2] is not None:
                by_schedule.setdefault(self.schedule(level, p[0]), []).append(p)
        groups = [
            (key, jobs[i : i + size])
            for key, jobs in by_schedule.items()
            for i in range(0, len(jobs), size)
        ]
        return [
            Unit(level, gi, start, train_config, group, snapshot_at)
            for gi, ((start, train_config), group) in enumerate(groups)
        ]

    def trainer(self, unit: Unit, state: dict | None = None) -> Trainer:
        """A Trainer for one unit, continued from ``state`` (a checkpoint) when given."""
        trainer = Trainer(
            self.template,
            [job for _, _, job in unit.jobs],
            self.data,
            unit.train_config,
            self.device,
            snapshot_at=unit.snapshot_at,
            start_iteration=unit.start,
        )
        if state is not None:
            trainer.load_state_dict(state)
        return trainer

    def unit_results(self, unit: Unit, trained) -> dict[tuple[str, int], LevelResult]:
        """The LevelResults of a trained unit, by (branch, replicate)."""
        exclude = tuple(self.config.exclude)
        return {
            (branch, r): LevelResult(
                branch, r, unit.level, job.masks, dict(job.init), res.final, res.history,
                res.snapshots, exclude=exclude,
                dead_units=dead_units(job.masks, self.template, weights=res.final),
                cost=network_cost(self.template, job.masks, self.data.input_shape,
                                  shrunk=self.config.granularity != "weight"),
            )
            for (branch, r, job), res in zip(unit.jobs, trained, strict=True)
        }  # fmt: skip

    def level_group_size(self, first: dict | None) -> int:
        """The group size of a level whose group 0 checkpoint is ``first`` (or None): a level
        resumed from a checkpoint keeps the grouping it started with."""
        return len(first["tickets"]) if first and "tickets" in first else self.group_size()

    @staticmethod
    def level_results(planned, trained: dict[tuple[str, int], LevelResult]) -> list[LevelResult]:
        """A level's results in planned order; a job planned as None shares the ticket's."""
        results = []
        for branch, r, job in planned:
            if job is None:  # the same network as the ticket: share its result
                results.append(dataclasses.replace(trained["ticket", r], branch=branch))
            else:
                results.append(trained[branch, r])
        return results

    def run_level(
        self, level: int, planned, store: Store, hook: Hook | None = None
    ) -> list[LevelResult]:
        """Train every job of a level, unit after unit (groups of at most ``max_parallel``)."""
        if self.user_loop is not None:  # train= given: the user's loop (lth.study.userloop)
            return self.user_loop.run_level(self, level, planned, hook)
        trained: dict[tuple[str, int], LevelResult] = {}
        first = store.load_checkpoint(level, 0)
        for unit in self.units(level, planned, self.level_group_size(first)):
            state = first if unit.index == 0 else store.load_checkpoint(level, unit.index)
            trainer = self.trainer(unit, state)

            def callback(tr: Trainer, gi: int = unit.index) -> None:
                store.save_checkpoint(level, gi, tr)
                if hook:
                    hook(level, gi, tr)

            done = trainer.run(callback=callback)
            assert done is not None
            trained |= self.unit_results(unit, done)
        return self.level_results(planned, trained)

    def run(self, store: Store | None = None, hook: Hook | None = None) -> list[LevelResult]:
        """Run (or continue) every level; returns all branches of all levels."""
        store = store or MemoryStore()
        self.warn_without_validation()
        everything: list[LevelResult] = []
        previous: dict[int, LevelResult] = {}
        level0: dict[int, LevelResult] = {}
        for level in range(self.config.levels + 1):
            results = self.finished_level(store, level)
            if results is None:
                planned = self.plan(level, previous, level0)
                results = self.run_level(level, planned, store, hook)
                store.save_level(level, results)
            everything.extend(results)
            previous = chains(results)
            if not previous:
                break
            if level == 0:
                level0 = dict(previous)
        return everything

    def warn_without_validation(self) -> None:
        """Without validation data there is no early stop: say so once, before training."""
        if self.data.val_x.shape[0] == 0:
            print(
                "lth: warning: no validation set (val_size 0): there is no early stop; the "
                "early-stop columns of summary.csv stay empty",
                file=sys.stderr,
                flush=True,
            )

    def finished_level(self, store: Store, level: int) -> list[LevelResult] | None:
        """A level the store holds as finished, or None."""
        results = store.load_level(level)
        if results is None:
            return None
        # the folder does not know what was left unpruned
        return [dataclasses.replace(r, exclude=tuple(self.config.exclude)) for r in results]


def chains(results: list[LevelResult]) -> dict[int, LevelResult]:
    """The tickets of a level whose chain goes on, by replicate: a ticket that diverged has
    nothing meaningful to prune, so its chain ends there."""
    return {
        r.replicate: r for r in results if r.branch == "ticket" and r.history.diverged_at is None
    }


def check_fits(
    need: int, device: torch.device, what: str, fix: str, free: int | None = None
) -> None:
    """Refuse (one-line LTHError) ``what``, estimated to need ``need`` bytes, when ``device``
    has less free (``free``: the bytes available, default what it has free now): checked
    before anything is allocated or written."""
    free = _free_memory(device) if free is None else free
    if need > free:
        raise LTHError(
            f"{what} need about {need / 2**30:.1f} GiB of memory on {device}, more than the "
            f"{free / 2**30:.1f} GiB free; {fix}"
        )


def _free_memory(device: torch.device) -> int:
    """Bytes of memory free for new tensors on ``device``."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


__all__ = [
    "Experiment",
    "ExperimentConfig",
    "LevelResult",
    "MemoryStore",
    "Store",
]
