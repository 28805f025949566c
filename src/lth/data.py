"""Datasets: locating, downloading, verifying and loading them as tensors.

The registry :data:`DATASETS` maps a dataset name to a :class:`DatasetSpec` that says which files
make up the dataset, their checksums, where to download them and how to turn them into arrays.
:func:`load_dataset` finds the files (see :func:`resolve_data_dir`), verifies them, holds out a
validation split from the training set and returns a frozen :class:`Dataset` of tensors.

Data directory layout: ``<data_dir>/<spec.folder>/<file>``, for example
``<data_dir>/mnist/train-images-idx3-ubyte.gz`` and
``<data_dir>/fashion-mnist/t10k-labels-idx1-ubyte.gz`` (each file may also be stored uncompressed,
without ``.gz``). MNIST is bundled with the package, so it never needs downloading.

CIFAR-10 lives in ``<data_dir>/cifar-10/`` as the official archive ``cifar-10-python.tar.gz``
(verified by its MD5, read without extracting it) or as its extracted folder
``cifar-10-batches-py/`` (validated by its structure: the six pickled batches, their shapes,
dtypes, counts and labels). Missing both, the archive is downloaded. The batches are unpickled
with a restricted unpickler that only builds dicts, lists, bytes and numpy arrays.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import http.client
import io
import os
import pickle
import shutil
import struct
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lth.augment import AUGMENTATIONS
from lth.errors import LTHError

__all__ = [
    "tensors_from_dataset",
    "DATASETS",
    "DataFile",
    "Dataset",
    "DatasetSpec",
    "RawArrays",
    "dataset_from_tensors",
    "dataset_names",
    "default_cache_dir",
    "get_spec",
    "load_dataset",
    "locate_files",
    "read_idx",
    "resolve_data_dir",
    "split_indices",
]

DATA_DIR_ENV = "LTH_DATA_DIR"
_BUNDLED_ROOT = Path(__file__).resolve().parent / "_data"
_DOWNLOAD_TIMEOUT_S = 60
_GZIP_MAGIC = b"\x1f\x8b"
_FIX_HINT = "delete it and download it again, or point --data-dir elsewhere"
# IDX magic numbers this module reads: unsigned-byte data with 1 (labels) or 3 (images) dims.
_IDX_MAGICS = {0x00000801: "label", 0x00000803: "image"}


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataFile:
    """One file of a dataset as stored on disk.

    ``name`` is the uncompressed file name; the file may be stored as ``name + ".gz"`` or as
    ``name``. ``sha256`` is the checksum of the decompressed content. Downloads fetch
    ``name + ".gz"``.
    """

    name: str
    sha256: str

    @property
    def download_name(self) -> str:
        return self.name + ".gz"

    def candidates(self) -> tuple[str, str]:
        """File names to look for, in order of preference (uncompressed is faster to read)."""
        return (self.name, self.name + ".gz")


@dataclass(frozen=True)
class RawArrays:
    """What a dataset loader returns: verified numpy arrays, before splitting and normalising.

    ``*_x`` are uint8 arrays of shape ``(N, *input_shape)``; ``*_y`` are int64 arrays of shape
    ``(N,)`` with values in ``[0, num_classes)``.
    """

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


# A loader turns the located files (DataFile.name -> path) into verified arrays.
Loader = Callable[["DatasetSpec", Mapping[str, Path]], RawArrays]
# A locator finds (and downloads, when allowed) a dataset whose files do not fit the DataFile
# model: (spec, dataset folder, download) -> {key: path}, the mapping its loader reads.
Locator = Callable[["DatasetSpec", Path, bool], dict[str, Path]]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, fetch, verify and load one dataset.

    To add a dataset, build a spec (with a ``loader`` for its file format) and add it to
    :data:`DATASETS` under ``spec.name``.
    """

    name: str  # canonical registry key, e.g. "fashion_mnist"
    title: str  # human-readable name for messages, e.g. "Fashion-MNIST"
    folder: str  # subfolder of the data directory, e.g. "fashion-mnist"
    files: tuple[DataFile, ...]
    urls: tuple[str, ...]  # base URLs (mirrors) tried in order; a file's URL is base + name
    mean: tuple[float, ...]  # per-channel mean of pixel/255 over the training set
    std: tuple[float, ...]  # per-channel std of pixel/255 over the training set
    num_classes: int
    input_shape: tuple[int, ...]  # (C, H, W)
    train_size: int  # images in the full training set (before the validation split)
    test_size: int
    loader: Loader
    bundled: str | None = None  # folder under lth/_data holding a copy of the files, if any
    aliases: tuple[str, ...] = field(default=())
    # finds the files when they do not fit ``files`` (e.g. an archive or its extracted folder);
    # None: look for ``files`` in the dataset folder and download the missing ones
    locator: Locator | None = None
    augmentation: str | None = None  # name in lth.augment.AUGMENTATIONS of its standard one


