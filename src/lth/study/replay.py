"""``lth verify --replay N``: retrain sampled networks of a study and compare their summary rows.

A run folder or a published folder (:mod:`lth.runfolder.publish`) holds the config, the seeds
and every network's mask; from those alone the study's own planner
(:meth:`lth.study.experiment.Experiment.plan`, its ticket masks taken from the folder) rebuilds
each network's starting weights (θ0, fresh weights, a control's), mask and data-order seed,
trains the group it trained in (the same grouping, so the same stacked float rounding) and
gives the network's summary row, which is compared with the folder's.

Sampling: N networks drawn without replacement by ``random.Random(config.seed)`` among those a
folder can rebuild (a network that starts from a previous level's trained weights, fine-tuning,
or a control whose mask needs them, ``inverted`` after a criterion of trained weights, cannot:
those levels are left out of the draw), a level-0 control that is the ticket itself counted
once, as the ticket.

Comparison (:func:`tolerances`): on the same kind of CPU, torch version and thread count as the
run (``[environment]`` of config.toml; a published folder's ``published.json`` gives the CPU
when config.toml does not), every column must be equal, bit for bit. Elsewhere float rounding
differs, and training amplifies a difference of one ulp into a difference comparable with a
change of seed (Summers & Dinneen 2021, "Nondeterminism and instability in neural network
optimization"): the replayed network is then one more draw of its branch and level, and an
accuracy column must lie within ``Z * sqrt(2) * sigma`` of the published one, ``sigma`` the larger
of the replicates' sample standard deviation at that branch and level and the binomial standard
error of an accuracy on the test set, ``100 * sqrt(p (1 - p) / m)``; the early-stop iteration
within ``Z * sqrt(2)`` times its replicates' standard deviation (not compared with one
replicate); ``weights_remaining``, ``params``, ``flops`` and whether training diverged must
be equal. ``Z = 4``: two
independent normal draws differ by more than ``4 sqrt(2) sigma`` with probability 6e-5.
"""

from __future__ import annotations

import contextlib
import math
import random
import statistics
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

from lth.configfile import read_run_info
from lth.core.training import History
from lth.data import load_dataset
from lth.errors import LTHError
from lth.runfolder.publish import cpu_kind, read_published
from lth.runfolder.readers import SummaryRow
from lth.runfolder.results import LevelResult
from lth.runfolder.verify import Audit, Key
from lth.runfolder.verify_published import PublishedAudit, is_published
from lth.study.experiment import Experiment
from lth.study.runner import resolve_device, sparse_threshold

__all__ = ["Z", "replay", "tolerances"]

Z = 4.0
ACCURACIES = ("test_acc", "test_acc_at_early_stop", "best_val_acc")


class _NotPublished(Exception):
    """A network's start needs weights the folder does not hold."""


class _Missing(Mapping):
    """Trained weights the folder does not hold: any use raises :class:`_NotPublished`."""

    def __getitem__(self, name):
        raise _NotPublished

    def __iter__(self) -> Iterator:
        raise _NotPublished

    def __len__(self) -> int:
        raise _NotPublished


class _Snapshots(dict):
    """Level 0's snapshots of one replicate (θk), trained on first use."""

    def __init__(self, replay: _Replay, replicate: int):
        super().__init__()
        self.replay, self.replicate = replay, replicate

    def __missing__(self, k: int):
        result = self.replay.trained(("ticket", self.replicate, 0))
        self.update(result.snapshots)
        return dict.__getitem__(self, k)


