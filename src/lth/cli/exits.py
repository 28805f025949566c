"""The ``lth`` command's exit statuses and its one-line messages on stderr.

Imports only :mod:`lth.errors`.
"""

from __future__ import annotations

import sys

from lth.errors import LTHError

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(LTHError):
    """Bad command-line syntax (argparse's own errors), reported on one line."""


def one_line(text: object) -> str:
    """``text`` on one line, its whitespace runs made single spaces."""
    return " ".join(str(text).split())


def error(message: str, kind: str = "error") -> None:
    """Print ``lth: KIND: message`` on one line of stderr."""
    print(f"lth: {kind}: {one_line(message)}", file=sys.stderr, flush=True)


def warning(text: str) -> None:
    """Print ``lth: warning: text`` on one line of stderr."""
    error(text, "warning")


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "UsageError",
    "error",
    "one_line",
    "warning",
]