def _load_idx_dataset(spec: DatasetSpec, paths: Mapping[str, Path]) -> RawArrays:
    """Loader for the four-file IDX layout of MNIST and Fashion-MNIST."""
    if len(spec.files) != 4:
        raise ValueError(f"IDX dataset spec {spec.name} must list exactly 4 files")
    arrays = [read_idx(paths[f.name], sha256=f.sha256) for f in spec.files]
    names = [paths[f.name] for f in spec.files]
    train_x, train_y, test_x, test_y = arrays
    _, height, width = spec.input_shape
    for path, x, expected_n in (
        (names[0], train_x, spec.train_size),
        (names[2], test_x, spec.test_size),
    ):
        if x.ndim != 3 or x.shape[1:] != (height, width) or x.shape[0] != expected_n:
            raise LTHError(
                f"{spec.title} file {path} holds images of shape {tuple(x.shape)}, expected "
                f"({expected_n}, {height}, {width}); {_FIX_HINT}"
            )
    for path, y, expected_n in (
        (names[1], train_y, spec.train_size),
        (names[3], test_y, spec.test_size),
    ):
        if y.ndim != 1 or y.shape[0] != expected_n:
            raise LTHError(
                f"{spec.title} file {path} holds labels of shape {tuple(y.shape)}, expected "
                f"({expected_n},); {_FIX_HINT}"
            )
        if y.size and int(y.max()) >= spec.num_classes:
            raise LTHError(
                f"{spec.title} file {path} holds label {int(y.max())}, but the dataset has "
                f"{spec.num_classes} classes; {_FIX_HINT}"
            )
    return RawArrays(
        train_x=train_x[:, None],
        train_y=train_y.astype(np.int64),
        test_x=test_x[:, None],
        test_y=test_y.astype(np.int64),
    )


def _idx_files(sha: Sequence[str]) -> tuple[DataFile, ...]:
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    return tuple(DataFile(n, s) for n, s in zip(names, sha, strict=True))


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        title="MNIST",
        folder="mnist",
        files=_idx_files(
            (
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            )
        ),
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        mean=(0.1307,),
        std=(0.3081,),
        num_classes=10,
        input_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        loader=_load_idx_dataset,
        bundled="mnist",
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        title="Fashion-MNIST",
        folder="fashion-mnist",
        files=_idx_files(
            (
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            )
        ),
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        mean=(0.2860,),
        std=(0.3530,),
        num_classes=10,
        input_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        loader=_load_idx_dataset,
        aliases=("fashion-mnist", "fashionmnist"),
    ),
}


def dataset_names() -> list[str]:
    """Canonical names of the registered datasets, in registry order."""
    return list(DATASETS)


def get_spec(name: str) -> DatasetSpec:
    """The spec for ``name`` (case-insensitive; ``-`` and ``_`` are interchangeable)."""
    if not isinstance(name, str):
        raise LTHError(f"dataset name must be a string, got {name!r}; use one of: {_valid()}")
    key = name.strip().lower().replace("-", "_")
    if key in DATASETS:
        return DATASETS[key]
    for spec in DATASETS.values():
        if key in {a.lower().replace("-", "_") for a in spec.aliases}:
            return spec
    raise LTHError(f"unknown dataset {name!r}; use one of: {_valid()}")


def _valid() -> str:
    return ", ".join(dataset_names())


# --------------------------------------------------------------------------------------------
# Reading IDX files
# --------------------------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or type(text).__name__


def _read_bytes(path: Path) -> bytes:
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
            f"cannot read {path}: {_one_line(e.strerror or e)}; check its permissions"
        ) from None


