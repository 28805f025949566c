"""Every setting of a study, declared once: its default, type, validation and help text.

:class:`ExperimentConfig` is what a study runs: :class:`StudyConfig` (what is pruned, how, and
which controls) plus :class:`TrainConfig` (how one level trains) plus the data split, seed and
parallelism. Each field is declared once with :func:`setting`; from those declarations come
the validation, the class docstrings, the ``lth run`` options (:func:`add_options`) and the
TOML files (:func:`config_from_toml`, :func:`toml_text`). Presets (``lth run --preset``) are
dicts of field values over the defaults.

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

import argparse
import inspect
import json
import math
import re
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from lth.errors import LTHError

RESETS = ("rewind", "lr_rewind", "finetune", "reinit")
PRUNINGS = ("layerwise", "global")
#: the controls (sanity checks), each trained with the ticket's exact per-layer counts: the
#: names of lth.pruning.controls' registry, whose entries hold each one's description (``lth run
#: --help``), maker and expectations for ``lth verify``
CONTROLS = ("reinit", "random_prune", "sign_keep", "signed_constant", "inverted", "shuffle_init")
DEFAULT_CONTROLS = ("reinit", "random_prune")
BRANCHES = ("ticket", *CONTROLS)
OPTIMIZERS = ("adam", "sgd")
MAX_INT = 2**63 - 1  # TOML integers are signed 64-bit

# option groups of ``lth run --help``, in order
KERNELS = ("auto", "dense", "sparse")
STUDY, TRAINING, MORE = "study", "training (per level)", "more settings (as in config.toml)"


# ------------------------------------------------------------------------------ checks
Check = Callable[[str, Any], None]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def whole(low: int, high: int = MAX_INT) -> Check:
    """A whole number in [low, high]."""

    def check(name: str, value: Any) -> None:
        if not _is_int(value) or not low <= value <= high:
            upto = f" and <= {high}" if high < MAX_INT else ""
            raise LTHError(f"{name} must be a whole number >= {low}{upto}, got {value!r}")

    return check


def fraction(zero_means_off: bool = False) -> Check:
    """A fraction strictly between 0 and 1 (or exactly 0 where 0 switches the setting off)."""

    def check(name: str, value: Any) -> None:
        off = zero_means_off and _is_number(value) and value == 0
        if not off and not (_is_number(value) and 0 < value < 1):
            raise LTHError(f"{name} must be a fraction between 0 and 1, got {value!r}")

    return check


def number(low: float = 0.0, *, strict: bool, below: float = math.inf) -> Check:
    """A finite number > low (strict) or >= low, and < below."""

    def check(name: str, value: Any) -> None:
        ok = _is_number(value) and math.isfinite(value) and value < below
        ok = ok and (value > low if strict else value >= low)
        if not ok:
            if strict and low == 0:
                what = "a positive number"
            else:
                what = f"a finite number >= {low:g}" if not strict else f"a number > {low:g}"
            if below < math.inf:
                what += f" and < {below:g}"
            raise LTHError(f"{name} must be {what}, got {value!r}")

    return check


def one_of(choices: tuple[str, ...]) -> Check:
    """One of a fixed set of names."""

    def check(name: str, value: Any) -> None:
        if value not in choices:
            raise LTHError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")

    return check


def names_from(choices: tuple[str, ...], what: str) -> Check:
    """Names from a fixed set, each at most once (empty allowed)."""

    def check(name: str, value: Any) -> None:
        unknown = [c for c in value if c not in choices]
        if unknown:
            raise LTHError(
                f"unknown {what} {unknown[0]!r}; choose from {', '.join(choices)} or none"
            )
        if len(set(value)) != len(value):
            raise LTHError(f"each {what} may be named once in {name}")

    return check


def text(name: str, value: Any) -> None:
    """A non-empty string."""
    if not isinstance(value, str) or not value.strip():
        raise LTHError(f"{name} must be a non-empty name, got {value!r}")


def iterations_list(name: str, value: Any) -> None:
    """Whole numbers >= 1 in increasing order (iterations)."""
    if any(not _is_int(v) or not 1 <= v <= MAX_INT for v in value):
        raise LTHError(f"{name} must be whole numbers >= 1 (iterations), got {list(value)!r}")
    if list(value) != sorted(set(value)):
        raise LTHError(f"{name} must be in increasing order without repeats, got {list(value)!r}")


def setting(
    default: Any,
    help: str,
    check: Check | None = None,
    *,
    group: str = MORE,
    metavar: str | None = None,
    choices: tuple[str, ...] | None = None,
    names: str | None = None,
) -> Any:
    """Declare one setting: its default, its help text, its check, and its ``lth run`` option.

    ``names`` names a registry ("models", "datasets", "inits") whose names the option's help
    lists.
    """
    meta = {"help": help, "check": check, "group": group, "metavar": metavar}
    meta |= {"choices": choices, "names": names}
    return field(default=default, metadata=meta)


class _Declared:
    """Validation from the declarations: each field's check, then the class's joint checks."""

    def __post_init__(self) -> None:
        for f in fields(self):  # type: ignore[arg-type]
            check = f.metadata.get("check")
            if check is not None:
                check(f.name, getattr(self, f.name))
        self._check_together()

    def _check_together(self) -> None:
        """Checks that involve several fields (none by default)."""


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
    dataset: str = setting("mnist", "dataset", text, group=STUDY, metavar="NAME", names="datasets")
    init: str = setting(
        "xavier_normal", "initialisation scheme", text, group=STUDY, metavar="SCHEME", names="inits"
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
        0.1,
        "per-level rate of the output layer (Frankle & Carbin prune it at half the rate); "
        "honoured by global pruning (the output layer is pruned on its own, the others ranked "
        "together) and with --target (the output layer keeps target^(ln(1-P)/ln(1-rate)))",
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
    target: float = setting(
        0.0,
        "fraction of weights left after the last level, reached in equal steps "
        "(0: prune by --rate)",
        fraction(zero_means_off=True),
    )
    pruning: str = setting(
        "layerwise", "how weights are ranked", one_of(PRUNINGS), group=STUDY, choices=PRUNINGS
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
        "(magnitude: IMP; random; magnitude_init, snip, grasp, synflow prune at initialisation)",
        text,
        group=STUDY,
        metavar="NAME",
        names="criteria",
    )
    controls: tuple[str, ...] = setting(
        DEFAULT_CONTROLS,
        "comma list of controls, or none",
        names_from(CONTROLS, "control"),
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
        typed = {k: _typed(k, v, kinds[k], source) for k, v in values.items()}
        return cls(**typed)


def field_kinds() -> dict[str, tuple[type, type | None]]:
    """Setting name -> (kind, element kind) from the annotations: int, float, str, bool, tuple."""
    hints = typing.get_type_hints(ExperimentConfig)
    kinds: dict[str, tuple[type, type | None]] = {}
    for f in fields(ExperimentConfig):
        hint = hints[f.name]
        if typing.get_origin(hint) is tuple:
            kinds[f.name] = (tuple, typing.get_args(hint)[0])
        else:
            kinds[f.name] = (hint, None)
    return kinds


def _typed(key: str, value: Any, kind: tuple[type, type | None], source: str) -> Any:
    """One value from a file or preset, type-checked (ranges are the dataclass's checks)."""
    outer, element = kind
    if outer is tuple:
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, element) and not isinstance(v, bool) for v in value
        )
        want = f"a list of {'names' if element is str else 'whole numbers'}"
        value = tuple(value) if ok else value
    elif outer is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif outer is int:
        ok, want = _is_int(value), "a whole number"
    elif outer is float:
        ok, want = _is_number(value), "a number"
        value = float(value) if ok else value
    else:
        ok, want = isinstance(value, str), "a string"
    if not ok:
        raise LTHError(f"{source}: {key} must be {want}, got {value!r}")
    return value