class _Replay:
    """The study of one folder, rebuilt to retrain its networks group by group."""

    def __init__(self, audit: Audit, experiment: Experiment):
        self.audit, self.exp = audit, experiment
        self.size = experiment.group_size()
        self.plans: dict[int, list] = {}
        self.results: dict[Key, LevelResult] = {}
        # the ticket's mask of each level is the folder's (its pruning needs the trained
        # weights); the planner does everything else as the study did
        experiment.prune = self._ticket_mask  # type: ignore[method-assign]

    def _ticket_mask(self, pruned, prev_masks, level: int, replicate: int, *args, **kwargs):
        return self.audit.tensors(("ticket", replicate, level), "mask")

    def plan(self, level: int) -> list | None:
        """The level's planned jobs, as :meth:`Experiment.plan` makes them; None when a start
        needs weights the folder does not hold."""
        if level not in self.plans:
            summary = self.audit.summary
            previous = {
                r: self._result(("ticket", r, level - 1))
                for (b, r, lv), row in summary.items()
                if b == "ticket" and lv == level - 1 and row.diverged_at is None
            }
            reps = {r for (b, r, lv) in summary if b == "ticket" and lv == 0}
            level0 = {r: self._result(("ticket", r, 0), self.exp.theta0(r)) for r in reps}
            try:
                self.plans[level] = self.exp.plan(level, previous, level0)
            except _NotPublished:
                self.plans[level] = None
        return self.plans[level]

    def _result(self, key: Key, init=None) -> LevelResult:
        snapshots = _Snapshots(self, key[1]) if key[2] == 0 else {}
        masks = self.audit.tensors(key, "mask")
        return LevelResult(*key, masks, init if init is not None else _Missing(), _Missing(),
                           History(), snapshots)  # fmt: skip

    def candidates(self) -> list[Key]:
        """The networks a replay can rebuild, sorted."""
        out = []
        for level in self.audit.levels():
            planned = self.plan(level)
            if planned is not None:
                out += [(b, r, level) for b, r, job in planned if job is not None]
        return sorted(out)

    def trained(self, key: Key) -> LevelResult:
        """Retrain the group of ``key``'s level that holds it; its result."""
        if key not in self.results:
            level = key[2]
            planned = self.plan(level)
            for unit in self.exp.units(level, planned, self.size):
                if any((b, r) == key[:2] for b, r, _ in unit.jobs):
                    self._check_masks(unit)
                    done = self.exp.trainer(unit).run()
                    for (b, r), res in self.exp.unit_results(unit, done).items():
                        self.results[b, r, level] = res
        return self.results[key]

    def _check_masks(self, unit) -> None:
        """Each planned mask is the folder's (a control's redrawn from its seed)."""
        for branch, r, job in unit.jobs:
            key = (branch, r, unit.level)
            mine = self.audit.tensors(key, "mask")
            for name, m in job.masks.items():
                if not torch.equal(m.cpu(), mine[name]):
                    self.audit.fail("replay", key, "the mask rebuilt from the config and seeds "
                                    "differs from the folder's", name)  # fmt: skip


def tolerances(
    rows: list[SummaryRow], key: Key, test_size: int, exact: bool
) -> dict[str, float | None]:
    """How far each summary column of network ``key`` may be from the published value: 0 when
    ``exact``; else see the module's docstring (None: not compared).

    Examples:
        >>> rows = [SummaryRow("ticket", r, 1, 80.0, acc, 500.0, acc, acc)
        ...         for r, acc in enumerate([97.0, 97.2, 97.4])]
        >>> t = tolerances(rows, ("ticket", 0, 1), 10000, exact=False)
        >>> round(t["test_acc"], 3), round(t["early_stop_iteration"], 3), t["weights_remaining"]
        (1.131, 0.0, 0.0)
    """
    columns = ("weights_remaining", "early_stop_iteration", *ACCURACIES)
    if exact:
        return dict.fromkeys(columns, 0.0)
    same = [r for r in rows if (r.branch, r.level) == (key[0], key[2]) and not r.diverged]
    out: dict[str, float | None] = {"weights_remaining": 0.0}

    def spread(column: str) -> float | None:
        values = [getattr(r, column) for r in same if getattr(r, column) == getattr(r, column)]
        return statistics.stdev(values) if len(values) >= 2 else None

    es = spread("early_stop_iteration")
    out["early_stop_iteration"] = None if es is None else Z * math.sqrt(2) * es
    mine = next(r for r in rows if (r.branch, r.replicate, r.level) == key)
    for column in ACCURACIES:
        p = min(max(getattr(mine, column) / 100, 0.0), 1.0) if getattr(mine, column) == getattr(
            mine, column) else 0.5  # fmt: skip
        binomial = 100 * math.sqrt(p * (1 - p) / max(test_size, 1))
        out[column] = Z * math.sqrt(2) * max(spread(column) or 0.0, binomial)
    return out


