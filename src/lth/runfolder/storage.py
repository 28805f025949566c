"""The run folder's format, in one place: layout, atomic writes, tensors, CSV files, manifest.

Every module that writes or reads a run folder (:mod:`lth.runfolder.runs`,
:mod:`lth.analysis.mask_analysis`,
:mod:`lth.analysis.report`, :mod:`lth.analysis.plots`, and :func:`lth.pruning.masks.save_masks`)
does it through this module, so the format is declared here and nowhere else.

Layout of a run folder::

    .lth-run                          marker: lth made this folder; its format and the folder's id
    config.toml                       resolved configuration (enough to repeat the run)
    metrics.csv, summary.csv,         the run's tables (:data:`METRICS`, :data:`SUMMARY`,
    layers.csv                          :data:`LAYERS`)
    <branch>/<replicate>/level_<LL>/  mask.safetensors, init.safetensors, final.safetensors
                                      (and step_<k>.safetensors: weights at iteration k)
    summary_stats.csv, analysis.csv,  derived tables, recomputed from the files above
    analysis_histograms.csv             (:data:`SUMMARY_STATS`, :data:`ANALYSIS`,
                                        :data:`ANALYSIS_HISTOGRAMS`)
    plots/                            figures (<figure>.png, <figure>.pdf)
    tensorboard/                      TensorBoard event files (``lth run --tensorboard``)
    stability/                        ``lth stability``'s files (:func:`stability_file`)
    .lth/                             progress.json, manifest.json, in-level checkpoints
                                      (level_<LL>_group_<GG>.pt) and the lock

Writes: :func:`atomic_write` writes every file: a temporary ``.<name>.<8 characters>.tmp``
in the same folder, fsync, then a rename, so a reader never sees a torn file; the file mode
follows the user's umask. In a run folder, :class:`RunWriter` writes (and records) every file
and names its temporaries ``.<name>.<folder id>-<8 characters>.tmp``, the id being the one in
the folder's marker; a killed process can leave such temporaries behind, and
:func:`remove_temporaries` deletes those, and only those (``lth run`` does when it opens a run
folder).

Tensors: safetensors files whose metadata keeps the order of the names (:func:`save_tensors`,
:func:`load_tensors`; safetensors itself stores names sorted, and random draws follow the
order).

CSV files: :func:`csv_text` writes them and :func:`read_csv` / :func:`read_table` read them.
Floats are written in full (round-trip) precision; **a missing value, None or NaN, is an
empty cell** in every file of a run. Readers also accept ``nan`` (any case), the spelling
metrics.csv and summary.csv used before, so older run folders still load. The columns of
every file are declared once below as :class:`Table` objects, each column with its type and
meaning (:func:`schema_markdown` renders them as documentation).

Ownership: :class:`Manifest` keeps the sha256 of every file lth writes in a run folder
(config.toml, the run's tables, the level files, ``.lth/`` state, the derived tables,
figures, ``lth stability``'s and TensorBoard's files) in ``.lth/manifest.json``, updated under
:func:`manifest_lock` by every writer; :func:`check_manifest` compares a run folder with it.
``--overwrite`` (:func:`clear_run`) deletes only the files it lists, while unchanged, never
through a symbolic link, and refuses a folder without one. The marker's ``format:`` line says
whether the folder must have a manifest (:func:`read_marker`: the marker of an older lth,
:data:`OLD_MARKER_TEXT`, does not). :func:`file_kind` says which paths lth's layout uses (to
refuse writing a report there); it never decides what is deleted.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import json
import math
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import Tensor

from lth.config import BRANCHES as CONFIG_BRANCHES
from lth.errors import LTHError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

# ----------------------------------------------------------------------------- layout

MARKER = ".lth-run"
MARKER_FORMAT = 2  # the marker's ``format:`` line; 2: .lth/manifest.json lists every file
OLD_MARKER_TEXT = (  # the marker of an older lth (format 1), whose manifest may be missing
    "This folder is an lth run folder. `lth run --overwrite` deletes only the files lth "
    "wrote here,\nand only in a folder holding this file.\n"
)
INTERNAL = ".lth"
PROGRESS = "progress.json"
MANIFEST = "manifest.json"
LOCK = "lock"
CONFIG = "config.toml"
PLOTS = "plots"
TENSORBOARD = "tensorboard"
BRANCHES = CONFIG_BRANCHES  # ticket, then every control, in display order
FIGURES = ("accuracy_vs_weights", "curves", "early_stop", "layer_remaining")
ANALYSIS_FIGURES = ("mask_analysis", "weight_histograms")  # drawn when an analysis exists
ALL = "all"  # the layer name of analysis.csv's rows about all prunable layers together
CONTROL = "random_prune"  # the control analysis.csv's jaccard_random_prune compares with
ORDER_KEY = "lth_mask_order"  # safetensors metadata: JSON list of the names in dict order

_LEVEL_FILE = re.compile(r"^(mask|init|final|step_\d+)\.safetensors$")
_LEVEL_DIR = re.compile(r"^level_\d{2,}$")
_REPLICATE_DIR = re.compile(r"^\d+$")
_CHECKPOINT = re.compile(r"^level_(\d{2,})_group_\d{2,}\.pt$")
# .NAME.xxxxxxxx.tmp (this module; also lth's older mask and figure writers, which added
# the figure format: .NAME.xxxxxxxx.png.tmp) and .NAME.tmp<pid> (lth's older run writer)
_TEMPORARY = re.compile(r"^\..+\.([a-z0-9_]{8}(\.[A-Za-z0-9]+)?\.tmp|tmp\d+)$")


def checkpoint_path(root: str | os.PathLike[str], level: int, group: int) -> Path:
    """The in-level checkpoint of a group of networks, ``.lth/level_03_group_00.pt``."""
    return Path(root) / INTERNAL / f"level_{level:02d}_group_{group:02d}.pt"


def checkpoint_level(rel: str) -> int | None:
    """The level of an in-level checkpoint (its path relative to the run folder); None for
    any other path."""
    parts = PurePosixPath(rel).parts
    found = _CHECKPOINT.match(parts[1]) if len(parts) == 2 and parts[0] == INTERNAL else None
    return None if found is None else int(found.group(1))


def level_dir(root: str | os.PathLike[str], branch: str, replicate: int, level: int) -> Path:
    """Folder of one branch, replicate and level, e.g. ``ticket/0/level_03``."""
    return Path(root) / branch / str(replicate) / f"level_{level:02d}"


# ----------------------------------------------------------------------------- writing


def atomic_write(path: str | os.PathLike[str], data: bytes | str, tag: str | None = None) -> None:
    """Write ``data`` to ``path`` so that no reader ever sees a torn file.

    The bytes go to a temporary ``.<name>.<8 characters>.tmp`` in the same folder (with a
    ``tag``, the run folder's id: ``.<name>.<tag>-<8 characters>.tmp``, a name only lth makes,
    see :func:`remove_temporaries`), are fsynced, and the temporary is renamed over ``path``.
    The file gets the mode a new file gets (0666 less the umask). An :class:`OSError` (disk
    full, permissions) is re-raised with ``filename`` set to ``path``, after the temporary is
    removed.
    """
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    tmp = None
    prefix = f".{path.name}." + (f"{tag}-" if tag else "")
    try:
        while tmp is None:
            candidate = path.with_name(f"{prefix}{secrets.token_hex(4)}.tmp")
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            except FileExistsError:
                continue
            tmp = candidate
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None:
            raise OSError(e.errno, e.strerror or str(e), str(path)) from None
        raise


def tensor_bytes(tensors: Mapping[str, Tensor]) -> bytes:
    """``tensors`` as the bytes of a safetensors file that keeps the order of the names."""
    data = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return _st_save(data, metadata={ORDER_KEY: json.dumps(list(data))})


def save_tensors(path: str | os.PathLike[str], tensors: Mapping[str, Tensor]) -> None:
    """Save tensors as a safetensors file, atomically, keeping the order of the names."""
    atomic_write(path, tensor_bytes(tensors))


def load_tensors(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The tensors of a safetensors file, in the order :func:`save_tensors` saved them.

    Raises :class:`LTHError` naming the file when it is missing or damaged.
    """
    try:
        raw = Path(path).read_bytes()
        tensors = _st_load(raw)
        size = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + size]).get("__metadata__") or {}
        order = json.loads(metadata.get(ORDER_KEY, "[]"))
    except FileNotFoundError:
        raise LTHError(f"{path} is missing; the run folder is incomplete") from None
    except Exception as e:  # safetensors raises several types for damaged files
        raise LTHError(
            f"{path} is not a readable safetensors file ({e}); it is corrupt or truncated"
        ) from None
    names = [n for n in order if n in tensors] + [n for n in tensors if n not in order]
    return {n: tensors[n] for n in names}


