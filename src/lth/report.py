"""Reading a run folder's result files, and the text report of a study.

The run folder (written by :mod:`lth.runs`) holds ``summary.csv`` (one row per branch, replicate
and level), ``layers.csv`` (one row per branch, replicate, level and prunable layer),
``metrics.csv`` (one row per evaluation) and optionally ``config.toml``. This module parses them
into typed rows (used by :mod:`lth.plots` too) and renders :func:`report`: the ticket's per-layer
sparsity at every level and the per-level accuracy of every branch, as aligned text, GitHub
markdown or CSV. Percentages and accuracies are in percent (0-100) throughout.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .csvio import read_csv, to_float, write_csv_text
from .errors import LTHError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 without tomli: titles lack config
    try:
        import tomli as tomllib  # type: ignore[no-redef]
    except ModuleNotFoundError:
        tomllib = None  # type: ignore[assignment]

BRANCHES = ("ticket", "reinit", "random_prune")
FORMATS = ("table", "md", "csv")

SUMMARY_COLUMNS = (
    "branch",
    "replicate",
    "level",
    "weights_remaining",
    "test_acc",
    "early_stop_iteration",
    "test_acc_at_early_stop",
)
LAYER_COLUMNS = ("branch", "replicate", "level", "layer", "kept", "total", "remaining", "shape")
METRIC_COLUMNS = (
    "branch",
    "replicate",
    "level",
    "iteration",
    "weights_remaining",
    "val_loss",
    "val_acc",
    "test_acc",
)
ACCURACY_CSV_COLUMNS = [
    "branch",
    "level",
    "weights_remaining",
    "replicates",
    "n",
    "diverged",
    "test_acc_mean",
    "test_acc_std",
    "test_acc_at_early_stop_mean",
    "test_acc_at_early_stop_std",
    "early_stop_iteration_mean",
    "early_stop_iteration_std",
]


# ----------------------------------------------------------------------------- typed rows


@dataclass(frozen=True)
class SummaryRow:
    """One trained network's results: a row of summary.csv."""

    branch: str
    replicate: int
    level: int
    weights_remaining: float
    test_acc: float
    early_stop_iteration: float
    test_acc_at_early_stop: float
    diverged_at: str = ""

    @property
    def diverged(self) -> bool:
        """Whether training diverged (such rows are left out of means)."""
        return bool(self.diverged_at)


@dataclass(frozen=True)
class LayerRow:
    """One prunable layer of one network: a row of layers.csv."""

    branch: str
    replicate: int
    level: int
    layer: str
    kept: int
    total: int
    remaining: float
    shape: str


@dataclass(frozen=True)
class MetricRow:
    """One evaluation during training: a row of metrics.csv."""

    branch: str
    replicate: int
    level: int
    iteration: int
    weights_remaining: float
    train_loss: float
    val_loss: float
    val_acc: float
    test_acc: float


def _int(s: str) -> int:
    value = float(s)
    if not value.is_integer():
        raise ValueError(s)
    return int(value)


_KINDS: dict[type, Callable[[str], object]] = {
    str: lambda s: s.strip(),
    int: _int,
    float: to_float,
}


def _parse(
    path: Path, raw: list[dict[str, str]], cls: type, required: Sequence[str], types: dict
) -> list:
    """Turn read_csv's strings into ``cls`` rows, naming the file, row and column on failure."""
    if not raw:
        raise LTHError(f"{path} has no data rows; the study has not finished a level yet")
    missing = [c for c in required if c not in raw[0]]
    if missing:
        raise LTHError(
            f"{path} lacks column {missing[0]!r} (needs {', '.join(required)}); "
            "it is damaged or from another tool, rerun the study"
        )
    out = []
    for i, rec in enumerate(raw, start=1):
        values = {}
        for name, kind in types.items():
            cell = rec.get(name, "")
            try:
                values[name] = _KINDS[kind](cell)
            except (ValueError, TypeError):
                what = "a whole number" if kind is int else "a number"
                raise LTHError(
                    f"{path} data row {i}: {name} = {cell!r} is not {what}; "
                    "the file is damaged, rerun the study to rewrite it"
                ) from None
        out.append(cls(**values))
    return out


def _run_file(run_dir: str | os.PathLike[str], name: str) -> Path:
    run = Path(run_dir)
    if not run.is_dir():
        raise LTHError(f"run folder {run} does not exist; pass the folder a study wrote")
    return run / name


