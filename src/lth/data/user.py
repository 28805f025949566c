"""Your own data from user code: ``--dataset package.module:function`` (through the code gate,
:mod:`lth.usercode`), checked whole before any run folder is made.

The function takes no arguments and returns either

* a :class:`~lth.data.dataset.Dataset` (built with :func:`~lth.data.dataset.dataset_from_tensors`,
  with its validation split: it must hold out ``--val-size`` examples), or
* a pair ``(train, test)`` of map-style torch datasets whose items are ``(image, label)``:
  they are read once into tensors (at most :data:`MAX_BYTES` of images, or
  ``$LTH_USER_DATA_MAX_BYTES``) and split with ``--val-size`` and ``--seed`` as lth's own
  datasets are. Their values are used as they are: normalise them in the dataset.

:func:`study_data` loads a study's data whatever its ``dataset`` setting names: a registered
dataset or user code.
"""

from __future__ import annotations

import math
import os

import torch

from lth.errors import LTHError
from lth.usercode import NO_TRUST, CodeTrust, import_code, names_code

from .dataset import Dataset, dataset_from_tensors, load_dataset, tensors_from_dataset

__all__ = ["MAX_BYTES", "MAX_BYTES_ENV", "check_dataset", "study_data", "user_dataset"]

#: The most bytes of float32 images a pair of torch datasets is read into (4 GiB).
MAX_BYTES = 4 << 30
#: The environment variable that sets another cap, in bytes.
MAX_BYTES_ENV = "LTH_USER_DATA_MAX_BYTES"


def _cap() -> int:
    text = os.environ.get(MAX_BYTES_ENV)
    if text is None:
        return MAX_BYTES
    try:
        return int(text)
    except ValueError:
        raise LTHError(f"{MAX_BYTES_ENV} must be a whole number of bytes, got {text!r}") from None


def check_dataset(data: Dataset, spec: str) -> Dataset:
    """Refuse (one line) a :class:`Dataset` whose tensors break its contract: float32 examples
    of shape ``(N, *input_shape)``, int64 labels ``(N,)`` in ``[0, num_classes)``, one device.

    >>> import torch, lth
    >>> data = lth.dataset_from_tensors("toy", torch.rand(6, 2), torch.arange(6) % 2,
    ...                                 torch.rand(2, 2), torch.tensor([0, 1]), val_size=2)
    >>> check_dataset(data, "mydata:load") is data
    True
    """
    if not isinstance(data, Dataset):
        raise LTHError(f"dataset {spec} is a {type(data).__name__}, not an lth.Dataset")
    shape = tuple(data.input_shape)
    classes = data.num_classes
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise LTHError(f"dataset {spec}: num_classes must be a whole number >= 1, got {classes!r}")
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise LTHError(f"dataset {spec}: {split}_x and {split}_y must be torch tensors")
        if x.dtype != torch.float32:
            raise LTHError(
                f"dataset {spec}: {split}_x has dtype {x.dtype}; examples must be float32 "
                "(normalised images)"
            )
        if tuple(x.shape[1:]) != shape:
            raise LTHError(
                f"dataset {spec}: {split}_x has shape {tuple(x.shape)}, but input_shape is "
                f"{shape}; examples must be (N, *input_shape)"
            )
        if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
            raise LTHError(
                f"dataset {spec}: {split}_y has dtype {y.dtype} and shape {tuple(y.shape)}; "
                f"labels must be int64 of shape ({x.shape[0]},), one per example"
            )
        if x.device != data.device or y.device != data.device:
            raise LTHError(f"dataset {spec}: {split}_x and {split}_y are not on one device")
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= classes):
            raise LTHError(
                f"dataset {spec}: {split}_y has labels from {int(y.min())} to {int(y.max())}, "
                f"outside [0, {classes}); relabel them or set num_classes"
            )
    if data.train_y.shape[0] < 1:
        raise LTHError(f"dataset {spec}: the training set is empty")
    return data


