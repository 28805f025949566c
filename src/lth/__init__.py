"""lth: fast, trustworthy Lottery Ticket Hypothesis experiments in PyTorch.

Run a study with :func:`run_experiment` (or ``lth run``), configured by
:class:`ExperimentConfig`. Where things live: settings in :mod:`lth.config`; masks are computed
in :mod:`lth.pruning.selection`, applied, counted and saved in :mod:`lth.pruning.masks`, trained
with in
:mod:`lth.core.training`; :mod:`lth.study.experiment` runs the level loop, :mod:`lth.study.runner`
runs a whole study into a run folder, and :mod:`lth.runfolder.runs` keeps it on disk.

>>> import lth
>>> config = lth.ExperimentConfig(levels=2, iterations=300)
>>> results = lth.run_experiment(config, quiet=True)          # doctest: +SKIP
"""

import importlib
from typing import TYPE_CHECKING

from lth.version import __version__ as __version__

#: public name -> the module that holds it; imported on first use, so that ``lth --help``
#: and a Ctrl-C while starting up do not wait for PyTorch.
_HOME = {
    "ExperimentConfig": "config",
    "Dataset": "data",
    "dataset_from_tensors": "data",
    "load_dataset": "data",
    "LTHError": "errors",
    "LevelResult": "runfolder.results",
    "apply_masks": "pruning.masks",
    "count_remaining": "pruning.masks",
    "load_masks": "pruning.masks",
    "nonzero_table": "pruning.masks",
    "ones_mask": "pruning.masks",
    "save_masks": "pruning.masks",
    "create_model": "core.models",
    "initialize": "core.init",
    "register_model": "core.models",
    "register_criterion": "pruning.criteria",
    "layer_rates": "pruning.selection",
    "prune_global": "pruning.selection",
    "prune_layerwise": "pruning.selection",
    "prune_random_like": "pruning.selection",
    "RunFolder": "runfolder.runs",
    "load_ticket": "runfolder.runs",
    "run_experiment": "study.runner",
    "export_ticket": "runfolder.export",
    "load_export": "runfolder.export",
    "attach_masks": "pruning.masks",
}

if TYPE_CHECKING:  # what static tools see: the same names, imported eagerly
    from lth.config import ExperimentConfig
    from lth.core.init import initialize
    from lth.core.models import create_model, register_model
    from lth.data import Dataset, dataset_from_tensors, load_dataset
    from lth.errors import LTHError
    from lth.pruning.criteria import register_criterion
    from lth.pruning.masks import (
        apply_masks,
        attach_masks,
        count_remaining,
        load_masks,
        nonzero_table,
        ones_mask,
        save_masks,
    )
    from lth.pruning.selection import layer_rates, prune_global, prune_layerwise, prune_random_like
    from lth.runfolder.export import export_ticket, load_export
    from lth.runfolder.results import LevelResult
    from lth.runfolder.runs import RunFolder, load_ticket
    from lth.study.runner import run_experiment


def __getattr__(name: str):
    """Import a public name from its module on first use (PEP 562)."""
    if name not in _HOME:
        raise AttributeError(f"module 'lth' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOME[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
