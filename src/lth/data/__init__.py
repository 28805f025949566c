"""Datasets: locating, downloading, verifying and loading them as tensors, and augmenting them.

One module per job:

* :mod:`lth.data.specs`: the dataset registry (:class:`DatasetSpec`, :func:`get_spec`,
  :func:`register_dataset`) and the IDX datasets MNIST and Fashion-MNIST;
* :mod:`lth.data.files`: the data directory, finding and downloading files (the downloader is a
  parameter, ``LTH_OFFLINE=1`` turns the default one off), reading verified IDX files;
* :mod:`lth.data.cifar`: CIFAR-10, its archive or extracted folder, read with a restricted
  unpickler;
* :mod:`lth.data.dataset`: the in-memory :class:`Dataset` with its seeded validation split
  (:func:`load_dataset`, :func:`dataset_from_tensors`, :func:`tensors_from_dataset`);
* :mod:`lth.data.augment`: batched data augmentation (:data:`AUGMENTATIONS`).

The lowest layer above the root leaves: it may import only those (:mod:`lth.errors`, the
registry helper), never core, pruning or anything above.
"""

from .augment import AUGMENTATIONS, crop_flip, draw_crop_flip
from .cifar import CIFAR10
from .dataset import (
    Dataset,
    dataset_from_tensors,
    load_dataset,
    split_indices,
    tensors_from_dataset,
)
from .files import (
    DATA_DIR_ENV,
    IDX_MAX_BYTES,
    OFFLINE_ENV,
    Downloader,
    default_cache_dir,
    http_download,
    locate_files,
    read_idx,
    resolve_data_dir,
)
from .specs import (
    DATASETS,
    DataFile,
    DatasetSpec,
    RawArrays,
    dataset_names,
    get_spec,
    register_dataset,
)

__all__ = [
    "AUGMENTATIONS",
    "CIFAR10",
    "DATASETS",
    "DATA_DIR_ENV",
    "IDX_MAX_BYTES",
    "OFFLINE_ENV",
    "DataFile",
    "Dataset",
    "DatasetSpec",
    "Downloader",
    "RawArrays",
    "crop_flip",
    "dataset_from_tensors",
    "dataset_names",
    "default_cache_dir",
    "draw_crop_flip",
    "get_spec",
    "http_download",
    "load_dataset",
    "locate_files",
    "read_idx",
    "register_dataset",
    "resolve_data_dir",
    "split_indices",
    "tensors_from_dataset",
]
