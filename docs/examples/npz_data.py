"""Your own data from the command line: ``lth run --dataset npz_data:load`` (docs/guide/data.md,
"Your own data").

``load()`` reads images and labels from a ``.npz`` file (``$NPZ_DATA``, default ``data.npz`` in
the current folder) holding ``x_train``, ``y_train``, ``x_test``, ``y_test`` (uint8 images
``(N, H, W)`` or ``(N, C, H, W)``, integer labels), normalises them with the training set's
mean and standard deviation (lth uses the tensors as they are), and returns a ``(train, test)``
pair of torch datasets; lth holds out ``--val-size`` training images for validation.

    lth run --dataset npz_data:load --val-size 1000 --out runs/mine
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import TensorDataset


def _images(x: np.ndarray) -> torch.Tensor:
    """uint8 images as float32 (N, C, H, W) in [0, 1]."""
    t = torch.from_numpy(np.asarray(x, dtype=np.uint8)).float().div(255)
    return t.unsqueeze(1) if t.dim() == 3 else t


def load() -> tuple[TensorDataset, TensorDataset]:
    """The file's training and test sets, normalised with the training set's statistics."""
    with np.load(os.environ.get("NPZ_DATA", "data.npz")) as f:
        x, tx = _images(f["x_train"]), _images(f["x_test"])
        y, ty = torch.from_numpy(f["y_train"]).long(), torch.from_numpy(f["y_test"]).long()
    mean, std = x.mean(), x.std()
    return TensorDataset((x - mean) / std, y), TensorDataset((tx - mean) / std, ty)
