"""Data files on disk: finding them, downloading missing ones and reading verified IDX files.

Data directory layout: ``<data_dir>/<spec.folder>/<file>``, for example
``<data_dir>/mnist/train-images-idx3-ubyte.gz`` and
``<data_dir>/fashion-mnist/t10k-labels-idx1-ubyte.gz`` (each file may also be stored uncompressed,
without ``.gz``). The data directory is ``--data-dir`` (the ``data_dir`` argument), else
``$LTH_DATA_DIR``, else the per-user cache (see :func:`resolve_data_dir`). MNIST is bundled with
the package (``lth/_data/mnist/``), so it never needs downloading.

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
import os
import shutil
import struct
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
    "OFFLINE_ENV",
    "Downloader",
    "Wanted",
    "default_cache_dir",
    "download_into",
    "http_download",
    "locate_files",
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
_DOWNLOAD_TIMEOUT_S = 60
_GZIP_MAGIC = b"\x1f\x8b"
# IDX magic numbers this module reads: unsigned-byte data with 1 (labels) or 3 (images) dims.
_IDX_MAGICS = {0x00000801: "label", 0x00000803: "image"}

#: ``(url, dest) -> None``: writes the content of ``url`` into the file ``dest``, or raises.
Downloader = Callable[[str, Path], None]


def one_line(text: object) -> str:
    """``text`` (e.g. an exception) as one line, for error messages."""
    return " ".join(str(text).split()) or type(text).__name__


def read_bytes(path: Path) -> bytes:
    """The bytes of ``path``; any problem is a one-line :class:`LTHError` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise LTHError(
            f"file {path} does not exist; check the path or point --data-dir elsewhere"
        ) from None
    except IsADirectoryError:
        raise LTHError(f"{path} is a directory, not a data file; remove or rename it") from None
    except OSError as e:
        raise LTHError(
            f"cannot read {path}: {one_line(e.strerror or e)}; check its permissions"
        ) from None


# --------------------------------------------------------------------------------------------
# Reading IDX files
# --------------------------------------------------------------------------------------------


def _read_content(path: Path) -> bytes:
    """The decompressed bytes of ``path`` (gzip detected by suffix or by magic bytes)."""
    raw = read_bytes(path)
    if path.name.endswith(".gz") or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise LTHError(
                f"{path} is not a valid gzip file or is damaged ({one_line(e)}); {FIX_HINT}"
            ) from None
    return raw


def read_idx(path: str | os.PathLike[str], sha256: str | None = None) -> np.ndarray:
    """Read an IDX file of unsigned bytes (``.gz`` or uncompressed) into a uint8 numpy array.

    Checks the magic number (0x00000801 for labels, 0x00000803 for images), that the payload
    holds exactly as many bytes as the header's dimensions say (no truncation, no trailing data)
    and, when ``sha256`` is given, the SHA-256 of the decompressed content. Any problem raises
    :class:`~lth.errors.LTHError` naming the file. The returned array is writable.
    """
    path = Path(path)
    data = _read_content(path)
    if len(data) < 4:
        raise LTHError(
            f"IDX file {path} is truncated: it holds {len(data)} bytes, too few for a header; "
            f"{FIX_HINT}"
        )
    (magic,) = struct.unpack(">I", data[:4])
    kind = _IDX_MAGICS.get(magic)
    if kind is None:
        raise LTHError(
            f"{path} is not an IDX file of unsigned bytes: magic number 0x{magic:08X}, expected "
            f"0x00000801 (labels) or 0x00000803 (images); {FIX_HINT}"
        )
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise LTHError(
            f"IDX file {path} is truncated: its header needs {header_len} bytes, got "
            f"{len(data)}; {FIX_HINT}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64)) if dims else 0
    got = len(data) - header_len
    if got < expected:
        raise LTHError(
            f"IDX file {path} is truncated: expected {expected} bytes of {kind} data, got {got}; "
            f"{FIX_HINT}"
        )
    if got > expected:
        raise LTHError(
            f"IDX file {path} has {got - expected} bytes of trailing data after the "
            f"{expected} bytes of {kind} data its header declares; {FIX_HINT}"
        )
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise LTHError(
                f"checksum of {path} does not match: sha256 of its content is {actual}, expected "
                f"{sha256.lower()}; the file is damaged or not the expected one, {FIX_HINT}"
            )
    array = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)
    return array.copy()


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
    if data_dir is not None:
        return _check_dir(data_dir, "data directory", "pass --data-dir with an existing folder")
    env = os.environ.get(DATA_DIR_ENV, "")
    if env:
        return _check_dir(
            env,
            f"data directory {DATA_DIR_ENV}",
            f"set {DATA_DIR_ENV} to an existing folder or unset it",
        )
    return default_cache_dir()


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


def _missing_message(spec: DatasetSpec, folder: Path, missing: Sequence[DataFile]) -> str:
    names = ", ".join(f.download_name for f in missing)
    return f"{spec.title} files missing from {folder}: expected {names} (gzip or uncompressed)"


def _sha256_checker(f: DataFile) -> Callable[[Path, str], None]:
    def verify(path: Path, url: str) -> None:
        if hashlib.sha256(_read_content(path)).hexdigest() != f.sha256:
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

    Looks in ``resolve_data_dir(data_dir) / spec.folder``. If files are missing there, a
    bundled copy is used when the package has one; otherwise they are fetched with
    ``downloader`` (unless ``download`` is false) into that folder. Files are not verified
    here, only found (downloads are verified before they are kept).

    A spec with a ``locator`` (CIFAR-10) is located by it instead; its paths then map
    ``"cifar-10-python.tar.gz"`` to the archive or ``"cifar-10-batches-py"`` to the extracted
    folder, both directly inside the dataset folder.
    """
    root = resolve_data_dir(data_dir)
    if spec.locator is not None:
        return spec.locator(spec, root, downloader if download else None)
    folder = root / spec.folder
    found, missing = _find_files(folder, spec.files)
    if not missing:
        return found
    if spec.bundled is not None:
        bundled_found, bundled_missing = _find_files(BUNDLED_ROOT / spec.bundled, spec.files)
        if not bundled_missing:
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
        _missing_message(spec, folder, missing),
        wanted,
        downloader if download else None,
    )
    found, missing = _find_files(folder, spec.files)
    if missing:  # pragma: no cover - only if the folder is changed under our feet
        raise LTHError(_missing_message(spec, folder, missing) + " after downloading; retry")
    return found