# ----------------------------------------------------------------------------- CSV schemas

_TYPE_NAMES = {str: "text", int: "whole number", float: "number"}


@dataclass(frozen=True)
class Column:
    """One column of a CSV file: its name, how readers parse it and what it means.

    ``optional``: the column may be absent (files of older lth versions); readers then give
    its empty value. ``empty``: a whole-number column whose cell may be empty (None).
    Empty float cells are NaN, empty text cells "".
    """

    name: str
    kind: type
    meaning: str
    optional: bool = False
    empty: bool = False


@dataclass(frozen=True)
class Table:
    """One CSV file of a run folder: its name, what a row is, its columns and its key."""

    file: str
    row: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    derived: bool = False  # recomputed from the level files (lth plot)

    @property
    def names(self) -> list[str]:
        """The column names, in file order."""
        return [c.name for c in self.columns]

    @property
    def advice(self) -> str:
        """What to do about a damaged file."""
        if self.derived:
            return "delete it and run lth plot again to recompute it"
        return "rerun the study to rewrite it"


def _c(name: str, kind: type, meaning: str, **kw) -> Column:
    return Column(name, kind, meaning, **kw)


_BRANCH = _c("branch", str, "ticket, or the control: " + ", ".join(CONFIG_BRANCHES[1:]))
_REPLICATE = _c("replicate", int, "replicate number, from 0 (its own seed and mask chain)")
_LEVEL = _c("level", int, "pruning level; 0 is the dense network")
_REMAINING = _c(
    "weights_remaining",
    float,
    "percent of the prunable weights the mask keeps (layers in exclude not counted)",
)

