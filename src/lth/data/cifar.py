"""CIFAR-10: finding, downloading and safely reading the python-pickle batches.

CIFAR-10 lives in ``<data_dir>/cifar-10/`` (or, as torchvision keeps it, right in
``<data_dir>/``) as the official archive ``cifar-10-python.tar.gz`` (verified by its MD5,
``DatasetSpec.archive_md5``, and read without extracting it) or as its extracted folder
``cifar-10-batches-py/`` (validated by its structure: the six pickled batches, their shapes,
dtypes, counts and labels). Missing both, the archive is downloaded. The batches are unpickled
with a restricted unpickler that only builds dicts, lists, bytes and numpy arrays, and their
labels' types and lengths are checked before they are converted.
"""

from __future__ import annotations

import _codecs
import hashlib
import io
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from lth.errors import LTHError

from .files import (
    FIX_HINT,
    Downloader,
    Wanted,
    dataset_folders,
    download_into,
    missing_from,
    one_line,
    read_bytes,
)
from .specs import DatasetSpec, RawArrays, register_dataset

__all__ = ["CIFAR10"]

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/"
_CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"  # of the official archive
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
    return LTHError(f"CIFAR-10 {what} {problem}; {FIX_HINT}")


def _unpickle_cifar_batch(raw: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """``(data (N, 3, 32, 32) uint8, labels (N,) int64)`` of one pickled batch, validated.

    ``what`` names the batch in messages (``file <path>`` or ``archive <path> member <name>``).
    """
    try:
        batch = _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except EOFError:
        raise _cifar_fail(what, "cannot be unpickled (it is truncated)") from None
    except Exception as e:  # damaged pickles raise nearly any exception type
        raise _cifar_fail(what, f"cannot be unpickled ({one_line(e)})") from None
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
    # Types and lengths are checked before anything is converted: a few KB of pickle can hold
    # lists of lists that numpy would expand to gigabytes.
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise _cifar_fail(
                what,
                f"holds labels of dtype {labels.dtype} and shape {labels.shape}, "
                "expected a list of integers",
            )
    elif isinstance(labels, list | tuple):
        for value in labels:
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise _cifar_fail(
                    what, f"holds a label of type {type(value).__name__}, expected integers"
                )
    else:
        raise _cifar_fail(
            what, f"holds labels of type {type(labels).__name__}, expected a list of integers"
        )
    if len(labels) != data.shape[0]:
        raise _cifar_fail(
            what, f"holds {data.shape[0]} images but {len(labels)} labels; they must match"
        )
    if isinstance(labels, np.ndarray):
        low, high = int(labels.min()), int(labels.max())
    else:
        low, high = min(labels), max(labels)
    if low < 0 or high > 9:
        bad = low if low < 0 else high
        raise _cifar_fail(what, f"holds label {bad}, but labels must lie in 0..9")
    images = np.ascontiguousarray(data).reshape(-1, 3, 32, 32)  # R, G, B planes, row-major
    return images, np.asarray(labels, dtype=np.int64)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify_cifar_archive(spec: DatasetSpec, path: Path) -> None:
    try:
        md5 = _md5(path)
    except OSError as e:
        raise LTHError(
            f"cannot read {path}: {one_line(e.strerror or e)}; check its permissions"
        ) from None
    if md5 != spec.archive_md5:
        raise LTHError(
            f"CIFAR-10 archive {path} does not match the official checksum (md5 {md5}, expected "
            f"{spec.archive_md5}), so it is damaged or not the official file; {FIX_HINT}"
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
                        f"{FIX_HINT}"
                    )
                stream = tar.extractfile(member)
                contents[name] = stream.read() if stream is not None else b""
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise LTHError(
            f"CIFAR-10 archive {path} is not a valid tar.gz file or is damaged ({one_line(e)}); "
            f"{FIX_HINT}"
        ) from None
    missing = [f"{_CIFAR_EXTRACTED}/{n}" for n in _CIFAR_BATCHES if n not in contents]
    if missing:
        raise LTHError(
            f"CIFAR-10 archive {path} lacks {', '.join(missing)}; it is not the official "
            f"archive; {FIX_HINT}"
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
        _verify_cifar_archive(spec, archive)
        contents = _read_cifar_archive(archive)
        names = {n: f"archive {archive} member {_CIFAR_EXTRACTED}/{n}" for n in _CIFAR_BATCHES}
        for n in _CIFAR_BATCHES:
            batches[n] = _unpickle_cifar_batch(contents.pop(n), names[n])
    else:
        folder = paths[_CIFAR_EXTRACTED]
        names = {n: f"file {folder / n}" for n in _CIFAR_BATCHES}
        for n in _CIFAR_BATCHES:
            batches[n] = _unpickle_cifar_batch(read_bytes(folder / n), names[n])
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


def _locate_cifar10(
    spec: DatasetSpec, root: Path, downloader: Downloader | None
) -> dict[str, Path]:
    """``{"cifar-10-batches-py": dir}`` or ``{"cifar-10-python.tar.gz": file}`` in the dataset
    folder ``root / spec.folder``, or else in ``root`` itself (torchvision's layout).

    In each folder, a complete extracted folder is preferred (no decompression), then the
    archive; missing everywhere, the archive is downloaded into the dataset folder with
    ``downloader`` (None: downloading is not allowed).
    """
    folders = dataset_folders(spec, root)
    lacking = []  # what incomplete extracted folders lack, for the message
    for folder in folders:
        extracted = folder / _CIFAR_EXTRACTED
        absent = [n for n in _CIFAR_BATCHES if not (extracted / n).is_file()]
        if extracted.is_dir() and not absent:
            return {_CIFAR_EXTRACTED: extracted}
        if (folder / _CIFAR_ARCHIVE).is_file():
            return {_CIFAR_ARCHIVE: folder / _CIFAR_ARCHIVE}
        if extracted.is_dir():
            lacking.append(f"{extracted}/ lacks {', '.join(absent)}")
    folder = folders[0]
    message = f"{missing_from(spec, folders)}: {_CIFAR_EXPECTED}"
    if lacking:
        message += f" ({'; '.join(lacking)})"

    def verify(path: Path, url: str) -> None:
        md5 = _md5(path)
        if md5 != spec.archive_md5:
            raise LTHError(
                f"checksum of the file downloaded from {url} does not match (md5 {md5}, "
                f"expected {spec.archive_md5})"
            )

    by_hand = (
        f"download it by hand from {spec.urls[0]}{_CIFAR_ARCHIVE} into that folder, or point "
        f"--data-dir at a folder holding a {spec.folder}/ subfolder with it"
    )
    download_into(spec, folder, message, [Wanted(_CIFAR_ARCHIVE, verify, by_hand)], downloader)
    return {_CIFAR_ARCHIVE: folder / _CIFAR_ARCHIVE}


#: The CIFAR-10 spec, registered as ``"cifar10"``.
CIFAR10 = register_dataset(
    DatasetSpec(
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
        archive_md5=_CIFAR_MD5,
        also_in=(".",),
    )
)