def _estimated_bytes(pair: tuple, spec: str) -> int:
    """Bytes of float32 images the pair becomes, from its lengths and its first image."""
    total = 0
    for part in pair:
        try:
            n = len(part)
            first = part[0] if n else None
        except Exception as e:  # noqa: BLE001 - user code: any error is the user's to fix
            raise LTHError(
                f"dataset {spec}: cannot read its items ({type(e).__name__}: {e}); return a "
                "map-style torch Dataset of (image, label) pairs"
            ) from None
        if first is None:
            continue
        if not isinstance(first, tuple | list) or len(first) != 2:
            raise LTHError(f"dataset {spec}: item 0 is not an (image, label) pair")
        total += n * math.prod(torch.as_tensor(first[0]).shape) * 4
    return total


def user_dataset(
    spec: str,
    trust: CodeTrust = NO_TRUST,
    *,
    val_size: int = 5000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Dataset:
    """The data a user's ``package.module:function`` returns, checked, as a :class:`Dataset`.

    Args:
        spec: ``package.module:function``, imported only if ``trust`` allows it.
        trust: Which code may be imported (:class:`lth.usercode.CodeTrust`).
        val_size: Training examples held out for validation; a returned ``Dataset`` must hold
            out exactly as many.
        seed: Seed of the validation split of a pair of torch datasets.
        device: Where the tensors of a pair of torch datasets go.

    Returns:
        The checked ``Dataset``.

    Raises:
        LTHError: Code that is not trusted or fails, a result that is neither a ``Dataset``
            nor a pair of torch datasets, images over the cap, wrong shapes, dtypes or labels.

    Examples:
        >>> import sys, types, torch, lth
        >>> mod = types.ModuleType("doc_data")
        >>> def load():
        ...     g = torch.Generator().manual_seed(0)
        ...     train = torch.utils.data.TensorDataset(torch.rand(20, 1, 4, 4, generator=g),
        ...                                            torch.arange(20) % 3)
        ...     test = torch.utils.data.TensorDataset(torch.rand(5, 1, 4, 4), torch.arange(5) % 3)
        ...     return train, test
        >>> mod.load = load; sys.modules["doc_data"] = mod
        >>> data = user_dataset("doc_data:load", lth.usercode.CodeTrust(trusted=True), val_size=4)
        >>> data.name, data.num_classes, data.input_shape, data.sizes
        ('doc_data:load', 3, (1, 4, 4), {'train': 16, 'val': 4, 'test': 5})
        >>> del sys.modules["doc_data"]
    """
    function = import_code(spec, "dataset", trust)
    try:
        result = function()
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - user code: SystemExit, anything
        raise LTHError(f"dataset {spec} failed: {type(e).__name__}: {e}") from None
    if isinstance(result, Dataset):
        check_dataset(result, spec)
        if result.sizes["val"] != val_size:
            raise LTHError(
                f"dataset {spec} holds out {result.sizes['val']} validation examples but "
                f"--val-size is {val_size}; pass --val-size {result.sizes['val']}"
            )
        return result
    if not isinstance(result, tuple | list) or len(result) != 2:
        raise LTHError(
            f"dataset {spec} returned a {type(result).__name__}; return an lth.Dataset or a "
            "(train, test) pair of torch Datasets"
        )
    need, cap = _estimated_bytes(tuple(result), spec), _cap()
    if need > cap:
        raise LTHError(
            f"dataset {spec} is about {need / 2**30:.1f} GiB of float32 images, over the "
            f"{cap / 2**30:.1f} GiB lth reads into memory; return a smaller lth.Dataset or "
            f"raise {MAX_BYTES_ENV}"
        )
    (train_x, train_y), (test_x, test_y) = (tensors_from_dataset(part) for part in result)
    data = dataset_from_tensors(
        spec, train_x, train_y, test_x, test_y, val_size=val_size, seed=seed, device=device
    )
    return check_dataset(data, spec)


def study_data(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    trust: CodeTrust = NO_TRUST,
    *,
    val_size: int = 5000,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Dataset:
    """A study's data: :func:`user_dataset` when ``name`` names code, else
    :func:`~lth.data.dataset.load_dataset` from ``data_dir``.

    >>> study_data("mnist", val_size=5000).sizes
    {'train': 55000, 'val': 5000, 'test': 10000}
    """
    if names_code(name):
        return user_dataset(name, trust, val_size=val_size, seed=seed, device=device)
    return load_dataset(name, data_dir, val_size=val_size, seed=seed, device=device)
