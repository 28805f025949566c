"""What a running study shows: progress on stderr and one line per finished level on stdout.

:class:`Progress` is the experiment's hook (called after every evaluation) and is told of each
finished level; ``quiet`` hides the progress but keeps the per-level lines (``lth run
--quiet``); ``silent`` also hides those and every other line on stdout, leaving only warnings
on stderr (:func:`lth.run_experiment` with ``quiet=True``).

On a terminal the progress is two bars: the levels, and the current level's training, whose
total is the level's iterations (when the networks of a level train in several groups, one
after another, the bar starts again for each group and says which; how many groups there are
depends on the thread count and memory). When stderr is not a
terminal (a log file, a cluster job) there are no bars and no escape codes: one plain line
when a level starts and one per evaluation.
"""

from __future__ import annotations

import sys

from tqdm import tqdm


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """Progress (stderr: bars on a terminal, plain lines otherwise) and one line per finished
    level (stdout). ``plain``: force plain lines (True) or bars (False); default: bars only
    when stderr is a terminal. ``silent``: ``quiet``, and no line on stdout either (the
    warnings on stderr stay)."""

    def __init__(
        self,
        config,
        iterations: int,
        group_size: int,
        quiet: bool,
        plain: bool | None = None,
        *,
        silent: bool = False,
    ):
        self.config = config
        self.iterations = iterations
        self.group_size = group_size  # (kept for callers; groups are told by the hook)
        self.silent = silent
        self.quiet = quiet or silent
        self.plain = not _is_terminal(sys.stderr) if plain is None else plain
        self.tqdm = None
        self.levels = None
        if not self.plain:
            self.tqdm = tqdm
            self.levels = tqdm(
                total=config.levels + 1,
                desc="levels",
                unit="level",
                position=0,
                file=sys.stderr,
                disable=quiet,
                dynamic_ncols=True,
            )
        self.bar = None
        self.level: int | None = None
        self.group: int | None = None
        self.remaining: dict[int, float] = {}

    def _where(self, level: int, group: int) -> str:
        """'level 3/8', and the group after the first ('level 3/8, group 2'): the networks of
        a level train in groups, one after another, when they do not all fit in one."""
        return f"level {level}/{self.config.levels}" + (f", group {group + 1}" if group else "")

    def _level_bar(self, level: int, group: int):
        """The training bar of this level and group: total = the level's iterations."""
        if self.bar is None or self.level != level:
            self._close_bar()
            self.bar = self.tqdm(
                total=self.iterations,
                desc=self._where(level, group),
                unit="it",
                position=1,
                leave=False,
                file=sys.stderr,
                disable=self.quiet,
                dynamic_ncols=True,
            )
        elif self.group != group:
            self.bar.reset(total=self.iterations)
            self.bar.set_description_str(self._where(level, group), refresh=False)
        self.level, self.group = level, group
        return self.bar

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def hook(self, level: int, group: int, trainer) -> None:
        """Called by the experiment after every evaluation."""
        if self.quiet:
            return
        if level not in self.remaining:
            kept = sum(float(m.sum()) for m in trainer.masks.values())
            total = sum(m.numel() for m in trainer.masks.values())
            self.remaining[level] = 100.0 * kept / total if total else 100.0
            if self.plain:
                self._err(
                    f"level {level}/{self.config.levels}: {pct(self.remaining[level])} weights "
                    f"remaining, training for {self.iterations} iterations"
                )
        h = trainer.histories[0]
        val = f"{h.val_acc[-1]:.2f}%" if h.val_acc and h.val_acc[-1] == h.val_acc[-1] else "n/a"
        status = f"{pct(self.remaining[level])} remaining, val acc {val}"
        if self.plain:
            self._err(
                f"{self._where(level, group)}: iteration {trainer.iteration}/{self.iterations}, "
                f"{status}"
            )
            return
        bar = self._level_bar(level, group)
        bar.set_postfix_str(status, refresh=False)
        self.levels.set_postfix_str(f"level {level}: {status}", refresh=False)
        bar.update(max(0, min(trainer.iteration, self.iterations) - bar.n))
        self.levels.refresh()

    @staticmethod
    def _err(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    @staticmethod
    def line_to_stderr(text: str) -> None:
        """Print one line on stderr (a warning before any bar exists)."""
        print(text, file=sys.stderr, flush=True)

    def line(self, text: str, err: bool = False) -> None:
        """Print one line above the bars (stderr when ``err``; nothing on stdout when
        ``silent``)."""
        if self.silent and not err:
            return
        stream = sys.stderr if err else sys.stdout
        if self.tqdm is not None:
            self.tqdm.write(text, file=stream)
        else:
            print(text, file=stream)
        stream.flush()

    def level_done(self, level: int, results, resumed: bool = False) -> None:
        """Close the level's bar and print its line: weights remaining, test accuracy."""
        self._close_bar()
        branches: dict[str, list] = {}
        for r in results:
            branches.setdefault(r.branch, []).append(r)
        tickets = branches.get("ticket", results)
        accs = []
        for branch, rs in branches.items():
            good = [
                r.history.test_acc[-1]
                for r in rs
                if r.history.test_acc and r.history.diverged_at is None
            ]
            bad = sum(1 for r in rs if r.history.diverged_at is not None)
            text = f"{_average(good):.2f}%" if good else "diverged"
            if good and bad:
                text += f" ({bad} diverged)"
            accs.append(f"{branch} {text}")
        n = len(tickets)
        mean = f" (mean of {n} replicates)" if n > 1 else ""
        note = " (finished earlier)" if resumed else ""
        self.line(
            f"level {level}/{self.config.levels}: {pct(tickets[0].weights_remaining)} weights "
            f"remaining, test acc{mean} {', '.join(accs)}{note}"
        )
        if self.levels is not None:
            self.levels.update(1)

    def close(self) -> None:
        """Close every bar."""
        self._close_bar()
        if self.levels is not None:
            self.levels.close()


def pct(value: float) -> str:
    """A percentage with 3 significant digits or so: 51.3%, 3.60%."""
    return f"{value:.1f}%" if value >= 10 else f"{value:.2f}%"


def _average(values: list[float]) -> float:
    return sum(values) / len(values)


__all__ = ["Progress", "pct"]
