"""Your own training loop inside IMP: ``run_experiment(..., train=fn, evaluate=fn2)``.

lth keeps the level loop (pruning, rewinding, controls, the run folder) and calls
``train(model, ctx)`` for every network of every level, the ticket and each control, one after
another. ``model`` is a copy of the study's model on ``ctx.device`` holding the network's
starting weights, with its masks attached the way any optimizer, loss, scheduler, mixed
precision or framework (Lightning) keeps pruned weights exactly 0: pruned entries start at 0,
a gradient hook multiplies each masked parameter's gradient by its mask (so Adam's moments,
SGD's momentum and L2 weight decay of a pruned weight stay 0), and :meth:`TrainContext.step`
sets them to 0 again after every step (decoupled weight decay and any other update of a
pruned weight are undone there). The parameters stay plain ``nn.Parameter`` objects with
their usual names.

The loop calls ``ctx.step()`` once after every optimisation step. lth counts the steps,
evaluates the network every ``eval_every`` steps and at the last (``evaluate(model)``, or
lth's own loss and accuracy on the dataset's validation and test sets), keeps θk at step k
for late rewinding, and takes the network's final weights when ``ctx.step()`` returns False,
the level's budget of ``ctx.iterations`` steps spent; what the loop does after that is not
kept. A network whose validation loss (or the loss given to ``ctx.step``) is NaN or inf has
diverged: ``ctx.step()`` returns False there, as the built-in engine stops such a network.

A user loop is resumed per level: a level interrupted (Ctrl-C, a kill) starts over when the
study is run again; finished levels are kept.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.config import TrainConfig
from lth.core.training import History, TicketJob, TrainResult
from lth.errors import LTHError
from lth.pruning.policy import derive_seed
from lth.runfolder.tables import METRICS
from lth.study.experiment import Unit

TrainFn = Callable[[nn.Module, "TrainContext"], object]
EvaluateFn = Callable[[nn.Module], Mapping[str, object]]

#: The keys an ``evaluate`` function's dict must have (accuracies in percent).
EVALUATE_KEYS = ("val_loss", "val_acc", "test_acc")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED = set(METRICS.names) | {"test_loss"}


@dataclass
class LoggedHistory(History):
    """A :class:`~lth.core.training.History` with the loop's own columns of metrics.csv:
    ``logged[name][i]`` is the value at evaluation ``i`` (NaN where none was logged)."""

    logged: dict[str, list[float]] = field(default_factory=dict)

    def add_logged(self, values: Mapping[str, float]) -> None:
        """The logged values of the evaluation just appended (missing ones NaN)."""
        n = len(self.iteration)
        for name in values:
            self.logged.setdefault(name, [math.nan] * (n - 1))
        for name, column in self.logged.items():
            column.append(values.get(name, math.nan))


def _number(value: object, what: str) -> float:
    """``value`` (a Python number or a one-element tensor) as a float, or a one-line LTHError."""
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.detach().item())
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    shown = f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else repr(value)
    raise LTHError(f"{what} is {shown[:60]}, not a number")


def _check_name(name: str, what: str) -> None:
    if not _NAME.fullmatch(name) or name in _RESERVED:
        raise LTHError(
            f"{what} {name!r} cannot be a column of metrics.csv: use letters, digits and _ "
            f"and none of lth's own columns ({', '.join(sorted(_RESERVED))})"
        )


class TrainContext:
    """What ``train(model, ctx)`` gets besides the model: the network, its budget and lth's
    settings, and the calls that tell lth how training goes.

    Attributes:
        branch (str): ``"ticket"`` or the control's name (``"reinit"``, ``"random_prune"``...).
        replicate (int): The replicate, from 0.
        level (int): The pruning level, 0 for the dense network.
        device (torch.device): Where the model is; the loop may move it.
        iterations (int): The optimisation steps this network takes at this level: call
            :meth:`step` after each until it returns False.
        start (int): The iteration it starts from: 0, or k for a late-rewound ticket (its
            metrics.csv rows run from ``start`` to ``start + iterations``).
        iteration (int): The current iteration, ``start`` plus the steps taken.
        generator (torch.Generator): A CPU generator seeded for this network (the ticket and
            its controls of one replicate and level share the seed, as in lth's own engine),
            e.g. for a ``DataLoader``'s shuffling. Torch's global generator is seeded from it
            too while ``train`` runs (and restored after), so dropout is reproducible.
        config (lth.config.TrainConfig): lth's training settings for this branch (lr,
            batch_size, optimizer, momentum, weight_decay, milestones...), to use or ignore.
        data (lth.Dataset): The study's dataset (``train_x``, ``train_y``, normalised).
        masks (dict[str, torch.Tensor]): The network's masks, ``{parameter name: bool}``.

    Examples:
        >>> import torch
        >>> from lth.config import TrainConfig
        >>> from lth.core.training import TicketJob
        >>> from lth.study.userloop import TrainContext
        >>> net = torch.nn.Linear(2, 1)
        >>> masks = {"weight": torch.tensor([[True, False]])}
        >>> job = TicketJob(net.state_dict(), masks, seed=0, name="ticket/0")
        >>> ctx = TrainContext.for_network(
        ...     net, job, "ticket", 0, 0, TrainConfig(iterations=2, eval_every=1), data=None,
        ...     evaluate=lambda m: {"val_loss": 0.5, "val_acc": 90.0, "test_acc": 89.0})
        >>> ctx.step(), ctx.step(), ctx.history.iteration, net.weight[0, 1].item()
        (True, False, [0, 1, 2], 0.0)
    """

    def __init__(
        self,
        model: nn.Module,
        job: TicketJob,
        branch: str,
        replicate: int,
        level: int,
        config: TrainConfig,
        data,
        evaluate: Callable[[nn.Module], dict],
        *,
        start: int = 0,
        device: torch.device | str = "cpu",
        snapshot_at: tuple[int, ...] = (),
        hook: Callable | None = None,
        group: int = 0,
    ):
        self.branch, self.replicate, self.level = branch, replicate, level
        self.device = torch.device(device)
        self.start = self.iteration = int(start)
        self.iterations = config.iterations - self.start
        self.generator = torch.Generator().manual_seed(job.seed)
        self.config, self.data, self.masks = config, data, dict(job.masks)
        self.name = job.name or f"{branch}/{replicate}"
        self.history = LoggedHistory()
        self.snapshots: dict[int, dict[str, Tensor]] = {}
        self.final: dict[str, Tensor] | None = None
        self.error: BaseException | None = None  # what step() raised, re-raised after train
        self._model, self._evaluate, self._hook, self._group = model, evaluate, hook, group
        self._snapshot_at = set(snapshot_at)
        self._dtypes = {n: t.dtype for n, t in model.state_dict().items()}
        self._loss: Tensor | float = 0.0
        self._losses = 0
        self._logged: dict[str, float] = {}
        self._on_device: dict[tuple, dict[str, Tensor]] = {}
        self._hooks = keep_masked(model, self.masks, self._mask_like)
        self._record()  # the start, as lth's engine evaluates it
        if hook is not None:
            hook(level, group, _View(self))

    @classmethod
    def for_network(
        cls,
        model: nn.Module,
        job: TicketJob,
        branch: str,
        replicate: int,
        level: int,
        config: TrainConfig,
        data,
        evaluate,
        **kw,
    ) -> TrainContext:
        """The context of one network: ``model`` loaded with ``job.init`` and masked."""
        model.load_state_dict(job.init)
        return cls(model, job, branch, replicate, level, config, data, evaluate, **kw)

    # -- what the loop calls ----------------------------------------------------------------
    def step(self, loss: Tensor | float | None = None) -> bool:
        """Count one optimisation step (call it after each); False once the budget is spent.

        Pruned weights are set to exactly 0 again; the network is evaluated when an
        evaluation is due, and θk kept at the rewind iteration. Once it returns False the
        loop must stop: the final weights are taken then.

        Args:
            loss: This step's training loss (a number or a one-element tensor), optional:
                metrics.csv's ``train_loss`` is the mean since the previous evaluation.

        Returns:
            bool: Whether the loop should take another step.
        """
        try:
            return self._step(loss)
        except BaseException as e:  # kept: a framework that swallows it cannot hide it
            self.error = self.error or e
            raise

    def log(self, **metrics: float | Tensor) -> None:
        """Put the loop's own values in metrics.csv: one column per name, the last value
        logged before each evaluation in its row (empty where none was).

        Args:
            **metrics: Numbers or one-element tensors, by column name (letters, digits, _).
        """
        for name, value in metrics.items():
            _check_name(name, "ctx.log:")
            self._logged[name] = _number(value, f"ctx.log: {name}")

    # -- lth's side -------------------------------------------------------------------------
    @property
    def steps(self) -> int:
        """Optimisation steps taken so far."""
        return self.iteration - self.start

    @property
    def done(self) -> bool:
        """Whether training is over: the budget spent, or the network diverged."""
        return self.final is not None

    def _step(self, loss) -> bool:
        if self.done:
            raise LTHError(
                f"ctx.step() was called after it returned False ({self.name} at level "
                f"{self.level} {self._why_done()}); stop training when it returns False"
            )
        self.iteration += 1
        rezero(self._model, self.masks, self._mask_like)
        if isinstance(loss, Tensor) and loss.numel() == 1:  # summed on its device: no sync
            self._loss = self._loss + loss.detach().float().reshape(())
            self._losses += 1
        elif loss is not None:
            self._loss = self._loss + _number(loss, "ctx.step(loss)")
            self._losses += 1
        if self.iteration in self._snapshot_at:
            self.snapshots[self.iteration] = self._weights()
        end = self.start + self.iterations
        if self.iteration % self.config.eval_every == 0 or self.iteration >= end:
            self._record()
            if self._hook is not None:
                self._hook(self.level, self._group, _View(self))
        if self.iteration >= end or self.history.diverged_at is not None:
            self.final = self._weights()
            return False
        return True

    def _why_done(self) -> str:
        if self.history.diverged_at is not None:
            return f"diverged at iteration {self.history.diverged_at}"
        return f"has taken its {self.iterations} steps"

    def _mask_like(self, t: Tensor, dtype: torch.dtype | None = None) -> dict[str, Tensor]:
        """The masks on ``t``'s device, in ``dtype`` (default: ``t``'s), cached."""
        key = (t.device, dtype or t.dtype)
        if key not in self._on_device:
            self._on_device[key] = {n: m.to(*key) for n, m in self.masks.items()}
        return self._on_device[key]

    def _weights(self) -> dict[str, Tensor]:
        """The model's state, on the CPU in the study's dtypes, pruned entries exactly 0."""
        state = self._model.state_dict()
        if list(state) != list(self._dtypes):
            lost = sorted(set(self._dtypes) ^ set(state))
            raise LTHError(
                f"the model's parameters changed names during training ({lost[0]}...); train "
                "the model lth gives (wrap it, e.g. in a LightningModule, rather than replace "
                "or reparametrize its parameters)"
            )
        out = {n: t.detach().to("cpu", self._dtypes[n], copy=True) for n, t in state.items()}
        for n, m in self.masks.items():
            out[n].masked_fill_(~m.cpu(), 0.0)
        return out

    @torch.no_grad()
    def _record(self) -> None:
        """One evaluation: a row of the history (or the divergence)."""
        modes = {m: m.training for m in self._model.modules()}
        self._model.eval()
        try:
            got = self._evaluate(self._model)
        finally:
            for m, mode in modes.items():
                m.training = mode
        values = check_evaluation(got)
        trained = self._losses > 0
        train_loss = float(self._loss) / self._losses if trained else math.nan
        self._loss, self._losses = 0.0, 0
        judged = [train_loss] if trained else []
        has_val = self.data is None or self.data.val_x.shape[0] > 0
        judged += [values["val_loss"]] if has_val else []
        h = self.history
        if not all(math.isfinite(v) for v in judged):
            h.diverged_at = self.iteration
            return
        h.iteration.append(self.iteration)
        h.train_loss.append(train_loss)
        for key in ("val_loss", "val_acc", "test_acc"):
            getattr(h, key).append(values[key])
        h.test_loss.append(values.get("test_loss", math.nan))
        extra = {k: v for k, v in values.items() if k not in (*EVALUATE_KEYS, "test_loss")}
        h.add_logged(extra | self._logged)
        self._logged = {}

    def close(self) -> None:
        """Take the gradient hooks off the model."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []


class _View:
    """What a run's hooks (progress, TensorBoard, Ctrl-C) read of a network training in a
    user loop, in the shape of :class:`~lth.core.training.Trainer`'s; it has no checkpoint."""

    resumable = False

    def __init__(self, ctx: TrainContext):
        self.masks, self.histories, self.names = ctx.masks, [ctx.history], [ctx.name]
        self.iteration, self.config = ctx.iteration, ctx.config


def keep_masked(
    model: nn.Module, masks: Mapping[str, Tensor], like: Callable[..., dict[str, Tensor]]
) -> list:
    """Zero the pruned weights of ``model`` and register, on every masked parameter, a
    gradient hook that multiplies its gradient by the mask; returns the hooks' handles.

    ``like(t, dtype=None)``: the masks on ``t``'s device, in ``dtype`` (default ``t``'s).
    """
    params = dict(model.named_parameters())
    missing = [n for n in masks if n not in params]
    if missing:
        raise LTHError(f"the model has no parameter {missing[0]} to mask")
    rezero(model, masks, like)
    handles = []
    for name in masks:
        handles.append(params[name].register_hook(lambda g, n=name: g * like(g)[n]))
    return handles


@torch.no_grad()
def rezero(
    model: nn.Module, masks: Mapping[str, Tensor], like: Callable[..., dict[str, Tensor]]
) -> None:
    """Set the pruned weights of ``model`` to exactly 0, in place."""
    params = dict(model.named_parameters())
    for name in masks:
        p = params[name]
        p.masked_fill_(~like(p, torch.bool)[name], 0.0)


