"""The columns of every CSV file of a run folder, declared once as :class:`Table` objects.

Each column has its type and meaning (:func:`schema_markdown` renders them as documentation,
docs/run-folder.md). **A missing value, None or NaN, is an empty cell** in every file of a run
(:mod:`lth.runfolder.csvio` writes and reads them).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from lth.pruning.controls import CONTROLS
from lth.runfolder.layout import STABILITY_DIR

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
    logged: bool = False  # may hold more number columns: a user's loop logs them (ctx.log)

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


_BRANCH = _c("branch", str, "ticket, or the control: " + ", ".join(CONTROLS.names()))
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
    logged=True,
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
        _c("params", int, "parameters: kept weights plus unmasked parameters, of the network "
           "lth.pruning.shrink makes for structured granularities (lth.pruning.cost)",
           optional=True, empty=True),
        _c("flops", int, "multiply-accumulates per example of the kept weights (conv: times "
           "output positions; ShrinkBench's count)", optional=True, empty=True),
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
TABLES = (
    METRICS, SUMMARY, LAYERS, SUMMARY_STATS, ANALYSIS, ANALYSIS_HISTOGRAMS,
    STABILITY_ERRORS, STABILITY_COPIES, STABILITY_SUMMARY,
)  # fmt: skip
RUN_TABLES = (METRICS, SUMMARY, LAYERS)  # written by the run, in the manifest


def with_logged(table: Table, rows) -> Table:
    """``table`` with the columns its rows hold beyond the declared ones, after them in the
    order they first appear: the numbers a user's training loop logs into metrics.csv
    (``ctx.log``, :mod:`lth.study.userloop`). A table without ``logged`` comes back as it is."""
    if not table.logged:
        return table
    declared, extra = set(table.names), {}
    for row in rows:
        extra |= {name: None for name in row if name not in declared}
    columns = tuple(_c(n, float, "logged by the training loop", optional=True) for n in extra)
    return dataclasses.replace(table, columns=table.columns + columns) if columns else table


def schema_markdown() -> str:
    """Every CSV file of a run folder and its columns, as markdown (for the README)."""
    out = []
    for table in TABLES:
        out += [f"`{table.file}`: {table.row}.", "", "| column | type | meaning |", "|---|---|---|"]
        out += [f"| `{c.name}` | {_TYPE_NAMES[c.kind]} | {c.meaning} |" for c in table.columns]
        out.append("")
    return "\n".join(out)
