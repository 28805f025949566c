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
import re
import signal
import sys
import textwrap
import time
import traceback
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from lth.config import (
    MORE,
    PRESET_DESCRIPTIONS,
    PRESETS,
    STUDY,
    TRAINING,
    ExperimentConfig,
    add_options,
    config_from_toml,
    get_preset,
    names_text,
    number_text,
    option_name,
    preset_config,
    whole_list_text,
    whole_text,
)
from lth.errors import LTHError
from lth.study.sweep import MAX_RUNS
from lth.usercode import CODE_SETTINGS, CodeTrust, check_config, names_code

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_PRESET = "default"
_COMMANDS = ("run", "sweep", "plot", "report", "verify", "export", "stability")


class UsageError(LTHError):
    """Bad command-line syntax (argparse's own errors), reported on one line."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


# ---------------------------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions carrying one line, not usage + exit."""

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{_one_line(message)}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    """The ``lth`` argument parser with its ``run``, ``plot`` and ``report`` subcommands."""
    parser = _Parser(
        prog="lth",
        description="Lottery Ticket Hypothesis studies: iterative magnitude pruning with "
        "controls, run folders, plots and reports.",
        allow_abbrev=False,
    )
    from lth.version import __version__

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
        + "\n".join(f"  {name:<22}{PRESET_DESCRIPTIONS.get(name, '')}" for name in PRESETS),
    )
    g = run.add_argument_group("study")
    g.add_argument(
        "--preset",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"named settings: {', '.join(PRESETS)} (default: {DEFAULT_PRESET})",
    )
    g.add_argument(
        "--config",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML file of settings, e.g. a run's config.toml",
    )
    add_options(run, preset_config(DEFAULT_PRESET), {STUDY: g})

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
    trust = (
        "import a package.module:function model or criterion named in --config (never done "
        "otherwise)"
    )
    _add_run_time_options(e, trust)
    run.set_defaults(func=cmd_run)
    _add_sweep_parser(commands)

    plot = commands.add_parser(
        "plot",
        help="draw the figures of one or several run folders (overlaid)",
        description="Draw test accuracy vs weights remaining, training curves, early-stop "
        "iteration, per-layer sparsity and the mask analysis, as PNG (PDF too with --formats "
        "png,pdf). Several run folders overlay (a folder holding run folders stands for them).",
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
        type=whole_list_text,
        metavar="LIST",
        default=None,
        help="comma list of levels for the training curves and weight histograms "
        "(default: 4 spread out)",
    )
    plot.add_argument(
        "--formats",
        type=names_text,
        metavar="LIST",
        default=["png"],
        help="comma list of file formats, e.g. png,pdf for a paper (default: png)",
    )
    plot.add_argument(
        "--band",
        choices=("std", "minmax", "ci"),
        default="std",
        help="spread over replicates: error bars of one standard deviation, min-max bands, or "
        "bands of the mean's 95%% confidence interval (default: std)",
    )
    plot.add_argument(
        "--title",
        metavar="TEXT",
        default=None,
        help="the figures' second title line (default: the study, e.g. 'lenet_300_100 on "
        "mnist'); '' for no title",
    )
    plot.add_argument(
        "--labels",
        metavar="LIST",
        default=None,
        help="comma list of legend names, one per run (default: the settings in which the runs "
        "differ, else their folder names; \\, is a comma inside a name)",
    )
    _add_force(plot, "a figure in --out that lth did not save")
    plot.add_argument("--debug", action="store_true", help="show tracebacks")
    plot.set_defaults(func=cmd_plot)

    rep = commands.add_parser(
        "report",
        help="print the per-level accuracy table of one or several run folders",
        description="Per-branch test accuracy at every level (mean ± std over replicates), "
        "then with --layers the ticket's weights remaining per layer. Several runs make one "
        "table: runs that differ only in seed are pooled (mean ± std over all their "
        "replicates), other runs stand side by side under the settings in which they differ. "
        "A folder holding run folders stands for them.",
        allow_abbrev=False,
    )
    rep.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders")
    rep.add_argument(
        "--format",
        choices=("table", "md", "latex", "csv"),
        default="table",
        help="table (terminal), md (markdown), latex (booktabs) or csv (default: table)",
    )
    rep.add_argument(
        "--layers", action="store_true", help="also the per-layer tables (not with csv)"
    )
    rep.add_argument(
        "--labels",
        metavar="LIST",
        default=None,
        help="comma list of column headers, one per run (default: the differing settings; "
        "\\, is a comma inside a name)",
    )
    rep.add_argument(
        "--paper",
        metavar="NAME",
        default=None,
        help="also a paper's published numbers beside the run's nearest levels, and whether "
        "they agree within error bars (frankle2019: LeNet-300-100 on MNIST)",
    )
    rep.add_argument(
        "--output", metavar="FILE", default=None, help="write to FILE instead of stdout"
    )
    _add_force(rep, "an existing --output file that lth report did not write")
    rep.add_argument("--debug", action="store_true", help="show tracebacks")
    rep.set_defaults(func=cmd_report)

    ver = commands.add_parser(
        "verify",
        help="audit a run folder from its files: pruning, rewinding, controls, tables",
        description="Check every branch, replicate and level of a run against the algorithm: "
        "pruned weights exactly 0, masks that only shrink, round(rate x survivors) pruned by "
        "magnitude, bit-exact rewinding, the controls, and summary.csv against the masks and "
        "metrics.csv. Exit 0: one line per check passed; 1: the first violation.",
        allow_abbrev=False,
    )
    ver.add_argument("run_dir", metavar="RUN_DIR", help="run folder")
    ver.add_argument("--debug", action="store_true", help="show tracebacks")
    ver.set_defaults(func=cmd_verify)

    exp = commands.add_parser(
        "export",
        help="write one ticket of a run folder as a file other code can load",
        description="Write one network of a run folder as a safetensors file. Formats: dense "
        "(a plain state_dict, zeros in place), sparse (pruned weights as CSR), torch-prune "
        "(torch.nn.utils.prune's weight_orig + weight_mask), shrunk (a smaller nn.Sequential, "
        "dead units removed), shrunk-sparse (both).",
        allow_abbrev=False,
    )
    exp.add_argument("run_dir", metavar="RUN_DIR", help="run folder")
    exp.add_argument("--level", type=whole_text, required=True, metavar="L", help="level")
    exp.add_argument(
        "--branch", default="ticket", help="ticket, reinit or random_prune (default: ticket)"
    )
    exp.add_argument(
        "--replicate", type=whole_text, default=0, metavar="R", help="replicate (default: 0)"
    )
    exp.add_argument(
        "--format",
        required=True,
        metavar="FORMAT",
        help="dense, sparse, torch-prune, shrunk or shrunk-sparse",
    )
    exp.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    exp.add_argument(
        "--which",
        choices=("final", "init"),
        default="final",
        help="final: the trained weights; init: the weights the level started from "
        "(default: final)",
    )
    exp.add_argument(
        "--trust-code",
        action="store_true",
        help="import a package.module:function model named in the run's config.toml (never "
        "done otherwise)",
    )
    _add_force(exp, "an existing --out file that is not an lth export file")
    exp.add_argument("--debug", action="store_true", help="show tracebacks")
    exp.set_defaults(func=cmd_export)
    _add_stability_parser(commands)
    return parser