METRICS = Table(
    "metrics.csv",
    "one row per evaluation during training",
    (
        _BRANCH, _REPLICATE, _LEVEL,
        _c("iteration", int, "training iteration of the evaluation (0: before training)"),
        _REMAINING,
        _c("train_loss", float, "mean training loss since the previous evaluation (empty at 0)",
           optional=True),
        _c("val_loss", float, "loss on the validation set"),
        _c("val_acc", float, "accuracy on the validation set, percent"),
        _c("test_acc", float, "accuracy on the test set, percent"),
    ),
)  # fmt: skip
SUMMARY = Table(
    "summary.csv",
    "one row per branch, replicate and level",
    (
        _BRANCH, _REPLICATE, _LEVEL, _REMAINING,
        _c("test_acc", float, "test accuracy after the last training iteration, percent"),
        _c("early_stop_iteration", float,
           "iteration of the lowest validation loss (iteration 0 excluded): the early stop"),
        _c("test_acc_at_early_stop", float, "test accuracy at the early-stop iteration, percent"),
        _c("best_val_acc", float, "highest validation accuracy of the level, percent",
           optional=True),
        _c("diverged_at", int, "iteration where the loss became NaN or inf (empty: never)",
           optional=True, empty=True),
    ),
    key=("branch", "replicate", "level"),
)  # fmt: skip
LAYERS = Table(
    "layers.csv",
    "one row per branch, replicate, level and prunable layer",
    (
        _BRANCH, _REPLICATE, _LEVEL,
        _c("layer", str, "parameter name, e.g. fc1.weight"),
        _c("kept", int, "weights the mask keeps"),
        _c("total", int, "weights of the layer"),
        _c("remaining", float, "percent of the layer's weights the mask keeps"),
        _c("shape", str, "the parameter's shape, e.g. 300x784"),
        _c("dead_units", int,
           "units (output features / channels) of this layer that lth.pruning.shrink removes: all "
           "incoming or all outgoing weights pruned (empty: a model shrink cannot handle)",
           optional=True, empty=True),
    ),
    key=("branch", "replicate", "level", "layer"),
)  # fmt: skip
SUMMARY_STATS = Table(
    "summary_stats.csv",
    "one row per branch and level: summary.csv over the replicates (lth report --format csv)",
    (
        _BRANCH, _LEVEL,
        _c("weights_remaining", float, "mean percent of the prunable weights kept"),
        _c("replicates", int, "replicates of this branch and level"),
        _c("n", int, "replicates in the means: those that did not diverge"),
        _c("diverged", int, "replicates that diverged"),
        _c("test_acc_mean", float, "mean test accuracy after training, percent"),
        _c("test_acc_std", float, "its sample standard deviation (empty when n < 2)"),
        _c("test_acc_ci_low", float,
           "lower end of the 95% confidence interval of the mean (t, n - 1 degrees of freedom; "
           "empty when n < 2)", optional=True),
        _c("test_acc_ci_high", float, "upper end of that interval", optional=True),
        _c("test_acc_at_early_stop_mean", float, "mean test accuracy at the early stop, percent"),
        _c("test_acc_at_early_stop_std", float, "its sample standard deviation"),
        _c("early_stop_iteration_mean", float, "mean early-stop iteration"),
        _c("early_stop_iteration_std", float, "its sample standard deviation"),
        _c("matching", int,
           "1 when test_acc_mean is no lower than one std below the dense ticket's (level 0), "
           "Frankle et al. 2020's matching; 0 otherwise; empty with one dense replicate",
           optional=True, empty=True),
        _c("ticket_minus", float,
           "control rows: the ticket's test_acc_mean minus this branch's, same level",
           optional=True),
        _c("ticket_minus_ci_low", float,
           "lower end of its 95% Welch interval (empty when either side has n < 2)",
           optional=True),
        _c("ticket_minus_ci_high", float, "upper end of that interval", optional=True),
        _c("ticket_is", str,
           "control rows: better (the interval lies above 0), equal (it holds 0) or worse",
           optional=True),
    ),
    key=("branch", "level"),
    derived=True,
)  # fmt: skip
ANALYSIS = Table(
    "analysis.csv",
    "one row per branch, replicate, level and prunable layer, plus an 'all' row per level",
    (
        _BRANCH, _REPLICATE, _LEVEL,
        _c("layer", str, "parameter name, or 'all' for all prunable layers together"),
        _c("weights_remaining", float, "percent of the layer's weights the mask keeps"),
        _c("jaccard_previous_level", float,
           "Jaccard overlap of the mask with the same branch's mask one level earlier "
           "(empty at level 0)"),
        _c("jaccard_random_prune", float,
           "ticket rows: Jaccard overlap with the random_prune control's mask of the same "
           "replicate and level (empty otherwise)"),
        _c("sign_kept", float,
           "fraction (0-1) of surviving weights whose final sign equals their sign at the "
           "level's start (empty: no survivors)"),
    ),
    key=("branch", "replicate", "level", "layer"),
    derived=True,
)  # fmt: skip
ANALYSIS_HISTOGRAMS = Table(
    "analysis_histograms.csv",
    "one row per branch, replicate, level, weights and bin; the bins are the same in every row",
    (
        _BRANCH, _REPLICATE, _LEVEL,
        _c("weights", str, "init (the level's start) or final (the end of training)"),
        _c("bin", int, "bin number, from 0"),
        _c("bin_low", float, "lower edge of the bin, |weight| (log-spaced bins)"),
        _c("bin_high", float, "upper edge of the bin"),
        _c("count", int, "surviving weights whose magnitude is in the bin"),
    ),
    key=("branch", "replicate", "level", "weights", "bin"),
    derived=True,
)  # fmt: skip
TABLES = (METRICS, SUMMARY, LAYERS, SUMMARY_STATS, ANALYSIS, ANALYSIS_HISTOGRAMS)
RUN_TABLES = (METRICS, SUMMARY, LAYERS)  # written by the run, in the manifest


def schema_markdown() -> str:
    """Every CSV file of a run folder and its columns, as markdown (for the README)."""
    out = []
    for table in TABLES:
        out += [f"`{table.file}`: {table.row}.", "", "| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {_TYPE_NAMES[c.kind]} | {c.meaning} |" for c in table.columns]
        out.append("")
    return "\n".join(out)


# ----------------------------------------------------------------------------- CSV text