def _read_content(path: Path) -> bytes:
    """The decompressed bytes of ``path`` (gzip detected by suffix or by magic bytes)."""
    raw = _read_bytes(path)
    if path.name.endswith(".gz") or raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise LTHError(
                f"{path} is not a valid gzip file or is damaged ({_one_line(e)}); {_FIX_HINT}"
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
            f"{_FIX_HINT}"
        )
    (magic,) = struct.unpack(">I", data[:4])
    kind = _IDX_MAGICS.get(magic)
    if kind is None:
        raise LTHError(
            f"{path} is not an IDX file of unsigned bytes: magic number 0x{magic:08X}, expected "
            f"0x00000801 (labels) or 0x00000803 (images); {_FIX_HINT}"
        )
    ndim = magic & 0xFF
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise LTHError(
            f"IDX file {path} is truncated: its header needs {header_len} bytes, got "
            f"{len(data)}; {_FIX_HINT}"
        )
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    expected = int(np.prod(dims, dtype=np.int64)) if dims else 0
    got = len(data) - header_len
    if got < expected:
        raise LTHError(
            f"IDX file {path} is truncated: expected {expected} bytes of {kind} data, got {got}; "
            f"{_FIX_HINT}"
        )
    if got > expected:
        raise LTHError(
            f"IDX file {path} has {got - expected} bytes of trailing data after the "
            f"{expected} bytes of {kind} data its header declares; {_FIX_HINT}"
        )
    if sha256 is not None:
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha256.lower():
            raise LTHError(
                f"checksum of {path} does not match: sha256 of its content is {actual}, expected "
                f"{sha256.lower()}; the file is damaged or not the expected one, {_FIX_HINT}"
            )
    array = np.frombuffer(data, dtype=np.uint8, offset=header_len).reshape(dims)
    return array.copy()


# --------------------------------------------------------------------------------------------
# Finding and downloading files
# --------------------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """The per-user cache folder: ``$XDG_CACHE_HOME/lth`` or ``~/.cache/lth``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "lth"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$LTH_DATA_DIR``, else the user cache.

    An explicitly given directory (argument or environment variable) must exist and be a
    directory. The default cache folder need not exist yet (it is created on download).
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


def _download(url: str, dest: Path) -> None:
    """Fetch ``url`` into the file ``dest`` (replaced in tests to stay offline)."""
    with urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response, dest.open("wb") as f:
        shutil.copyfileobj(response, f, length=1 << 20)


def _fetch(spec: DatasetSpec, folder: Path, f: DataFile) -> None:
    """Download one file into ``folder``, verify it, then move it into place atomically."""
    errors = []
    for base in spec.urls:
        url = base + f.download_name
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=folder, prefix=f".{f.download_name}.", suffix=".part"
            )
            os.close(fd)
            tmp = Path(tmp_name)
            _download(url, tmp)
            data = _read_content(tmp)
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise LTHError(f"checksum of the file downloaded from {url} does not match")
            os.replace(tmp, folder / f.download_name)
            return
        except (OSError, http.client.HTTPException, ValueError, LTHError) as e:
            errors.append(f"{url}: {_one_line(e)}")  # URLError is an OSError
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    raise _DownloadFailed("; ".join(errors))


class _DownloadFailed(Exception):
    pass


def _missing_message(spec: DatasetSpec, folder: Path, missing: Sequence[DataFile]) -> str:
    names = ", ".join(f.download_name for f in missing)
    return f"{spec.title} files missing from {folder}: expected {names} (gzip or uncompressed)"


def locate_files(
    spec: DatasetSpec,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
) -> dict[str, Path]:
    """Paths of the dataset's files (``DataFile.name`` -> path), downloading missing ones.

    Looks in ``resolve_data_dir(data_dir) / spec.folder``. If files are missing there, a
    bundled copy is used when the package has one; otherwise they are downloaded (unless
    ``download`` is false) into that folder. Files are not verified here, only found.

    A spec with a ``locator`` (CIFAR-10) is located by it instead; its paths then map
    ``"cifar-10-python.tar.gz"`` to the archive or ``"cifar-10-batches-py"`` to the extracted
    folder, both directly inside the dataset folder.
    """
    root = resolve_data_dir(data_dir)
    folder = root / spec.folder
    if spec.locator is not None:
        return spec.locator(spec, folder, download)
    found, missing = _find_files(folder, spec.files)
    if not missing:
        return found
    if spec.bundled is not None:
        bundled_found, bundled_missing = _find_files(_BUNDLED_ROOT / spec.bundled, spec.files)
        if not bundled_missing:
            return bundled_found
    message = _missing_message(spec, folder, missing)
    if not download:
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
            f"({_one_line(e.strerror or e)}); point --data-dir at a writable folder"
        ) from None
    for f in missing:
        try:
            _fetch(spec, folder, f)
        except _DownloadFailed as e:
            if created:  # leave no empty folder behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise LTHError(
                f"{message}, and downloading {f.download_name} failed ({e}); download the "
                f"files by hand from {spec.urls[0]} into that folder, or point --data-dir at a "
                f"folder holding a {spec.folder}/ subfolder with them"
            ) from None
    found, missing = _find_files(folder, spec.files)
    if missing:  # pragma: no cover - only if the folder is changed under our feet
        raise LTHError(_missing_message(spec, folder, missing) + " after downloading; retry")
    return found


