"""The run folder: layout, atomic writes, checkpoints, resume and the single-writer lock.

Layout (``RUN_DIR``)::

    config.toml                      resolved configuration (enough to repeat the run)
    metrics.csv                      one row per evaluation
    summary.csv                      one row per branch, replicate and level
    layers.csv                       weights kept per layer, per branch, replicate and level
    <branch>/<replicate>/level_<LL>/ mask.safetensors, init.safetensors, final.safetensors
                                     (and step_<k>.safetensors: weights at iteration k)
    plots/                           figures
    .lth/                            progress, in-level checkpoints, lock (internal)

Every file is written to a temporary name and renamed into place, so a reader never sees a
truncated file. A level counts as finished only once ``.lth/progress.json`` says so; that is
written last, after the level's weights and tables.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import io
import json
import math
import os
import re
import shutil
import time
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

from .errors import LTHError
from .experiment import ExperimentConfig, LevelResult
from .masks import _ORDER_KEY as ORDER_KEY  # the same metadata key as lth.masks.save_masks
from .training import History, Trainer

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

METRICS_COLUMNS = [
    "branch", "replicate", "level", "iteration", "weights_remaining",
    "train_loss", "val_loss", "val_acc", "test_acc",
]  # fmt: skip
SUMMARY_COLUMNS = [
    "branch", "replicate", "level", "weights_remaining", "test_acc", "early_stop_iteration",
    "test_acc_at_early_stop", "best_val_acc", "diverged_at",
]  # fmt: skip
LAYERS_COLUMNS = ["branch", "replicate", "level", "layer", "kept", "total", "remaining", "shape"]
WHICH = ("final", "init")
_TMP_NAME = re.compile(r"^\..+\.tmp\d+$")


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` via a temporary file and a rename: never leaves a torn file.

    An :class:`OSError` (disk full, permissions) is re-raised with ``filename`` set to ``path``,
    after the temporary file is removed.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    raw = data.encode() if isinstance(data, str) else data
    try:
        with open(tmp, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def save_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    """Save tensors as safetensors, atomically; the dict's key order is kept in the metadata.

    (safetensors itself stores names sorted; the order matters because random draws follow it.)
    """
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(path, st_save(data, metadata={ORDER_KEY: json.dumps(list(data))}))


def load_tensors(path: Path) -> dict[str, Tensor]:
    """Load a safetensors file written by :func:`save_tensors`, in the order it was saved."""
    try:
        raw = Path(path).read_bytes()
        tensors = st_load(raw)
        size = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + size]).get("__metadata__") or {}
        order = json.loads(metadata.get(ORDER_KEY, "[]"))
    except FileNotFoundError:
        raise LTHError(f"{path} is missing; the run folder is incomplete") from None
    except Exception as e:
        raise LTHError(f"{path} is not a readable safetensors file ({e})") from None
    names = [n for n in order if n in tensors] + [n for n in tensors if n not in order]
    return {n: tensors[n] for n in names}


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def csv_text(rows: list[dict], columns: list[str]) -> str:
    """Rows as CSV text with exactly these columns (floats written with full precision)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_fmt(row.get(c)) for c in columns])
    return out.getvalue()


