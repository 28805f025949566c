"""IMP from a pretrained checkpoint: a model factory that loads its weights from a .safetensors
file, so that θ0 is the pretrained network (docs/guide/experiment.md, "Your own model").

Save a trained network once, then start IMP from it:

    python -c "import pretrained_mlp; pretrained_mlp.save_checkpoint('mlp.safetensors')"
    lth run --model pretrained_mlp:mlp --out runs/pretrained

The checkpoint is ``$PRETRAINED_MLP`` (default: ``mlp.safetensors`` in the current folder).
Every replicate starts from the same pretrained weights (replicates then differ only in the
order of their data), and the ``reinit`` control draws fresh weights with each layer's own
``reset_parameters()``: a randomly initialised network of the same architecture.
"""

from __future__ import annotations

import os

import torch
from safetensors.torch import load_file, save_file
from torch import nn


def architecture(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The network: a small MLP (no weights loaded)."""
    c, h, w = input_shape
    return nn.Sequential(
        nn.Flatten(), nn.Linear(c * h * w, 32), nn.ReLU(), nn.Linear(32, num_classes)
    )


def mlp(input_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The factory ``lth run --model pretrained_mlp:mlp`` calls: the architecture holding the
    checkpoint's weights."""
    model = architecture(input_shape, num_classes)
    path = os.environ.get("PRETRAINED_MLP", "mlp.safetensors")
    model.load_state_dict(load_file(path))
    return model


def save_checkpoint(path: str, input_shape=(1, 28, 28), num_classes: int = 10) -> None:
    """Write a checkpoint of the architecture (here freshly initialised with seed 0: put your
    own trained weights there)."""
    torch.manual_seed(0)
    model = architecture(input_shape, num_classes)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
