"""Mask analysis: how masks overlap, whether survivors keep their sign, how magnitudes move.

Pure functions over tensors (a mask set is ``{parameter name: bool tensor}``, weights are
``{parameter name: tensor}`` holding at least the masked parameters):

- :func:`jaccard_overlap`: |A ∩ B| / |A ∪ B| of the kept entries of two mask sets;
- :func:`sign_kept` / :func:`sign_kept_counts`: the fraction of surviving weights (mask True,
  non-zero at the level's start θ-start, i.e. its ``init``) whose sign at the end of training
  equals their sign at θ-start; a survivor trained to exactly 0 did not keep its sign;
- :func:`magnitude_histograms`: counts of the survivors' |w| at θ-start and at the end of
  training on shared log-spaced bins (:func:`log_bins`).

And a run-folder driver: :func:`compute_analysis` reads every branch, replicate and level
listed in ``summary.csv`` (``<branch>/<replicate>/level_<LL>/{mask,init,final}.safetensors``)
and returns one row per prunable layer plus an ``all`` row, and the per-level magnitude
histograms on bins shared by the whole run; :func:`write_analysis` writes them to
``RUN_DIR/analysis.csv`` and ``RUN_DIR/analysis_histograms.csv``, and :func:`ensure_analysis`
does so only when they are missing or out of date (``lth run`` and ``lth plot`` call it before
drawing). The files' columns are declared in :mod:`lth.runfolder.tables`
(:data:`~lth.runfolder.tables.ANALYSIS`,
:data:`~lth.runfolder.tables.ANALYSIS_HISTOGRAMS`); :mod:`lth.runfolder.readers` reads them back
(:func:`~lth.runfolder.readers.load_analysis`, :func:`~lth.runfolder.readers.load_histograms`).

In ``analysis.csv``, ``jaccard_previous_level`` is the overlap with the same branch and
replicate's mask one level earlier (empty at level 0 or when that level is absent),
``jaccard_random_prune`` (ticket rows only) the overlap with the ``random_prune`` control's
mask of the same replicate and level, ``sign_kept`` a fraction 0-1 (empty when the layer has
no survivors). Survivors whose magnitude is 0 or not finite are in no histogram bin.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lth.core.fileio import load_tensors
from lth.errors import LTHError
from lth.pruning.masks import jaccard
from lth.runfolder.csvio import csv_text
from lth.runfolder.layout import ALL, CONTROL, branch_order, level_dir
from lth.runfolder.manifest import RunWriter
from lth.runfolder.readers import load_analysis, load_histograms, load_summary
from lth.runfolder.tables import ANALYSIS, ANALYSIS_HISTOGRAMS

__all__ = [
    "ANALYSIS_COLUMNS",
    "HISTOGRAM_COLUMNS",
    "HIST_BINS",
    "analyze_run",
    "compute_analysis",
    "ensure_analysis",
    "has_level_files",
    "jaccard_overlap",
    "load_analysis",
    "load_histograms",
    "log_bins",
    "magnitude_histograms",
    "sign_kept",
    "sign_kept_counts",
    "write_analysis",
]

ANALYSIS_FILE = ANALYSIS.file
HISTOGRAM_FILE = ANALYSIS_HISTOGRAMS.file
ANALYSIS_COLUMNS = ANALYSIS.names
HISTOGRAM_COLUMNS = ANALYSIS_HISTOGRAMS.names
HIST_BINS = 40

Weights = Mapping[str, Tensor]


# ----------------------------------------------------------------------------- pure functions


def _np(t: Tensor | np.ndarray) -> np.ndarray:
    """A CPU numpy view of a tensor (the arithmetic here is done in numpy: single-threaded,
    so it stays fast on a busy machine)."""
    if isinstance(t, np.ndarray):
        return t
    t = t.detach()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    return t.cpu().numpy()


def _prepare(init, final, masks) -> list[dict[str, np.ndarray]]:
    """The three arguments as checked ``{name: numpy array}`` sets; lone tensors become
    one-entry sets named ``layer``, so every function accepts a layer or a whole model."""
    items = (init, final, masks)
    sets = [{"layer": x} if isinstance(x, Tensor | np.ndarray) else dict(x) for x in items]
    for name, m in sets[2].items():
        if not isinstance(m, Tensor | np.ndarray) or str(m.dtype).removeprefix("torch.") not in (
            "bool",
            "uint8",
        ):
            what = f"dtype {m.dtype}" if hasattr(m, "dtype") else f"type {type(m).__name__}"
            raise LTHError(
                f"mask {name!r} has {what}; masks must be bool tensors (convert with mask.bool())"
            )
    init, final, masks = ({k: _np(v) for k, v in d.items()} for d in sets)
    for name, m in masks.items():
        for what, weights in (("init", init), ("final", final)):
            if name not in weights:
                raise LTHError(f"{what} weights lack {name!r}, which the mask set has")
            if tuple(weights[name].shape) != tuple(m.shape):
                raise LTHError(
                    f"{what} weights {name!r} have shape {tuple(weights[name].shape)} but the "
                    f"mask has shape {tuple(m.shape)}; they belong to different models"
                )
    return [init, final, {k: m.astype(bool, copy=False) for k, m in masks.items()}]


def jaccard_overlap(a: Mapping[str, Tensor] | Tensor, b: Mapping[str, Tensor] | Tensor) -> float:
    """|A ∩ B| / |A ∪ B| of the kept entries of two masks or mask sets (1.0 if both are empty).

    The mask sets must hold the same layers with the same shapes (else :class:`LTHError`).
    """
    return jaccard(a, b)


def sign_kept_counts(init: Weights | Tensor, final: Weights | Tensor, masks: Weights | Tensor):
    """Per layer, ``(kept_sign, survivors)``: survivors are entries with mask True and init != 0;
    kept_sign counts those whose final sign equals their init sign (final 0 or NaN: not kept)."""
    init, final, masks = _prepare(init, final, masks)
    out: dict[str, tuple[int, int]] = {}
    for name, m in masks.items():
        i, f = init[name], final[name]
        alive = m & (i != 0)
        same = ((i > 0) & (f > 0)) | ((i < 0) & (f < 0))  # False where f is 0 or NaN
        out[name] = (int(np.count_nonzero(alive & same)), int(np.count_nonzero(alive)))
    return out


def sign_kept(init: Weights | Tensor, final: Weights | Tensor, masks: Weights | Tensor) -> float:
    """Fraction of surviving weights (mask True, init != 0), over all layers together, whose
    sign at the end of training equals their sign at θ-start (``init``); NaN if none survive.

    For one layer pass tensors, or use :func:`sign_kept_counts` for every layer at once.
    """
    counts = sign_kept_counts(init, final, masks).values()
    survivors = sum(n for _, n in counts)
    return sum(k for k, _ in counts) / survivors if survivors else math.nan


def _survivor_magnitudes(weights: Weights, masks: Weights) -> np.ndarray:
    """|w| of the masked-in entries of every layer, as one float64 array."""
    parts = [np.abs(weights[name][m]).astype(np.float64) for name, m in masks.items()]
    return np.concatenate(parts) if parts else np.zeros(0)


def _positive_range(values: np.ndarray) -> tuple[float, float] | None:
    good = values[np.isfinite(values) & (values > 0)]
    return (float(good.min()), float(good.max())) if good.size else None


def log_bins(lo: float, hi: float, bins: int = HIST_BINS) -> np.ndarray:
    """``bins + 1`` log-spaced edges from ``lo`` to ``hi`` (both > 0; widened if equal)."""
    if not (lo > 0 and hi > 0 and math.isfinite(lo) and math.isfinite(hi)):
        raise LTHError(f"log bins need finite positive limits, got {lo!r} and {hi!r}")
    if int(bins) != bins or bins < 1:
        raise LTHError(f"the number of bins must be a positive whole number, got {bins!r}")
    lo, hi = min(lo, hi), max(lo, hi)
    if lo == hi:
        lo, hi = lo / 2, hi * 2
    edges = np.geomspace(lo, hi, int(bins) + 1)
    edges[0], edges[-1] = lo, hi
    return edges


def magnitude_histograms(
    init: Weights | Tensor,
    final: Weights | Tensor,
    masks: Weights | Tensor,
    bins: int | Sequence[float] | np.ndarray = HIST_BINS,
) -> dict:
    """Histograms of the survivors' |w| (mask True), all layers together, at θ-start (``init``)
    and at the end of training (``final``), on the same log-spaced bins.

    ``bins``: a number of bins (edges then span the smallest to the largest non-zero magnitude
    of both), or the edges themselves (increasing; pass the same edges to compare levels).
    Returns ``{"edges", "init", "final"}`` (numpy arrays; counts as int64) plus
    ``"survivors"`` and ``"init_outside"``/``"final_outside"``: survivors in no bin (magnitude
    0, not finite, or outside the edges).
    """
    init, final, masks = _prepare(init, final, masks)
    mags = {"init": _survivor_magnitudes(init, masks), "final": _survivor_magnitudes(final, masks)}
    if np.ndim(bins) == 0:
        ranges = [r for r in map(_positive_range, mags.values()) if r is not None]
        if ranges:
            edges = log_bins(min(r[0] for r in ranges), max(r[1] for r in ranges), bins)
        else:
            edges = log_bins(1e-3, 1.0, bins)
    else:
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
            raise LTHError("histogram edges must be an increasing list of at least two numbers")
    out: dict = {"edges": edges, "survivors": int(mags["init"].size)}
    for key, values in mags.items():
        counts = np.histogram(values[np.isfinite(values)], bins=edges)[0].astype(np.int64)
        out[key] = counts
        out[f"{key}_outside"] = int(values.size - counts.sum())
    return out


# ----------------------------------------------------------------------------- run folders


def _one_line(e: LTHError) -> LTHError:
    return LTHError(" ".join(str(e).split()))


def _load_level(run: Path, branch: str, replicate: int, level: int):
    """A level's masks, init and final weights, checked against each other."""
    folder = level_dir(run, branch, replicate, level)
    try:
        raw = load_tensors(folder / "mask.safetensors")
        init = load_tensors(folder / "init.safetensors")
        final = load_tensors(folder / "final.safetensors")
    except LTHError as e:
        raise _one_line(e) from None
    if not raw:
        raise LTHError(f"{folder / 'mask.safetensors'} holds no masks; the file is damaged")
    init, final = ({k: _np(v) for k, v in d.items()} for d in (init, final))
    masks = {}
    for name, m in raw.items():
        if m.dtype not in (torch.bool, torch.uint8):
            raise LTHError(
                f"{folder / 'mask.safetensors'}: mask {name!r} has dtype {m.dtype}, not bool; "
                "the file is damaged"
            )
        masks[name] = _np(m.bool())
    for what, weights in (("init", init), ("final", final)):
        path = folder / f"{what}.safetensors"
        for name, m in masks.items():
            if name not in weights:
                raise LTHError(f"{path} lacks {name!r}, which mask.safetensors has; it is damaged")
            if tuple(weights[name].shape) != tuple(m.shape):
                raise LTHError(
                    f"{path}: {name!r} has shape {tuple(weights[name].shape)} but its mask "
                    f"{tuple(m.shape)}; the level's files do not belong together"
                )
    return masks, init, final


