"""Linear mode connectivity: the instability of a starting point, and the rewind point it gives.

Frankle et al. 2020 ("Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML):
copies of one network start from the same weights (a level's m ⊙ θ0, or m ⊙ θk) and train
with different data orders (nothing else differs); the error at evenly spaced α on the line
(1 - α) θ_A + α θ_B between two copies' final weights tells whether they ended in one linearly
connected basin. Instability (their Definition 2) is max over α of err(α) - mean(err(0),
err(1)); a starting point is "stable" when it is below 2% (their threshold). IMP finds
matching tickets exactly when rewinding to a stable point (their Section 5).

- :func:`analyze_level`: the instability of one branch, replicate and level of a run folder,
  from the weights that level started from, with its own training settings and schedule
  (:meth:`~lth.study.experiment.Experiment.schedule`).
- :func:`find_rewind`: the dense network's training (level 0's θ0 and data order) is redone up
  to the largest candidate k, saving θk; copies fork from m ⊙ θk (the mask of the level
  analysed: all ones for the dense network) and train from step k to T with the schedule as it
  stands at k (Algorithm 1); the earliest k below 2% is what ``lth run --rewind-iteration``
  takes. (The paper prunes with rewinding to each k, so its mask depends on k; here the
  level's one mask is used for every k.)

The copies of one starting point train together in the batched :class:`~lth.core.training.Trainer`
(each with its own data-order seed). Masks hold along the path: both ends are exactly 0
where pruned, so every point between is. Networks with BatchNorm get their running
statistics recomputed at every α (also at 0 and 1, so the curve compares like with like), on
the same fixed training batches, in training mode without augmentation (:mod:`lth.stability.paths`).

Everything goes under ``<run>/stability/`` (:mod:`lth.stability.store`): a CSV of errors per
analysis, each copy's own final error, ``summary.csv`` and the copies' final weights; it is
resumable (checkpoints of unfinished copies, finished starting points kept) and deterministic
(same command, same bytes).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from lth.config import ExperimentConfig, TrainConfig
from lth.core.fileio import load_tensors
from lth.core.training import History, TicketJob, Trainer, TrainResult
from lth.data.user import study_data
from lth.errors import LTHError
from lth.pruning.masks import MaskSet, masked_weights, ones_mask
from lth.runfolder.layout import level_dir
from lth.runfolder.runs import load_ticket, read_config
from lth.runfolder.tables import STABILITY_COPIES, STABILITY_ERRORS
from lth.stability.paths import PathEvaluator, alphas, batchnorms, error, instability, stackable
from lth.stability.store import StabilityFolder, replace_rows, update_summary
from lth.study.experiment import Experiment, LevelResult, check_fits, derive_seed
from lth.study.runner import Interrupted, StopOnSignal, check_study
from lth.usercode import CodeTrust, as_trust, check_config

STABLE = 2.0  # percent: below this instability a starting point is stable (Frankle et al. 2020)
CANDIDATES = (0, 100, 250, 500, 1000, 2000, 4000)  # default rewind points k of find_rewind
MAX_PATH_POINTS = 100_000  # pairs x points measured per starting point, at most


# ----------------------------------------------------------------------------- storage


@dataclass(frozen=True)
class Target:
    """What an analysis forks copies of: a branch, replicate and level of a study, and the
    analysis's name (``level`` or ``rewind``)."""

    analysis: str
    level: int
    branch: str
    replicate: int
    masks: MaskSet
    weights_remaining: float

    @property
    def name(self) -> str:
        """The analysis's file name stem, e.g. ``ticket_r0_level_03`` (``..._rewind``)."""
        stem = f"{self.branch}_r{self.replicate}_level_{self.level:02d}"
        return stem if self.analysis == "level" else f"{stem}_{self.analysis}"

    def key(self) -> dict:
        """The columns that identify the analysis in every table."""
        return {"analysis": self.analysis, "level": self.level, "branch": self.branch,
                "replicate": self.replicate}  # fmt: skip


# ----------------------------------------------------------------------------- training