def _add_force(parser, what: str) -> None:
    """``--force``: replace a file lth did not write (never done otherwise)."""
    parser.add_argument("--force", action="store_true", help=f"replace {what}")


def _add_run_time_options(group, trust_help: str) -> None:
    """The options of lth run and lth sweep that do not change results: checkpoints, threads,
    trusted code, the executor, TensorBoard, output."""
    group.add_argument(
        "--checkpoint-every",
        type=number_text,
        metavar="SECONDS",
        default=60.0,
        help="seconds between in-level checkpoints; 0: at every evaluation (default: 60)",
    )
    group.add_argument(
        "--threads",
        type=whole_text,
        metavar="N",
        default=0,
        help="CPU threads for PyTorch; 0: PyTorch's default. 1 is as fast for small networks "
        "and much faster when other programs share the CPU. With --executor ray: threads per "
        "unit, and the CPUs each task asks for (0: 1) (default: 0)",
    )
    group.add_argument("--trust-code", action="store_true", help=trust_help)
    group.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="where the units train: local (this process, one after another) or ray (Ray "
        "tasks, in parallel on a cluster; pip install 'lth[ray]') (default: local)",
    )
    group.add_argument(
        "--ray-address",
        metavar="ADDRESS",
        default=None,
        help="the Ray cluster's head, e.g. 10.0.0.1:6379 (default: start a local cluster)",
    )
    group.add_argument(
        "--tensorboard",
        action="store_true",
        help="write TensorBoard event files into the run folder as training goes "
        "(pip install 'lth[tensorboard]'; view with: tensorboard --logdir DIR)",
    )
    group.add_argument("--quiet", action="store_true", help="no progress bars")
    group.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_sweep_parser(commands) -> None:
    sweep = commands.add_parser(
        "sweep",
        help="run (or resume) every combination of a sweep file, each in its own run folder",
        description="Run the studies of a sweep file: base settings (keys as in a run's "
        "config.toml, and optionally preset) and a [vary] table of lists whose every "
        "combination is a study, each in a run folder under --out named by its varied "
        "values (e.g. rate-0.2_seed-1). The local executor runs them one after another, Ray "
        "all together. Running the same command again resumes each run. lth report and lth "
        "plot over --out tabulate and overlay the runs.",
        allow_abbrev=False,
    )
    sweep.add_argument("sweep_file", metavar="SWEEP.toml", help="the sweep file")
    sweep.add_argument(
        "--out", metavar="DIR", required=True, help="the sweep folder: one run folder per study"
    )
    sweep.add_argument(
        "--data-dir", metavar="DIR", default=None, help="as for lth run (default: as lth run)"
    )
    sweep.add_argument("--device", default="auto", help="cpu, cuda, ... or auto (default: auto)")
    sweep.add_argument(
        "--overwrite", action="store_true", help="delete the sweep's runs and start over"
    )
    sweep.add_argument(
        "--max-runs",
        type=whole_text,
        metavar="N",
        default=MAX_RUNS,
        help=f"refuse a sweep of more runs than this (default: {MAX_RUNS:,})",
    )
    _add_run_time_options(
        sweep, "import a package.module:function model or criterion the sweep file names"
    )
    sweep.set_defaults(func=cmd_sweep)


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    args, extras = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if command is None:
        if extras:
            commands = ", ".join(_COMMANDS)
            parser.error(f"unknown command or option {extras[0]!r}; commands: {commands}")
        parser.error(f"choose a command: {', '.join(_COMMANDS)}")
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


