"""Running a whole study: the one path behind ``lth run`` and :func:`run_experiment`.

It puts the pieces together: the data (:mod:`lth.data`), the level loop
(:mod:`lth.study.experiment`), the run folder (:mod:`lth.runfolder.runs`), the progress display
(:mod:`lth.progress`) and, at the end, the derived tables, mask analysis and figures.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import platform
import threading
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from lth.analysis.mask_analysis import ensure_analysis
from lth.analysis.report import write_summary_stats
from lth.config import ExperimentConfig
from lth.configfile import read_run_info
from lth.core import kernels
from lth.core.training import check_batch_size
from lth.data.user import study_data
from lth.errors import LTHError
from lth.progress import Progress
from lth.pruning.selection import target_rate
from lth.runfolder.publish import cpu_kind
from lth.runfolder.runs import RunFolder
from lth.runfolder.tensorboard import TensorBoardLog
from lth.runfolder.verify import verify_level
from lth.study.executors import LocalExecutor, Study
from lth.study.experiment import Experiment, Hook, LevelResult, MemoryStore, Store
from lth.study.signals import Interrupted, StopOnSignal
from lth.study.userloop import UserLoop
from lth.usercode import CodeTrust, names_code
from lth.version import __version__


class ReportingStore:
    """A Store (the run folder, or memory) that reports each finished level as it goes."""

    def __init__(self, folder: Store, progress: Progress, config):
        self.folder = folder
        self.progress = progress
        self.config = config

    def load_level(self, level: int):
        """A finished level from the folder, reported as such."""
        results = self.folder.load_level(level)
        if results is not None:
            self.progress.level_done(level, results, resumed=True)
            self._diverged(level, results)
        return results

    def save_level(self, level: int, results) -> None:
        """Save a finished level, audit a run folder's files
        (:func:`lth.runfolder.verify.verify_level`: a broken level fails loudly, LTHError) and
        report it."""
        self.folder.save_level(level, results)
        if hasattr(self.folder, "path"):  # a RunFolder: the files can be checked
            verify_level(self.folder.path, level, self.config)
        self.progress.level_done(level, results)
        self._diverged(level, results)

    def load_checkpoint(self, level: int, group: int):
        """A checkpoint of an unfinished level, announced."""
        state = self.folder.load_checkpoint(level, group)
        if state is not None:
            self.progress.line(
                f"level {level}: continuing from the checkpoint at iteration {state['iteration']}"
            )
        return state

    def save_checkpoint(self, level: int, group: int, trainer) -> None:
        """Checkpoint an unfinished level."""
        self.folder.save_checkpoint(level, group, trainer)

    def save_unit(self, level: int, group: int, state: dict) -> None:
        """Keep a finished unit of an unfinished level."""
        self.folder.save_unit(level, group, state)

    def _diverged(self, level: int, results) -> None:
        bad = [r for r in results if r.history.diverged_at is not None]
        for r in bad:
            self.progress.line(
                f"lth: warning: training diverged (NaN or inf loss) for branch {r.branch}, "
                f"replicate {r.replicate}, level {level} at iteration {r.history.diverged_at}; "
                "that branch stopped there (diverged_at in summary.csv)",
                err=True,
            )
        chains = [r.replicate for r in bad if r.branch == "ticket"]
        if chains and level < self.config.levels:
            which = ", ".join(str(c) for c in chains)
            self.progress.line(
                f"lth: warning: the ticket of replicate {which} diverged at level {level}, so "
                "its chain of pruning levels ends there",
                err=True,
            )


def resolve_device(name: str | torch.device) -> torch.device:
    """``"auto"``: CUDA when available, else the CPU; otherwise the device named (CPU or CUDA)."""
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise LTHError(f"invalid device {str(name)!r}; use cpu, cuda, cuda:1, ... or auto")
    return device


def check_model_output(model: nn.Module, data) -> None:
    """One trial forward pass on two real training images: the output must be (2, classes).

    Run before anything is created, so that a model that does not fit the data leaves no
    half-made run folder behind.
    """
    classes = int(data.num_classes)
    trial = copy.deepcopy(model).cpu()  # running statistics of the template stay untouched
    try:
        with torch.no_grad():
            out = trial(data.train_x[:2].detach().cpu())
    except Exception as e:
        problem = " ".join(str(e).split()) or type(e).__name__
        raise LTHError(
            f"the model fails on {data.name}'s images of shape {tuple(data.input_shape)}: "
            f"{type(e).__name__}: {problem}"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, classes):
        raise LTHError(
            f"the model's output for a batch of 2 images is {shape}; it must be (2, {classes}), "
            f"one score per class of {data.name}"
        )


def check_levels(experiment: Experiment, warn: Callable[[str], None]) -> None:
    """Refuse levels that would empty a layer or prune nothing; warn of stalled layers.

    The per-layer counts of every level follow from the sizes and rates alone (layer-wise
    pruning removes ``round(rate × survivors)``), so they are simulated before training.
    Global pruning is checked on the total.
    """
    c = experiment.config
    kept = {n: p.numel() for n, p in experiment.template.named_parameters()}
    kept = {n: kept[n] for n in experiment.prunable}
    size = dict(kept)
    ranked = [n for n in kept if n not in c.exclude]
    stalled: set[str] = set()
    # global pruning ranks these together; the output layer goes alone at its own rate
    pooled = [n for n in ranked if n != experiment.output] if c.pruning == "global" else []
    for level in range(1, c.levels + 1):
        masks = {n: torch.arange(size[n]) < kept[n] for n in kept}
        rates = experiment.rates(masks, level) | dict.fromkeys(c.exclude, 0.0)
        removed = {n: round(rates.get(n, 0.0) * kept[n]) for n in kept if n not in pooled}
        if pooled:
            total, full = sum(kept[n] for n in pooled), sum(size[n] for n in pooled)
            rate = experiment.policy.hidden_rate(level)
            if c.target:
                rate = target_rate(torch.arange(full) < total, c.target, level, c.levels)
            removed |= _spread(kept, pooled, round(rate * total))
        for n in ranked:
            if removed[n] == 0 and n not in stalled and n not in pooled and rates[n] > 0:
                stalled.add(n)
                warn(
                    f"from level {level} on, layer {n} keeps {kept[n]} weights: its rate "
                    "removes none of so few"
                )
        after = {n: kept[n] - removed[n] for n in kept}
        pooled_left = sum(after[n] for n in pooled)
        empty = [n for n in ranked if after[n] <= 0 and n not in pooled]
        empty += ["the globally pruned layers"] if pooled and pooled_left <= 0 else []
        if empty:
            raise LTHError(
                f"level {level} would leave {empty[0]} with no weight; use --levels "
                f"{level - 1} or fewer (or a lower rate)"
            )
        if sum(removed.values()) == 0:
            raise LTHError(
                f"level {level} would prune nothing (too few weights left for the rates), so "
                f"it and later levels would retrain the same network; use --levels {level - 1} "
                "or fewer"
            )
        kept = after


def _spread(kept: dict[str, int], pooled: list[str], removed: int) -> dict[str, int]:
    """Global pruning's ``removed`` weights shared in proportion (the real split is unknown)."""
    total = max(sum(kept[n] for n in pooled), 1)
    share = {n: kept[n] * removed // total for n in pooled}
    if pooled:  # the rounding remainder: the total must be exact
        share[pooled[0]] += removed - sum(share.values())
    return share


def check_study(experiment: Experiment, data, warn: Callable[[str], None]) -> None:
    """Everything about a study that can fail before training: the batch size, the model and
    the levels."""
    check_batch_size(experiment.config.batch_size, data)
    check_model_output(experiment.template, data)
    check_levels(experiment, warn)


def environment(
    device: torch.device,
    data_dir: str | None = None,
    config: ExperimentConfig | None = None,
    run_dir: str | Path | None = None,
) -> dict:
    """What a run folder records about the machine (``[environment]`` of its config.toml).

    With ``config`` (a study on ``--kernels auto`` with levels after the dense one) also the
    density below which its layers run on sparse kernels (:func:`sparse_threshold`).
    """
    info = {
        "device": str(device),
        "data_dir": data_dir,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lth": __version__,
        "python": platform.python_version(),
        "cpu": cpu_kind(),  # lth verify --replay: exact only on the same kind of CPU
    }
    if config is not None and config.kernels == "auto" and config.levels > 0:
        info["sparse_threshold"] = sparse_threshold(device, run_dir)
    return {k: v for k, v in info.items() if v is not None}


def sparse_threshold(device: torch.device, run_dir: str | Path | None = None) -> float:
    """The density below which ``--kernels auto`` runs a layer sparse, pinned for this process.

    A run being resumed keeps the threshold its ``config.toml`` recorded, so its later levels
    pick the kernels its first ones did (a recalibrated threshold could change their float
    rounding); a new run takes this machine's (:func:`lth.core.kernels.threshold`).
    ``LTH_KERNELS_THRESHOLD`` overrides both.
    """
    if run_dir is not None and kernels.fixed_threshold() is None:
        try:
            recorded = read_run_info(run_dir).get("environment", {}).get("sparse_threshold")
        except LTHError:
            recorded = None  # no run there yet (or not one of ours: the folder check says so)
        if isinstance(recorded, int | float) and 0.0 <= recorded <= 1.0:
            return kernels.pin_threshold(device, float(recorded))
    return kernels.threshold(device)


def _factory_spec(factory: Callable) -> str | None:
    """``package.module:function`` of a module-level factory, or None (a lambda, a closure)."""
    module, name = getattr(factory, "__module__", None), getattr(factory, "__qualname__", "")
    if not module or module == "__main__" or not name.isidentifier():
        return None
    return f"{module}:{name}"


def describe_model(model: nn.Module) -> dict:
    """The ``[source]`` entries of a user model: its class and parameter shapes."""
    shapes = [f"{n} {tuple(p.shape)}" for n, p in model.named_parameters()]
    return {"model_class": type(model).__name__, "model_parameters": shapes}


def describe_data(data) -> dict:
    """The ``[source]`` entries of a dataset: name, shapes and a sha256 of its tensors."""
    digest = hashlib.sha256()
    shapes = []
    for split in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y"):
        t = getattr(data, split).detach().cpu().contiguous()
        digest.update(f"{split}{tuple(t.shape)}{t.dtype}".encode())
        digest.update(t.numpy().tobytes())
        shapes.append(f"{split} {tuple(t.shape)}")
    return {
        "data_name": data.name,
        "data_input_shape": list(data.input_shape),
        "data_num_classes": int(data.num_classes),
        "data_tensors": shapes,
        "data_sha256": digest.hexdigest(),
    }


def finish_run(out: Path, warn: Callable[[str], None]) -> None:
    """Derived files of a finished study: statistics over replicates, mask analysis, figures.

    A figure that cannot be drawn is a warning (the study's results are all on disk); a disk
    error is not.
    """
    from lth.analysis import plots  # lazy: matplotlib

    write_summary_stats(out)
    found = ensure_analysis(out)
    try:
        plots.plot_runs([out], out_dir=out / "plots", analyses=[found], mask_analysis=pruned(found))
    except OSError:
        raise
    except Exception as e:  # a figure problem must not hide a finished study
        problem = " ".join(str(e).split())
        warn(f"could not draw the plots ({problem}); retry with: lth plot {out}")


def import_figures_early() -> None:
    """Import matplotlib (with :mod:`lth.analysis.plots`) in a background thread while the
    study trains, so that :func:`finish_run` draws at once (a second of a short study's fixed
    cost; torch's kernels release the GIL, so the two overlap)."""

    def load() -> None:
        # a failure here shows again, and is reported, when finish_run imports it
        with contextlib.suppress(Exception):
            from lth.analysis import plots  # noqa: F401  # lazy: matplotlib, in the background

    threading.Thread(target=load, name="lth-import-figures", daemon=True).start()


def pruned(analysis: tuple[list[dict], list[dict]] | None) -> bool:
    """Whether a run's mask analysis covers a pruned level: a study of level 0 alone has no
    mask to draw (``mask_analysis`` and ``weight_histograms`` are left out: a second saved)."""
    return analysis is not None and any(int(row["level"]) > 0 for row in analysis[0])


def _both(progress: Progress, hook: Hook | None) -> Hook:
    """The progress display's hook, then the caller's."""

    def both(level: int, group: int, trainer) -> None:
        progress.hook(level, group, trainer)
        if hook is not None:
            hook(level, group, trainer)

    return both


def run_in_folder(
    experiment: Experiment,
    folder,
    *,
    quiet: bool = False,
    hook: Hook | None = None,
    warn: Callable[[str], None] | None = None,
    executor=None,
    tensorboard: bool = False,
    silent: bool = False,
) -> list[LevelResult]:
    """Run (or resume) ``experiment`` into a :class:`~lth.runfolder.runs.RunFolder` (opened here).

    SIGINT and SIGTERM stop training at the next evaluation with a checkpoint saved, so that
    running the same study again continues from there (:class:`Interrupted` is raised).
    ``executor``: where the units train (:mod:`lth.study.executors`; default: this process).
    ``tensorboard``: also write TensorBoard event files into the run folder. ``quiet``: no
    progress bars; ``silent``: nothing printed at all but warnings (:class:`Progress`).
    """
    options = {"quiet": quiet, "hook": hook, "warn": warn, "tensorboard": tensorboard}
    options["silent"] = silent
    return run_in_folders([(experiment, folder)], executor=executor, **options)[0]


def run_in_folders(
    studies: list[tuple[Experiment, object]],
    *,
    executor=None,
    quiet: bool = False,
    hook: Hook | None = None,
    warn: Callable[[str], None] | None = None,
    tensorboard: bool = False,
    silent: bool = False,
) -> list[list[LevelResult]]:
    """Run (or resume) several (experiment, RunFolder) studies: one after another with the
    local executor, all submitted together with one that runs them together (Ray)."""
    executor = executor or LocalExecutor()
    options = {"quiet": quiet, "hook": hook, "warn": warn, "tensorboard": tensorboard}
    options["silent"] = silent
    if not executor.together and len(studies) > 1:
        return [run_in_folders([s], executor=executor, **options)[0] for s in studies]
    import_figures_early()
    with contextlib.ExitStack() as stack:
        for _, folder in studies:
            stack.enter_context(folder)
        stop = stack.enter_context(StopOnSignal())
        jobs, progresses = [], []
        try:
            for experiment, folder in studies:
                config = experiment.config
                progress = Progress(
                    config, experiment.train_config.iterations, experiment.group_size(), quiet,
                    silent=silent,
                )  # fmt: skip
                progresses.append(progress)
                progress.line(f"run folder: {folder.path}")
                store = ReportingStore(folder, progress, config)
                shown = _both(progress, hook)
                if tensorboard:
                    log = stack.enter_context(TensorBoardLog(folder.path))
                    store, shown = log.store(store), log.hook(shown)
                hooked = _stopping(folder, stop, shown)
                jobs.append(Study(experiment, store, hooked, progress.line, folder.path.name))
            everything = executor.run(jobs, stop=lambda: stop.name)
        finally:
            for progress in progresses:
                progress.close()
        for (_, folder), progress in zip(studies, progresses):
            warned = warn or (lambda text, p=progress: p.line(f"lth: warning: {text}", True))
            finish_run(folder.path, warned)
    return everything


def _stopping(folder, stop: StopOnSignal, shown: Hook) -> Hook:
    """The hook that stops the study at the next evaluation once a signal came."""

    def both(level: int, group: int, trainer) -> None:
        if stop.name is not None:
            if getattr(trainer, "resumable", True):
                folder.save_checkpoint(level, group, trainer, force=True)
                where = f"checkpoint saved at level {level}, iteration {trainer.iteration}"
            else:  # a user's loop (lth.study.userloop) resumes per level
                where = f"level {level} starts over when the study is run again"
            raise Interrupted(stop.name, where)
        shown(level, group, trainer)

    return both


def run_experiment(
    config: ExperimentConfig | None = None,
    data=None,
    *,
    model: nn.Module | Callable[..., nn.Module] | None = None,
    out: str | Path | None = None,
    device: torch.device | str = "auto",
    data_dir: str | Path | None = None,
    quiet: bool = False,
    overwrite: bool = False,
    store: Store | None = None,
    hook: Hook | None = None,
    executor=None,
    tensorboard: bool = False,
    train: Callable | None = None,
    evaluate: Callable | None = None,
) -> list[LevelResult]:
    """Run a whole study and return every trained network (level 0: the dense one per replicate;
    then the ticket and its controls at every level).

    With no arguments it runs what ``lth run`` runs with no options (the ``default`` preset).

    Args:
        config: The settings (default: ``ExperimentConfig()``). Code it names
            (``package.module:function``) is imported: the caller named it (``lth.usercode``).
        data: A ``Dataset`` (e.g. from ``dataset_from_tensors``); default: ``config.dataset``
            loaded from ``data_dir`` (or the bundled MNIST).
        model: An ``nn.Module`` (the template every ticket copies) or a factory
            ``f(input_shape, num_classes)``; replaces ``config.model``.
        out: A run folder to save into and resume from, as ``lth run --out`` does; its
            ``config.toml`` records what really ran (a user factory as ``module:function``, a
            user module as ``"user model"`` with its parameter shapes, user data with its
            shapes and a sha256 of its tensors). ``lth report``/``lth plot`` read it.
        device: ``"auto"`` (CUDA when there is one), ``"cpu"``, ``"cuda"``, ...
        data_dir: Where ``config.dataset``'s files are (when ``data`` is not given).
        quiet: Print nothing (no progress bars, no line per level; warnings stay, on stderr).
        overwrite: Start ``out`` over, deleting exactly the files lth wrote there.
        store: Where levels and checkpoints go instead of ``out`` (a ``Store``).
        hook: Called as ``hook(level, group, trainer)`` at every evaluation.
        executor: Where the units train, e.g. ``lth.study.executors.RayExecutor()``
            (default: this process).
        tensorboard: TensorBoard event files in ``out`` as training goes.
        train: Your own training loop, ``train(model, ctx)``, called for every network of
            every level in place of lth's engine (:mod:`lth.study.userloop`; the guide's
            "Your training loop" page).
        evaluate: With ``train``: ``evaluate(model) -> dict`` with ``val_loss``, ``val_acc``
            and ``test_acc`` (percent); default: lth's loss and accuracy on ``data``.

    Returns:
        list[LevelResult]: Every trained network, level by level.

    Raises:
        LTHError: Bad input (settings, data, model, output folder), before anything is
            written.

    Examples:
        >>> import tempfile, torch, lth
        >>> from torch import nn
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.rand(200, 1, 4, 4, generator=g), torch.randint(0, 3, (200,), generator=g)
        >>> data = lth.dataset_from_tensors("toy", x[:160], y[:160], x[160:], y[160:], val_size=20)
        >>> net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> config = lth.ExperimentConfig(levels=1, iterations=20, eval_every=10, batch_size=20)
        >>> run = tempfile.mkdtemp() + "/run"
        >>> results = lth.run_experiment(config, data, model=net, out=run, quiet=True)
        >>> [(r.branch, r.level, round(r.weights_remaining, 1)) for r in results]
        [('ticket', 0, 100.0), ('ticket', 1, 81.6), ('reinit', 1, 81.6), ('random_prune', 1, 81.6)]
    """
    config = config or ExperimentConfig()
    dev = resolve_device(device)
    source: dict = {}
    if data is None:  # a registered dataset, or your own (dataset="module:function")
        data = study_data(config.dataset, data_dir, CodeTrust.of(config),
                          val_size=config.val_size, seed=config.seed, device=dev)  # fmt: skip
        if names_code(config.dataset) and out is not None:
            source |= describe_data(data)
    elif out is not None:
        source |= describe_data(data)
        config = dataclasses.replace(config, dataset=str(data.name))
    if model is not None and out is not None:
        spec = None if isinstance(model, nn.Module) else _factory_spec(model)
        config = dataclasses.replace(config, model=spec or "user model")
    experiment = Experiment(config, data, dev, model, trust=CodeTrust.of(config))
    config = experiment.config  # with the initialisation θ0 really uses (init = "model")
    if train is not None or evaluate is not None:  # the user's loop (lth.study.userloop)
        if train is None:
            raise LTHError("evaluate= needs train=, the training loop it evaluates")
        experiment.user_loop = UserLoop.checked(train, evaluate, executor)
        if out is not None:
            source["train"] = _factory_spec(train) or "user function"
    check_study(experiment, data, lambda text: Progress.line_to_stderr(f"lth: warning: {text}"))
    if out is None:
        if tensorboard:
            raise LTHError("tensorboard=True needs out=, the run folder the event files go to")
        executor = executor or LocalExecutor()
        if quiet and store is None:
            return executor.run([Study(experiment, MemoryStore(), hook)])[0]
        progress = Progress(config, experiment.train_config.iterations, experiment.group_size(),
                            quiet, silent=quiet)  # fmt: skip
        try:
            reporting = ReportingStore(store or MemoryStore(), progress, config)
            study = Study(experiment, reporting, _both(progress, hook), progress.line)
            return executor.run([study])[0]
        finally:
            progress.close()
    if config.model == "user model":
        source |= describe_model(experiment.template)
    folder = RunFolder(out, config, overwrite=overwrite)
    folder.augments = getattr(data, "augmentation", None) is not None  # config.toml's augment
    folder.environment = environment(dev, None if data_dir is None else str(data_dir), config, out)
    if source:
        folder.source = source
    return run_in_folder(
        experiment, folder, quiet=quiet, hook=hook, executor=executor, tensorboard=tensorboard,
        silent=quiet,
    )  # fmt: skip


__all__ = [
    "ReportingStore",
    "finish_run",
    "run_experiment",
    "run_in_folder",
    "run_in_folders",
]
