"""Every setting of a study, declared once: its default, type, validation and help text.

:class:`ExperimentConfig` is what a study runs: :class:`StudyConfig` (what is pruned, how, and
which controls) plus :class:`TrainConfig` (how one level trains) plus the data split, seed and
parallelism. Each field is declared once with :func:`setting`; from those declarations come
the validation, the class docstrings, the ``lth run`` options (:mod:`lth.cli.options`) and the
TOML files (:mod:`lth.configfile`). Presets (``lth run --preset``, :mod:`lth.presets`) are
dicts of field values over the defaults. This module imports nothing of lth's but
:mod:`lth.errors`.

The defaults are the ``default`` preset, so ``run_experiment()`` with no arguments runs what
``lth run`` with no options runs: LeNet-300-100 on MNIST with Frankle & Carbin's optimiser and
pruning rates, 10 levels of 5,000 iterations.

Example::

    >>> from lth import ExperimentConfig
    >>> config = ExperimentConfig(levels=3, iterations=1000)
    >>> config.train_config(55_000).iterations
    1000
"""

from __future__ import annotations

import functools
import typing
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from lth.errors import LTHError
from lth.settings import (
    MORE,
    _Declared,
    _document,
    distinct_names,
    fraction,
    iterations_list,
    number,
    one_of,
    rate_list,
    setting,
    text,
    typed_value,
    whole,
)

RESETS = ("rewind", "lr_rewind", "finetune", "reinit")
PRUNINGS = ("auto", "layerwise", "global")
GRANULARITIES = ("weight", "neuron", "channel")  # lth.pruning.granularity
#: output_rate's default: Frankle & Carbin prune LeNet's output layer at half the rate
DEFAULT_OUTPUT_RATE = 0.1
#: the controls trained by default; every control is an entry of lth.pruning.controls' registry,
#: which checks the names a study uses (the settings check only their form)
DEFAULT_CONTROLS = ("reinit", "random_prune")
OPTIMIZERS = ("adam", "sgd")

# option groups of ``lth run --help``, in order
KERNELS = ("auto", "dense", "sparse")
PRECISIONS = ("fp32", "bf16")
STUDY, TRAINING = "study", "training (per level)"


# ------------------------------------------------------------------- initialisation
#: ``init`` naming the model's own initialisation: θ0 is what its code builds (a factory called
#: under a seeded generator, or the weights of a module object), see :mod:`lth.core.theta0`.
INIT_MODEL = "model"


class _DefaultInit(str):
    """The default ``init`` value: equal to ``"xavier_normal"``, but told apart from the same
    name set explicitly (:func:`init_is_default`), so that a user model gets its own weights
    unless the user named a scheme. It survives ``dataclasses.replace``, copies and pickling."""


DEFAULT_INIT = _DefaultInit("xavier_normal")


def init_is_default(config: Any) -> bool:
    """Whether ``config.init`` is the default, not set by the user (a preset, a file, an
    option or a keyword naming it sets it)."""
    return type(config.init) is _DefaultInit