def read_config_file(path: str) -> dict:
    """Settings from a TOML file (``--config``), type-checked; see :mod:`lth.config`."""
    if not str(path).strip():
        raise LTHError("--config is empty; give the path of a TOML file")
    return config_from_toml(Path(path).expanduser(), "config file")


def resolve_config(args: argparse.Namespace) -> ExperimentConfig:
    """The study's ExperimentConfig: defaults < preset < config file < options given."""
    given = vars(args)
    preset = given.get("preset", DEFAULT_PRESET)
    values = get_preset(preset)
    if "config" in given:
        values |= read_config_file(given["config"])
    for f in fields(ExperimentConfig):
        if f.name in given:
            values[f.name] = given[f.name]
    if "iterations" in given:
        values["epochs"] = 0  # --iterations given: it wins over any epochs from a file
    return ExperimentConfig.from_dict(values, "options")


def _check_names(config) -> None:
    from lth.core.init import init_names
    from lth.core.models import model_names
    from lth.data import get_spec

    if ":" not in config.model and config.model not in model_names():  # else module:function
        raise LTHError(f"unknown model {config.model!r}; choose one of {', '.join(model_names())}")
    if config.init not in init_names():
        raise LTHError(
            f"unknown init scheme {config.init!r}; choose one of {', '.join(init_names())}"
        )
    get_spec(config.dataset)
    if ":" not in config.criterion:  # else module:function, imported when allowed
        from lth.pruning.criteria import get_criterion

        get_criterion(config.criterion)