def train_copies(
    template: nn.Module,
    data,
    config: TrainConfig,
    start: dict[str, Tensor],
    masks: MaskSet,
    seeds: Sequence[int],
    start_iteration: int = 0,
    device: torch.device | str = "cpu",
    folder: StabilityFolder | None = None,
    what: str = "copies",
    stop: Callable[[], str | None] = lambda: None,
) -> list[TrainResult]:
    """Copies of ``start`` (masked) trained together from ``start_iteration`` to the end, the
    i-th with data-order seed ``seeds[i]``: nothing else differs between them.

    Networks the stacked engine cannot run train one at a time. ``folder`` checkpoints them
    (``stop()`` naming a signal saves a checkpoint and raises
    :class:`lth.study.runner.Interrupted`).
    """
    size = len(seeds) if stackable(template) else 1
    results: list[TrainResult] = []
    for g in range(0, len(seeds), size):
        jobs = [
            TicketJob(start, masks, s, f"copy/{g + i}") for i, s in enumerate(seeds[g : g + size])
        ]
        trainer = Trainer(template, jobs, data, config, device, start_iteration=start_iteration)
        tag = f"{what}_{g}"
        state = folder.load_checkpoint(tag) if folder else None
        if state is not None:
            trainer.load_state_dict(state)

        def callback(tr: Trainer, tag: str = tag) -> None:
            signal_name = stop()
            if folder is not None:
                folder.save_checkpoint(tag, tr, force=signal_name is not None)
            if signal_name is not None:
                where = (
                    f"checkpoint saved at iteration {tr.iteration}" if folder else "nothing saved"
                )
                raise Interrupted(signal_name, where)

        trained = trainer.run(callback=callback)
        assert trained is not None
        results += trained
    return results


def parent_snapshots(
    template: nn.Module,
    data,
    config: TrainConfig,
    theta0: dict[str, Tensor],
    seed: int,
    candidates: Sequence[int],
    device: torch.device | str = "cpu",
) -> dict[int, dict[str, Tensor]]:
    """The dense network's weights at each candidate iteration k of its training from θ0 with
    data-order seed ``seed`` (level 0's training of the study, stopped at the last k)."""
    masks = ones_mask(template)
    job = TicketJob(theta0, masks, seed, "parent")
    trainer = Trainer(template, [job], data, config, device, snapshot_at=candidates)
    trainer.run(stop_at=max(candidates))
    return {k: trainer.snapshots[k][0] for k in candidates}


# ----------------------------------------------------------------------------- analyses


@dataclass
class Study:
    """A study's pieces an analysis needs: the config, the data and the experiment."""

    config: ExperimentConfig
    data: object
    experiment: Experiment
    device: torch.device


def _pairs(copies: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(copies) for j in range(i + 1, copies)]


def check_counts(copies: int, points: int) -> None:
    """``copies`` and ``points`` in range: every pair's path is measured at every point, so
    their product is capped (:data:`MAX_PATH_POINTS`) before anything is allocated."""
    if not isinstance(copies, int) or copies < 2:
        raise LTHError(f"--copies must be 2 or more (a pair is two copies), got {copies}")
    if not isinstance(points, int) or points < 3:
        raise LTHError(f"--points must be 3 or more (α = 0, 1 and one between), got {points}")
    pairs = copies * (copies - 1) // 2
    if pairs * points > MAX_PATH_POINTS:
        raise LTHError(
            f"--copies {copies} and --points {points} would measure {pairs * points:,} points "
            f"({pairs:,} pairs x {points}) per starting point, over lth's cap of "
            f"{MAX_PATH_POINTS:,}; use fewer copies or points"
        )


def check_memory(experiment: Experiment, copies: int, free: int | None = None) -> None:
    """Refuse copies that cannot fit in memory (an estimate: those trained together, and
    every copy's final weights kept for the paths) before anything is written. ``free``:
    the bytes available (default: what the device has free now)."""
    template = experiment.template
    weights = 4 * sum(p.numel() for p in template.parameters())
    together = copies if stackable(template) else 1
    need = together * experiment.ticket_bytes() + copies * weights
    what = f"--copies {copies} ({together} trained together)"
    check_fits(need, experiment.device, what, "use fewer copies", free)


