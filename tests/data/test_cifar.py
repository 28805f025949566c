"""Tests for the CIFAR-10 loader in lth.data, on small files written in the official format.

The official batches hold 10,000 images each; these tests write 20 per batch, as pickled dicts
with the same keys (b"batch_label", b"labels", b"data", b"filenames"), pickled as Python 2 did
(protocol 2, strings as BINSTRING, numpy.core.multiarray._reconstruct), both as an extracted
``cifar-10-batches-py/`` folder and as a ``cifar-10-python.tar.gz`` archive. The archive's MD5
check is pointed at the test archive by registering a copy of the spec with its MD5
(``DatasetSpec.archive_md5``). Downloads use the ``downloader`` parameter; no network is used.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import tempfile
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line
from lth.data import (
    DATASETS,
    dataset_from_tensors,
    dataset_names,
    get_spec,
    load_dataset,
    locate_files,
    split_indices,
)
from lth.errors import LTHError

ROWS = 20  # images per batch in these tests (10,000 in the official files)
TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
BATCHES = (*TRAIN, "test_batch")
ARCHIVE = "cifar-10-python.tar.gz"
EXTRACTED = "cifar-10-batches-py"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)
LABEL_NAMES = [
    b"airplane", b"automobile", b"bird", b"cat", b"deer",
    b"dog", b"frog", b"horse", b"ship", b"truck",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _offline_and_isolated(offline_and_isolated):
    """Every test here runs offline and away from the user's cache (see conftest)."""


# --------------------------------------------------------------------------------------------
# Writing files in the CIFAR-10 format
# --------------------------------------------------------------------------------------------


def make_batches(seed: int = 0, rows: int = ROWS) -> dict[str, dict]:
    """Six batches of random images; image 0 of data_batch_1 is a known colour, image 1 a ramp."""
    rng = np.random.default_rng(seed)
    batches = {}
    for i, name in enumerate(BATCHES):
        x = rng.integers(0, 256, size=(rows, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=rows)]
        label = f"training batch {i + 1} of 5" if name in TRAIN else "testing batch 1 of 1"
        batches[name] = {
            b"batch_label": label.encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"{name}_{k}.png".encode() for k in range(rows)],
        }
    x = batches["data_batch_1"][b"data"]
    x[0, :1024], x[0, 1024:2048], x[0, 2048:] = 255, 0, 128  # R plane, G plane, B plane
    x[1] = np.arange(3072) % 251  # pixel (c, row, col) holds (1024 c + 32 row + col) % 251
    return batches


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 wrote the official batches: str and bytes both as py2 strings."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_string(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def dump(batch: object) -> bytes:
    """``batch`` pickled as the official files are (numpy's names of the time included)."""
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(batch)
    return buffer.getvalue().replace(
        b"numpy._core.multiarray\n_reconstruct", b"numpy.core.multiarray\n_reconstruct"
    )


