"""Published numbers beside a run's: ``lth report RUN --paper frankle2019``.

A paper's numbers live in one TOML file under ``lth/_data/papers/`` (``frankle2019.toml``), each
point naming its source (section, figure). :func:`compare` matches every point to the run's
level nearest in weights remaining (and says how near), and judges agreement by the error
bars: a run's mean agrees with the paper's when they differ by at most the two standard
deviations combined, sqrt(std_paper² + std_run²). Two kinds of claims are relative to the same
run's dense network (the ticket at level 0): ``at_least_dense`` (the branch's mean is no lower)
and ``ratio_to_dense`` (e.g. the early-stop iteration 38% earlier: 0.62).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from lth.analysis.results import QUANTITIES, Stat, aggregate
from lth.configfile import read_toml
from lth.errors import LTHError
from lth.runfolder.readers import SummaryRow
from lth.runfolder.tables import SUMMARY

__all__ = ["Comparison", "Paper", "compare", "load_paper", "paper_names"]

PAPERS_DIR = Path(__file__).resolve().parents[1] / "_data" / "papers"
#: a run's level farther than this factor from a paper point's weights remaining is not compared
TOO_FAR = 1.25


@dataclass(frozen=True)
class Point:
    """One published number (or claim) of a paper, see ``_data/papers/*.toml``."""

    what: str
    branch: str
    weights_remaining: float
    quantity: str
    source: str
    mean: float = math.nan
    std: float = math.nan
    at_least_dense: bool = False
    ratio_to_dense: float = math.nan


@dataclass(frozen=True)
class Paper:
    """A paper's published numbers and the protocol they were measured under."""

    name: str
    title: str
    experiment: str
    model: str
    dataset: str
    protocol: dict
    points: tuple[Point, ...]


@dataclass(frozen=True)
class Comparison:
    """One paper point beside the run's nearest level: the verdict in words."""

    point: Point
    level: int
    weights_remaining: float  # the run's, at that level
    run: Stat
    dense: Stat | None
    verdict: str  # "agrees", "differs", "holds", "does not hold", "n/a"
    detail: str  # e.g. "+0.12 (0.5 of the combined std 0.22)"


def paper_names() -> list[str]:
    """The papers ``--paper`` knows: the data files shipped with lth."""
    return sorted(p.stem for p in PAPERS_DIR.glob("*.toml"))


def load_paper(name: str) -> Paper:
    """The published numbers of paper ``name`` (see :func:`paper_names`)."""
    if name not in paper_names():
        raise LTHError(f"unknown paper {name!r}; choose one of {', '.join(paper_names())}")
    raw = read_toml(PAPERS_DIR / f"{name}.toml", "paper file")
    points = []
    for p in raw["point"]:
        if p["quantity"] not in SUMMARY.names:  # a broken data file is lth's bug, not the user's
            raise ValueError(f"{name}.toml: unknown quantity {p['quantity']!r}")
        points.append(Point(**p))
    return Paper(
        name, raw["title"], raw["experiment"], raw["model"], raw["dataset"],
        dict(raw["protocol"]), tuple(points),
    )  # fmt: skip


def protocol_differences(paper: Paper, settings: dict) -> list[str]:
    """The run's settings that differ from the paper's protocol, as 'name run (paper value)'."""
    out = []
    for key in ("model", "dataset"):
        if key in settings and settings[key] != getattr(paper, key):
            out.append(f"{key} {settings[key]} (paper: {getattr(paper, key)})")
    for key, value in paper.protocol.items():
        if key in settings and settings[key] != value:
            out.append(f"{key} {settings[key]} (paper: {value})")
    return out


def _nearest(stats: list[Stat], branch: str, weights_remaining: float) -> Stat | None:
    """The branch's level nearest in weights remaining, on a log scale (levels shrink by a
    factor, so 3.6% is nearer 3.3% than 4.1%, as the paper's own axes show)."""
    mine = [s for s in stats if s.branch == branch and s.weights_remaining > 0]
    if not mine:
        return None
    return min(mine, key=lambda s: abs(math.log(s.weights_remaining / weights_remaining)))


def _judge(p: Point, run: Stat, dense: Stat | None) -> tuple[str, str]:
    if run.n == 0 or math.isnan(run.mean):
        return "n/a", "no usable replicate at this level"
    if not math.isnan(p.mean):
        run_std = run.std if run.n >= 2 else 0.0
        paper_std = 0.0 if math.isnan(p.std) else p.std
        bar = math.hypot(paper_std, run_std)
        diff = run.mean - p.mean
        within = abs(diff) <= bar
        size = f"{abs(diff) / bar:.1f} of" if bar > 0 else "no error bars:"
        return ("agrees" if within else "differs"), f"{diff:+.2f} ({size} combined std {bar:.2f})"
    if dense is None or dense.n == 0:
        return "n/a", "the run has no dense network (level 0) to compare with"
    if p.at_least_dense:
        diff = run.mean - dense.mean
        bar = math.hypot(*(s.std if s.n >= 2 else 0.0 for s in (run, dense)))
        if diff >= 0:
            return "holds", f"{diff:+.2f} vs the run's dense {dense.mean:.2f}"
        verdict = "holds within error bars" if -diff <= bar else "does not hold"
        return verdict, f"{diff:+.2f} vs the run's dense {dense.mean:.2f} (combined std {bar:.2f})"
    ratio = run.mean / dense.mean if dense.mean else math.nan
    return "ratio", f"{ratio:.2f} of the run's dense {dense.mean:.0f} (paper: {p.ratio_to_dense})"


def compare(paper: Paper, summary: list[SummaryRow]) -> list[Comparison]:
    """Each of the paper's points beside the run's nearest level (see the module docstring)."""
    out = []
    by_quantity = {q: aggregate(summary, q) for q in {p.quantity for p in paper.points}}
    for p in paper.points:
        stats = by_quantity[p.quantity]
        run = _nearest(stats, p.branch, p.weights_remaining)
        if run is None:
            continue
        dense = next((s for s in stats if s.branch == "ticket" and s.level == 0), None)
        if abs(math.log(run.weights_remaining / p.weights_remaining)) > math.log(TOO_FAR):
            verdict = "not compared"
            detail = f"the run has no level within {TOO_FAR}x of {p.weights_remaining:g}%"
        else:
            verdict, detail = _judge(p, run, dense)
        out.append(Comparison(p, run.level, run.weights_remaining, run, dense, verdict, detail))
    return out


_QUANTITY_NAMES = {field: name for field, name, _ in QUANTITIES}  # the report's own headers


def _value(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(std) else f" ± {std:.{digits}f}")


def paper_section(name: str, summary: list[SummaryRow], settings: dict):
    """The report's section for ``--paper name``: (heading, columns, rows, left-aligned column
    indices, notes). Columns are (group, name) pairs as in :class:`~lth.analysis.tables.Table`."""
    paper = load_paper(name)
    columns = [
        ("", "paper point"), ("", "quantity"), ("", "paper at %"), ("", "paper"),
        ("", "run level"), ("", "run at %"), ("", "run"), ("", "verdict"), ("", "difference"),
    ]  # fmt: skip
    rows = []
    for c in compare(paper, summary):
        p, digits = c.point, 0 if c.point.quantity == "early_stop_iteration" else 2
        if p.at_least_dense:
            published = "≥ dense"
        elif not math.isnan(p.ratio_to_dense):
            published = f"{p.ratio_to_dense} × dense"
        else:
            published = _value(p.mean, p.std, digits)
        std = c.run.std if c.run.n >= 2 else math.nan
        rows.append([
            p.what, _QUANTITY_NAMES.get(p.quantity, p.quantity), f"{p.weights_remaining:g}",
            published, str(c.level), f"{c.weights_remaining:.3g}",
            _value(c.run.mean, std, digits) + ("" if c.run.n < 2 else f" (n={c.run.n})"),
            c.verdict, c.detail,
        ])  # fmt: skip
    notes = [
        f"{paper.title}: {paper.experiment}. Each point is matched to the run's level nearest "
        "in weights remaining (log scale); 'agrees' = within the combined standard deviation "
        "sqrt(std_paper² + std_run²).",
    ]
    differences = protocol_differences(paper, settings)
    if differences:
        notes.append(
            "The run differs from the paper's protocol in: " + "; ".join(differences) + "."
        )
    notes.append("Sources: " + "; ".join(f"{p.what}: {p.source}" for p in paper.points) + ".")
    return f"Against the paper ({name})", columns, rows, {0, 1, 7, 8}, notes
