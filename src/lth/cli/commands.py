"""The ``lth`` commands, one ``cmd_*`` function each: ``run``, ``sweep``, ``plot``,
``report``, ``verify``, ``publish``, ``export`` and ``stability``; each returns its exit status.

Each imports the heavy modules it needs (study, analysis, runfolder, stability: torch,
matplotlib) when it runs, so that ``lth --help`` stays fast.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import time
from dataclasses import fields
from datetime import datetime
from pathlib import Path

from lth.cli.exits import EXIT_FAILURE, EXIT_OK, error, one_line, warning
from lth.cli.options import check_names, code_trust, option_name, resolve_config
from lth.config import ExperimentConfig, resolve_init
from lth.errors import LTHError
from lth.usercode import check_config, names_code


def cmd_run(args: argparse.Namespace) -> int:
    """``lth run``: validate everything, open the run folder, train, plot."""
    from lth.study.runner import resolve_device, run_in_folder  # lazy: per command

    started = time.monotonic()
    config = resolve_config(args)
    check_names(config)
    check_config(config, code_trust(args))
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
        warn=warning,
        executor=executor,
        tensorboard=args.tensorboard,
    )
    reached = max((r.level for r in everything), default=-1)
    if reached < config.levels:  # every ticket diverged: nothing left to prune
        error(
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
    import torch  # lazy: torch

    from lth.study.executors import get_executor  # lazy: per command

    every = args.checkpoint_every
    if not (every >= 0 and math.isfinite(every)):
        raise LTHError(f"--checkpoint-every must be a number of seconds >= 0, got {every}")
    if args.threads < 0:
        raise LTHError(f"--threads must be 0 (PyTorch's default) or more, got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.tensorboard:
        from lth.runfolder.tensorboard import import_summary_writer  # lazy: per command

        import_summary_writer()
    return get_executor(args.executor, args.ray_address, args.threads)


def _open_study(config, out: Path, args: argparse.Namespace, device, datasets: dict):
    """(Experiment, RunFolder) of one study, checked; the folder is not created yet.
    ``datasets`` keeps the data loaded for other studies of a sweep."""
    from lth.data import resolve_data_dir  # lazy: per command
    from lth.data.user import study_data  # lazy: per command
    from lth.runfolder.runs import RunFolder  # lazy: per command
    from lth.study.experiment import Experiment  # lazy: per command
    from lth.study.runner import check_study, describe_data, environment  # lazy: per command

    config = resolve_init(config, user_model=names_code(config.model))  # θ0: lth.core.theta0
    folder = RunFolder(
        out, config, overwrite=args.overwrite, checkpoint_seconds=args.checkpoint_every
    )
    folder.check()
    data_dir = resolve_data_dir(args.data_dir)
    key = (config.dataset, config.val_size, config.seed)
    if key not in datasets:  # your own data (--dataset module:function) is checked here
        datasets[key] = study_data(
            config.dataset, args.data_dir, code_trust(args), val_size=config.val_size,
            seed=config.seed, device=device,
        )  # fmt: skip
    experiment = Experiment(config, datasets[key], device, trust=code_trust(args))
    check_study(experiment, datasets[key], warning)
    machine = environment(device, str(data_dir), config, out)
    folder.environment = machine | {"executor": args.executor}
    if names_code(config.dataset):  # its shapes, for the commands that rebuild the model
        folder.source = describe_data(datasets[key])
    return experiment, folder


def cmd_sweep(args: argparse.Namespace) -> int:
    """``lth sweep``: every study of a sweep file into its own run folder under --out."""
    from lth.study.runner import resolve_device, run_in_folders  # lazy: per command
    from lth.study.sweep import check_memory, progress, read_sweep  # lazy: per command

    started = time.monotonic()
    if not str(args.out).strip():
        raise LTHError("--out is empty; give a folder path")
    out = Path(args.out).expanduser()
    args.resolved_out = out
    if args.max_runs < 1:
        raise LTHError(f"--max-runs must be 1 or more, got {args.max_runs}")
    studies = read_sweep(args.sweep_file, args.max_runs, args.quiet)
    for _, config in studies:
        check_names(config)
        check_config(config, code_trust(args))  # the sweep file is data: code needs trust
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
        opened, executor=executor, quiet=args.quiet, warn=warning, tensorboard=args.tensorboard
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


def cmd_plot(args: argparse.Namespace) -> int:
    """``lth plot``: figures of one or several run folders."""
    for run_dir in args.run_dirs:
        _check_run_dir(run_dir)
    if not args.formats:
        raise LTHError("--formats is empty; give e.g. png,pdf")
    from lth.analysis import mask_analysis as analysis  # lazy: per command
    from lth.analysis import plots  # lazy: per command
    from lth.analysis.results import run_folders, split_labels  # lazy: per command

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
        panels=args.panels,
        pool=args.pool,
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
    from lth.analysis.report import report, save_report  # lazy: per command
    from lth.analysis.results import split_labels  # lazy: per command

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
    from lth.runfolder.verify import VerifyError, verify_run  # lazy: per command
    from lth.runfolder.verify_published import (  # lazy: per command
        check_has_masks,
        is_published,
        verify_published,
    )

    _check_run_dir(args.run_dir)
    folder = Path(args.run_dir).expanduser()
    try:
        check_has_masks(folder)
        lines = (verify_published if is_published(folder) else verify_run)(folder)
        if getattr(args, "replay", 0):
            from lth.study.replay import replay  # lazy: trains networks

            lines += replay(folder, args.replay, args.data_dir)
    except VerifyError as e:
        error(str(e))
        return EXIT_FAILURE
    print("\n".join(lines))
    return EXIT_OK


def cmd_publish(args: argparse.Namespace) -> int:
    """``lth publish``: a run folder's small files and packed masks into a folder
    (:mod:`lth.runfolder.publish`); 1 when the run fails ``lth verify``."""
    from lth.analysis.report import report  # lazy: per command
    from lth.runfolder.publish import publish  # lazy: per command
    from lth.runfolder.verify import VerifyError  # lazy: per command

    _check_run_dir(args.run_dir)
    run = Path(args.run_dir).expanduser()
    try:
        text = report(run, "md", paper=args.paper) if args.report else None
        sizes = publish(run, args.out, report=text, force=args.force)
    except VerifyError as e:
        error(f"{e}; the run is not published")
        return EXIT_FAILURE
    for name, size in sizes.items():
        print(f"{Path(args.out) / name}  {size:,} bytes")
    return EXIT_OK


def cmd_export(args: argparse.Namespace) -> int:
    """``lth export``: one network of a run folder as a file (:mod:`lth.runfolder.export`)."""
    from lth.runfolder.export import FORMATS, check_out, export_ticket  # lazy: per command

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
        trust_code=code_trust(args),
        force=args.force,
        model=_run_model(args, Path(args.run_dir).expanduser()),
    )
    print(info.summary())
    return EXIT_OK


def _run_model(args: argparse.Namespace, run_dir: Path):
    """The factory ``--model`` names for the model of a run folder, or ``None`` (the run's own
    model). A run of an ``nn.Module`` object needs one: refused naming the option."""
    from lth.runfolder.runs import read_config  # lazy: per command
    from lth.usercode import import_code  # lazy: per command

    spec = vars(args).get("model")
    if spec is not None:
        if not names_code(spec):
            raise LTHError(
                f"--model {spec!r} with a run folder must name a factory of the run's model as "
                "package.module:function"
            )
        return import_code(spec, "model", code_trust(args))
    if read_config(run_dir).model == "user model":
        raise LTHError(
            f"{run_dir} was run with a user model (an nn.Module object); pass --model "
            "package.module:function, a factory that builds the same architecture"
        )
    return None


def cmd_stability(args: argparse.Namespace) -> int:
    """``lth stability``: :func:`~lth.stability.measure.analyze_level` or
    :func:`~lth.stability.measure.find_rewind` on a run folder or a configuration."""
    import torch  # lazy: torch

    from lth.stability import measure as stability  # lazy: per command
    from lth.study.runner import resolve_device  # lazy: per command

    settings = [f.name for f in fields(ExperimentConfig) if f.name in vars(args)]
    model = None
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
        check_names(config)
        check_config(config, code_trust(args))
        stability.check_counts(args.copies, args.points)
        from lth.data.user import study_data  # lazy: per command

        device = resolve_device(args.device)  # everything first: bad input leaves no folder
        data = study_data(
            config.dataset, args.data_dir, code_trust(args), val_size=config.val_size,
            seed=config.seed, device=device,
        )  # fmt: skip
        stability.check_configuration(config, data, device, args.copies, code_trust(args), warning)
        run_dir = _stability_folder(Path(args.out).expanduser(), config)
    else:
        _check_run_dir(args.run_dir)
        model = _run_model(args, Path(args.run_dir).expanduser())  # --model: the run's model
        settings = [name for name in settings if name != "model"]
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
        "device": resolve_device(args.device), "trust_code": code_trust(args),
        "checkpoint_seconds": every, "quiet": args.quiet, "data": data, "model": model,
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
    from lth.runfolder.runs import RunFolder  # lazy: per command

    with RunFolder(out, resolve_init(config, user_model=names_code(config.model))):
        pass
    return out


def _stability_figures(run_dir: Path) -> None:
    """The stability figures; a figure that cannot be drawn is a warning."""
    from lth.stability.plots import plot_stability  # lazy: per command

    try:
        plot_stability(run_dir)
    except OSError:
        raise
    except Exception as e:  # the CSV files are written; the figures can be redrawn
        warning(f"could not draw the stability figures ({one_line(e)})")


__all__ = [
    "cmd_export",
    "cmd_plot",
    "cmd_report",
    "cmd_run",
    "cmd_stability",
    "cmd_sweep",
    "cmd_publish",
    "cmd_verify",
]