def test_test_pickles_look_like_the_official_ones():
    content = dump(make_batches()["data_batch_1"])
    assert content.startswith(b"\x80\x02}")  # protocol 2, a dict
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in content
    assert b"U\x04data" in content and b"_codecs" not in content  # py2 strings
    batch = pickle.load(io.BytesIO(content), encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (ROWS, 3072)


def meta(rows: int = ROWS) -> bytes:
    return dump({b"num_cases_per_batch": rows, b"label_names": LABEL_NAMES, b"num_vis": 3072})


def write_folder(
    root: Path, batches: dict, replace: dict[str, bytes] | None = None, parent: str = "cifar-10"
) -> Path:
    """Write ``root/<parent>/cifar-10-batches-py/``; ``replace`` gives raw bytes for some files.

    ``parent`` is lth's ``cifar-10``, or ``""`` for torchvision's layout (right under root)."""
    folder = root / parent / EXTRACTED
    folder.mkdir(parents=True)
    replace = replace or {}
    for name, batch in batches.items():
        (folder / name).write_bytes(replace.get(name, dump(batch)))
    (folder / "batches.meta").write_bytes(meta())
    (folder / "readme.html").write_text("<html></html>")
    return folder


def archive_bytes(batches: dict, replace: dict[str, bytes] | None = None) -> bytes:
    """A tar.gz laid out as the official archive (a folder entry, then its files)."""
    replace = replace or {}
    members = {"batches.meta": meta(), "readme.html": b"<html></html>"}
    members.update({name: replace.get(name, dump(b)) for name, b in batches.items()})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(EXTRACTED)
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        tar.addfile(info)
        for name, content in members.items():
            info = tarfile.TarInfo(f"{EXTRACTED}/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def write_archive(root: Path, content: bytes, parent: str = "cifar-10") -> Path:
    folder = root / parent
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ARCHIVE
    path.write_bytes(content)
    return path


@pytest.fixture
def accept(monkeypatch):
    """``accept(content)`` makes the loader take ``content`` as the official archive."""

    def _accept(content: bytes) -> None:
        spec = dataclasses.replace(
            DATASETS["cifar10"], archive_md5=hashlib.md5(content).hexdigest()
        )
        monkeypatch.setitem(DATASETS, "cifar10", spec)

    return _accept


def raw_arrays(batches: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def xy(names):
        x = np.concatenate([batches[n][b"data"] for n in names]).reshape(-1, 3, 32, 32)
        y = np.concatenate([np.asarray(batches[n][b"labels"]) for n in names]).astype(np.int64)
        return x, y

    return (*xy(TRAIN), *xy(("test_batch",)))


def normalised(x_u8: np.ndarray) -> torch.Tensor:
    m = torch.tensor(MEAN).view(1, 3, 1, 1)
    s = torch.tensor(STD).view(1, 3, 1, 1)
    return (torch.from_numpy(x_u8).float() / 255 - m) / s


def check_dataset(ds, batches: dict, val_size: int, seed: int) -> None:
    train_x, train_y, test_x, test_y = raw_arrays(batches)
    n = 5 * ROWS
    assert ds.name == "cifar10" and ds.num_classes == 10 and ds.input_shape == (3, 32, 32)
    assert ds.sizes == {"train": n - val_size, "val": val_size, "test": ROWS}
    assert ds.mean == MEAN and ds.std == STD and ds.augmentation == "crop_flip"
    train_idx, val_idx = split_indices(n, val_size, seed)
    assert torch.equal(ds.train_indices, train_idx) and torch.equal(ds.val_indices, val_idx)
    for x in (ds.train_x, ds.val_x, ds.test_x):
        assert x.dtype == torch.float32 and x.shape[1:] == (3, 32, 32) and x.is_contiguous()
    for y in (ds.train_y, ds.val_y, ds.test_y):
        assert y.dtype == torch.int64 and y.dim() == 1
    torch.testing.assert_close(ds.train_x, normalised(train_x[train_idx.numpy()]))
    torch.testing.assert_close(ds.val_x, normalised(train_x[val_idx.numpy()]))
    torch.testing.assert_close(ds.test_x, normalised(test_x))
    assert ds.train_y.tolist() == train_y[train_idx.numpy()].tolist()
    assert ds.val_y.tolist() == train_y[val_idx.numpy()].tolist()
    assert ds.test_y.tolist() == test_y.tolist()


# --------------------------------------------------------------------------------------------
# Registry and the Dataset field
# --------------------------------------------------------------------------------------------


def test_registry_entry():
    spec = DATASETS["cifar10"]
    assert "cifar10" in dataset_names()
    for name in ("cifar10", "cifar-10", "CIFAR-10", "Cifar10", "cifar_10"):
        assert get_spec(name) is spec
    assert spec.title == "CIFAR-10" and spec.folder == "cifar-10"
    assert spec.input_shape == (3, 32, 32) and spec.num_classes == 10
    assert (spec.train_size, spec.test_size) == (50000, 10000)
    assert spec.mean == MEAN and spec.std == STD
    assert spec.augmentation == "crop_flip"
    assert spec.urls[0] + ARCHIVE == URL
    assert spec.archive_md5 == OFFICIAL_MD5
    assert DATASETS["mnist"].augmentation is None
    assert DATASETS["fashion_mnist"].augmentation is None


def test_augmentation_field_of_tensor_datasets():
    args = (torch.zeros(10, 3, 4, 4), torch.arange(10) % 2, torch.zeros(4, 3, 4, 4))
    ds = dataset_from_tensors("toy", *args, torch.arange(4) % 2, val_size=2)
    assert ds.augmentation is None
    ds = dataset_from_tensors(
        "toy", *args, torch.arange(4) % 2, val_size=2, augmentation="crop_flip"
    )
    assert ds.augmentation == "crop_flip"
    with pytest.raises(LTHError) as exc:
        dataset_from_tensors("toy", *args, torch.arange(4) % 2, val_size=2, augmentation="mixup")
    assert_one_line(exc, "mixup", "crop_flip")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def test_load_from_extracted_folder(tmp_path):
    batches = make_batches()
    write_folder(tmp_path, batches)
    ds = load_dataset("cifar10", tmp_path, val_size=10, seed=3, download=False)
    check_dataset(ds, batches, val_size=10, seed=3)


def test_channel_order_and_pixel_layout(tmp_path):
    batches = make_batches()
    write_folder(tmp_path, batches)
    ds = load_dataset("cifar-10", tmp_path, val_size=0, download=False)
    red, green, blue = ds.train_x[0]
    expected = [(1.0 - MEAN[0]) / STD[0], (0.0 - MEAN[1]) / STD[1], (128 / 255 - MEAN[2]) / STD[2]]
    for plane, value in zip((red, green, blue), expected):
        torch.testing.assert_close(plane, torch.full((32, 32), value))
    assert float(red[0, 0]) == pytest.approx(2.0591, abs=1e-4)
    assert float(green[0, 0]) == pytest.approx(-1.9803, abs=1e-4)
    assert float(blue[0, 0]) == pytest.approx(0.2120, abs=1e-4)
    # the ramp image: channel c, row r, column k come from byte 1024 c + 32 r + k of the row
    ramp = ds.train_x[1] * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    c, r, k = torch.meshgrid(torch.arange(3), torch.arange(32), torch.arange(32), indexing="ij")
    torch.testing.assert_close(
        ramp * 255, ((1024 * c + 32 * r + k) % 251).float(), atol=1e-3, rtol=0
    )


def test_load_from_archive_without_extracting(tmp_path, accept):
    batches = make_batches(seed=1)
    content = archive_bytes(batches)
    path = write_archive(tmp_path, content)
    accept(content)
    assert locate_files(DATASETS["cifar10"], tmp_path, download=False) == {ARCHIVE: path}
    ds = load_dataset("cifar10", tmp_path, val_size=7, seed=1, download=False)
    check_dataset(ds, batches, val_size=7, seed=1)
    assert [p.name for p in (tmp_path / "cifar-10").iterdir()] == [ARCHIVE]  # nothing extracted


def test_folder_and_archive_agree(tmp_path, accept):
    batches = make_batches(seed=2)
    write_folder(tmp_path / "a", batches)
    content = archive_bytes(batches)
    write_archive(tmp_path / "b", content)
    accept(content)
    a = load_dataset("cifar10", tmp_path / "a", val_size=5, download=False)
    b = load_dataset("cifar10", tmp_path / "b", val_size=5, download=False)
    for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "val_indices"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f


def test_complete_folder_is_preferred_to_the_archive(tmp_path):
    batches = make_batches()
    folder = write_folder(tmp_path, batches)
    write_archive(tmp_path, b"not even an archive")
    assert locate_files(DATASETS["cifar10"], tmp_path) == {EXTRACTED: folder}
    check_dataset(load_dataset("cifar10", tmp_path, val_size=4), batches, val_size=4, seed=0)


def test_incomplete_folder_falls_back_to_the_archive(tmp_path, accept):
    batches = make_batches()
    folder = write_folder(tmp_path, batches)
    (folder / "data_batch_4").unlink()
    content = archive_bytes(batches)
    path = write_archive(tmp_path, content)
    accept(content)
    assert locate_files(DATASETS["cifar10"], tmp_path, download=False) == {ARCHIVE: path}
    check_dataset(load_dataset("cifar10", tmp_path, val_size=4), batches, val_size=4, seed=0)


def test_located_paths_sit_two_levels_below_the_data_dir(tmp_path, accept):
    """The CLI records ``next(iter(paths.values())).parent.parent`` as the data directory."""
    write_folder(tmp_path / "a", make_batches())
    content = archive_bytes(make_batches())
    write_archive(tmp_path / "b", content)
    for root in (tmp_path / "a", tmp_path / "b"):
        paths = locate_files(get_spec("cifar10"), root, download=False)
        assert len(paths) == 1 and next(iter(paths.values())).parent.parent == root


def test_batches_pickled_by_python_3_are_accepted(tmp_path):
    """Protocol 2 (bytes through _codecs.encode) and protocol 5 (numpy's _frombuffer)."""
    batches = make_batches()
    batches["data_batch_3"][b"batch_label"] = b""  # pickled as a call to bytes()
    replace = {
        "data_batch_1": pickle.dumps(batches["data_batch_1"], protocol=5),
        "data_batch_2": pickle.dumps(batches["data_batch_2"], protocol=2),
        "data_batch_3": pickle.dumps(batches["data_batch_3"], protocol=2),
        "test_batch": pickle.dumps({k.decode(): v for k, v in batches["test_batch"].items()}),
    }
    assert b"_codecs" in replace["data_batch_2"] and b"bytes" in replace["data_batch_3"]
    write_folder(tmp_path, batches, replace)
    check_dataset(load_dataset("cifar10", tmp_path, val_size=3), batches, val_size=3, seed=0)


def test_validation_split(tmp_path):
    batches = make_batches()
    write_folder(tmp_path, batches)
    a = load_dataset("cifar10", tmp_path, val_size=12, seed=0)
    b = load_dataset("cifar10", tmp_path, val_size=12, seed=1)
    assert not torch.equal(a.val_indices, b.val_indices)
    both = torch.cat([a.train_indices, a.val_indices])
    assert torch.equal(torch.sort(both).values, torch.arange(5 * ROWS))
    zero = load_dataset("cifar10", tmp_path, val_size=0)
    assert zero.sizes == {"train": 100, "val": 0, "test": ROWS}
    assert zero.val_x.shape == (0, 3, 32, 32)
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path)  # the default 5000 exceeds these 100 images
    assert_one_line(exc, "val_size", "5000", "--val-size")


def test_cache_and_env_var(tmp_path, monkeypatch):
    batches = make_batches()
    write_folder(tmp_path / "xdg-cache" / "lth", batches)
    check_dataset(load_dataset("cifar10", val_size=2), batches, val_size=2, seed=0)
    other = make_batches(seed=9)
    write_folder(tmp_path / "env", other)
    monkeypatch.setenv("LTH_DATA_DIR", str(tmp_path / "env"))
    check_dataset(load_dataset("cifar10", val_size=2), other, val_size=2, seed=0)


# --------------------------------------------------------------------------------------------
# Damaged folders: every problem is a one-line error naming the file
# --------------------------------------------------------------------------------------------


PWNED = Path(tempfile.gettempdir()) / f"lth-cifar-pwned-{os.getpid()}"


def _evil() -> bytes:
    """A batch whose unpickling would create the folder PWNED, were it allowed."""

    class Evil:
        def __init__(self, path: str):
            self.path = path

        def __reduce__(self):
            return (os.mkdir, (self.path,))

    return dump({b"data": Evil(str(PWNED)), b"labels": [0]})


def _with(name: str, **changes) -> bytes:
    batch = dict(make_batches()[name])
    batch.update({k.encode(): v for k, v in changes.items()})
    return dump(batch)


RNG = np.random.default_rng(5)
CORRUPTIONS = {
    "truncated": (
        lambda: dump(make_batches()["data_batch_3"])[:5000],
        "data_batch_3",
        "truncated",
    ),
    "not a pickle": (lambda: b"<html>404 Not Found</html>", "data_batch_3", "unpickled"),
    "empty file": (lambda: b"", "data_batch_3", "truncated"),
    "forbidden global": (_evil, "data_batch_3", "not allowed"),
    "not a dict": (lambda: dump([1, 2, 3]), "data_batch_3", "expected a dict"),
    "no labels": (
        lambda: dump({b"data": np.zeros((ROWS, 3072), np.uint8)}),
        "test_batch",
        "labels",
    ),
    "wrong shape": (
        lambda: _with("data_batch_2", data=np.zeros((ROWS, 3000), np.uint8)),
        "data_batch_2",
        "(20, 3000)",
    ),
    "three-d data": (
        lambda: _with("data_batch_2", data=np.zeros((ROWS, 3, 1024), np.uint8)),
        "data_batch_2",
        "(N, 3072)",
    ),
    "float data": (
        lambda: _with("data_batch_5", data=RNG.random((ROWS, 3072), dtype=np.float32)),
        "data_batch_5",
        "float32",
    ),
    "int64 data": (
        lambda: _with("data_batch_5", data=np.zeros((ROWS, 3072), np.int64)),
        "data_batch_5",
        "int64",
    ),
    "list data": (lambda: _with("data_batch_5", data=[0] * 3072), "data_batch_5", "numpy array"),
    "labels too few": (
        lambda: _with("data_batch_1", labels=[0] * (ROWS - 1)),
        "data_batch_1",
        "19 labels",
    ),
    "label too large": (
        lambda: _with("test_batch", labels=[10] + [0] * (ROWS - 1)),
        "test_batch",
        "label 10",
    ),
    "negative label": (
        lambda: _with("test_batch", labels=[0] * (ROWS - 1) + [-1]),
        "test_batch",
        "label -1",
    ),
    "string labels": (
        lambda: _with("test_batch", labels=[b"cat"] * ROWS),
        "test_batch",
        "integers",
    ),
    "float labels": (lambda: _with("test_batch", labels=[1.0] * ROWS), "test_batch", "integers"),
    "bool labels": (lambda: _with("test_batch", labels=[True] * ROWS), "test_batch", "integers"),
    "labels not a list": (lambda: _with("test_batch", labels={0: 1}), "test_batch", "integers"),
    "2-d label array": (
        lambda: _with("test_batch", labels=np.zeros((ROWS, 1), np.int64)),
        "test_batch",
        "integers",
    ),
    "short batch": (
        lambda: dump({b"data": np.zeros((ROWS - 2, 3072), np.uint8), b"labels": [0] * (ROWS - 2)}),
        "data_batch_4",
        "18 images",
    ),
    "empty batch": (
        lambda: dump({b"data": np.zeros((0, 3072), np.uint8), b"labels": []}),
        "data_batch_4",
        "no images",
    ),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_damaged_batch_in_folder(case, tmp_path):
    make, name, needle = CORRUPTIONS[case]
    folder = write_folder(tmp_path, make_batches(), {name: make()})
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, folder / name, needle, "CIFAR-10", "--data-dir")
    assert not PWNED.exists()  # the forbidden global never ran


@pytest.mark.parametrize("case", ["truncated", "forbidden global", "float data", "label too large"])
def test_damaged_batch_in_archive(case, tmp_path, accept):
    make, name, needle = CORRUPTIONS[case]
    content = archive_bytes(make_batches(), {name: make()})
    path = write_archive(tmp_path, content)
    accept(content)
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, path, f"{EXTRACTED}/{name}", needle)
    assert not PWNED.exists()


def test_nested_labels_are_rejected_before_they_are_expanded(tmp_path):
    """20 references to one list of 1,000 references to one list of 1,000 zeros: a few KB of
    pickle, but 160 MB as a numpy array."""
    inner = [0] * 1000
    labels = [[inner] * 1000] * ROWS
    content = _with("data_batch_1", labels=labels)
    assert len(content) < 100_000
    folder = write_folder(tmp_path, make_batches(), {"data_batch_1": content})
    tracemalloc.start()
    try:
        with pytest.raises(LTHError) as exc:
            load_dataset("cifar10", tmp_path, val_size=5, download=False)
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert_one_line(exc, folder / "data_batch_1", "labels", "integers")
    assert peak < 16, f"peak {peak:.0f} MiB before the error"


def test_batch_that_is_a_directory(tmp_path):
    folder = write_folder(tmp_path, make_batches())
    (folder / "test_batch").unlink()
    (folder / "test_batch").mkdir()
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, tmp_path / "cifar-10", f"{EXTRACTED}/ lacks test_batch", "--data-dir")


