"""Data files on disk: finding them, downloading missing ones and reading verified IDX files.

Data directory layout: ``<data_dir>/<spec.folder>/<file>``, for example
``<data_dir>/mnist/train-images-idx3-ubyte.gz`` and
``<data_dir>/fashion-mnist/t10k-labels-idx1-ubyte.gz`` (each file may also be stored uncompressed,
without ``.gz``). Files kept as torchvision keeps them are found too (``<data_dir>/MNIST/raw/``,
``<data_dir>/FashionMNIST/raw/``: ``DatasetSpec.also_in``) and verified the same way. The data
directory is ``--data-dir`` (the ``data_dir`` argument; ``~`` is expanded), else
``$LTH_DATA_DIR``, else the per-user cache (see :func:`resolve_data_dir`). MNIST is bundled with
the package (``lth/_data/mnist/``), so it never needs downloading; when a data directory was
chosen but holds no MNIST, one line on stderr says the bundled copy is used.

IDX files are read as streams: the header is checked first (magic number, the shape the dataset
expects, at most :data:`IDX_MAX_BYTES`), and nothing is decompressed beyond what it declares, so
a small damaged or hostile ``.gz`` cannot fill the memory.

Downloading: :func:`locate_files` fetches missing files with a *downloader*, any callable
``(url: str, dest: Path) -> None`` that writes the content of ``url`` into the file ``dest``
(or raises). The default, :func:`http_download`, fetches over HTTP(S); pass your own to use
another transport, a local mirror, or (in tests) local copies. Every downloaded file is verified
(checksum) before it is moved into place, so a downloader need not check anything.

Offline guard: when the environment variable ``LTH_OFFLINE`` is set to anything but ``""`` or
``"0"``, :func:`http_download` refuses to touch the network and raises a one-line
:class:`~lth.errors.LTHError` instead (the test suite sets it, so no test can download).
Downloaders passed explicitly are not affected.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import math
import os
import shutil
import struct
import sys
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lth.errors import LTHError

if TYPE_CHECKING:
    from .specs import DataFile, DatasetSpec

__all__ = [
    "BUNDLED_ROOT",
    "DATA_DIR_ENV",
    "FIX_HINT",
    "IDX_MAX_BYTES",
    "OFFLINE_ENV",
    "Downloader",
    "Wanted",
    "content_sha256",
    "dataset_folders",
    "default_cache_dir",
    "download_into",
    "http_download",
    "locate_files",
    "missing_from",
    "one_line",
    "read_bytes",
    "read_idx",
    "resolve_data_dir",
]

DATA_DIR_ENV = "LTH_DATA_DIR"
OFFLINE_ENV = "LTH_OFFLINE"
#: Folder of the package's bundled data files (``lth/_data``).
BUNDLED_ROOT = Path(__file__).resolve().parent.parent / "_data"
#: How to fix a damaged data file; ends most messages about one.
FIX_HINT = "delete it and download it again, or point --data-dir elsewhere"
#: The most bytes of data an IDX file may declare (MNIST's largest file holds 47 MB).
IDX_MAX_BYTES = 1 << 28
_DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"
# IDX magic numbers this module reads: unsigned-byte data with 1 (labels) or 3 (images) dims.
_IDX_MAGICS = {0x00000801: "label", 0x00000803: "image"}

#: ``(url, dest) -> None``: writes the content of ``url`` into the file ``dest``, or raises.
Downloader = Callable[[str, Path], None]


def one_line(text: object) -> str:
    """``text`` (e.g. an exception) as one line, for error messages."""
    return " ".join(str(text).split()) or type(text).__name__


def _file_error(path: Path, e: OSError) -> LTHError:
    """The one-line error for an ``OSError`` raised while opening or reading ``path``."""
    if isinstance(e, FileNotFoundError):
        return LTHError(f"file {path} does not exist; check the path or point --data-dir elsewhere")
    if isinstance(e, IsADirectoryError):
        return LTHError(f"{path} is a directory, not a data file; remove or rename it")
    return LTHError(f"cannot read {path}: {one_line(e.strerror or e)}; check its permissions")


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; any problem is a one-line :class:`LTHError` naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise _file_error(path, e) from None


# --------------------------------------------------------------------------------------------
# Reading IDX files
# --------------------------------------------------------------------------------------------


class _Content:
    """The decompressed content of a data file, read as a stream, never all at once (gzip is
    detected by the ``.gz`` suffix or by its magic bytes). Every problem is an LTHError."""

    def __init__(self, path: Path):
        self.path = path
        try:
            self._file = path.open("rb")
        except OSError as e:
            raise _file_error(path, e) from None
        try:
            self.gzip = path.name.endswith(".gz") or self._file.read(2) == _GZIP_MAGIC
            self._file.seek(0)
        except OSError as e:
            self._file.close()
            raise _file_error(path, e) from None
        self._stream = gzip.GzipFile(fileobj=self._file, mode="rb") if self.gzip else self._file

    def __enter__(self) -> _Content:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes; fewer only at the end of the content."""
        try:
            return self._stream.read(n)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            if not self.gzip:
                raise _file_error(self.path, e) from None
            raise LTHError(
                f"{self.path} is not a valid gzip file or is damaged ({one_line(e)}); {FIX_HINT}"
            ) from None

    def read_up_to(self, n: int) -> bytearray:
        """The next ``n`` bytes, or all that is left when fewer; memory grows with what is read,
        never with ``n``."""
        data = bytearray()
        while len(data) < n:
            chunk = self.read(min(_CHUNK, n - len(data)))
            if not chunk:
                break
            data += chunk
        return data