def _check_unique(path: Path, rows: Iterable, key: Callable) -> None:
    seen = set()
    for row in rows:
        k = key(row)
        if k in seen:
            raise LTHError(
                f"{path} has two rows for {' '.join(map(str, k))}; "
                "the file is damaged, rerun the study to rewrite it"
            )
        seen.add(k)


def load_summary(run_dir: str | os.PathLike[str]) -> list[SummaryRow]:
    """The rows of RUN_DIR/summary.csv (``diverged_at`` may be absent; extra columns ignored)."""
    path = _run_file(run_dir, "summary.csv")
    raw = read_csv(path)
    types = {
        "branch": str,
        "replicate": int,
        "level": int,
        "weights_remaining": float,
        "test_acc": float,
        "early_stop_iteration": float,
        "test_acc_at_early_stop": float,
        "diverged_at": str,
    }
    rows = _parse(path, raw, SummaryRow, SUMMARY_COLUMNS, types)
    _check_unique(path, rows, lambda r: (r.branch, "replicate", r.replicate, "level", r.level))
    return rows


def load_layers(run_dir: str | os.PathLike[str]) -> list[LayerRow]:
    """The rows of RUN_DIR/layers.csv."""
    path = _run_file(run_dir, "layers.csv")
    raw = read_csv(path)
    types = {
        "branch": str,
        "replicate": int,
        "level": int,
        "layer": str,
        "kept": int,
        "total": int,
        "remaining": float,
        "shape": str,
    }
    rows = _parse(path, raw, LayerRow, LAYER_COLUMNS, types)
    _check_unique(
        path, rows, lambda r: (r.branch, "replicate", r.replicate, "level", r.level, r.layer)
    )
    return rows


def load_metrics(
    run_dir: str | os.PathLike[str],
    branch: str | None = None,
    levels: Iterable[int] | None = None,
) -> list[MetricRow]:
    """The rows of RUN_DIR/metrics.csv, optionally only one branch and some levels.

    ``train_loss`` may be absent or empty (NaN).
    """
    path = _run_file(run_dir, "metrics.csv")
    raw = read_csv(path)
    if raw and (branch is not None or levels is not None):
        missing = [c for c in ("branch", "level") if c not in raw[0]]
        if not missing:
            wanted = None if levels is None else {str(int(lv)) for lv in levels}
            raw = [
                r
                for r in raw
                if (branch is None or r["branch"].strip() == branch)
                and (wanted is None or _norm_int(r["level"]) in wanted)
            ]
            if not raw:
                return []
    types = {
        "branch": str,
        "replicate": int,
        "level": int,
        "iteration": int,
        "weights_remaining": float,
        "train_loss": float,
        "val_loss": float,
        "val_acc": float,
        "test_acc": float,
    }
    return _parse(path, raw, MetricRow, METRIC_COLUMNS, types)


def _norm_int(s: str) -> str:
    try:
        return str(_int(s))
    except ValueError:
        return s.strip()


def load_config(run_dir: str | os.PathLike[str]) -> dict:
    """RUN_DIR/config.toml as a flat dict ({} when absent; one level of tables is merged in)."""
    path = _run_file(run_dir, "config.toml")
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


def describe_config(config: dict) -> str:
    """A one-line description of a study from its config, e.g. 'lenet_300_100 on mnist, ...'."""
    parts = []
    if "model" in config:
        parts.append(
            str(config["model"]) + (f" on {config['dataset']}" if "dataset" in config else "")
        )
    elif "dataset" in config:
        parts.append(str(config["dataset"]))
    if "pruning" in config:
        parts.append(f"{config['pruning']} pruning")
    if "rate" in config:
        out = config.get("output_rate")
        extra = f" (output layer {out})" if out not in (None, "", config["rate"]) else ""
        parts.append(f"rate {config['rate']}{extra}")
    if "reset" in config:
        k = config.get("rewind_iteration") or 0
        at = f" to iteration {k}" if config["reset"] == "rewind" and k else ""
        parts.append(f"reset {config['reset']}{at}")
    for key, fmt in (
        ("levels", "{} levels"),
        ("iterations", "{} iterations per level"),
        ("replicates", "{} replicates"),
    ):
        if config.get(key):
            parts.append(fmt.format(config[key]))
    return ", ".join(parts)


