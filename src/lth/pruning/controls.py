"""The controls (sanity checks) as a registry: one entry per control, in one place.

Each control trains with the ticket's exact per-layer counts and isolates one thing the ticket
might owe its accuracy to. Its :class:`Control` entry holds its one-line description (``lth run
--help``, the docs), the function that makes its (mask, starting weights) from the ticket's
(:meth:`lth.study.experiment.Experiment.plan` calls it), and its own expectations, which
``lth verify`` (:mod:`lth.runfolder.verify`) checks on the run folder. Adding a control is one
:func:`register_control` call here; :func:`check_controls` refuses a study naming one that is not
registered, and the run folder's branch names (:func:`lth.runfolder.layout.branch_names`) come
from here.

Structured studies (``granularity`` neuron or channel, :mod:`lth.pruning.granularity`): every
built-in control keeps whole units. ``reinit``, ``sign_keep``, ``signed_constant`` and
``shuffle_init`` train on the ticket's own (structured) mask; ``random_prune`` draws random whole
units with the ticket's per-layer unit counts; ``layer_shuffle`` permutes the ticket's units
within each layer; ``inverted`` keeps the previous survivor units the criterion scores lowest.
The layers pruned by units are ``ControlInput.units``; a control that claims neither
``ticket_mask`` nor ``whole_units`` is refused in a structured study (:func:`check_controls`).

>>> CONTROLS.names()[:2], CONTROLS.lookup("reinit").check
(['reinit', 'random_prune'], 'reinit-control')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from lth.errors import LTHError
from lth.pruning.granularity import (
    prune_units,
    random_units_like,
    shuffle_units,
    unit_counts,
)
from lth.pruning.masks import MaskSet
from lth.pruning.selection import prune_random_like, select_layerwise
from lth.registry import Registry

__all__ = [
    "CONTROLS",
    "Auditor",
    "Control",
    "ControlInput",
    "check_controls",
    "control_help",
    "full_schedule",
    "register_control",
]

Weights = dict[str, Tensor]
Key = tuple[str, int, int]  # branch, replicate, level


@dataclass
class ControlInput:
    """What a control's maker gets: the ticket's mask and start at one replicate and level.

    ``pruned`` is (the weights the criterion scored, the previous level's mask); ``generator``
    is seeded for this control, replicate and level; ``fresh(*keys)`` draws a new seeded
    initialisation; ``scorer(weights, init, replicate, level)`` gives the criterion's scoring
    function of masks. ``units``: the layers a structured study prunes by whole units (empty at
    weight granularity).
    """

    replicate: int
    level: int
    masks: MaskSet
    start: Weights
    theta0: Weights
    pruned: tuple[Weights, MaskSet]
    generator: torch.Generator
    fresh: Callable[..., Weights]
    scorer: Callable[..., Callable[[MaskSet], Weights]]
    units: frozenset[str] = frozenset()


class Auditor(Protocol):
    """What a control's expectations use of ``lth verify``'s audit of a run folder."""

    def tensors(self, key: Key, which: str) -> Weights: ...
    def fail(self, check: str, key: Key, detail: str, layer: str | None = None) -> Any: ...
    def start_point(self, rep: int, level: int) -> tuple[str, Weights] | None: ...
    def same_start(
        self, check: str, key: Key, masks: MaskSet, init: Weights, ref: Weights, what: str
    ) -> None: ...
    def first_difference(self, a: Tensor, b: Tensor) -> str | None: ...


@dataclass(frozen=True)
class Control:
    """One control: its name, one-line description, maker and expectations.

    ``make(inp)`` returns (mask, starting weights). ``expect(audit, key, masks, init)`` raises
    through ``audit.fail`` (check ``check``) when a network of this branch breaks the control's
    claim. ``fresh_start``: it starts from fresh weights and trains the whole schedule from
    step 0 (never late-rewound or fine-tuned). ``ticket_mask``: it trains on the ticket's own
    mask; ``nests``: its mask lies within the ticket's previous mask. The two tell
    :mod:`lth.runfolder.verify_published` what a control's mask must be when only the masks
    are published (a control that claims neither is checked for the ticket's counts alone).
    ``whole_units``: given ``ControlInput.units`` its mask keeps or prunes each unit of those
    layers whole, so a structured study may train it (a ``ticket_mask`` control does too).
    """

    name: str
    description: str
    make: Callable[[ControlInput], tuple[MaskSet, Weights]]
    check: str
    expect: Callable[[Auditor, Key, MaskSet, Weights], None]
    fresh_start: bool = False
    ticket_mask: bool = False
    nests: bool = False
    whole_units: bool = False


#: The controls by name, in the order of ``lth run --help``.
CONTROLS: Registry[Control] = Registry("control")


def register_control(control: Control) -> Control:
    """Add ``control`` to :data:`CONTROLS` (its name must be new)."""
    return CONTROLS.add(control.name, control, control.description)


def control_help() -> dict[str, str]:
    """``{name: one-line description}`` of every control, in order."""
    return {name: CONTROLS.describe(name) for name in CONTROLS.names()}


def check_controls(names: Sequence[str], granularity: str = "weight") -> None:
    """Refuse (one line) a control name that is not registered, and in a structured study
    (``granularity`` other than weight) one whose entry claims neither ``ticket_mask`` nor
    ``whole_units``: its mask could leave partly pruned units."""
    unknown = [n for n in names if n not in CONTROLS]
    if unknown:
        raise LTHError(
            f"unknown control {unknown[0]!r}; choose from {', '.join(CONTROLS.names())} or none"
        )
    if granularity == "weight":
        return
    for n in names:
        if not (CONTROLS[n].ticket_mask or CONTROLS[n].whole_units):
            raise LTHError(
                f"control {n!r} does not claim to keep whole units (ticket_mask or whole_units "
                f"in its registry entry), so granularity {granularity} could train it on partly "
                "pruned units; drop it from controls or use granularity weight"
            )


def full_schedule(branch: str) -> bool:
    """Whether ``branch`` (the ticket or a control) starts from fresh weights and trains the
    whole schedule from step 0."""
    return branch in CONTROLS and CONTROLS[branch].fresh_start


# ------------------------------------------------------------------------- expectations


def _ticket_counts(audit: Auditor, check: str, key: Key, masks: MaskSet) -> MaskSet:
    """The ticket's mask of the same replicate and level; fails unless ``masks`` keeps as many
    weights per layer."""
    _, rep, level = key
    ticket = audit.tensors(("ticket", rep, level), "mask")
    for name, m in masks.items():
        mine, theirs = int(m.sum()), int(ticket[name].sum()) if name in ticket else -1
        if mine != theirs:
            audit.fail(check, key, f"keeps {mine} weights, the ticket {theirs}", name)
    return ticket


def _ticket_start(audit: Auditor, check: str, key: Key, masks: MaskSet, init: Weights) -> None:
    """``init`` is the ticket's start on its survivors (θ0, θk or the previous ``final``)."""
    _, rep, level = key
    start = audit.start_point(rep, level) if level else None
    if start is None:  # compare with the ticket's own start where both keep a weight
        ticket_key = ("ticket", rep, level)
        ticket, ticket_init = audit.tensors(ticket_key, "mask"), audit.tensors(ticket_key, "init")
        both = {n: m & ticket[n] for n, m in masks.items()}
        audit.same_start(check, key, both, init, ticket_init, "the ticket")
    else:
        audit.same_start(check, key, masks, init, start[1], start[0])


def _expect_reinit(audit: Auditor, key: Key, masks: MaskSet, init: Weights) -> None:
    """The ticket's exact mask and weights other than θ0."""
    _, rep, level = key
    ticket = audit.tensors(("ticket", rep, level), "mask")
    for name, m in masks.items():
        if name not in ticket or not torch.equal(m, ticket[name]):
            audit.fail("reinit-control", key, "the mask is not the ticket's (same level)", name)
    theta0 = audit.tensors(("ticket", rep, 0), "init")
    survivors = [(init[n][m], theta0[n][m]) for n, m in masks.items() if bool(m.any())]
    if survivors and all(audit.first_difference(a, b) is None for a, b in survivors):
        audit.fail("reinit-control", key, "its surviving weights are θ0's: not reinitialised")


def _expect_random_prune(audit: Auditor, key: Key, masks: MaskSet, init: Weights) -> None:
    """The ticket's per-layer counts and its start on the survivors (whole units and the
    ticket's unit counts in a structured study: :mod:`lth.runfolder.verify_structured`)."""
    _ticket_counts(audit, "random-prune-control", key, masks)
    _ticket_start(audit, "random-prune-control", key, masks, init)


def _within(masks: MaskSet, previous: MaskSet) -> bool:
    """Whether every mask keeps only weights its previous mask kept."""
    return all(not bool((m & ~previous[n].to(m.device)).any()) for n, m in masks.items())


def _expect_inverted(audit: Auditor, key: Key, masks: MaskSet, init: Weights) -> None:
    """The ticket's counts, within the ticket's previous mask (when the ticket's own mask is:
    a one-shot criterion's need not be), from the ticket's start."""
    _, rep, level = key
    ticket = _ticket_counts(audit, "controls", key, masks)
    prev = audit.tensors(("ticket", rep, level - 1), "mask") if level else None
    if prev is not None and _within(ticket, prev):
        for name, m in masks.items():
            if bool((m & ~prev[name]).any()):
                audit.fail("controls", key, "keeps weights the ticket pruned before", name)
    _ticket_start(audit, "controls", key, masks, init)


def _expect_values(
    claim: Callable[[Tensor, Tensor, Tensor], tuple[bool, str]],
) -> Callable[[Auditor, Key, MaskSet, Weights], None]:
    """The ticket's exact mask and unmasked tensors, and survivors for which
    ``claim(mine, the ticket's, θ0 of the layer)`` gives (ok, what they should be)."""

    def expect(audit: Auditor, key: Key, masks: MaskSet, init: Weights) -> None:
        _, rep, level = key
        ticket = _ticket_counts(audit, "controls", key, masks)
        ticket_init = audit.tensors(("ticket", rep, level), "init")
        theta0 = audit.tensors(("ticket", rep, 0), "init")
        for name, t in init.items():
            m = masks.get(name)
            if m is None:
                problem = audit.first_difference(t, ticket_init[name])
                if problem:
                    detail = f"unmasked tensor vs the ticket's: {problem}"
                    audit.fail("controls", key, detail, name)
                continue
            if not torch.equal(m, ticket[name]):
                audit.fail("controls", key, "the mask is not the ticket's (same level)", name)
            ok, what = claim(t[m], ticket_init[name][m], theta0[name])
            if not ok:
                audit.fail("controls", key, f"its surviving weights are not {what}", name)

    return expect


def _signs(mine: Tensor, theirs: Tensor, theta0: Tensor) -> tuple[bool, str]:
    return torch.equal(torch.sign(mine), torch.sign(theirs)), "the ticket's starting signs"


def _signed_std(mine: Tensor, theirs: Tensor, theta0: Tensor) -> tuple[bool, str]:
    std = theta0.double().std().to(theirs.dtype)
    what = f"the ticket's starting signs times θ0's std {std.item():.6g}"
    return torch.equal(mine, torch.sign(theirs) * std), what


def _permuted(mine: Tensor, theirs: Tensor, theta0: Tensor) -> tuple[bool, str]:
    same = torch.equal(mine.sort().values, theirs.sort().values)
    return same, "a permutation of the ticket's starting values"


# ------------------------------------------------------------------------------- makers


def _make_reinit(inp: ControlInput) -> tuple[MaskSet, Weights]:
    return inp.masks, inp.fresh("reinit", inp.replicate, inp.level)


def _make_random_prune(inp: ControlInput) -> tuple[MaskSet, Weights]:
    if inp.units:  # whole units, the ticket's unit counts per layer
        return random_units_like(inp.masks, inp.units, generator=inp.generator), inp.start
    return prune_random_like(inp.masks, generator=inp.generator), inp.start


def _make_inverted(inp: ControlInput) -> tuple[MaskSet, Weights]:
    weights, previous = inp.pruned
    if not _within(inp.masks, previous):  # a one-shot criterion's masks need not nest
        previous = {n: torch.ones_like(m) for n, m in previous.items()}
    scores = inp.scorer(weights, inp.theta0, inp.replicate, inp.level)(previous)
    kept = {n: int(m.count_nonzero()) for n, m in inp.masks.items()}
    flipped = {n: -t.double() for n, t in scores.items()}
    if inp.units:  # the lowest-scored whole units, the ticket's unit counts
        units, had = unit_counts(inp.masks, inp.units), unit_counts(previous, inp.units)
        rates = {n: (had[n] - units[n]) / had[n] for n in inp.masks if kept[n]}
        inverted = prune_units(flipped, previous, rates, inp.units)
    else:
        had = {n: int(m.count_nonzero()) for n, m in previous.items()}
        rates = {n: (had[n] - kept[n]) / had[n] for n in inp.masks if kept[n]}
        inverted = select_layerwise(flipped, previous, rates)
    return {n: m if kept[n] else torch.zeros_like(m) for n, m in inverted.items()}, inp.start


def _make_sign_keep(inp: ControlInput) -> tuple[MaskSet, Weights]:
    weights = dict(inp.start)
    fresh = inp.fresh("sign_keep", inp.replicate, inp.level)
    for n in inp.masks:
        w = inp.start[n]
        weights[n] = fresh[n].to(w.device).abs() * torch.sign(w)
    return inp.masks, weights


def _make_signed_constant(inp: ControlInput) -> tuple[MaskSet, Weights]:
    weights = dict(inp.start)
    for n in inp.masks:
        w = inp.start[n]
        weights[n] = torch.sign(w) * inp.theta0[n].double().std().to(w.dtype)
    return inp.masks, weights


def _make_layer_shuffle(inp: ControlInput) -> tuple[MaskSet, Weights]:
    masks = {}
    for n, m in inp.masks.items():
        if n in inp.units:  # which whole units are kept, shuffled within the layer
            masks[n] = shuffle_units(m, inp.generator)
            continue
        order = torch.randperm(m.numel(), generator=inp.generator).to(m.device)
        masks[n] = m.reshape(-1)[order].view(m.shape)
    return masks, inp.start


def _expect_layer_shuffle(audit: Auditor, key: Key, masks: MaskSet, init: Weights) -> None:
    """The ticket's per-layer counts and its start on the survivors."""
    _ticket_counts(audit, "controls", key, masks)
    _ticket_start(audit, "controls", key, masks, init)


def _make_shuffle_init(inp: ControlInput) -> tuple[MaskSet, Weights]:
    weights = dict(inp.start)
    for n, m in inp.masks.items():
        w = inp.start[n]
        values = w[m.to(w.device)]
        order = torch.randperm(values.numel(), generator=inp.generator).to(w.device)
        weights[n] = w.masked_scatter(m.to(w.device), values[order])
    return inp.masks, weights


# ------------------------------------------------------------------------------ entries

register_control(Control(
    "reinit",
    "the ticket's mask, fresh random weights (the whole schedule from step 0): does the "
    "ticket need its θ0? (Frankle & Carbin 2019)",
    _make_reinit, "reinit-control", _expect_reinit, fresh_start=True, ticket_mask=True,
))  # fmt: skip
register_control(Control(
    "random_prune",
    "a random mask with the ticket's per-layer counts (with --granularity neuron/channel: "
    "random whole units, the ticket's unit counts per layer), the ticket's start (θ0, θK when "
    "rewinding late): does the ticket need its mask? (Frankle & Carbin 2019)",
    _make_random_prune, "random-prune-control", _expect_random_prune, whole_units=True,
))  # fmt: skip
register_control(Control(
    "sign_keep",
    "the ticket's mask, fresh magnitudes with the signs of the ticket's start (θ0, θK when "
    "rewinding late): are signs enough? (Zhou et al. 2019)",
    _make_sign_keep, "controls", _expect_values(_signs), ticket_mask=True,
))  # fmt: skip
register_control(Control(
    "signed_constant",
    "the ticket's mask, the signs of the ticket's start (θ0, θK when rewinding late) "
    "times the layer's θ0 std: are signs alone enough? (Zhou et al. 2019)",
    _make_signed_constant, "controls", _expect_values(_signed_std), ticket_mask=True,
))  # fmt: skip
register_control(Control(
    "inverted",
    "keep the survivors (whole units with --granularity neuron/channel) the criterion scores "
    "lowest: does its ranking matter?",
    _make_inverted, "controls", _expect_inverted, nests=True, whole_units=True,
))  # fmt: skip
register_control(Control(
    "shuffle_init",
    "the ticket's mask, the surviving starting values (θ0, θK when rewinding late) "
    "permuted within each layer: do the values need their places? (Zhou et al. 2019's "
    "reshuffle)",
    _make_shuffle_init, "controls", _expect_values(_permuted), ticket_mask=True,
))  # fmt: skip
register_control(Control(
    "layer_shuffle",
    "the ticket's mask permuted within each layer (the same per-layer density; with "
    "--granularity neuron/channel its whole units permuted), the ticket's start: does the "
    "method's choice of weights within a layer matter? (Frankle et al. 2021's layer-wise "
    "shuffle)",
    _make_layer_shuffle, "controls", _expect_layer_shuffle, whole_units=True,
))  # fmt: skip
