"""Tests for lth.data on the real MNIST / Fashion-MNIST files (no network is ever used)."""

from __future__ import annotations

import dataclasses
import gzip
import shutil
import struct
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

import lth
from conftest import TEST_DATA, assert_one_line, real_data
from lth.data import (
    DATASETS,
    Dataset,
    dataset_from_tensors,
    dataset_names,
    get_spec,
    http_download,
    load_dataset,
    locate_files,
    read_idx,
    register_dataset,
    resolve_data_dir,
    split_indices,
)
from lth.errors import LTHError

SHARED_DATA = TEST_DATA
BUNDLED_MNIST = Path(lth.__file__).resolve().parent / "_data" / "mnist"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def _offline_and_isolated(offline_and_isolated):
    """Every test here runs offline and away from the user's cache (see conftest)."""


def mnist_copy(tmp_path: Path, source: Path = BUNDLED_MNIST) -> Path:
    """Copy the four MNIST .gz files into tmp_path/mnist; return that folder."""
    folder = tmp_path / "mnist"
    folder.mkdir(parents=True)
    for name in IDX_FILES:
        shutil.copyfile(source / f"{name}.gz", folder / f"{name}.gz")
    return folder


def rewrite(path: Path, content: bytes) -> None:
    path.write_bytes(gzip.compress(content, compresslevel=1))


def idx_header(magic: int, *dims: int) -> bytes:
    return struct.pack(f">{1 + len(dims)}I", magic, *dims)


def write_zeros_gz(path: Path, header: bytes, mib: int) -> None:
    """``header`` then ``mib`` MiB of zeros, gzipped: a file of a few dozen KB."""
    with gzip.open(path, "wb", compresslevel=9) as f:
        f.write(header)
        for _ in range(mib):
            f.write(bytes(1 << 20))