# --------------------------------------------------------------------------------------------
# Damaged archives
# --------------------------------------------------------------------------------------------


def test_archive_not_matching_the_official_checksum_is_rejected(tmp_path):
    content = archive_bytes(make_batches())  # well-formed, but not the official archive
    path = write_archive(tmp_path, content)
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    md5 = hashlib.md5(content).hexdigest()
    assert_one_line(exc, path, "checksum", md5, OFFICIAL_MD5, "--data-dir")


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda: b"<html>Not Found</html>", "not a valid tar.gz"),
        (lambda: archive_bytes(make_batches())[:3000], "not a valid tar.gz"),
        (lambda: b"\x1f\x8b\x08\x00" + np.random.default_rng(0).bytes(2000), "not a valid tar.gz"),
    ],
    ids=["html", "truncated", "garbage gzip"],
)
def test_corrupt_archive(make, needle, tmp_path, accept):
    content = make()
    path = write_archive(tmp_path, content)
    accept(content)  # even with a matching checksum, a damaged archive is reported
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, path, needle, "--data-dir")


def test_archive_missing_a_batch(tmp_path, accept):
    batches = make_batches()
    del batches["test_batch"]
    content = archive_bytes(batches)
    path = write_archive(tmp_path, content)
    accept(content)
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, path, f"{EXTRACTED}/test_batch", "lacks")


