"""``lth verify`` of structured tickets (``granularity`` neuron or channel): whole units.

For a ticket at a level >= 1 of a run whose ``granularity`` is not ``weight``, each layer that
:func:`lth.pruning.granularity.structured_layers` prunes by units must keep every unit (dim 0:
a neuron's row, a conv filter) exactly as it was or remove all of it, and lose
``round(rate × surviving units)`` units; the other layers lose ``round(rate × survivors)``
weights (0 for the output layer with ``neuron``). With the magnitude criteria the removed units
are recomputed: the lowest L1 norms of the previous level's trained weights (of θ0 for
``magnitude_init``) over each unit's survivors (Li et al. 2017), ties by the lower unit index,
an implementation independent of :mod:`lth.pruning.granularity`. Failures are the checks
``pruning-count`` and ``magnitude`` of :mod:`lth.runfolder.verify`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from lth.config import ExperimentConfig
from lth.pruning.granularity import structured_layers
from lth.pruning.selection import layer_rates
from lth.runfolder.recompute import magnitude_prune

__all__ = ["check_units", "unit_rates"]


def unit_rates(
    config: ExperimentConfig, names: list[str], output: str | None, conv: set[str]
) -> dict[str, float]:
    """Per-layer rates of a structured run: ``rate``, ``output_rate`` (0 with ``neuron``: the
    output layer's units are the classes), ``conv_rate`` for conv layers, 0 for ``exclude``.

    Examples:
        >>> from lth.config import ExperimentConfig
        >>> c = ExperimentConfig(granularity="neuron")
        >>> unit_rates(c, ["a.weight", "b.weight"], "b.weight", set())
        {'a.weight': 0.2, 'b.weight': 0.0}
    """
    c = config
    rates = layer_rates(names, c.rate, c.output_rate, output) if output in names else (
        layer_rates(names, c.rate))  # fmt: skip
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
) -> None:
    """``pruning-count`` and ``magnitude`` of one structured ticket (see the module);
    ``weights``: the previous level's trained weights (None: the magnitude check is skipped;
    θ0 is read instead for ``magnitude_init``)."""
    c = audit.config
    if weights is not None and c.criterion == "magnitude_init":  # θ0 under the previous mask
        theta0 = audit.tensors(("ticket", key[1], 0), "init")
        weights = {n: t.masked_fill(~prev[n], 0) if n in prev else t for n, t in theta0.items()}
    conv = {n for n, m in masks.items() if m.dim() == 4}
    rates = unit_rates(c, list(masks), output, conv)
    structured = structured_layers(masks, c.granularity, output, conv)
    removed: dict[tuple[str, ...], int] = {}
    expected: dict[str, Tensor] = {}
    for name, m in masks.items():
        was, now = _rows(prev[name]), _rows(m)
        if name not in structured:
            removed[(name,)] = round(rates[name] * int(prev[name].sum()))
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
        n = round(rates[name] * alive_before)
        if alive_before - alive != n:
            detail = (f"{alive_before} units at level {key[2] - 1}, {alive} now: removed "
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
