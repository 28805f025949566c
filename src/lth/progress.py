"""What a running study shows: progress bars on stderr and one line per finished level.

:class:`Progress` is the experiment's hook (called after every evaluation) and is told of each
finished level; ``quiet`` hides the bars but keeps the per-level lines.
"""

from __future__ import annotations

import sys


class Progress:
    """Progress bars (stderr) and one line per finished level (stdout)."""

    def __init__(self, config, iterations: int, group_size: int, quiet: bool):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.config = config
        self.iterations = iterations
        self.group_size = group_size
        self.alive = config.replicates  # replicates whose ticket has not diverged
        self.quiet = quiet
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
        self.remaining: dict[int, float] = {}

    def _level_bar(self, level: int):
        if self.level != level or self.bar is None:
            self._close_bar()
            self.level = level
            self.bar = self.tqdm(
                total=self.iterations * self._groups(),
                desc=f"level {level}",
                unit="it",
                position=1,
                leave=False,
                file=sys.stderr,
                disable=self.quiet,
                dynamic_ncols=True,
            )
        return self.bar

    def _groups(self) -> int:
        jobs = self.alive * (1 + len(self.config.controls))
        return max(1, -(-jobs // self.group_size))

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def hook(self, level: int, group: int, trainer) -> None:
        """Called by the experiment after every evaluation."""
        if self.quiet:
            return
        bar = self._level_bar(level)
        if level not in self.remaining:
            kept = sum(float(m.sum()) for m in trainer.masks.values())
            total = sum(m.numel() for m in trainer.masks.values())
            self.remaining[level] = 100.0 * kept / total if total else 100.0
        h = trainer.histories[0]
        val = f"{h.val_acc[-1]:.2f}%" if h.val_acc and h.val_acc[-1] == h.val_acc[-1] else "n/a"
        status = f"{pct(self.remaining[level])} remaining, val acc {val}"
        bar.set_postfix_str(status, refresh=False)
        self.levels.set_postfix_str(f"level {level}: {status}", refresh=False)
        done = group * self.iterations + trainer.iteration
        bar.update(max(0, done - bar.n))
        self.levels.refresh()

    @staticmethod
    def line_to_stderr(text: str) -> None:
        """Print one line on stderr (a warning before any bar exists)."""
        print(text, file=sys.stderr, flush=True)

    def line(self, text: str, err: bool = False) -> None:
        """Print one line above the bars (stderr when ``err``)."""
        stream = sys.stderr if err else sys.stdout
        self.tqdm.write(text, file=stream)
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
        self.alive = sum(
            1 for r in results if r.branch == "ticket" and r.history.diverged_at is None
        )
        self.levels.update(1)

    def close(self) -> None:
        """Close every bar."""
        self._close_bar()
        self.levels.close()


def pct(value: float) -> str:
    """A percentage with 3 significant digits or so: 51.3%, 3.60%."""
    return f"{value:.1f}%" if value >= 10 else f"{value:.2f}%"


def _average(values: list[float]) -> float:
    return sum(values) / len(values)


__all__ = ["Progress", "pct"]