def _document(cls: type) -> None:
    """Write each field's type, help and default, from its declaration, into the class
    docstring as its Google-style ``Attributes:`` section (before any ``Raises:`` or
    ``Examples:`` section of the docstring)."""
    lines = [
        f"    {f.name} ({f.type}): {f.metadata['help']}. Default: ``{f.default!r}``."
        for f in fields(cls)
    ]
    attributes = "Attributes:\n" + "\n".join(lines) + "\n"
    doc = inspect.cleandoc(cls.__doc__ or "")  # Python 3.13 dedents docstrings itself
    section = re.search(r"\n(Raises|Examples):", doc)
    at = section.start() if section else len(doc)
    cls.__doc__ = f"{doc[:at].rstrip()}\n\n{attributes}{doc[at:]}"


for _cls in (StudyConfig, TrainConfig, ExperimentConfig):
    _document(_cls)


# ------------------------------------------------------------------------------- presets
PRESETS: dict[str, dict] = {
    "default": {},  # the ExperimentConfig defaults: 100% -> 10.7% of the weights
    "quick": {"levels": 5, "iterations": 1000},  # 100% -> 32.9% of the weights
    # Frankle & Carbin 2019: 20 levels (100% -> 1.2%) x 50,000 iterations, 5 replicates
    "lenet_300_100_paper": {"levels": 20, "iterations": 50_000, "replicates": 5},
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


# ---------------------------------------------------------------------------------- TOML
def _toml_literal(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_literal(x) for x in v) + "]"
    return json.dumps(str(v))


def toml_text(values: dict) -> str:
    """A flat dict (plus one level of tables) as TOML text."""
    lines, tables = [], []
    for key, v in values.items():
        if isinstance(v, dict):
            tables.append((key, v))
        elif v is not None:
            lines.append(f"{key} = {_toml_literal(v)}")
    for name, table in tables:
        lines += ["", f"[{name}]"]
        lines += [f"{k} = {_toml_literal(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


#: tables of a run's config.toml that describe the run rather than set it (ignored on reading)
INFO_TABLES = ("environment", "source")


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The settings of a TOML file; its information tables are returned under their names."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    path = Path(path)
    try:
        content = path.read_text(encoding="utf-8-sig")  # a byte-order mark is fine
    except FileNotFoundError:
        raise LTHError(f"{what} {path} does not exist; check the path") from None
    except IsADirectoryError:
        raise LTHError(f"{what} {path} is a folder; pass a TOML file") from None
    except UnicodeDecodeError:
        raise LTHError(f"{what} {path} is not UTF-8 text; pass a TOML file") from None
    except OSError as e:
        raise LTHError(f"cannot read {what} {path}: {e.strerror}; check it") from None
    try:
        values = tomllib.loads(content)
    except tomllib.TOMLDecodeError as e:
        problem = " ".join(str(e).split())
        raise LTHError(f"{what} {path} is not valid TOML ({problem}); fix it") from None
    for table in INFO_TABLES:
        if not isinstance(values.get(table, {}), dict):
            raise LTHError(f"{what} {path}: {table} must be a table, [{table}]")
    return values


def config_from_toml(path: str | Path, what: str = "config file") -> dict:
    """The settings of a TOML file (information tables left out), each type-checked."""
    values = read_toml(path, what)
    for table in INFO_TABLES:
        values.pop(table, None)
    source = f"{what} {path}"
    kinds = field_kinds()
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise LTHError(
            f"{source}: unknown setting {unknown[0]!r}; valid settings: {', '.join(sorted(kinds))}"
        )
    return {k: _typed(k, v, kinds[k], source) for k, v in values.items()}


def read_run_config(run_dir: str | Path) -> ExperimentConfig:
    """The configuration stored in a run folder's ``config.toml``."""
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise LTHError(f"{run_dir} is not an lth run folder (no config.toml)")
    values = config_from_toml(path, "run configuration")
    return ExperimentConfig.from_dict(values, f"run configuration {path}")


def read_run_info(run_dir: str | Path) -> dict:
    """The information tables of a run's ``config.toml`` (``environment``, ``source``)."""
    values = read_toml(Path(run_dir) / "config.toml", "run configuration")
    return {t: values[t] for t in INFO_TABLES if t in values}


# --------------------------------------------------------------------- command-line options
def whole_text(text: str) -> int:
    """An option's whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def number_text(text: str) -> float:
    """An option's number."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def names_text(text: str) -> list[str]:
    """A comma list; ``none`` or an empty string is the empty list."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    return [] if items in ([], ["none"]) else items


def whole_list_text(text: str) -> list[int]:
    """A comma list of whole numbers."""
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of whole numbers, got {text!r}"
        ) from None


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _registry_names(which: str) -> list[str]:
    if which == "models":
        from lth.core.models import model_names

        return model_names()
    if which == "datasets":
        from lth.data import dataset_names

        return dataset_names()
    if which == "controls":
        from lth.pruning.controls import control_help

        return [f"{name}: {what}" for name, what in control_help().items()]
    if which == "criteria":
        from lth.pruning.criteria import criterion_names

        return criterion_names()
    from lth.core.init import init_names

    return init_names()


def option_name(setting_name: str) -> str:
    """The ``lth run`` option of a setting, e.g. ``--output-rate`` for ``output_rate``."""
    return "--" + setting_name.replace("_", "-")


def add_options(
    parser: argparse.ArgumentParser, defaults: ExperimentConfig, groups: dict | None = None
) -> None:
    """One ``lth run`` option per setting, in groups, generated from the declarations.

    An option is absent from the parsed namespace unless given (so that a preset or config
    file is not overridden by a default). ``--iterations`` and ``--epochs`` exclude each other.
    ``groups`` maps group titles to argument groups the caller already made.
    """
    kinds = field_kinds()
    by_group: dict[str, Any] = dict(groups or {})
    for group in (STUDY, TRAINING, MORE):
        if group not in by_group:
            by_group[group] = parser.add_argument_group(group)
    length = by_group[TRAINING].add_mutually_exclusive_group()
    for f in fields(ExperimentConfig):
        meta = f.metadata
        group = length if f.name in ("iterations", "epochs") else by_group[meta["group"]]
        help_text = meta["help"]
        if meta["names"]:
            sep = "; " if meta["names"] == "controls" else ", "
            help_text += f"; registered: {sep.join(_registry_names(meta['names']))}"
        help_text += f" (default: {_show(getattr(defaults, f.name))})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
        outer, element = kinds[f.name]
        if outer is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif meta["choices"]:
            kw["choices"] = meta["choices"]
        else:
            if outer is tuple:
                kw["type"] = names_text if element is str else whole_list_text
            else:
                kw["type"] = {int: whole_text, float: number_text, str: str}[outer]
            default_metavar = {tuple: "LIST", int: "N", float: "X", str: "NAME"}[outer]
            kw["metavar"] = meta["metavar"] or default_metavar
        group.add_argument(option_name(f.name), **kw)


__all__ = [
    "BRANCHES",
    "CONTROLS",
    "DEFAULT_CONTROLS",
    "OPTIMIZERS",
    "PRESETS",
    "PRESET_DESCRIPTIONS",
    "PRUNINGS",
    "RESETS",
    "STUDY",
    "ExperimentConfig",
    "StudyConfig",
    "TrainConfig",
    "add_options",
    "check_schedule",
    "config_from_toml",
    "field_kinds",
    "get_preset",
    "option_name",
    "preset_config",
    "preset_names",
    "read_run_config",
    "read_run_info",
    "read_toml",
    "setting",
    "toml_text",
    "names_text",
    "number_text",
    "whole_list_text",
    "whole_text",
]