def _cell(value: object) -> object:
    """How one value is written: None and NaN as an empty cell, floats in full precision."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def csv_text(rows: Iterable[Mapping[str, object]], columns: Table | Sequence[str]) -> str:
    """Rows as CSV text with a header, in the table's column order ("\\n" line endings).

    Missing keys, None and NaN are written as empty cells; keys not in the columns are left
    out; floats are written with full (round-trip) precision.
    """
    names = columns.names if isinstance(columns, Table) else list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in names])
    return buf.getvalue()


def _read(path: str | os.PathLike[str], advice: str) -> tuple[list[str], list[dict[str, str]]]:
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise LTHError(f"{path} has no header row; {advice}")
            header = [h.strip() for h in header]
            rows = []
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    raise LTHError(
                        f"{path} line {reader.line_num} has {len(record)} fields but the header "
                        f"has {len(header)}; the file is damaged, {advice}"
                    )
                rows.append(dict(zip(header, record)))
    except FileNotFoundError:
        raise LTHError(f"{path} not found; {advice}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LTHError(f"cannot read {path} ({msg}); {advice}") from None
    return header, rows


def read_csv(
    path: str | os.PathLike[str], advice: str = "check the run folder or rerun the study"
) -> list[dict[str, str]]:
    """A CSV file with a header row as one dict per data row (values stay strings).

    Raises :class:`LTHError` naming the file (and ending with ``advice``) when it is missing,
    unreadable, has no header, or has a row whose number of fields differs from the header's.
    Blank lines are skipped.
    """
    return _read(path, advice)[1]


def is_missing(cell: str | None) -> bool:
    """Whether a CSV cell is a missing value: empty, or the older spelling ``nan``."""
    return cell is None or cell.strip().lower() in ("", "nan", "+nan", "-nan")


def to_float(cell: str | None) -> float:
    """A CSV cell as a float; a missing value (see :func:`is_missing`) is NaN.

    Raises ValueError for other text that is not a number.
    """
    return math.nan if is_missing(cell) else float(cell)  # type: ignore[arg-type]


def to_int(cell: str) -> int:
    """A CSV cell as a whole number ("3" or "3.0"); raises ValueError otherwise."""
    try:
        return int(cell)  # exact, however large (a 63-bit seed loses digits in a float)
    except ValueError:
        pass
    value = float(cell)
    if not value.is_integer():
        raise ValueError(cell)
    return int(value)


def _parser(column: Column) -> Callable[[str], object]:
    if column.kind is float:
        return to_float
    if column.kind is int:
        if column.empty:
            return lambda s: None if is_missing(s) else to_int(s)
        return to_int
    return str.strip


def read_rows(
    path: str | os.PathLike[str], table: Table, advice: str | None = None
) -> list[dict[str, str]]:
    """The rows of one of a run's CSV files as strings, checked for the table's columns.

    Missing values of float columns are spelled as they are written now (empty), so rows
    read from an older file and written back use one spelling.
    """
    advice = advice or table.advice
    header, rows = _read(path, advice)
    _check_columns(path, header, table, advice)
    floats = [c.name for c in table.columns if c.kind is float and c.name in header]
    for row in rows:
        for name in floats:
            if row[name] and is_missing(row[name]):
                row[name] = ""
    return rows


def _check_columns(path, header: list[str], table: Table, advice: str) -> None:
    required = [c.name for c in table.columns if not c.optional]
    missing = [c for c in required if c not in header]
    if missing:
        raise LTHError(
            f"{path} lacks column {missing[0]!r} (needs {', '.join(required)}); it is damaged "
            f"or from another tool, {advice}"
        )


def read_table(
    path: str | os.PathLike[str],
    table: Table,
    *,
    allow_empty: bool = False,
    keep: Callable[[dict[str, str]], bool] | None = None,
) -> list[dict]:
    """The rows of one of a run's CSV files, typed by the table's columns.

    Text cells are stripped, whole numbers are ints, numbers floats (missing values NaN; in a
    whole-number column that may be empty, None); absent optional columns read as empty; other
    columns are left out. ``keep`` filters the raw rows before they are parsed. Raises
    :class:`LTHError` naming the file, row and column for a bad cell, a missing column, two
    rows with the same key, or (unless ``allow_empty``) a file without data rows.
    """
    header, raw = _read(path, table.advice)
    if not raw and not allow_empty:
        raise LTHError(f"{path} has no data rows; the study has not finished a level yet")
    _check_columns(path, header, table, table.advice)
    parsers = {c.name: _parser(c) for c in table.columns}
    if keep is not None:
        raw = [r for r in raw if keep(r)]
    out = []
    for i, rec in enumerate(raw, start=1):
        row = {}
        for column in table.columns:
            cell = rec.get(column.name, "")
            try:
                row[column.name] = parsers[column.name](cell)
            except (ValueError, TypeError):
                what = "a whole number" if column.kind is int else "a number"
                raise LTHError(
                    f"{path} data row {i}: {column.name} = {cell!r} is not {what}; "
                    f"the file is damaged, {table.advice}"
                ) from None
        out.append(row)
    if table.key:
        _check_unique(path, out, table)
    return out


def _check_unique(path, rows: list[dict], table: Table) -> None:
    kinds = {c.name: c.kind for c in table.columns}
    seen = set()
    for row in rows:
        key = tuple(row[k] for k in table.key)
        if key in seen:
            where = " ".join(
                f"{k} {v}" if kinds[k] is int else str(v) for k, v in zip(table.key, key)
            )
            raise LTHError(f"{path} has two rows for {where}; the file is damaged, {table.advice}")
        seen.add(key)


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


def branch_order(names: Iterable[str]) -> list[str]:
    """Branch names in file and display order: ticket, reinit, random_prune, others sorted."""
    names = set(names)
    return [b for b in BRANCHES if b in names] + sorted(names - set(BRANCHES))


# ----------------------------------------------------------------------------- ownership


def file_kind(rel: str | os.PathLike[str]) -> str | None:
    """Which of lth's files a path relative to a run folder is, or None if lth never writes it.

    ``"run"``: written by the run and listed in the manifest (config.toml, the three tables,
    the level files); ``"derived"``: recomputed from those (summary_stats.csv, the analysis,
    figures); ``"internal"``: the marker and ``.lth/`` (progress, manifest, checkpoints, lock);
    ``"temporary"``: named like a temporary of an unfinished write; ``"stability"``: the files
    of ``lth stability`` under ``stability/`` (:func:`stability_file`). A name is never proof
    that lth wrote a file: the manifest is (:func:`clear_run`).
    """
    parts = PurePosixPath(Path(rel).as_posix()).parts
    if not parts or ".." in parts:
        return None
    name = parts[-1]
    if _TEMPORARY.match(name):
        return "temporary"
    if parts[0] == STABILITY_DIR:
        return "stability" if stability_file(parts[1:]) else None
    if len(parts) == 1:
        if name == CONFIG or name in (t.file for t in RUN_TABLES):
            return "run"
        if name in (t.file for t in TABLES):
            return "derived"
        return "internal" if name == MARKER else None
    if parts[0] == INTERNAL and len(parts) == 2:
        known = name in (PROGRESS, MANIFEST, LOCK) or _CHECKPOINT.match(name)
        return "internal" if known else None
    if parts[0] == PLOTS and len(parts) == 2:
        stem, dot, fmt = name.partition(".")
        return "derived" if dot and fmt and stem in FIGURES + ANALYSIS_FIGURES else None
    if parts[0] == TENSORBOARD and len(parts) == 2:
        return "derived" if name.startswith("events.out.tfevents.") else None
    if (
        len(parts) == 4
        and parts[0] in BRANCHES
        and _REPLICATE_DIR.match(parts[1])
        and _LEVEL_DIR.match(parts[2])
        and _LEVEL_FILE.match(name)
    ):
        return "run"
    return None


def _is_lth_dir(parts: tuple[str, ...]) -> bool:
    """Whether a folder (parts relative to the run folder) is one lth makes."""
    if parts in ((INTERNAL,), (PLOTS,), (TENSORBOARD,)) or (
        parts[:1] == (STABILITY_DIR,) and len(parts) <= 2
    ):
        return True
    if not parts or parts[0] not in BRANCHES or len(parts) > 3:
        return False
    return (len(parts) < 2 or bool(_REPLICATE_DIR.match(parts[1]))) and (
        len(parts) < 3 or bool(_LEVEL_DIR.match(parts[2]))
    )


def _walk(run: Path) -> Iterator[tuple[str, str, list[str]]]:
    """os.walk of a run folder that never follows symbolic links; yields (folder, relative
    posix path, regular file names)."""

    def regular(path: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:  # gone meanwhile
            return False

    for top, _dirs, names in os.walk(run, followlinks=False):
        rel = Path(top).relative_to(run).as_posix()
        yield top, "" if rel == "." else rel, [n for n in names if regular(os.path.join(top, n))]


def lth_files(run_dir: str | os.PathLike[str], kinds: Iterable[str] | None = None) -> list[str]:
    """Paths (relative, posix) of the regular files of a run folder that lth writes, sorted;
    only those of ``kinds`` (see :func:`file_kind`) if given. Symbolic links are not followed
    and are never listed."""
    run = Path(run_dir)
    wanted = None if kinds is None else set(kinds)
    out = []
    for _top, rel, names in _walk(run):
        for name in names:
            path = f"{rel}/{name}" if rel else name
            kind = file_kind(path)
            if kind is not None and (wanted is None or kind in wanted):
                out.append(path)
    return sorted(out)


def marker_text(folder_id: str) -> str:
    """The :data:`MARKER` lth writes into a run folder it makes: its format and the folder's id
    (the tag of lth's temporaries there, :func:`remove_temporaries`)."""
    return (
        "This folder is an lth run folder. `lth run --overwrite` deletes only the files lth "
        "wrote here,\nthose .lth/manifest.json lists, and only while they are as lth wrote them."
        f"\nformat: {MARKER_FORMAT}\nid: {folder_id}\n"
    )


_MARKER_FIELD = re.compile(r"^(format|id): *(\S+) *$", re.MULTILINE)
_FOLDER_ID = re.compile(r"^[0-9a-f]{16}$")


def read_marker(run_dir: str | os.PathLike[str]) -> tuple[int, str | None]:
    """``(format, id)`` of a run folder's :data:`MARKER`: ``(0, None)`` without one, ``(1,
    None)`` for :data:`OLD_MARKER_TEXT` (an older lth); any other marker is of the current
    format (its folder must have a manifest), with the id its ``id:`` line gives, if valid."""
    path = Path(run_dir) / MARKER
    if not path.is_file():
        return 0, None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return MARKER_FORMAT, None
    if text == OLD_MARKER_TEXT:
        return 1, None
    fields = dict(_MARKER_FIELD.findall(text))
    written = fields.get("format", "")
    version = max(int(written), MARKER_FORMAT) if written.isdigit() else MARKER_FORMAT
    folder_id = fields.get("id", "")
    return version, folder_id if _FOLDER_ID.match(folder_id) else None


def folder_id(run_dir: str | os.PathLike[str]) -> str | None:
    """The id in a run folder's marker (None without a current one)."""
    return read_marker(run_dir)[1]


def write_marker(run_dir: str | os.PathLike[str]) -> None:
    """Write the :data:`MARKER` of the current format, with a new folder id."""
    new_id = secrets.token_hex(8)
    atomic_write(Path(run_dir) / MARKER, marker_text(new_id), tag=new_id)


def remove_temporaries(run_dir: str | os.PathLike[str]) -> list[str]:
    """Delete the temporaries that killed writes of lth left anywhere in a run folder: only
    names holding the folder's id (:func:`atomic_write`'s ``tag``), which lth alone makes, never
    a name that merely looks like one; symbolic links are not followed. Returns their relative
    paths."""
    run = Path(run_dir)
    tag = folder_id(run)
    if tag is None:
        return []
    own = re.compile(rf"^\..+\.{tag}-[0-9a-f]{{8}}\.tmp$")
    gone = []
    for top, rel, names in _walk(run):
        for name in filter(own.match, names):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(top, name))
            gone.append(f"{rel}/{name}" if rel else name)
    return sorted(gone)


