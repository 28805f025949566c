"""Every name and path of a run folder, built by functions that readers and writers share.

Layout of a run folder::

    .lth-run                          marker: lth made this folder; its format and the folder's id
    config.toml                       resolved configuration (enough to repeat the run)
    metrics.csv, summary.csv,         the run's tables (:data:`lth.runfolder.tables.METRICS`,
    layers.csv                          :data:`~lth.runfolder.tables.SUMMARY`,
                                        :data:`~lth.runfolder.tables.LAYERS`)
    <branch>/<replicate>/level_<LL>/  mask.safetensors, init.safetensors, final.safetensors
                                      (and step_<k>.safetensors: weights at iteration k)
    summary_stats.csv, analysis.csv,  derived tables, recomputed from the files above
    analysis_histograms.csv             (:mod:`lth.runfolder.tables`)
    plots/                            figures (<figure>.png, <figure>.pdf)
    tensorboard/                      TensorBoard event files (``lth run --tensorboard``)
    stability/                        ``lth stability``'s files (:func:`stability_file`)
    .lth/                             progress.json, manifest.json, in-level checkpoints
                                      (level_<LL>_group_<GG>.pt) and the lock

Which paths lth writes (to refuse a report there, to list its files) is
:mod:`lth.runfolder.ownership`; the marker and the manifest are :mod:`lth.runfolder.manifest`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from lth.pruning.controls import CONTROLS

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
FIGURES = ("accuracy_vs_weights", "curves", "early_stop", "layer_remaining")
ANALYSIS_FIGURES = ("mask_analysis", "weight_histograms")  # drawn when an analysis exists
ALL = "all"  # the layer name of analysis.csv's rows about all prunable layers together
CONTROL = "random_prune"  # the control analysis.csv's jaccard_random_prune compares with
# a published folder (``lth publish``, :mod:`lth.runfolder.publish`): its packed masks, its
# record of the files it wrote, its report
PACKED_MASKS = "masks.safetensors"
PUBLISHED = "published.json"
REPORT = "report.md"

LEVEL_FILE_RE = re.compile(r"^(mask|init|final|step_\d+)\.safetensors$")
LEVEL_DIR_RE = re.compile(r"^level_\d{2,}$")
REPLICATE_DIR_RE = re.compile(r"^\d+$")
CHECKPOINT_RE = re.compile(r"^level_(\d{2,})_group_\d{2,}\.pt$")
# .NAME.xxxxxxxx.tmp (lth.core.fileio.atomic_write; also lth's older mask and figure writers,
# which added the figure format: .NAME.xxxxxxxx.png.tmp) and .NAME.tmp<pid> (lth's older run
# writer)
TEMPORARY_RE = re.compile(r"^\..+\.([a-z0-9_]{8}(\.[A-Za-z0-9]+)?\.tmp|tmp\d+)$")


def checkpoint_path(root: str | os.PathLike[str], level: int, group: int) -> Path:
    """The in-level checkpoint of a group of networks, ``.lth/level_03_group_00.pt``."""
    return Path(root) / INTERNAL / f"level_{level:02d}_group_{group:02d}.pt"


def checkpoint_level(rel: str) -> int | None:
    """The level of an in-level checkpoint (its path relative to the run folder); None for
    any other path."""
    parts = PurePosixPath(rel).parts
    found = CHECKPOINT_RE.match(parts[1]) if len(parts) == 2 and parts[0] == INTERNAL else None
    return None if found is None else int(found.group(1))


def level_name(level: int) -> str:
    """The name of a level's folder, e.g. ``level_03``."""
    return f"level_{level:02d}"


def level_dir(root: str | os.PathLike[str], branch: str, replicate: int, level: int) -> Path:
    """Folder of one branch, replicate and level, e.g. ``ticket/0/level_03``."""
    return Path(root) / branch / str(replicate) / level_name(level)


def level_file(
    root: str | os.PathLike[str], branch: str, replicate: int, level: int, which: str
) -> Path:
    """One file of a level folder: ``which`` is ``mask``, ``init``, ``final`` or ``step_<k>``,
    e.g. ``ticket/0/level_03/final.safetensors``."""
    return level_dir(root, branch, replicate, level) / f"{which}.safetensors"


def branch_names() -> tuple[str, ...]:
    """The branches a run folder may hold, in display order: ticket, then every registered
    control (:data:`lth.pruning.controls.CONTROLS`)."""
    return ("ticket", *CONTROLS.names())


def level_branches(controls: Sequence[str], level: int) -> tuple[str, ...]:
    """The branches a study trains at ``level``: the ticket alone at level 0 (the dense
    network, trained once per replicate: a control there would be the ticket itself or one more
    dense seed), the ticket and ``controls`` from level 1 on. A run folder of an older lth may
    also hold the controls at level 0 (``lth verify`` accepts and checks them).

    Args:
        controls: The study's controls (``ExperimentConfig.controls``).
        level: The pruning level, 0 for the dense network.

    Returns:
        tuple[str, ...]: The branch names, the ticket first.

    Examples:
        >>> level_branches(("reinit", "random_prune"), 0), level_branches(("reinit",), 2)
        (('ticket',), ('ticket', 'reinit'))
    """
    return ("ticket",) if level == 0 else ("ticket", *controls)


def branch_order(names: Iterable[str]) -> list[str]:
    """Branch names in file and display order: ticket, reinit, random_prune, others sorted."""
    names = set(names)
    known = branch_names()
    return [b for b in known if b in names] + sorted(names - set(known))


# lth stability's analyses (lth.stability.measure), inside the run folder
STABILITY_DIR = "stability"
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
