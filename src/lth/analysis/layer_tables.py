"""The report's per-layer tables: weights kept, total and dead units of each layer at each
level (a ticket's replicate), grouped over runs whose tables are the same."""

from __future__ import annotations

from collections.abc import Sequence

from lth.analysis.results import Run
from lth.analysis.tables import Table, fmt_pct
from lth.runfolder.layout import branch_order
from lth.runfolder.readers import LayerRow, load_layers


def layer_tables(layers: list[LayerRow]) -> tuple[str, int, list[tuple[int, list[list[str]]]]]:
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
        here = [r for r in mine if r.level == level]
        for r in here:
            kept += r.kept
            total += r.total
            pct = 100.0 * r.kept / r.total if r.total else 100.0
            rows.append(
                [r.layer, str(r.kept), str(r.total), fmt_pct(pct), dead_cell(r.dead_units), r.shape]
            )
        pct = 100.0 * kept / total if total else 100.0
        ratio = f"{total / kept:.2f}x" if kept else "inf"
        known = [r.dead_units for r in here if r.dead_units is not None]
        dead = dead_cell(sum(known) if len(known) == len(here) else None)
        rows.append(["total", str(kept), str(total), fmt_pct(pct), dead, f"{ratio} compression"])
        tables.append((level, rows))
    return branch, replicate, tables


def dead_cell(units: int | None) -> str:
    """A dead-units cell: the count, or "-" where shrink cannot tell (or an older run folder)."""
    return "-" if units is None else str(units)


def layer_sections(runs: Sequence[Run]) -> list[tuple[str, list[tuple[str, Table]]]]:
    """Per-layer tables, once for each group of runs whose tables are the same."""
    groups: list[tuple[list[Run], tuple]] = []
    for run in runs:
        branch, replicate, tables = layer_tables(load_layers(run.path))
        key = (branch, replicate, tuple((lv, tuple(map(tuple, rows))) for lv, rows in tables))
        for members, k in groups:
            if k == key:
                members.append(run)
                break
        else:
            groups.append(([run], key))
    out = []
    columns = [
        ("", "layer"), ("", "nonzero"), ("", "total"), ("", "% remaining"), ("", "dead units"),
        ("", "shape"),
    ]  # fmt: skip
    for members, (branch, replicate, tables) in groups:
        who = ""
        if len(runs) > 1:
            who = "all runs" if len(members) == len(runs) else ", ".join(r.label for r in members)
            who = f"; {who}"
        title = f"Weights remaining per layer ({branch}, replicate {replicate}{who})"
        sections = [
            (
                f"Level {lv}: {rows[-1][3]}% of weights remaining",
                Table(columns, list(map(list, rows)), {0, 5}),
            )
            for lv, rows in tables
        ]
        out.append((title, sections))
    return out
