"""The run folder as an experiment's store: checkpoints, resume and the single-writer lock.

The folder's format is declared in :mod:`lth.runfolder.layout` (names and paths),
:mod:`lth.runfolder.tables` (CSV columns) and :mod:`lth.runfolder.manifest` (the marker and the
manifest); files are written with :mod:`lth.core.fileio`. A level counts as finished only once
``.lth/progress.json`` says so; that is written last, after the level's weights and tables.
Every file lth writes there is recorded in ``.lth/manifest.json`` with its sha256
(:class:`lth.runfolder.manifest.RunWriter`); a resume refuses a folder whose files were changed
since lth wrote them, and ``--overwrite`` deletes only the files the manifest lists, while
unchanged.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from lth.config import ExperimentConfig
from lth.configfile import applied_settings, read_run_config, read_run_info, toml_text
from lth.core.fileio import load_tensors, tensor_bytes
from lth.core.models import build_model, call_factory
from lth.core.training import History, Trainer
from lth.data import get_spec
from lth.errors import LTHError
from lth.runfolder.csvio import csv_text, is_missing, read_rows, to_float, to_int
from lth.runfolder.layout import (
    CONFIG,
    INTERNAL,
    LOCK,
    MANIFEST,
    MARKER,
    MARKER_FORMAT,
    PROGRESS,
    checkpoint_level,
    checkpoint_path,
    level_branches,
    level_dir,
    level_file,
)
from lth.runfolder.manifest import (
    Manifest,
    RunWriter,
    clear_run,
    read_marker,
    remove_temporaries,
    unlisted_message,
    unmarked_message,
    write_marker,
)
from lth.runfolder.results import LevelResult
from lth.runfolder.tables import LAYERS, METRICS, SUMMARY, with_logged
from lth.usercode import CodeTrust, as_trust

WHICH = ("final", "init")
_TABLES = {"metrics": METRICS, "summary": SUMMARY, "layers": LAYERS}
_DAMAGED = "start over with --overwrite or use another --out"


def load_ticket(
    run_dir: str | Path,
    level: int,
    branch: str = "ticket",
    replicate: int = 0,
    which: str = "final",
    model: nn.Module | Callable[..., nn.Module] | None = None,
    trust_code: bool | CodeTrust = False,
):
    """Load a trained ticket from a run folder as a ready nn.Module with its mask applied.

    Returns ``(model, masks)``: the run's model holding the weights of
    ``<branch>/<replicate>/level_<LL>/<which>.safetensors`` (``which`` is ``"final"``, the
    trained weights, or ``"init"``, the weights the level started training from), pruned
    entries exactly 0, and the level's masks (parameter name -> bool tensor)::

        model, masks = load_ticket("runs/lenet_300_100-mnist-20250101-120000", level=3)

    The model is built from the run's config: a registry name directly; a run of a user model
    needs ``model=`` (an ``nn.Module`` of the same architecture, whose weights are replaced, or
    its factory); a ``package.module:function`` recorded in the run is imported only with
    ``trust_code=True`` (a run folder is data, and code named in it is not run by default;
    a :class:`~lth.usercode.CodeTrust` instead of a bool allows the code it names).

    Args:
        run_dir: The run folder (``lth run --out``).
        level: The pruning level, 0 for the dense network.
        branch: ``"ticket"`` or one of the run's controls.
        replicate: The replicate, from 0.
        which: ``"final"`` (the trained weights) or ``"init"`` (where the level started).
        model: For a run of a user model: an ``nn.Module`` of its architecture, or its factory.
        trust_code: Import a ``package.module:function`` model the run names.

    Returns:
        tuple[nn.Module, dict[str, torch.Tensor]]: The model holding the weights, pruned
        entries exactly 0, and the level's masks.

    Raises:
        LTHError: A folder that is not a run, a level, branch or replicate it lacks, code
            that is not trusted.

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
        >>> model, masks = lth.load_ticket(run, level=1, model=net)
        >>> sorted(masks), round(sum(int(m.sum()) for m in masks.values()) / 152, 3)
        (['1.weight', '3.weight'], 0.816)
        >>> bool((model[1].weight[~masks["1.weight"]] == 0).all())
        True
    """
    run_dir = Path(run_dir)
    if which not in WHICH:
        raise LTHError(f"unknown weights {which!r}; choose one of {', '.join(WHICH)}")
    config = read_config(run_dir)
    branches = ("ticket", *config.controls)
    if branch not in branches:
        raise LTHError(f"unknown branch {branch!r}; this run has {', '.join(branches)}")
    if not isinstance(replicate, int) or not 0 <= replicate < config.replicates:
        raise LTHError(
            f"replicate {replicate!r} is out of range; this run has replicates "
            f"0 to {config.replicates - 1}"
        )
    if not isinstance(level, int) or not 0 <= level <= config.levels:
        raise LTHError(f"level {level!r} is out of range; this run has levels 0 to {config.levels}")
    folder = level_dir(run_dir, branch, replicate, level)
    if not folder.is_dir() and branch not in level_branches(config.controls, level):
        raise LTHError(
            f"the {branch} control has no level 0: the controls start at level 1, level 0 is "
            "the dense network (branch ticket)"
        )
    if not folder.is_dir():
        raise LTHError(
            f"{folder} does not exist: level {level} has not finished yet, or this replicate's "
            "ticket diverged before it"
        )
    weights = load_tensors(level_file(run_dir, branch, replicate, level, which))
    mask_file = level_file(run_dir, branch, replicate, level, "mask")
    masks = {k: v.bool() for k, v in load_tensors(mask_file).items()}
    source = read_run_info(run_dir).get("source", {})
    if "data_input_shape" in source:
        shape, classes = tuple(source["data_input_shape"]), int(source["data_num_classes"])
    else:
        spec = get_spec(config.dataset)
        shape, classes = tuple(spec.input_shape), spec.num_classes
    if isinstance(model, nn.Module):
        pass
    elif model is not None:
        model = call_factory(model, shape, classes, repr(model))
    elif config.model == "user model":
        raise LTHError(
            f"{run_dir} was run with a user model ({source.get('model_class', 'nn.Module')}); "
            "pass it as load_ticket(..., model=...)"
        )
    else:
        model = build_model(config.model, shape, classes, as_trust(trust_code))
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        problem = " ".join(str(e).split())
        raise LTHError(f"{folder} does not fit model {config.model!r}: {problem}") from None
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, m in masks.items():
            if name not in params or params[name].shape != m.shape:
                raise LTHError(f"{mask_file} does not fit model {config.model!r}")
            params[name].masked_fill_(~m, 0.0)
    return model, masks


def read_config(run_dir: str | Path) -> ExperimentConfig:
    """The experiment configuration stored in a run folder (see :mod:`lth.config`)."""
    return read_run_config(run_dir)


class RunFolder:
    """A run folder on disk that an :class:`~lth.study.experiment.Experiment` saves into and
    resumes.

    ``open()`` (or ``with RunFolder(...) as folder``) creates or reopens it, takes an exclusive
    lock (a second process is refused), refuses a folder holding another configuration (unless
    ``overwrite``) and reloads the finished levels; the object then serves as the experiment's
    :class:`~lth.runfolder.results.Store`. :func:`lth.run_experiment` with ``out=`` does all this.

    Args:
        path: The folder.
        config: The study it holds; a folder holding another one is refused.
        environment: Facts about the machine recorded in ``config.toml`` (``[environment]``).
        overwrite: Start over, deleting exactly the files lth wrote there (by its manifest).
        checkpoint_seconds: Seconds between in-level checkpoints (0: at every evaluation).

    Examples:
        >>> import tempfile, lth
        >>> config = lth.ExperimentConfig(levels=1, iterations=10)
        >>> with lth.RunFolder(tempfile.mkdtemp() + "/run", config) as folder:
        ...     print(sorted(p.name for p in folder.path.iterdir()))
        ['.lth', '.lth-run', 'config.toml']
        >>> folder.load_level(0) is None  # nothing trained yet
        True
    """

    def __init__(
        self,
        path: str | Path,
        config: ExperimentConfig,
        *,
        environment: dict | None = None,
        overwrite: bool = False,
        checkpoint_seconds: float = 60.0,
    ):
        self.path = Path(path)
        self.config = config
        self.environment = environment or {}
        self.source: dict = {}  # what a Python study ran: user model and data (lth.study.runner)
        self.augments: bool | None = None  # whether the data augments (None: its spec says)
        self.overwrite = overwrite
        self.checkpoint_seconds = checkpoint_seconds
        self.internal = self.path / INTERNAL
        self._lock_file = None
        self._last_checkpoint = time.monotonic()
        self.rows: dict[str, list[dict]] = {"metrics": [], "summary": [], "layers": []}
        self.levels_done = -1
        self._metrics_index: dict[tuple, list[dict]] | None = None
        self.manifest = Manifest(self.path)  # as loaded on open, for its checks
        self.writer = RunWriter(self.path)

    # -- opening, locking, resuming ---------------------------------------------------------
    def check(self) -> bool:
        """Raise :class:`LTHError` if this folder cannot hold this run; touches nothing on disk.

        Refuses a file, a folder holding other files, and (unless ``overwrite``) a run folder
        whose configuration differs, naming the differing settings. Returns whether the
        folder already holds a run (with the same settings, or to be overwritten).
        """
        if self.path.exists() and not self.path.is_dir():
            raise LTHError(f"--out {self.path} is a file; choose a folder path")
        blocker = next((p for p in self.path.parents if p.exists()), None)
        if not self.path.exists() and blocker is not None and not blocker.is_dir():
            raise LTHError(
                f"cannot create --out {self.path}: {blocker} is a file; choose another folder"
            )
        existing = (self.path / CONFIG).exists()
        foreign = self.path.is_dir() and not existing and not self.internal.exists()
        if foreign and any(self.path.iterdir()):
            raise LTHError(
                f"--out {self.path} already holds files and is not an lth run folder; "
                "choose a new or empty folder"
            )
        if existing and self.overwrite and not (self.path / MARKER).is_file():
            raise LTHError(unmarked_message(self.path))
        if existing and self.overwrite and not (self.internal / MANIFEST).is_file():
            raise LTHError(unlisted_message(self.path))
        if existing and not self.overwrite:
            old = self.settings(read_config(self.path))
            new = self.settings(self.config)
            diff = [f"{k} ({old.get(k)!r} -> {new.get(k)!r})" for k in new | old
                    if old.get(k) != new.get(k)]  # fmt: skip
            if diff:
                raise LTHError(
                    f"{self.path} holds a run with other settings: {', '.join(diff)}; "
                    "use --overwrite to start over or another --out"
                )
        return existing

    def settings(self, config: ExperimentConfig) -> dict:
        """The settings of ``config`` that apply to this run (:func:`applied_settings`): what
        its config.toml records, and what a resume compares."""
        augments = self.augments
        if augments is None:
            try:
                augments = get_spec(config.dataset).augmentation is not None
            except LTHError:  # data lth does not know: keep the setting
                augments = True
        return applied_settings(config.to_dict(), augments)

    def open(self) -> RunFolder:
        """Create or reopen the folder, take the lock and load finished levels' tables."""
        existing = self.check()
        try:
            self.internal.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.internal / LOCK, "a")  # noqa: SIM115
        except OSError as e:
            raise LTHError(
                f"cannot write to {self.path}: {e.strerror}; choose another --out"
            ) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise LTHError(
                f"another lth process is using {self.path}; wait for it or choose another --out"
            ) from None
        try:
            if existing and self.overwrite:
                clear_run(self.path)
                existing = False
            with self.writer.update(create=True) as manifest:  # saved once all is checked
                if existing:
                    self._open_manifest(manifest)
                    self._load_progress()
                self.manifest = manifest
            self._remove_finished_checkpoints()
            if read_marker(self.path)[0] != MARKER_FORMAT:  # a new folder, or an older lth's
                write_marker(self.path)
            remove_temporaries(self.path)
            info = {"environment": self.environment, "source": self.source}
            text = toml_text(self.settings(self.config) | {k: v for k, v in info.items() if v})
            self._write_config(text)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        """Release the lock."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> RunFolder:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_manifest(self, manifest: Manifest) -> None:
        """Check the files of a run being resumed against its manifest (as read under its
        lock), taking the files a kill left half-written as they are now. A run folder of an
        older lth may have none: its files are then taken as they are; a folder whose current
        marker says it has one is refused."""
        if not manifest.path.is_file():
            if read_marker(self.path)[0] >= MARKER_FORMAT:
                raise LTHError(
                    f"{self.path} has no {INTERNAL}/{MANIFEST} although its {MARKER} says this "
                    "lth made it, so lth cannot tell its files from others' and neither resumes "
                    "nor overwrites it; move what you want to keep and delete the folder, or "
                    "use another --out"
                )
            manifest.files = Manifest.of_files(self.path).files
            return
        problems = manifest.problems()
        if problems:
            raise LTHError(
                f"{problems[0]}; put back what lth wrote, or move it away and start over with "
                "--overwrite, or use another --out"
            )
        manifest.settle()

    def _write_config(self, text: str) -> None:
        path, data = self.path / CONFIG, text.encode()
        with contextlib.suppress(OSError):
            if path.read_bytes() == data and CONFIG in self.manifest.files:
                return
        self.writer.write_files({path: data})

    def _load_progress(self) -> None:
        progress = self.internal / PROGRESS
        if not progress.exists():
            return
        try:
            self.levels_done = int(json.loads(progress.read_text())["levels_done"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LTHError(f"cannot read {progress} ({e}); {_DAMAGED}") from None
        for name, table in _TABLES.items():
            path = self.path / table.file
            rows = read_rows(path, table, _DAMAGED)
            try:
                self.rows[name] = [r for r in rows if to_int(r["level"]) <= self.levels_done]
            except ValueError as e:
                raise LTHError(f"cannot read {path} (level {e}); {_DAMAGED}") from None
        for level in range(self.levels_done + 1):
            rows = [r for r in self.rows["summary"] if int(r["level"]) == level]
            if not any(r["branch"] == "ticket" for r in rows):
                raise LTHError(
                    f"{self.path / SUMMARY.file} lacks results of level {level}, which "
                    f"{progress} says is finished; {_DAMAGED}"
                )

    # -- the Store protocol -----------------------------------------------------------------
    def load_level(self, level: int) -> list[LevelResult] | None:
        """A finished level's results, read back from disk; None if it must be trained."""
        if level > self.levels_done:
            return None
        results = []
        for row in self.rows["summary"]:
            if int(row["level"]) != level:
                continue
            branch, rep = row["branch"], int(row["replicate"])
            file = functools.partial(level_file, self.path, branch, rep, level)
            masks = {k: v.bool() for k, v in load_tensors(file("mask")).items()}
            snapshots = {
                int(p.stem.split("_")[1]): load_tensors(p)
                for p in level_dir(self.path, branch, rep, level).glob("step_*.safetensors")
            }
            results.append(
                LevelResult(
                    branch, rep, level, masks,
                    load_tensors(file("init")),
                    load_tensors(file("final")),
                    self._history(branch, rep, level, row["diverged_at"]),
                    snapshots, exclude=tuple(self.config.exclude), cost=_cost(row),
                )
            )  # fmt: skip
        return results

    def _history(self, branch: str, rep: int, level: int, diverged: str) -> History:
        if self._metrics_index is None:  # rows of each network, indexed once
            self._metrics_index = {}
            for r in self.rows["metrics"]:
                key = (r["branch"], int(r["replicate"]), int(r["level"]))
                self._metrics_index.setdefault(key, []).append(r)
        h = History(diverged_at=None if is_missing(diverged) else to_int(diverged))
        for r in self._metrics_index.get((branch, rep, level), []):
            h.iteration.append(int(r["iteration"]))
            for name in ("train_loss", "val_loss", "val_acc", "test_acc"):
                getattr(h, name).append(to_float(r.get(name)))
        return h

    def save_level(self, level: int, results: list[LevelResult]) -> None:
        """Write a finished level: weights first, then the tables, then the progress marker.

        The manifest names the files before they are written and gets their checksums after.
        """
        files: dict[Path, dict[str, Tensor]] = {}
        for res in results:
            file = functools.partial(level_file, self.path, res.branch, res.replicate, level)
            files[file("mask")] = res.masks
            files[file("init")] = res.init
            files[file("final")] = res.final
            for step, weights in res.snapshots.items():
                files[file(f"step_{step}")] = weights
        progress = self.internal / PROGRESS
        self.writer.begin([*files, *(self.path / t.file for t in _TABLES.values()), progress])
        for path, tensors in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            self.writer.write(path, tensor_bytes(tensors))
        for res in results:
            self.rows["summary"].append(res.summary())
            self.rows["metrics"] += metrics_rows(res)
            self.rows["layers"] += layer_rows(res)
        self._metrics_index = None
        self.write_tables()
        self.writer.write(progress, json.dumps({"levels_done": level}))
        self.writer.end()
        self.levels_done = level
        self._remove_finished_checkpoints()

    def _remove_finished_checkpoints(self) -> None:
        """Delete the in-level checkpoints of finished levels that lth wrote (the manifest lists
        them): also those a process killed between a level's progress marker and this cleanup
        left behind."""
        finished = []
        for rel in self.writer.listed():
            level = checkpoint_level(rel)
            if level is not None and level <= self.levels_done:
                finished.append(rel)
        if finished:
            self.writer.remove(finished)

    def write_tables(self) -> None:
        """Rewrite metrics.csv, summary.csv and layers.csv from the finished levels."""
        for name, table in _TABLES.items():
            rows = self.rows[name]  # metrics.csv: with any columns a user's loop logged
            self.writer.write(self.path / table.file, csv_text(rows, with_logged(table, rows)))

    def _checkpoint_path(self, level: int, group: int) -> Path:
        return checkpoint_path(self.path, level, group)

    def load_checkpoint(self, level: int, group: int) -> dict | None:
        """The last in-level checkpoint of a group of tickets, if one was saved."""
        path = self._checkpoint_path(level, group)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            problem = " ".join(str(e).split())[:100] or type(e).__name__
            raise LTHError(
                f"checkpoint {path} is damaged ({problem}); delete it to redo level {level} "
                "from its start"
            ) from None

    def save_checkpoint(
        self, level: int, group: int, trainer: Trainer, force: bool = False
    ) -> None:
        """Checkpoint a group's training every ``checkpoint_seconds`` (0: at every evaluation),
        or now when ``force`` (an interrupt)."""
        now = time.monotonic()
        if not force and now - self._last_checkpoint < self.checkpoint_seconds:
            return
        done = trainer.iteration >= trainer.config.iterations
        if done:
            return
        self.save_unit(level, group, trainer.state_dict())
        self._last_checkpoint = time.monotonic()

    def save_unit(self, level: int, group: int, state: dict) -> None:
        """Save a group's training state (:meth:`Trainer.state_dict`) as its checkpoint; a
        finished group's state is a finished unit of an unfinished level, which a resume
        (with any executor) takes as it is."""
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.writer.write_files({self._checkpoint_path(level, group): buffer.getvalue()})


