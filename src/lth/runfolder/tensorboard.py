"""TensorBoard event files of a run, written into ``<run>/tensorboard/`` as training goes.

``lth run --tensorboard`` (and ``lth sweep``) write, with
``torch.utils.tensorboard.SummaryWriter``:

- ``<branch>/<replicate>/level_<LL>/<metric>`` against the iteration, for the metrics of
  metrics.csv (``train_loss``, ``val_loss``, ``val_acc``, ``test_acc``): at every evaluation
  of a unit trained in this process, when its unit comes back from another executor;
- ``<branch>/<replicate>/test_acc_vs_weights_remaining`` (and ``.../test_acc_at_early_stop_vs_
  weights_remaining``) when a level is finished: the step is the percent of weights
  remaining times 100 (TensorBoard's steps are whole numbers), so 100% is step 10000;
- ``<branch>/<replicate>/test_acc_by_level``: the final test accuracy, the step the level.

``tensorboard --logdir SWEEP_DIR`` then lists every run of a sweep next to the others.
TensorBoard is an optional extra (``pip install 'lth[tensorboard]'``), imported only here.
"""

from __future__ import annotations

import math
from pathlib import Path

from lth.errors import LTHError
from lth.runfolder.layout import TENSORBOARD, level_name
from lth.runfolder.manifest import RunWriter
from lth.runfolder.results import Hook, LevelResult

METRICS = ("train_loss", "val_loss", "val_acc", "test_acc")


def import_summary_writer():
    """``torch.utils.tensorboard.SummaryWriter``, or a one-line LTHError saying how to install
    what it needs."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # lazy: an optional extra
    except ImportError as e:
        raise LTHError(
            f"--tensorboard needs TensorBoard, which is not installed ({e}); install it with "
            "pip install 'lth[tensorboard]' (or pip install tensorboard)"
        ) from None
    return SummaryWriter


class TensorBoardLog:
    """The event files of one run folder (a context manager: closed at the end, when the run
    folder's manifest records them; until then it names them as being written)."""

    def __init__(self, run_dir: str | Path):
        writer = import_summary_writer()
        self.writer = writer(log_dir=str(Path(run_dir) / TENSORBOARD), flush_secs=10)
        self.written: dict[tuple[str, int, int], int] = {}  # network -> evaluations written
        self.recorder = RunWriter(run_dir)
        self.recorder.begin(self.files())

    def files(self) -> list[Path]:
        """The event files this log writes."""
        writers = getattr(self.writer, "all_writers", None) or {}
        names = [getattr(w.event_writer, "_file_name", None) for w in writers.values()]
        return [Path(name) for name in names if name]

    def __enter__(self) -> TensorBoardLog:
        return self

    def __exit__(self, *exc) -> None:
        files = self.files()
        self.writer.close()
        self.recorder.record(files)

    def curves(self, branch: str, replicate: int, level: int, history) -> None:
        """Write the evaluations of one network not written yet."""
        key = (branch, replicate, level)
        start = self.written.get(key, 0)
        prefix = f"{branch}/{replicate}/{level_name(level)}"
        for i in range(start, len(history.iteration)):
            for metric in METRICS:
                value = getattr(history, metric)[i]
                if math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{metric}", value, history.iteration[i])
        self.written[key] = max(start, len(history.iteration))

    def hook(self, then: Hook | None = None) -> Hook:
        """A hook that writes each evaluation of the tickets being trained, then calls
        ``then``."""

        def log(level: int, group: int, trainer) -> None:
            for name, history in zip(trainer.names, trainer.histories):
                branch, _, replicate = name.rpartition("/")
                self.curves(branch, int(replicate), level, history)
            if then is not None:
                then(level, group, trainer)

        return log

    def level_done(self, level: int, results: list[LevelResult]) -> None:
        """A finished level: the curves not written yet, and its final accuracies."""
        for r in results:
            self.curves(r.branch, r.replicate, level, r.history)
            summary = r.history.summary()
            if not summary:
                continue
            prefix = f"{r.branch}/{r.replicate}"
            step = round(r.weights_remaining * 100)
            final = summary["test_acc"]
            self.writer.add_scalar(f"{prefix}/test_acc_vs_weights_remaining", final, step)
            self.writer.add_scalar(f"{prefix}/test_acc_by_level", final, level)
            early = summary["test_acc_at_early_stop"]
            if early is not None:
                tag = f"{prefix}/test_acc_at_early_stop_vs_weights_remaining"
                self.writer.add_scalar(tag, early, step)
        self.writer.flush()

    def store(self, store):
        """``store`` (an experiment's Store) that also logs each level it saves."""
        return _LoggingStore(store, self)


class _LoggingStore:
    """A Store that hands each saved level to a :class:`TensorBoardLog`."""

    def __init__(self, store, log: TensorBoardLog):
        self.store = store
        self.log = log

    def save_level(self, level: int, results: list[LevelResult]) -> None:
        self.store.save_level(level, results)
        self.log.level_done(level, results)

    def __getattr__(self, name: str):
        return getattr(self.store, name)


__all__ = ["TensorBoardLog", "import_summary_writer"]