# --------------------------------------------------------------------------------------------
# CIFAR-10: the python-pickle batches, as the official archive or its extracted folder
# --------------------------------------------------------------------------------------------

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
# MD5 of the official archive; a module attribute so that tests can accept their own archives.
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_EXTRACTED = "cifar-10-batches-py"  # the folder the archive holds
_CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST_BATCH = "test_batch"
_CIFAR_BATCHES = (*_CIFAR_TRAIN_BATCHES, _CIFAR_TEST_BATCH)
_CIFAR_EXPECTED = (
    f"expected the archive {_CIFAR_ARCHIVE} or its extracted folder {_CIFAR_EXTRACTED}/ "
    f"holding data_batch_1 to data_batch_5 and test_batch"
)


def _numpy_pickle_globals() -> dict[tuple[str, str], object]:
    """The only globals a CIFAR-10 batch may refer to: what pickles bytes and numpy arrays."""
    import _codecs

    reconstruct = np.empty(0).__reduce__()[0]  # numpy's _reconstruct, whatever its module
    allowed: dict[tuple[str, str], object] = {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        # bytes in protocol-2 pickles written by Python 3 (b"" is pickled as a call to bytes())
        ("_codecs", "encode"): _codecs.encode,
        ("__builtin__", "bytes"): bytes,
        ("builtins", "bytes"): bytes,
    }
    frombuffer = np.empty(1).__reduce_ex__(5)[0]  # arrays in protocol-5 pickles
    if getattr(frombuffer, "__name__", "") == "_frombuffer":
        allowed[("numpy.core.numeric", "_frombuffer")] = frombuffer
        allowed[("numpy._core.numeric", "_frombuffer")] = frombuffer
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings, bytes and numpy arrays, and nothing else."""

    _allowed = _numpy_pickle_globals()

    def find_class(self, module: str, name: str) -> object:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"it refers to {module}.{name}, which is not allowed"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise pickle.UnpicklingError("it uses persistent ids, which are not allowed")


def _cifar_fail(what: str, problem: str) -> LTHError:
    return LTHError(f"CIFAR-10 {what} {problem}; {_FIX_HINT}")


def _unpickle_cifar_batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data (N, 3, 32, 32) uint8, labels (N,) int64)`` of one pickled batch, validated.

    ``what`` names the batch in messages (``file <path>`` or ``archive <path> member <name>``).
    """
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except EOFError:
        raise _cifar_fail(what, "cannot be unpickled (it is truncated)") from None
    except Exception as e:  # damaged pickles raise nearly any exception type
        raise _cifar_fail(what, f"cannot be unpickled ({_one_line(e)})") from None
    if not isinstance(batch, dict):
        raise _cifar_fail(what, f"holds a {type(batch).__name__}, expected a dict")
    found = {}
    for key in ("data", "labels"):
        value = batch.get(key.encode(), batch.get(key))
        if value is None:
            raise _cifar_fail(what, f"has no {key!r} entry")
        found[key] = value
    data, labels = found["data"], found["labels"]
    if not isinstance(data, np.ndarray):
        raise _cifar_fail(what, f"holds data of type {type(data).__name__}, expected a numpy array")
    if data.dtype != np.uint8:
        raise _cifar_fail(what, f"holds data of dtype {data.dtype}, expected uint8")
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise _cifar_fail(what, f"holds data of shape {data.shape}, expected (N, 3072)")
    if data.shape[0] == 0:
        raise _cifar_fail(what, "holds no images")
    try:
        labels = np.asarray(labels)
    except (ValueError, TypeError) as e:
        raise _cifar_fail(
            what, f"holds labels that are not a list of numbers ({_one_line(e)})"
        ) from None
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise _cifar_fail(
            what,
            f"holds labels of dtype {labels.dtype} and shape {labels.shape}, "
            "expected a list of integers",
        )
    if labels.shape[0] != data.shape[0]:
        raise _cifar_fail(
            what, f"holds {data.shape[0]} images but {labels.shape[0]} labels; they must match"
        )
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high > 9:
        bad = low if low < 0 else high
        raise _cifar_fail(what, f"holds label {bad}, but labels must lie in 0..9")
    images = np.ascontiguousarray(data).reshape(-1, 3, 32, 32)  # R, G, B planes, row-major
    return images, labels.astype(np.int64)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_cifar_archive(path: Path) -> None:
    try:
        md5 = _md5(path)
    except OSError as e:
        raise LTHError(
            f"cannot read {path}: {_one_line(e.strerror or e)}; check its permissions"
        ) from None
    if md5 != _CIFAR_MD5:
        raise LTHError(
            f"CIFAR-10 archive {path} does not match the official checksum (md5 {md5}, expected "
            f"{_CIFAR_MD5}), so it is damaged or not the official file; {_FIX_HINT}"
        )


