"""Publication-quality figures of one or several run folders (Frankle & Carbin's figure style).

:func:`plot_runs` draws four figures (six with a mask analysis), saves each as PNG (and PDF
on request) and returns the :class:`matplotlib.figure.Figure` objects by name:

- ``accuracy_vs_weights``: test accuracy at the end of training and/or at the early-stop
  iteration (``panels``) against percent of weights remaining, log x axis running from 100%
  down, with the dense network (level 0) as a dotted line and a band of ± 1 std;
- ``curves``: validation accuracy and loss over training for a few levels, one row per branch,
  the y axes zoomed to the curves from 10% of training on (a note in the panel says what runs
  off);
- ``early_stop``: the early-stop iteration against weights remaining, the iteration budget
  (training length) dashed and the points where a replicate reached it ringed;
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

Titles describe the study from its config with the registries' display names ("LeNet-300-100
on MNIST"), never by folder name; ``title`` replaces that line ("" draws no title). Runs that
differ only in seed are one series, their replicates pooled as ``lth report`` pools them; other
runs are told apart by ``labels`` (default: the values of the settings in which they differ,
e.g. "snip" or "rate 0.3", else their folder names). A legend entry says what the spread is and
over how many replicates ("±1 std over n = 2 replicates"; "single run (n = 1)" without bars);
accuracy bars and bands are clipped to [0, 100] and accuracy axes end at 100 at most.
An overlay of several run folders goes to a folder of its own, never into a run's ``plots/``.

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
from lth.analysis.results import load_figure_runs, member_rows
from lth.analysis.run_figures import accuracy_figure, curves_figure, early_stop_figure, layer_figure
from lth.core.fileio import atomic_write
from lth.errors import LTHError
from lth.runfolder.layout import ANALYSIS_FIGURES, FIGURES, PLOTS
from lth.runfolder.manifest import RunWriter
from lth.runfolder.ownership import check_output_path, check_replace
from lth.runfolder.readers import load_analysis, load_histograms
from lth.runfolder.tables import ANALYSIS, ANALYSIS_HISTOGRAMS, METRICS

__all__ = [
    "ANALYSIS_FIGURES", "BANDS", "FIGURES", "PANELS", "check_targets", "overlay_folder",
    "plot_runs",
]  # fmt: skip
BANDS = ("std", "minmax", "ci")
PANELS = ("both", "end", "early")


def _read_analysis(path: Path) -> tuple[list[dict], list[dict]] | None:
    """A run folder's analysis files, when it has analysis.csv (a damaged one raises)."""
    if not (path / ANALYSIS.file).is_file():
        return None
    hist = path / ANALYSIS_HISTOGRAMS.file
    return load_analysis(path), load_histograms(path) if hist.is_file() else []


def overlay_folder(run_dirs: Sequence[str | os.PathLike[str]]) -> Path:
    """Where an overlay of several run folders goes by default: a new folder beside the first
    one, named after them ('plots_runA+runB'; 'plots_runA+3_more' when that is long)."""
    names = [Path(p).resolve().name for p in run_dirs]
    name = "plots_" + "+".join(names)
    if len(name) > 80:
        name = f"plots_{names[0]}+{len(names) - 1}_more"
    return Path(run_dirs[0]).resolve().parent / name


def check_targets(
    run_dirs: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None,
    formats: Sequence[str],
    force: bool = False,
) -> Path:
    """The folder the figures of ``run_dirs`` go to (default: the run's ``plots/`` for one run,
    :func:`overlay_folder` for several), checked before anything is drawn: not one of a run
    folder's own folders (an overlay not even a run's ``plots/``: it would replace that run's
    own figures), and no figure there that lth did not save (unless ``force``)."""
    overlay = len(run_dirs) > 1
    if out_dir is None:
        target = overlay_folder(run_dirs) if overlay else Path(run_dirs[0]) / PLOTS
    else:
        target = Path(out_dir)
    if target.exists() and not target.is_dir():
        raise LTHError(f"--out {target} is a file; choose a folder")
    for run_dir in run_dirs:
        check_output_path(run_dir, target, "--out", folder=True)
        if overlay and _inside(target, Path(run_dir) / PLOTS):
            raise LTHError(
                f"--out {target} is the plots/ folder of {run_dir}; an overlay of several runs "
                "never replaces a run's own figures: choose another folder (default: "
                f"{overlay_folder(run_dirs)})"
            )
    for name in FIGURES + ANALYSIS_FIGURES:
        for fmt in formats:
            check_replace(target / f"{name}.{fmt}", "--out", is_lth_figure, force)
    return target