def _overlaps(a: Weights, b: Weights, where_a: Path, where_b: Path) -> dict[str, float]:
    """Per layer and ``all``: the Jaccard overlap of two mask sets of the same model."""
    if set(a) != set(b):
        raise LTHError(
            f"{where_a} and {where_b} hold masks of different layers; they are not from one model"
        )
    out, inter_all, union_all = {}, 0, 0
    for name, ma in a.items():
        mb = b[name]
        if ma.shape != mb.shape:
            raise LTHError(
                f"{where_a} and {where_b}: mask {name!r} has shapes {tuple(ma.shape)} and "
                f"{tuple(mb.shape)}; they are not from one model"
            )
        inter, union = int(np.count_nonzero(ma & mb)), int(np.count_nonzero(ma | mb))
        out[name] = inter / union if union else 1.0
        inter_all, union_all = inter_all + inter, union_all + union
    out[ALL] = inter_all / union_all if union_all else 1.0
    return out


def _summary_keys(run: Path) -> list[tuple[str, int, int]]:
    rows = load_summary(run)
    order = {b: i for i, b in enumerate(branch_order({r.branch for r in rows}))}
    keys = {(r.branch, r.replicate, r.level) for r in rows}
    return sorted(keys, key=lambda k: (order[k[0]], k[1], k[2]))


