"""``lth verify`` of structured tickets (``granularity`` neuron or channel): whole units.

For a ticket at a level >= 1 of a run whose ``granularity`` is not ``weight``, each layer that
:func:`lth.pruning.granularity.structured_layers` prunes by units must keep every unit (dim 0:
a neuron's row, a conv filter) exactly as it was or remove all of it, and lose
``round(rate × surviving units)`` units; the other layers lose ``round(rate × survivors)``
weights (0 for the output layer with ``neuron``). With the magnitude criteria the removed units
are recomputed: the lowest L1 norms of the previous level's trained weights (of θ0 for
``magnitude_init``) over each unit's survivors (Li et al. 2017), ties by the lower unit index,
an implementation independent of :mod:`lth.pruning.granularity`. A criterion that prunes in
one shot from θ0 (``snip``, ``grasp``, ``synflow``, ``magnitude_init``) is checked against the
all-ones mask instead of the previous level's: each layer keeps the units (weights, for a layer
not pruned by units) that as many levels of ``round(rate × what is left)`` leave of the whole
layer. Failures are the checks ``pruning-count`` and ``magnitude`` of :mod:`lth.runfolder.verify`.

Every control of a structured run (:func:`check_control_units`) must also keep or prune each
unit of those layers whole, and keep as many units per layer as the ticket of its replicate and
level (``random_prune``: random whole units; ``layer_shuffle``: the ticket's units permuted;
``inverted``: the lowest-scored units; the others the ticket's own mask); failures are the
control's own check (``random-prune-control`` or ``controls``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from lth.config import ExperimentConfig
from lth.pruning.controls import CONTROLS
from lth.pruning.granularity import structured_layers
from lth.pruning.selection import layer_rates
from lth.runfolder.recompute import level_rate, magnitude_prune

__all__ = ["check_control_units", "check_units", "unit_rates"]


def unit_rates(
    config: ExperimentConfig, names: list[str], output: str | None, conv: set[str], level: int = 1
) -> dict[str, float]:
    """Per-layer rates of a structured run at ``level``: ``rate`` (``rate_schedule``'s entry),
    ``output_rate`` (0 with ``neuron``: the output layer's units are the classes), ``conv_rate``
    for conv layers, 0 for ``exclude``.

    Examples:
        >>> from lth.config import ExperimentConfig
        >>> c = ExperimentConfig(granularity="neuron")
        >>> unit_rates(c, ["a.weight", "b.weight"], "b.weight", set())
        {'a.weight': 0.2, 'b.weight': 0.0}
    """
    c = config
    hidden = level_rate(c, level)
    rates = layer_rates(names, hidden, c.output_rate, output) if output in names else (
        layer_rates(names, hidden))  # fmt: skip
    if c.conv_rate:
        rates |= {n: c.conv_rate for n in names if n in conv}
    if c.granularity == "neuron" and output in rates:
        rates[output] = 0.0
    return rates | dict.fromkeys(c.exclude, 0.0)


def _rows(t: Tensor) -> Tensor:
    return t.reshape(t.shape[0], -1)


def check_units(
    audit,
    key,
    prev: dict[str, Tensor],
    masks: dict[str, Tensor],
    output: str | None,
    weights: dict[str, Tensor] | None,
    shot: bool = False,
) -> None:
    """``pruning-count`` and ``magnitude`` of one structured ticket (see the module);
    ``weights``: the previous level's trained weights (None: the magnitude check is skipped;
    θ0 is read instead for ``magnitude_init``); ``shot``: the criterion prunes in one shot
    from θ0 (checked against the all-ones mask)."""
    c, level = audit.config, key[2]
    if shot:  # one shot from θ0: the level prunes the all-ones mask
        prev = {n: torch.ones_like(m) for n, m in masks.items()}
    if weights is not None and c.criterion == "magnitude_init":  # θ0 under the previous mask
        theta0 = audit.tensors(("ticket", key[1], 0), "init")
        weights = {n: t.masked_fill(~prev[n], 0) if n in prev else t for n, t in theta0.items()}
    conv = {n for n, m in masks.items() if m.dim() == 4}
    rates = unit_rates(c, list(masks), output, conv, level)
    structured = structured_layers(masks, c.granularity, output, conv)
    per_level = [unit_rates(c, list(masks), output, conv, lv) for lv in range(1, level + 1)]

    def removed_from(name: str, count: int) -> int:
        """What ``level`` removes from ``count`` (units or weights): one level's
        ``round(rate × count)``, or, one-shot, what ``level`` levels remove from the layer."""
        if not shot:
            return round(rates[name] * count)
        kept = count
        for r in per_level:
            kept -= round(r[name] * kept)
        return count - kept

    since = "the whole layer" if shot else f"level {level - 1}"
    removed: dict[tuple[str, ...], int] = {}
    expected: dict[str, Tensor] = {}
    for name, m in masks.items():
        was, now = _rows(prev[name]), _rows(m)
        if name not in structured:
            removed[(name,)] = removed_from(name, int(prev[name].sum()))
            had, kept = int(prev[name].sum()), int(m.sum())
            if had - kept != removed[(name,)]:
                audit.fail("pruning-count", key, f"removed {had - kept} weights, expected "
                           f"{removed[(name,)]}", name)  # fmt: skip
            continue
        whole = (now == was).all(1) | ~now.any(1)
        if not bool(whole.all()):
            u = int((~whole).nonzero()[0])
            audit.fail("pruning-count", key, f"unit {u} is partly pruned (granularity "
                       f"{c.granularity} removes whole units)", name)  # fmt: skip
        alive_before, alive = int(was.any(1).sum()), int(now.any(1).sum())
        n = removed_from(name, alive_before)
        if alive_before - alive != n:
            detail = (f"{alive_before} units in {since}, {alive} now: removed "
                      f"{alive_before - alive}, expected {n}")  # fmt: skip
            audit.fail("pruning-count", key, detail, name)
        if weights is not None:
            l1 = (_rows(weights[name]).double().abs() * was).sum(1)
            idx = was.any(1).nonzero().reshape(-1)
            drop = idx[torch.argsort(l1[idx], stable=True)[:n]]
            keep = torch.ones(was.shape[0], dtype=torch.bool)
            keep[drop] = False
            expected[name] = prev[name] & keep.reshape(-1, *([1] * (m.dim() - 1)))
    audit.passed["pruning-count"] += 1
    if weights is None or c.criterion not in ("magnitude", "magnitude_init"):
        return
    expected |= magnitude_prune(weights, {g[0]: prev[g[0]] for g in removed}, removed)
    for name, m in masks.items():
        wrong = m != expected[name]
        if bool(wrong.any()):
            audit.fail("magnitude", key, f"{int(wrong.sum())} entries differ from removing the "
                       "lowest-L1 units of the pruned weights", name)  # fmt: skip
    audit.passed["magnitude"] += 1


def check_control_units(audit, key, masks: dict[str, Tensor], output: str | None) -> None:
    """A control of a structured run keeps or prunes each unit of the layers pruned by units
    whole, and keeps as many units per layer as the ticket of its replicate and level; fails
    the control's own check."""
    c = audit.config
    branch, rep, level = key
    check = CONTROLS.lookup(branch).check
    ticket = audit.tensors(("ticket", rep, level), "mask")
    conv = {n for n, m in masks.items() if m.dim() == 4}
    for name in structured_layers(masks, c.granularity, output, conv):
        rows = _rows(masks[name])
        whole = rows.all(1) | ~rows.any(1)
        if not bool(whole.all()):
            u = int((~whole).nonzero()[0])
            audit.fail(check, key, f"unit {u} is partly pruned (granularity {c.granularity} "
                       "keeps or removes whole units)", name)  # fmt: skip
        mine, theirs = int(rows.any(1).sum()), int(_rows(ticket[name]).any(1).sum())
        if mine != theirs:
            audit.fail(check, key, f"keeps {mine} units, the ticket {theirs}", name)