def unmarked_message(run_dir: str | os.PathLike[str]) -> str:
    """Why ``--overwrite`` refuses a folder without the marker, and what to do."""
    return (
        f"--overwrite refused: {run_dir} has no {MARKER} file, so it was not made by this lth "
        "(an older lth, or not lth at all) and nothing in it is deleted; run without "
        "--overwrite to resume a run of the same settings, or delete the folder yourself, "
        "or choose another --out"
    )


def unlisted_message(run_dir: str | os.PathLike[str], why: str = "") -> str:
    """Why ``--overwrite`` refuses a folder whose manifest is missing or unreadable."""
    return (
        f"--overwrite is unsafe in {run_dir}: its {INTERNAL}/{MANIFEST} {why or 'is missing'}, "
        "so lth cannot tell the files it wrote from yours and deletes nothing; move what you "
        "want to keep and delete the folder yourself, or choose another --out"
    )


def _owned(run: Path, manifest: Manifest, rel: str) -> bool:
    """Whether ``--overwrite`` deletes a file the manifest lists: it is there, reached without
    a symbolic link, and holds what lth wrote (or what lth was writing when it stopped).
    Raises :class:`LTHError` for a link on the way or a changed file."""
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts) + 1):
        path = run.joinpath(*parts[:i])
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            raise LTHError(
                f"--overwrite refused: {path} is a symbolic link, which lth does not follow out "
                "of the run folder, and nothing was deleted; put a real folder or file there "
                "(the link's target stays as it is), or choose another --out"
            )
    same = stat.S_ISREG(mode) and (
        rel in manifest.writing or file_sha256(path) == manifest.files[rel]
    )
    if not same:
        raise LTHError(
            f"--overwrite refused: {path} was changed after lth wrote it (its sha256 is not the "
            f"one {INTERNAL}/{MANIFEST} recorded), so it is kept and nothing was deleted; move it "
            "out of the run folder and run again, or choose another --out"
        )
    return True