def check_evaluation(got: object) -> dict[str, float]:
    """An ``evaluate`` function's result as ``{name: float}``, or a one-line LTHError."""
    need = ", ".join(EVALUATE_KEYS)
    if not isinstance(got, Mapping):
        raise LTHError(
            f"evaluate returned {type(got).__name__}; it must return a dict with {need} "
            "(accuracies in percent)"
        )
    missing = [k for k in EVALUATE_KEYS if k not in got]
    if missing:
        raise LTHError(
            f"evaluate's dict lacks {missing[0]!r}; it must have {need} (accuracies in percent)"
        )
    values = {}
    for key, value in got.items():
        if key not in EVALUATE_KEYS and key != "test_loss":
            _check_name(str(key), "evaluate's key")
        values[str(key)] = _number(value, f"evaluate's {key!r}")
    return values


@torch.no_grad()
def evaluate_on(model: nn.Module, data, chunk: int = 1000) -> dict[str, float]:
    """lth's own evaluation: mean cross-entropy and accuracy (percent) of ``model`` on the
    dataset's validation and test sets (NaN for an empty set), on the model's device."""
    device = next(model.parameters()).device
    out = {}
    for split in ("val", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        n = x.shape[0]
        loss, correct = 0.0, 0
        for i in range(0, n, chunk):
            xs, ys = x[i : i + chunk].to(device), y[i : i + chunk].to(device)
            logits = model(xs)
            loss += float(F.cross_entropy(logits, ys, reduction="sum").double())
            correct += int((logits.argmax(1) == ys).sum())
        out[f"{split}_loss"] = loss / n if n else math.nan
        out[f"{split}_acc"] = 100.0 * correct / n if n else math.nan
    return out


@dataclass
class UserLoop:
    """The user's ``train`` (and optional ``evaluate``) functions, training every network of
    a level in place of lth's engine (:meth:`lth.study.experiment.Experiment.run_level`)."""

    train: TrainFn
    evaluate: EvaluateFn | None = None

    @classmethod
    def checked(cls, train: object, evaluate: object = None, executor=None) -> UserLoop:
        """The loop, or a one-line LTHError for functions that are not callable or an
        executor that trains elsewhere."""
        if not callable(train):
            raise LTHError(f"train must be a function train(model, ctx); got {train!r:.60}")
        if evaluate is not None and not callable(evaluate):
            raise LTHError(f"evaluate must be a function evaluate(model) -> dict; got "
                           f"{evaluate!r:.60}")  # fmt: skip
        if executor is not None and getattr(executor, "name", "local") != "local":
            raise LTHError("train= runs in this process: use the local executor (the default)")
        return cls(train, evaluate)

    def run_level(self, experiment, level: int, planned, hook=None) -> list:
        """Train every network of a level with the user's loop; the level's results in
        planned order (nothing is saved: the level is saved whole, or not at all)."""
        c = experiment.config
        snapshot_at = (c.rewind_iteration,) if level == 0 and c.rewind_iteration > 0 else ()
        trained: dict = {}
        jobs = [p for p in planned if p[2] is not None]
        for index, (branch, replicate, job) in enumerate(jobs):
            start, config = experiment.schedule(level, branch)
            result = self.train_network(
                experiment, job, branch, replicate, level, config, start, snapshot_at,
                hook, index,
            )  # fmt: skip
            unit = Unit(level, index, start, config, [(branch, replicate, job)], snapshot_at)
            trained |= experiment.unit_results(unit, [result])
        return experiment.level_results(planned, trained)

    def train_network(self, experiment, job: TicketJob, branch: str, replicate: int,
                      level: int, config: TrainConfig, start: int, snapshot_at, hook,
                      index: int) -> TrainResult:  # fmt: skip
        """Train one network with the user's loop and return it as lth's engine would."""
        data = experiment.data
        model = copy.deepcopy(experiment.template).to(experiment.device)
        model.train()
        evaluate = self.evaluate or (lambda m: evaluate_on(m, data))
        ctx = TrainContext.for_network(
            model, job, branch, replicate, level, config, data, evaluate, start=start,
            device=experiment.device, snapshot_at=snapshot_at, hook=hook, group=index,
        )  # fmt: skip
        devices = [experiment.device] if experiment.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(derive_seed(job.seed, "user loop"))
                self.train(model, ctx)
        except BaseException:
            if ctx.error is not None:  # ours, from ctx.step (Lightning turns Ctrl-C into exit)
                raise ctx.error from None
            raise
        finally:
            ctx.close()
        if ctx.error is not None:  # raised in ctx.step and swallowed by the loop
            raise ctx.error
        if not ctx.done:
            where = f"{ctx.name} at level {level}"
            if ctx.steps == 0:
                raise LTHError(
                    f"train returned without calling ctx.step() ({where}); call ctx.step() "
                    "after every optimisation step until it returns False"
                )
            raise LTHError(
                f"train returned after {ctx.steps} of its {ctx.iterations} steps ({where}); "
                "call ctx.step() after every optimisation step until it returns False (go "
                "over the data again when it runs out)"
            )
        return TrainResult(final=ctx.final, history=ctx.history, snapshots=ctx.snapshots)


__all__ = ["EVALUATE_KEYS", "LoggedHistory", "TrainContext", "UserLoop", "evaluate_on"]
