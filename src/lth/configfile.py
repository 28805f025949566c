"""TOML in and out: a configuration file or a run's ``config.toml`` read and type-checked
(:func:`config_from_toml`, :func:`read_run_config`, :func:`read_run_info`), settings written
as TOML text (:func:`toml_text`), and which settings apply to a study (:func:`applied_settings`:
a run's ``config.toml`` records only those; a setting missing from a file has its default).

Imports only :mod:`lth.config` and :mod:`lth.errors`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lth.config import ExperimentConfig, field_kinds, typed_value
from lth.errors import LTHError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


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


#: Settings that apply to a study only in some cases, each with the test that it does not
#: apply, on the study's settings ``v`` and whether its data has an augmentation ``aug``. A
#: test reads only settings that no other test drops (so that a file read back with defaults
#: for the missing keys drops the same ones again).
NOT_APPLYING: dict[str, Callable[[dict, bool], bool]] = {
    "augment": lambda v, aug: not aug,  # the dataset defines no augmentation
    "momentum": lambda v, aug: v["optimizer"] != "sgd",  # Adam has none
    "gamma": lambda v, aug: not v["milestones"],  # no milestone to multiply the rate at
    "iterations": lambda v, aug: bool(v["epochs"]),  # epochs set the iterations
    "rewind_iteration": lambda v, aug: v["reset"] != "rewind",  # no rewinding
    "conv_rate": lambda v, aug: v["pruning"] == "global" or not v["levels"],
    "prune_types": lambda v, aug: bool(v["prune_patterns"]),  # the patterns choose instead
    # a study without pruning levels (the dense network alone) prunes nothing
    **dict.fromkeys(
        ("rate", "output_rate", "target", "pruning", "criterion", "controls"),
        lambda v, aug: not v["levels"],
    ),
}


def applied_settings(values: Mapping[str, Any], augments: bool = True) -> dict:
    """The settings ``values`` (:meth:`ExperimentConfig.to_dict`; a missing one has its
    default) less those that do not apply to the study (:data:`NOT_APPLYING`): what a run's
    ``config.toml`` records, and what two runs are compared on.

    Args:
        values: Settings by name, as plain values.
        augments: Whether the study's data has an augmentation (``augment`` applies).

    Returns:
        dict: The settings that apply, in declaration order.

    Examples:
        >>> from lth.config import ExperimentConfig
        >>> config = ExperimentConfig(optimizer="sgd", momentum=0.9, reset="finetune").to_dict()
        >>> sorted(set(config) - set(applied_settings(config, augments=False)))
        ['augment', 'gamma', 'rewind_iteration']
    """
    full = ExperimentConfig().to_dict() | dict(values)
    return {
        k: v
        for k, v in full.items()
        if k not in NOT_APPLYING or not NOT_APPLYING[k](full, augments)
    }


def read_toml(path: str | Path, what: str = "config file") -> dict:
    """The settings of a TOML file; its information tables are returned under their names."""
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
    return {k: typed_value(k, v, kinds[k], source) for k, v in values.items()}


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


__all__ = [
    "INFO_TABLES",
    "NOT_APPLYING",
    "applied_settings",
    "config_from_toml",
    "read_run_config",
    "read_run_info",
    "read_toml",
    "toml_text",
]