def clear_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """Delete what lth wrote in a run folder (``--overwrite``): the files its manifest lists,
    while they hold what lth wrote, lth's own temporaries, then the folders of those files that
    are left empty. Symbolic links are never followed.

    Refuses (:class:`LTHError`, nothing deleted) a folder without the :data:`MARKER` or without
    a readable manifest, a listed file that was changed, and a listed file behind a symbolic
    link (both named). Returns the relative paths deleted.
    """
    run = Path(run_dir)
    if not (run / MARKER).is_file():
        raise LTHError(unmarked_message(run))
    if not (run / INTERNAL / MANIFEST).is_file():
        raise LTHError(unlisted_message(run))
    with manifest_lock(run):
        try:
            manifest = Manifest.load(run)
        except LTHError:
            raise LTHError(unlisted_message(run, "cannot be read")) from None
        if manifest is None:
            raise LTHError(unlisted_message(run))
        kept = {MARKER, f"{INTERNAL}/{MANIFEST}", f"{INTERNAL}/{LOCK}"}
        listed = sorted({*manifest.files, *manifest.writing} - kept)
        doomed = [rel for rel in listed if _owned(run, manifest, rel)]
        for rel in doomed:
            with contextlib.suppress(FileNotFoundError):
                (run / rel).unlink()
        gone = doomed + remove_temporaries(run)
        folders = {run.joinpath(*PurePosixPath(rel).parts[:i]) for rel in gone
                   for i in range(1, len(PurePosixPath(rel).parts))}  # fmt: skip
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder != run / INTERNAL:
                with contextlib.suppress(OSError):  # not empty: the user's files are in it
                    folder.rmdir()
        manifest.files = {k: v for k, v in manifest.files.items() if k not in doomed}
        manifest.writing -= set(doomed)
        manifest.save()
    return gone


def check_output_path(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    option: str = "--output",
    folder: bool = False,
) -> None:
    """Refuse (:class:`LTHError`) to write ``output`` when it is one of the run folder's own
    files (or a folder lth made, or anything inside ``.lth/`` or a branch folder).
    ``folder``: ``output`` is a folder files go into (``lth plot --out``): the run's own
    ``plots/`` is allowed, as is any folder beside the run's files."""
    run = Path(run_dir).resolve()
    out = Path(output)
    target = out.parent.resolve() / out.name
    try:
        parts = target.relative_to(run).parts
    except ValueError:
        return
    if folder and parts == (PLOTS,):
        return
    inside = any(_is_lth_dir(parts[:i]) and parts[0] != PLOTS for i in range(1, len(parts)))
    if not parts or inside or _is_lth_dir(parts) or file_kind("/".join(parts)) is not None:
        raise LTHError(
            f"{option} {output} is a file of the run folder {run_dir} that lth writes (or in "
            "one of its folders); choose a path outside the run's own files"
        )


def check_replace(
    path: str | os.PathLike[str], option: str, ours: Callable[[Path], bool], force: bool
) -> None:
    """Refuse (:class:`LTHError`) to replace an existing file unless ``ours(path)`` (decided
    from the file's contents: lth wrote it) or ``force``: lth never clobbers a user's file."""
    path = Path(path).expanduser()
    if force or not path.is_file() or ours(path):
        return
    raise LTHError(
        f"{option} {path} exists and was not written by this lth command; pass --force to "
        "replace it, or choose a new path"
    )


# ----------------------------------------------------------------------------- manifest


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The sha256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def manifest_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of a run folder's manifest (an exclusive flock on its ``.lth`` folder)
    for one read-modify-write: ``lth run``, ``lth plot`` and ``lth stability`` all update it."""
    path = Path(run_dir) / INTERNAL
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise LTHError(
            f"cannot open {path} ({e.strerror}); the run folder's {INTERNAL} must be a folder "
            "in it, not a link"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _inside(rel: object) -> bool:
    """Whether a manifest key is a plain relative path inside the run folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    path = PurePosixPath(rel)
    return not path.is_absolute() and path.as_posix() == rel and ".." not in path.parts