def raises_within(mib: float, call) -> pytest.ExceptionInfo:
    """``call()`` raises LTHError, and Python's allocations (numpy's included) never exceed
    ``mib`` MiB on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(LTHError) as exc:
            call()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()
    assert peak < mib, f"peak {peak:.0f} MiB before the error: {exc.value}"
    return exc


# --------------------------------------------------------------------------------------------
# Fixtures: each real dataset is loaded once per module.
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_shared() -> Dataset:
    real_data("mnist")
    return load_dataset("mnist", SHARED_DATA, download=False)


@pytest.fixture(scope="module")
def mnist_bundled(tmp_path_factory) -> Dataset:
    empty = tmp_path_factory.mktemp("empty-data-dir")
    return load_dataset("mnist", empty, download=False)


@pytest.fixture(scope="module")
def fashion() -> Dataset:
    real_data("fashion-mnist")
    return load_dataset("fashion-mnist", SHARED_DATA, download=False)


@pytest.fixture(scope="module")
def raw_mnist_train() -> tuple[np.ndarray, np.ndarray]:
    spec = DATASETS["mnist"]
    x = read_idx(BUNDLED_MNIST / "train-images-idx3-ubyte.gz", sha256=spec.files[0].sha256)
    y = read_idx(BUNDLED_MNIST / "train-labels-idx1-ubyte.gz", sha256=spec.files[1].sha256)
    return x, y


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_registry_names_and_aliases():
    assert dataset_names() == ["mnist", "fashion_mnist", "cifar10"]
    assert set(DATASETS) == {"mnist", "fashion_mnist", "cifar10"}
    assert get_spec("fashion-mnist") is DATASETS["fashion_mnist"]
    assert get_spec("Fashion_MNIST") is DATASETS["fashion_mnist"]
    assert get_spec("MNIST") is DATASETS["mnist"]
    assert DATASETS["cifar10"].input_shape == (3, 32, 32)
    for spec in (DATASETS["mnist"], DATASETS["fashion_mnist"]):
        assert spec.num_classes == 10
        assert spec.input_shape == (1, 28, 28)
        assert [f.name for f in spec.files] == list(IDX_FILES)
        assert all(len(f.sha256) == 64 for f in spec.files)
    assert DATASETS["mnist"].urls == ("https://ossci-datasets.s3.amazonaws.com/mnist/",)
    assert DATASETS["mnist"].mean == (0.1307,) and DATASETS["mnist"].std == (0.3081,)
    assert DATASETS["fashion_mnist"].mean == (0.2860,)
    assert DATASETS["fashion_mnist"].std == (0.3530,)


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(LTHError) as exc:
        load_dataset("cifar-100")
    assert_one_line(exc, "cifar-100", "mnist", "fashion_mnist")


# --------------------------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------------------------


def check_mnist(ds: Dataset, raw_x: np.ndarray, raw_y: np.ndarray) -> None:
    assert ds.name == "mnist"
    assert ds.num_classes == 10
    assert ds.input_shape == (1, 28, 28)
    assert ds.sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert ds.train_x.shape == (55000, 1, 28, 28)
    assert ds.val_x.shape == (5000, 1, 28, 28)
    assert ds.test_x.shape == (10000, 1, 28, 28)
    for x in (ds.train_x, ds.val_x, ds.test_x):
        assert x.dtype == torch.float32 and x.device.type == "cpu"
    for y in (ds.train_y, ds.val_y, ds.test_y):
        assert y.dtype == torch.int64 and y.dim() == 1
    full_y = torch.cat([ds.train_y, ds.val_y])
    assert torch.bincount(full_y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    assert torch.bincount(ds.test_y, minlength=10).sum() == 10000
    # tensors are the raw images, normalised, in the order given by the split indices
    assert torch.equal(ds.train_y, torch.from_numpy(raw_y[ds.train_indices.numpy()]).long())
    assert torch.equal(ds.val_y, torch.from_numpy(raw_y[ds.val_indices.numpy()]).long())
    for split_x, idx in ((ds.train_x, ds.train_indices), (ds.val_x, ds.val_indices)):
        for k in (0, 1, len(idx) // 2, len(idx) - 1):
            expected = (torch.from_numpy(raw_x[int(idx[k])]).float() / 255 - 0.1307) / 0.3081
            torch.testing.assert_close(split_x[k, 0], expected)
    assert abs(float(ds.train_x.mean())) < 0.01
    assert abs(float(ds.train_x.std()) - 1.0) < 0.01
    assert abs(float(ds.test_x.mean())) < 0.05
    assert abs(float(ds.test_x.std()) - 1.0) < 0.05


def test_mnist_from_shared_folder(mnist_shared, raw_mnist_train):
    check_mnist(mnist_shared, *raw_mnist_train)


def test_mnist_from_bundled_copy(mnist_bundled, raw_mnist_train):
    check_mnist(mnist_bundled, *raw_mnist_train)


def test_shared_and_bundled_mnist_are_identical(mnist_shared, mnist_bundled):
    for f in ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y", "val_indices"):
        assert torch.equal(getattr(mnist_shared, f), getattr(mnist_bundled, f)), f


def test_raw_mnist_pixel_statistics(raw_mnist_train):
    x, y = raw_mnist_train
    assert x.dtype == np.uint8 and x.shape == (60000, 28, 28)
    assert y.dtype == np.uint8 and y.shape == (60000,)
    assert np.bincount(y, minlength=10).tolist() == MNIST_TRAIN_COUNTS
    counts = np.bincount(x.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256, dtype=np.float64)
    mean = (counts * values).sum() / counts.sum()
    std = np.sqrt((counts * (values - mean) ** 2).sum() / counts.sum())
    assert mean == pytest.approx(33.318, abs=1e-3)
    assert std == pytest.approx(78.567, abs=1e-3)


def test_fashion_mnist_from_shared_folder(fashion):
    assert fashion.name == "fashion_mnist"
    assert fashion.num_classes == 10
    assert fashion.sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert fashion.train_x.shape[1:] == (1, 28, 28)
    assert fashion.train_x.dtype == torch.float32 and fashion.train_y.dtype == torch.int64
    full_y = torch.cat([fashion.train_y, fashion.val_y])
    assert torch.bincount(full_y, minlength=10).tolist() == [6000] * 10
    assert torch.bincount(fashion.test_y, minlength=10).tolist() == [1000] * 10
    assert abs(float(fashion.train_x.mean())) < 0.01
    assert abs(float(fashion.train_x.std()) - 1.0) < 0.01


def test_dataset_is_frozen(mnist_bundled):
    with pytest.raises(dataclasses.FrozenInstanceError):
        mnist_bundled.train_x = None
    assert "mnist" in repr(mnist_bundled) and len(repr(mnist_bundled)) < 300


# --------------------------------------------------------------------------------------------
# Validation split
# --------------------------------------------------------------------------------------------


def test_val_split_disjoint_and_covering(mnist_bundled):
    train_idx, val_idx = mnist_bundled.train_indices, mnist_bundled.val_indices
    assert len(train_idx) == 55000 and len(val_idx) == 5000
    both = torch.cat([train_idx, val_idx])
    assert torch.equal(torch.sort(both).values, torch.arange(60000))
    assert torch.all(train_idx[1:] > train_idx[:-1])  # original order


def test_val_split_deterministic_per_seed(mnist_bundled, tmp_path):
    again = load_dataset("mnist", tmp_path, val_size=5000, seed=0, download=False)
    assert torch.equal(again.val_indices, mnist_bundled.val_indices)
    assert torch.equal(again.val_x, mnist_bundled.val_x)
    assert torch.equal(again.train_y, mnist_bundled.train_y)
    train_a, val_a = split_indices(60000, 5000, seed=0)
    assert torch.equal(val_a, mnist_bundled.val_indices)
    assert torch.equal(train_a, mnist_bundled.train_indices)
    _, val_b = split_indices(60000, 5000, seed=1)
    assert not torch.equal(val_a, val_b)
    assert len(np.intersect1d(val_a.numpy(), val_b.numpy())) < 1000


def test_split_leaves_global_rng_alone():
    state = torch.get_rng_state()
    split_indices(1000, 100, seed=3)
    dataset_from_tensors(
        "toy", torch.zeros(50, 3), torch.zeros(50, dtype=torch.long), torch.zeros(5, 3),
        torch.zeros(5, dtype=torch.long), val_size=10, seed=4,
    )  # fmt: skip
    assert torch.equal(state, torch.get_rng_state())


def test_val_size_zero(tmp_path):
    ds = load_dataset("mnist", tmp_path, val_size=0, download=False)
    assert ds.sizes == {"train": 60000, "val": 0, "test": 10000}
    assert ds.val_x.shape == (0, 1, 28, 28) and ds.val_x.dtype == torch.float32
    assert ds.val_y.shape == (0,) and ds.val_y.dtype == torch.int64
    assert torch.equal(ds.train_indices, torch.arange(60000))


@pytest.mark.parametrize("val_size", [-1, 60000, 70000, 2.5, True])
def test_bad_val_size(val_size, tmp_path):
    with pytest.raises(LTHError) as exc:
        load_dataset("mnist", tmp_path, val_size=val_size, download=False)
    assert_one_line(exc, "val_size")


def test_bad_seed_and_device(tmp_path):
    with pytest.raises(LTHError) as exc:
        load_dataset("mnist", tmp_path, seed="zero", download=False)
    assert_one_line(exc, "seed")
    with pytest.raises(LTHError) as exc:
        load_dataset("mnist", tmp_path, device="not-a-device", download=False)
    assert_one_line(exc, "not-a-device")
    if not torch.cuda.is_available():
        with pytest.raises(LTHError) as exc:
            load_dataset("mnist", tmp_path, device="cuda", download=False)
        assert_one_line(exc, "cuda")


# --------------------------------------------------------------------------------------------
# dataset_from_tensors
# --------------------------------------------------------------------------------------------


def test_dataset_from_tensors_split_and_types():
    g = torch.Generator().manual_seed(0)
    train_x = torch.randn(100, 3, 4, 4, generator=g, dtype=torch.float64)
    train_y = torch.arange(100, dtype=torch.int32) % 7
    test_x = torch.randn(20, 3, 4, 4, generator=g)
    test_y = torch.arange(20) % 7
    ds = dataset_from_tensors("toy", train_x, train_y, test_x, test_y, val_size=30, seed=5)
    assert ds.name == "toy" and ds.num_classes == 7 and ds.input_shape == (3, 4, 4)
    assert ds.sizes == {"train": 70, "val": 30, "test": 20}
    assert ds.train_x.dtype == torch.float32 and ds.train_y.dtype == torch.int64
    assert ds.mean is None and ds.std is None
    train_idx, val_idx = split_indices(100, 30, seed=5)
    assert torch.equal(ds.val_indices, val_idx) and torch.equal(ds.train_indices, train_idx)
    assert torch.equal(ds.val_x, train_x[val_idx].float())  # used as-is, no normalisation
    assert torch.equal(ds.train_y, train_y[train_idx].long())
    assert torch.equal(ds.test_x, test_x)
    ds10 = dataset_from_tensors(
        "toy", train_x, train_y, test_x, test_y, val_size=0, seed=0, num_classes=10
    )
    assert ds10.num_classes == 10 and ds10.sizes["val"] == 0


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"train_x": torch.zeros(10, 4, dtype=torch.uint8)}, "float"),
        ({"train_y": torch.zeros(9, dtype=torch.long)}, "labels"),
        ({"test_x": torch.zeros(5, 5)}, "shape"),
        ({"test_y": torch.full((5,), -1)}, "[0, 3)"),
        ({"train_y": torch.zeros(10)}, "integer"),
    ],
)
def test_dataset_from_tensors_rejects_bad_input(change, needle):
    args = {
        "train_x": torch.zeros(10, 4),
        "train_y": torch.arange(10) % 3,
        "test_x": torch.zeros(5, 4),
        "test_y": torch.arange(5) % 3,
    }
    args.update(change)
    with pytest.raises(LTHError) as exc:
        dataset_from_tensors("toy", **args, val_size=2, seed=0, num_classes=3)
    assert_one_line(exc, needle)


# --------------------------------------------------------------------------------------------
# Damaged and missing files
# --------------------------------------------------------------------------------------------


def load_copy(tmp_path: Path) -> None:
    load_dataset("mnist", tmp_path, download=False)


def test_truncated_gzip(tmp_path):
    path = mnist_copy(tmp_path) / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100_000])
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    assert_one_line(exc, path, "gzip")


def test_not_gzip_at_all(tmp_path):
    path = mnist_copy(tmp_path) / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(b"<html>Not Found</html>")
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    assert_one_line(exc, path, "gzip")


def test_truncated_payload(tmp_path):
    path = mnist_copy(tmp_path) / "train-images-idx3-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    rewrite(path, content[: 16 + 1000])
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    assert_one_line(exc, path, "truncated", "47040000", "1000")


def test_trailing_data(tmp_path):
    path = mnist_copy(tmp_path) / "train-labels-idx1-ubyte.gz"
    rewrite(path, gzip.decompress(path.read_bytes()) + b"\x00\x01")
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    assert_one_line(exc, path, "trailing")


def test_wrong_magic(tmp_path):
    path = mnist_copy(tmp_path) / "t10k-images-idx3-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[0:4] = b"\x12\x34\x56\x78"
    rewrite(path, bytes(content))
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    assert_one_line(exc, path, "magic", "0x12345678")


@pytest.mark.parametrize(
    "name, magic",
    [
        ("train-labels-idx1-ubyte", 0x00000803),  # says 3 dims: 8 label bytes read as dims
        ("t10k-images-idx3-ubyte", 0x00000801),  # says 1 dim: the rest looks like extra data
        ("t10k-labels-idx1-ubyte", 0x3C68746D),  # "<htm"
    ],
)
def test_wrong_magic_says_not_an_idx_file(tmp_path, name, magic):
    path = mnist_copy(tmp_path) / f"{name}.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[0:4] = struct.pack(">I", magic)
    rewrite(path, bytes(content))
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    msg = assert_one_line(exc, path, "not an IDX", f"magic 0x{magic:08X}")
    assert "truncated" not in msg and "trailing" not in msg


def test_idx_header_is_checked_against_the_spec_before_decompressing(tmp_path):
    """A 64 KB .gz whose header declares 2,000,000 images is refused before it is inflated."""
    path = mnist_copy(tmp_path) / "train-images-idx3-ubyte.gz"
    write_zeros_gz(path, idx_header(0x803, 2_000_000, 28, 28), mib=64)
    assert path.stat().st_size < 200_000
    exc = raises_within(16, lambda: load_copy(tmp_path))
    assert_one_line(exc, path, "(2000000, 28, 28)", "(60000, 28, 28)")


def test_read_idx_caps_the_declared_size(tmp_path):
    path = tmp_path / "huge-idx3-ubyte.gz"
    write_zeros_gz(path, idx_header(0x803, 100_000, 100, 100), mib=64)
    exc = raises_within(16, lambda: read_idx(path))
    assert_one_line(exc, path, "1000000000 bytes", "limit")
    labels = BUNDLED_MNIST / "t10k-labels-idx1-ubyte.gz"
    with pytest.raises(LTHError) as exc:
        read_idx(labels, max_bytes=9999)
    assert_one_line(exc, labels, "10000 bytes", "9999")
    with pytest.raises(LTHError) as exc:
        read_idx(labels, shape=(60000,))
    assert_one_line(exc, labels, "(10000,)", "(60000,)")
    assert read_idx(labels, shape=(10000,), max_bytes=10000).shape == (10000,)


def test_flipped_byte_fails_checksum(tmp_path):
    path = mnist_copy(tmp_path) / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[5000] ^= 1  # still a valid label, so only the checksum can notice
    rewrite(path, bytes(content))
    with pytest.raises(LTHError) as exc:
        load_copy(tmp_path)
    assert_one_line(exc, path, "checksum", "does not match")


def test_read_idx_checksum_argument(tmp_path):
    spec = DATASETS["mnist"]
    path = BUNDLED_MNIST / "t10k-labels-idx1-ubyte.gz"
    labels = read_idx(path, sha256=spec.files[3].sha256)
    assert labels.shape == (10000,) and labels.dtype == np.uint8 and labels.flags.writeable
    with pytest.raises(LTHError) as exc:
        read_idx(path, sha256=spec.files[1].sha256)
    assert_one_line(exc, path, "checksum")
    with pytest.raises(LTHError) as exc:
        read_idx(tmp_path / "nope.gz")
    assert_one_line(exc, tmp_path / "nope.gz")


def test_uncompressed_files_accepted(tmp_path, mnist_bundled):
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name in IDX_FILES:
        (folder / name).write_bytes(gzip.decompress((BUNDLED_MNIST / f"{name}.gz").read_bytes()))
    paths = locate_files(DATASETS["mnist"], tmp_path, download=False)
    assert all(p.parent == folder and p.suffix != ".gz" for p in paths.values())
    ds = load_dataset("mnist", tmp_path, download=False)
    assert torch.equal(ds.train_x, mnist_bundled.train_x)
    assert torch.equal(ds.test_y, mnist_bundled.test_y)


def test_mnist_falls_back_to_bundled_copy(tmp_path):
    (tmp_path / "mnist").mkdir()
    shutil.copyfile(BUNDLED_MNIST / "t10k-labels-idx1-ubyte.gz", tmp_path / "mnist" / "x.gz")
    paths = locate_files(DATASETS["mnist"], tmp_path, download=True)
    assert all(p.parent == BUNDLED_MNIST for p in paths.values())


def test_missing_files_without_download(tmp_path):
    with pytest.raises(LTHError) as exc:
        load_dataset("fashion_mnist", tmp_path, download=False)
    assert_one_line(exc, tmp_path / "fashion-mnist", "--data-dir", *IDX_FILES)


def test_offline_download_failure(tmp_path):
    def offline(url, dest):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    with pytest.raises(LTHError) as exc:
        load_dataset("fashion-mnist", tmp_path, downloader=offline)
    folder = tmp_path / "fashion-mnist"
    assert_one_line(exc, folder, "--data-dir", "train-images-idx3-ubyte.gz", "download")
    assert not folder.exists()  # no partial files nor an empty folder left behind


def test_offline_guard_turns_the_default_downloader_off(tmp_path, monkeypatch):
    """The fixture sets LTH_OFFLINE=1: the default downloader refuses in one line, no network."""
    with pytest.raises(LTHError) as exc:
        load_dataset("fashion_mnist", tmp_path)
    assert_one_line(exc, tmp_path / "fashion-mnist", "LTH_OFFLINE", "train-images-idx3-ubyte.gz")
    assert not (tmp_path / "fashion-mnist").exists()
    with pytest.raises(LTHError) as exc:
        http_download("https://example.invalid/x.gz", tmp_path / "x.gz")
    assert_one_line(exc, "https://example.invalid/x.gz", "LTH_OFFLINE=1")
    assert not (tmp_path / "x.gz").exists()
    monkeypatch.setenv("LTH_OFFLINE", "0")  # "0" turns the guard off (a file:// URL: no network)
    source = tmp_path / "source"
    source.write_bytes(b"content")
    http_download(source.as_uri(), tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == b"content"


def test_register_dataset():
    spec = dataclasses.replace(DATASETS["mnist"], name="mnist_copy", aliases=("mnist-2",))
    try:
        assert register_dataset(spec) is spec
        assert get_spec("MNIST-2") is spec and dataset_names()[-1] == "mnist_copy"
        with pytest.raises(LTHError) as exc:
            register_dataset(dataclasses.replace(spec, name="other", aliases=("mnist_2",)))
        assert_one_line(exc, "mnist_2", "mnist_copy")
        assert "other" not in DATASETS
    finally:
        DATASETS.pop("mnist_copy", None)


def test_download_into_data_dir(tmp_path, fashion):
    urls = []

    def fake_download(url, dest):
        urls.append(url)
        shutil.copyfile(SHARED_DATA / "fashion-mnist" / url.rsplit("/", 1)[1], dest)

    ds = load_dataset("fashion_mnist", tmp_path, downloader=fake_download)
    base = DATASETS["fashion_mnist"].urls[0]
    assert sorted(urls) == sorted(base + f"{name}.gz" for name in IDX_FILES)
    folder = tmp_path / "fashion-mnist"
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{n}.gz" for n in IDX_FILES)
    assert torch.equal(ds.train_y, fashion.train_y)
    assert torch.equal(ds.test_x, fashion.test_x)


def test_download_of_bad_content_is_rejected(tmp_path):
    def bad_download(url, dest):
        dest.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02"))

    with pytest.raises(LTHError) as exc:
        load_dataset("fashion_mnist", tmp_path, downloader=bad_download)
    assert_one_line(exc, tmp_path / "fashion-mnist", "checksum")
    assert not (tmp_path / "fashion-mnist").exists()


def test_data_dir_is_a_file(tmp_path):
    path = tmp_path / "some-file"
    path.write_text("x")
    with pytest.raises(LTHError) as exc:
        load_dataset("mnist", path)
    assert_one_line(exc, path, "not a directory")


def test_data_dir_does_not_exist(tmp_path):
    with pytest.raises(LTHError) as exc:
        load_dataset("mnist", tmp_path / "nowhere")
    assert_one_line(exc, tmp_path / "nowhere", "does not exist")


# --------------------------------------------------------------------------------------------
# Where the data directory comes from
# --------------------------------------------------------------------------------------------


def test_env_var_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setenv("LTH_DATA_DIR", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(tmp_path / "..") == tmp_path / ".."  # explicit argument wins
    # a damaged file in the env folder is used (and reported), proving the folder is read
    path = mnist_copy(tmp_path) / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(LTHError) as exc:
        load_dataset("mnist", download=False)
    assert_one_line(exc, path)
    with pytest.raises(LTHError) as exc:
        load_dataset("fashion_mnist", download=False)
    assert_one_line(exc, tmp_path / "fashion-mnist")


def test_tilde_in_the_data_dir_is_expanded(tmp_path, monkeypatch):
    home = tmp_path / "home"
    mnist_copy(home / "data")
    monkeypatch.setenv("HOME", str(home))
    for given in ("~/data", Path("~/data")):
        paths = locate_files(DATASETS["mnist"], given, download=False)
        assert all(p.parent == home / "data" / "mnist" for p in paths.values())
    monkeypatch.setenv("LTH_DATA_DIR", "~/data")
    assert resolve_data_dir() == home / "data"


def test_env_var_must_be_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("LTH_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(LTHError) as exc:
        resolve_data_dir()
    assert_one_line(exc, "LTH_DATA_DIR", tmp_path / "missing")


def test_default_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert resolve_data_dir() == tmp_path / "lth"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert resolve_data_dir() == Path.home() / ".cache" / "lth"


# --------------------------------------------------------------------------------------------
# Where users already keep data: torchvision's layout, and the bundled MNIST as a fallback
# --------------------------------------------------------------------------------------------


def test_torchvision_layout_for_fashion_mnist(tmp_path, fashion):
    """torchvision keeps ROOT/FashionMNIST/raw/ with each file both gzipped and extracted."""
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    source = real_data("fashion-mnist") / "fashion-mnist"
    for name in IDX_FILES:
        shutil.copyfile(source / f"{name}.gz", raw / f"{name}.gz")
        (raw / name).write_bytes(gzip.decompress((source / f"{name}.gz").read_bytes()))
    paths = locate_files(DATASETS["fashion_mnist"], tmp_path, download=False)
    assert paths == {name: raw / name for name in IDX_FILES}  # the extracted ones: faster
    ds = load_dataset("fashion_mnist", tmp_path, download=False)
    for f in ("train_x", "train_y", "val_x", "test_x", "test_y"):
        assert torch.equal(getattr(ds, f), getattr(fashion, f)), f
    ours = tmp_path / "fashion-mnist"  # lth's own folder, when complete, comes first
    ours.mkdir()
    for name in IDX_FILES:
        shutil.copyfile(source / f"{name}.gz", ours / f"{name}.gz")
    paths = locate_files(DATASETS["fashion_mnist"], tmp_path, download=False)
    assert all(p.parent == ours for p in paths.values())


def test_torchvision_layout_for_mnist(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.parent.mkdir()
    mnist_copy(tmp_path / "elsewhere").rename(raw)
    paths = locate_files(DATASETS["mnist"], tmp_path, download=False)
    assert all(p.parent == raw for p in paths.values())  # not the bundled copy


def test_torchvision_layout_is_verified_like_ours(tmp_path):
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    source = real_data("fashion-mnist") / "fashion-mnist"
    for name in IDX_FILES:
        shutil.copyfile(source / f"{name}.gz", raw / f"{name}.gz")
    path = raw / "train-labels-idx1-ubyte.gz"
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[5000] ^= 1
    rewrite(path, bytes(content))
    with pytest.raises(LTHError) as exc:
        load_dataset("fashion_mnist", tmp_path, download=False)
    assert_one_line(exc, path, "checksum")
    path.unlink()  # incomplete: the message names both places looked in
    with pytest.raises(LTHError) as exc:
        load_dataset("fashion_mnist", tmp_path, download=False)
    assert_one_line(exc, tmp_path / "fashion-mnist", raw, "--data-dir")


def test_explicit_data_dir_without_mnist_says_the_bundled_copy_is_used(
    tmp_path, monkeypatch, capsys
):
    paths = locate_files(DATASETS["mnist"], tmp_path, download=False)
    assert all(p.parent == BUNDLED_MNIST for p in paths.values())
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path / "mnist") in err and "bundled" in err, err
    locate_files(DATASETS["mnist"], tmp_path, download=False)
    assert capsys.readouterr().err == ""  # said once
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("LTH_DATA_DIR", str(env))
    locate_files(DATASETS["mnist"], download=False)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(env / "mnist") in err, err
    monkeypatch.delenv("LTH_DATA_DIR")  # the default cache is not a choice: no note
    paths = locate_files(DATASETS["mnist"], download=False)
    assert all(p.parent == BUNDLED_MNIST for p in paths.values())
    assert capsys.readouterr().err == ""