def _run_points(
    study: Study,
    target: Target,
    folder: StabilityFolder,
    starts: dict[int, dict[str, Tensor]],
    schedule: Callable[[int], tuple[int, TrainConfig]],
    copies: int,
    points: int,
    say: Callable[[str], None],
    stop: Callable[[], str | None],
) -> list[dict]:
    """Train copies from each start (by k) and measure the path between every pair; returns
    the summary rows (one per k). Steps already written (rows present) are not redone."""
    c = study.config
    seeds = [derive_seed(c.seed, "stability", target.branch, target.replicate, target.level, i)
             for i in range(copies)]  # fmt: skip
    grid = alphas(points)
    errors = folder.rows(STABILITY_ERRORS)
    copy_rows = folder.rows(STABILITY_COPIES)
    done = {r["k"] for r in errors}
    evaluator = None
    for k, start in starts.items():
        if k in done:
            continue
        begin, config = schedule(k)
        paths = [folder.copy_path(k, i) for i in range(copies)]
        if all(p.is_file() for p in paths):
            finals = [load_tensors(p) for p in paths]
            own = [r for r in copy_rows if r["k"] == k]
        else:
            say(
                f"{target.name}: training {copies} copies from iteration {k} to {config.iterations}"
            )
            trained = train_copies(study.experiment.template, study.data, config, start,
                                   target.masks, seeds, begin, study.device, folder, f"k{k}",
                                   stop)  # fmt: skip
            finals = [t.final for t in trained]
            own = [
                {**target.key(), "k": k, "copy": i, "seed": seeds[i],
                 "test_error": error(t.history.test_acc[-1]), "diverged_at": t.history.diverged_at}
                for i, t in enumerate(trained)
            ]  # fmt: skip
            copy_rows = replace_rows(copy_rows, own, ("k", "copy"))
            folder.write(STABILITY_COPIES, copy_rows)  # before the weights that mark them done
            for p, f in zip(paths, finals):
                folder.save_tensors(p, f)
            for g in range(copies):
                folder.drop_checkpoint(f"k{k}_{g}")
        evaluator = evaluator or PathEvaluator(
            study.experiment.template, study.data, config,
            derive_seed(c.seed, "stability-subset"), study.device,
        )  # fmt: skip
        new = []
        for i, j in _pairs(copies):
            path = evaluator.errors(finals[i], finals[j], target.masks, grid)
            new += [
                {**target.key(), "k": k, "pair": f"{i}-{j}", "alpha": a,
                 "train_error": tr, "test_error": te}
                for a, (tr, te) in zip(grid, path)
            ]  # fmt: skip
        errors = replace_rows(errors, new, ("k", "pair", "alpha"))
        folder.write(STABILITY_ERRORS, errors)
        row = summarize(target, k, new, own, evaluator.batchnorm)
        say(
            f"{target.name}, k = {k}: test instability {row['test_instability_mean']:.2f}% "
            f"(train {row['train_instability_mean']:.2f}%) over {row['pairs']} pair(s)"
            + ("; BatchNorm statistics recomputed at each α" if evaluator.batchnorm else "")
        )
        if stop() is not None:  # a signal during the evaluation: what is finished is kept
            raise Interrupted(stop(), f"results up to k = {k} saved")
    return [summarize(target, k, [r for r in errors if r["k"] == k],
                      [r for r in copy_rows if r["k"] == k], _batchnorms_in(study))
            for k in starts]  # fmt: skip


def _batchnorms_in(study: Study) -> bool:
    return bool(batchnorms(study.experiment.template))


def summarize(target: Target, k: int, errors: list[dict], copies: list[dict], bn: bool) -> dict:
    """The summary row of one starting point: instability mean and std over the pairs."""
    by_pair: dict[str, list[dict]] = {}
    for r in sorted(errors, key=lambda r: r["alpha"]):
        by_pair.setdefault(r["pair"], []).append(r)
    row = {**target.key(), "k": k, "weights_remaining": target.weights_remaining,
           "copies": len(copies), "pairs": len(by_pair),
           "points": len(next(iter(by_pair.values()))) if by_pair else 0,
           "batchnorm_recomputed": "yes" if bn else "no"}  # fmt: skip
    for split in ("test", "train"):
        values = [instability([r[f"{split}_error"] for r in rows]) for rows in by_pair.values()]
        row[f"{split}_instability_mean"] = statistics.fmean(values) if values else math.nan
        row[f"{split}_instability_std"] = statistics.stdev(values) if len(values) > 1 else math.nan
    own = [r["test_error"] for r in copies]
    row["copy_test_error_mean"] = statistics.fmean(own) if own else math.nan
    row["stable"] = "yes" if row["test_instability_mean"] < STABLE else "no"
    return row


# ----------------------------------------------------------------------------- entry points