def _cost(row: dict) -> tuple[int, int] | None:
    """(params, flops) of a summary row as read back; None when it has none (older lth)."""
    params, flops = row.get("params", ""), row.get("flops", "")
    return None if is_missing(params) or is_missing(flops) else (to_int(params), to_int(flops))


def metrics_rows(res: LevelResult) -> list[dict]:
    """metrics.csv rows of one trained network (with what a user's loop logged, if any)."""
    h, remaining = res.history, res.weights_remaining
    logged = getattr(h, "logged", {})  # lth.study.userloop.LoggedHistory
    return [
        {
            "branch": res.branch, "replicate": res.replicate, "level": res.level,
            "iteration": it, "weights_remaining": remaining, "train_loss": tl,
            "val_loss": vl, "val_acc": va, "test_acc": ta,
        } | {name: values[i] for name, values in logged.items()}
        for i, (it, tl, vl, va, ta) in enumerate(
            zip(h.iteration, h.train_loss, h.val_loss, h.val_acc, h.test_acc))
    ]  # fmt: skip


def layer_rows(res: LevelResult) -> list[dict]:
    """layers.csv rows of one trained network."""
    rows = []
    for name, m in res.masks.items():
        kept, total = int(m.sum()), m.numel()
        rows.append({
            "branch": res.branch, "replicate": res.replicate, "level": res.level, "layer": name,
            "kept": kept, "total": total, "remaining": 100.0 * kept / total,
            "shape": "x".join(str(s) for s in m.shape), "dead_units": res.dead_units.get(name),
        })  # fmt: skip
    return rows
