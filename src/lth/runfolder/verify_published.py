"""``lth verify`` on a published folder (``lth publish``): every check its masks and tables allow.

A published folder (:mod:`lth.runfolder.publish`) has no weights, only the masks, bit-packed
(:mod:`lth.runfolder.packed`), and the tables. :func:`verify_published` runs, in order (the
first violation stops it, a :class:`~lth.runfolder.verify.VerifyError` as for a run folder):

``manifest``
    every file ``published.json`` lists has the sha256 it recorded.
``files``
    the packed masks hold exactly the networks of summary.csv, each chain of tickets going on
    while it did not diverge, with every control of the run.
``mask-chain``, ``pruning-count``
    as for a run folder (:mod:`lth.runfolder.verify`), from the masks and the config alone
    (:func:`lth.runfolder.recompute.removals`).
``reinit-control``, ``random-prune-control``, ``controls``
    the part of each control's claim a mask can show: the ticket's exact mask (``reinit``,
    ``sign_keep``, ``signed_constant``, ``shuffle_init``); the ticket's per-layer counts (every
    control), within the ticket's previous mask (``inverted``); and the random-pruning mask
    is the one its seed draws (redrawn here from the ticket's mask and the run's seed).
``schedule``, ``summary``
    as for a run folder: metrics.csv's evaluations, summary.csv against the masks, layers.csv
    and metrics.csv; and each row's ``params`` and ``flops`` recomputed from its masks
    (:mod:`lth.pruning.cost`, on the registry model the config names).

What needs the weights (``pruned-zero``, ``magnitude``, ``rewind``, the controls' starting
weights) is skipped, said in one line; ``lth verify --replay N`` (:mod:`lth.study.replay`)
retrains sampled networks from the config and seeds instead.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from lth.core.fileio import file_sha256
from lth.core.models import build_model
from lth.data import get_spec
from lth.errors import LTHError
from lth.pruning.controls import CONTROLS, ControlInput
from lth.pruning.cost import network_cost
from lth.pruning.granularity import structured_layers
from lth.pruning.policy import derive_seed
from lth.runfolder.audit_rows import (
    Key,
    VerifyError,
    layers_by_network,
    metrics_by_network,
    read_rows,
)
from lth.runfolder.layout import CONFIG, PACKED_MASKS, PUBLISHED
from lth.runfolder.packed import PackedMasks
from lth.runfolder.publish import read_published
from lth.runfolder.readers import load_metrics
from lth.runfolder.recompute import pruned_in_one_shot
from lth.runfolder.tables import SUMMARY
from lth.runfolder.verify import Audit
from lth.runfolder.verify_structured import check_control_units

__all__ = ["PUBLISHED_CHECKS", "SKIPPED", "is_published", "verify_published"]

PUBLISHED_CHECKS = (
    "manifest",
    "files",
    "mask-chain",
    "pruning-count",
    "reinit-control",
    "random-prune-control",
    "controls",
    "schedule",
    "summary",
)
SKIPPED = (
    "skipped (they need the weights, which a published folder leaves out): pruned-zero, "
    "magnitude, rewind and the controls' starting weights; lth verify --replay N retrains "
    "sampled networks instead"
)
_WHAT = {
    "manifest": "files as lth publish wrote them (published.json)",
    "files": "networks with their packed mask and summary row",
    "mask-chain": "ticket masks within the previous level's",
    "pruning-count": "levels that pruned round(rate x survivors) per layer or group",
    "reinit-control": "reinit controls with the ticket's mask",
    "random-prune-control": "random-pruning controls with the ticket's counts and the mask "
    "their seed draws",
    "controls": "other controls with the ticket's counts (and mask, where they claim it)",
    "schedule": "networks evaluated from their start iteration to the last",
    "summary": "summary rows agreeing with the masks, layers.csv and metrics.csv",
}


def is_published(folder: str | Path) -> bool:
    """Whether ``folder`` is a published folder (it has packed masks or ``published.json``)."""
    return (Path(folder) / PACKED_MASKS).is_file() or (Path(folder) / PUBLISHED).is_file()


def check_has_masks(folder: str | Path) -> None:
    """Refuse (``files``) a folder with a config and summary.csv but no masks at all: neither
    level folders (a run folder) nor packed masks (a published folder)."""
    f = Path(folder)
    tables = (f / CONFIG).is_file() and (f / SUMMARY.file).is_file()
    if tables and not (f / "ticket").is_dir() and not is_published(f):
        raise VerifyError(
            "files", str(f),
            "no masks: neither level folders (a run folder) nor masks.safetensors (a folder "
            f"lth publish wrote); publish it again from its run folder with lth publish RUN {f}",
        )  # fmt: skip


class PublishedAudit(Audit):
    """The checks of one published folder; its masks come from ``masks.safetensors``."""

    def __init__(self, folder: str | Path):
        super().__init__(folder)
        try:
            self.info = read_published(self.run)
            self.packed = PackedMasks.load(self.run / PACKED_MASKS)
        except LTHError as e:
            raise VerifyError("files", str(self.run), str(e)) from None
        if self.info is None:
            raise VerifyError("manifest", str(self.run), f"no {PUBLISHED}: publish the study again")
        self._masks: dict[Key, dict[str, Tensor]] = {}

    def tensors(self, key: Key, which: str) -> dict[str, Tensor]:
        """A network's masks (``which`` ``mask``); a published folder has no weights."""
        if which != "mask":
            raise VerifyError("files", str(self.run), f"{which} weights are not published")
        if key not in self._masks:
            if key not in self.packed.data:
                self.fail("files", key, f"no mask in {PACKED_MASKS}")
            self._masks[key] = self.packed.masks(key)
        return self._masks[key]

    def check_files_digests(self) -> None:
        """``manifest``: each file published.json lists, with its sha256."""
        for name, digest in sorted(self.info["files"].items()):
            path = self.run / name
            if not path.is_file():
                raise VerifyError(
                    "manifest", str(self.run), f"{name} is missing ({PUBLISHED} lists it)"
                )
            if file_sha256(path) != digest:
                raise VerifyError(
                    "manifest", str(self.run),
                    f"{name} was changed after lth publish wrote it (sha256 differs from "
                    f"{PUBLISHED})",
                )  # fmt: skip
            self.passed["manifest"] += 1

    def check_networks(self) -> None:
        """``files``: the packed masks and summary.csv name the same networks."""
        rows, packed = set(self.summary), set(self.packed.data)
        if rows != packed:
            extra = sorted(packed - rows)
            key = extra[0] if extra else sorted(rows - packed)[0]
            what = "has a packed mask but no row in summary.csv" if extra else "has no packed mask"
            self.fail("files", key, what)

    def check_level_masks(self, level: int) -> None:
        """Every mask check of one level, then its schedule and summary rows."""
        c = self.config
        keys = sorted((k for k in self.summary if k[2] == level),
                      key=lambda k: (k[1], k[0] != "ticket", k[0]))  # fmt: skip
        tickets = {k[1] for k in keys if k[0] == "ticket"}
        if level == 0:
            expected = set(range(c.replicates))
        else:
            expected = {
                r for (b, r, lv), row in self.summary.items()
                if b == "ticket" and lv == level - 1 and row.diverged_at is None
            }  # fmt: skip
        if tickets != expected:
            rep = sorted(tickets ^ expected)[0]
            raise VerifyError(
                "files", f"level {level}",
                f"ticket of replicate {rep} is {'missing' if rep in expected else 'not expected'}"
                " in summary.csv",
            )  # fmt: skip
        controls = set(c.controls)
        if level == 0:  # a run may train no control at level 0 (nothing pruned yet)
            controls = {k[0] for k in keys if k[0] != "ticket"}
        for key in keys:
            if key[0] != "ticket" and (key[0] not in c.controls or key[1] not in tickets):
                self.fail("files", key, "a network this run does not have")
        for rep in sorted(tickets):
            for branch in sorted(controls):
                if (branch, rep, level) not in self.summary:
                    self.fail("files", (branch, rep, level), "no row in summary.csv")
        metrics = metrics_by_network(read_rows(load_metrics, self.run, levels=[level]))
        layers = layers_by_network(self.run, level)
        for key in keys:
            masks = self.tensors(key, "mask")
            if key[0] == "ticket":
                if level:
                    self._chain_and_counts(key, masks)
            else:
                self._control_masks(key, masks)
            row = self.summary[key]
            self._schedule(key, row, metrics.get(key, []))
            self._summary(key, row, masks, metrics.get(key, []), layers.get(key, {}))
            self._cost(key, row, masks)
        self.passed["files"] += len(keys)

    def _cost(self, key: Key, row, masks: dict[str, Tensor]) -> None:
        """``summary``: params and flops of the row are the masks' (:mod:`lth.pruning.cost`),
        for a registry model on a registry dataset (others are not rebuilt here)."""
        if row.params is None or row.flops is None:
            return
        if not hasattr(self, "_template"):
            try:
                spec = get_spec(self.config.dataset)
                self._template = build_model(self.config.model, spec.input_shape, spec.num_classes)
                self._shape = spec.input_shape
            except LTHError:  # a user's model or data: not rebuilt without trusting its code
                self._template = None
        if self._template is None:
            return
        structured = self.config.granularity != "weight"
        want = network_cost(self._template, masks, self._shape, shrunk=structured)
        if (row.params, row.flops) != want:
            self.fail("summary", key, f"params {row.params} and flops {row.flops}, the masks "
                      f"give {want[0]} and {want[1]}")  # fmt: skip

    def _one_shot(self, rep: int, level: int) -> bool:
        """Whether the ticket's masks at ``level`` are a one-shot criterion's (they need not
        nest), as :mod:`lth.runfolder.verify` decides it (:func:`pruned_in_one_shot`)."""
        prev = self.tensors(("ticket", rep, level - 1), "mask")
        masks = self.tensors(("ticket", rep, level), "mask")
        conv = {n for n, m in masks.items() if m.dim() == 4}
        return pruned_in_one_shot(self.config, prev, masks, level, self.packed.output, conv)

    def _chain_and_counts(self, key: Key, masks: dict[str, Tensor]) -> None:
        _, rep, level = key
        prev = self.tensors(("ticket", rep, level - 1), "mask")
        conv = {n for n, m in masks.items() if m.dim() == 4}
        output, shot = self.packed.output, self._one_shot(rep, level)
        self.chain_and_counts(key, prev, masks, output, conv, shot, None)  # no weights: counts

    def _control_masks(self, key: Key, masks: dict[str, Tensor]) -> None:
        branch, rep, level = key
        control = CONTROLS.lookup(branch)
        check = control.check
        ticket = self.tensors(("ticket", rep, level), "mask")
        for name, m in masks.items():
            if int(m.sum()) != int(ticket[name].sum()):
                self.fail(check, key, f"keeps {int(m.sum())} weights, the ticket "
                          f"{int(ticket[name].sum())}", name)  # fmt: skip
            if control.ticket_mask and not torch.equal(m, ticket[name]):
                self.fail(check, key, "the mask is not the ticket's (same level)", name)
            if control.nests and level and not self._one_shot(rep, level):
                prev = self.tensors(("ticket", rep, level - 1), "mask")
                if bool((m & ~prev[name]).any()):
                    self.fail(check, key, "keeps weights the ticket pruned before", name)
        if branch == "random_prune" and level:
            drawn = self.random_prune_mask(rep, level, ticket)
            for name, m in masks.items():
                if not torch.equal(m, drawn[name]):
                    wrong = int((m != drawn[name]).sum())
                    self.fail(check, key, f"{wrong} entries differ from the mask its seed "
                              "draws from the ticket's", name)  # fmt: skip
        if self.config.granularity != "weight":  # whole units, the ticket's unit counts
            check_control_units(self, key, masks, self.packed.output)
        self.passed[check] += 1

    def random_prune_mask(self, rep: int, level: int, ticket: dict[str, Tensor]) -> dict:
        """The random-pruning control's mask as the study drew it: the registry's maker, its
        generator seeded by (seed, control, replicate, level) as
        :meth:`lth.study.experiment.Experiment.control` seeds it."""
        gen = torch.Generator().manual_seed(
            derive_seed(self.config.seed, "random_prune", rep, level)
        )
        conv = {n for n, m in ticket.items() if m.dim() == 4}
        units = structured_layers(ticket, self.config.granularity, self.packed.output, conv)
        inp = ControlInput(rep, level, ticket, {}, {}, ({}, {}), gen, None, None,  # type: ignore[arg-type]
                           frozenset(units))  # fmt: skip
        return CONTROLS.lookup("random_prune").make(inp)[0]

    def published_lines(self) -> list[str]:
        """One line per check passed, and one line for the checks skipped."""
        out = [f"ok {c}: {self.passed[c]} {_WHAT[c]}" for c in PUBLISHED_CHECKS if self.passed[c]]
        return [*out, SKIPPED]


def verify_published(folder: str | Path) -> list[str]:
    """Audit a published folder from its masks and tables; returns one line per check passed
    and one line naming the checks skipped (they need the weights).

    Args:
        folder: A folder ``lth publish`` wrote.

    Returns:
        list[str]: The lines ``lth verify`` prints.

    Raises:
        VerifyError: At the first violation (also for a folder without masks).

    Examples:
        >>> import tempfile
        >>> verify_published(tempfile.mkdtemp())
        Traceback (most recent call last):
        ...
        lth.errors.LTHError: ... is not an lth run folder (no config.toml)
    """
    check_has_masks(folder)
    audit = PublishedAudit(folder)
    audit.check_files_digests()
    audit.check_networks()
    for level in audit.levels():
        audit.check_level_masks(level)
    return audit.published_lines()
