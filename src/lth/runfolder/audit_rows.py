"""What an audit of a run folder reads and raises: the one-line failure of a check
(:class:`VerifyError`), and the run's tables read for checking (a damaged table fails the
``files`` check) and grouped per network. Shared by :mod:`lth.runfolder.verify` and
:mod:`lth.runfolder.verify_published`."""

from __future__ import annotations

from pathlib import Path

from lth.errors import LTHError
from lth.runfolder.readers import MetricRow, load_layers

Key = tuple[str, int, int]  # branch, replicate, level


class VerifyError(LTHError):
    """A run folder fails one of the checks of :mod:`lth.runfolder.verify`."""

    def __init__(self, check: str, where: str, detail: str):
        self.check, self.where, self.detail = check, where, detail
        super().__init__(f"check {check} failed: {where}: {detail}")


def read_rows(reader, run: Path, **kw) -> list:
    """The rows a reader of :mod:`lth.runfolder.readers` gives; a damaged table fails ``files``."""
    try:
        return reader(run, **kw)
    except LTHError as e:
        raise VerifyError("files", str(run), str(e)) from None


def metrics_by_network(rows: list[MetricRow]) -> dict[Key, list[MetricRow]]:
    """metrics.csv rows grouped per network."""
    out: dict[Key, list[MetricRow]] = {}
    for r in rows:
        out.setdefault((r.branch, r.replicate, r.level), []).append(r)
    return out


def layers_by_network(run: Path, level: int) -> dict[Key, dict[str, tuple[int, int]]]:
    """layers.csv at one level: per network, each layer's (kept, total)."""
    out: dict[Key, dict[str, tuple[int, int]]] = {}
    for r in read_rows(load_layers, run):
        if r.level == level:
            out.setdefault((r.branch, r.replicate, r.level), {})[r.layer] = (r.kept, r.total)
    return out