def has_level_files(run_dir: str | os.PathLike[str]) -> bool:
    """Whether the run folder holds any level's ``mask.safetensors`` listed in summary.csv."""
    run = Path(run_dir)
    try:
        keys = _summary_keys(run)
    except LTHError:
        return False
    return any((level_dir(run, *k) / "mask.safetensors").is_file() for k in keys)


def compute_analysis(
    run_dir: str | os.PathLike[str], bins: int = HIST_BINS, histograms: bool = True
) -> tuple[list[dict], list[dict]]:
    """The rows of ``analysis.csv`` and of ``analysis_histograms.csv`` (empty unless
    ``histograms``), computed from the run folder's level files without writing anything."""
    run = Path(run_dir)
    keys = _summary_keys(run)
    by_chain: dict[tuple[int, int], list[str]] = {}
    for branch, rep, level in keys:
        by_chain.setdefault((rep, level), []).append(branch)

    rows: dict[tuple[str, int, int], list[dict]] = {}
    previous: dict[tuple[str, int], tuple[int, dict]] = {}  # (branch, rep) -> (level, masks)
    lo, hi = math.inf, 0.0
    for rep, level in sorted(by_chain):
        masks_here = {}
        for branch in by_chain[(rep, level)]:
            masks, init, final = _load_level(run, branch, rep, level)
            masks_here[branch] = masks
            folder = level_dir(run, branch, rep, level)
            prev = previous.get((branch, rep))
            jprev = {}
            if prev is not None and prev[0] == level - 1:
                where_prev = level_dir(run, branch, rep, level - 1) / "mask.safetensors"
                jprev = _overlaps(masks, prev[1], folder / "mask.safetensors", where_prev)
            signs = sign_kept_counts(init, final, masks)
            signs[ALL] = tuple(sum(c[i] for c in signs.values()) for i in (0, 1))
            counts = {n: (int(np.count_nonzero(m)), int(m.size)) for n, m in masks.items()}
            counts[ALL] = tuple(sum(c[i] for c in counts.values()) for i in (0, 1))
            rows[(branch, rep, level)] = [
                {
                    "branch": branch,
                    "replicate": rep,
                    "level": level,
                    "layer": name,
                    "weights_remaining": 100.0 * counts[name][0] / counts[name][1]
                    if counts[name][1]
                    else math.nan,
                    "jaccard_previous_level": jprev.get(name),
                    "jaccard_random_prune": None,
                    "sign_kept": signs[name][0] / signs[name][1] if signs[name][1] else None,
                }
                for name in [*masks, ALL]
            ]
            if histograms:
                for weights in (init, final):
                    r = _positive_range(_survivor_magnitudes(weights, masks))
                    if r is not None:
                        lo, hi = min(lo, r[0]), max(hi, r[1])
        for branch, masks in masks_here.items():
            previous[(branch, rep)] = (level, masks)
        if "ticket" in masks_here and CONTROL in masks_here:
            where = level_dir(run, "ticket", rep, level) / "mask.safetensors"
            where_c = level_dir(run, CONTROL, rep, level) / "mask.safetensors"
            overlap = _overlaps(masks_here["ticket"], masks_here[CONTROL], where, where_c)
            for row in rows[("ticket", rep, level)]:
                row["jaccard_random_prune"] = overlap[row["layer"]]
    out = [row for k in keys for row in rows[k]]

    hist_rows: list[dict] = []
    if histograms:
        edges = log_bins(lo, hi, bins) if hi > 0 else log_bins(1e-3, 1.0, bins)
        for branch, rep, level in keys:
            masks, init, final = _load_level(run, branch, rep, level)
            h = magnitude_histograms(init, final, masks, edges)
            for which in ("init", "final"):
                hist_rows += [
                    {
                        "branch": branch,
                        "replicate": rep,
                        "level": level,
                        "weights": which,
                        "bin": i,
                        "bin_low": float(edges[i]),
                        "bin_high": float(edges[i + 1]),
                        "count": int(c),
                    }
                    for i, c in enumerate(h[which])
                ]
    return out, hist_rows


