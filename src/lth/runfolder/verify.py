"""``lth verify RUN_DIR``: audit a run folder from its files alone.

Every branch, replicate and level of a run is checked against the algorithm it claims to have
run, iterative magnitude pruning with rewinding (Frankle & Carbin, ICLR 2019; late rewinding:
Frankle et al., ICML 2020, Algorithm 1) and its two controls. The checks, in the order they
run (the first violation stops the audit):

``manifest``
    every file lth wrote in the folder (config.toml, the tables, the level files, the derived
    tables, the figures, the files of ``lth stability`` and TensorBoard, lth's state in
    ``.lth/``) has the sha256 that ``.lth/manifest.json`` recorded
    (:func:`lth.runfolder.storage.check_manifest`). A folder without a manifest fails, unless its
    ``.lth-run`` marker is an older lth's (or it has none): then the check is skipped.
``files``
    every replicate whose ticket did not diverge goes on to the next level, with the ticket
    and each control (level 0: the ticket alone, the dense network; a run folder of an older
    lth, which trained the controls at level 0 too, may hold every control there, and they
    are then checked like the others), each with ``mask``, ``init`` and ``final``; level 0
    holds θk as ``step_K.safetensors`` when the run rewinds late; no level folder is left over.
``pruned-zero``
    pruned weights are exactly 0 in ``init`` and ``final`` (``final`` of a network that
    diverged is not checked: NaN spreads to every entry).
``mask-chain``
    the ticket's mask only shrinks from level to level (skipped for a criterion that computes
    each mask in one shot from θ0: ``snip``, ``grasp``, ``synflow``, ``magnitude_init``).
``pruning-count``
    each level removed ``round(rate × survivors)`` per layer (per ranked group with global
    pruning; rates from the run's config through :func:`lth.pruning.selection.layer_rates` and
    :func:`lth.pruning.selection.target_rate`, ``rate_schedule``'s rate at each level;
    ``exclude``d layers keep all their weights); a one-shot criterion keeps IMP's counts at
    each level (:func:`lth.runfolder.recompute.one_shot_kept`).
``magnitude``
    the ticket's mask is the one magnitude pruning of the previous level's trained weights
    gives (recomputed here: lowest |w| of the survivors first, ties by layer then index); with
    the ``magnitude_init`` criterion, of θ0 restricted by the previous mask; other criteria
    are not recomputed (the check is skipped).
``rewind``
    the ticket's ``init`` equals, bit for bit, on its survivors and in every unmasked tensor:
    θ0 (level 0's ``init`` of the same replicate), θk (level 0's ``step_K``) with late
    rewinding, or the previous level's ``final`` when fine-tuning or rewinding the learning
    rate (``reset reinit`` draws new weights: nothing to compare).
``reinit-control``
    the reinit control has the ticket's exact mask and weights other than θ0.
``random-prune-control``
    the random-pruning control keeps as many weights per layer as the ticket, and starts from
    the ticket's starting weights (θ0, θk or the previous ``final``) on its survivors. In a
    structured run (``granularity`` neuron or channel) every control keeps or prunes each unit
    whole and keeps the ticket's unit count per layer
    (:func:`lth.runfolder.verify_structured.check_control_units`).
``controls``
    the ``sign_keep``, ``signed_constant`` and ``shuffle_init`` controls have the ticket's
    exact mask and unmasked tensors, and on their survivors: the ticket's starting signs;
    those signs times the layer's θ0 standard deviation; the ticket's starting values
    permuted. The ``inverted`` control keeps as many weights per layer as the ticket, within
    the ticket's previous mask, and starts from the ticket's starting weights.
``schedule``
    metrics.csv evaluates each network from its start (0; k for the ticket and the random
    pruning control of a late-rewound level) every ``eval_every`` iterations to the last.
``summary``
    summary.csv agrees with the masks (``weights_remaining``: percent of the prunable,
    non-excluded weights), layers.csv with the masks, metrics.csv with summary.csv: the test
    accuracy at the end, the early stop (the lowest validation loss, first on ties, the
    untrained start excluded; empty without validation data), the test accuracy there, the
    best validation accuracy, the divergence.

:func:`verify_run` audits a whole run; :func:`verify_level` one level (``lth run`` calls it as
each level finishes). Both raise :class:`VerifyError` (an :class:`~lth.errors.LTHError`) naming
the check, the branch, replicate, level and layer, and the values.

Which layer is the output layer (for ``output_rate``) and which are conv layers (for
``conv_rate``) is read from the tensors (:func:`lth.runfolder.recompute.layer_kinds`): the last
2-D weight and the 4-D weights, as in every registry model; a user model whose last
``nn.Linear`` is not its last 2-D weight would be audited with the wrong output layer. Each
control's own checks are its entry's in :mod:`lth.pruning.controls`.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from lth.config import ExperimentConfig
from lth.configfile import read_run_config, read_run_info
from lth.core.fileio import load_tensors
from lth.data import get_spec
from lth.errors import LTHError
from lth.pruning.controls import CONTROLS, full_schedule
from lth.runfolder.audit_rows import (
    Key,
    VerifyError,
    layers_by_network,
    metrics_by_network,
    read_rows,
)
from lth.runfolder.layout import (
    INTERNAL,
    MANIFEST,
    MARKER,
    MARKER_FORMAT,
    level_branches,
    level_dir,
)
from lth.runfolder.manifest import Manifest, read_marker
from lth.runfolder.readers import MetricRow, SummaryRow, load_metrics, load_summary
from lth.runfolder.recompute import layer_kinds, magnitude_prune, pruned_in_one_shot, removals
from lth.runfolder.verify_structured import check_control_units, check_units

CHECKS = (
    "manifest",
    "files",
    "pruned-zero",
    "mask-chain",
    "pruning-count",
    "magnitude",
    "rewind",
    "reinit-control",
    "random-prune-control",
    "controls",
    "schedule",
    "summary",
)
_WHAT = {
    "manifest": "files as lth wrote them (.lth/manifest.json)",
    "files": "networks with their mask, init and final",
    "pruned-zero": "networks with pruned weights exactly 0 in init and final",
    "mask-chain": "ticket masks within the previous level's",
    "pruning-count": "levels that pruned round(rate x survivors) per layer or group",
    "magnitude": "ticket masks equal to magnitude pruning of the previous trained weights",
    "rewind": "tickets starting bit for bit from their reset point",
    "reinit-control": "reinit controls with the ticket's mask and other weights than θ0",
    "random-prune-control": "random-pruning controls with the ticket's counts and start",
    "controls": ", ".join(n for n in CONTROLS.names() if CONTROLS[n].check == "controls")
    + " controls as they claim",
    "schedule": "networks evaluated from their start iteration to the last",
    "summary": "summary rows agreeing with the masks, layers.csv and metrics.csv",
}


def _where(key: Key, layer: str | None = None) -> str:
    branch, rep, level = key
    return f"{branch} replicate {rep} level {level}" + (f" layer {layer}" if layer else "")


def _ints(t: Tensor) -> Tensor:
    """The bits of a tensor's entries as integers of the same width (bit-for-bit compares)."""
    flat = t.detach().reshape(-1).contiguous()
    if flat.dtype == torch.bool:
        return flat.to(torch.uint8)
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    return flat.view(width[flat.element_size()])


