"""File ownership in a run folder: the marker, the manifest, lth's temporaries, ``--overwrite``.

:class:`Manifest` keeps the sha256 of every file lth writes in a run folder (config.toml, the
run's tables, the level files, ``.lth/`` state, the derived tables, figures, ``lth
stability``'s and TensorBoard's files) in ``.lth/manifest.json``, updated under
:func:`manifest_lock` by every writer; :func:`check_manifest` compares a run folder with it.
In a run folder, :class:`RunWriter` writes (and records) every file and names its temporaries
``.<name>.<folder id>-<8 characters>.tmp``, the id being the one in the folder's marker; a
killed process can leave such temporaries behind, and :func:`remove_temporaries` deletes those,
and only those (``lth run`` does when it opens a run folder). ``--overwrite``
(:func:`clear_run`) deletes only the files the manifest lists, while unchanged, never through a
symbolic link, and refuses a folder without one. The marker's ``format:`` line says whether the
folder must have a manifest (:func:`read_marker`: the marker of an older lth,
:data:`~lth.runfolder.layout.OLD_MARKER_TEXT`, does not).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath

from lth.core.fileio import atomic_write, file_sha256
from lth.errors import LTHError
from lth.runfolder.layout import (
    INTERNAL,
    LOCK,
    MANIFEST,
    MARKER,
    MARKER_FORMAT,
    OLD_MARKER_TEXT,
    PROGRESS,
    checkpoint_level,
)
from lth.runfolder.ownership import lth_files, walk_files


def marker_text(folder_id: str) -> str:
    """The :data:`MARKER` lth writes into a run folder it makes: its format and the folder's id
    (the tag of lth's temporaries there, :func:`remove_temporaries`)."""
    return (
        "This folder is an lth run folder. `lth run --overwrite` deletes only the files lth "
        "wrote here,\nthose .lth/manifest.json lists, and only while they are as lth wrote them."
        f"\nformat: {MARKER_FORMAT}\nid: {folder_id}\n"
    )


_MARKER_FIELD = re.compile(r"^(format|id): *(\S+) *$", re.MULTILINE)
_FOLDER_ID = re.compile(r"^[0-9a-f]{16}$")


def read_marker(run_dir: str | os.PathLike[str]) -> tuple[int, str | None]:
    """``(format, id)`` of a run folder's :data:`MARKER`: ``(0, None)`` without one, ``(1,
    None)`` for :data:`OLD_MARKER_TEXT` (an older lth); any other marker is of the current
    format (its folder must have a manifest), with the id its ``id:`` line gives, if valid."""
    path = Path(run_dir) / MARKER
    if not path.is_file():
        return 0, None
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return MARKER_FORMAT, None
    if text == OLD_MARKER_TEXT:
        return 1, None
    fields = dict(_MARKER_FIELD.findall(text))
    written = fields.get("format", "")
    version = max(int(written), MARKER_FORMAT) if written.isdigit() else MARKER_FORMAT
    folder_id = fields.get("id", "")
    return version, folder_id if _FOLDER_ID.match(folder_id) else None


def folder_id(run_dir: str | os.PathLike[str]) -> str | None:
    """The id in a run folder's marker (None without a current one)."""
    return read_marker(run_dir)[1]


def write_marker(run_dir: str | os.PathLike[str]) -> None:
    """Write the :data:`MARKER` of the current format, with a new folder id."""
    new_id = secrets.token_hex(8)
    atomic_write(Path(run_dir) / MARKER, marker_text(new_id), tag=new_id)


def remove_temporaries(run_dir: str | os.PathLike[str]) -> list[str]:
    """Delete the temporaries that killed writes of lth left anywhere in a run folder: only
    names holding the folder's id (:func:`atomic_write`'s ``tag``), which lth alone makes, never
    a name that merely looks like one; symbolic links are not followed. Returns their relative
    paths."""
    run = Path(run_dir)
    tag = folder_id(run)
    if tag is None:
        return []
    own = re.compile(rf"^\..+\.{tag}-[0-9a-f]{{8}}\.tmp$")
    gone = []
    for top, rel, names in walk_files(run):
        for name in filter(own.match, names):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(top, name))
            gone.append(f"{rel}/{name}" if rel else name)
    return sorted(gone)


