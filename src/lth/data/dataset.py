"""Datasets as tensors: the in-memory :class:`Dataset` with its validation split.

:func:`load_dataset` finds a registered dataset's files (see :func:`lth.data.locate_files`),
has its loader read and verify all of them, holds out a seeded validation split from the
training set and returns a frozen :class:`Dataset` of normalised tensors on a device.
:func:`dataset_from_tensors` builds the same from your own tensors, and
:func:`tensors_from_dataset` turns a map-style dataset into such tensors.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lth.errors import LTHError

from .augment import AUGMENTATIONS
from .files import Downloader, http_download, locate_files, one_line
from .specs import get_spec

__all__ = [
    "Dataset",
    "dataset_from_tensors",
    "load_dataset",
    "split_indices",
    "tensors_from_dataset",
]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A dataset split into train/val/test tensors on one device: what a study trains on.

    Made by ``load_dataset`` (a registered dataset) or ``dataset_from_tensors`` (your own
    tensors); frozen. ``*_x`` are float32 of shape ``(N, *input_shape)``; ``*_y`` are int64
    of shape ``(N,)``. The examples go to the model as they are: ``load_dataset`` normalises
    its datasets (``mean``, ``std``), lth never normalises yours, so give them normalised (the
    test set with the training set's statistics). ``lth run --dataset package.module:function``
    takes one from your code (:mod:`lth.data.user`; docs/guide/data.md, "Your own data").

    Attributes:
        name (str): The dataset's name (``"mnist"``, or the name you gave).
        num_classes (int): Number of classes; every label lies in ``[0, num_classes)``.
        input_shape (tuple[int, ...]): Shape of one example, e.g. ``(1, 28, 28)``.
        train_x (torch.Tensor): Training examples (the full training set minus the
            validation split, in their original order).
        train_y (torch.Tensor): Their labels.
        val_x (torch.Tensor): Validation examples, held out from the training set.
        val_y (torch.Tensor): Their labels.
        test_x (torch.Tensor): Test examples.
        test_y (torch.Tensor): Their labels.
        train_indices (torch.Tensor): Which examples of the full training set went to
            training (int64, CPU, sorted).
        val_indices (torch.Tensor): Which went to validation (int64, CPU, sorted).
        mean (tuple[float, ...] | None): Per-channel normalisation means applied, or ``None``
            when the tensors were given as-is.
        std (tuple[float, ...] | None): Per-channel normalisation standard deviations, or
            ``None``.
        augmentation (str | None): Name of the standard training augmentation in
            ``lth.data.augment.AUGMENTATIONS`` (``"crop_flip"`` for CIFAR-10), or ``None``
            for none; it is never applied here.
        train_raw (torch.Tensor | None): The training images as the files store them (uint8,
            a quarter of the memory), from which ``train_batch`` draws batches; ``None`` for
            tensors given as-is.

    Examples:
        >>> import torch, lth
        >>> data = lth.dataset_from_tensors(
        ...     "toy", torch.rand(10, 3), torch.arange(10) % 2,
        ...     torch.rand(4, 3), torch.tensor([0, 1, 0, 1]), val_size=2)
        >>> data
        Dataset(name='toy', num_classes=2, input_shape=(3,),
                sizes={'train': 8, 'val': 2, 'test': 4}, device=cpu)
        >>> data.val_indices.tolist(), data.train_x.dtype, data.train_y.dtype
        ([1, 4], torch.float32, torch.int64)
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
    train_raw: torch.Tensor | None = None

    def train_batch(self, idx: torch.Tensor) -> torch.Tensor:
        """``train_x[idx]``, bit for bit; gathered as uint8 and normalised after the gather.

        Drawing a batch from the float32 images reads 4 bytes a pixel from memory at random
        rows: on CPUs whose caches do not hold the training set that gather costs as much as a
        layer's product. From ``train_raw`` it reads 1 byte a pixel, and the normalisation
        runs on the batch alone, with the same operations, so the values are identical.
        """
        if self.train_raw is None or self.mean is None or self.std is None:
            return self.train_x.index_select(0, idx)
        return _normalise(self.train_raw.index_select(0, idx), self.mean, self.std)

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
        """The device every tensor of the dataset is on."""
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
            f"invalid device {device!r} ({one_line(e)}); use e.g. cpu, cuda or cuda:0"
        ) from None
    _to_device(torch.empty(0), dev)  # fail now, before any file is read, if it is unusable
    return dev


def _to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    try:
        return t.to(device)
    except (RuntimeError, AssertionError) as e:
        raise LTHError(
            f"cannot put the data on device {device} ({one_line(e)}); pick another --device"
        ) from None


def _generator(seed: object) -> torch.Generator:
    """A private CPU generator seeded with ``seed`` (validated)."""
    seed = _check_int(seed, "seed")
    generator = torch.Generator(device="cpu")
    try:
        generator.manual_seed(seed)
    except (RuntimeError, ValueError, OverflowError) as e:
        raise LTHError(
            f"invalid seed {seed} ({one_line(e)}); use an integer between 0 and 2**63 - 1"
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


@functools.lru_cache(maxsize=16)
def _constants(
    mean: tuple[float, ...], std: tuple[float, ...], dims: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, len(mean)) + (1,) * (dims - 2)
    m = torch.tensor(mean, dtype=torch.float32, device=device).view(shape)
    return m, torch.tensor(std, dtype=torch.float32, device=device).view(shape)


def _normalise(x_u8: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel (dim 1), as float32."""
    m, s = _constants(tuple(mean), tuple(std), x_u8.dim(), x_u8.device)
    return x_u8.to(torch.float32).div_(255.0).sub_(m).div_(s)


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    val_size: int = 5000,
    seed: int = 0,
    device: str | torch.device = "cpu",
    download: bool = True,
    downloader: Downloader = http_download,
) -> Dataset:
    """Load a registered dataset as normalised tensors on ``device``, with a validation split.

    Files are found as described in ``lth.data.locate_files`` (missing ones are fetched with
    ``downloader``, unless ``download`` is false), and all of them are read and verified before
    any tensor is built. ``val_size`` training images chosen by ``seed`` (see
    ``lth.data.split_indices``) form the validation set; the rest, in their original order,
    form the training set. Images become float32 ``(x / 255 - mean) / std``; labels int64.

    Args:
        name: A registered dataset: ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"`` or one
            added with ``lth.data.register_dataset`` (case-insensitive; ``-`` and ``_`` alike).
        data_dir: Folder holding the dataset's folder; ``None`` (the default) uses
            ``$LTH_DATA_DIR``, else the per-user cache (``$XDG_CACHE_HOME/lth`` or
            ``~/.cache/lth``). MNIST is bundled with lth and used when no folder holds it.
        val_size: Training images held out for validation (0 for none); at most the training
            set's size minus 1.
        seed: Seed of the validation split's draw (the global RNG is not touched).
        device: Where the tensors go, e.g. ``"cpu"``, ``"cuda"`` or ``"cuda:0"``.
        download: Whether missing files may be downloaded; with ``False`` a missing file is an
            error.
        downloader: ``downloader(url, dest)`` fetches one file into ``dest``; the default uses
            HTTP(S) and refuses when ``$LTH_OFFLINE`` is set (to anything but ``0``).

    Returns:
        The ``Dataset``, its ``mean``, ``std`` and ``train_raw`` set.

    Raises:
        LTHError: An unknown dataset name, a bad ``val_size``, ``seed`` or ``device`` (checked
            before any file is read), a missing file that may not be downloaded, or a file
            that fails verification.

    Examples:
        >>> import lth
        >>> data = lth.load_dataset("mnist", val_size=5000, download=False)  # MNIST is bundled
        >>> data.sizes
        {'train': 55000, 'val': 5000, 'test': 10000}
        >>> tuple(data.train_x.shape), data.train_x.dtype, data.augmentation
        ((55000, 1, 28, 28), torch.float32, None)
        >>> lth.load_dataset("mnist", val_size=60000)
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: val_size 60000 is out of range: ...
    """
    spec = get_spec(name)
    val_size = _check_val_size(val_size, spec.train_size)
    _generator(seed)  # validate the seed before reading any file
    dev = _check_device(device)
    paths = locate_files(spec, data_dir, download=download, downloader=downloader)
    raw = spec.loader(spec, paths)
    n_train = int(raw.train_x.shape[0])
    train_idx, val_idx = split_indices(n_train, val_size, seed)
    x_all = torch.from_numpy(raw.train_x)
    y_all = torch.from_numpy(raw.train_y)

    def images(x: torch.Tensor) -> torch.Tensor:
        return _normalise(_to_device(x, dev), spec.mean, spec.std)

    train_raw = _to_device(x_all[train_idx].contiguous(), dev)
    return Dataset(
        name=spec.name,
        num_classes=spec.num_classes,
        input_shape=tuple(spec.input_shape),
        train_x=_normalise(train_raw, spec.mean, spec.std),
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
        train_raw=train_raw,
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
    held = getattr(dataset, "tensors", None)  # a TensorDataset of (images, labels): no loop
    if isinstance(dataset, torch.utils.data.TensorDataset) and len(held) == 2:
        x, y = held
        if y.dim() == 1 and not (y.is_floating_point() or y.is_complex() or y.dtype == torch.bool):
            return x.to(torch.float32), y.to(torch.int64)
    xs, ys = [], []
    for i in range(n):
        try:
            item = dataset[i]
        except Exception as e:  # noqa: BLE001 - user code: any error is the user's to fix
            problem = f"{type(e).__name__}: {one_line(e)}"
            raise LTHError(f"cannot read item {i} of the dataset: {problem}") from None
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise LTHError(f"item {i} of the dataset is not an (image, label) pair")
        try:
            xs.append(torch.as_tensor(item[0], dtype=torch.float32))
        except (TypeError, ValueError, RuntimeError) as e:
            raise LTHError(
                f"the image of item {i} is a {type(item[0]).__name__}, not an array or tensor "
                f"({one_line(e)}); convert it (e.g. torchvision's ToTensor)"
            ) from None
        label = torch.as_tensor(item[1])
        if label.numel() != 1 or label.is_floating_point() or label.dtype == torch.bool:
            raise LTHError(
                f"the label of item {i} is {item[1]!r}; labels must be whole numbers (class "
                "indices)"
            )
        ys.append(int(label))
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
    """Build a ``Dataset`` from your own tensors, to study a dataset lth does not register.

    The values are used as-is (no normalisation) but cast to float32, the labels to int64;
    the validation split is drawn as ``load_dataset`` draws it.

    Args:
        name: The dataset's name, used in messages and in ``Dataset.name``.
        train_x: Training examples, a float tensor ``(N, *input_shape)``.
        train_y: Their integer class labels, a 1-D tensor of N entries.
        test_x: Test examples, a float tensor ``(M, *input_shape)``.
        test_y: Their integer class labels, M entries.
        val_size: Training examples held out for validation (0 for none), below N.
        seed: Seed of the validation split's draw (the global RNG is not touched).
        device: Where the tensors go, e.g. ``"cpu"`` or ``"cuda:0"``.
        num_classes: Number of classes; ``None`` (the default) takes the largest label
            (of training and test) plus one.
        augmentation: The training augmentation to use, a key of
            ``lth.data.augment.AUGMENTATIONS`` (``"crop_flip"`` for 3-channel images), or
            ``None`` (the default) for none.

    Returns:
        The ``Dataset``; its ``mean``, ``std`` and ``train_raw`` are ``None``.

    Raises:
        LTHError: Tensors of the wrong kind (non-float examples, labels that are not a 1-D
            integer tensor), example and label counts or example shapes that differ, an
            empty training set, labels outside ``[0, num_classes)``, an unknown augmentation,
            or a bad ``val_size``, ``seed`` or ``device``.

    Examples:
        >>> import torch, lth
        >>> data = lth.dataset_from_tensors(
        ...     "toy", torch.rand(10, 1, 4, 4), torch.arange(10) % 3,
        ...     torch.rand(5, 1, 4, 4), torch.arange(5) % 3, val_size=2, seed=1)
        >>> data.num_classes, data.input_shape, data.sizes
        (3, (1, 4, 4), {'train': 8, 'val': 2, 'test': 5})
        >>> lth.dataset_from_tensors("toy", torch.rand(4, 2), torch.tensor([0, 1, 2, 5]),
        ...                          torch.rand(1, 2), torch.tensor([0]), val_size=1,
        ...                          num_classes=3)
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: dataset 'toy': labels range from 0 to 5, but they must lie in ...
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
