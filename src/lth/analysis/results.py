"""The results of one or several run folders, as the report, the papers' comparison and the
figures read them.

:func:`load_runs` reads run folders (a folder holding run folders stands for them) into
:class:`Run` objects labelled by the settings in which they differ (:func:`run_labels`); runs
whose settings differ only in ``seed`` are one study run as several jobs (:func:`poolable`), whose
replicates :func:`pooled_summary` pools. :func:`aggregate` gives per branch and level the
statistics (:class:`Stat`) of a summary column over replicates, :func:`stats_rows` the rows of
``summary_stats.csv`` (means, stds, 95% intervals, matching, the ticket against each control).
Percentages and accuracies are in percent (0-100) throughout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from lth.analysis.stats import matches, mean_interval, verdict, welch_interval
from lth.config import ExperimentConfig, field_kinds
from lth.configfile import applied_settings
from lth.data import get_spec
from lth.errors import LTHError
from lth.runfolder.layout import branch_order
from lth.runfolder.readers import LayerRow, SummaryRow, load_config, load_layers, load_summary
from lth.runfolder.tables import SUMMARY

__all__ = [
    "POOLABLE",
    "METHOD_SETTINGS",
    "QUANTITIES",
    "FigureRun",
    "Run",
    "Stat",
    "accuracy_stats",
    "aggregate",
    "differing_settings",
    "figure_labels",
    "load_figure_runs",
    "load_runs",
    "member_rows",
    "method_parts",
    "poolable",
    "pooled_summary",
    "renumber",
    "seed_groups",
    "run_folders",
    "run_labels",
    "setting_names",
    "show_setting",
    "split_labels",
    "stats_rows",
    "used_values",
]

# ----------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """One quantity of one branch at one level, over its replicates.

    ``mean``/``std``/``min``/``max``/``n`` use only replicates that did not diverge and have a
    finite value; ``std`` is the sample standard deviation (ddof=1), NaN when ``n < 2``.
    ``values`` holds every replicate's value by replicate, ``diverged`` the diverged replicates.
    """

    branch: str
    level: int
    weights_remaining: float
    mean: float
    std: float
    min: float
    max: float
    n: int
    replicates: int
    diverged: tuple[int, ...]
    values: tuple[tuple[int, float], ...]


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = math.fsum(values) / n
    if n < 2:
        return mean, math.nan
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, math.sqrt(var)


def aggregate(rows: Iterable[SummaryRow], field: str) -> list[Stat]:
    """Per branch and level, statistics of summary column ``field`` over replicates.

    Ordered by branch (see :func:`branch_order`) then level.
    """
    groups: dict[tuple[str, int], list[SummaryRow]] = {}
    for r in rows:
        groups.setdefault((r.branch, r.level), []).append(r)
    order = {b: i for i, b in enumerate(branch_order(b for b, _ in groups))}
    out = []
    for (branch, level), group in sorted(
        groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1])
    ):
        group.sort(key=lambda r: r.replicate)
        used = [getattr(r, field) for r in group if not r.diverged]
        used = [v for v in used if not math.isnan(v)]
        mean, std = _mean_std(used)
        wr = [r.weights_remaining for r in group if not math.isnan(r.weights_remaining)]
        out.append(
            Stat(
                branch=branch,
                level=level,
                weights_remaining=math.fsum(wr) / len(wr) if wr else math.nan,
                mean=mean,
                std=std,
                min=min(used) if used else math.nan,
                max=max(used) if used else math.nan,
                n=len(used),
                replicates=len(group),
                diverged=tuple(r.replicate for r in group if r.diverged),
                values=tuple((r.replicate, getattr(r, field)) for r in group),
            )
        )
    return out


# ----------------------------------------------------------------------------- run folders


@dataclass
class Run:
    """One run folder as the report and the figures read it."""

    path: Path
    summary: list[SummaryRow]
    config: dict  # config.toml, flattened (lth.runfolder.readers.load_config)
    label: str = ""  # how tables and legends name it (:func:`run_labels`)

    @property
    def settings(self) -> dict:
        """The study's settings (the information tables of config.toml left out)."""
        return {k: v for k, v in self.config.items() if k in setting_names()}


def setting_names() -> list[str]:
    """The settings of a study, in declaration order."""
    return list(field_kinds())


