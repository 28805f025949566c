"""CSV text of a run folder: writing rows, and reading them back checked and typed.

:func:`csv_text` writes them and :func:`read_csv` / :func:`read_rows` / :func:`read_table`
read them. Floats are written in full (round-trip) precision; a missing value, None or NaN, is
an empty cell. Readers also accept ``nan`` (any case), the spelling metrics.csv and summary.csv
used before, so older run folders still load.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence

from lth.errors import LTHError
from lth.runfolder.tables import Column, Table

# ----------------------------------------------------------------------------- CSV text


def _cell(value: object) -> object:
    """How one value is written: None and NaN as an empty cell, floats in full precision."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def csv_text(rows: Iterable[Mapping[str, object]], columns: Table | Sequence[str]) -> str:
    """Rows as CSV text with a header, in the table's column order ("\\n" line endings).

    Missing keys, None and NaN are written as empty cells; keys not in the columns are left
    out; floats are written with full (round-trip) precision.
    """
    names = columns.names if isinstance(columns, Table) else list(columns)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in names])
    return buf.getvalue()


def _read(path: str | os.PathLike[str], advice: str) -> tuple[list[str], list[dict[str, str]]]:
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise LTHError(f"{path} has no header row; {advice}")
            header = [h.strip() for h in header]
            rows = []
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    raise LTHError(
                        f"{path} line {reader.line_num} has {len(record)} fields but the header "
                        f"has {len(header)}; the file is damaged, {advice}"
                    )
                rows.append(dict(zip(header, record)))
    except FileNotFoundError:
        raise LTHError(f"{path} not found; {advice}") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LTHError(f"cannot read {path} ({msg}); {advice}") from None
    return header, rows


def read_csv(
    path: str | os.PathLike[str], advice: str = "check the run folder or rerun the study"
) -> list[dict[str, str]]:
    """A CSV file with a header row as one dict per data row (values stay strings).

    Raises :class:`LTHError` naming the file (and ending with ``advice``) when it is missing,
    unreadable, has no header, or has a row whose number of fields differs from the header's.
    Blank lines are skipped.
    """
    return _read(path, advice)[1]


def is_missing(cell: str | None) -> bool:
    """Whether a CSV cell is a missing value: empty, or the older spelling ``nan``."""
    return cell is None or cell.strip().lower() in ("", "nan", "+nan", "-nan")


def to_float(cell: str | None) -> float:
    """A CSV cell as a float; a missing value (see :func:`is_missing`) is NaN.

    Raises ValueError for other text that is not a number.
    """
    return math.nan if is_missing(cell) else float(cell)  # type: ignore[arg-type]


def to_int(cell: str) -> int:
    """A CSV cell as a whole number ("3" or "3.0"); raises ValueError otherwise."""
    try:
        return int(cell)  # exact, however large (a 63-bit seed loses digits in a float)
    except ValueError:
        pass
    value = float(cell)
    if not value.is_integer():
        raise ValueError(cell)
    return int(value)


def _parser(column: Column) -> Callable[[str], object]:
    if column.kind is float:
        return to_float
    if column.kind is int:
        if column.empty:
            return lambda s: None if is_missing(s) else to_int(s)
        return to_int
    return str.strip


def read_rows(
    path: str | os.PathLike[str], table: Table, advice: str | None = None
) -> list[dict[str, str]]:
    """The rows of one of a run's CSV files as strings, checked for the table's columns.

    Missing values of float columns are spelled as they are written now (empty), so rows
    read from an older file and written back use one spelling.
    """
    advice = advice or table.advice
    header, rows = _read(path, advice)
    _check_columns(path, header, table, advice)
    floats = [c.name for c in table.columns if c.kind is float and c.name in header]
    for row in rows:
        for name in floats:
            if row[name] and is_missing(row[name]):
                row[name] = ""
    return rows


def _check_columns(path, header: list[str], table: Table, advice: str) -> None:
    required = [c.name for c in table.columns if not c.optional]
    missing = [c for c in required if c not in header]
    if missing:
        raise LTHError(
            f"{path} lacks column {missing[0]!r} (needs {', '.join(required)}); it is damaged "
            f"or from another tool, {advice}"
        )


def read_table(
    path: str | os.PathLike[str],
    table: Table,
    *,
    allow_empty: bool = False,
    keep: Callable[[dict[str, str]], bool] | None = None,
) -> list[dict]:
    """The rows of one of a run's CSV files, typed by the table's columns.

    Text cells are stripped, whole numbers are ints, numbers floats (missing values NaN; in a
    whole-number column that may be empty, None); absent optional columns read as empty; other
    columns are left out. ``keep`` filters the raw rows before they are parsed. Raises
    :class:`LTHError` naming the file, row and column for a bad cell, a missing column, two
    rows with the same key, or (unless ``allow_empty``) a file without data rows.
    """
    header, raw = _read(path, table.advice)
    if not raw and not allow_empty:
        raise LTHError(f"{path} has no data rows; the study has not finished a level yet")
    _check_columns(path, header, table, table.advice)
    parsers = {c.name: _parser(c) for c in table.columns}
    if keep is not None:
        raw = [r for r in raw if keep(r)]
    out = []
    for i, rec in enumerate(raw, start=1):
        row = {}
        for column in table.columns:
            cell = rec.get(column.name, "")
            try:
                row[column.name] = parsers[column.name](cell)
            except (ValueError, TypeError):
                what = "a whole number" if column.kind is int else "a number"
                raise LTHError(
                    f"{path} data row {i}: {column.name} = {cell!r} is not {what}; "
                    f"the file is damaged, {table.advice}"
                ) from None
        out.append(row)
    if table.key:
        _check_unique(path, out, table)
    return out


def _check_unique(path, rows: list[dict], table: Table) -> None:
    kinds = {c.name: c.kind for c in table.columns}
    seen = set()
    for row in rows:
        key = tuple(row[k] for k in table.key)
        if key in seen:
            where = " ".join(
                f"{k} {v}" if kinds[k] is int else str(v) for k, v in zip(table.key, key)
            )
            raise LTHError(f"{path} has two rows for {where}; the file is damaged, {table.advice}")
        seen.add(key)