def _compare(audit: Audit, key: Key, got: dict, tol: dict, how: str) -> None:
    row = audit.summary[key]
    for column in ("params", "flops"):  # from the masks alone: equal everywhere
        if getattr(row, column) is not None and got.get(column) != getattr(row, column):
            audit.fail("replay", key, f"{column} {getattr(row, column)} published, "
                       f"{got.get(column)} replayed")  # fmt: skip
    if (row.diverged_at is None) != (got["diverged_at"] is None):
        audit.fail("replay", key, f"diverged_at {row.diverged_at} published, "
                   f"{got['diverged_at']} replayed ({how})")  # fmt: skip
    for column, limit in tol.items():
        a, b = getattr(row, column), got[column]
        a = math.nan if a is None else float(a)
        b = math.nan if b is None else float(b)
        if limit is None or (a != a and b != b):
            continue
        if (a != a) != (b != b) or abs(a - b) > limit:
            within = "exactly" if limit == 0 else f"within {limit:.4g}"
            audit.fail("replay", key, f"{column} {a!r} published, {b!r} replayed: not equal "
                       f"{within} ({how})")  # fmt: skip


@contextlib.contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def replay(folder: str | Path, n: int, data_dir: str | Path | None = None) -> list[str]:
    """Retrain ``n`` sampled networks of a run or published folder and compare their rows.

    Args:
        folder: A run folder or a folder ``lth publish`` wrote.
        n: How many networks to retrain (at most the folder's rebuildable ones).
        data_dir: Where the dataset's files are (default: the run's recorded folder when it
            exists, else lth's usual search).

    Returns:
        list[str]: One line: how many networks replayed, which, and how they were compared.

    Raises:
        VerifyError: (check ``replay``) a replayed row differs, in one line.
        LTHError: nothing can be replayed, or the data cannot be found.

    Examples:
        >>> import tempfile
        >>> replay(tempfile.mkdtemp(), 1)
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: ... is not an lth run folder (no config.toml)
    """
    folder = Path(folder)
    if n < 1:
        raise LTHError(f"--replay takes a number of networks >= 1, got {n}")
    audit: Audit = PublishedAudit(folder) if is_published(folder) else Audit(folder)
    config = audit.config
    env = read_run_info(folder).get("environment", {})
    cpu = env.get("cpu") or (read_published(folder) or {}).get("cpu")
    threads = int(env.get("threads") or torch.get_num_threads())
    here = cpu_kind()
    exact = cpu == here and env.get("torch") == torch.__version__ and env.get("device") == "cpu"
    how = (
        f"exact: the run's CPU kind ({here}), torch {torch.__version__} and "
        f"{_count(threads, 'thread')}"
        if exact
        else f"tolerance: the run's CPU {cpu or 'unknown'}, torch {env.get('torch')}; here "
        f"{here}, torch {torch.__version__}"
    )
    if data_dir is None and env.get("data_dir") and Path(env["data_dir"]).is_dir():
        data_dir = env["data_dir"]
    device = resolve_device("cpu")
    with _threads(threads):
        if config.kernels == "auto":
            sparse_threshold(device, folder if "sparse_threshold" in env else None)
        data = load_dataset(config.dataset, data_dir, val_size=config.val_size,
                            seed=config.seed, device=device)  # fmt: skip
        rebuilt = _Replay(audit, Experiment(config, data, device))
        candidates = rebuilt.candidates()
        if not candidates:
            raise LTHError(f"{folder}: no network can be rebuilt from its config, seeds and "
                           "masks (every level starts from trained weights)")  # fmt: skip
        sample = sorted(random.Random(config.seed).sample(candidates, min(n, len(candidates))))
        rows = list(audit.summary.values())
        for key in sample:
            got = rebuilt.trained(key).summary()
            tol = tolerances(rows, key, int(data.test_x.shape[0]), exact)
            _compare(audit, key, got, tol, how)
    names = ", ".join(f"{b}/{r}/level {lv}" for b, r, lv in sample)
    retrained = _count(len(sample), "network")
    rows_given = "give their summary rows" if len(sample) > 1 else "gives its summary row"
    return [f"ok replay: {retrained} retrained ({names}) {rows_given} ({how})"]


def _count(n: int, noun: str) -> str:
    """'1 network', '2 networks': a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