def run_folders(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The run folders named by ``paths``: a folder holding no summary.csv but run folders
    (a sweep) stands for those, sorted by name; the same folder twice counts once."""
    out: list[Path] = []
    seen: set[Path] = set()
    for p in map(Path, paths):
        found = [p]
        if p.is_dir() and not (p / SUMMARY.file).exists():
            subs = sorted(d for d in p.iterdir() if d.is_dir() and (d / SUMMARY.file).is_file())
            found = subs or found
        for f in found:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise LTHError("no run folders given; pass at least one folder a study wrote")
    return out


def differing_settings(runs: Sequence[Run]) -> list[str]:
    """Settings whose values are not the same in every run, in declaration order; of each run
    the settings that apply to it (a missing one has its default, one that does not apply is
    left out: :func:`lth.configfile.applied_settings`); ``max_parallel`` (how tickets are
    grouped) is left out."""
    if len(runs) < 2 or any(not r.settings for r in runs):
        return []
    keys = [k for k in setting_names() if k != "max_parallel"]
    views = [applied_settings(r.settings, _augments(r.config)) for r in runs]
    return [k for k in keys if len({repr(v.get(k)) for v in views}) > 1]


def _augments(config: dict) -> bool:
    """Whether a run's data has an augmentation: its registered dataset's (user data, which
    its ``[source]`` table describes, is taken to have one)."""
    if "data_sha256" in config:
        return True
    try:
        return get_spec(str(config.get("dataset", "mnist"))).augmentation is not None
    except LTHError:
        return True


def show_setting(value: object) -> str:
    """A setting's value in a label or a CSV cell: a list as 'a,b' ('none' when empty)."""
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) or "none"
    return str(value)


#: Settings the report's header names when not their default: what pruned, how the weights
#: started, and how the numbers were computed (a run with another criterion must not read as
#: IMP). A name that is not a setting of this lth is named whenever a config holds it.
METHOD_SETTINGS = ("criterion", "init", "precision", "granularity")


def method_parts(config: dict) -> list[str]:
    """The words of a report's header for the :data:`METHOD_SETTINGS` of ``config`` (a run's
    config.toml, flattened) that differ from their defaults.

    Args:
        config: Settings by name.

    Returns:
        list[str]: One ``"name value"`` per setting named.

    Examples:
        >>> method_parts({"criterion": "mycrit:movement", "init": "xavier_normal"})
        ['criterion mycrit:movement']
    """
    defaults = ExperimentConfig().to_dict()
    return [
        f"{key} {show_setting(config[key])}"
        for key in METHOD_SETTINGS
        if key in config and (key not in defaults or config[key] != defaults[key])
    ]


def run_labels(runs: Sequence[Run]) -> list[str]:
    """Short names of runs: their differing settings ('seed 1', 'rate 0.3, seed 1'), else
    their folder names (with the parent folder when two are the same)."""
    keys = differing_settings(runs)
    if keys:
        labels = [
            ", ".join(f"{k} {show_setting(r.settings.get(k, '-'))}" for k in keys) for r in runs
        ]
        if len(set(labels)) == len(labels):
            return labels
    names = [r.path.resolve().name or str(r.path) for r in runs]
    if len(set(names)) == len(names):
        return names
    return [f"{r.path.resolve().parent.name}/{r.path.resolve().name}" for r in runs]


def load_runs(
    run_dirs: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    labels: Sequence[str] | None = None,
) -> list[Run]:
    """The runs of :func:`run_folders`, each with its summary, config and label (``labels``,
    one per run, else :func:`run_labels`)."""
    if isinstance(run_dirs, (str, os.PathLike)):
        run_dirs = [run_dirs]
    runs = [Run(p, load_summary(p), load_config(p)) for p in run_folders(run_dirs)]
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(runs):
            raise LTHError(
                f"{len(labels)} labels for {len(runs)} run folders; give one label per run"
            )
    for run, label in zip(runs, labels or run_labels(runs)):
        run.label = label
    return runs


@dataclass
class FigureRun:
    """One series of runs as the figures read it: a label, the first run folder's path, its
    summary, per-layer counts and config, with (when drawn) its mask analysis. Runs that differ
    only in seed are one FigureRun (``members``: their folders; replicates renumbered run after
    run, as :func:`pooled_summary` does); ``layers`` is None when a folder has no layers.csv
    (a published results/ copy)."""

    name: str  # the series' label in legends
    path: Path
    summary: list[SummaryRow]
    layers: list[LayerRow] | None
    config: dict = field(default_factory=dict)
    analysis: list[dict] | None = None  # analysis.csv rows (lth.runfolder.readers.load_analysis)
    histograms: list[dict] | None = None  # analysis_histograms.csv rows
    members: list[Path] = field(default_factory=list)  # the run folders pooled (seeds)

    @property
    def seeds(self) -> list:
        """The seeds of the pooled run folders (one entry per member)."""
        return list(self.config.get("_seeds", [self.config.get("seed")]))