def open_study(
    run_dir: str | Path,
    level: int,
    branch: str,
    replicate: int,
    analysis: str,
    *,
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
    trust_code: bool | CodeTrust = False,
    data=None,
    model: nn.Module | Callable[..., nn.Module] | None = None,
) -> tuple[Study, dict[str, Tensor], Target]:
    """A run folder's study, and the level's starting weights (masked) and target.

    Level 0 of a run folder that has not trained it yet (``lth stability --find-rewind`` on
    a configuration) is the dense network from θ0. Code the run's config names (model,
    criterion) is imported only with ``trust_code`` (True, or a
    :class:`~lth.usercode.CodeTrust` naming it): checked before anything is imported or written.
    ``model``: for a run of a user model (an ``nn.Module`` object), the module or its factory.
    """
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    trust = as_trust(trust_code)
    check_config(config, trust)
    device = torch.device(device)
    untrained = level == 0 and not level_dir(run_dir, branch, replicate, 0).is_dir()
    if untrained and analysis == "rewind" and 0 <= replicate < config.replicates:
        model, masks = _config_model(config, model), None
    else:
        model, masks = load_ticket(
            run_dir, level, branch, replicate, "init", model=model, trust_code=trust
        )
    if data is None:
        data = study_data(config.dataset, data_dir, trust, val_size=config.val_size,
                          seed=config.seed, device=device)  # fmt: skip
    experiment = Experiment(config, data, device, model, trust=trust)
    if masks is None:
        masks = ones_mask(experiment.template, experiment.prunable)
        start = masked_weights(experiment.theta0(replicate), masks)
    else:
        start = {n: t.detach().clone() for n, t in model.state_dict().items()}
    exclude = tuple(config.exclude)
    remaining = LevelResult(branch, replicate, level, masks, {}, {}, History(), exclude=exclude)
    target = Target(analysis, level, branch, replicate, masks, remaining.weights_remaining)
    return Study(config, data, experiment, device), start, target


def _config_model(config: ExperimentConfig, model=None):
    """The model of a configuration's study: ``model`` (a module or its factory) when given,
    else ``None``, and the study builds the model its configuration names (code only as its
    trust allows, with the replicates' θ0 drawn as a run draws them)."""
    if config.model == "user model" and model is None:
        raise LTHError(
            "this configuration is of a user model (an nn.Module object); pass its factory as "
            "--model package.module:function (model= in Python)"
        )
    return model


def check_configuration(
    config: ExperimentConfig,
    data,
    device: torch.device,
    copies: int,
    trust_code: bool | CodeTrust = False,
    warn: Callable[[str], None] = lambda text: None,
) -> None:
    """Everything about a configuration's study and its copies that can fail before its run
    folder is made (``lth stability --find-rewind`` without RUN_DIR)."""
    trust = as_trust(trust_code)
    experiment = Experiment(config, data, device, _config_model(config), trust=trust)
    check_study(experiment, data, warn)
    check_memory(experiment, copies)


def analyze_level(
    run_dir: str | Path,
    level: int,
    branch: str = "ticket",
    replicate: int = 0,
    *,
    copies: int = 2,
    points: int = 30,
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
    trust_code: bool | CodeTrust = False,
    data=None,
    model: nn.Module | Callable[..., nn.Module] | None = None,
    checkpoint_seconds: float = 60.0,
    quiet: bool = False,
) -> dict:
    """Instability of one branch, replicate and level of a run folder (Frankle et al. 2020):
    ``copies`` copies of the level's starting weights train with its settings and schedule and
    different data orders; every pair's path is measured at ``points`` α. Returns the summary
    row (also in ``stability/summary.csv``)::

        row = analyze_level("runs/x", level=3)
        row["test_instability_mean"]  # percent; below 2: stable

    Code the run names is imported only with ``trust_code``; ``model`` is the model of a run
    of an ``nn.Module`` object (see :func:`open_study`).
    """
    check_counts(copies, points)
    study, start, target = open_study(run_dir, level, branch, replicate, "level",
                                      data_dir=data_dir, device=device, trust_code=trust_code,
                                      data=data, model=model)  # fmt: skip
    check_memory(study.experiment, copies)
    first, config = study.experiment.schedule(level, branch)
    settings = {"copies": copies, "points": points, "k": [first]}
    rows = _analyze(run_dir, study, target, settings, {first: start}, (first, config),
                    checkpoint_seconds, quiet)  # fmt: skip
    return rows[0]


