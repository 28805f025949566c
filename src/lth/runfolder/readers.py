"""A run folder's tables as typed rows (:class:`SummaryRow`, ...) and its config.toml as a dict."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lth.errors import LTHError
from lth.runfolder.csvio import read_table, to_int
from lth.runfolder.layout import CONFIG
from lth.runfolder.tables import ANALYSIS, ANALYSIS_HISTOGRAMS, LAYERS, METRICS, SUMMARY, Table

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

# ----------------------------------------------------------------------------- typed readers


@dataclass(frozen=True)
class SummaryRow:
    """One trained network's results: a row of summary.csv (see :data:`SUMMARY`)."""

    branch: str
    replicate: int
    level: int
    weights_remaining: float
    test_acc: float
    early_stop_iteration: float
    test_acc_at_early_stop: float
    best_val_acc: float = math.nan
    diverged_at: int | None = None
    params: int | None = None  # lth.pruning.cost (empty: an older lth)
    flops: int | None = None

    @property
    def diverged(self) -> bool:
        """Whether training diverged (such rows are left out of means)."""
        return self.diverged_at is not None


@dataclass(frozen=True)
class LayerRow:
    """One prunable layer of one network: a row of layers.csv (see :data:`LAYERS`)."""

    branch: str
    replicate: int
    level: int
    layer: str
    kept: int
    total: int
    remaining: float
    shape: str
    dead_units: int | None = None


@dataclass(frozen=True)
class MetricRow:
    """One evaluation during training: a row of metrics.csv (see :data:`METRICS`)."""

    branch: str
    replicate: int
    level: int
    iteration: int
    weights_remaining: float
    train_loss: float
    val_loss: float
    val_acc: float
    test_acc: float


def _run_file(run_dir: str | os.PathLike[str], table: Table) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise LTHError(f"run folder {run} does not exist; pass the folder a study wrote")
    return run / table.file


def load_summary(run_dir: str | os.PathLike[str]) -> list[SummaryRow]:
    """The rows of RUN_DIR/summary.csv."""
    return [SummaryRow(**r) for r in read_table(_run_file(run_dir, SUMMARY), SUMMARY)]


def load_layers(run_dir: str | os.PathLike[str]) -> list[LayerRow]:
    """The rows of RUN_DIR/layers.csv."""
    return [LayerRow(**r) for r in read_table(_run_file(run_dir, LAYERS), LAYERS)]


def load_metrics(
    run_dir: str | os.PathLike[str],
    branch: str | None = None,
    levels: Iterable[int] | None = None,
) -> list[MetricRow]:
    """The rows of RUN_DIR/metrics.csv, optionally only one branch and some levels."""
    wanted = None if levels is None else {int(lv) for lv in levels}

    def keep(r: dict[str, str]) -> bool:
        if branch is not None and r.get("branch", "").strip() != branch:
            return False
        if wanted is None:
            return True
        try:
            return to_int(r.get("level", "")) in wanted
        except ValueError:
            return True  # reported as damaged when parsed

    path = _run_file(run_dir, METRICS)
    filtered = branch is not None or levels is not None
    return [MetricRow(**r) for r in read_table(path, METRICS, keep=keep if filtered else None)]


def load_analysis(run_dir: str | os.PathLike[str]) -> list[dict]:
    """The rows of RUN_DIR/analysis.csv, typed (missing values NaN; see :data:`ANALYSIS`)."""
    return read_table(Path(run_dir) / ANALYSIS.file, ANALYSIS, allow_empty=True)


def load_histograms(run_dir: str | os.PathLike[str]) -> list[dict]:
    """The rows of RUN_DIR/analysis_histograms.csv, typed (see :data:`ANALYSIS_HISTOGRAMS`)."""
    path = Path(run_dir) / ANALYSIS_HISTOGRAMS.file
    return read_table(path, ANALYSIS_HISTOGRAMS, allow_empty=True)


def load_config(run_dir: str | os.PathLike[str]) -> dict:
    """RUN_DIR/config.toml as a flat dict ({} when absent; one level of tables is merged in)."""
    path = Path(run_dir) / CONFIG
    if tomllib is None or not path.is_file():
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LTHError(f"cannot read {path} ({msg}); fix or delete the file") from None
    flat = {k: v for k, v in data.items() if not isinstance(v, dict)}
    for table in data.values():
        if isinstance(table, dict):
            for k, v in table.items():
                flat.setdefault(k, v)
    return flat