def analyze_run(run_dir: str | os.PathLike[str]) -> list[dict]:
    """The rows of ``analysis.csv`` for every branch, replicate and level in summary.csv: one per
    prunable layer and one ``all`` row (see the module docstring for the columns; empty values
    are None). Missing or corrupt files raise :class:`LTHError` naming the file."""
    return compute_analysis(run_dir, histograms=False)[0]


def write_analysis(run_dir: str | os.PathLike[str], bins: int = HIST_BINS) -> Path:
    """Compute the analysis and write ``analysis.csv`` and ``analysis_histograms.csv`` into the
    run folder, atomically, recorded in its manifest. Returns the path of ``analysis.csv``."""
    run = Path(run_dir)
    rows, hist_rows = compute_analysis(run, bins=bins)
    target = run / ANALYSIS_FILE
    histograms = csv_text(hist_rows, ANALYSIS_HISTOGRAMS)
    try:
        RunWriter(run).write_files(
            {run / HISTOGRAM_FILE: histograms, target: csv_text(rows, ANALYSIS)}
        )
    except OSError as e:
        raise LTHError(
            f"cannot write {e.filename or target} ({e.strerror or e}); check the folder's "
            "permissions and free space"
        ) from None
    return target


def _none_to_nan(rows: list[dict]) -> list[dict]:
    return [{k: math.nan if v is None else v for k, v in r.items()} for r in rows]