class Manifest:
    """The sha256 of every file lth wrote in a run folder, kept in ``.lth/manifest.json``.

    ``files`` maps a path relative to the run folder to the sha256 of the bytes lth wrote:
    config.toml, the tables of the run, the level files, ``.lth/progress.json`` and the
    in-level checkpoints, the derived tables (summary_stats.csv, analysis.csv,
    analysis_histograms.csv), the figures under plots/, the files of ``lth stability`` under
    stability/ and the TensorBoard event files. ``writing`` names the files being (re)written
    (:class:`RunWriter`); a kill may leave either version, so they are not compared until
    :meth:`settle` takes them as they are.
    """

    VERSION = 1

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        files: Mapping[str, str] | None = None,
        writing: Iterable[str] = (),
    ):
        self.run_dir = Path(run_dir)
        self.files = dict(files or {})
        self.writing = set(writing)

    @property
    def path(self) -> Path:
        """Where the manifest is kept."""
        return self.run_dir / INTERNAL / MANIFEST

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> Manifest | None:
        """The run folder's manifest; None when it has none."""
        manifest = cls(run_dir)
        try:
            data = json.loads(manifest.path.read_text())
            if data.get("version") != cls.VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            files, writing = data["files"], data.get("writing", [])
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise ValueError("files is not a table of checksums")
            bad = next((k for k in [*files, *writing] if not _inside(k)), None)
            if bad is not None:
                raise ValueError(f"{bad!r} is not a path inside the run folder")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LTHError(
                f"cannot read {manifest.path} ({e}); lth cannot tell the files it wrote there "
                "from others: move what you want to keep and delete the folder, or use another "
                "--out"
            ) from None
        return cls(run_dir, files, writing)

    @classmethod
    def of_files(cls, run_dir: str | os.PathLike[str]) -> Manifest:
        """A manifest of the run's files as they are on disk (for a run folder of an older lth):
        those the run writes, its progress and its in-level checkpoints."""
        run = Path(run_dir)
        state = [r for r in lth_files(run, ["internal"]) if checkpoint_level(r) is not None]
        state += [f"{INTERNAL}/{PROGRESS}"] if (run / INTERNAL / PROGRESS).is_file() else []
        files = [*lth_files(run, ["run"]), *state]
        return cls(run, {rel: file_sha256(run / rel) for rel in files})

    def save(self) -> None:
        """Write the manifest, atomically."""
        data = {"version": self.VERSION, "files": dict(sorted(self.files.items()))}
        data["writing"] = sorted(self.writing)
        atomic_write(self.path, json.dumps(data, indent=1) + "\n", folder_id(self.run_dir))

    def problems(self) -> list[str]:
        """One line per file that is missing or whose bytes differ from what lth wrote."""
        out, listed = [], f"{INTERNAL}/{MANIFEST}"
        for rel, digest in sorted(self.files.items()):
            if rel in self.writing:
                continue
            path = self.run_dir / rel
            try:
                regular = stat.S_ISREG(os.lstat(path).st_mode)
                same = regular and file_sha256(path) == digest
            except FileNotFoundError:
                out.append(f"{path} is missing (lth wrote it; {listed} lists it)")
                continue
            except OSError as e:
                out.append(f"cannot read {path} ({e.strerror})")
                continue
            if not same:
                out.append(f"{path} was changed after lth wrote it (sha256 differs from {listed})")
        return out

    def settle(self) -> None:
        """Take the files an unfinished write left in ``writing`` as they are now."""
        for rel in sorted(self.writing):
            path = self.run_dir / rel
            if path.is_file() and not path.is_symlink():
                self.files[rel] = file_sha256(path)
            else:
                self.files.pop(rel, None)
        self.writing.clear()