def find_rewind(
    run_dir: str | Path,
    level: int = 0,
    branch: str = "ticket",
    replicate: int = 0,
    *,
    candidates: Sequence[int] = CANDIDATES,
    copies: int = 2,
    points: int = 30,
    data_dir: str | None = None,
    device: torch.device | str = "cpu",
    trust_code: bool | CodeTrust = False,
    data=None,
    model: nn.Module | Callable[..., nn.Module] | None = None,
    checkpoint_seconds: float = 60.0,
    quiet: bool = False,
) -> tuple[list[dict], int | None]:
    """Instability against the rewind point k: copies fork from m ⊙ θk, θk from the dense
    network's training (level 0's θ0 and data order, redone to the last k), m the level's mask,
    and train from k to T (Frankle et al. 2020, Algorithm 1 and Section 5). Returns the summary
    rows (one per k) and the earliest k whose test instability is below 2% (None if none).
    Candidates at or past the end of the level's training are left out. Code the run names is
    imported only with ``trust_code``; ``model`` is the model of a run of an ``nn.Module``
    object (see :func:`open_study`).
    """
    check_counts(copies, points)
    study, _, target = open_study(run_dir, level, branch, replicate, "rewind",
                                  data_dir=data_dir, device=device, trust_code=trust_code,
                                  data=data, model=model)  # fmt: skip
    check_memory(study.experiment, copies)
    c = study.config
    if level > 0 and (branch == "reinit" or c.reset != "rewind"):
        what = "the reinit control" if branch == "reinit" else f"reset {c.reset}"
        raise LTHError(
            f"{what} does not start from the dense network's weights, so it has no rewind "
            "point; use --branch ticket or random_prune of a run with reset rewind, or --level 0"
        )
    config = study.experiment.level_train_config(level, branch)
    ks = sorted({int(k) for k in candidates if 0 <= int(k) < config.iterations})
    if not ks:
        raise LTHError(
            f"no candidate rewind iteration is below the {config.iterations} training "
            "iterations; pass --candidates with smaller values"
        )
    late = sorted({int(k) for k in candidates} - set(ks))
    if late:
        _say(quiet)(f"left out: candidates {late}, not within the {config.iterations} iterations")
    settings = {"copies": copies, "points": points, "k": ks}
    theta0 = study.experiment.theta0(replicate)
    seed = derive_seed(c.seed, "data", replicate, 0)  # level 0's data order

    def starts(folder: StabilityFolder) -> dict[int, dict[str, Tensor]]:
        return _rewind_starts(study, folder, target, config, theta0, seed, ks, _say(quiet))

    rows = _analyze(run_dir, study, target, settings, starts, None, checkpoint_seconds, quiet)
    stable = [r["k"] for r in rows if r["test_instability_mean"] < STABLE]
    return rows, (min(stable) if stable else None)


def _rewind_starts(study, folder, target, config, theta0, seed, ks, say) -> dict[int, dict]:
    """m ⊙ θk for every k, θk from the dense network's training (saved, so done once)."""
    if not all(folder.parent_path(k).is_file() for k in ks):
        say(f"{folder.name}: training the dense network to iteration {max(ks)} (θk)")
        snaps = parent_snapshots(study.experiment.template, study.data, config, theta0, seed,
                                 ks, study.device)  # fmt: skip
        for k in ks:
            folder.save_tensors(folder.parent_path(k), snaps[k])
    return {k: masked_weights(load_tensors(folder.parent_path(k)), target.masks) for k in ks}


def _analyze(run_dir, study, target, settings, starts, schedule, checkpoint_seconds, quiet):
    """Open the analysis's folder and measure every starting point; update summary.csv."""
    config = study.experiment.level_train_config(target.level, target.branch)
    with StabilityFolder(Path(run_dir), target.name, settings, checkpoint_seconds) as folder, \
            StopOnSignal() as stop:  # fmt: skip
        if callable(starts):
            starts = starts(folder)
        plan = (lambda k: schedule) if schedule else (lambda k: (k, config))
        rows = _run_points(study, target, folder, starts, plan, settings["copies"],
                           settings["points"], _say(quiet), lambda: stop.name)  # fmt: skip
        update_summary(Path(run_dir), rows)
    return rows


def _say(quiet: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if not quiet:
            print(text, file=sys.stderr, flush=True)

    return say


__all__ = [
    "CANDIDATES",
    "MAX_PATH_POINTS",
    "STABLE",
    "analyze_level",
    "check_configuration",
    "check_counts",
    "check_memory",
    "find_rewind",
    "train_copies",
]
