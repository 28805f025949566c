"""One small registry of named entries, shared by models, criteria, datasets and controls.

A :class:`Registry` is a ``dict`` (name -> entry) that also keeps a one-line description per
name, refuses empty and repeated names, and looks a name up with a one-line
:class:`~lth.errors.LTHError` listing the choices. It imports nothing of lth but
:mod:`lth.errors`, so any layer may use it.

>>> colours = Registry("colour")
>>> colours.add("red", 0xFF0000, "the colour of stop signs")
16711680
>>> colours.lookup("red"), colours.names(), colours.describe("red")
(16711680, ['red'], 'the colour of stop signs')
>>> colours.lookup("blue")
Traceback (most recent call last):
...
lth.errors.LTHError: unknown colour 'blue'; choose one of red
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from lth.errors import LTHError

T = TypeVar("T")

__all__ = ["Registry"]


class Registry(dict[str, T]):
    """Entries of one kind by name, with a one-line description each.

    ``kind`` names the kind in messages ("model", "criterion"); ``sort`` makes :meth:`names`
    sorted (else registration order); ``unknown`` formats the error of an unknown name, from
    ``kind``, ``name`` and ``names`` (the choices, comma-separated).
    """

    def __init__(
        self,
        kind: str,
        *,
        sort: bool = False,
        unknown: str = "unknown {kind} {name!r}; choose one of {names}",
    ) -> None:
        super().__init__()
        self.kind, self.sort, self.unknown = kind, sort, unknown
        self.descriptions: dict[str, str] = {}
        self.titles: dict[str, str] = {}  # display names for titles ("LeNet-300-100")

    def add(self, name: str, entry: T, description: str = "") -> T:
        """Register ``entry`` as ``name`` (new, non-empty) with its one-line description."""
        if not isinstance(name, str) or not name.strip():
            raise LTHError(f"{self.kind} name must be a non-empty string, got {name!r}")
        if name in self:
            raise LTHError(
                f"{self.kind} name {name!r} is already registered; pick another name "
                f"(taken: {', '.join(self.names())})"
            )
        self[name] = entry
        self.descriptions[name] = description
        return entry

    def register(self, name: str, description: str = "") -> Callable[[T], T]:
        """Decorator form of :meth:`add`: registers what it decorates and returns it."""

        def decorator(entry: T) -> T:
            return self.add(name, entry, description)

        return decorator

    def lookup(self, name: str) -> T:
        """The entry ``name``; an unknown name is a one-line LTHError listing the choices."""
        if isinstance(name, str) and name in self:
            return self[name]
        raise LTHError(
            self.unknown.format(kind=self.kind, name=name, names=", ".join(self.names()))
        )

    def names(self) -> list[str]:
        """The registered names: sorted, or in registration order."""
        return sorted(self) if self.sort else list(self)

    def title(self, name: str) -> str:
        """The display name of ``name`` for figure titles (``name`` itself when none was set).

        >>> r = Registry("model"); r.titles["lenet5"] = "LeNet-5"
        >>> r.title("lenet5"), r.title("my_net")
        ('LeNet-5', 'my_net')
        """
        return self.titles.get(name, name)

    def describe(self, name: str) -> str:
        """The one-line description of ``name`` ("" when it was registered without one)."""
        return self.descriptions.get(name, "")