def branch_order(names: Iterable[str]) -> list[str]:
    """Branch names in display order: ticket, reinit, random_prune, then any others sorted."""
    names = set(names)
    return [b for b in BRANCHES if b in names] + sorted(names - set(BRANCHES))


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


# ----------------------------------------------------------------------------- formatting


def fmt_pct(value: float) -> str:
    """A percentage without the sign: one decimal, two significant digits below 1 ('0.47')."""
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2g}"


def _fmt_stat(stat: Stat | None, digits: int, replicates: int) -> str:
    """'mean ± std' (or the single value), with '(n=k)' when fewer than the run's replicates."""
    if stat is None:
        return ""
    if stat.n == 0:
        return "diverged" if stat.diverged else "-"
    text = f"{stat.mean:.{digits}f}"
    if stat.n >= 2:
        text += f" ± {stat.std:.{digits}f}"
    if stat.n != replicates:
        text += f" (n={stat.n})"
    return text


def _text_table(headers: list[list[str]], rows: list[list[str]], left: set[int]) -> list[str]:
    """Aligned plain-text table; ``headers`` may hold several header lines; ``left`` columns
    are left-aligned, the rest right-aligned."""
    ncol = len(rows[0]) if rows else len(headers[-1])
    widths = [max(len(r[i]) for r in [*headers[-1:], *rows]) for i in range(ncol)]
    lines = []

    def line(cells: list[str]) -> str:
        out = [c.ljust(widths[i]) if i in left else c.rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    for extra in headers[:-1]:  # group headers: left-aligned text spanning following columns
        out = ""
        for i, c in enumerate(extra):
            start = sum(widths[:i]) + 2 * i
            if c:
                out = out.ljust(start) + c
        lines.append(out.rstrip())
    lines.append(line(headers[-1]))
    lines.append("-" * (sum(widths) + 2 * (ncol - 1)))
    lines.extend(line(r) for r in rows)
    return lines


def _md_table(header: list[str], rows: list[list[str]], left: set[int]) -> list[str]:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join(":---" if i in left else "---:" for i in range(len(header))) + "|")
    lines.extend("| " + " | ".join(esc(c) for c in r) + " |" for r in rows)
    return lines


def _layer_tables(layers: list[LayerRow]) -> tuple[str, int, list[tuple[int, list[list[str]]]]]:
    """Per level, the rows of the per-layer table of the ticket's replicate 0 (or the first
    branch/replicate present), plus a total row with % remaining and compression factor."""
    branches = branch_order({r.branch for r in layers})
    branch = branches[0]
    replicate = min(r.replicate for r in layers if r.branch == branch)
    mine = [r for r in layers if r.branch == branch and r.replicate == replicate]
    tables = []
    for level in sorted({r.level for r in mine}):
        rows = []
        kept = total = 0
        for r in (r for r in mine if r.level == level):
            kept += r.kept
            total += r.total
            pct = 100.0 * r.kept / r.total if r.total else 100.0
            rows.append([r.layer, str(r.kept), str(r.total), fmt_pct(pct), r.shape])
        pct = 100.0 * kept / total if total else 100.0
        ratio = f"{total / kept:.2f}x" if kept else "inf"
        rows.append(["total", str(kept), str(total), fmt_pct(pct), f"{ratio} compression"])
        tables.append((level, rows))
    return branch, replicate, tables


def _accuracy(summary: list[SummaryRow]):
    """Per (branch, level) statistics of the three reported quantities."""
    fields = ("test_acc", "test_acc_at_early_stop", "early_stop_iteration")
    stats = {f: {(s.branch, s.level): s for s in aggregate(summary, f)} for f in fields}
    branches = branch_order({r.branch for r in summary})
    levels = sorted({r.level for r in summary})
    replicates = max(s.replicates for s in stats["test_acc"].values())
    return stats, branches, levels, replicates


def _accuracy_csv(summary: list[SummaryRow]) -> str:
    stats, branches, levels, _ = _accuracy(summary)
    rows = []
    for b in branches:
        for lv in levels:
            acc = stats["test_acc"].get((b, lv))
            if acc is None:
                continue
            es_acc = stats["test_acc_at_early_stop"][(b, lv)]
            es_it = stats["early_stop_iteration"][(b, lv)]
            rows.append(
                {
                    "branch": b,
                    "level": lv,
                    "weights_remaining": acc.weights_remaining,
                    "replicates": acc.replicates,
                    "n": acc.n,
                    "diverged": len(acc.diverged),
                    "test_acc_mean": acc.mean,
                    "test_acc_std": acc.std,
                    "test_acc_at_early_stop_mean": es_acc.mean,
                    "test_acc_at_early_stop_std": es_acc.std,
                    "early_stop_iteration_mean": es_it.mean,
                    "early_stop_iteration_std": es_it.std,
                }
            )
    return write_csv_text(rows, ACCURACY_CSV_COLUMNS)


