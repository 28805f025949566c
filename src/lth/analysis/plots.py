"""Publication-quality figures of one or several run folders (Frankle & Carbin's figure style).

:func:`plot_runs` draws four figures (six with a mask analysis), saves each as PNG (and PDF
on request) and returns the :class:`matplotlib.figure.Figure` objects by name:

- ``accuracy_vs_weights``: test accuracy at the end of training (and at the early-stop
  iteration) against percent of weights remaining, log x axis running from 100% down;
- ``curves``: validation accuracy and loss over training for a few levels of the ticket, the
  y axes zoomed to the curves from 10% of training on (the steep first evaluations run off);
- ``early_stop``: the early-stop iteration against weights remaining;
- ``layer_remaining``: percent of weights remaining per layer against pruning level; layers
  (and runs) whose curves are the same (within rounding: 0.5%) are one line, labelled with
  all of them;

and, when the first run folder has a mask analysis (``analysis.csv``, written by
:func:`lth.analysis.mask_analysis.ensure_analysis`, which ``lth run`` and ``lth plot`` call first):

- ``mask_analysis``: Jaccard overlap of masks (the ticket with the random-pruning control,
  and each branch with its previous level's mask) and the fraction of survivors that kept
  their sign from θ-start to the end of training, against weights remaining (means over
  replicates). Series that carry no information are left out and the figure says so: the
  overlap with the previous level of nested masks (the ticket's: each level keeps a subset of
  the last, so the overlap is just the fraction kept, 1 - rate) and a branch whose values are
  those of another branch (reinit trains on the ticket's masks);
- ``weight_histograms``: histograms of the surviving weights' magnitudes at θ-start and at the
  end of training for the same levels as ``curves`` (ticket, first replicate), on shared log
  bins, the x axis spanning the central 99% of the weights.

Every series in a legend stays visible: series that meet at the same points (the ticket and
random_prune at level 0 are the same network; early-stop iterations are often the same) are
shifted sideways by a few points (a display offset: the artists' data are the true values),
the ticket is drawn on top, and each branch has its own marker. Legends sit below the axes,
with as many columns as fit; the figure grows to hold them, so no text is ever cut off.

Titles describe the study from its config (model on dataset), never by folder name;
``title`` replaces that line ("" draws no title). Several runs are told apart by ``labels``
(default: the settings in which they differ, e.g. "seed 1", else their folder names). Where
replicates give a spread, a legend entry says what it is and over how many replicates
("±1 std, n = 2 replicates").

This module only reads run folders (through :mod:`lth.runfolder`) and writes the figures.
Figures are built as bare ``Figure`` objects (no pyplot), so nothing global is created or has
to be closed; styling is applied through a temporary ``rc_context``. With one run, colours and
markers identify the branch (ticket, reinit, random_prune); with several, colours identify the
run and markers and line styles the branch.

Artists carry their legend label, and ``gid`` values for tests and tools: a branch's mean
line has ``gid == label``; its error bars (a LineCollection) ``"errorbar:" + label``; its
min-max band ``"band:" + label``; its diverged replicates ``"diverged:" + label``. In
``mask_analysis`` the lines are labelled ``"<branch> vs. previous level"`` and ``"ticket vs.
random_prune"`` (left panel) and ``"<branch>"`` (right panel); in ``weight_histograms`` the step
patches have ``gid`` ``"init:<level>"`` and ``"final:<level>"``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

from lth.analysis.figure_style import STYLE, is_lth_figure, save_figure
from lth.analysis.mask_figures import histogram_figure, mask_figure
from lth.analysis.results import load_figure_runs
from lth.analysis.run_figures import accuracy_figure, curves_figure, early_stop_figure, layer_figure
from lth.core.fileio import atomic_write
from lth.errors import LTHError
from lth.runfolder.layout import ANALYSIS_FIGURES, FIGURES, PLOTS
from lth.runfolder.manifest import RunWriter
from lth.runfolder.ownership import check_output_path, check_replace
from lth.runfolder.readers import load_analysis, load_histograms
from lth.runfolder.tables import ANALYSIS, ANALYSIS_HISTOGRAMS

__all__ = ["ANALYSIS_FIGURES", "BANDS", "FIGURES", "check_targets", "plot_runs"]
BANDS = ("std", "minmax", "ci")


def _read_analysis(path: Path) -> tuple[list[dict], list[dict]] | None:
    """A run folder's analysis files, when it has analysis.csv (a damaged one raises)."""
    if not (path / ANALYSIS.file).is_file():
        return None
    hist = path / ANALYSIS_HISTOGRAMS.file
    return load_analysis(path), load_histograms(path) if hist.is_file() else []


def check_targets(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None,
    formats: Sequence[str],
    force: bool = False,
) -> Path:
    """The folder the figures of ``run_dirs`` go to (default: the first run's ``plots/``),
    checked before anything is drawn: not one of a run folder's own folders (but its
    ``plots/``), and no figure there that lth did not save (unless ``force``)."""
    target = Path(out_dir) if out_dir is not None else Path(run_dirs[0]) / PLOTS
    if target.exists() and not target.is_dir():
        raise LTHError(f"--out {target} is a file; choose a folder")
    for run_dir in run_dirs:
        check_output_path(run_dir, target, "--out", folder=True)
    for name in FIGURES + ANALYSIS_FIGURES:
        for fmt in formats:
            check_replace(target / f"{name}.{fmt}", "--out", is_lth_figure, force)
    return target


