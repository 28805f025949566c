"""Which paths of a run folder lth writes: :func:`file_kind`, :func:`lth_files`, and the refusals
to write a report over one of them (:func:`check_output_path`) or over a user's file
(:func:`check_replace`). A name is never proof that lth wrote a file: the manifest is
(:mod:`lth.runfolder.manifest`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePosixPath

from lth.errors import LTHError
from lth.runfolder.layout import (
    ANALYSIS_FIGURES,
    CHECKPOINT_RE,
    CONFIG,
    FIGURES,
    INTERNAL,
    LEVEL_DIR_RE,
    LEVEL_FILE_RE,
    LOCK,
    MANIFEST,
    MARKER,
    PLOTS,
    PROGRESS,
    REPLICATE_DIR_RE,
    STABILITY_DIR,
    TEMPORARY_RE,
    TENSORBOARD,
    branch_names,
    stability_file,
)
from lth.runfolder.tables import RUN_TABLES, TABLES

# ----------------------------------------------------------------------------- ownership


def file_kind(rel: str | os.PathLike[str]) -> str | None:
    """Which of lth's files a path relative to a run folder is, or None if lth never writes it.

    ``"run"``: written by the run and listed in the manifest (config.toml, the three tables,
    the level files); ``"derived"``: recomputed from those (summary_stats.csv, the analysis,
    figures); ``"internal"``: the marker and ``.lth/`` (progress, manifest, checkpoints, lock);
    ``"temporary"``: named like a temporary of an unfinished write; ``"stability"``: the files
    of ``lth stability`` under ``stability/`` (:func:`stability_file`). A name is never proof
    that lth wrote a file: the manifest is (:func:`lth.runfolder.manifest.clear_run`).
    """
    parts = PurePosixPath(Path(rel).as_posix()).parts
    if not parts or ".." in parts:
        return None
    name = parts[-1]
    if TEMPORARY_RE.match(name):
        return "temporary"
    if parts[0] == STABILITY_DIR:
        return "stability" if stability_file(parts[1:]) else None
    if len(parts) == 1:
        if name == CONFIG or name in (t.file for t in RUN_TABLES):
            return "run"
        if name in (t.file for t in TABLES):
            return "derived"
        return "internal" if name == MARKER else None
    if parts[0] == INTERNAL and len(parts) == 2:
        known = name in (PROGRESS, MANIFEST, LOCK) or CHECKPOINT_RE.match(name)
        return "internal" if known else None
    if parts[0] == PLOTS and len(parts) == 2:
        stem, dot, fmt = name.partition(".")
        return "derived" if dot and fmt and stem in FIGURES + ANALYSIS_FIGURES else None
    if parts[0] == TENSORBOARD and len(parts) == 2:
        return "derived" if name.startswith("events.out.tfevents.") else None
    if (
        len(parts) == 4
        and parts[0] in branch_names()
        and REPLICATE_DIR_RE.match(parts[1])
        and LEVEL_DIR_RE.match(parts[2])
        and LEVEL_FILE_RE.match(name)
    ):
        return "run"
    return None


def _is_lth_dir(parts: tuple[str, ...]) -> bool:
    """Whether a folder (parts relative to the run folder) is one lth makes."""
    if parts in ((INTERNAL,), (PLOTS,), (TENSORBOARD,)) or (
        parts[:1] == (STABILITY_DIR,) and len(parts) <= 2
    ):
        return True
    if not parts or parts[0] not in branch_names() or len(parts) > 3:
        return False
    return (len(parts) < 2 or bool(REPLICATE_DIR_RE.match(parts[1]))) and (
        len(parts) < 3 or bool(LEVEL_DIR_RE.match(parts[2]))
    )


def walk_files(run: Path) -> Iterator[tuple[str, str, list[str]]]:
    """os.walk of a run folder that never follows symbolic links; yields (folder, relative
    posix path, regular file names)."""

    def regular(path: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(path).st_mode)
        except FileNotFoundError:  # gone meanwhile
            return False

    for top, _dirs, names in os.walk(run, followlinks=False):
        rel = Path(top).relative_to(run).as_posix()
        yield top, "" if rel == "." else rel, [n for n in names if regular(os.path.join(top, n))]


def lth_files(run_dir: str | os.PathLike[str], kinds: Iterable[str] | None = None) -> list[str]:
    """Paths (relative, posix) of the regular files of a run folder that lth writes, sorted;
    only those of ``kinds`` (see :func:`file_kind`) if given. Symbolic links are not followed
    and are never listed."""
    run = Path(run_dir)
    wanted = None if kinds is None else set(kinds)
    out = []
    for _top, rel, names in walk_files(run):
        for name in names:
            path = f"{rel}/{name}" if rel else name
            kind = file_kind(path)
            if kind is not None and (wanted is None or kind in wanted):
                out.append(path)
    return sorted(out)


def check_output_path(
    run_dir: str | os.PathLike[str],
    output: str | os.PathLike[str],
    option: str = "--output",
    folder: bool = False,
) -> None:
    """Refuse (:class:`LTHError`) to write ``output`` when it is one of the run folder's own
    files (or a folder lth made, or anything inside ``.lth/`` or a branch folder).
    ``folder``: ``output`` is a folder files go into (``lth plot --out``): the run's own
    ``plots/`` is allowed, as is any folder beside the run's files."""
    run = Path(run_dir).resolve()
    out = Path(output)
    target = out.parent.resolve() / out.name
    try:
        parts = target.relative_to(run).parts
    except ValueError:
        return
    if folder and parts == (PLOTS,):
        return
    inside = any(_is_lth_dir(parts[:i]) and parts[0] != PLOTS for i in range(1, len(parts)))
    if not parts or inside or _is_lth_dir(parts) or file_kind("/".join(parts)) is not None:
        raise LTHError(
            f"{option} {output} is a file of the run folder {run_dir} that lth writes (or in "
            "one of its folders); choose a path outside the run's own files"
        )


def check_replace(
    path: str | os.PathLike[str], option: str, ours: Callable[[Path], bool], force: bool
) -> None:
    """Refuse (:class:`LTHError`) to replace an existing file unless ``ours(path)`` (decided
    from the file's contents: lth wrote it) or ``force``: lth never clobbers a user's file."""
    path = Path(path).expanduser()
    if force or not path.is_file() or ours(path):
        return
    raise LTHError(
        f"{option} {path} exists and was not written by this lth command; pass --force to "
        "replace it, or choose a new path"
    )