def unmarked_message(run_dir: str | os.PathLike[str]) -> str:
    """Why ``--overwrite`` refuses a folder without the marker, and what to do."""
    return (
        f"--overwrite refused: {run_dir} has no {MARKER} file, so it was not made by this lth "
        "(an older lth, or not lth at all) and nothing in it is deleted; run without "
        "--overwrite to resume a run of the same settings, or delete the folder yourself, "
        "or choose another --out"
    )


def unlisted_message(run_dir: str | os.PathLike[str], why: str = "") -> str:
    """Why ``--overwrite`` refuses a folder whose manifest is missing or unreadable."""
    return (
        f"--overwrite is unsafe in {run_dir}: its {INTERNAL}/{MANIFEST} {why or 'is missing'}, "
        "so lth cannot tell the files it wrote from yours and deletes nothing; move what you "
        "want to keep and delete the folder yourself, or choose another --out"
    )


def _owned(run: Path, manifest: Manifest, rel: str) -> bool:
    """Whether ``--overwrite`` deletes a file the manifest lists: it is there, reached without
    a symbolic link, and holds what lth wrote (or what lth was writing when it stopped).
    Raises :class:`LTHError` for a link on the way or a changed file."""
    parts = PurePosixPath(rel).parts
    for i in range(1, len(parts) + 1):
        path = run.joinpath(*parts[:i])
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            return False
        if stat.S_ISLNK(mode):
            raise LTHError(
                f"--overwrite refused: {path} is a symbolic link, which lth does not follow out "
                "of the run folder, and nothing was deleted; put a real folder or file there "
                "(the link's target stays as it is), or choose another --out"
            )
    same = stat.S_ISREG(mode) and (
        rel in manifest.writing or file_sha256(path) == manifest.files[rel]
    )
    if not same:
        raise LTHError(
            f"--overwrite refused: {path} was changed after lth wrote it (its sha256 is not the "
            f"one {INTERNAL}/{MANIFEST} recorded), so it is kept and nothing was deleted; move it "
            "out of the run folder and run again, or choose another --out"
        )
    return True


def clear_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """Delete what lth wrote in a run folder (``--overwrite``): the files its manifest lists,
    while they hold what lth wrote, lth's own temporaries, then the folders of those files that
    are left empty. Symbolic links are never followed.

    Refuses (:class:`LTHError`, nothing deleted) a folder without the :data:`MARKER` or without
    a readable manifest, a listed file that was changed, and a listed file behind a symbolic
    link (both named). Returns the relative paths deleted.
    """
    run = Path(run_dir)
    if not (run / MARKER).is_file():
        raise LTHError(unmarked_message(run))
    if not (run / INTERNAL / MANIFEST).is_file():
        raise LTHError(unlisted_message(run))
    with manifest_lock(run):
        try:
            manifest = Manifest.load(run)
        except LTHError:
            raise LTHError(unlisted_message(run, "cannot be read")) from None
        if manifest is None:
            raise LTHError(unlisted_message(run))
        kept = {MARKER, f"{INTERNAL}/{MANIFEST}", f"{INTERNAL}/{LOCK}"}
        listed = sorted({*manifest.files, *manifest.writing} - kept)
        doomed = [rel for rel in listed if _owned(run, manifest, rel)]
        for rel in doomed:
            with contextlib.suppress(FileNotFoundError):
                (run / rel).unlink()
        gone = doomed + remove_temporaries(run)
        folders = {run.joinpath(*PurePosixPath(rel).parts[:i]) for rel in gone
                   for i in range(1, len(PurePosixPath(rel).parts))}  # fmt: skip
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder != run / INTERNAL:
                with contextlib.suppress(OSError):  # not empty: the user's files are in it
                    folder.rmdir()
        manifest.files = {k: v for k, v in manifest.files.items() if k not in doomed}
        manifest.writing -= set(doomed)
        manifest.save()
    return gone


