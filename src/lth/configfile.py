"""TOML in and out: a configuration file or a run's ``config.toml`` read and type-checked
(:func:`config_from_toml`, :func:`read_run_config`, :func:`read_run_info`), and settings written
as TOML text (:func:`toml_text`).

Imports only :mod:`lth.config` and :mod:`lth.errors`.
"""

from __future__ import annotations

import json
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
    "config_from_toml",
    "read_run_config",
    "read_run_info",
    "read_toml",
    "toml_text",
]
