"""Minimal CSV helpers shared by the run folder's writer and its readers (report, plots)."""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Iterable, Mapping

from .errors import LTHError


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, str]]:
    """Read a CSV file with a header row into one dict per data row (values stay strings).

    Raises LTHError, naming the file, when it is missing, unreadable, has no header, or has a
    row whose number of fields differs from the header's. Blank lines are skipped.
    """
    path = os.fspath(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if not header or not any(h.strip() for h in header):
                raise LTHError(f"{path} has no header row; rewrite it or rerun the study")
            header = [h.strip() for h in header]
            rows = []
            for record in reader:
                if not record:
                    continue
                if len(record) != len(header):
                    raise LTHError(
                        f"{path} line {reader.line_num} has {len(record)} fields but the header "
                        f"has {len(header)}; the file is damaged, rerun the study to rewrite it"
                    )
                rows.append(dict(zip(header, record)))
    except FileNotFoundError:
        raise LTHError(f"{path} not found; check the run folder path or rerun the study") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise LTHError(f"cannot read {path} ({msg}); check the file or rerun the study") from None
    return rows


def _cell(value: object) -> object:
    """How one value is written: None and NaN as empty, floats in full (round-trip) precision."""
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value


def write_csv_text(rows: Iterable[Mapping[str, object]], columns: list[str]) -> str:
    """Render rows as CSV text with a header, in ``columns`` order ("\\n" line endings).

    Missing keys, None and NaN are written as empty cells; keys not in ``columns`` are left out.
    """
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def to_float(s: str | None) -> float:
    """Parse a CSV cell as a float; an empty cell (or None) is NaN. Raises ValueError otherwise."""
    if s is None:
        return math.nan
    s = s.strip()
    return math.nan if not s else float(s)
