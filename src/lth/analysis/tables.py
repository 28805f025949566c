"""Tables as text: aligned plain text for a terminal, GitHub markdown, LaTeX (booktabs).

A :class:`Table` is columns as (group, name) pairs (group "" for none), rows of cells, and the
left-aligned columns; :func:`text_table`, :func:`md_table` and :func:`latex_table` render it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Table", "latex_escape", "latex_table", "md_table", "text_table"]


@dataclass
class Table:
    """A table to render: columns as (group, name) — group "" for none — rows of cells, and
    the left-aligned columns (the rest are right-aligned)."""

    columns: list[tuple[str, str]]
    rows: list[list[str]]
    left: set[int]

    def groups(self) -> list[tuple[str, int, int]]:
        """(group, first column, last column) of each run of columns with one group."""
        out: list[tuple[str, int, int]] = []
        for i, (g, _) in enumerate(self.columns):
            if out and out[-1][0] == g:
                out[-1] = (g, out[-1][1], i)
            else:
                out.append((g, i, i))
        return out


def text_table(table: Table) -> list[str]:
    """Aligned plain text: a line of group names (when any), the column names, a rule."""
    names = [n for _, n in table.columns]
    rows = table.rows
    ncol = len(names)
    widths = [max(len(r[i]) for r in [names, *rows]) for i in range(ncol)]
    for g, a, b in table.groups():  # a group name wider than its columns widens them
        span = sum(widths[a : b + 1]) + 2 * (b - a)
        for i in range(max(0, len(g) - span)):
            widths[a + i % (b - a + 1)] += 1

    def line(cells: list[str]) -> str:
        out = [
            c.ljust(widths[i]) if i in table.left else c.rjust(widths[i])
            for i, c in enumerate(cells)
        ]
        return "  ".join(out).rstrip()

    lines = []
    if any(g for g, _ in table.columns):
        out = ""
        for g, a, _ in table.groups():
            if g:
                out = out.ljust(sum(widths[:a]) + 2 * a) + g
        lines.append(out.rstrip())
    lines.append(line(names))
    lines.append("-" * (sum(widths) + 2 * (ncol - 1)))
    lines.extend(line(r) for r in rows)
    return lines


def md_table(table: Table) -> list[str]:
    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    header = [f"{g} {n}" if g else n for g, n in table.columns]
    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append(
        "|" + "|".join(":---" if i in table.left else "---:" for i in range(len(header))) + "|"
    )
    lines.extend("| " + " | ".join(esc(c) for c in r) + " |" for r in table.rows)
    return lines


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "±": r"$\pm$",
    "θ": r"$\theta$",
    "×": r"$\times$",
}


def latex_escape(text: str) -> str:
    """``text`` for LaTeX: special characters escaped, ± as $\\pm$."""
    return "".join(_LATEX_SPECIAL.get(c, c) for c in text)


def latex_table(table: Table, caption: str = "") -> list[str]:
    """A booktabs ``table`` environment (needs ``\\usepackage{booktabs}``)."""
    spec = "".join("l" if i in table.left else "r" for i in range(len(table.columns)))
    lines = [r"\begin{table}[htbp]", r"\centering"]
    if caption:
        lines.append(r"\caption{" + latex_escape(caption) + "}")
    lines += [r"\begin{tabular}{" + spec + "}", r"\toprule"]
    groups = table.groups()
    if any(g for g, _, _ in groups):
        cells, rules = [], []
        for g, a, b in groups:
            if not g:
                cells += [""] * (b - a + 1)
                continue
            cells.append(rf"\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}")
            rules.append(rf"\cmidrule(lr){{{a + 1}-{b + 1}}}")
        lines.append(" & ".join(cells) + r" \\")
        lines.append(" ".join(rules))
    lines.append(" & ".join(latex_escape(n) for _, n in table.columns) + r" \\")
    lines.append(r"\midrule")
    lines.extend(" & ".join(latex_escape(c) for c in r) + r" \\" for r in table.rows)
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return lines


def fmt_pct(value: float) -> str:
    """A percentage without the sign: one decimal, two significant digits below 1 ('0.47')."""
    if math.isnan(value):
        return "-"
    return f"{value:.1f}" if value >= 1 or value == 0 else f"{value:.2g}"
