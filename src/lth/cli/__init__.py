"""The ``lth`` command: ``lth run`` (a whole study into a run folder), ``lth plot``, ``lth report``.

``lth run`` resolves its configuration as ExperimentConfig defaults < ``--preset`` (``default``
when not given) < ``--config FILE`` (TOML, keys = ExperimentConfig field names; an
``[environment]`` table, as in a run's own config.toml, is ignored) < options given on the
command line. It validates everything (settings, names, data, output folder) before it creates
the run folder, then trains level after level with progress bars on stderr and one line per
finished level on stdout, and resumes when started again on the same ``--out``.

Exit status: 0 done, 1 failure at run time (disk full, every ticket diverged),
2 bad input (one line ``lth: error: ...`` on stderr), 130 interrupted (resumable).

The package: :mod:`~lth.cli.exits` (exit statuses, one-line messages), :mod:`~lth.cli.options`
(the settings' options and the configuration they resolve to), :mod:`~lth.cli.parser` (the
argument parser) and :mod:`~lth.cli.commands` (one ``cmd_*`` per command). The top layer: it
may import every other; the heavy modules (study, analysis, stability: torch, matplotlib) only
inside the command that needs them, so that ``lth --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback

from lth.cli.exits import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    error,
    one_line,
)
from lth.cli.options import read_config_file, resolve_config
from lth.cli.parser import build_parser, parse_args
from lth.errors import LTHError
from lth.presets import PRESETS


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lth`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = parse_args(build_parser(), argv)
    except UsageError as e:
        error(str(e))
        return EXIT_USAGE
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else EXIT_OK
    except KeyboardInterrupt:  # Ctrl-C while starting up: nothing was written
        print("\nlth: interrupted while starting; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. lth report RUN | head: stop quietly, like other tools
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except KeyboardInterrupt as e:
        out = getattr(args, "resolved_out", None)
        resumable = args.command in ("run", "sweep")
        again = "run the same command again to resume" if resumable else "rerun it"
        where = f" (--out {out})" if out else ""
        start = "\n" if sys.stderr.isatty() else ""  # past the ^C on a terminal
        # lth.study.signals.Interrupted: the signal, the checkpoint
        what = f" by {e}" if str(e) else ""
        print(f"{start}lth: interrupted{what}; {again}{where}", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM if str(e).startswith("SIGTERM") else EXIT_INTERRUPTED
    except LTHError as e:
        if debug:
            traceback.print_exc()
        error(str(e))
        return EXIT_USAGE
    except OSError as e:
        if debug:
            traceback.print_exc()
        what = e.strerror or one_line(e) or type(e).__name__
        target = f"cannot write {e.filename}" if e.filename else "input/output error"
        if args.command not in ("run", "sweep"):  # what the user named: bad input
            error(f"{target}: {what}; check the path and rerun")
            return EXIT_USAGE
        error(f"{target}: {what}; fix this and run the same command again to resume")
        return EXIT_FAILURE
    except Exception as e:
        if debug:
            traceback.print_exc()
        error(
            f"unexpected {type(e).__name__}: {one_line(e) or 'no message'} "
            "(run again with --debug for the traceback)"
        )
        return EXIT_FAILURE


__all__ = [
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PRESETS",
    "build_parser",
    "main",
    "read_config_file",
    "resolve_config",
]