def ensure_analysis(
    run_dir: str | os.PathLike[str], bins: int = HIST_BINS
) -> tuple[list[dict], list[dict]] | None:
    """The run folder's analysis, brought up to date: ``(analysis rows, histogram rows)`` as
    :func:`load_analysis` and :func:`load_histograms` return them, or None when the folder has
    neither level files nor analysis files.

    ``analysis.csv`` and ``analysis_histograms.csv`` are recomputed from the level files and
    written when either is missing, damaged, does not cover summary.csv or is older than a
    level's ``mask.safetensors``; when the folder is not writable, they are computed in memory
    only. Without level files, the files there are returned as they are (a damaged one raises
    :class:`LTHError`).
    """
    run = Path(run_dir)
    keys = _summary_keys(run)
    masks = [level_dir(run, *k) / "mask.safetensors" for k in keys]
    newest = max((m.stat().st_mtime_ns for m in masks if m.is_file()), default=None)
    rows = hist = damaged = None
    try:
        if (run / ANALYSIS_FILE).is_file():
            rows = load_analysis(run)
        if (run / HISTOGRAM_FILE).is_file():
            hist = load_histograms(run)
    except LTHError as e:  # recomputed below when the level files are there
        damaged = e
    if newest is None:
        if damaged is not None:
            raise damaged
        return None if rows is None else (rows, hist or [])
    current = (
        damaged is None
        and rows is not None
        and hist is not None
        and {(r["branch"], r["replicate"], r["level"]) for r in rows} == set(keys)
        and min((run / name).stat().st_mtime_ns for name in (ANALYSIS_FILE, HISTOGRAM_FILE))
        >= newest
    )
    if current:
        return rows, hist
    if os.access(run, os.W_OK):
        write_analysis(run, bins)
        return load_analysis(run), load_histograms(run)
    rows, hist = compute_analysis(run, bins)
    return _none_to_nan(rows), hist
