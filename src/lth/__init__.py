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

from .config import ExperimentConfig
from .data import Dataset, dataset_from_tensors, load_dataset
from .errors import LTHError
from .experiment import LevelResult
from .masks import apply_masks, count_remaining, load_masks, nonzero_table, ones_mask, save_masks
from .models import create_model, initialize, register_model
from .pruning import layer_rates, prune_global, prune_layerwise, prune_random_like
from .runs import RunFolder, load_ticket
from .study import run_experiment

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "ExperimentConfig",
    "LTHError",
    "LevelResult",
    "RunFolder",
    "apply_masks",
    "count_remaining",
    "create_model",
    "dataset_from_tensors",
    "initialize",
    "layer_rates",
    "load_dataset",
    "load_masks",
    "load_ticket",
    "nonzero_table",
    "ones_mask",
    "prune_global",
    "prune_layerwise",
    "prune_random_like",
    "register_model",
    "run_experiment",
    "save_masks",
]