def seed_groups(runs: Sequence[Run]) -> list[list[Run]]:
    """The runs in groups of one study run as several jobs (:func:`poolable`: settings equal
    but for ``seed`` and ``replicates``), in order of first appearance; a run alone otherwise."""
    groups: dict[str, list[Run]] = {}
    for i, run in enumerate(runs):
        same = {k: v for k, v in run.settings.items() if k not in (*POOLABLE, "max_parallel")}
        groups.setdefault(repr(sorted(same.items())) if run.settings else f"#{i}", []).append(run)
    out: list[list[Run]] = []
    for group in groups.values():
        out += [group] if len(group) < 2 or poolable(group) else [[r] for r in group]
    return out


def renumber(runs: Sequence[Run], rows_of: Sequence[list]) -> list:
    """Rows (dataclasses with ``replicate``, or dicts) of each run, with replicates renumbered
    run after run as :func:`pooled_summary` numbers them."""
    out: list = []
    start = 0
    for run, rows in zip(runs, rows_of):
        reps = sorted({r.replicate for r in run.summary})
        number = {rep: start + i for i, rep in enumerate(reps)}
        for r in rows:
            if isinstance(r, dict):
                out.append(r | {"replicate": number.get(int(r["replicate"]), r["replicate"])})
            else:
                out.append(replace(r, replicate=number.get(r.replicate, r.replicate)))
        start += len(reps)
    return out


def _short_label(key: str, value: object) -> str:
    """A setting in a legend: a word value alone ('snip'), else 'key value' ('rate 0.3')."""
    text = show_setting(value)
    text = text if len(text) <= 24 else text[:23] + "…"
    numeric = text.replace(".", "", 1).replace("-", "", 1).replace("e", "", 1).isdigit()
    if isinstance(value, str) and not numeric and value not in ("", "none"):
        return text
    return f"{key} {text}"


def figure_labels(groups: Sequence[Sequence[Run]]) -> list[str]:
    """Short legend names of series of runs: the values of the settings in which the series
    differ (a pooled series' seeds left out), else :func:`run_labels` of their first runs."""
    heads = [g[0] for g in groups]
    pooled = any(len(g) > 1 for g in groups)
    keys = [k for k in differing_settings(heads) if not (pooled and k in POOLABLE)]
    if keys:
        labels = [", ".join(_short_label(k, r.settings.get(k, "-")) for k in keys) for r in heads]
        if len(set(labels)) == len(labels):
            return labels
    return run_labels(heads) if len(heads) > 1 else [heads[0].label or heads[0].path.name]


def load_figure_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    labels: Sequence[str] | None,
    pool: bool = True,
) -> list[FigureRun]:
    """The runs of :func:`load_runs` as figure series, with their ``layers.csv`` rows: runs
    that differ only in seed pooled into one series (``pool``), labelled by ``labels`` (one per
    series) or :func:`figure_labels`."""
    runs = load_runs(list(run_dirs))
    groups = seed_groups(runs) if pool else [[r] for r in runs]
    if labels is not None:
        labels = list(labels)
        if len(labels) != len(groups):
            what = "run folders" if len(groups) == len(runs) else "series"
            pooled = "" if len(groups) == len(runs) else " (runs differing only in seed are one)"
            raise LTHError(
                f"{len(labels)} labels for {len(groups)} {what}{pooled}; give one label per series"
            )
    names = labels or figure_labels(groups)
    out = []
    for name, group in zip(names, groups):
        layers = [load_layers(r.path) if (r.path / "layers.csv").is_file() else None for r in group]
        config = dict(group[0].config)
        if len(group) > 1:
            config["_seeds"] = [r.settings.get("seed") for r in group]
        out.append(
            FigureRun(
                name,
                group[0].path,
                group[0].summary if len(group) == 1 else pooled_summary(group),
                None if None in layers else renumber(group, layers),
                config,
                members=[r.path for r in group],
            )
        )
    return out


def member_rows(run: FigureRun, load) -> list:
    """``load(path)``'s rows of every run folder pooled in ``run``, replicates renumbered."""
    paths = run.members or [run.path]
    runs = [Run(p, load_summary(p), {}) for p in paths] if len(paths) > 1 else None
    if runs is None:
        return list(load(paths[0]))
    return renumber(runs, [load(p) for p in paths])


def split_labels(text: str) -> list[str]:
    """A comma list of labels (``--labels``); ``\\,`` is a comma inside a label."""
    labels = [p.replace("\0", ",").strip() for p in text.replace("\\,", "\0").split(",")]
    if not all(labels):
        raise LTHError(f"--labels {text!r} has an empty label; give one name per run")
    return labels