# ------------------------------------------------------------------------------ commands


def cmd_run(args: argparse.Namespace) -> int:
    """``lth run``: validate everything, open the run folder, train, plot."""
    from lth.study.runner import resolve_device, run_in_folder

    started = time.monotonic()
    config = resolve_config(args)
    _check_names(config)
    check_config(config, _code_trust(args))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    model_name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model)  # e.g. pkg.mod:factory
    if args.out is not None and not str(args.out).strip():
        raise LTHError("--out is empty; give a folder path")
    out = Path(args.out if args.out is not None else f"runs/{model_name}-{config.dataset}-{stamp}")
    out = out.expanduser()
    args.resolved_out = out
    executor = _executor(args)
    device = resolve_device(args.device)
    experiment, folder = _open_study(config, out, args, device, {})
    everything = run_in_folder(
        experiment,
        folder,
        quiet=args.quiet,
        warn=_warning,
        executor=executor,
        tensorboard=args.tensorboard,
    )
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


def _executor(args: argparse.Namespace):
    """The executor the options ask for, checked with the other run-time options (threads,
    checkpoint interval, TensorBoard) before anything is written."""
    import torch

    from lth.study.executors import get_executor

    every = args.checkpoint_every
    if not (every >= 0 and math.isfinite(every)):
        raise LTHError(f"--checkpoint-every must be a number of seconds >= 0, got {every}")
    if args.threads < 0:
        raise LTHError(f"--threads must be 0 (PyTorch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tensorboard:
        from lth.runfolder.tensorboard import import_summary_writer

        import_summary_writer()
    return get_executor(args.executor, args.ray_address, args.threads)


def _open_study(config, out: Path, args: argparse.Namespace, device, datasets: dict):
    """(Experiment, RunFolder) of one study, checked; the folder is not created yet.
    ``datasets`` keeps the data loaded for other studies of a sweep."""
    from lth.data import load_dataset, resolve_data_dir
    from lth.runfolder.runs import RunFolder
    from lth.study.experiment import Experiment
    from lth.study.runner import check_study, environment

    folder = RunFolder(
        out, config, overwrite=args.overwrite, checkpoint_seconds=args.checkpoint_every
    )
    folder.check()
    data_dir = resolve_data_dir(args.data_dir)
    key = (config.dataset, config.val_size, config.seed)
    if key not in datasets:
        datasets[key] = load_dataset(
            config.dataset, args.data_dir, val_size=config.val_size, seed=config.seed,
            device=device,
        )  # fmt: skip
    experiment = Experiment(config, datasets[key], device, trust=_code_trust(args))
    check_study(experiment, datasets[key], _warning)
    machine = environment(device, str(data_dir), config, out)
    folder.environment = machine | {"executor": args.executor}
    return experiment, folder


def cmd_sweep(args: argparse.Namespace) -> int:
    """``lth sweep``: every study of a sweep file into its own run folder under --out."""
    from lth.study.runner import resolve_device, run_in_folders
    from lth.study.sweep import check_memory, progress, read_sweep

    started = time.monotonic()
    if not str(args.out).strip():
        raise LTHError("--out is empty; give a folder path")
    out = Path(args.out).expanduser()
    args.resolved_out = out
    if args.max_runs < 1:
        raise LTHError(f"--max-runs must be 1 or more, got {args.max_runs}")
    studies = read_sweep(args.sweep_file, args.max_runs, args.quiet)
    for _, config in studies:
        _check_names(config)
        check_config(config, _code_trust(args))  # the sweep file is data: code needs trust
    executor = _executor(args)
    device = resolve_device(args.device)
    datasets: dict = {}
    opened = []
    with progress(len(studies), "checking the runs", args.quiet) as done:
        for name, config in studies:
            opened.append(_open_study(config, out / name, args, device, datasets))
            if len(opened) == 1:
                check_memory(studies, opened[0][0])
            done()
    run_in_folders(
        opened, executor=executor, quiet=args.quiet, warn=_warning, tensorboard=args.tensorboard
    )
    took = time.monotonic() - started
    print(
        f"done in {took:.0f} s: {len(studies)} runs in {out}/; compare them with: "
        f"lth report {out} (or lth plot {out})"
    )
    return EXIT_OK


def _check_run_dir(run_dir: str) -> None:
    """A RUN_DIR argument must be an existing folder."""
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise LTHError(f"{run_dir} is a file, not a run folder; give the --out of an lth run")
    if not path.is_dir():
        raise LTHError(f"run folder {run_dir} does not exist; give the --out of an lth run")


def _warning(text: str) -> None:
    _error(text, "warning")


def _code_trust(args: argparse.Namespace) -> CodeTrust:
    """The code this command may import (:mod:`lth.usercode`): what its options name
    (``--model``, ``--criterion``), or any with ``--trust-code``; a file (``--config``, a sweep
    file, a run folder) is data, and code it names is refused otherwise."""
    given = vars(args)
    named = frozenset(given[w] for w in CODE_SETTINGS if names_code(given.get(w)))
    return CodeTrust(named, trusted=given.get("trust_code", False), command_line=True)


def cmd_plot(args: argparse.Namespace) -> int:
    """``lth plot``: figures of one or several run folders."""
    for run_dir in args.run_dirs:
        _check_run_dir(run_dir)
    if not args.formats:
        raise LTHError("--formats is empty; give e.g. png,pdf")
    from lth.analysis import mask_analysis as analysis
    from lth.analysis import plots
    from lth.analysis.results import run_folders, split_labels  # lazy: loaded when the command runs

    run_dirs = run_folders(args.run_dirs)  # a folder of run folders stands for them
    labels = split_labels(args.labels) if args.labels is not None else None
    out = plots.check_targets(run_dirs, args.out or None, args.formats, args.force)
    analyses = [analysis.ensure_analysis(run_dir) for run_dir in run_dirs]
    figures = plots.plot_runs(
        run_dirs,
        out_dir=out,
        levels=args.levels,
        formats=args.formats,
        band=args.band,
        analyses=analyses,
        title=args.title,
        labels=labels,
        force=args.force,
    )
    for name in figures:
        print("  ".join(str(out / f"{name}.{fmt}") for fmt in args.formats))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """``lth report``: the per-level table of one or several run folders."""
    from lth.analysis.report import report, save_report  # lazy: loaded when the command runs
    from lth.analysis.results import split_labels  # lazy: loaded when the command runs

    for run_dir in args.run_dirs:
        _check_run_dir(run_dir)
    labels = split_labels(args.labels) if args.labels is not None else None
    options = {"fmt": args.format, "layers": args.layers, "labels": labels, "paper": args.paper}
    if args.output:
        save_report(args.run_dirs, args.output, force=args.force, **options)
    else:
        sys.stdout.write(report(args.run_dirs, **options))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    """``lth verify``: audit a run folder (:mod:`lth.runfolder.verify`); 1 names the first
    violation."""
    from lth.runfolder.verify import VerifyError, verify_run

    _check_run_dir(args.run_dir)
    try:
        lines = verify_run(Path(args.run_dir).expanduser())
    except VerifyError as e:
        _error(str(e))
        return EXIT_FAILURE
    print("\n".join(lines))
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """``lth export``: one network of a run folder as a file (:mod:`lth.runfolder.export`)."""
    from lth.runfolder.export import FORMATS, check_out, export_ticket

    if args.format not in FORMATS:
        raise LTHError(f"unknown format {args.format!r}; choose one of {', '.join(FORMATS)}")
    check_out(args.out, force=True)  # a path that can be written; replacing: export_ticket
    _check_run_dir(args.run_dir)
    info = export_ticket(
        Path(args.run_dir).expanduser(),
        args.level,
        out=args.out,
        format=args.format,
        branch=args.branch,
        replicate=args.replicate,
        which=args.which,
        trust_code=_code_trust(args),
        force=args.force,
    )
    print(info.summary())
    return EXIT_OK


# ------------------------------------------------------------------------------ stability


def _add_stability_parser(commands) -> None:
    """``lth stability``: linear mode connectivity of a level, or the rewind point."""
    sta = commands.add_parser(
        "stability",
        help="instability of a level (linear mode connectivity), or find the rewind point",
        description="Frankle et al. 2020: copies of a level's starting weights train with "
        "different data orders; the error along the line between their final weights gives "
        "the instability, max over alpha of err(alpha) - mean(err(0), err(1)); below 2%% is "
        "stable. --find-rewind forks copies from m*theta_k of the dense network's training at "
        "each candidate k and reports the earliest stable k (for lth run --rewind-iteration). "
        "Without RUN_DIR, --find-rewind takes a configuration (--preset, --config, the options "
        "of lth run) and --out, and analyses its dense network. Results go to "
        "RUN_DIR/stability/ (CSV files and plots/).",
        allow_abbrev=False,
    )
    sta.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="run folder")
    a = sta.add_argument_group("analysis")
    a.add_argument(
        "--level",
        type=whole_text,
        default=None,
        metavar="L",
        help="level to analyse (--find-rewind: default 0, the dense network)",
    )
    a.add_argument(
        "--branch", default="ticket", help="ticket, reinit or random_prune (default: ticket)"
    )
    a.add_argument(
        "--replicate", type=whole_text, default=0, metavar="R", help="replicate (default: 0)"
    )
    a.add_argument(
        "--copies",
        type=whole_text,
        default=2,
        metavar="N",
        help="copies trained with different data orders; every pair is measured (default: 2)",
    )
    a.add_argument(
        "--points",
        type=whole_text,
        default=30,
        metavar="N",
        help="evenly spaced alpha from 0 to 1 (default: 30, as the paper)",
    )
    a.add_argument(
        "--find-rewind",
        action="store_true",
        help="instability against the rewind iteration k; the earliest stable k",
    )
    a.add_argument(
        "--candidates",
        type=whole_list_text,
        metavar="LIST",
        default=None,
        help="comma list of rewind iterations k for --find-rewind "
        "(default: 0,100,250,500,1000,2000,4000 within the training)",
    )
    s = sta.add_argument_group("a configuration instead of RUN_DIR (with --find-rewind)")
    s.add_argument(
        "--preset",
        metavar="NAME",
        default=argparse.SUPPRESS,
        help=f"named settings: {', '.join(PRESETS)}",
    )
    s.add_argument(
        "--config", metavar="FILE", default=argparse.SUPPRESS, help="TOML file of settings"
    )
    s.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="the run folder to create (or reuse) for the configuration",
    )
    add_options(sta, preset_config(DEFAULT_PRESET), {STUDY: s, TRAINING: s, MORE: s})
    e = sta.add_argument_group("environment")
    e.add_argument(
        "--data-dir",
        metavar="DIR",
        default=None,
        help="folder holding a <dataset>/ folder (default: as lth run)",
    )
    e.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... or auto")
    e.add_argument(
        "--threads",
        type=whole_text,
        metavar="N",
        default=0,
        help="CPU threads for PyTorch; 0: PyTorch's default",
    )
    e.add_argument(
        "--checkpoint-every",
        type=number_text,
        metavar="SECONDS",
        default=60.0,
        help="seconds between checkpoints of the copies' training (default: 60)",
    )
    e.add_argument(
        "--trust-code",
        action="store_true",
        help="import a package.module:function model or criterion named in the run's "
        "config.toml or in --config (never done otherwise)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    e.add_argument("--debug", action="store_true", help="show tracebacks")
    sta.set_defaults(func=cmd_stability)


def cmd_stability(args: argparse.Namespace) -> int:
    """``lth stability``: :func:`~lth.stability.measure.analyze_level` or
    :func:`~lth.stability.measure.find_rewind` on a run folder or a configuration."""
    import torch

    from lth.stability import measure as stability
    from lth.study.runner import resolve_device

    settings = [f.name for f in fields(ExperimentConfig) if f.name in vars(args)]
    settings += [k for k in ("preset", "config") if k in vars(args)]
    every = args.checkpoint_every
    if not (every >= 0 and math.isfinite(every)):
        raise LTHError(f"--checkpoint-every must be a number of seconds >= 0, got {every}")
    if args.run_dir is None:
        if not args.find_rewind or args.out is None:
            raise LTHError(
                "give a RUN_DIR (with --level), or --find-rewind with a configuration and --out"
            )
        config = resolve_config(args)
        _check_names(config)
        check_config(config, _code_trust(args))
        stability.check_counts(args.copies, args.points)
        from lth.data import load_dataset

        device = resolve_device(args.device)  # everything first: bad input leaves no folder
        data = load_dataset(
            config.dataset, args.data_dir, val_size=config.val_size, seed=config.seed, device=device
        )
        stability.check_configuration(
            config, data, device, args.copies, _code_trust(args), _warning
        )
        run_dir = _stability_folder(Path(args.out).expanduser(), config)
    else:
        if settings or args.out is not None:
            given = option_name(settings[0]) if settings else "--out"
            raise LTHError(f"{given} is for a configuration; RUN_DIR has its own config.toml")
        _check_run_dir(args.run_dir)
        run_dir, data = Path(args.run_dir).expanduser(), None
        if args.level is None and not args.find_rewind:
            raise LTHError("give --level L, the level of RUN_DIR to analyse")
    if args.threads:
        torch.set_num_threads(args.threads)
    options = {
        "copies": args.copies, "points": args.points, "data_dir": args.data_dir,
        "device": resolve_device(args.device), "trust_code": _code_trust(args),
        "checkpoint_seconds": every, "quiet": args.quiet, "data": data,
    }  # fmt: skip
    where = (args.level or 0, args.branch, args.replicate)
    if args.find_rewind:
        candidates = args.candidates if args.candidates is not None else stability.CANDIDATES
        rows, best = stability.find_rewind(run_dir, *where, candidates=candidates, **options)
    else:
        rows, best = [stability.analyze_level(run_dir, *where, **options)], None
    for r in rows:
        spread = (
            "" if math.isnan(r["test_instability_std"]) else f" ± {r['test_instability_std']:.2f}"
        )
        print(
            f"k = {r['k']}: test instability {r['test_instability_mean']:.2f}%{spread} "
            f"(train {r['train_instability_mean']:.2f}%), {r['pairs']} pair(s), "
            f"{'stable' if r['stable'] == 'yes' else 'unstable'}"
        )
    if args.find_rewind:
        print(
            f"earliest stable k: {best}; use lth run --rewind-iteration {best}"
            if best is not None
            else "no candidate k is stable (instability >= 2%); try later candidates"
        )
    _stability_figures(run_dir)
    print(f"results in {run_dir / 'stability'}/ (summary.csv, plots/)")
    return EXIT_OK


def _stability_folder(out: Path, config: ExperimentConfig) -> Path:
    """Create (or reopen) the run folder of a configuration, untrained, for --find-rewind."""
    from lth.runfolder.runs import RunFolder

    with RunFolder(out, config):
        pass
    return out


def _stability_figures(run_dir: Path) -> None:
    """The stability figures; a figure that cannot be drawn is a warning."""
    from lth.stability.plots import plot_stability

    try:
        plot_stability(run_dir)
    except OSError:
        raise
    except Exception as e:  # the CSV files are written; the figures can be redrawn
        _warning(f"could not draw the stability figures ({_one_line(e)})")


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
        # lth.study.runner.Interrupted: the signal, the checkpoint
        what = f" by {e}" if str(e) else ""
        print(f"{start}lth: interrupted{what}; {again}{where}", file=sys.stderr, flush=True)
        return 128 + signal.SIGTERM if str(e).startswith("SIGTERM") else EXIT_INTERRUPTED
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
        if args.command not in ("run", "sweep"):  # what the user named: bad input
            _error(f"{target}: {what}; check the path and rerun")
            return EXIT_USAGE
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