# --------------------------------------------------------------------------------------------
# Missing files and downloading
# --------------------------------------------------------------------------------------------


def test_missing_without_download(tmp_path):
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, tmp_path / "cifar-10", ARCHIVE, EXTRACTED, "--data-dir", "test_batch")
    assert not (tmp_path / "cifar-10").exists()


def test_incomplete_folder_without_download_names_the_missing_batches(tmp_path):
    folder = write_folder(tmp_path, make_batches())
    (folder / "data_batch_2").unlink()
    (folder / "test_batch").unlink()
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    msg = assert_one_line(exc, tmp_path / "cifar-10", "--data-dir")
    assert "data_batch_2, test_batch" in msg


def test_offline(tmp_path):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, downloader=offline)
    folder = tmp_path / "cifar-10"
    assert_one_line(exc, folder, ARCHIVE, EXTRACTED, "download", URL, "--data-dir")
    assert not folder.exists()  # no partial file nor an empty folder left behind


def test_download(tmp_path, accept):
    batches = make_batches(seed=4)
    content = archive_bytes(batches)
    accept(content)
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        assert dest.parent == tmp_path / "cifar-10" and dest.name.endswith(".part")
        dest.write_bytes(content)

    ds = load_dataset("cifar10", tmp_path, val_size=6, downloader=fake_download)
    assert urls == [URL]
    assert [p.name for p in (tmp_path / "cifar-10").iterdir()] == [ARCHIVE]
    assert (tmp_path / "cifar-10" / ARCHIVE).read_bytes() == content
    check_dataset(ds, batches, val_size=6, seed=0)
    again = load_dataset("cifar10", tmp_path, val_size=6, downloader=fake_download)
    assert urls == [URL] and torch.equal(again.train_x, ds.train_x)


