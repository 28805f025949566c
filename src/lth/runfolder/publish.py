"""``lth publish RUN OUT``: the small, auditable form of a run folder (what ``results/`` holds).

A published folder holds exactly: ``config.toml``, the tables ``summary.csv``,
``summary_stats.csv``, ``layers.csv`` and ``metrics.csv``, the run's PNG figures, ``report.md``
(when the command is given the report's text), the masks of every network bit-packed into
``masks.safetensors`` (:mod:`lth.runfolder.packed`), and ``published.json``: the sha256 of each
of those files, the lth version and the machine that published it (its CPU kind, with the
run's torch and thread count from ``config.toml``), which ``lth verify --replay`` reads to
decide whether it can demand bit-identical results. No weights: ``lth verify`` on the folder
(:mod:`lth.runfolder.verify_published`) checks everything masks and tables allow.

The run folder is audited first (:func:`lth.runfolder.verify.verify_run`, with the weights): a
run that fails is not published. In OUT, lth replaces only files that its ``published.json``
lists, unchanged since; any other existing file is refused unless ``force``.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

from lth.core.fileio import atomic_write, file_sha256, load_tensors
from lth.errors import LTHError
from lth.runfolder.layout import (
    ANALYSIS_FIGURES,
    CONFIG,
    FIGURES,
    PACKED_MASKS,
    PLOTS,
    PUBLISHED,
    REPORT,
    level_file,
)
from lth.runfolder.packed import write_packed
from lth.runfolder.readers import load_summary
from lth.runfolder.recompute import layer_kinds
from lth.runfolder.tables import LAYERS, METRICS, SUMMARY, SUMMARY_STATS
from lth.runfolder.verify import verify_run
from lth.version import __version__

__all__ = ["PUBLISHED_FORMAT", "TABLES", "cpu_kind", "publish", "read_published"]

PUBLISHED_FORMAT = 1
TABLES = (CONFIG, SUMMARY.file, SUMMARY_STATS.file, LAYERS.file, METRICS.file)


def cpu_kind() -> str:
    """This machine's CPU model (``model name`` of /proc/cpuinfo, else the platform's
    processor name): floats round alike only on the same kind of CPU."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def read_published(folder: str | os.PathLike[str]) -> dict | None:
    """The ``published.json`` of a published folder, or None when it has none; a damaged one
    is a one-line :class:`~lth.errors.LTHError`."""
    path = Path(folder) / PUBLISHED
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        files = info["files"]
        if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
            raise TypeError("files is not a table of sha256 digests")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LTHError(
            f"{path} is damaged ({type(e).__name__}: {e}); publish the study again"
        ) from None
    return info


def _check_out(run: Path, out: Path, names: list[str], force: bool) -> None:
    """Refuse to write OUT inside the run folder, or over a file lth publish did not write."""
    if out.resolve() == run.resolve() or run.resolve() in out.resolve().parents:
        raise LTHError(f"OUT {out} is inside the run folder {run}; publish to a folder outside it")
    if out.exists() and not out.is_dir():
        raise LTHError(f"OUT {out} is a file; give a folder (it is created if missing)")
    listed = (read_published(out) or {}).get("files", {}) if out.is_dir() else {}
    for name in [*names, PUBLISHED]:
        path = out / name
        if force or not path.exists():
            continue
        ours = name == PUBLISHED or (name in listed and file_sha256(path) == listed[name])
        if not ours:
            raise LTHError(
                f"{path} exists and lth publish did not write it (or it changed since); pass "
                "--force to replace it, or publish into a new folder"
            )


def publish(
    run_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    report: str | None = None,
    force: bool = False,
) -> dict[str, int]:
    """Publish a run folder into ``out``: its small files and its masks, bit-packed.

    Args:
        run_dir: A finished run folder (``lth verify`` must pass on it).
        out: The folder to write (created if missing).
        report: The text of ``report.md`` (``lth report RUN --format md``), or None for none.
        force: Replace files in ``out`` that ``lth publish`` did not write.

    Returns:
        dict[str, int]: The size in bytes of each file written, by name.

    Raises:
        LTHError: The run fails ``lth verify`` (a :class:`~lth.runfolder.verify.VerifyError`),
            or ``out`` holds a file lth publish did not write.

    Examples:
        >>> import tempfile
        >>> publish(tempfile.mkdtemp(), tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: ... is not an lth run folder (no config.toml)
    """
    run, out = Path(run_dir).expanduser(), Path(out).expanduser()
    verify_run(run)
    figures = [
        f"{name}.png"
        for name in (*FIGURES, *ANALYSIS_FIGURES)
        if (run / PLOTS / f"{name}.png").is_file()
    ]
    names = [*TABLES, *figures, PACKED_MASKS] + ([REPORT] if report is not None else [])
    _check_out(run, out, names, force)
    keys = [(r.branch, r.replicate, r.level) for r in load_summary(run)]
    masks = {k: {n: m.bool() for n, m in load_tensors(level_file(run, *k, "mask")).items()}
             for k in keys}  # fmt: skip
    output, _ = layer_kinds(masks[keys[0]], load_tensors(level_file(run, "ticket", 0, 0, "init")))
    out.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in TABLES:
        atomic_write(out / name, (run / name).read_bytes())
    for name in figures:
        atomic_write(out / name, (run / PLOTS / name).read_bytes())
    if report is not None:
        atomic_write(out / REPORT, report)
    write_packed(out / PACKED_MASKS, masks, output)
    for name in names:
        sizes[name] = (out / name).stat().st_size
    info = {
        "format": PUBLISHED_FORMAT,
        "lth": __version__,
        "cpu": cpu_kind(),
        "networks": len(keys),
        "files": {name: file_sha256(out / name) for name in names},
    }
    atomic_write(out / PUBLISHED, json.dumps(info, indent=1) + "\n")
    return sizes
