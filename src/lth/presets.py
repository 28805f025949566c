"""The presets of ``lth run --preset``: named dicts of settings over the
:class:`~lth.config.ExperimentConfig` defaults, and their one-line descriptions.

Imports only :mod:`lth.config` and :mod:`lth.errors`.
"""

from __future__ import annotations

from lth.config import ExperimentConfig
from lth.errors import LTHError

PRESETS: dict[str, dict] = {
    "default": {},  # the ExperimentConfig defaults: 100% -> 10.7% of the weights
    "quick": {"levels": 5, "iterations": 1000},  # 100% -> 32.9% of the weights
    # Frankle & Carbin 2019: 20 levels (100% -> 1.2%) x 50,000 iterations, 5 replicates
    "lenet_300_100_paper": {
        "levels": 20,
        "iterations": 50_000,
        "replicates": 5,
        "pruning": "layerwise",
    },
    # open_lth's cifar_resnet_20: SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128,
    # 160 epochs, lr x0.1 at epochs 80 and 120, global pruning 20% per level, fc never pruned.
    # Milestones are in iterations: 45,000 training images / 128 = 351 steps per epoch.
    "cifar_resnet_20": {
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
        "model": _name,
        "dataset": "cifar10",
        "lr": _lr,
        "iterations": _iters,
        "conv_rate": _conv,
        "levels": 20,
        "augment": False,
    }

PRESET_DESCRIPTIONS: dict[str, str] = {
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
    """Preset ``name``'s settings over the defaults (a copy); unknown names raise LTHError."""
    if name not in PRESETS:
        raise LTHError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {k: list(v) if isinstance(v, list) else v for k, v in PRESETS[name].items()}


def preset_config(name: str) -> ExperimentConfig:
    """The full configuration of preset ``name``."""
    return ExperimentConfig.from_dict(get_preset(name), f"preset {name}")


__all__ = ["PRESETS", "PRESET_DESCRIPTIONS", "get_preset", "preset_config", "preset_names"]