def resolve_init(config: Any, user_model: bool) -> Any:
    """``config`` with the initialisation a study really uses: for a user model
    (``package.module:function`` or an ``nn.Module`` object) whose ``init`` is the default,
    ``init = "model"`` (its own weights); otherwise ``config`` unchanged (a registered model
    keeps its paper's scheme, an explicit scheme wins).

    >>> config = ExperimentConfig()
    >>> resolve_init(config, user_model=True).init, resolve_init(config, user_model=False).init
    ('model', 'xavier_normal')
    >>> resolve_init(ExperimentConfig(init="xavier_normal"), user_model=True).init
    'xavier_normal'
    """
    if user_model and init_is_default(config):
        return replace(config, init=INIT_MODEL)
    return config


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class StudyConfig(_Declared):
    """What a study prunes and compares."""

    model: str = setting(
        "lenet_300_100",
        "architecture: a registered model or package.module:function (a factory)",
        text,
        group=STUDY,
        metavar="NAME",
        names="models",
    )
    dataset: str = setting(
        "mnist",
        "dataset: a registered dataset or package.module:function (your data)",
        text,
        group=STUDY,
        metavar="NAME",
        names="datasets",
    )
    init: str = setting(
        DEFAULT_INIT,
        f"initialisation scheme of θ0, or {INIT_MODEL!r}: the model's own weights (the default "
        "for a user model; registered models: xavier_normal)",
        text,
        group=STUDY,
        metavar="SCHEME",
        names="inits",
    )
    levels: int = setting(
        10, "pruning levels after the dense level 0", whole(0, 10_000), group=STUDY, metavar="N"
    )
    rate: float = setting(
        0.2,
        "fraction of the surviving weights pruned per level",
        fraction(),
        group=STUDY,
        metavar="P",
    )
    output_rate: float = setting(
        DEFAULT_OUTPUT_RATE,
        "per-level rate of the output layer (Frankle & Carbin prune it at half the rate); "
        "honoured by global pruning (the output layer is pruned on its own, the others ranked "
        "together) and with --target (the output layer keeps target^(ln(1-P)/ln(1-rate))); with "
        "--pruning auto a criterion that prunes at initialisation ranks the output layer with "
        "the others unless this differs from 0.1",
        fraction(),
        group=STUDY,
        metavar="P",
    )
    conv_rate: float = setting(
        0.0,
        "per-level rate of conv layers in layer-wise pruning, with --target as --output-rate "
        "(0: use --rate; refused with global pruning, which ranks conv layers together)",
        fraction(zero_means_off=True),
    )
    rate_schedule: tuple[float, ...] = setting(
        (),
        "comma list of per-level rates, one per level, e.g. 0.2,0.2,0.5: level L prunes the "
        "non-output, non-conv layers (the ranked group in global pruning) at the L-th; the "
        "output and conv layers keep --output-rate and --conv-rate (empty: --rate at every level)",
        rate_list,
        metavar="LIST",
    )
    target: float = setting(
        0.0,
        "fraction of weights left after the last level, reached in equal steps "
        "(0: prune by --rate)",
        fraction(zero_means_off=True),
    )
    pruning: str = setting(
        "auto",
        "how weights are ranked: auto is layerwise for criteria that score trained weights "
        "(IMP) and, for criteria that prune at initialisation, one global ranking of every "
        "prunable layer, the output layer included (the output layer goes apart at "
        "--output-rate if that differs from 0.1); layerwise or global as named for any criterion",
        one_of(PRUNINGS),
        group=STUDY,
        choices=PRUNINGS,
    )
    granularity: str = setting(
        "weight",
        "what a level removes: single weights; whole neurons (and conv filters) of every layer "
        "but the output layer; or whole conv channels (filters), ranked by their summed scores "
        "layer by layer (an at-init criterion: one shot from θ0 at structured IMP's unit counts)",
        one_of(GRANULARITIES),
        choices=GRANULARITIES,
    )
    exclude: tuple[str, ...] = setting(
        (), "comma list of parameters never pruned, e.g. fc3.weight", group=STUDY, metavar="PARAMS"
    )
    prune_types: tuple[str, ...] = setting(
        ("Linear", "Conv2d"), "comma list of layer types whose weights are pruned"
    )
    prune_patterns: tuple[str, ...] = setting(
        (), "comma list of parameter-name patterns (fnmatch) to prune, instead of --prune-types"
    )
    reset: str = setting(
        "rewind",
        "what the survivors start from at each level",
        one_of(RESETS),
        group=STUDY,
        choices=RESETS,
    )
    rewind_iteration: int = setting(
        0,
        "late rewinding: rewind to the weights at iteration K of level 0 (0 = θ0)",
        whole(0),
        group=STUDY,
        metavar="K",
    )
    criterion: str = setting(
        "magnitude",
        "pruning criterion, higher scores kept: a registered one or package.module:function "
        "(magnitude: IMP; random; magnitude_init, snip, grasp, synflow prune at initialisation "
        "in one shot per level, at IMP's density; snip_iterative, grasp_iterative, "
        "synflow_iterative prune at initialisation level by level)",
        text,
        group=STUDY,
        metavar="NAME",
        names="criteria",
    )
    controls: tuple[str, ...] = setting(
        DEFAULT_CONTROLS,
        "comma list of controls, or none",
        distinct_names("control"),
        group=STUDY,
        metavar="LIST",
        names="controls",
    )
    replicates: int = setting(
        1,
        "independent repetitions (different θ0 and data order)",
        whole(1, 10_000),
        group=STUDY,
        metavar="N",
    )

    def _check_together(self) -> None:
        if self.target and self.levels < 1:
            raise LTHError("a target sparsity needs at least one pruning level (levels >= 1)")
        if self.rewind_iteration and self.reset != "rewind":
            raise LTHError(
                f"rewind_iteration {self.rewind_iteration} is late rewinding of the weights, "
                f"which reset {self.reset} never does; use reset rewind or rewind_iteration 0"
            )
        if self.rate_schedule and len(self.rate_schedule) != self.levels:
            raise LTHError(
                f"rate_schedule has {len(self.rate_schedule)} rates for {self.levels} levels; "
                "give one rate per level (or change levels)"
            )
        if self.rate_schedule and self.target:
            raise LTHError(
                "rate_schedule and target both set how far each level prunes; give one of them"
            )
        if self.granularity != "weight" and self.target:
            raise LTHError(
                f"granularity {self.granularity} removes round(rate x surviving units) per "
                "level; a target sparsity counts weights: use rate, or granularity weight"
            )
        if self.granularity != "weight" and self.pruning == "global":
            raise LTHError(
                f"granularity {self.granularity} ranks whole units within each layer; use "
                "pruning layerwise (or granularity weight for global pruning)"
            )
        if self.conv_rate and self.pruning == "global":
            raise LTHError(
                f"conv_rate {self.conv_rate} is for layer-wise pruning; global pruning ranks "
                "conv layers with the others: use pruning layerwise or conv_rate 0"
            )


