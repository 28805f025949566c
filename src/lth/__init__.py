"""lth: fast, trustworthy Lottery Ticket Hypothesis experiments in PyTorch.

Where things live: masks are computed in :mod:`lth.pruning`, applied and saved in
:mod:`lth.masks`, trained with in :mod:`lth.training`; :mod:`lth.experiment` runs the
level loop and :mod:`lth.runs` keeps it on disk.
"""

from .data import Dataset, dataset_from_tensors, dataset_names, load_dataset
from .errors import LTHError
from .experiment import Experiment, ExperimentConfig, LevelResult, run_experiment
from .masks import (
    apply_masks,
    count_remaining,
    load_masks,
    nonzero_table,
    ones_mask,
    prunable_parameters,
    remaining_fraction,
    save_masks,
)
from .models import create_model, initialize, model_names
from .pruning import layer_rates, prune_global, prune_layerwise, prune_random_like
from .runs import load_ticket
from .training import TicketJob, TrainConfig, Trainer, train

__version__ = "0.1.0"

__all__ = [
    "Dataset",
    "Experiment",
    "ExperimentConfig",
    "LTHError",
    "LevelResult",
    "TicketJob",
    "TrainConfig",
    "Trainer",
    "apply_masks",
    "count_remaining",
    "create_model",
    "dataset_from_tensors",
    "dataset_names",
    "initialize",
    "layer_rates",
    "load_dataset",
    "load_masks",
    "load_ticket",
    "model_names",
    "nonzero_table",
    "ones_mask",
    "prunable_parameters",
    "prune_global",
    "prune_layerwise",
    "prune_random_like",
    "remaining_fraction",
    "run_experiment",
    "save_masks",
    "train",
]
