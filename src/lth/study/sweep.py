"""Sweeps: one TOML file, many studies, each its own run folder named by what it varies.

A sweep file holds base settings (keys as in a run's config.toml, and optionally ``preset``)
and a ``[vary]`` table of lists; every combination of the listed values (their Cartesian
product, in the file's order) is one study::

    preset = "default"
    levels = 3
    iterations = 1000

    [vary]
    rate = [0.2, 0.4]
    seed = [0, 1, 2]

gives six run folders ``rate-0.2_seed-0``, ..., ``rate-0.4_seed-2`` under the sweep folder.
``lth sweep`` submits them all to the executor (the local one runs them one after another,
Ray all together); ``lth report``/``lth plot`` over the sweep folder tabulate or overlay them.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tqdm import tqdm

from lth.config import ExperimentConfig, field_kinds
from lth.configfile import INFO_TABLES, read_toml
from lth.errors import LTHError
from lth.presets import get_preset

VARY = "vary"
DEFAULT_PRESET = "default"
MAX_RUNS = 10_000  # runs a sweep may make unless --max-runs says more
PROGRESS_FROM = 100  # sweeps of this many runs or more show a progress bar while checked


def read_sweep(
    path: str | Path, max_runs: int = MAX_RUNS, quiet: bool = True
) -> list[tuple[str, ExperimentConfig]]:
    """The studies of a sweep file as (run folder name, configuration), in product order.

    The number of runs is counted before any is made: more than ``max_runs`` is refused.
    ``quiet=False``: a progress bar on stderr while a large sweep is expanded and checked."""
    path = Path(path).expanduser()
    what = f"sweep file {path}"
    values = read_toml(path, "sweep file")
    for table in INFO_TABLES:
        values.pop(table, None)
    vary = values.pop(VARY, None)
    if not isinstance(vary, dict) or not vary:
        raise LTHError(
            f"{what} has no [{VARY}] table of settings to vary; add one, e.g. "
            f"[{VARY}] rate = [0.2, 0.4] (for a single study use lth run --config)"
        )
    preset = values.pop("preset", DEFAULT_PRESET)
    if not isinstance(preset, str):
        raise LTHError(f"{what}: preset must be a name in quotes, got {preset!r}")
    base = ExperimentConfig().to_dict() | get_preset(preset)
    try:  # the base settings alone, checked first
        ExperimentConfig.from_dict(base | values, what)
    except LTHError as e:
        raise LTHError(str(e) if str(e).startswith(what) else f"{what}: {e}") from None
    kinds = field_kinds()
    for key, options in vary.items():
        if key not in kinds:
            raise LTHError(
                f"{what}: [{VARY}] names unknown setting {key!r}; valid settings: "
                f"{', '.join(sorted(kinds))}"
            )
        if not isinstance(options, list) or not options:
            raise LTHError(
                f"{what}: [{VARY}] {key} must be a non-empty list of values, e.g. "
                f"{key} = [{_example(options if options != [] else base.get(key))}]"
            )
        if len({repr(v) for v in options}) < len(options):
            raise LTHError(f"{what}: [{VARY}] {key} lists a value twice")
    runs = math.prod(len(options) for options in vary.values())
    if runs > max_runs:
        sizes = " x ".join(str(len(options)) for options in vary.values())
        raise LTHError(
            f"{what}: [{VARY}] makes {runs:,} runs ({sizes}), more than the cap of "
            f"{max_runs:,}; vary fewer values, or pass --max-runs {runs} if you mean it"
        )
    studies: list[tuple[str, ExperimentConfig]] = []
    names: dict[str, dict] = {}
    with progress(runs, "reading the sweep", quiet) as done:
        for combination in itertools.product(*vary.values()):
            studies.append(_study(what, vary, combination, names, base | values))
            done()
    return studies


def _study(
    what: str, vary: dict, combination: tuple, names: dict, settings: dict
) -> tuple[str, ExperimentConfig]:
    """(run folder name, configuration) of one combination of the [vary] values; ``names``:
    the run folder names so far (two combinations must not share one)."""
    chosen = dict(zip(vary, combination))
    name = run_name(chosen)
    if name in names:
        raise LTHError(
            f"{what}: {chosen} and {names[name]} would share the run folder {name}; make "
            "the values differ in more than punctuation"
        )
    names[name] = chosen
    try:
        return name, ExperimentConfig.from_dict(settings | chosen, f"{what}, run {name}")
    except LTHError as e:  # a range check names the setting, not the run
        where = f"{what}, run {name}"
        raise LTHError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


def check_memory(
    studies: list[tuple[str, ExperimentConfig]], first, free: int | None = None
) -> None:
    """Refuse a sweep whose data and models cannot all be held in memory, estimated from its
    first study (``first``, an opened :class:`~lth.study.experiment.Experiment`) before any run
    folder is made: the data is loaded once per (dataset, val_size, seed), a model kept per
    run. ``free``: the bytes available (default: what the device has free now)."""
    import torch  # lazy: torch (the CLI's parser imports this module for MAX_RUNS)

    from lth.study.experiment import check_fits  # lazy: imports torch, as above

    data = first.data
    splits = {(c.dataset, c.val_size, c.seed) for _, c in studies}
    tensors = [t for t in vars(data).values() if isinstance(t, torch.Tensor)]
    data_bytes = sum(t.nbytes for t in tensors)
    model_bytes = sum(t.nbytes for t in first.template.state_dict().values())
    more = (len(splits) - 1) * data_bytes + (len(studies) - 1) * model_bytes
    what = (
        f"the sweep's {len(studies):,} runs ({len(splits)} data splits by dataset, val_size and "
        f"seed, {data_bytes / 2**30:.2f} GiB each, and a model per run)"
    )
    check_fits(more, first.device, what, "vary fewer seeds, or split the sweep", free)


@contextlib.contextmanager
def progress(total: int, what: str, quiet: bool) -> Iterator[Callable[[], None]]:
    """A function to call once per run done, drawing a progress bar on stderr when there are
    :data:`PROGRESS_FROM` runs or more (and not ``quiet``): checking a large sweep takes a
    while before anything runs. The bar is gone when the block ends, also on an error."""
    if quiet or total < PROGRESS_FROM:
        yield lambda: None
        return
    bar = tqdm(total=total, desc=what, unit="run", file=sys.stderr, leave=False)
    try:
        yield bar.update
    finally:
        bar.close()


def run_name(chosen: dict) -> str:
    """A run folder's name from its varied values: ``rate-0.2_seed-1``; lists joined by +."""
    parts = []
    for key, value in chosen.items():
        shown = "+".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        parts.append(f"{key}-{re.sub(r'[^A-Za-z0-9._+-]+', '-', shown).strip('-') or 'none'}")
    return "_".join(parts)


def _example(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}", "..."'
    if isinstance(value, (list, tuple)):
        return "[...], [...]"
    return f"{value}, ..." if value is not None else "..."


__all__ = ["MAX_RUNS", "check_memory", "progress", "read_sweep", "run_name"]