#: settings in which runs may differ and still be one study (their replicates are pooled)
POOLABLE = ("seed", "replicates")


def poolable(runs: Sequence[Run]) -> bool:
    """Whether the runs are one study run as several jobs: their settings differ only in
    ``seed`` (all different) and the number of replicates."""
    if len(runs) < 2 or any(not r.settings for r in runs):
        return False
    seeds = [r.settings.get("seed") for r in runs]
    return set(differing_settings(runs)) <= set(POOLABLE) and len(set(seeds)) == len(seeds)


def pooled_summary(runs: Sequence[Run]) -> list[SummaryRow]:
    """The runs' summary rows as one study: replicates renumbered run after run."""
    out: list[SummaryRow] = []
    start = 0
    for run in runs:
        reps = sorted({r.replicate for r in run.summary})
        number = {rep: start + i for i, rep in enumerate(reps)}
        out += [replace(r, replicate=number[r.replicate]) for r in run.summary]
        start += len(reps)
    return out


# ----------------------------------------------------------------------------- a study's table

#: The report's three quantities of a study: (summary column, column header, decimals).
QUANTITIES = (
    ("test_acc", "test %", 2),
    ("test_acc_at_early_stop", "test@ES %", 2),
    ("early_stop_iteration", "ES iter", 0),
)


def accuracy_stats(
    summary: list[SummaryRow],
) -> tuple[dict[str, dict[tuple[str, int], Stat]], list[str], list[int], int]:
    """Per (branch, level) statistics of the three :data:`QUANTITIES` by column, with the
    branches, the levels and the most replicates of any branch and level."""
    stats = {f: {(s.branch, s.level): s for s in aggregate(summary, f)} for f, _, _ in QUANTITIES}
    branches = branch_order({r.branch for r in summary})
    levels = sorted({r.level for r in summary})
    replicates = max(s.replicates for s in stats["test_acc"].values())
    return stats, branches, levels, replicates


def used_values(stat: Stat | None) -> list[float]:
    """The values a statistic's mean is over: replicates that did not diverge, finite."""
    if stat is None:
        return []
    return [v for rep, v in stat.values if rep not in stat.diverged and math.isfinite(v)]


def _dense_stat(stats: dict) -> Stat | None:
    """The dense network's test accuracy: the ticket's at level 0 (else the first branch's)."""
    at0 = [st for (b, lv), st in stats["test_acc"].items() if lv == 0]
    return next((st for st in at0 if st.branch == "ticket"), at0[0] if at0 else None)


def stats_rows(summary: list[SummaryRow]) -> list[dict]:
    """Rows of :data:`lth.runfolder.tables.SUMMARY_STATS`, one per branch and level."""
    stats, branches, levels, _ = accuracy_stats(summary)
    dense = _dense_stat(stats)
    rows = []
    for b in branches:
        for lv in levels:
            acc = stats["test_acc"].get((b, lv))
            if acc is None:
                continue
            es_acc = stats["test_acc_at_early_stop"][(b, lv)]
            es_it = stats["early_stop_iteration"][(b, lv)]
            ci = mean_interval(used_values(acc))
            match = None if dense is None else matches(acc.mean, dense.mean, dense.std)
            row = {
                "branch": b,
                "level": lv,
                "weights_remaining": acc.weights_remaining,
                "replicates": acc.replicates,
                "n": acc.n,
                "diverged": len(acc.diverged),
                "test_acc_mean": acc.mean,
                "test_acc_std": acc.std,
                "test_acc_ci_low": ci.low,
                "test_acc_ci_high": ci.high,
                "test_acc_at_early_stop_mean": es_acc.mean,
                "test_acc_at_early_stop_std": es_acc.std,
                "early_stop_iteration_mean": es_it.mean,
                "early_stop_iteration_std": es_it.std,
                "matching": None if match is None else int(match),
                "ticket_minus": None,
                "ticket_minus_ci_low": None,
                "ticket_minus_ci_high": None,
                "ticket_is": "",
            }
            ticket = stats["test_acc"].get(("ticket", lv))
            if b != "ticket" and ticket is not None:
                diff = welch_interval(used_values(ticket), used_values(acc))
                row |= {
                    "ticket_minus": diff.estimate,
                    "ticket_minus_ci_low": diff.low,
                    "ticket_minus_ci_high": diff.high,
                    "ticket_is": verdict(diff),
                }
            rows.append(row)
    return rows
