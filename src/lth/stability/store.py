"""The files of ``lth stability`` in a run folder (``<run>/stability/``): one analysis's
weights, settings, checkpoints and lock, and its tables (declared in :mod:`lth.runfolder.tables`).

Layout::

    stability/summary.csv                   one row per analysis and starting iteration k
    stability/<analysis>.csv                errors along the paths between the copies
    stability/<analysis>_copies.csv         each copy's seed and own final error
    stability/<analysis>/                   settings.json, copy_<c>_k<k>.safetensors (final
                                            weights), parent_k<k>.safetensors (θk), and the
                                            checkpoints of unfinished copies
    stability/plots/                        figures (:mod:`lth.stability.plots`)
    stability/.lock                         one analysis at a time

Every file is written through :class:`lth.runfolder.manifest.RunWriter`, so that the run folder's
manifest records it.
"""

from __future__ import annotations

import fcntl
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from lth.core.fileio import tensor_bytes
from lth.core.training import Trainer
from lth.errors import LTHError
from lth.runfolder.csvio import csv_text, read_table
from lth.runfolder.layout import STABILITY_DIR
from lth.runfolder.manifest import RunWriter
from lth.runfolder.tables import STABILITY_SUMMARY

_SETTINGS = "settings.json"


class StabilityFolder:
    """``<run>/stability/``: one analysis's files, its lock, checkpoints and settings."""

    def __init__(self, run_dir: Path, name: str, settings: dict, checkpoint_seconds: float):
        self.root = Path(run_dir) / STABILITY_DIR
        self.name = name
        self.settings = settings
        self.checkpoint_seconds = checkpoint_seconds
        self.weights = self.root / name
        self.writer = RunWriter(run_dir)
        self._lock = None
        self._last = time.monotonic()

    def __enter__(self) -> StabilityFolder:
        lock = self.root / ".lock"
        try:
            self.weights.mkdir(parents=True, exist_ok=True)
            made = not lock.exists()
            self._lock = open(lock, "a")  # noqa: SIM115
        except OSError as e:
            raise LTHError(f"cannot write to {self.root}: {e.strerror}") from None
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise LTHError(
                f"another lth stability is writing {self.root}; wait for it to finish"
            ) from None
        if made:
            self.writer.record([lock])
        path = self.weights / _SETTINGS
        if path.is_file():
            old = json.loads(path.read_text())
            diff = [f"{k} ({old.get(k)!r} -> {v!r})" for k, v in self.settings.items()
                    if old.get(k) != v]  # fmt: skip
            if diff:
                self.__exit__()
                raise LTHError(
                    f"{self.weights} holds this analysis with other settings: {', '.join(diff)}; "
                    f"delete {self.weights} and {self.root / self.name}.csv to redo it"
                )
        else:
            self.writer.write_files({path: json.dumps(self.settings, indent=1) + "\n"})
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def copy_path(self, k: int, copy: int) -> Path:
        """The final weights of a copy that started at iteration k."""
        return self.weights / f"copy_{copy}_k{k}.safetensors"

    def parent_path(self, k: int) -> Path:
        """The dense network's weights θk (find-rewind)."""
        return self.weights / f"parent_k{k}.safetensors"

    def _checkpoint(self, what: str) -> Path:
        return self.weights / f"checkpoint_{what}.pt"

    def load_checkpoint(self, what: str) -> dict | None:
        """The checkpoint of an unfinished training, if one was saved."""
        path = self._checkpoint(what)
        if not path.is_file():
            return None
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            problem = " ".join(str(e).split())[:100] or type(e).__name__
            raise LTHError(f"checkpoint {path} is damaged ({problem}); delete it") from None

    def save_checkpoint(self, what: str, trainer: Trainer, force: bool = False) -> None:
        """Checkpoint a training every ``checkpoint_seconds`` (or now, when ``force``)."""
        if not force and time.monotonic() - self._last < self.checkpoint_seconds:
            return
        if trainer.iteration >= trainer.config.iterations:
            return
        buffer = io.BytesIO()
        torch.save(trainer.state_dict(), buffer)
        self.writer.write_files({self._checkpoint(what): buffer.getvalue()})
        self._last = time.monotonic()

    def drop_checkpoint(self, what: str) -> None:
        """Delete a finished training's checkpoint."""
        self.writer.remove([self._checkpoint(what)])

    def save_tensors(self, path: Path, tensors: dict) -> None:
        """Save weights of the analysis (a copy's, θk), atomically."""
        self.writer.write_files({path: tensor_bytes(tensors)})

    def rows(self, table) -> list[dict]:
        """The rows of one of the stability tables so far (none when the file is absent)."""
        path = self.root / table.file.split("/", 1)[1].replace("<analysis>", self.name)
        return read_table(path, table, allow_empty=True) if path.is_file() else []

    def write(self, table, rows: list[dict]) -> None:
        """Write one of the analysis's tables, atomically."""
        path = self.root / table.file.split("/", 1)[1].replace("<analysis>", self.name)
        self.writer.write_files({path: csv_text(rows, table)})


def replace_rows(old: list[dict], new: list[dict], key: Sequence[str]) -> list[dict]:
    """``old`` without the rows of ``new``'s keys, then ``new``; sorted by ``key``."""
    keys = {tuple(r[k] for k in key) for r in new}
    kept = [r for r in old if tuple(r[k] for k in key) not in keys]
    return sorted(kept + new, key=lambda r: tuple(r[k] for k in key))


def update_summary(run_dir: Path, rows: list[dict]) -> None:
    path = Path(run_dir) / STABILITY_SUMMARY.file
    old = read_table(path, STABILITY_SUMMARY, allow_empty=True) if path.is_file() else []
    rows = replace_rows(old, rows, STABILITY_SUMMARY.key)
    RunWriter(run_dir).write_files({path: csv_text(rows, STABILITY_SUMMARY)})