def content_sha256(path: Path, max_bytes: int = IDX_MAX_BYTES) -> str:
    """SHA-256 of the decompressed content of ``path``, which may not exceed ``max_bytes``."""
    digest = hashlib.sha256()
    size = 0
    with _Content(path) as content:
        while chunk := content.read(_CHUNK):
            size += len(chunk)
            if size > max_bytes:
                raise LTHError(f"{path} decompresses to more than {max_bytes} bytes")
            digest.update(chunk)
    return digest.hexdigest()


def _check_magic(path: Path, magic: int, ndim: int | None) -> None:
    """``magic`` must be one of unsigned-byte IDX data, of ``ndim`` dimensions when given."""
    if magic in _IDX_MAGICS and (ndim is None or magic == 0x800 | ndim):
        return
    if ndim is None:
        what, expected = "IDX file", "0x00000801 for labels or 0x00000803 for images"
    else:
        what = f"IDX {_IDX_MAGICS.get(0x800 | ndim, f'{ndim}-dimensional')} file"
        expected = f"0x{0x800 | ndim:08X}"
    raise LTHError(
        f"{path} is not an {what} (magic 0x{magic:08X}, expected {expected}); {FIX_HINT}"
    )


def read_idx(
    path: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    shape: Sequence[int] | None = None,
    max_bytes: int = IDX_MAX_BYTES,
) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` or uncompressed) into a uint8 numpy array.

    The header is read and checked first, before any data is decompressed: the magic number
    (0x00000801 for labels, 0x00000803 for images), the dimensions (exactly ``shape`` when given)
    and the size they declare (at most ``max_bytes``). The data is then decompressed as a
    stream, never beyond what the header declares, and must hold exactly that many bytes (no
    truncation, no trailing data); when ``sha256`` is given, the SHA-256 of the decompressed
    content must match it. Any problem raises :class:`~lth.errors.LTHError` naming the file.
    The returned array is writable.
    """
    path = Path(path)
    with _Content(path) as content:
        header = content.read_up_to(4)
        if len(header) < 4:
            raise LTHError(
                f"IDX file {path} is truncated: it holds {len(header)} bytes, too few for a "
                f"header; {FIX_HINT}"
            )
        (magic,) = struct.unpack(">I", header)
        _check_magic(path, magic, None if shape is None else len(shape))
        kind = _IDX_MAGICS[magic]
        ndim = magic & 0xFF
        header += content.read_up_to(4 * ndim)
        if len(header) < 4 + 4 * ndim:
            raise LTHError(
                f"IDX file {path} is truncated: its header needs {4 + 4 * ndim} bytes, got "
                f"{len(header)}; {FIX_HINT}"
            )
        dims = struct.unpack(f">{ndim}I", header[4:])
        if shape is not None and dims != tuple(shape):
            raise LTHError(
                f"IDX file {path} declares {kind} data of shape {dims}, expected "
                f"{tuple(shape)}; {FIX_HINT}"
            )
        expected = math.prod(dims)
        if expected > max_bytes:
            raise LTHError(
                f"IDX file {path} declares {expected} bytes of {kind} data {dims}, more than the "
                f"limit of {max_bytes} bytes (a damaged header?); {FIX_HINT}"
            )
        data = content.read_up_to(expected)
        if len(data) < expected:
            raise LTHError(
                f"IDX file {path} is truncated: expected {expected} bytes of {kind} data, got "
                f"{len(data)}; {FIX_HINT}"
            )
        extra = len(content.read_up_to(_CHUNK))
        if extra:
            more = "at least " if extra == _CHUNK else ""
            raise LTHError(
                f"IDX file {path} has {more}{extra} bytes of trailing data after the "
                f"{expected} bytes of {kind} data its header declares; {FIX_HINT}"
            )
    if sha256 is not None:
        digest = hashlib.sha256(header)
        digest.update(data)
        actual = digest.hexdigest()
        if actual != sha256.lower():
            raise LTHError(
                f"checksum of {path} does not match: sha256 of its content is {actual}, expected "
                f"{sha256.lower()}; the file is damaged or not the expected one, {FIX_HINT}"
            )
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


# --------------------------------------------------------------------------------------------
# Where the data directory is
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/lth`` or ``~/.cache/lth``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lth"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$LTH_DATA_DIR``, else the user cache.

    An explicitly given directory (argument or environment variable) must exist and be a
    directory; ``~`` in it is expanded. The default cache folder need not exist yet (it is
    created on download).
    """
    return _resolve(data_dir)[0]


def _resolve(data_dir: str | os.PathLike[str] | None) -> tuple[Path, bool]:
    """:func:`resolve_data_dir`, and whether the directory was chosen (argument or environment
    variable) rather than the default cache."""
    if data_dir is not None:
        path = _check_dir(data_dir, "data directory", "pass --data-dir with an existing folder")
        return path, True
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        path = _check_dir(
            env,
            f"data directory {DATA_DIR_ENV}",
            f"set {DATA_DIR_ENV} to an existing folder or unset it",
        )
        return path, True
    return default_cache_dir(), False


def _check_dir(value: str | os.PathLike[str], what: str, fix: str) -> Path:
    if isinstance(value, str) and not value.strip():
        raise LTHError(f"{what} is an empty string; {fix}")
    path = Path(value).expanduser().absolute()
    if not path.exists():
        raise LTHError(f"{what} {path} does not exist; {fix}")
    if not path.is_dir():
        raise LTHError(f"{what} {path} is not a directory; {fix}")
    return path


# --------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------


def http_download(url: str, dest: Path) -> None:
    """The default downloader: fetch ``url`` over HTTP(S) into the file ``dest``.

    Refuses (one-line :class:`LTHError`) when ``$LTH_OFFLINE`` is set to anything but ``""`` or
    ``"0"``.
    """
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise LTHError(
            f"not downloading {url}: downloads are turned off by {OFFLINE_ENV}="
            f"{os.environ[OFFLINE_ENV]}; unset {OFFLINE_ENV} to allow them"
        )
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, dest.open("wb") as f:
        shutil.copyfileobj(response, f, length=1 << 20)


@dataclass(frozen=True)
class Wanted:
    """A file to download into a dataset folder (see :func:`download_into`)."""

    name: str  # its name in the folder, and at the end of each mirror's URL
    verify: Callable[[Path, str], None]  # (downloaded file, url): raises LTHError if wrong
    by_hand: str  # what to do instead when downloading fails, for the message


class _DownloadFailed(Exception):
    pass


def _fetch(urls: Sequence[str], folder: Path, wanted: Wanted, downloader: Downloader) -> None:
    """Download ``wanted`` from the first mirror that works, verify it, then move it into
    ``folder`` atomically (no partial file is ever left there)."""
    errors = []
    for base in urls:
        url = base + wanted.name
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{wanted.name}.", suffix=".part")
            os.close(fd)
            tmp = Path(tmp_name)
            downloader(url, tmp)
            wanted.verify(tmp, url)
            os.replace(tmp, folder / wanted.name)
            return
        except (OSError, http.client.HTTPException, ValueError, LTHError) as e:
            errors.append(f"{url}: {one_line(e)}")  # URLError is an OSError
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    raise _DownloadFailed("; ".join(errors))


def download_into(
    spec: DatasetSpec,
    folder: Path,
    message: str,
    wanted: Sequence[Wanted],
    downloader: Downloader | None,
) -> None:
    """Download the ``wanted`` files of ``spec`` into ``folder``, creating it if needed.

    ``message`` says what is missing. With no ``downloader`` (downloading not allowed), or when
    a download fails, raise an :class:`LTHError` made of it and what to do; a folder created
    here is removed again on failure.
    """
    if downloader is None:
        raise LTHError(
            f"{message}; put them there, point --data-dir at a folder holding a "
            f"{spec.folder}/ subfolder with them, or allow downloading"
        )
    created = not folder.exists()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LTHError(
            f"{message}, and the folder cannot be created to download them "
            f"({one_line(e.strerror or e)}); point --data-dir at a writable folder"
        ) from None
    for w in wanted:
        try:
            _fetch(spec.urls, folder, w, downloader)
        except _DownloadFailed as e:
            if created:  # leave no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise LTHError(
                f"{message}, and downloading {w.name} failed ({e}); {w.by_hand}"
            ) from None


# --------------------------------------------------------------------------------------------
# Finding a dataset's files
# --------------------------------------------------------------------------------------------


def _find_files(folder: Path, files: Sequence[DataFile]) -> tuple[dict[str, Path], list[DataFile]]:
    found: dict[str, Path] = {}
    missing: list[DataFile] = []
    for f in files:
        for candidate in f.candidates():
            path = folder / candidate
            if path.is_file():
                found[f.name] = path
                break
        else:
            missing.append(f)
    return found, missing


def dataset_folders(spec: DatasetSpec, root: Path) -> list[Path]:
    """Where the files of ``spec`` may be under the data directory ``root``, in order: lth's own
    ``root/spec.folder`` (where downloads go), then ``spec.also_in`` (torchvision's layout)."""
    folders = [root / spec.folder]
    folders += [root / other for other in spec.also_in if root / other not in folders]
    return folders


def missing_from(spec: DatasetSpec, folders: Sequence[Path]) -> str:
    """``"<title> files missing from <folder> (and from <others>)"``, for messages."""
    others = f" (and from {', '.join(map(str, folders[1:]))})" if len(folders) > 1 else ""
    return f"{spec.title} files missing from {folders[0]}{others}"


def _missing_message(
    spec: DatasetSpec, folders: Sequence[Path], missing: Sequence[DataFile]
) -> str:
    names = ", ".join(f.download_name for f in missing)
    return f"{missing_from(spec, folders)}: expected {names} (gzip or uncompressed)"


_noted: set[str] = set()


def _note_once(line: str) -> None:
    """Print ``line`` on stderr, unless this process has printed it already."""
    if line not in _noted:
        _noted.add(line)
        print(line, file=sys.stderr, flush=True)


def _sha256_checker(f: DataFile) -> Callable[[Path, str], None]:
    def verify(path: Path, url: str) -> None:
        if content_sha256(path) != f.sha256:
            raise LTHError(f"checksum of the file downloaded from {url} does not match")

    return verify


def locate_files(
    spec: DatasetSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    downloader: Downloader = http_download,
) -> dict[str, Path]:
    """Paths of the dataset's files (``DataFile.name`` -> path), downloading missing ones.

    Looks in ``resolve_data_dir(data_dir) / spec.folder``, then in the folders where
    torchvision keeps the same files (``spec.also_in``, e.g. ``MNIST/raw``); the first folder
    holding all of them wins. Failing that, a bundled copy is used when the package has one
    (saying so in one line on stderr, once per process, when the data directory was chosen, by
    argument or ``$LTH_DATA_DIR``); otherwise the files are fetched with ``downloader`` (unless
    ``download`` is false) into ``spec.folder``. Files are not verified here, only found
    (downloads are verified before they are kept).

    A spec with a ``locator`` (CIFAR-10) is located by it instead; its paths then map
    ``"cifar-10-python.tar.gz"`` to the archive or ``"cifar-10-batches-py"`` to the extracted
    folder.
    """
    root, chosen = _resolve(data_dir)
    if spec.locator is not None:
        return spec.locator(spec, root, downloader if download else None)
    folders = dataset_folders(spec, root)
    searched = [_find_files(folder, spec.files) for folder in folders]
    for found, missing in searched:
        if not missing:
            return found
    folder, missing = folders[0], searched[0][1]
    if spec.bundled is not None:
        bundled_found, bundled_missing = _find_files(BUNDLED_ROOT / spec.bundled, spec.files)
        if not bundled_missing:
            if chosen:
                _note_once(
                    f"lth: note: {missing_from(spec, folders)}; using the copy bundled with lth"
                )
            return bundled_found
    wanted = [
        Wanted(
            f.download_name,
            _sha256_checker(f),
            f"download the files by hand from {spec.urls[0]} into that folder, or point "
            f"--data-dir at a folder holding a {spec.folder}/ subfolder with them",
        )
        for f in missing
    ]
    download_into(
        spec,
        folder,
        _missing_message(spec, folders, missing),
        wanted,
        downloader if download else None,
    )
    found, missing = _find_files(folder, spec.files)
    if missing:  # pragma: no cover - only if the folder is changed under our feet
        raise LTHError(_missing_message(spec, [folder], missing) + " after downloading; retry")
    return found
