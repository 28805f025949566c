"""Structured pruning: whole units of a layer (output neurons, conv filters) removed together.

``--granularity weight`` (the default) prunes single weights. ``neuron`` prunes whole output
units of every pruned layer: a unit is a row of a linear layer's weight (one output neuron)
or a filter of a convolution (``weight[c]``: one output channel); ``channel`` prunes conv
layers by filters and leaves linear layers to weight pruning. A unit's score is the **sum** of
its surviving weights' scores: with the magnitude criterion the L1 norm of the unit's weights,
the filter ranking of Li et al. 2017 ("Pruning Filters for Efficient ConvNets", ICLR 2017,
section 3.1); Liu et al. 2019 ("Rethinking the Value of Network Pruning", ICLR 2019) compare
such structured tickets with their reinit control. Each level removes
``round(rate × surviving units)`` of a layer, lowest score first (ties: the lower unit index),
and keeps the other units' masks as they were. The output layer's units are the classes: with
``neuron`` it is not pruned (the weights from pruned units into it are dead, and
:mod:`lth.pruning.shrink` removes them).

>>> import torch
>>> scores = {"fc.weight": torch.tensor([[1.0, 1.0], [5.0, 0.0], [0.5, 0.1]])}
>>> masks = {"fc.weight": torch.ones(3, 2, dtype=torch.bool)}
>>> prune_units(scores, masks, {"fc.weight": 0.34}, {"fc.weight"})["fc.weight"].tolist()
[[True, True], [True, True], [False, False]]
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import torch
from torch import Tensor

from lth.config import GRANULARITIES
from lth.errors import LTHError
from lth.pruning.selection import select_layerwise

__all__ = ["GRANULARITIES", "prune_units", "structured_layers", "unit_alive", "unit_scores"]


def structured_layers(
    names: Collection[str], granularity: str, output: str | None, conv: Collection[str]
) -> set[str]:
    """The layers whose whole units a granularity prunes: every layer but the output layer
    (``neuron``), the conv layers (``channel``), none (``weight``).

    Examples:
        >>> sorted(structured_layers(["c.weight", "f.weight", "o.weight"], "neuron",
        ...                          "o.weight", {"c.weight"}))
        ['c.weight', 'f.weight']
    """
    if granularity == "weight":
        return set()
    if granularity == "neuron":
        return {n for n in names if n != output}
    if granularity == "channel":
        return {n for n in names if n in conv}
    raise LTHError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")


def unit_alive(mask: Tensor) -> Tensor:
    """Which units (dim 0) of a layer keep at least one weight."""
    return mask.reshape(mask.shape[0], -1).any(1)


def unit_scores(scores: Tensor, mask: Tensor) -> Tensor:
    """Each unit's score: the sum of its surviving weights' scores (float64)."""
    kept = scores.detach().double().reshape(mask.shape[0], -1) * mask.reshape(mask.shape[0], -1)
    return kept.sum(1)


def prune_units(
    scores: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    rates: Mapping[str, float],
    structured: Collection[str],
) -> dict[str, Tensor]:
    """New masks: each ``structured`` layer loses ``round(rate × surviving units)`` whole
    units, lowest summed score first; the other layers are pruned weight by weight
    (:func:`lth.pruning.selection.select_layerwise`); layers without a rate keep their mask.

    Args:
        scores: The criterion's scores, shaped like the masks (higher kept).
        masks: The current masks (not modified).
        rates: Per-layer fractions in ``[0, 1)``.
        structured: The layers pruned by whole units (:func:`structured_layers`).

    Returns:
        dict[str, Tensor]: The new masks, in the order of ``masks``.

    Examples:
        >>> m = {"w": torch.ones(4, 3, dtype=torch.bool)}
        >>> s = {"w": torch.arange(12.0).reshape(4, 3)}
        >>> prune_units(s, m, {"w": 0.5}, {"w"})["w"].any(1).tolist()
        [False, False, True, True]
    """
    plain = {n: r for n, r in rates.items() if n not in structured}
    new = dict(masks)
    if plain:
        new |= select_layerwise(scores, dict(masks), plain)
    for name in structured:
        rate = rates.get(name, 0.0)
        mask = masks[name]
        alive = unit_alive(mask)
        n = round(rate * int(alive.sum()))
        if not n:
            continue
        score = unit_scores(scores[name].to(mask.device), mask)
        if bool(torch.isnan(score[alive]).any()):
            raise LTHError(f"scores of {name!r} contain NaN; the criterion cannot rank its units")
        idx = alive.nonzero().reshape(-1)
        drop = idx[torch.sort(score[idx], stable=True).indices[:n]]
        keep = torch.ones_like(alive)
        keep[drop] = False
        new[name] = mask & keep.reshape(-1, *([1] * (mask.dim() - 1)))
    return {n: new[n] for n in masks}