def _read_cifar_archive(path: Path) -> dict[str, bytes]:
    """The six batches' bytes, read straight from the (already verified) archive."""
    wanted = {f"{_CIFAR_EXTRACTED}/{name}": name for name in _CIFAR_BATCHES}
    contents: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name.removeprefix("./"))
                if name is None or name in contents:
                    continue
                if not member.isfile():
                    raise LTHError(
                        f"CIFAR-10 archive {path} member {member.name} is not a regular file; "
                        f"{_FIX_HINT}"
                    )
                stream = tar.extractfile(member)
                contents[name] = stream.read() if stream is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise LTHError(
            f"CIFAR-10 archive {path} is not a valid tar.gz file or is damaged ({_one_line(e)}); "
            f"{_FIX_HINT}"
        ) from None
    missing = [f"{_CIFAR_EXTRACTED}/{n}" for n in _CIFAR_BATCHES if n not in contents]
    if missing:
        raise LTHError(
            f"CIFAR-10 archive {path} lacks {', '.join(missing)}; it is not the official "
            f"archive; {_FIX_HINT}"
        )
    return contents


def _load_cifar10(spec: DatasetSpec, paths: Mapping[str, Path]) -> RawArrays:
    """Loader for CIFAR-10: ``paths`` holds the archive or the extracted folder (see
    :func:`_locate_cifar10`). Every batch is read and validated before anything is returned.

    Every batch must hold ``data`` (uint8, ``(N, 3072)``: the R, G and B planes of 32x32 images)
    and ``N`` labels in 0..9, with the same ``N`` in all six (10,000 in the official files; the
    archive's checksum pins those down, a folder's counts are only checked for consistency).
    """
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if _CIFAR_ARCHIVE in paths:
        archive = paths[_CIFAR_ARCHIVE]
        _verify_cifar_archive(archive)
        contents = _read_cifar_archive(archive)
        names = {n: f"archive {archive} member {_CIFAR_EXTRACTED}/{n}" for n in _CIFAR_BATCHES}
        for n in _CIFAR_BATCHES:
            batches[n] = _unpickle_cifar_batch(contents.pop(n), names[n])
    else:
        folder = paths[_CIFAR_EXTRACTED]
        names = {n: f"file {folder / n}" for n in _CIFAR_BATCHES}
        for n in _CIFAR_BATCHES:
            batches[n] = _unpickle_cifar_batch(_read_bytes(folder / n), names[n])
    first = _CIFAR_BATCHES[0]
    count = batches[first][0].shape[0]
    for n in _CIFAR_BATCHES[1:]:
        if batches[n][0].shape[0] != count:
            raise _cifar_fail(
                names[n],
                f"holds {batches[n][0].shape[0]} images but {first} holds {count}; every batch "
                "must hold the same number",
            )
    train = [batches[n] for n in _CIFAR_TRAIN_BATCHES]
    test_x, test_y = batches[_CIFAR_TEST_BATCH]
    return RawArrays(
        train_x=np.concatenate([x for x, _ in train]),
        train_y=np.concatenate([y for _, y in train]),
        test_x=test_x,
        test_y=test_y,
    )