@dataclass(frozen=True)
class TrainConfig(_Declared):
    """How one level trains: Frankle & Carbin's LeNet-300-100 protocol by default."""

    iterations: int = setting(
        5000, "training iterations per level", whole(1), group=TRAINING, metavar="N"
    )
    batch_size: int = setting(60, "examples per step", whole(1), group=TRAINING, metavar="N")
    optimizer: str = setting(
        "adam", "optimizer", one_of(OPTIMIZERS), group=TRAINING, choices=OPTIMIZERS
    )
    lr: float = setting(1.2e-3, "learning rate", number(strict=True), group=TRAINING, metavar="LR")
    momentum: float = setting(
        0.0, "SGD momentum", number(strict=False, below=1.0), group=TRAINING, metavar="M"
    )
    weight_decay: float = setting(
        0.0, "L2 weight decay", number(strict=False), group=TRAINING, metavar="WD"
    )
    milestones: tuple[int, ...] = setting(
        (),
        "comma list of iterations at which the learning rate is multiplied by --gamma",
        iterations_list,
    )
    gamma: float = setting(0.1, "learning-rate factor at each milestone", number(strict=True))
    warmup: int = setting(0, "iterations of linear learning-rate warm-up", whole(0))
    eval_every: int = setting(
        100,
        "iterations between evaluations (validation and test)",
        whole(1),
        group=TRAINING,
        metavar="N",
    )
    augment: bool = setting(True, "data augmentation, for datasets that define one")
    test_every: int = setting(
        0,
        "iterations between test-set evaluations in metrics.csv (0: at every evaluation); the "
        "early-stop and final test figures of summary.csv are the same either way",
        whole(0),
        metavar="N",
    )
    kernels: str = setting(
        "auto",
        "matrix kernels: sparse for layers below the density this machine calibrated, dense "
        "for the rest (auto); dense everywhere; or sparse everywhere",
        one_of(KERNELS),
        choices=KERNELS,
    )
    precision: str = setting(
        "fp32",
        "dtype of the training step's matrix products: fp32, or bf16 (bfloat16 products with "
        "float32 weights, optimizer state, masks and evaluation; fast on CPUs with AMX or "
        "AVX512-BF16 and on GPUs, slow elsewhere)",
        one_of(PRECISIONS),
        choices=PRECISIONS,
    )

    def _check_together(self) -> None:
        check_schedule(self, self.iterations)


def check_schedule(config: TrainConfig, iterations: int) -> None:
    """Warm-up and milestones must fall within the ``iterations`` of a level."""
    if config.warmup > iterations:
        raise LTHError(
            f"warmup {config.warmup} is longer than the {iterations} training iterations of a "
            "level; pass a smaller --warmup"
        )
    late = [m for m in config.milestones if m > iterations]
    if late:
        raise LTHError(
            f"milestone {late[0]} is past the {iterations} training iterations of a level; "
            "pass milestones within the level"
        )