def plot_runs(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    levels: Sequence[int] | None = None,
    formats: Sequence[str] = ("png",),
    *,
    band: str = "std",
    early_stop_panel: bool = True,
    mask_analysis: bool = True,
    analyses: Sequence[tuple[list[dict], list[dict]] | None] | None = None,
    dpi: int = 200,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    force: bool = False,
) -> dict[str, Figure]:
    """Draw the figures of one or several run folders, save them, and return them by name.

    ``run_dirs``: run folders to overlay (a single path is accepted too; a folder holding run
    folders stands for them). ``labels``: one name per run for the legends (default: the
    settings in which the runs differ, else their folder names); legend entries are
    "label: branch" when there are several runs. ``title``: the second title line of every
    figure (default: the study, e.g. "lenet_300_100 on mnist"); "" draws no title.
    ``out_dir``: where ``<name>.<fmt>`` files go (default: the first run's ``plots/`` folder);
    ``formats``: PNG by default (PDF, e.g. ``("png", "pdf")``, on request: embedding its fonts
    takes seconds); ``formats=()`` saves nothing. ``levels``: the ticket levels drawn in
    ``curves`` and ``weight_histograms`` (default: about four spread out). ``band``: ``"std"``
    draws ±1 sample-std error bars, ``"minmax"`` shaded min-max bands, ``"ci"`` shaded bands of
    the mean's 95% confidence interval (t; only where a level has two or more usable
    replicates; a legend entry gives n). In ``accuracy_vs_weights`` a hollow star marks each
    series' sparsest matching level: mean test accuracy no lower than one std below the dense
    ticket's (Frankle et al. 2020). ``early_stop_panel``: add a second
    accuracy panel with the test accuracy at the early-stop iteration. Diverged replicates are
    left out of means and drawn as hollow markers. ``mask_analysis``: also draw
    ``mask_analysis`` and ``weight_histograms`` when the first run folder has an analysis:
    ``analyses`` (one ``(analysis rows, histogram rows)`` or None per entry of ``run_dirs``, as
    :func:`lth.analysis.mask_analysis.ensure_analysis` returns them), else its ``analysis.csv`` and
    ``analysis_histograms.csv`` as they are (call ``ensure_analysis`` first to bring them up to
    date); silently left out when there is none. Nothing is drawn when ``out_dir`` is one of
    a run folder's own folders (but ``plots/``), or holds a figure of the same name that lth
    did not save (its metadata says so; ``force=True`` replaces it).
    """
    if band not in BANDS:
        raise LTHError(f"unknown band {band!r}; choose one of {', '.join(BANDS)}")
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    run_dirs = list(run_dirs)
    if levels is not None:
        levels = [int(lv) for lv in levels]
    formats = [f.lower().lstrip(".") for f in formats]
    supported = Figure().canvas.get_supported_filetypes()
    bad = [f for f in formats if f not in supported]
    if bad:
        raise LTHError(f"cannot save figures as {bad[0]!r}; choose from {', '.join(supported)}")
    if analyses is not None and len(analyses) != len(run_dirs):
        raise LTHError(f"analyses has {len(analyses)} entries for {len(run_dirs)} run folders")

    runs = load_figure_runs(run_dirs, labels)
    paths = [run.path for run in runs]
    target = check_targets(paths, out_dir, formats, force) if formats else None
    if mask_analysis:
        given = {}
        if analyses is not None:
            given = {Path(p).resolve(): a for p, a in zip(run_dirs, analyses)}
        for run in runs:
            key = run.path.resolve()
            found = given[key] if key in given else _read_analysis(run.path)
            if found is not None:
                run.analysis, run.histograms = found
    with matplotlib.rc_context(STYLE):
        figures = {
            "accuracy_vs_weights": accuracy_figure(runs, band, early_stop_panel, title),
            "curves": curves_figure(runs, levels, title),
            "early_stop": early_stop_figure(runs, band, title),
            "layer_remaining": layer_figure(runs, title),
        }
        if runs[0].analysis:
            figures["mask_analysis"] = mask_figure(runs, title)
            hist = histogram_figure(runs[:1], levels, title)
            if hist is not None:
                figures["weight_histograms"] = hist
        if target is not None:
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise LTHError(
                    f"cannot create plot folder {target} ({e.strerror}); pass a writable out_dir"
                ) from None
            home = next((r.path for r in runs if _same_dir(r.path / PLOTS, target)), None)
            writer = None
            if home is not None:  # the run's own plots/: recorded in its manifest
                target, writer = home / PLOTS, RunWriter(home)
            paths = [target / f"{name}.{fmt}" for name in figures for fmt in formats]
            with writer.writing(paths) if writer else contextlib.nullcontext():
                for name, fig in figures.items():
                    for fmt in formats:
                        save_figure(
                            fig, target, name, fmt, dpi, writer.write if writer else atomic_write
                        )
    return figures


def _same_dir(a: Path, b: Path) -> bool:
    """Whether two paths name the same existing folder."""
    try:
        return a.samefile(b)
    except OSError:
        return False
