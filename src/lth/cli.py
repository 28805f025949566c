"""The ``lth`` command: ``lth run`` (a whole study into a run folder), ``lth plot``, ``lth report``.

``lth run`` resolves its configuration as ExperimentConfig defaults < ``--preset`` (``default``
when not given) < ``--config FILE`` (TOML, keys = ExperimentConfig field names; an
``[environment]`` table, as in a run's own config.toml, is ignored) < options given on the
command line. It validates everything (settings, names, data, output folder) before it creates
the run folder, then trains level after level with progress bars on stderr and one line per
finished level on stdout, and resumes when started again on the same ``--out``.

Exit status: 0 done, 1 failure at run time (disk full, every ticket diverged),
2 bad input (one line ``lth: error: ...`` on stderr), 130 interrupted (resumable).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import re
import sys
import textwrap
import time
import traceback
from dataclasses import MISSING, fields
from datetime import datetime
from pathlib import Path

from .errors import LTHError
from .presets import DESCRIPTIONS, PRESETS, get_preset

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_PRESET = "default"
REPORT_FORMATS = ("table", "md", "csv")
# help of ExperimentConfig settings that have no option of their own above (generated options)
_MORE_HELP = {
    "conv_rate": "per-level rate of conv layers in layer-wise pruning (0: use --rate)",
    "target": "fraction of weights left after the last level, reached in equal steps "
    "(0: prune by --rate)",
    "prune_types": "comma list of layer types whose weights are pruned",
    "prune_patterns": "comma list of parameter-name patterns (fnmatch) to prune, instead "
    "of --prune-types",
    "milestones": "comma list of iterations at which the learning rate is multiplied by --gamma",
    "gamma": "learning-rate factor at each milestone",
    "warmup": "iterations of linear learning-rate warm-up",
    "augment": "data augmentation, for datasets that define one",
}


class UsageError(LTHError):
    """Bad command-line syntax (argparse's own errors), reported on one line."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions carrying one line, not usage + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{_one_line(message)}; see '{self.prog} --help'")


def _whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def _names(text: str) -> list[str]:
    """A comma list; ``none`` or an empty string is the empty list."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    return [] if items in ([], ["none"]) else items


def _int_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a comma list of whole numbers, got {text!r}"
        ) from None


def _defaults() -> dict:
    from .experiment import ExperimentConfig

    return ExperimentConfig().to_dict() | get_preset(DEFAULT_PRESET)


def _show(value) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def build_parser() -> argparse.ArgumentParser:
    """The ``lth`` argument parser with its ``run``, ``plot`` and ``report`` subcommands."""
    from .experiment import CONTROLS, PRUNINGS, RESETS
    from .optim import OPTIMIZERS

    d = _defaults()
    parser = _Parser(
        prog="lth",
        description="Lottery Ticket Hypothesis studies: iterative magnitude pruning with "
        "controls, run folders, plots and reports.",
        allow_abbrev=False,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"lth {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    run = commands.add_parser(
        "run",
        help="run (or resume) a study into a run folder",
        description=textwrap.fill(
            "Run a lottery-ticket study, or resume it in an existing --out folder. Defaults "
            f"below are those of --preset {DEFAULT_PRESET}; another --preset, then a --config "
            "file (TOML, keys as in a run's config.toml), change them, and options given here "
            "override both.",
            78,
        ),
        allow_abbrev=False,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="presets:\n"
        + "\n".join(f"  {name:<22}{DESCRIPTIONS.get(name, '')}" for name in PRESETS),
    )
    S = argparse.SUPPRESS

    def option(group, *flags, key=None, help="", **kw):
        """An ExperimentConfig option: absent from the namespace unless given."""
        suffix = f" (default: {_show(d[key])})" if key else ""
        group.add_argument(*flags, default=S, help=help + suffix, **kw)

    g = run.add_argument_group("study")
    option(
        g,
        "--preset",
        metavar="NAME",
        help=f"named settings: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})",
    )
    option(g, "--config", metavar="FILE", help="TOML file of settings, e.g. a run's config.toml")
    option(g, "--model", metavar="NAME", key="model", help="architecture")
    option(g, "--dataset", metavar="NAME", key="dataset", help="dataset")
    option(g, "--init", metavar="SCHEME", key="init", help="initialisation scheme")
    option(
        g,
        "--levels",
        type=_whole,
        metavar="N",
        key="levels",
        help="pruning levels after the dense level 0",
    )
    option(
        g,
        "--rate",
        type=_number,
        metavar="P",
        key="rate",
        help="fraction of the surviving weights pruned per level",
    )
    option(
        g,
        "--output-rate",
        type=_number,
        metavar="P",
        key="output_rate",
        help="per-level rate of the output layer (layer-wise pruning)",
    )
    option(g, "--pruning", choices=PRUNINGS, key="pruning", help="how weights are ranked")
    option(
        g,
        "--exclude",
        type=_names,
        metavar="PARAMS",
        key="exclude",
        help="comma list of parameters never pruned, e.g. fc3.weight",
    )
    option(
        g,
        "--reset",
        choices=RESETS,
        key="reset",
        help="what the survivors start from at each level",
    )
    option(
        g,
        "--rewind-iteration",
        type=_whole,
        metavar="K",
        key="rewind_iteration",
        help="late rewinding: rewind to the weights at iteration K of level 0 (0 = θ0)",
    )
    option(
        g,
        "--controls",
        type=_names,
        metavar="LIST",
        key="controls",
        help=f"comma list of {', '.join(CONTROLS)}, or none",
    )
    option(
        g,
        "--replicates",
        type=_whole,
        metavar="N",
        key="replicates",
        help="independent repetitions (different θ0 and data order)",
    )
    option(g, "--seed", type=_whole, metavar="N", key="seed", help="random seed")

    t = run.add_argument_group("training (per level)")
    length = t.add_mutually_exclusive_group()
    option(
        length,
        "--iterations",
        type=_whole,
        metavar="N",
        key="iterations",
        help="training iterations per level",
    )
    option(
        length,
        "--epochs",
        type=_whole,
        metavar="N",
        key="epochs",
        help="training epochs per level, instead of --iterations (0: use --iterations)",
    )
    option(t, "--batch-size", type=_whole, metavar="N", key="batch_size", help="examples per step")
    option(t, "--optimizer", choices=OPTIMIZERS, key="optimizer", help="optimizer")
    option(t, "--lr", type=_number, metavar="LR", key="lr", help="learning rate")
    option(t, "--momentum", type=_number, metavar="M", key="momentum", help="SGD momentum")
    option(
        t, "--weight-decay", type=_number, metavar="WD", key="weight_decay", help="L2 weight decay"
    )
    option(
        t,
        "--eval-every",
        type=_whole,
        metavar="N",
        key="eval_every",
        help="iterations between evaluations (validation and test)",
    )
    option(
        t,
        "--val-size",
        type=_whole,
        metavar="N",
        key="val_size",
        help="training images held out for validation and early stopping",
    )
    option(
        t,
        "--max-parallel",
        type=_whole,
        metavar="N",
        key="max_parallel",
        help="at most this many networks trained at once (fewer if memory or threads are short)",
    )

    covered = {a.dest for a in run._actions}
    more = run.add_argument_group("more settings (as in config.toml)")
    for name, (kind, element) in _field_kinds().items():
        if name in covered or kind is None:
            continue
        flag = "--" + name.replace("_", "-")
        text = _MORE_HELP.get(name, f"the {name} setting")
        if kind is bool:
            option(more, flag, key=name, help=text, action=argparse.BooleanOptionalAction)
        elif kind is list:
            parse = _names if element is str else _int_list
            option(more, flag, key=name, help=text, type=parse, metavar="LIST")
        else:
            parse = {int: _whole, float: _number, str: str}[kind]
            metavar = {int: "N", float: "X", str: "NAME"}[kind]
            option(more, flag, key=name, help=text, type=parse, metavar=metavar)

    e = run.add_argument_group("environment and output")
    e.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder holding a <dataset>/ folder of files (default: $LTH_DATA_DIR, "
        "else the user cache, else the bundled MNIST)",
    )
    e.add_argument(
        "--device",
        default="auto",
        help="cpu, cuda, cuda:1, ... or auto: cuda if available (default: auto)",
    )
    e.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="run folder; an existing one is resumed "
        "(default: runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>)",
    )
    e.add_argument(
        "--overwrite", action="store_true", help="delete the run in --out and start over"
    )
    e.add_argument(
        "--checkpoint-every",
        type=_number,
        metavar="SECONDS",
        default=60.0,
        help="seconds between in-level checkpoints; 0: at every evaluation (default: 60)",
    )
    e.add_argument(
        "--threads",
        type=_whole,
        metavar="N",
        default=0,
        help="CPU threads for PyTorch; 0: PyTorch's default. 1 is as fast for small networks "
        "and much faster when other programs share the CPU (default: 0)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bars")
    e.add_argument("--debug", action="store_true", help="show tracebacks")
    run.set_defaults(func=cmd_run)

    plot = commands.add_parser(
        "plot",
        help="draw the figures of one or several run folders (overlaid)",
        description="Draw test accuracy vs weights remaining, training curves, early-stop "
        "iteration and per-layer sparsity, as PNG and PDF. Several run folders overlay.",
        allow_abbrev=False,
    )
    plot.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    plot.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="where figures go (default: the first run's plots/)",
    )
    plot.add_argument(
        "--levels",
        type=_int_list,
        metavar="LIST",
        default=None,
        help="comma list of levels for the training curves (default: ~5 spread)",
    )
    plot.add_argument(
        "--formats",
        type=_names,
        metavar="LIST",
        default=["png", "pdf"],
        help="comma list of file formats (default: png,pdf)",
    )
    plot.add_argument(
        "--band",
        choices=("std", "minmax"),
        default="std",
        help="spread over replicates: error bars of one standard deviation, or min-max bands "
        "(default: std)",
    )
    plot.add_argument("--debug", action="store_true", help="show tracebacks")
    plot.set_defaults(func=cmd_plot)

    rep = commands.add_parser(
        "report",
        help="print the per-level table of a run folder",
        description="Per-layer weights remaining and per-branch accuracy at every level.",
        allow_abbrev=False,
    )
    rep.add_argument("run_dir", metavar="RUN_DIR", help="run folder")
    rep.add_argument(
        "--format",
        choices=REPORT_FORMATS,
        default="table",
        help="table (terminal), md (markdown) or csv (default: table)",
    )
    rep.add_argument(
        "--output", metavar="FILE", default=None, help="write to FILE instead of stdout"
    )
    rep.add_argument("--debug", action="store_true", help="show tracebacks")
    rep.set_defaults(func=cmd_report)
    return parser


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args, extras = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if command is None:
        if extras:
            parser.error(f"unknown command or option {extras[0]!r}; commands: run, plot, report")
        parser.error("choose a command: run, plot or report")
    if extras:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[
            command
        ]
        valid = sorted({s for a in sub._actions for s in a.option_strings if s.startswith("--")})
        what = "option" if extras[0].startswith("-") else "argument"
        raise UsageError(
            f"unknown {what} {extras[0]!r} for 'lth {command}'; valid options: {', '.join(valid)}"
        )
    return args


# ------------------------------------------------------------------------- configuration


def _field_kinds() -> dict[str, tuple[type | None, type | None]]:
    """ExperimentConfig field -> (kind, element kind): from the field's default and annotation."""
    from .experiment import ExperimentConfig

    kinds: dict[str, tuple[type | None, type | None]] = {}
    for f in fields(ExperimentConfig):
        default = f.default
        if default is MISSING and f.default_factory is not MISSING:
            default = f.default_factory()
        if isinstance(default, tuple | list):
            element = int if str(f.type).replace(" ", "").startswith("tuple[int") else str
            kinds[f.name] = (list, element)
        elif type(default) in (bool, int, float, str):
            kinds[f.name] = (type(default), None)
        else:
            kinds[f.name] = (None, None)
    return kinds


def _coerce(key: str, value, source: str):
    """Check the type of one setting from a file or preset (ranges are ExperimentConfig's job)."""
    kind, element = _field_kinds()[key]
    if kind is list:
        ok = isinstance(value, list) and all(
            isinstance(v, element) and not isinstance(v, bool) for v in value
        )
        want = f"a list of {'names' if element is str else 'whole numbers'}"
    elif kind is bool:
        ok, want = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, want = isinstance(value, int) and not isinstance(value, bool), "a whole number"
    elif kind is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        want = "a number"
        value = float(value) if ok else value
    elif kind is str:
        ok, want = isinstance(value, str), "a string"
    else:  # a setting of another type: ExperimentConfig checks it
        ok, want = True, ""
    if not ok:
        raise LTHError(f"{source}: {key} must be {want}, got {value!r}")
    return value


def read_config_file(path: str) -> dict:
    """Settings from a TOML file: ExperimentConfig field names; ``[environment]`` is ignored."""
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LTHError(f"config file {path} does not exist; check the --config path") from None
    except IsADirectoryError:
        raise LTHError(f"config file {path} is a folder; pass a TOML file to --config") from None
    except UnicodeDecodeError:
        raise LTHError(f"config file {path} is not UTF-8 text; pass a TOML file") from None
    except OSError as e:
        raise LTHError(f"cannot read config file {path}: {e.strerror}; check it") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise LTHError(f"config file {path} is not valid TOML ({_one_line(e)}); fix it") from None
    environment = values.pop("environment", {})
    if not isinstance(environment, dict):
        raise LTHError(f"config file {path}: environment must be a table, [environment]")
    kinds = _field_kinds()
    unknown = sorted(set(values) - set(kinds))
    if unknown:
        raise LTHError(
            f"config file {path}: unknown setting {unknown[0]!r}; valid settings: "
            f"{', '.join(sorted(kinds))}"
        )
    return {k: _coerce(k, v, f"config file {path}") for k, v in values.items()}


def resolve_config(args: argparse.Namespace):
    """The study's ExperimentConfig from defaults, preset, config file and given options."""
    from .experiment import ExperimentConfig

    given = vars(args)
    values = ExperimentConfig().to_dict()
    preset = given.get("preset", DEFAULT_PRESET)
    values |= {k: _coerce(k, v, f"preset {preset}") for k, v in get_preset(preset).items()}
    if "config" in given:
        values |= read_config_file(given["config"])
    for f in fields(ExperimentConfig):
        if f.name in given:
            values[f.name] = given[f.name]
    if "iterations" in given:
        values["epochs"] = 0  # --iterations given: it wins over any epochs from a file
    seed = values["seed"]
    if isinstance(seed, int) and not 0 <= seed < 2**63:
        raise LTHError(f"seed must be between 0 and 2**63 - 1, got {seed}")
    try:
        return ExperimentConfig.from_dict(values)
    except LTHError:
        raise
    except (TypeError, ValueError) as e:
        raise LTHError(f"invalid settings: {_one_line(e)}") from None


def _check_names(config) -> None:
    from .data import get_spec
    from .models import init_names, model_names

    if ":" not in config.model and config.model not in model_names():  # else module:function
        raise LTHError(f"unknown model {config.model!r}; choose one of {', '.join(model_names())}")
    if config.init not in init_names():
        raise LTHError(
            f"unknown init scheme {config.init!r}; choose one of {', '.join(init_names())}"
        )
    get_spec(config.dataset)


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# ------------------------------------------------------------------------------ progress


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
        status = f"{_pct(self.remaining[level])} remaining, val acc {val}"
        bar.set_postfix_str(status, refresh=False)
        self.levels.set_postfix_str(f"level {level}: {status}", refresh=False)
        done = group * self.iterations + trainer.iteration
        bar.update(max(0, done - bar.n))
        self.levels.refresh()

    def line(self, text: str, err: bool = False) -> None:
        stream = sys.stderr if err else sys.stdout
        self.tqdm.write(text, file=stream)
        stream.flush()

    def level_done(self, level: int, results, resumed: bool = False) -> None:
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
            text = f"{_mean(good):.2f}%" if good else "diverged"
            if good and bad:
                text += f" ({bad} diverged)"
            accs.append(f"{branch} {text}")
        n = len(tickets)
        mean = f" (mean of {n} replicates)" if n > 1 else ""
        note = " (finished earlier)" if resumed else ""
        self.line(
            f"level {level}/{self.config.levels}: {_pct(tickets[0].weights_remaining)} weights "
            f"remaining, test acc{mean} {', '.join(accs)}{note}"
        )
        self.alive = sum(
            1 for r in results if r.branch == "ticket" and r.history.diverged_at is None
        )
        self.levels.update(1)

    def close(self) -> None:
        self._close_bar()
        self.levels.close()


def _pct(value: float) -> str:
    return f"{value:.1f}%" if value >= 10 else f"{value:.2f}%"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


class ReportingStore:
    """The run folder as the experiment's Store, reporting each finished level as it goes."""

    def __init__(self, folder, progress: Progress, config):
        self.folder = folder
        self.progress = progress
        self.config = config

    def load_level(self, level: int):
        results = self.folder.load_level(level)
        if results is not None:
            self.progress.level_done(level, results, resumed=True)
            self._diverged(level, results)
        return results

    def save_level(self, level: int, results) -> None:
        self.folder.save_level(level, results)
        self.progress.level_done(level, results)
        self._diverged(level, results)

    def load_checkpoint(self, level: int, group: int):
        state = self.folder.load_checkpoint(level, group)
        if state is not None:
            self.progress.line(
                f"level {level}: continuing from the checkpoint at iteration {state['iteration']}"
            )
        return state

    def save_checkpoint(self, level: int, group: int, trainer) -> None:
        self.folder.save_checkpoint(level, group, trainer)

    def _diverged(self, level: int, results) -> None:
        bad = [r for r in results if r.history.diverged_at is not None]
        for r in bad:
            self.progress.line(
                f"lth: warning: training diverged (NaN or inf loss) for branch {r.branch}, "
                f"replicate {r.replicate}, level {level} at iteration {r.history.diverged_at}; "
                "that branch stopped there (diverged_at in summary.csv)",
                err=True,
            )
        chains = [r.replicate for r in bad if r.branch == "ticket"]
        if chains and level < self.config.levels:
            which = ", ".join(str(c) for c in chains)
            self.progress.line(
                f"lth: warning: the ticket of replicate {which} diverged at level {level}, so "
                "its chain of pruning levels ends there",
                err=True,
            )


# ------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    """``lth run``: validate everything, open the run folder, train, plot."""
    import torch

    from . import __version__
    from .data import get_spec, load_dataset, locate_files
    from .experiment import Experiment
    from .runs import RunFolder

    started = time.monotonic()
    config = resolve_config(args)
    _check_names(config)
    every = args.checkpoint_every
    if not (every >= 0 and math.isfinite(every)):
        raise LTHError(f"--checkpoint-every must be a number of seconds >= 0, got {every}")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    model_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model)  # e.g. pkg.mod:factory
    if args.out is not None and not str(args.out).strip():
        raise LTHError("--out is empty; give a folder path")
    out = Path(args.out if args.out is not None else f"runs/{model_name}-{config.dataset}-{stamp}")
    args.resolved_out = out
    if args.threads < 0:
        raise LTHError(f"--threads must be 0 (PyTorch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = _device(args.device)
    folder = RunFolder(out, config, overwrite=args.overwrite, checkpoint_seconds=every)
    folder.check()
    spec = get_spec(config.dataset)
    paths = locate_files(spec, args.data_dir)
    data_dir = Path(next(iter(paths.values()))).resolve().parent.parent
    data = load_dataset(
        config.dataset, args.data_dir, val_size=config.val_size, seed=config.seed, device=device
    )
    experiment = Experiment(config, data, device)
    n_train = int(data.train_x.shape[0])
    if config.batch_size > n_train:
        raise LTHError(
            f"batch_size {config.batch_size} exceeds the {n_train} training examples; "
            "pass a smaller --batch-size"
        )
    folder.environment = {
        "device": str(torch.device(device)),
        "data_dir": str(data_dir),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "lth": __version__,
        "python": platform.python_version(),
    }
    size = experiment.group_size() if hasattr(experiment, "group_size") else config.max_parallel
    with folder:
        print(f"run folder: {out}", flush=True)
        progress = Progress(config, experiment.train_config.iterations, size, args.quiet)
        store = ReportingStore(folder, progress, config)
        try:
            everything = experiment.run(store, progress.hook)
        finally:
            progress.close()
        _plot_at_end(out)
    reached = max((r.level for r in everything), default=-1)
    if reached < config.levels:  # every ticket diverged: nothing left to prune
        _error(
            f"every ticket diverged (NaN or inf loss) by level {reached}, so the study stopped "
            f"there; results so far are in {out}/; lower --lr or change the optimizer and start "
            "again with another --out"
        )
        return EXIT_FAILURE
    took = time.monotonic() - started
    print(
        f"done in {took:.0f} s: results in {out}/ (summary.csv, metrics.csv, plots/); "
        f"see them with: lth report {out}"
    )
    return EXIT_OK


def _plot_at_end(out: Path) -> None:
    """Derived files of a finished study: statistics over replicates, mask analysis, figures."""
    from . import analysis, plots, report
    from .runs import atomic_write

    atomic_write(out / "summary_stats.csv", report.report(out, "csv"))
    analysis.write_analysis(out)
    try:
        plots.plot_runs([out], out_dir=out / "plots")
    except OSError:
        raise
    except Exception as e:  # a figure problem must not hide a finished study
        _error(f"could not draw the plots ({_one_line(e)}); retry with: lth plot {out}", "warning")


def cmd_plot(args: argparse.Namespace) -> int:
    """``lth plot``: figures of one or several run folders."""
    for run_dir in args.run_dirs:
        if not Path(run_dir).is_dir():
            raise LTHError(f"run folder {run_dir} does not exist; give the --out of an lth run")
    if not args.formats:
        raise LTHError("--formats is empty; give e.g. png,pdf")
    from . import plots

    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "plots"
    if out.exists() and not out.is_dir():
        raise LTHError(f"--out {out} is a file; choose a folder")
    figures = plots.plot_runs(
        args.run_dirs, out_dir=out, levels=args.levels, formats=args.formats, band=args.band
    )
    for name in figures:
        print("  ".join(str(out / f"{name}.{fmt}") for fmt in args.formats))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """``lth report``: the per-level table of a run folder."""
    from .report import report
    from .runs import atomic_write

    if not Path(args.run_dir).is_dir():
        raise LTHError(f"run folder {args.run_dir} does not exist; give the --out of an lth run")
    text = report(args.run_dir, fmt=args.format)
    if args.output:
        atomic_write(Path(args.output), text if text.endswith("\n") else text + "\n")
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


# ---------------------------------------------------------------------------------- main


def _error(message: str, kind: str = "error") -> None:
    print(f"lth: {kind}: {_one_line(message)}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lth`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = _parse(build_parser(), argv)
    except UsageError as e:
        _error(str(e))
        return EXIT_USAGE
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else EXIT_OK
    try:
        return args.func(args)
    except BrokenPipeError:  # e.g. lth report RUN | head: stop quietly, like other tools
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except KeyboardInterrupt:
        out = getattr(args, "resolved_out", None)
        again = "run the same command again to resume" if args.command == "run" else "rerun it"
        where = f" (--out {out})" if out else ""
        start = "\n" if sys.stderr.isatty() else ""  # past the ^C on a terminal
        print(f"{start}lth: interrupted; {again}{where}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except LTHError as e:
        if debug:
            traceback.print_exc()
        _error(str(e))
        return EXIT_USAGE
    except OSError as e:
        if debug:
            traceback.print_exc()
        what = e.strerror or _one_line(e) or type(e).__name__
        target = f"cannot write {e.filename}" if e.filename else "input/output error"
        _error(f"{target}: {what}; fix this and run the same command again to resume")
        return EXIT_FAILURE
    except Exception as e:
        if debug:
            traceback.print_exc()
        _error(
            f"unexpected {type(e).__name__}: {_one_line(e) or 'no message'} "
            "(run again with --debug for the traceback)"
        )
        return EXIT_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

__all__ = ["PRESETS", "build_parser", "main", "read_config_file", "resolve_config"]
