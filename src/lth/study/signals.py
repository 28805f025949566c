"""Stopping a study on a signal: :class:`StopOnSignal` asks it to stop at the next
evaluation, after a checkpoint, and :class:`Interrupted` is raised then (resumable).

Imports nothing of lth's.
"""

from __future__ import annotations

import signal
import threading


class Interrupted(KeyboardInterrupt):
    """The study stopped on SIGINT or SIGTERM after saving a checkpoint; it can be resumed."""

    def __init__(self, signal_name: str, where: str):
        super().__init__(f"{signal_name}; {where}")
        self.signal_name = signal_name
        self.where = where


class StopOnSignal:
    """SIGINT/SIGTERM ask the study to stop at the next evaluation, after a checkpoint.

    A second SIGINT (Ctrl-C) stops at once. Outside the main thread nothing is installed.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.name: str | None = None
        self.previous: dict = {}

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self.previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.name = signal.Signals(signum).name


__all__ = ["Interrupted", "StopOnSignal"]
