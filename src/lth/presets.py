"""Named study configurations for ``lth run --preset NAME``.

Each preset is a dict of :class:`~lth.experiment.ExperimentConfig` fields. ``lth run`` starts from
``ExperimentConfig``'s defaults, applies the preset (``default`` when ``--preset`` is not given),
then a ``--config`` file, then the options given on the command line.

- ``default``: what ``lth run`` runs with no options: LeNet-300-100 on the bundled MNIST, the
  paper's optimiser and pruning rates, shortened to finish in a few minutes on a laptop CPU.
- ``quick``: a smoke test that finishes in about a minute on a laptop CPU.
- ``lenet_300_100_paper``: Frankle & Carbin (ICLR 2019), LeNet-300-100 on MNIST: Adam 1.2e-3,
  batch 60, 50,000 iterations per level, layer-wise pruning 20% (output layer 10%), validation
  on 5,000 held-out training images every 100 iterations, rewinding to θ0, both controls, five
  replicates, 20 levels (down to 1.2% of the weights).
"""

from __future__ import annotations

from .errors import LTHError

_LENET_MNIST = {
    "model": "lenet_300_100",
    "dataset": "mnist",
    "init": "xavier_normal",
    "pruning": "layerwise",
    "rate": 0.2,
    "output_rate": 0.1,
    "exclude": [],
    "reset": "rewind",
    "rewind_iteration": 0,
    "controls": ["reinit", "random_prune"],
    "optimizer": "adam",
    "lr": 1.2e-3,
    "momentum": 0.0,
    "weight_decay": 0.0,
    "milestones": [],
    "gamma": 0.1,
    "warmup": 0,
    "batch_size": 60,
    "epochs": 0,
    "seed": 0,
}

PRESETS: dict[str, dict] = {
    "default": _LENET_MNIST
    | {
        "levels": 10,  # 100% -> 10.8% of the weights
        "iterations": 5000,
        "eval_every": 100,
        "val_size": 5000,
        "replicates": 1,
    },
    "quick": _LENET_MNIST
    | {
        "levels": 5,  # 100% -> 32.9% of the weights
        "iterations": 1000,
        "eval_every": 100,
        "val_size": 5000,
        "replicates": 1,
    },
    "lenet_300_100_paper": _LENET_MNIST
    | {
        "levels": 20,  # 100% -> 1.2% of the weights
        "iterations": 50_000,
        "eval_every": 100,
        "val_size": 5000,
        "replicates": 5,
    },
    # open_lth's cifar_resnet_20: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128,
    # 160 epochs, lr x0.1 at epochs 80 and 120, global pruning 20% per level, fc never pruned.
    # Milestones are in iterations: 45,000 training images / 128 = 351 steps per epoch.
    "cifar_resnet_20": {
        **_LENET_MNIST,
        "model": "resnet20",
        "dataset": "cifar10",
        "init": "kaiming_normal",
        "pruning": "global",
        "exclude": ["fc.weight"],
        "optimizer": "sgd",
        "lr": 0.1,
        "momentum": 0.9,
        "weight_decay": 1e-4,
        "batch_size": 128,
        "epochs": 160,
        "iterations": 56_160,
        "milestones": [80 * 351, 120 * 351],
        "levels": 15,  # 100% -> 3.5% of the prunable weights
        "eval_every": 1755,  # every 5 epochs
        "val_size": 5000,
        "replicates": 1,
        "augment": True,
    },
}
# Frankle & Carbin 2019, Conv-2/4/6 on CIFAR-10: Adam, batch 60, conv / fc / output rates.
for _name, _lr, _iters, _conv in (
    ("conv2", 2e-4, 20_000, 0.1),
    ("conv4", 3e-4, 25_000, 0.1),
    ("conv6", 3e-4, 30_000, 0.15),
):
    PRESETS[f"{_name}_cifar10_paper"] = {
        **_LENET_MNIST,
        "model": _name,
        "dataset": "cifar10",
        "lr": _lr,
        "iterations": _iters,
        "conv_rate": _conv,
        "rate": 0.2,
        "output_rate": 0.1,
        "levels": 20,
        "eval_every": 100,
        "val_size": 5000,
        "replicates": 1,
        "augment": False,
    }

DESCRIPTIONS: dict[str, str] = {
    "default": "LeNet-300-100 on MNIST, 10 levels x 5,000 iterations, both controls (~4 min)",
    "quick": "LeNet-300-100 on MNIST, 5 levels x 1,000 iterations, both controls (<1 min)",
    "lenet_300_100_paper": (
        "Frankle & Carbin 2019 LeNet-300-100 protocol: 20 levels x 50,000 iterations, 5 replicates"
    ),
    "cifar_resnet_20": "open_lth's cifar_resnet_20: SGD, 160 epochs, global 20%, fc unpruned",
    "conv2_cifar10_paper": "Frankle & Carbin Conv-2: Adam 2e-4, 20K iterations, conv 10%",
    "conv4_cifar10_paper": "Frankle & Carbin Conv-4: Adam 3e-4, 25K iterations, conv 10%",
    "conv6_cifar10_paper": "Frankle & Carbin Conv-6: Adam 3e-4, 30K iterations, conv 15%",
}


def preset_names() -> list[str]:
    """Names of the presets."""
    return list(PRESETS)


def get_preset(name: str) -> dict:
    """A copy of preset ``name``'s settings; an unknown name raises LTHError with the list."""
    if name not in PRESETS:
        raise LTHError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}


__all__ = ["DESCRIPTIONS", "PRESETS", "get_preset", "preset_names"]