def _fetch_cifar_archive(spec: DatasetSpec, folder: Path) -> None:
    """Download the archive into ``folder``, verify its MD5, then move it into place."""
    errors = []
    for base in spec.urls:
        url = base + _CIFAR_ARCHIVE
        tmp = None
        try:
            fd, tmp_name = tempfile.mkstemp(
                dir=folder, prefix=f".{_CIFAR_ARCHIVE}.", suffix=".part"
            )
            os.close(fd)
            tmp = Path(tmp_name)
            _download(url, tmp)
            md5 = _md5(tmp)
            if md5 != _CIFAR_MD5:
                raise LTHError(
                    f"checksum of the file downloaded from {url} does not match (md5 {md5}, "
                    f"expected {_CIFAR_MD5})"
                )
            os.replace(tmp, folder / _CIFAR_ARCHIVE)
            return
        except (OSError, http.client.HTTPException, ValueError, LTHError) as e:
            errors.append(f"{url}: {_one_line(e)}")  # URLError is an OSError
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
    raise _DownloadFailed("; ".join(errors))


def _locate_cifar10(spec: DatasetSpec, folder: Path, download: bool) -> dict[str, Path]:
    """``{"cifar-10-batches-py": dir}`` or ``{"cifar-10-python.tar.gz": file}`` in ``folder``.

    A complete extracted folder is preferred (no decompression); otherwise the archive; missing
    both, the archive is downloaded when ``download`` is true.
    """
    extracted = folder / _CIFAR_EXTRACTED
    archive = folder / _CIFAR_ARCHIVE
    absent = [n for n in _CIFAR_BATCHES if not (extracted / n).is_file()]
    if extracted.is_dir() and not absent:
        return {_CIFAR_EXTRACTED: extracted}
    if archive.is_file():
        return {_CIFAR_ARCHIVE: archive}
    message = f"{spec.title} files missing from {folder}: {_CIFAR_EXPECTED}"
    if extracted.is_dir():
        message += f" ({_CIFAR_EXTRACTED}/ lacks {', '.join(absent)})"
    if not download:
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
            f"({_one_line(e.strerror or e)}); point --data-dir at a writable folder"
        ) from None
    try:
        _fetch_cifar_archive(spec, folder)
    except _DownloadFailed as e:
        if created:  # leave no empty folder behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise LTHError(
            f"{message}, and downloading {_CIFAR_ARCHIVE} failed ({e}); download it by hand from "
            f"{spec.urls[0]}{_CIFAR_ARCHIVE} into that folder, or point --data-dir at a folder "
            f"holding a {spec.folder}/ subfolder with it"
        ) from None
    return {_CIFAR_ARCHIVE: archive}


DATASETS["cifar10"] = DatasetSpec(
    name="cifar10",
    title="CIFAR-10",
    folder="cifar-10",
    files=(),  # an archive or its extracted folder: found by the locator
    urls=(_CIFAR_URL,),
    mean=(0.4914, 0.4822, 0.4465),
    std=(0.2470, 0.2435, 0.2616),
    num_classes=10,
    input_shape=(3, 32, 32),
    train_size=50000,
    test_size=10000,
    loader=_load_cifar10,
    aliases=("cifar-10",),
    locator=_locate_cifar10,
    augmentation="crop_flip",
)


# --------------------------------------------------------------------------------------------
# Datasets as tensors
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train/val/test tensors, all on the same device.

    ``*_x`` are float32 of shape ``(N, *input_shape)``; ``*_y`` are int64 of shape ``(N,)``.
    ``train_indices``/``val_indices`` (int64, CPU, sorted) say which images of the full
    training set went to each split. ``mean``/``std`` are the per-channel normalisation
    constants applied, or ``None`` when the tensors were given as-is. ``augmentation`` names
    the dataset's standard training augmentation in :data:`lth.augment.AUGMENTATIONS`
    (``"crop_flip"`` for CIFAR-10), or is ``None`` for none; it is never applied here.
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    train_indices: torch.Tensor
    val_indices: torch.Tensor
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augmentation: str | None = None

    @property
    def sizes(self) -> dict[str, int]:
        """Number of examples per split: ``{"train": ..., "val": ..., "test": ...}``."""
        return {
            "train": int(self.train_y.shape[0]),
            "val": int(self.val_y.shape[0]),
            "test": int(self.test_y.shape[0]),
        }

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, num_classes={self.num_classes}, "
            f"input_shape={self.input_shape}, sizes={self.sizes}, device={self.device})"
        )


