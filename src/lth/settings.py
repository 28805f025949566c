"""How a setting is declared and checked: :func:`setting` (default, help, check and the
``lth run`` option of one field), the checks of single values, the validation every settings
class shares, TOML value typing, and the ``Attributes:`` section written from the declarations.
:mod:`lth.config` declares the settings with it. Imports nothing of lth's but :mod:`lth.errors`.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import field, fields
from typing import Any

from lth.errors import LTHError

MAX_INT = 2**63 - 1  # TOML integers are signed 64-bit
#: the option group of ``lth run --help`` a setting falls in unless it names one
MORE = "more settings (as in config.toml)"

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


def distinct_names(what: str) -> Check:
    """Names (letters, digits, ``_``), each at most once (empty allowed); which names exist is
    the registry's to say (``lth.pruning.controls.check_controls``)."""

    def check(name: str, value: Any) -> None:
        bad = [c for c in value if not (isinstance(c, str) and c.isidentifier())]
        if bad:
            raise LTHError(f"{name}: {bad[0]!r} is not a {what} name; name them like reinit")
        if len(set(value)) != len(value):
            raise LTHError(f"each {what} may be named once in {name}")

    return check


def rate_list(name: str, value: Any) -> None:
    """Pruning rates, each in [0, 1)."""
    bad = [v for v in value if not (_is_number(v) and 0 <= v < 1)]
    if bad:
        raise LTHError(
            f"{name}: {bad[0]!r} is not a rate in [0, 1) (0.2 prunes 20% of the survivors); "
            f"got {list(value)!r}"
        )


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


def typed_value(key: str, value: Any, kind: tuple[type, type | None], source: str) -> Any:
    """One value from a file or preset, type-checked (ranges are the dataclass's checks)."""
    outer, element = kind
    if outer is tuple:
        ok = isinstance(value, list | tuple) and all(
            isinstance(v, element) and not isinstance(v, bool) for v in value
        )
        want = f"a list of {'names' if element is str else 'whole numbers'}"
        if element is float:  # numbers: a TOML 0 is the rate 0.0
            ok = isinstance(value, list | tuple) and all(_is_number(v) for v in value)
            want, value = "a list of numbers", [float(v) for v in value] if ok else value
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