@dataclass(frozen=True)
class ExperimentConfig(TrainConfig, StudyConfig):
    """Every setting of a study; ``lth run``'s options and a run's ``config.toml`` keys.

    Each attribute below is also a keyword argument of the constructor, with the same default:
    ``ExperimentConfig()`` is the ``default`` preset, what ``lth run`` runs without options.
    The instance is frozen; change settings with ``dataclasses.replace``. ``from_dict`` builds
    one from plain values (a TOML file's), checking their types.

    Raises:
        LTHError: A value its setting does not take (e.g. ``rate=1.5``), or settings that
            contradict each other (e.g. ``rewind_iteration`` with a ``reset`` other than
            ``"rewind"``), checked when the instance is made.

    Examples:
        >>> import dataclasses, lth
        >>> config = lth.ExperimentConfig(levels=3, iterations=1000, controls=("reinit",))
        >>> config.levels, config.rate, config.controls
        (3, 0.2, ('reinit',))
        >>> dataclasses.replace(config, lr=3e-4).lr
        0.0003
        >>> lth.ExperimentConfig(rate=1.5)
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: rate must be a fraction between 0 and 1, got 1.5
    """

    epochs: int = setting(
        0,
        "training epochs per level, instead of --iterations (0: use --iterations)",
        whole(0, 100_000),
        group=TRAINING,
        metavar="N",
    )
    val_size: int = setting(
        5000,
        "training images held out for validation and early stopping",
        whole(0),
        group=TRAINING,
        metavar="N",
    )
    seed: int = setting(0, "random seed", whole(0), group=STUDY, metavar="N")
    max_parallel: int = setting(
        16,
        "at most this many networks trained at once (fewer if memory or threads are short)",
        whole(1, 4096),
        group=TRAINING,
        metavar="N",
    )

    def _check_together(self) -> None:
        StudyConfig._check_together(self)
        if not self.epochs:
            self.train_config(self.batch_size)  # the schedule fits the level

    def train_config(self, n_train: int) -> TrainConfig:
        """The per-level training settings; ``epochs`` > 0 overrides ``iterations``."""
        iterations = self.iterations
        if self.epochs:
            iterations = self.epochs * max(1, n_train // self.batch_size)
        if self.rewind_iteration > iterations:
            raise LTHError(
                f"rewind_iteration {self.rewind_iteration} is past the {iterations} "
                "training iterations of a level"
            )
        values = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return TrainConfig(**values | {"iterations": iterations})

    def to_dict(self) -> dict:
        """Plain values (tuples as lists) for config files."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> ExperimentConfig:
        """Build from plain values (a TOML file, a preset), checking each value's type.

        Unknown keys and values of the wrong type raise ``LTHError`` naming ``source``.
        """
        kinds = field_kinds()
        unknown = sorted(set(values) - set(kinds))
        if unknown:
            raise LTHError(
                f"{source}: unknown setting {unknown[0]!r}; valid settings: "
                f"{', '.join(sorted(kinds))}"
            )
        typed = {k: typed_value(k, v, kinds[k], source) for k, v in values.items()}
        return cls(**typed)


def field_kinds() -> dict[str, tuple[type, type | None]]:
    """Setting name -> (kind, element kind) from the annotations: int, float, str, bool, tuple."""
    return dict(_field_kinds())  # a copy: the caller may change it


@functools.cache
def _field_kinds() -> dict[str, tuple[type, type | None]]:
    """:func:`field_kinds`, read from the annotations once (``typing.get_type_hints`` takes a
    millisecond, and reading a run folder's settings asks for every field's kind)."""
    hints = typing.get_type_hints(ExperimentConfig)
    kinds: dict[str, tuple[type, type | None]] = {}
    for f in fields(ExperimentConfig):
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            kinds[f.name] = (tuple, typing.get_args(hint)[0])
        else:
            kinds[f.name] = (hint, None)
    return kinds


for _cls in (StudyConfig, TrainConfig, ExperimentConfig):
    _document(_cls)


__all__ = [
    "DEFAULT_CONTROLS",
    "DEFAULT_INIT",
    "DEFAULT_OUTPUT_RATE",
    "INIT_MODEL",
    "MORE",
    "OPTIMIZERS",
    "PRUNINGS",
    "RESETS",
    "STUDY",
    "TRAINING",
    "ExperimentConfig",
    "StudyConfig",
    "TrainConfig",
    "check_schedule",
    "field_kinds",
    "init_is_default",
    "resolve_init",
    "typed_value",
    "setting",
]