def toml_text(values: dict) -> str:
    """A flat dict (plus one level of tables) as TOML."""

    def literal(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, list | tuple):
            return "[" + ", ".join(literal(x) for x in v) + "]"
        return json.dumps(str(v))

    lines, tables = [], []
    for key, v in values.items():
        if isinstance(v, dict):
            tables.append((key, v))
        elif v is not None:
            lines.append(f"{key} = {literal(v)}")
    for name, table in tables:
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {literal(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def level_dir(root: Path, branch: str, replicate: int, level: int) -> Path:
    """Folder of one branch, replicate and level, e.g. ``ticket/0/level_03``."""
    return Path(root) / branch / str(replicate) / f"level_{level:02d}"


def load_ticket(
    run_dir: str | Path,
    level: int,
    branch: str = "ticket",
    replicate: int = 0,
    which: str = "final",
):
    """Load a trained ticket from a run folder as a ready nn.Module with its mask applied.

    Returns ``(model, masks)``: the registry model of the run's config holding the weights of
    ``<branch>/<replicate>/level_<LL>/<which>.safetensors`` (``which`` is ``"final"``, the
    trained weights, or ``"init"``, the weights the level started training from), pruned
    entries exactly 0, and the level's masks (parameter name -> bool tensor)::

        model, masks = load_ticket("runs/lenet_300_100-mnist-20250101-120000", level=3)
    """
    from .data import get_spec

    try:
        from .experiment import build_model  # registry names and package.module:function
    except ImportError:  # pragma: no cover - an experiment module without factories
        from .models import create_model as build_model

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
    if not folder.is_dir():
        raise LTHError(
            f"{folder} does not exist: level {level} has not finished yet, or this replicate's "
            "ticket diverged before it"
        )
    weights = load_tensors(folder / f"{which}.safetensors")
    masks = {k: v.bool() for k, v in load_tensors(folder / "mask.safetensors").items()}
    spec = get_spec(config.dataset)
    model = build_model(config.model, tuple(spec.input_shape), spec.num_classes)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        problem = " ".join(str(e).split())
        raise LTHError(f"{folder} does not fit model {config.model!r}: {problem}") from None
    with torch.no_grad():
        params = dict(model.named_parameters())
        for name, m in masks.items():
            if name not in params or params[name].shape != m.shape:
                raise LTHError(f"{folder}/mask.safetensors does not fit model {config.model!r}")
            params[name].masked_fill_(~m, 0.0)
    return model, masks


def read_config(run_dir: str | Path) -> ExperimentConfig:
    """The experiment configuration stored in a run folder."""
    path = Path(run_dir) / "config.toml"
    try:
        values = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise LTHError(f"{run_dir} is not an lth run folder (no config.toml)") from None
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise LTHError(f"cannot read {path}: {e}") from None
    values.pop("environment", None)
    return ExperimentConfig.from_dict(values)


class RunFolder:
    """A run folder on disk that an :class:`~lth.experiment.Experiment` saves into and resumes.

    ``open()`` (or ``with RunFolder(...) as folder``) creates or reopens it, takes an exclusive
    lock (a second process is refused), refuses a folder holding another configuration (unless
    ``overwrite``) and reloads the finished levels; the object then serves as the experiment's
    :class:`~lth.experiment.Store`.
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
        self.overwrite = overwrite
        self.checkpoint_seconds = checkpoint_seconds
        self.internal = self.path / ".lth"
        self._lock_file = None
        self._last_checkpoint = time.monotonic()
        self.rows: dict[str, list[dict]] = {"metrics": [], "summary": [], "layers": []}
        self.levels_done = -1
        self._metrics_index: dict[tuple, list[dict]] | None = None

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
        existing = (self.path / "config.toml").exists()
        foreign = self.path.is_dir() and not existing and not self.internal.exists()
        if foreign and any(self.path.iterdir()):
            raise LTHError(
                f"--out {self.path} already holds files and is not an lth run folder; "
                "choose a new or empty folder"
            )
        if existing and not self.overwrite:
            old = read_config(self.path).to_dict()
            new = self.config.to_dict()
            diff = [f"{k} ({old.get(k)!r} -> {new[k]!r})" for k in new if old.get(k) != new[k]]
            if diff:
                raise LTHError(
                    f"{self.path} holds a run with other settings: {', '.join(diff)}; "
                    "use --overwrite to start over or another --out"
                )
        return existing

    def open(self) -> RunFolder:
        """Create or reopen the folder, take the lock and load finished levels' tables."""
        existing = self.check()
        try:
            self.internal.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(self.internal / "lock", "a")  # noqa: SIM115
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
                self._clear()
                existing = False
            self._remove_temporaries()
            if existing:
                self._load_progress()
            environment = {"environment": self.environment} if self.environment else {}
            text = toml_text(self.config.to_dict() | environment)
            atomic_write(self.path / "config.toml", text)
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

    def _clear(self) -> None:
        for child in self.path.iterdir():
            if child == self.internal:
                for inner in child.iterdir():
                    if inner.name != "lock":
                        shutil.rmtree(inner) if inner.is_dir() else inner.unlink()
            elif child.is_dir():
                shutil.rmtree(child)
            else:
                child.unlink()

    def _remove_temporaries(self) -> None:
        """Delete the temporary files of writes that a killed process left unfinished."""
        for path in self.path.rglob(".*.tmp*"):
            if _TMP_NAME.match(path.name) and path.is_file():
                path.unlink()

    def _load_progress(self) -> None:
        progress = self.internal / "progress.json"
        if not progress.exists():
            return
        damaged = "; start over with --overwrite or use another --out"
        try:
            self.levels_done = int(json.loads(progress.read_text())["levels_done"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LTHError(f"cannot read {progress} ({e}){damaged}") from None
        for name in self.rows:
            path = self.path / f"{name}.csv"
            try:
                with open(path, newline="") as f:
                    self.rows[name] = [
                        r for r in csv.DictReader(f) if int(r["level"]) <= self.levels_done
                    ]
            except OSError as e:
                raise LTHError(f"cannot read {path}: {e.strerror}{damaged}") from None
            except (ValueError, KeyError, TypeError, csv.Error) as e:
                raise LTHError(f"cannot read {path} ({e}){damaged}") from None
        for level in range(self.levels_done + 1):
            rows = [r for r in self.rows["summary"] if int(r["level"]) == level]
            if not any(r["branch"] == "ticket" for r in rows):
                raise LTHError(
                    f"{self.path / 'summary.csv'} lacks results of level {level}, which "
                    f"{progress} says is finished{damaged}"
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
            folder = level_dir(self.path, branch, rep, level)
            masks = {k: v.bool() for k, v in load_tensors(folder / "mask.safetensors").items()}
            snapshots = {
                int(p.stem.split("_")[1]): load_tensors(p)
                for p in folder.glob("step_*.safetensors")
            }
            results.append(
                LevelResult(
                    branch, rep, level, masks,
                    load_tensors(folder / "init.safetensors"),
                    load_tensors(folder / "final.safetensors"),
                    self._history(branch, rep, level, row["diverged_at"]),
                    snapshots,
                )
            )  # fmt: skip
        return results

    def _history(self, branch: str, rep: int, level: int, diverged: str) -> History:
        if self._metrics_index is None:  # rows of each network, indexed once
            self._metrics_index = {}
            for r in self.rows["metrics"]:
                key = (r["branch"], int(r["replicate"]), int(r["level"]))
                self._metrics_index.setdefault(key, []).append(r)
        h = History(diverged_at=int(diverged) if diverged else None)
        for r in self._metrics_index.get((branch, rep, level), []):
            h.iteration.append(int(r["iteration"]))
            for name in ("train_loss", "val_loss", "val_acc", "test_acc"):
                getattr(h, name).append(float(r[name]))
        return h

    def save_level(self, level: int, results: list[LevelResult]) -> None:
        """Write a finished level: weights first, then the tables, then the progress marker."""
        for res in results:
            folder = level_dir(self.path, res.branch, res.replicate, level)
            folder.mkdir(parents=True, exist_ok=True)
            save_tensors(folder / "mask.safetensors", res.masks)
            save_tensors(folder / "init.safetensors", res.init)
            save_tensors(folder / "final.safetensors", res.final)
            for step, weights in res.snapshots.items():
                save_tensors(folder / f"step_{step}.safetensors", weights)
            self.rows["summary"].append(res.summary())
            self.rows["metrics"] += metrics_rows(res)
            self.rows["layers"] += layer_rows(res)
        self._metrics_index = None
        self.write_tables()
        atomic_write(self.internal / "progress.json", json.dumps({"levels_done": level}))
        self.levels_done = level
        for ckpt in self.internal.glob(f"level_{level:02d}_group_*.pt"):
            ckpt.unlink()

    def write_tables(self) -> None:
        """Rewrite metrics.csv, summary.csv and layers.csv from the finished levels."""
        columns = {"metrics": METRICS_COLUMNS, "summary": SUMMARY_COLUMNS, "layers": LAYERS_COLUMNS}
        for name, cols in columns.items():
            atomic_write(self.path / f"{name}.csv", csv_text(self.rows[name], cols))

    def _checkpoint_path(self, level: int, group: int) -> Path:
        return self.internal / f"level_{level:02d}_group_{group:02d}.pt"

    def load_checkpoint(self, level: int, group: int) -> dict | None:
        """The last in-level checkpoint of a group of tickets, if one was saved."""
        path = self._checkpoint_path(level, group)
        if not path.exists():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise LTHError(
                f"checkpoint {path} is unreadable ({e}); delete it to redo the level"
            ) from None

    def save_checkpoint(self, level: int, group: int, trainer: Trainer) -> None:
        """Checkpoint a group's training every ``checkpoint_seconds`` (0: at every evaluation)."""
        now = time.monotonic()
        if now - self._last_checkpoint < self.checkpoint_seconds:
            return
        done = trainer.iteration >= trainer.config.iterations
        if done:
            return
        buffer = io.BytesIO()
        torch.save(trainer.state_dict(), buffer)
        atomic_write(self._checkpoint_path(level, group), buffer.getvalue())
        self._last_checkpoint = time.monotonic()


def metrics_rows(res: LevelResult) -> list[dict]:
    """metrics.csv rows of one trained network."""
    h, remaining = res.history, res.weights_remaining
    return [
        {
            "branch": res.branch, "replicate": res.replicate, "level": res.level,
            "iteration": it, "weights_remaining": remaining, "train_loss": tl,
            "val_loss": vl, "val_acc": va, "test_acc": ta,
        }
        for it, tl, vl, va, ta in zip(h.iteration, h.train_loss, h.val_loss, h.val_acc, h.test_acc)
    ]  # fmt: skip


def layer_rows(res: LevelResult) -> list[dict]:
    """layers.csv rows of one trained network."""
    rows = []
    for name, m in res.masks.items():
        kept, total = int(m.sum()), m.numel()
        rows.append({
            "branch": res.branch, "replicate": res.replicate, "level": res.level, "layer": name,
            "kept": kept, "total": total, "remaining": 100.0 * kept / total,
            "shape": "x".join(str(s) for s in m.shape),
        })  # fmt: skip
    return rows
