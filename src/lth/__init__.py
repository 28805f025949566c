"""lth: fast, trustworthy Lottery Ticket Hypothesis experiments in PyTorch.

Run a study with :func:`run_experiment` (or ``lth run``), configured by
:class:`ExperimentConfig`. Where things live: settings in :mod:`lth.config`; masks are computed
in :mod:`lth.pruning`, applied, counted and saved in :mod:`lth.masks`, trained with in
:mod:`lth.training`; :mod:`lth.experiment` runs the level loop, :mod:`lth.study` runs a whole
study into a run folder, and :mod:`lth.runs` keeps it on disk.

>>> import lth
>>> config = lth.ExperimentConfig(levels=2, iterations=300)
>>> results = lth.run_experiment(config, quiet=True)          # doctest: +SKIP
"""

import importlib
from typing import TYPE_CHECKING

#: public name -> the module that holds it; imported on first use, so that ``lth --help``
#: and a Ctrl-C while starting up do not wait for PyTorch.
_HOME = {
    "ExperimentConfig": "config",
    "Dataset": "data",
    "dataset_from_tensors": "data",
    "load_dataset": "data",
    "LTHError": "errors",
    "LevelResult": "experiment",
    "apply_masks": "masks",
    "count_remaining": "masks",
    "load_masks": "masks",
    "nonzero_table": "masks",
    "ones_mask": "masks",
    "save_masks": "masks",
    "create_model": "models",
    "initialize": "models",
    "register_model": "models",
    "register_criterion": "criteria",
    "layer_rates": "pruning",
    "prune_global": "pruning",
    "prune_layerwise": "pruning",
    "prune_random_like": "pruning",
    "RunFolder": "runs",
    "load_ticket": "runs",
    "run_experiment": "study",
    "export_ticket": "export",
    "load_export": "export",
    "attach_masks": "masks",
}

if TYPE_CHECKING:  # what static tools see: the same names, imported eagerly
    from .config import ExperimentConfig
    from .criteria import register_criterion
    from .data import Dataset, dataset_from_tensors, load_dataset
    from .errors import LTHError
    from .experiment import LevelResult
    from .export import export_ticket, load_export
    from .masks import (
        apply_masks,
        attach_masks,
        count_remaining,
        load_masks,
        nonzero_table,
        ones_mask,
        save_masks,
    )
    from .models import create_model, initialize, register_model
    from .pruning import layer_rates, prune_global, prune_layerwise, prune_random_like
    from .runs import RunFolder, load_ticket
    from .study import run_experiment


def __getattr__(name: str):
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module 'lth' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "ExperimentConfig",
    "LTHError",
    "LevelResult",
    "RunFolder",
    "apply_masks",
    "attach_masks",
    "count_remaining",
    "create_model",
    "dataset_from_tensors",
    "export_ticket",
    "initialize",
    "layer_rates",
    "load_dataset",
    "load_export",
    "load_masks",
    "load_ticket",
    "nonzero_table",
    "ones_mask",
    "prune_global",
    "prune_layerwise",
    "prune_random_like",
    "register_criterion",
    "register_model",
    "run_experiment",
    "save_masks",
]