def _inside(path: Path, folder: Path) -> bool:
    """Whether ``path`` is ``folder`` or inside it (resolved; neither need exist)."""
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def plot_runs(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    levels: Sequence[int] | None = None,
    formats: Sequence[str] = ("png",),
    *,
    band: str = "std",
    panels: str = "both",
    early_stop_panel: bool | None = None,
    mask_analysis: bool = True,
    analyses: Sequence[tuple[list[dict], list[dict]] | None] | None = None,
    dpi: int = 200,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    pool: bool = True,
    force: bool = False,
) -> dict[str, Figure]:
    """Draw the figures of one or several run folders, save them, and return them by name.

    Args:
        run_dirs: Run folders to overlay (a single path is accepted too; a folder holding run
            folders stands for them). Runs that differ only in seed are pooled into one series
            (mean ± spread over all their replicates, as ``lth report`` pools them) unless
            ``pool=False``.
        out_dir: Where ``<name>.<fmt>`` files go. Default: the run's ``plots/`` for one run;
            for several, a new folder beside them (:func:`overlay_folder`): an overlay never
            writes into a run's own ``plots/``.
        levels: The levels drawn in ``curves`` and ``weight_histograms`` (default: about four).
        formats: PNG by default (add ``"pdf"`` for a paper); ``()`` saves nothing.
        band: The spread over replicates: ``"std"`` ±1 sample-std error bars (default),
            ``"ci"`` (or ``"ci95"``) shaded 95% t intervals of the mean, ``"minmax"`` min-max
            bands. Bars and bands of accuracies are clipped to [0, 100] and the accuracy axes
            never go above 100; every figure says n ("single run" when there is one replicate).
        panels: ``accuracy_vs_weights``'s panels: ``"end"`` (test accuracy at the end of
            training), ``"early"`` (at the early-stop iteration) or ``"both"``.
        early_stop_panel: Older spelling of ``panels`` (False: ``"end"``).
        mask_analysis: Also draw ``mask_analysis`` and ``weight_histograms`` when the first run
            has an analysis: ``analyses`` (one ``(rows, histogram rows)`` or None per entry
            of ``run_dirs``, as :func:`lth.analysis.mask_analysis.ensure_analysis` returns
            them), else its ``analysis.csv`` as it is.
        analyses: See ``mask_analysis``.
        dpi: Resolution of PNG files.
        title: The second title line of every figure (default: the study, e.g.
            "LeNet-300-100 on MNIST"); "" draws no title.
        labels: One legend name per series (default: the values of the settings in which the
            series differ, e.g. "snip", "rate 0.3"; else their folder names).
        pool: Pool runs that differ only in seed (default) or draw each run apart.
        force: Replace a figure in ``out_dir`` that lth did not save.

    Returns:
        The figures by name (``curves`` is left out when a run has no metrics.csv, and
        ``layer_remaining`` when one has no layers.csv, as in a published results/ copy).

    Example:
        >>> import tempfile, pathlib
        >>> plot_runs([pathlib.Path(tempfile.mkdtemp())], formats=())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: ...summary.csv...

    In ``accuracy_vs_weights`` a dotted line with a band marks the dense network (level 0,
    mean ± std) and a hollow star each series' sparsest matching level (Frankle et al. 2020);
    diverged replicates are left out of means and drawn hollow. In ``early_stop`` a dashed line
    marks the iteration budget and ringed points the levels where a replicate never stopped
    early. Nothing is drawn when ``out_dir`` is one of a run folder's own folders, or holds a
    figure of the same name that lth did not save.
    """
    band = {"ci95": "ci"}.get(band, band)
    if band not in BANDS:
        raise LTHError(f"unknown band {band!r}; choose one of std, ci95, minmax")
    if early_stop_panel is not None:
        panels = "both" if early_stop_panel else "end"
    if panels not in PANELS:
        raise LTHError(f"unknown panels {panels!r}; choose one of {', '.join(PANELS)}")
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

    runs = load_figure_runs(run_dirs, labels, pool)
    folders = [p for run in runs for p in run.members]
    target = check_targets(folders, out_dir, formats, force) if formats else None
    if mask_analysis:
        _attach_analyses(runs, run_dirs, analyses)
    has_metrics = all((p / METRICS.file).is_file() for p in folders)
    with matplotlib.rc_context(STYLE):
        figures = {"accuracy_vs_weights": accuracy_figure(runs, band, panels, title)}
        if has_metrics:
            figures["curves"] = curves_figure(runs, levels, title)
        figures["early_stop"] = early_stop_figure(runs, band, title)
        if all(run.layers is not None for run in runs):
            figures["layer_remaining"] = layer_figure(runs, title)
        if runs[0].analysis:
            figures["mask_analysis"] = mask_figure(runs, title)
            hist = histogram_figure(runs[:1], levels, title)
            if hist is not None:
                figures["weight_histograms"] = hist
        if target is not None:
            _save(figures, runs, target, formats, dpi)
    return figures


def _attach_analyses(runs, run_dirs, analyses) -> None:
    """Give each series its mask analysis: ``analyses`` by folder, else analysis.csv; a pooled
    series gets its folders' rows with replicates renumbered (histograms: the first's)."""
    given = {}
    if analyses is not None:
        given = {Path(p).resolve(): a for p, a in zip(run_dirs, analyses)}
    for run in runs:
        found = []
        for path in run.members:
            key = path.resolve()
            found.append(given[key] if key in given else _read_analysis(path))
        if any(f is None for f in found):
            continue
        rows = {path: f[0] for path, f in zip(run.members, found)}
        run.analysis = member_rows(run, rows.__getitem__)
        run.histograms = found[0][1]


def _save(figures: dict[str, Figure], runs, target: Path, formats, dpi: int) -> None:
    """Write every figure in every format to ``target`` (a run's own plots/: recorded in its
    manifest)."""
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LTHError(
            f"cannot create plot folder {target} ({e.strerror}); pass a writable out_dir"
        ) from None
    home = None
    if len(runs) == 1 and len(runs[0].members) == 1 and _same_dir(runs[0].path / PLOTS, target):
        home = runs[0].path
    writer = None
    if home is not None:  # the run's own plots/: recorded in its manifest
        target, writer = home / PLOTS, RunWriter(home)
    paths = [target / f"{name}.{fmt}" for name in figures for fmt in formats]
    with writer.writing(paths) if writer else contextlib.nullcontext():
        for name, fig in figures.items():
            for fmt in formats:
                save_figure(fig, target, name, fmt, dpi, writer.write if writer else atomic_write)


def _same_dir(a: Path, b: Path) -> bool:
    """Whether two paths name the same existing folder."""
    try:
        return a.samefile(b)
    except OSError:
        return False