def test_download_into_the_cache(tmp_path, accept):
    content = archive_bytes(make_batches())
    accept(content)
    load_dataset("cifar10", val_size=6, downloader=lambda url, dest: dest.write_bytes(content))
    assert (tmp_path / "xdg-cache" / "lth" / "cifar-10" / ARCHIVE).read_bytes() == content


def test_download_of_bad_content_is_rejected(tmp_path):
    def bad_download(url, dest):
        dest.write_bytes(archive_bytes(make_batches()))  # not the official archive

    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, downloader=bad_download)
    assert_one_line(exc, tmp_path / "cifar-10", "checksum", OFFICIAL_MD5, "--data-dir")
    assert not (tmp_path / "cifar-10").exists()


def test_failed_download_keeps_an_existing_folder(tmp_path):
    folder = write_folder(tmp_path, make_batches())
    (folder / "data_batch_1").unlink()

    def offline(url, dest):
        raise urllib.error.URLError("no route to host")

    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, downloader=offline)
    assert_one_line(exc, "data_batch_1", "no route to host")
    assert sorted(p.name for p in (tmp_path / "cifar-10").iterdir()) == [EXTRACTED]


# --------------------------------------------------------------------------------------------
# torchvision's layout: ROOT/cifar-10-batches-py/ or ROOT/cifar-10-python.tar.gz
# --------------------------------------------------------------------------------------------