class RunWriter:
    """Writes files into a run folder, each recorded in its manifest (when it has one).

    :meth:`begin` names the files in the manifest's ``writing``, :meth:`write` writes one
    atomically (its temporary tagged with the folder's id) and :meth:`end` records their
    sha256 and takes them out of ``writing``; a kill in between leaves them in ``writing``, for
    :meth:`Manifest.settle`. Each update reads, changes and saves the manifest under
    :func:`manifest_lock`, so that writers of other processes keep each other's entries.
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.done: dict[str, str] = {}
        self.begun: set[str] = set()

    def rel(self, path: str | os.PathLike[str]) -> str:
        """A path inside the run folder (or already relative to it) as a manifest key."""
        try:
            return Path(path).relative_to(self.run_dir).as_posix()
        except ValueError:
            return Path(path).as_posix()

    @contextlib.contextmanager
    def update(self, create: bool = False) -> Iterator[Manifest | None]:
        """The manifest, read under its lock and saved after the block; None (nothing saved)
        when the folder has none, unless ``create`` (then an empty one)."""
        if not create and not (self.run_dir / INTERNAL / MANIFEST).is_file():
            yield None
            return
        with manifest_lock(self.run_dir):
            manifest = Manifest.load(self.run_dir) or Manifest(self.run_dir)
            yield manifest
            manifest.save()

    def begin(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Save that these files are about to be (re)written."""
        rels = {self.rel(p) for p in paths}
        self.begun |= rels
        with self.update() as manifest:
            if manifest is not None:
                manifest.writing |= rels

    def write(self, path: str | os.PathLike[str], data: bytes | str) -> None:
        """:func:`atomic_write` one file of :meth:`begin`'s and note its checksum."""
        raw = data.encode() if isinstance(data, str) else data
        atomic_write(path, raw, folder_id(self.run_dir))
        self.done[self.rel(path)] = hashlib.sha256(raw).hexdigest()

    def end(self, finished: bool = True) -> None:
        """Save the checksums of the files written; ``finished``: every file :meth:`begin`
        named is as it is to stay (else those not written stay in ``writing``)."""
        with self.update() as manifest:
            if manifest is not None:
                manifest.files.update(self.done)
                manifest.writing -= set(self.done) | (self.begun if finished else set())
        self.done, self.begun = {}, set()

    @contextlib.contextmanager
    def writing(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[RunWriter]:
        """:meth:`begin` these files, then :meth:`end` (also when the block fails)."""
        self.begin(paths)
        try:
            yield self
        except BaseException:
            with contextlib.suppress(LTHError, OSError):
                self.end(finished=False)
            raise
        self.end()

    def write_files(self, files: Mapping[Path, bytes | str]) -> None:
        """Write files of the run (in order), each atomically, and record them."""
        with self.writing(files):
            for path, data in files.items():
                self.write(path, data)

    def record(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Record files lth made by other means (TensorBoard's event files, a lock file) as
        they are now."""
        with self.update() as manifest:
            for path in paths if manifest is not None else ():
                rel, full = self.rel(path), self.run_dir / self.rel(path)
                if full.is_file() and not full.is_symlink():
                    manifest.files[rel] = file_sha256(full)
                    manifest.writing.discard(rel)

    def listed(self) -> dict[str, str]:
        """The files the manifest lists (none without one)."""
        manifest = Manifest.load(self.run_dir)
        return {} if manifest is None else manifest.files

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Delete files lth wrote that are done with (checkpoints): only those the manifest
        lists and that hold what lth wrote; drop them from the manifest."""
        with self.update() as manifest:
            for rel in {self.rel(p) for p in paths} if manifest is not None else ():
                path = self.run_dir / rel
                if rel in manifest.writing or (
                    rel in manifest.files
                    and path.is_file()
                    and not path.is_symlink()
                    and file_sha256(path) == manifest.files[rel]
                ):
                    path.unlink(missing_ok=True)
                    manifest.files.pop(rel, None)
                    manifest.writing.discard(rel)


def check_manifest(run_dir: str | os.PathLike[str]) -> list[str]:
    """Compare a run folder with its manifest: one line per file lth wrote that is missing or
    changed since (empty when everything matches). Files an unfinished write left behind are
    not compared. Raises :class:`LTHError` when the folder has no manifest."""
    manifest = Manifest.load(run_dir)
    if manifest is None:
        raise LTHError(
            f"{run_dir} has no {INTERNAL}/{MANIFEST}: it is not an lth run folder, or an older "
            "lth made it (lth run in it again writes one)"
        )
    return manifest.problems()


# ----------------------------------------------------------------------------- stability

# lth stability's analyses (lth.stability.measure), inside the run folder
STABILITY_DIR = "stability"
_ANALYSIS = _c("analysis", str, "level (from the level's own start) or rewind (from m ⊙ θk)")
_K = _c("k", int, "the iteration the copies start from (the level's start, or the rewind point)")
STABILITY_ERRORS = Table(
    f"{STABILITY_DIR}/<analysis>.csv",
    "one row per pair of copies and α on the line between their final weights "
    "(<analysis>: e.g. ticket_r0_level_03, ticket_r0_level_00_rewind)",
    (
        _ANALYSIS, _LEVEL, _BRANCH, _REPLICATE, _K,
        _c("pair", str, "the two copies, e.g. 0-1"),
        _c("alpha", float, "interpolation coefficient: (1 - alpha) θ_first + alpha θ_second"),
        _c("train_error", float, "error on a fixed 10,000-image training subset, percent"),
        _c("test_error", float, "error on the test set, percent"),
    ),
    key=("k", "pair", "alpha"),
    derived=True,
)  # fmt: skip
STABILITY_COPIES = Table(
    f"{STABILITY_DIR}/<analysis>_copies.csv",
    "one row per copy trained by a stability analysis",
    (
        _ANALYSIS, _LEVEL, _BRANCH, _REPLICATE, _K,
        _c("copy", int, "copy number, from 0"),
        _c("seed", str, "the copy's data-order seed, a 63-bit whole number (the only thing in "
           "which copies differ)"),
        _c("test_error", float, "the copy's own test error at the end of its training, percent"),
        _c("diverged_at", int, "iteration where its loss became NaN or inf (empty: never)",
           empty=True),
    ),
    key=("k", "copy"),
    derived=True,
)  # fmt: skip
STABILITY_SUMMARY = Table(
    f"{STABILITY_DIR}/summary.csv",
    "one row per stability analysis and starting iteration k (Frankle et al. 2020)",
    (
        _ANALYSIS, _LEVEL, _BRANCH, _REPLICATE, _K, _REMAINING,
        _c("copies", int, "copies trained from the starting point"),
        _c("pairs", int, "pairs of copies measured"),
        _c("points", int, "evenly spaced alpha from 0 to 1 on each pair's line"),
        _c("test_instability_mean", float,
           "max over alpha of test error minus the mean of its ends, percent, mean over pairs"),
        _c("test_instability_std", float, "its sample standard deviation (empty: one pair)"),
        _c("train_instability_mean", float, "the same on the training subset, percent"),
        _c("train_instability_std", float, "its sample standard deviation"),
        _c("copy_test_error_mean", float, "mean of the copies' own final test errors, percent"),
        _c("batchnorm_recomputed", str, "yes: BatchNorm statistics recomputed at every alpha"),
        _c("stable", str, "yes when test_instability_mean is below 2 (the paper's threshold)"),
    ),
    key=("analysis", "level", "branch", "replicate", "k"),
    derived=True,
)  # fmt: skip
TABLES = (*TABLES, STABILITY_ERRORS, STABILITY_COPIES, STABILITY_SUMMARY)
_STABILITY_NAME = r"(ticket|reinit|random_prune)_r\d+_level_\d{2,}(_rewind)?"
_STABILITY_TOP = re.compile(rf"^(summary\.csv|\.lock|{_STABILITY_NAME}(_copies)?\.csv)$")
_STABILITY_INNER = re.compile(
    r"^(settings\.json|(copy_\d+_k\d+|parent_k\d+)\.safetensors|checkpoint_k\d+_\d+\.pt)$"
)
_STABILITY_FIGURE = re.compile(rf"^({_STABILITY_NAME}_(error|instability)|instability_vs_weights)"
                               r"\.(png|pdf|svg)$")  # fmt: skip


def stability_file(parts: Sequence[str]) -> bool:
    """Whether a path inside ``stability/`` (its parts) is one ``lth stability`` writes."""
    if len(parts) == 1:
        return bool(_STABILITY_TOP.match(parts[0]))
    if len(parts) == 2 and parts[0] == "plots":
        return bool(_STABILITY_FIGURE.match(parts[1]))
    return (
        len(parts) == 2
        and bool(re.fullmatch(_STABILITY_NAME, parts[0]))
        and bool(_STABILITY_INNER.match(parts[1]))
    )