def _check_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise LTHError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _check_val_size(val_size: object, n_train: int) -> int:
    val_size = _check_int(val_size, "val_size")
    if val_size < 0 or val_size >= n_train:
        raise LTHError(
            f"val_size {val_size} is out of range: it must be between 0 and {n_train - 1} "
            f"(the training set has {n_train} examples); pass a smaller --val-size"
        )
    return val_size


def _check_device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise LTHError(
            f"invalid device {device!r} ({_one_line(e)}); use e.g. cpu, cuda or cuda:0"
        ) from None
    _to_device(torch.empty(0), dev)  # fail now, before any file is read, if it is unusable
    return dev


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    try:
        return t.to(device)
    except (RuntimeError, AssertionError) as e:
        raise LTHError(
            f"cannot put the data on device {device} ({_one_line(e)}); pick another --device"
        ) from None


def _generator(seed: object) -> torch.Generator:
    """A private CPU generator seeded with ``seed`` (validated)."""
    seed = _check_int(seed, "seed")
    generator = torch.Generator(device="cpu")
    try:
        generator.manual_seed(seed)
    except (RuntimeError, ValueError, OverflowError) as e:
        raise LTHError(
            f"invalid seed {seed} ({_one_line(e)}); use an integer between 0 and 2**63 - 1"
        ) from None
    return generator


def split_indices(n: int, val_size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into sorted ``(train_indices, val_indices)`` (int64, CPU).

    The ``val_size`` validation indices are the first entries of a ``torch.randperm(n)`` drawn
    from a private generator seeded with ``seed``; the global RNG is not touched.
    """
    n = _check_int(n, "n")
    val_size = _check_val_size(val_size, n)
    perm = torch.randperm(n, generator=_generator(seed))
    val_idx = torch.sort(perm[:val_size]).values
    keep = torch.ones(n, dtype=torch.bool)
    keep[val_idx] = False
    train_idx = torch.nonzero(keep, as_tuple=False).squeeze(1)
    return train_idx, val_idx


def _normalise(x_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel (dim 1), as float32."""
    shape = (1, len(mean)) + (1,) * (x_u8.dim() - 2)
    m = torch.tensor(mean, dtype=torch.float32, device=x_u8.device).view(shape)
    s = torch.tensor(std, dtype=torch.float32, device=x_u8.device).view(shape)
    return x_u8.to(torch.float32).div_(255.0).sub_(m).div_(s)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    download: bool = True,
) -> Dataset:
    """Load a registered dataset as normalised tensors on ``device``, with a validation split.

    Files are found as described in :func:`locate_files`, and all of them are read and verified
    before any tensor is built. ``val_size`` training images chosen by ``seed`` (see
    :func:`split_indices`) form the validation set; the rest, in their original order, form the
    training set. Images become float32 ``(x / 255 - mean) / std``; labels int64.
    """
    spec = get_spec(name)
    val_size = _check_val_size(val_size, spec.train_size)
    _generator(seed)  # validate the seed before reading any file
    dev = _check_device(device)
    paths = locate_files(spec, data_dir, download=download)
    raw = spec.loader(spec, paths)
    n_train = int(raw.train_x.shape[0])
    train_idx, val_idx = split_indices(n_train, val_size, seed)
    x_all = torch.from_numpy(raw.train_x)
    y_all = torch.from_numpy(raw.train_y)

    def images(x: torch.Tensor) -> torch.Tensor:
        return _normalise(_to_device(x, dev), spec.mean, spec.std)

    return Dataset(
        name=spec.name,
        num_classes=spec.num_classes,
        input_shape=tuple(spec.input_shape),
        train_x=images(x_all[train_idx]),
        train_y=_to_device(y_all[train_idx], dev),
        val_x=images(x_all[val_idx]),
        val_y=_to_device(y_all[val_idx], dev),
        test_x=images(torch.from_numpy(raw.test_x)),
        test_y=_to_device(torch.from_numpy(raw.test_y), dev),
        train_indices=train_idx,
        val_indices=val_idx,
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        augmentation=spec.augmentation,
    )