def _first_difference(a: Tensor, b: Tensor) -> str | None:
    """None when ``a`` and ``b`` are the same bits; else where and how they first differ."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
    differ = (_ints(a) != _ints(b)).nonzero()
    if differ.numel() == 0:
        return None
    i = int(differ[0])
    x, y = a.reshape(-1)[i].item(), b.reshape(-1)[i].item()
    return f"{differ.numel()} of {a.numel()} entries differ, first at {i}: {x!r} vs {y!r}"


class Audit:
    """The checks of one run folder, with the files they read cached level by level."""

    def __init__(self, run_dir: str | Path, config: ExperimentConfig | None = None):
        self.run = Path(run_dir)
        if not (self.run / "config.toml").is_file():
            raise LTHError(f"{run_dir} is not an lth run folder (no config.toml)")
        self.config = config or read_run_config(self.run)
        self.passed: Counter[str] = Counter()
        self._files: dict[tuple[Key, str], dict[str, Tensor]] = {}
        self._summary_rows: dict[Key, SummaryRow] | None = None

    # -- reading -------------------------------------------------------------------------
    @property
    def summary(self) -> dict[Key, SummaryRow]:
        """The rows of summary.csv by (branch, replicate, level)."""
        if self._summary_rows is None:
            rows = read_rows(load_summary, self.run)
            self._summary_rows = {(r.branch, r.replicate, r.level): r for r in rows}
        return self._summary_rows

    def tensors(self, key: Key, which: str) -> dict[str, Tensor]:
        """``which`` (mask, init, final, step_K) of one network; a missing or damaged file
        fails the check ``files``."""
        if (key, which) not in self._files:
            path = level_dir(self.run, *key) / f"{which}.safetensors"
            try:
                tensors = load_tensors(path)
            except LTHError as e:
                raise VerifyError("files", _where(key), str(e)) from None
            if which == "mask":
                tensors = {n: m.bool() for n, m in tensors.items()}
            self._files[key, which] = tensors
        return self._files[key, which]

    def _forget_before(self, level: int) -> None:
        """Drop cached files of levels before ``level`` (level 0 holds θ0 and θk: kept)."""
        self._files = {k: v for k, v in self._files.items() if k[0][2] in (0,) or k[0][2] >= level}

    def iterations(self) -> int | None:
        """Training iterations per level (None when the run trains epochs of unknown data)."""
        c = self.config
        if not c.epochs:
            return c.iterations
        n = _train_size(self.run, c)
        return None if n is None else c.epochs * max(1, n // c.batch_size)

    def fail(self, check: str, key: Key, detail: str, layer: str | None = None):
        raise VerifyError(check, _where(key, layer), detail)

    # -- the audit -------------------------------------------------------------------------
    def levels(self) -> list[int]:
        """The levels summary.csv holds, in order."""
        return sorted({k[2] for k in self.summary})

    def check_manifest(self, levels: Iterable[int] | None = None) -> None:
        """``manifest``: the run's files (only the files at the top of the folder and those of
        ``levels`` if given) against .lth/manifest.json; skipped when an older lth wrote none
        (its marker says so), failed when it was deleted."""
        try:
            manifest = Manifest.load(self.run)
        except LTHError as e:
            raise VerifyError("manifest", str(self.run), str(e)) from None
        if manifest is None and read_marker(self.run)[0] >= MARKER_FORMAT:
            raise VerifyError(
                "manifest",
                str(self.run),
                f"no {INTERNAL}/{MANIFEST}, although the {MARKER} marker says this lth made "
                "the folder and recorded its files there: it was deleted, so no file can be "
                "checked against what lth wrote",
            )
        if manifest is None:
            return
        if levels is not None:
            wanted = {f"level_{lv:02d}" for lv in levels}
            files = {
                rel: digest
                for rel, digest in manifest.files.items()
                if "/" not in rel or wanted & set(rel.split("/"))
            }
            manifest = Manifest(self.run, files, manifest.writing)
        problems = manifest.problems()
        if problems:
            raise VerifyError("manifest", str(self.run), problems[0])
        self.passed["manifest"] += len(manifest.files) - len(manifest.writing)

    def check_level(self, level: int) -> None:
        """Every check of every network of one level."""
        order = {b: i for i, b in enumerate(("ticket", "reinit", "random_prune"))}
        keys = sorted(
            (k for k in self.summary if k[2] == level), key=lambda k: (k[1], order.get(k[0], 3))
        )
        self._check_files(level, keys)
        metrics = metrics_by_network(read_rows(load_metrics, self.run, levels=[level]))
        layers = layers_by_network(self.run, level)
        for key in keys:
            self._check_network(key, metrics.get(key, []), layers.get(key, {}))
        self.passed["files"] += len(keys)
        self._forget_before(level)

    def _check_files(self, level: int, keys: list[Key]) -> None:
        c = self.config
        branches = ("ticket", *c.controls)
        tickets = {k[1] for k in keys if k[0] == "ticket"}
        if level == 0:
            expected = set(range(c.replicates))
        else:
            expected = {
                rep
                for (b, rep, lv), row in self.summary.items()
                if b == "ticket" and lv == level - 1 and row.diverged_at is None
            }
        if tickets != expected:
            missing = sorted(expected - tickets) or sorted(tickets - expected)
            what = "missing" if expected - tickets else "not expected (its chain ended)"
            raise VerifyError(
                "files",
                f"level {level}",
                f"ticket of replicate {missing[0]} is {what} in summary.csv",
            )
        for key in keys:
            if key[0] not in branches:
                self.fail("files", key, f"unknown branch; this run has {', '.join(branches)}")
        for rep in sorted(tickets):
            for branch in self._branches_at(level, keys):
                if (branch, rep, level) not in self.summary:
                    self.fail("files", (branch, rep, level), "no row in summary.csv")
        for folder in sorted(self.run.glob(f"*/*/level_{level:02d}")):
            branch, rep = folder.parent.parent.name, folder.parent.name
            if rep.isdigit() and (branch, int(rep), level) not in self.summary:
                self.fail("files", (branch, int(rep), level), f"{folder} has no row in summary.csv")
        for key in keys:
            for which in ("mask", "init", "final"):
                self.tensors(key, which)
        if level == 0 and c.rewind_iteration and c.reset == "rewind":
            for rep in sorted(tickets):
                self.tensors(("ticket", rep, 0), f"step_{c.rewind_iteration}")

    def _branches_at(self, level: int, keys: list[Key]) -> tuple[str, ...]:
        """The branches every replicate must have at ``level``: the ticket and the controls
        from level 1 on; at level 0 the ticket alone, or (a run folder of an older lth, which
        trained the controls at level 0 too) every control as well when any is there."""
        older = level == 0 and any(k[0] != "ticket" for k in keys)
        return level_branches(self.config.controls, 1 if older else level)

    def _check_network(self, key: Key, metrics: list[MetricRow], layers: dict) -> None:
        branch, rep, level = key
        row = self.summary[key]
        masks, init, final = (self.tensors(key, w) for w in ("mask", "init", "final"))
        self._pruned_zero(key, masks, init, final, row.diverged_at is not None)
        if branch == "ticket":
            if level:
                self._prune_checks(key, masks)
            self._rewind(key, masks, init)
        else:  # a control: its own expectations (lth.pruning.controls)
            control = CONTROLS.lookup(branch)
            control.expect(self, key, masks, init)
            if self.config.granularity != "weight":  # whole units, the ticket's unit counts
                check_control_units(self, key, masks, layer_kinds(masks, init)[0])
            self.passed[control.check] += 1
        self._schedule(key, row, metrics)
        self._summary(key, row, masks, metrics, layers)

    def _pruned_zero(self, key, masks, init, final, diverged: bool) -> None:
        for which, weights in (("init", init), ("final", final)):
            if which == "final" and diverged:
                continue
            for name, m in masks.items():
                if name not in weights or weights[name].shape != m.shape:
                    self.fail("files", key, f"{which} has no tensor of the mask's shape", name)
                off = weights[name][~m]
                if off.numel() and bool((off != 0).any()):
                    i = int((off != 0).nonzero()[0])
                    self.fail(
                        "pruned-zero", key,
                        f"{which} holds {int((off != 0).sum())} nonzero pruned weights, the "
                        f"first {off[i].item()!r} (pruned entry {i})", name,
                    )  # fmt: skip
        self.passed["pruned-zero"] += 1

    def _prune_checks(self, key: Key, masks) -> None:
        """mask-chain, pruning-count and magnitude of a ticket at a level >= 1."""
        c = self.config
        _, rep, level = key
        before = ("ticket", rep, level - 1)
        prev, trained = self.tensors(before, "mask"), self.tensors(before, "final")
        if list(prev) != list(masks):
            self.fail(
                "mask-chain", key, f"masks {list(masks)} vs {list(prev)} at level {level - 1}"
            )
        output, conv = layer_kinds(masks, self.tensors(key, "init"))
        shot = pruned_in_one_shot(c, prev, masks, level, output, conv)
        if not self.chain_and_counts(key, prev, masks, output, conv, shot, trained):
            return
        if c.criterion not in ("magnitude", "magnitude_init"):
            return
        if c.criterion == "magnitude_init":
            theta0 = self.tensors(("ticket", rep, 0), "init")
            trained = {n: t.masked_fill(~prev[n], 0) if n in prev else t for n, t in theta0.items()}
        expected = magnitude_prune(trained, prev, removals(c, prev, level, output, conv, shot))
        for name, m in masks.items():
            wrong = m != expected[name]
            if bool(wrong.any()):
                i = int(wrong.reshape(-1).nonzero()[0])
                self.fail(
                    "magnitude", key,
                    f"{int(wrong.sum())} entries differ from magnitude pruning of level "
                    f"{level - 1}'s final weights, the first at flat index {i} "
                    f"(|w| {trained[name].reshape(-1)[i].abs().item()!r})", name,
                )  # fmt: skip
        self.passed["magnitude"] += 1

    def chain_and_counts(
        self, key: Key, prev, masks, output: str | None, conv: set[str], shot: bool, trained
    ) -> bool:
        """``mask-chain``: the ticket's masks within the previous level's (a one-shot
        criterion's need not nest); ``pruning-count``: each layer or ranked group removed the
        count :func:`removals` gives (whole units: :func:`check_units`). False when the level
        pruned whole units (the magnitude check is then the units')."""
        c, level = self.config, key[2]
        for name, m in masks.items() if not shot else ():  # one-shot masks need not nest
            grown = m & ~prev[name]
            if bool(grown.any()):
                i = int(grown.reshape(-1).nonzero()[0])
                self.fail(
                    "mask-chain", key,
                    f"{int(grown.sum())} weights pruned at level {level - 1} are kept again, "
                    f"the first at flat index {i}", name,
                )  # fmt: skip
        self.passed["mask-chain"] += not shot
        if c.granularity != "weight":  # whole units: lth.runfolder.verify_structured
            check_units(self, key, prev, masks, output, trained, shot)
            return False
        for group, n in removals(c, prev, level, output, conv, shot).items():
            had = sum(int(prev[name].sum()) for name in group)
            kept = sum(int(masks[name].sum()) for name in group)
            if had - kept != n:
                what = group[0] if len(group) == 1 else f"{len(group)} ranked layers"
                self.fail(
                    "pruning-count", key,
                    f"{what}: {had} survivors at level {level - 1}, {kept} now: removed "
                    f"{had - kept}, expected {n}", group[0] if len(group) == 1 else None,
                )  # fmt: skip
        self.passed["pruning-count"] += 1
        return True

    def start_point(self, rep: int, level: int) -> tuple[str, dict[str, Tensor]] | None:
        """(name, weights) the ticket of ``level`` >= 1 was reset to; None for reset reinit."""
        c = self.config
        if c.reset in ("finetune", "lr_rewind"):
            return f"level {level - 1}'s final", self.tensors(("ticket", rep, level - 1), "final")
        if c.reset != "rewind":
            return None
        if c.rewind_iteration:
            k = c.rewind_iteration
            return f"θk (step_{k} of level 0)", self.tensors(("ticket", rep, 0), f"step_{k}")
        return "θ0 (level 0's init)", self.tensors(("ticket", rep, 0), "init")

    def same_start(self, check: str, key: Key, masks, init, ref: dict[str, Tensor], what: str):
        """``init`` equals ``ref`` bit for bit on the survivors and in unmasked tensors."""
        for name, t in init.items():
            if name not in ref:
                self.fail(check, key, f"{what} has no tensor {name}")
            m = masks.get(name)
            a, b = (t, ref[name]) if m is None else (t[m], ref[name][m])
            problem = _first_difference(a, b)
            if problem:
                scope = "unmasked tensor" if m is None else "survivors"
                self.fail(check, key, f"init vs {what} on its {scope}: {problem}", name)

    @staticmethod
    def first_difference(a: Tensor, b: Tensor) -> str | None:
        """None when ``a`` and ``b`` are the same bits; else where and how they first differ."""
        return _first_difference(a, b)

    def _rewind(self, key: Key, masks, init) -> None:
        _, rep, level = key
        start = self.start_point(rep, level) if level else None
        if start is not None:
            self.same_start("rewind", key, masks, init, start[1], start[0])
        self.passed["rewind"] += 1

    def _schedule(self, key: Key, row: SummaryRow, metrics: list[MetricRow]) -> None:
        c = self.config
        branch, _, level = key
        late = level > 0 and c.reset == "rewind" and not full_schedule(branch)
        start = c.rewind_iteration if late else 0
        total = self.iterations()
        got = [m.iteration for m in metrics]
        if total is None:  # epochs of user data: the last iteration is not known here
            total = got[-1] if got and row.diverged_at is None else None
        if total is not None:
            every = c.eval_every
            want = [start] + [
                i for i in range(start + 1, total + 1) if i % every == 0 or i == total
            ]
            if row.diverged_at is not None:
                want = [i for i in want if i < row.diverged_at]
            if got != want:
                self.fail(
                    "schedule", key,
                    f"metrics.csv evaluates at {_short(got)}, expected {_short(want)} "
                    f"(start {start}, last {total}, every {every})",
                )  # fmt: skip
        self.passed["schedule"] += 1

    def _summary(self, key: Key, row: SummaryRow, masks, metrics: list[MetricRow], layers) -> None:
        c = self.config
        pruned = {n: m for n, m in masks.items() if n not in c.exclude}
        total = sum(m.numel() for m in pruned.values())
        remaining = 100.0 * sum(int(m.sum()) for m in pruned.values()) / total if total else 100.0
        if not math.isclose(row.weights_remaining, remaining, rel_tol=1e-12):
            self.fail(
                "summary", key,
                f"weights_remaining {row.weights_remaining!r}, the mask keeps {remaining!r}% "
                "of the prunable weights",
            )  # fmt: skip
        for name, m in masks.items():
            got = layers.get(name)
            want = (int(m.sum()), m.numel())
            if got != want:
                self.fail("summary", key, f"layers.csv says kept/total {got}, mask {want}", name)
        if set(layers) != set(masks):
            self.fail("summary", key, f"layers.csv lists {sorted(layers)}, masks {list(masks)}")
        if not metrics:
            if row.diverged_at is None:
                self.fail("summary", key, "no rows in metrics.csv")
            self.passed["summary"] += 1
            return
        for m in metrics:
            if not _same(m.weights_remaining, row.weights_remaining):
                self.fail(
                    "summary", key,
                    f"metrics.csv weights_remaining {m.weights_remaining!r} at iteration "
                    f"{m.iteration}, summary.csv {row.weights_remaining!r}",
                )  # fmt: skip
        finite = [i for i, m in enumerate(metrics) if i > 0 and m.val_loss == m.val_loss]
        es = min(finite, key=lambda i: metrics[i].val_loss) if finite else None
        expected = {
            "test_acc": metrics[-1].test_acc,
            "early_stop_iteration": math.nan if es is None else float(metrics[es].iteration),
            "test_acc_at_early_stop": math.nan if es is None else metrics[es].test_acc,
            "best_val_acc": max((m.val_acc for m in metrics if m.val_acc == m.val_acc),
                                default=math.nan),
        }  # fmt: skip
        for column, want in expected.items():
            got = getattr(row, column)
            if not _same(got, want):
                self.fail("summary", key, f"{column} {got!r}, metrics.csv gives {want!r}")
        last = metrics[-1].iteration
        if row.diverged_at is not None and row.diverged_at <= last:
            self.fail(
                "summary", key,
                f"diverged_at {row.diverged_at}, but metrics.csv goes on to iteration {last}",
            )  # fmt: skip
        self.passed["summary"] += 1

    def lines(self) -> list[str]:
        """One line per check passed."""
        out = []
        for check in CHECKS:
            if check == "manifest" and not self.passed[check]:
                out.append("skipped manifest: the run has no .lth/manifest.json (an older lth)")
                continue
            if check == "mask-chain" and not self.passed[check] and self.passed["pruning-count"]:
                out.append("skipped mask-chain: the criterion computes each mask in one shot")
                continue
            criterion = self.config.criterion
            if check == "magnitude" and criterion not in ("magnitude", "magnitude_init"):
                out.append(f"skipped magnitude: the criterion {criterion} is not recomputed")
                continue
            out.append(f"ok {check}: {self.passed[check]} {_WHAT[check]}")
        return out


def _train_size(run: Path, config: ExperimentConfig) -> int | None:
    """Training images of the run (after the validation split), or None if unknown."""
    source = read_run_info(run).get("source", {})
    for entry in source.get("data_tensors", []):
        found = re.match(r"train_x \((\d+)", str(entry))
        if found:
            return int(found.group(1))
    try:
        return get_spec(config.dataset).train_size - config.val_size
    except LTHError:
        return None


def _same(a: float | int | None, b: float | int | None) -> bool:
    """Equal, NaN (a missing value) equal to NaN or None."""
    a = math.nan if a is None else a
    b = math.nan if b is None else b
    return (a != a and b != b) or a == b


def _short(values: list[int]) -> str:
    return str(values) if len(values) <= 8 else f"[{values[0]}, {values[1]}, ..., {values[-1]}]"


def verify_run(run_dir: str | Path) -> list[str]:
    """Audit a whole run folder; returns one line per check passed.

    Raises :class:`VerifyError` at the first violation and :class:`~lth.errors.LTHError` when
    ``run_dir`` is not a run folder.
    """
    audit = Audit(run_dir)
    audit.check_manifest()
    for level in audit.levels():
        audit.check_level(level)
    return audit.lines()


def verify_level(run_dir: str | Path, level: int, config: ExperimentConfig | None = None) -> None:
    """Audit one finished level of a run folder (its files in the manifest, then every check
    of its networks); raises :class:`VerifyError` at the first violation."""
    audit = Audit(run_dir, config)
    audit.check_manifest([level])
    audit.check_level(level)


__all__ = [
    "CHECKS",
    "Audit",
    "VerifyError",
    "verify_level",
    "verify_run",
]
