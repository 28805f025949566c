"""The ``lth`` argument parser: :func:`build_parser` with one subcommand per command, and
:func:`parse_args`, whose errors are one line.

Imports :mod:`lth.cli.options`, :mod:`lth.cli.commands` and the root leaves.
"""

from __future__ import annotations

import argparse
import textwrap

from lth.cli.commands import (
    cmd_export,
    cmd_plot,
    cmd_publish,
    cmd_report,
    cmd_run,
    cmd_stability,
    cmd_sweep,
    cmd_verify,
)
from lth.cli.exits import UsageError, one_line
from lth.cli.options import (
    DEFAULT_PRESET,
    HelpFormatter,
    RawDescriptionHelpFormatter,
    add_options,
    names_text,
    number_text,
    whole_list_text,
    whole_text,
)
from lth.config import MORE, STUDY, TRAINING
from lth.presets import PRESET_DESCRIPTIONS, PRESETS, preset_config
from lth.study.sweep import MAX_RUNS
from lth.version import __version__

COMMANDS = ("run", "sweep", "plot", "report", "verify", "publish", "export", "stability")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions carrying one line, not usage + exit; its
    help fills in the registered names only when printed (:class:`HelpFormatter`)."""

    def __init__(self, *args, formatter_class=HelpFormatter, **kwargs):
        super().__init__(*args, formatter_class=formatter_class, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        raise UsageError(f"{one_line(message)}; see '{self.prog} --help'")


def build_parser() -> argparse.ArgumentParser:
    """The ``lth`` argument parser with its ``run``, ``plot`` and ``report`` subcommands."""
    parser = _Parser(
        prog="lth",
        description="Lottery Ticket Hypothesis studies: iterative magnitude pruning with "
        "controls, run folders, plots and reports.",
        allow_abbrev=False,
    )
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
        formatter_class=RawDescriptionHelpFormatter,
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
        "import a package.module:function model, criterion or dataset named in --config "
        "(never done otherwise)"
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
        help="where figures go (default: the run's plots/; for several runs a new folder "
        "beside them, plots_RUN1+RUN2: an overlay never touches a run's own plots/)",
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
        "--interval",
        "--band",
        dest="band",
        choices=("std", "ci95", "ci", "minmax"),
        default="std",
        help="spread over replicates: error bars of ± 1 standard deviation (default), bands of "
        "the mean's 95%% confidence interval (ci95), or min-max bands; clipped to 0-100%%",
    )
    plot.add_argument(
        "--panels",
        choices=("both", "end", "early"),
        default="both",
        help="accuracy_vs_weights' panels: test accuracy at the end of training, at the "
        "early-stop iteration, or both (default)",
    )
    plot.add_argument(
        "--no-pool",
        dest="pool",
        action="store_false",
        help="draw runs that differ only in seed as separate series (default: pooled into "
        "one, mean and spread over all their replicates, as lth report does)",
    )
    plot.add_argument(
        "--title",
        metavar="TEXT",
        default=None,
        help="the figures' second title line (default: the study, e.g. 'LeNet-300-100 on "
        "MNIST'); '' for no title",
    )
    plot.add_argument(
        "--labels",
        metavar="LIST",
        default=None,
        help="comma list of legend names, one per series (default: the values of the settings "
        "in which the runs differ, e.g. snip or 'rate 0.3', else their folder names; \\, is a "
        "comma inside a name)",
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
    ver.add_argument("run_dir", metavar="RUN_DIR", help="run folder, or a folder lth publish wrote")
    _add_publish_options(commands, ver)
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
    exp.add_argument(
        "--model",
        metavar="MODULE:FUNCTION",
        default=argparse.SUPPRESS,
        help="the run's model built by this factory, package.module:function (found in the "
        "current folder too): needed for a run of an nn.Module object",
    )
    _add_force(exp, "an existing --out file that is not an lth export file")
    exp.add_argument("--debug", action="store_true", help="show tracebacks")
    exp.set_defaults(func=cmd_export)
    _add_stability_parser(commands)
    return parser


def _add_publish_options(commands, ver) -> None:
    """``lth verify --replay N --data-dir DIR`` and the ``lth publish`` command (issue 21)."""
    ver.add_argument(
        "--replay", type=whole_text, default=0, metavar="N",
        help="also retrain N networks sampled by the run's seed and compare their summary rows "
        "(exact on the run's kind of CPU, torch and threads; within a stated tolerance elsewhere)",
    )  # fmt: skip
    ver.add_argument(
        "--data-dir", metavar="DIR", default=None,
        help="for --replay: the dataset's folder (default: the run's, else as lth run)",
    )  # fmt: skip
    pub = commands.add_parser(
        "publish",
        help="copy a run's small files and its masks, bit-packed, into a folder lth verify audits",
        description="Audit RUN_DIR (lth verify), then write OUT: config.toml, summary.csv, "
        "summary_stats.csv, layers.csv, metrics.csv, the PNG figures, report.md, every "
        "network's mask bit-packed (masks.safetensors) and published.json (their sha256). No "
        "weights: lth verify OUT checks what masks and tables allow.",
        allow_abbrev=False,
    )
    pub.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder")
    pub.add_argument("out", metavar="OUT", help="the folder to write (created if missing)")
    pub.add_argument("--paper", metavar="NAME", default=None,
                     help="report.md compares with a paper, as lth report --paper")  # fmt: skip
    pub.add_argument("--no-report", dest="report", action="store_false",
                     help="write no report.md")  # fmt: skip
    _add_force(pub, "files in OUT that lth publish did not write")
    pub.add_argument("--debug", action="store_true", help="show tracebacks")
    pub.set_defaults(func=cmd_publish)


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
        sweep, "import a package.module:function model, criterion or dataset the sweep file names"
    )
    sweep.set_defaults(func=cmd_sweep)


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
        help="import a package.module:function model, criterion or dataset named in the run's "
        "config.toml or in --config (never done otherwise)",
    )
    e.add_argument("--quiet", action="store_true", help="no progress lines")
    e.add_argument("--debug", action="store_true", help="show tracebacks")
    sta.set_defaults(func=cmd_stability)


def parse_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed; a missing command, an unknown option or argument: UsageError."""
    args, extras = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if command is None:
        if extras:
            commands = ", ".join(COMMANDS)
            parser.error(f"unknown command or option {extras[0]!r}; commands: {commands}")
        parser.error(f"choose a command: {', '.join(COMMANDS)}")
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


__all__ = ["COMMANDS", "build_parser", "parse_args"]