def report(run_dir: str | os.PathLike[str], fmt: str = "table") -> str:
    """The text report of a run folder.

    ``fmt="table"``: aligned plain text for a terminal; ``"md"``: GitHub markdown with headings;
    ``"csv"``: only the accuracy table, one row per branch and level (columns
    :data:`ACCURACY_CSV_COLUMNS`; std empty when fewer than two replicates).
    Means and stds are over replicates that did not diverge (sample std, ddof=1).
    """
    if fmt not in FORMATS:
        raise LTHError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")
    summary = load_summary(run_dir)
    if fmt == "csv":
        return _accuracy_csv(summary)
    layers = load_layers(run_dir)
    config = load_config(run_dir)
    name = Path(run_dir).resolve().name
    md = fmt == "md"
    out: list[str] = []

    def heading(text: str, level: int) -> None:
        if md:
            out.extend(["#" * level + " " + text, ""])
        elif level < 3:
            out.extend([text, ("=" if level == 1 else "-") * len(text), ""])
        else:
            out.append(text)

    def table(headers: list[list[str]], rows: list[list[str]], left: set[int]) -> None:
        if md:
            out.extend(_md_table(headers[-1], rows, left))
        else:
            out.extend(_text_table(headers, rows, left))
        out.append("")

    heading(f"LTH report: {name}", 1)
    desc = describe_config(config)
    if desc:
        out.extend([desc, ""])

    # (a) per-layer sparsity of the ticket
    branch, replicate, tables = _layer_tables(layers)
    heading(f"Weights remaining per layer ({branch}, replicate {replicate})", 2)
    for level, rows in tables:
        heading(f"Level {level}: {rows[-1][3]}% of weights remaining", 3)
        table([["layer", "nonzero", "total", "% remaining", "shape"]], rows, {0, 4})

    # (b) accuracy per level and branch
    stats, branches, levels, replicates = _accuracy(summary)
    heading("Test accuracy per level", 2)
    group = ["", ""]
    header = ["level", "remaining %"]
    for b in branches:
        group += [b, "", ""]
        header += [f"{b} test %", f"{b} test@ES %", f"{b} ES iter"]
    if not md:  # the group line names the branch, so the column names can be short
        header = header[:2] + ["test %", "test@ES %", "ES iter"] * len(branches)
    rows = []
    for lv in levels:
        present = [stats["test_acc"][(b, lv)] for b in branches if (b, lv) in stats["test_acc"]]
        wr = [s.weights_remaining for s in present if not math.isnan(s.weights_remaining)]
        row = [str(lv), fmt_pct(wr[0]) if wr else "-"]
        for b in branches:
            row += [
                _fmt_stat(stats["test_acc"].get((b, lv)), 2, replicates),
                _fmt_stat(stats["test_acc_at_early_stop"].get((b, lv)), 2, replicates),
                _fmt_stat(stats["early_stop_iteration"].get((b, lv)), 0, replicates),
            ]
        rows.append(row)
    table([group, header], rows, set())

    notes = [
        "test % = test accuracy (%) after the last training iteration; "
        "test@ES % = test accuracy (%) at the early-stop (ES) iteration, "
        "the evaluation with the lowest validation loss.",
        (
            f"Mean ± sample std over {replicates} replicates; (n=k) marks fewer usable ones."
            if replicates > 1
            else "One replicate per branch and level."
        ),
    ]
    diverged = sorted(
        (r for r in summary if r.diverged), key=lambda r: (r.level, r.branch, r.replicate)
    )
    if diverged:
        notes.append("Diverged runs, left out of the means:")
        notes.extend(
            f"  {r.branch} replicate {r.replicate} at level {r.level} diverged at iteration "
            f"{r.diverged_at}"
            for r in diverged
        )
    if md:
        out.extend(f"- {n.strip()}" if n.startswith("  ") else n + "\n" for n in notes)
    else:
        out.extend(notes)
    return "\n".join(out).rstrip() + "\n"