def test_torchvision_layout(tmp_path, accept):
    batches = make_batches(seed=6)
    folder = write_folder(tmp_path / "a", batches, parent="")
    assert folder == tmp_path / "a" / EXTRACTED
    assert locate_files(DATASETS["cifar10"], tmp_path / "a") == {EXTRACTED: folder}
    check_dataset(load_dataset("cifar10", tmp_path / "a", val_size=4), batches, 4, seed=0)
    content = archive_bytes(batches)
    path = write_archive(tmp_path / "b", content, parent="")
    accept(content)
    assert locate_files(DATASETS["cifar10"], tmp_path / "b") == {ARCHIVE: path}
    check_dataset(load_dataset("cifar10", tmp_path / "b", val_size=4), batches, 4, seed=0)
    ours = write_folder(tmp_path / "a", batches)  # lth's own folder comes first
    assert locate_files(DATASETS["cifar10"], tmp_path / "a") == {EXTRACTED: ours}


def test_torchvision_layout_is_validated_like_ours(tmp_path):
    make, name, needle = CORRUPTIONS["label too large"]
    folder = write_folder(tmp_path, make_batches(), {name: make()}, parent="")
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, folder / name, needle, "CIFAR-10")
    (folder / name).unlink()  # incomplete, no archive: the message names both places
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar10", tmp_path, val_size=5, download=False)
    assert_one_line(exc, tmp_path / "cifar-10", folder, name, "--data-dir")
