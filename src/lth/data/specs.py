"""The dataset registry: what each dataset is made of, and the specs of the IDX datasets.

The registry :data:`DATASETS` maps a dataset name to a :class:`DatasetSpec` that says which files
make up the dataset, their checksums, where to download them and how to turn them into arrays
(its ``loader``). MNIST and Fashion-MNIST, four IDX files each, are registered here; CIFAR-10 in
:mod:`lth.data.cifar`. To add a dataset, build a spec and pass it to :func:`register_dataset`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lth.errors import LTHError
from lth.registry import Registry

from .files import FIX_HINT, Downloader, read_idx

__all__ = [
    "DATASETS",
    "DataFile",
    "DatasetSpec",
    "Loader",
    "Locator",
    "RawArrays",
    "dataset_names",
    "get_spec",
    "register_dataset",
]


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
# A locator finds (and downloads, when given a downloader) a dataset whose files do not fit the
# DataFile model: (spec, data directory, downloader or None) -> {key: path}, what its loader reads.
Locator = Callable[["DatasetSpec", Path, "Downloader | None"], dict[str, Path]]


@dataclass(frozen=True)
class DatasetSpec:
    """Everything needed to find, fetch, verify and load one dataset.

    To add a dataset, build a spec (with a ``loader`` for its file format) and pass it to
    :func:`register_dataset`.
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
    augmentation: str | None = None  # name in lth.data.augment.AUGMENTATIONS of its standard one
    archive_md5: str | None = None  # MD5 of the dataset's archive, for a locator that uses one
    # other subfolders of the data directory that may hold the same files, as torchvision lays
    # them out (e.g. "MNIST/raw"; "." for the data directory itself), looked in after ``folder``
    also_in: tuple[str, ...] = ()


#: The registered datasets by canonical name, in registration order.
DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", unknown="unknown {kind} {name!r}; use one of: {names}"
)


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under ``spec.name``; its name and aliases must be new."""
    taken = {_key(n): s.name for s in DATASETS.values() for n in (s.name, *s.aliases)}
    for n in (spec.name, *spec.aliases):
        if _key(n) in taken:
            raise LTHError(
                f"cannot register dataset {spec.name!r}: the name {n!r} is already taken by "
                f"{taken[_key(n)]!r}"
            )
    return DATASETS.add(spec.name, spec, spec.title)


def dataset_names() -> list[str]:
    """Canonical names of the registered datasets, in registry order."""
    return DATASETS.names()


def get_spec(name: str) -> DatasetSpec:
    """The spec for ``name`` (case-insensitive; ``-`` and ``_`` are interchangeable)."""
    if not isinstance(name, str):
        raise LTHError(f"dataset name must be a string, got {name!r}; use one of: {_valid()}")
    key = _key(name)
    if key in DATASETS:
        return DATASETS[key]
    for spec in DATASETS.values():
        if key in {_key(a) for a in spec.aliases}:
            return spec
    return DATASETS.lookup(name)  # unknown: a one-line LTHError listing the choices


def _valid() -> str:
    return ", ".join(dataset_names())


# --------------------------------------------------------------------------------------------
# The IDX datasets: MNIST and Fashion-MNIST
# --------------------------------------------------------------------------------------------


def _load_idx_dataset(spec: DatasetSpec, paths: Mapping[str, Path]) -> RawArrays:
    """Loader for the four-file IDX layout of MNIST and Fashion-MNIST.

    Each file's header must declare the spec's shape (checked before its data is decompressed),
    its content must match the spec's checksum, and every label must be below ``num_classes``.
    """
    if len(spec.files) != 4:
        raise ValueError(f"IDX dataset spec {spec.name} must list exactly 4 files")
    _, height, width = spec.input_shape
    shapes = (
        (spec.train_size, height, width),
        (spec.train_size,),
        (spec.test_size, height, width),
        (spec.test_size,),
    )
    train_x, train_y, test_x, test_y = (
        read_idx(paths[f.name], sha256=f.sha256, shape=shape)
        for f, shape in zip(spec.files, shapes, strict=True)
    )
    for f, y in ((spec.files[1], train_y), (spec.files[3], test_y)):
        if y.size and int(y.max()) >= spec.num_classes:
            raise LTHError(
                f"{spec.title} file {paths[f.name]} holds label {int(y.max())}, but the dataset "
                f"has {spec.num_classes} classes; {FIX_HINT}"
            )
    return RawArrays(
        train_x=train_x[:, None],
        train_y=train_y.astype(np.int64),
        test_x=test_x[:, None],
        test_y=test_y.astype(np.int64),
    )


def _mnist_like(sha256: Sequence[str], **fields: object) -> DatasetSpec:
    """A spec in MNIST's format: four IDX files (their checksums in ``sha256``, in the order
    train images, train labels, test images, test labels) of 60,000 + 10,000 28x28 grey images
    in 10 classes; ``fields`` give the rest of the spec."""
    names = (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
    return DatasetSpec(
        files=tuple(DataFile(n, s) for n, s in zip(names, sha256, strict=True)),
        num_classes=10,
        input_shape=(1, 28, 28),
        train_size=60000,
        test_size=10000,
        loader=_load_idx_dataset,
        **fields,  # type: ignore[arg-type]
    )


register_dataset(
    _mnist_like(
        (
            "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        ),
        name="mnist",
        title="MNIST",
        folder="mnist",
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/",),
        mean=(0.1307,),
        std=(0.3081,),
        bundled="mnist",
        also_in=("MNIST/raw",),
    )
)
register_dataset(
    _mnist_like(
        (
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        ),
        name="fashion_mnist",
        title="Fashion-MNIST",
        folder="fashion-mnist",
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        mean=(0.2860,),
        std=(0.3530,),
        aliases=("fashion-mnist", "fashionmnist"),
        also_in=("FashionMNIST/raw",),
    )
)