def _check_pair(name: str, split: str, x: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise LTHError(f"dataset {name!r}: {split}_x and {split}_y must be torch tensors")
    if not x.is_floating_point():
        raise LTHError(
            f"dataset {name!r}: {split}_x has dtype {x.dtype}, expected a float tensor; "
            f"convert and normalise the images first"
        )
    if x.dim() < 2:
        raise LTHError(
            f"dataset {name!r}: {split}_x has shape {tuple(x.shape)}, expected (N, ...features)"
        )
    if y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        raise LTHError(
            f"dataset {name!r}: {split}_y must be a 1-D integer tensor of class labels, got "
            f"dtype {y.dtype} and shape {tuple(y.shape)}"
        )
    if x.shape[0] != y.shape[0]:
        raise LTHError(
            f"dataset {name!r}: {split}_x has {x.shape[0]} examples but {split}_y has "
            f"{y.shape[0]} labels; they must match"
        )
    return x, y.to(torch.int64)


def tensors_from_dataset(dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Load a map-style dataset of ``(image, label)`` items once into an x and a y tensor."""
    try:
        n = len(dataset)
    except TypeError:
        raise LTHError("the dataset must be map-style (support len() and indexing)") from None
    if n == 0:
        raise LTHError("the dataset is empty")
    xs, ys = [], []
    for i in range(n):
        item = dataset[i]
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise LTHError(f"item {i} of the dataset is not an (image, label) pair")
        xs.append(torch.as_tensor(item[0], dtype=torch.float32))
        ys.append(int(item[1]))
    try:
        x = torch.stack(xs)
    except RuntimeError:
        raise LTHError("the dataset's images do not all have the same shape") from None
    return x, torch.tensor(ys, dtype=torch.int64)


def dataset_from_tensors(
    name: str,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    *,
    val_size: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    augmentation: str | None = None,
) -> Dataset:
    """Build a :class:`Dataset` from user tensors, with the same validation split as
    :func:`load_dataset`.

    ``*_x`` must be float tensors ``(N, *input_shape)``; their values are used as-is (no
    normalisation) but cast to float32. ``*_y`` are integer labels, cast to int64.
    ``num_classes`` defaults to ``max label + 1``; labels must lie in ``[0, num_classes)``.
    ``augmentation`` names the training augmentation to use (a key of
    :data:`lth.augment.AUGMENTATIONS`, e.g. ``"crop_flip"`` for 3-channel images), or ``None``.
    """
    if augmentation is not None and augmentation not in AUGMENTATIONS:
        raise LTHError(
            f"dataset {name!r}: unknown augmentation {augmentation!r}; use one of: "
            f"{', '.join(AUGMENTATIONS)}, or None"
        )
    train_x, train_y = _check_pair(name, "train", train_x, train_y)
    test_x, test_y = _check_pair(name, "test", test_x, test_y)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise LTHError(
            f"dataset {name!r}: train_x examples have shape {tuple(train_x.shape[1:])} but "
            f"test_x examples have shape {tuple(test_x.shape[1:])}; they must match"
        )
    n_train = int(train_x.shape[0])
    if n_train < 1:
        raise LTHError(f"dataset {name!r}: the training set is empty")
    labels = torch.cat([train_y.cpu(), test_y.cpu()])
    low, high = int(labels.min()), int(labels.max())
    if num_classes is None:
        num_classes = high + 1
    num_classes = _check_int(num_classes, "num_classes")
    if num_classes < 1:
        raise LTHError(f"dataset {name!r}: num_classes must be at least 1, got {num_classes}")
    if low < 0 or high >= num_classes:
        raise LTHError(
            f"dataset {name!r}: labels range from {low} to {high}, but they must lie in "
            f"[0, {num_classes}); relabel them or pass a larger num_classes"
        )
    train_idx, val_idx = split_indices(n_train, val_size, seed)
    dev = _check_device(device)

    def put(t: torch.Tensor, idx: torch.Tensor | None = None, float32: bool = False):
        if idx is not None:
            t = t[idx.to(t.device)]
        t = _to_device(t, dev)
        return t.to(torch.float32) if float32 else t

    return Dataset(
        name=name,
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in train_x.shape[1:]),
        train_x=put(train_x, train_idx, float32=True),
        train_y=put(train_y, train_idx),
        val_x=put(train_x, val_idx, float32=True),
        val_y=put(train_y, val_idx),
        test_x=put(test_x, float32=True),
        test_y=put(test_y),
        train_indices=train_idx,
        val_indices=val_idx,
        augmentation=augmentation,
    )
