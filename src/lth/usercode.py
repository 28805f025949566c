"""The one gate for user code: every ``package.module:function`` setting passes through
:func:`import_code` before anything imports it.

A setting names code when it holds a ``:`` (``model``, ``criterion``, ``dataset``:
:data:`CODE_SETTINGS`).
Code is imported only when the user named it where it is used: on the command line
(``--model pkg.mod:fn``), in the Python call (a config built in Python, ``model=``), or when
they said so (``--trust-code``, ``trust_code=True``). Code named in a file (``--config``, a
sweep file, a run folder's ``config.toml``, an export file) is data, and is refused otherwise
with one line. A :class:`CodeTrust` is plain picklable data: Ray's workers get the driver's.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass

from .errors import LTHError

#: The settings of an :class:`~lth.config.ExperimentConfig` that may name code.
CODE_SETTINGS = ("model", "criterion", "dataset")


@dataclass(frozen=True)
class CodeTrust:
    """Which code may be imported: the specs the user named, or any (``trusted``).

    ``command_line``: the user named them on a command line, so modules are looked up in the
    current folder too (as ``python -m`` does) and a refusal names the options to use.
    ``options``: the settings the command has an option for (``lth run --model``); a command
    without one (``lth sweep``, ``lth export``) is told of ``--trust-code`` alone.
    """

    named: frozenset[str] = frozenset()
    trusted: bool = False
    command_line: bool = False
    options: tuple[str, ...] = CODE_SETTINGS

    @classmethod
    def of(cls, config) -> CodeTrust:
        """The trust of a config the caller built (named in the Python call): the code it
        names, and no more."""
        return cls(frozenset(spec for _, spec in code_settings(config)))

    def check(self, spec: str, what: str) -> None:
        """Refuse ``spec`` (code for ``what``) unless the user named it or trusts code."""
        if self.trusted or spec in self.named:
            return
        if not self.command_line:
            how = (
                "when the Python call names it (a config built in Python, model=) or with "
                "trust_code=True"
            )
        elif what in self.options:
            how = f"when it is named on the command line (--{what}) or with --trust-code"
        else:  # this command has no --model/--criterion: a file names its code
            how = "when it is named on the command line or with --trust-code: add --trust-code"
        raise LTHError(f"the configuration names {what} code {spec!r}; lth imports code only {how}")


#: Nothing trusted: code is refused unless the caller passes a trust that names it.
NO_TRUST = CodeTrust()


def as_trust(trust: bool | CodeTrust) -> CodeTrust:
    """A :class:`CodeTrust` from a Python API's ``trust_code`` (a bool, or a CodeTrust)."""
    return trust if isinstance(trust, CodeTrust) else CodeTrust(trusted=bool(trust))


def names_code(spec: object) -> bool:
    """Whether a setting's value names code (``package.module:function``)."""
    return isinstance(spec, str) and ":" in spec


def code_settings(config) -> list[tuple[str, str]]:
    """(setting, spec) of every setting of ``config`` that names code."""
    return [(w, getattr(config, w)) for w in CODE_SETTINGS if names_code(getattr(config, w))]


def check_config(config, trust: CodeTrust, given: Collection[str] = ()) -> None:
    """Refuse a config naming code that ``trust`` does not allow, before anything is imported
    (``given``: settings the caller replaced with objects, e.g. a model passed as ``model=``)."""
    for what, spec in code_settings(config):
        if what not in given:
            trust.check(spec, what)


def import_code(spec: str, what: str, trust: CodeTrust) -> Callable:
    """The function a user named as ``package.module:function`` for a ``what`` (a model
    factory, a criterion), imported only if ``trust`` allows it; errors are one line."""
    trust.check(spec, what)
    if trust.command_line and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        raise LTHError(
            f"cannot import {module_name!r} for {what} {spec!r} ({e}); put its folder on "
            "PYTHONPATH or install it"
        ) from None
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - a syntax error or an exit in the user's module
        raise LTHError(
            f"cannot import {module_name!r} for {what} {spec!r}: {type(e).__name__}: {e}"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise LTHError(f"{module_name} has no function {attr!r} for {what} {spec!r}")
    return function


__all__ = [
    "CODE_SETTINGS",
    "NO_TRUST",
    "CodeTrust",
    "as_trust",
    "check_config",
    "code_settings",
    "import_code",
    "names_code",
]
