"""The settings of a study from the command line: one ``lth run`` option per setting
(:func:`add_options`, generated from :mod:`lth.config`'s declarations), the option value
parsers, and the configuration the options resolve to (:func:`resolve_config`).

Imports the root leaves (config, configfile, presets, usercode, errors); the registries
(models, data, criteria, controls: they import torch) only when a help is printed or a
configuration checked, so that ``lth --help`` and ``lth report --help`` start without torch.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

from lth.config import INIT_MODEL, MORE, STUDY, TRAINING, ExperimentConfig, field_kinds
from lth.configfile import config_from_toml
from lth.errors import LTHError
from lth.presets import get_preset
from lth.usercode import CODE_SETTINGS, CodeTrust, names_code

DEFAULT_PRESET = "default"


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


def number_list_text(text: str) -> list[float]:
    """A comma list of numbers (``--rate-schedule 0.2,0.2,0.5``)."""
    try:
        return [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of numbers, got {text!r}"
        ) from None


def _show(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def _registry_names(which: str) -> list[str]:
    if which == "models":
        from lth.core.models import model_names  # lazy: registries import torch

        return model_names()
    if which == "datasets":
        from lth.data import dataset_names  # lazy: registries import torch

        return dataset_names()
    if which == "controls":
        from lth.pruning.controls import control_help  # lazy: registries import torch

        return [f"{name}: {what}" for name, what in control_help().items()]
    if which == "criteria":
        from lth.pruning.criteria import criterion_names  # lazy: registries import torch

        return criterion_names()
    from lth.core.init import init_names  # lazy: registries import torch

    return init_names()


#: Where an option's help lists a registry's names (``{registered:models}``): filled in by
#: :class:`HelpFormatter` only when a help is printed, as the registries import torch, which
#: building the parser (every command, ``lth --help``) need not.
REGISTERED = "{registered:%s}"
_REGISTERED_RE = re.compile(r"\{registered:(\w+)\}")


def fill_registered(text: str) -> str:
    """``text`` with each :data:`REGISTERED` mark replaced by that registry's names."""

    def names(match: re.Match) -> str:
        sep = "; " if match[1] == "controls" else ", "
        return sep.join(_registry_names(match[1])).replace("%", "%%")  # help is %-formatted

    return _REGISTERED_RE.sub(names, text)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, the registered names filled into a help when it is printed."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        return fill_registered(text) if text else text


class RawDescriptionHelpFormatter(HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """:class:`HelpFormatter` that keeps the description's line breaks."""


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
            help_text += "; registered: " + REGISTERED % meta["names"]
        help_text += f" (default: {_show(getattr(defaults, f.name))})"
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": help_text}
        outer, element = kinds[f.name]
        if outer is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif meta["choices"]:
            kw["choices"] = meta["choices"]
        else:
            if outer is tuple:
                kw["type"] = {str: names_text, float: number_list_text}.get(
                    element, whole_list_text
                )
            else:
                kw["type"] = {int: whole_text, float: number_text, str: str}[outer]
            default_metavar = {tuple: "LIST", int: "N", float: "X", str: "NAME"}[outer]
            kw["metavar"] = meta["metavar"] or default_metavar
        group.add_argument(option_name(f.name), **kw)


def read_config_file(path: str) -> dict:
    """Settings from a TOML file (``--config``), type-checked; see :mod:`lth.config`."""
    if not str(path).strip():
        raise LTHError("--config is empty; give the path of a TOML file")
    return config_from_toml(Path(path).expanduser(), "config file")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """The study's ExperimentConfig: defaults < preset < config file < options given."""
    given = vars(args)
    preset = given.get("preset", DEFAULT_PRESET)
    values = get_preset(preset)
    if "config" in given:
        values |= read_config_file(given["config"])
    for f in fields(ExperimentConfig):
        if f.name in given:
            values[f.name] = given[f.name]
    if "iterations" in given:
        values["epochs"] = 0  # --iterations given: it wins over any epochs from a file
    return ExperimentConfig.from_dict(values, "options")


def check_names(config: ExperimentConfig) -> None:
    """The registered names a configuration uses exist (model, init, dataset, criterion,
    controls)."""
    from lth.core.init import init_names  # lazy: registries import torch
    from lth.core.models import model_names  # lazy: registries import torch
    from lth.data import get_spec  # lazy: registries import torch

    if ":" not in config.model and config.model not in model_names():  # else module:function
        raise LTHError(f"unknown model {config.model!r}; choose one of {', '.join(model_names())}")
    if config.init not in (*init_names(), INIT_MODEL):
        raise LTHError(
            f"unknown init scheme {config.init!r}; choose one of {', '.join(init_names())} or "
            f"{INIT_MODEL} (the model's own weights)"
        )
    if not names_code(config.dataset):  # else module:function, imported when allowed
        get_spec(config.dataset)
    from lth.pruning.controls import check_controls  # lazy: registries import torch

    check_controls(config.controls, config.granularity)
    if ":" not in config.criterion:  # else module:function, imported when allowed
        from lth.pruning.criteria import get_criterion  # lazy: registries import torch

        get_criterion(config.criterion)


def code_trust(args: argparse.Namespace) -> CodeTrust:
    """The code this command may import (:mod:`lth.usercode`): what its options name
    (``--model``, ``--criterion``), or any with ``--trust-code``; a file (``--config``, a sweep
    file, a run folder) is data, and code it names is refused otherwise."""
    given = vars(args)
    named = frozenset(given[w] for w in CODE_SETTINGS if names_code(given.get(w)))
    # the options that name code: every code setting for lth run and lth stability without
    # RUN_DIR; --model alone for lth export and lth stability RUN_DIR (a run of a module
    # object); none for lth sweep (a refusal names --trust-code alone)
    command = given.get("command")
    options: tuple[str, ...] = ()
    if command == "run" or (command == "stability" and not given.get("run_dir")):
        options = CODE_SETTINGS
    elif command in ("export", "stability"):
        options = ("model",)
    trusted = given.get("trust_code", False)
    return CodeTrust(named, trusted=trusted, command_line=True, options=options)


__all__ = [
    "DEFAULT_PRESET",
    "REGISTERED",
    "HelpFormatter",
    "RawDescriptionHelpFormatter",
    "add_options",
    "check_names",
    "code_trust",
    "fill_registered",
    "names_text",
    "number_text",
    "option_name",
    "read_config_file",
    "resolve_config",
    "whole_list_text",
    "whole_text",
]