@contextlib.contextmanager
def manifest_lock(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the lock of a run folder's manifest (an exclusive flock on its ``.lth`` folder)
    for one read-modify-write: ``lth run``, ``lth plot`` and ``lth stability`` all update it."""
    path = Path(run_dir) / INTERNAL
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as e:
        raise LTHError(
            f"cannot open {path} ({e.strerror}); the run folder's {INTERNAL} must be a folder "
            "in it, not a link"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _inside(rel: object) -> bool:
    """Whether a manifest key is a plain relative path inside the run folder."""
    if not isinstance(rel, str) or not rel or "\\" in rel:
        return False
    path = PurePosixPath(rel)
    return not path.is_absolute() and path.as_posix() == rel and ".." not in path.parts


class Manifest:
    """The sha256 of every file lth wrote in a run folder, kept in ``.lth/manifest.json``.

    ``files`` maps a path relative to the run folder to the sha256 of the bytes lth wrote:
    config.toml, the tables of the run, the level files, ``.lth/progress.json`` and the
    in-level checkpoints, the derived tables (summary_stats.csv, analysis.csv,
    analysis_histograms.csv), the figures under plots/, the files of ``lth stability`` under
    stability/ and the TensorBoard event files. ``writing`` names the files being (re)written
    (:class:`RunWriter`); a kill may leave either version, so they are not compared until
    :meth:`settle` takes them as they are.
    """

    VERSION = 1

    def __init__(
        self,
        run_dir: str | os.PathLike[str],
        files: Mapping[str, str] | None = None,
        writing: Iterable[str] = (),
    ):
        self.run_dir = Path(run_dir)
        self.files = dict(files or {})
        self.writing = set(writing)

    @property
    def path(self) -> Path:
        """Where the manifest is kept."""
        return self.run_dir / INTERNAL / MANIFEST

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> Manifest | None:
        """The run folder's manifest; None when it has none."""
        manifest = cls(run_dir)
        try:
            data = json.loads(manifest.path.read_text())
            if data.get("version") != cls.VERSION:
                raise ValueError(f"unknown version {data.get('version')!r}")
            files, writing = data["files"], data.get("writing", [])
            if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
                raise ValueError("files is not a table of checksums")
            bad = next((k for k in [*files, *writing] if not _inside(k)), None)
            if bad is not None:
                raise ValueError(f"{bad!r} is not a path inside the run folder")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise LTHError(
                f"cannot read {manifest.path} ({e}); lth cannot tell the files it wrote there "
                "from others: move what you want to keep and delete the folder, or use another "
                "--out"
            ) from None
        return cls(run_dir, files, writing)

    @classmethod
    def of_files(cls, run_dir: str | os.PathLike[str]) -> Manifest:
        """A manifest of the run's files as they are on disk (for a run folder of an older lth):
        those the run writes, its progress and its in-level checkpoints."""
        run = Path(run_dir)
        state = [r for r in lth_files(run, ["internal"]) if checkpoint_level(r) is not None]
        state += [f"{INTERNAL}/{PROGRESS}"] if (run / INTERNAL / PROGRESS).is_file() else []
        files = [*lth_files(run, ["run"]), *state]
        return cls(run, {rel: file_sha256(run / rel) for rel in files})

    def save(self) -> None:
        """Write the manifest, atomically."""
        data = {"version": self.VERSION, "files": dict(sorted(self.files.items()))}
        data["writing"] = sorted(self.writing)
        atomic_write(self.path, json.dumps(data, indent=1) + "\n", folder_id(self.run_dir))

    def problems(self) -> list[str]:
        """One line per file that is missing or whose bytes differ from what lth wrote."""
        out, listed = [], f"{INTERNAL}/{MANIFEST}"
        for rel, digest in sorted(self.files.items()):
            if rel in self.writing:
                continue
            path = self.run_dir / rel
            try:
                regular = stat.S_ISREG(os.lstat(path).st_mode)
                same = regular and file_sha256(path) == digest
            except FileNotFoundError:
                out.append(f"{path} is missing (lth wrote it; {listed} lists it)")
                continue
            except OSError as e:
                out.append(f"cannot read {path} ({e.strerror})")
                continue
            if not same:
                out.append(f"{path} was changed after lth wrote it (sha256 differs from {listed})")
        return out

    def settle(self) -> None:
        """Take the files an unfinished write left in ``writing`` as they are now."""
        for rel in sorted(self.writing):
            path = self.run_dir / rel
            if path.is_file() and not path.is_symlink():
                self.files[rel] = file_sha256(path)
            else:
                self.files.pop(rel, None)
        self.writing.clear()


class RunWriter:
    """Writes files into a run folder, each recorded in its manifest (when it has one).

    :meth:`begin` names the files in the manifest's ``writing``, :meth:`write` writes one
    atomically (its temporary tagged with the folder's id) and :meth:`end` records their
    sha256 and takes them out of ``writing``; a kill in between leaves them in ``writing``, for
    :meth:`Manifest.settle`. Each update reads, changes and saves the manifest under
    :func:`manifest_lock`, so that writers of other processes keep each other's entries.
    """

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.done: dict[str, str] = {}
        self.begun: set[str] = set()

    def rel(self, path: str | os.PathLike[str]) -> str:
        """A path inside the run folder (or already relative to it) as a manifest key."""
        try:
            return Path(path).relative_to(self.run_dir).as_posix()
        except ValueError:
            return Path(path).as_posix()

    @contextlib.contextmanager
    def update(self, create: bool = False) -> Iterator[Manifest | None]:
        """The manifest, read under its lock and saved after the block; None (nothing saved)
        when the folder has none, unless ``create`` (then an empty one)."""
        if not create and not (self.run_dir / INTERNAL / MANIFEST).is_file():
            yield None
            return
        with manifest_lock(self.run_dir):
            manifest = Manifest.load(self.run_dir) or Manifest(self.run_dir)
            yield manifest
            manifest.save()

    def begin(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Save that these files are about to be (re)written."""
        rels = {self.rel(p) for p in paths}
        self.begun |= rels
        with self.update() as manifest:
            if manifest is not None:
                manifest.writing |= rels

    def write(self, path: str | os.PathLike[str], data: bytes | str) -> None:
        """:func:`atomic_write` one file of :meth:`begin`'s and note its checksum."""
        raw = data.encode() if isinstance(data, str) else data
        atomic_write(path, raw, folder_id(self.run_dir))
        self.done[self.rel(path)] = hashlib.sha256(raw).hexdigest()

    def end(self, finished: bool = True) -> None:
        """Save the checksums of the files written; ``finished``: every file :meth:`begin`
        named is as it is to stay (else those not written stay in ``writing``)."""
        with self.update() as manifest:
            if manifest is not None:
                manifest.files.update(self.done)
                manifest.writing -= set(self.done) | (self.begun if finished else set())
        self.done, self.begun = {}, set()

    @contextlib.contextmanager
    def writing(self, paths: Iterable[str | os.PathLike[str]]) -> Iterator[RunWriter]:
        """:meth:`begin` these files, then :meth:`end` (also when the block fails)."""
        self.begin(paths)
        try:
            yield self
        except BaseException:
            with contextlib.suppress(LTHError, OSError):
                self.end(finished=False)
            raise
        self.end()

    def write_files(self, files: Mapping[Path, bytes | str]) -> None:
        """Write files of the run (in order), each atomically, and record them."""
        with self.writing(files):
            for path, data in files.items():
                self.write(path, data)

    def record(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Record files lth made by other means (TensorBoard's event files, a lock file) as
        they are now."""
        with self.update() as manifest:
            for path in paths if manifest is not None else ():
                rel, full = self.rel(path), self.run_dir / self.rel(path)
                if full.is_file() and not full.is_symlink():
                    manifest.files[rel] = file_sha256(full)
                    manifest.writing.discard(rel)

    def listed(self) -> dict[str, str]:
        """The files the manifest lists (none without one)."""
        manifest = Manifest.load(self.run_dir)
        return {} if manifest is None else manifest.files

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Delete files lth wrote that are done with (checkpoints): only those the manifest
        lists and that hold what lth wrote; drop them from the manifest."""
        with self.update() as manifest:
            for rel in {self.rel(p) for p in paths} if manifest is not None else ():
                path = self.run_dir / rel
                if rel in manifest.writing or (
                    rel in manifest.files
                    and path.is_file()
                    and not path.is_symlink()
                    and file_sha256(path) == manifest.files[rel]
                ):
                    path.unlink(missing_ok=True)
                    manifest.files.pop(rel, None)
                    manifest.writing.discard(rel)


def check_manifest(run_dir: str | os.PathLike[str]) -> list[str]:
    """Compare a run folder with its manifest: one line per file lth wrote that is missing or
    changed since (empty when everything matches). Files an unfinished write left behind are
    not compared. Raises :class:`LTHError` when the folder has no manifest."""
    manifest = Manifest.load(run_dir)
    if manifest is None:
        raise LTHError(
            f"{run_dir} has no {INTERNAL}/{MANIFEST}: it is not an lth run folder, or an older "
            "lth made it (lth run in it again writes one)"
        )
    return manifest.problems()
