"""``python tests/held_run.py ARGS``: the ``lth ARGS`` command, held at a named point of its run
so that a test can signal or kill it there on a machine of any speed (no sleeps, no polling races).

``$LTH_TEST_HELD_RUN`` names a folder and ``$LTH_TEST_HELD_AT`` the point:

- ``checkpoint:L:I``: the evaluation at iteration I of level L, just after its checkpoint (if one
  is due) is written and before the run's hook (where a signal stops the run) is called;
- ``level:L``: just after level L is saved (weights, tables and progress marker).

There the process writes ``reached`` into the folder and waits (bounded, so a broken test fails
instead of hanging) until the test creates ``release``; a signal sent meanwhile is handled at once.

With ``$LTH_TEST_NO_FIGURES`` set, the run ends without drawing its figures (as conftest's
``no_figures``: about 2 s a run) and without importing matplotlib, for tests that never look at
them.
"""

from __future__ import annotations

import os
import sys
import time
import types
from pathlib import Path

from lth.cli import main
from lth.runfolder.runs import RunFolder

HOLD, AT = "LTH_TEST_HELD_RUN", "LTH_TEST_HELD_AT"  # not ray_factories.HOLD
NO_FIGURES = "LTH_TEST_NO_FIGURES"


def hold(point: str) -> None:
    """Wait at ``point`` if it is the one the test named (once per process)."""
    if os.environ.get(AT) != point or (Path(os.environ[HOLD]) / "reached").exists():
        return
    folder = Path(os.environ[HOLD])
    (folder / "reached").write_text(str(os.getpid()))
    for _ in range(6000):
        if (folder / "release").exists():
            return
        time.sleep(0.1)


def install() -> None:
    """Wrap the run folder's checkpoint and level writers with :func:`hold`."""
    save_checkpoint, save_level = RunFolder.save_checkpoint, RunFolder.save_level

    def checkpoint(self, level, group, trainer, force=False):
        save_checkpoint(self, level, group, trainer, force)
        if not force:
            hold(f"checkpoint:{level}:{trainer.iteration}")

    def level_saved(self, level, results):
        save_level(self, level, results)
        hold(f"level:{level}")

    RunFolder.save_checkpoint, RunFolder.save_level = checkpoint, level_saved
    if os.environ.get(NO_FIGURES):  # a stand-in for lth.analysis.plots: matplotlib not even loaded
        import lth.analysis

        plots = types.ModuleType("lth.analysis.plots", "no figures (tests/held_run.py)")
        plots.plot_runs = lambda *args, **kwargs: {}
        sys.modules[plots.__name__] = lth.analysis.plots = plots


def wait_for(folder: Path, proc, timeout: float = 300.0) -> None:
    """Return once the process held at its point (``reached``); fail if it ended first."""
    end = time.monotonic() + timeout
    while not (folder / "reached").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "timed out waiting for the run to reach its point"
        time.sleep(0.01)


if __name__ == "__main__":
    install()
    sys.exit(main(sys.argv[1:]))
