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
:mod:`lth.pruning.shrink` removes them). The controls that draw masks keep whole units too:
:func:`random_units_like` (``random_prune``) and :func:`shuffle_units` (``layer_shuffle``).
A criterion that prunes at initialisation in one shot keeps, at each level, the units with the
highest summed scores of θ0 under the all-ones mask, as many per layer as structured IMP keeps
at that level (:meth:`lth.pruning.policy.PruningPolicy.prune_structured`).

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
from lth.pruning.selection import prune_random_like, select_layerwise

__all__ = [
    "GRANULARITIES",
    "prune_units",
    "random_units_like",
    "shuffle_units",
    "structured_layers",
    "unit_alive",
    "unit_counts",
    "unit_scores",
]


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


def unit_counts(masks: Mapping[str, Tensor], structured: Collection[str]) -> dict[str, int]:
    """What each layer keeps: its alive units for the ``structured`` layers, its kept weights
    for the others.

    Examples:
        >>> m = {"a": torch.tensor([[True, True], [False, False]]), "b": torch.ones(2, 2) > 0}
        >>> unit_counts(m, {"a"})
        {'a': 1, 'b': 4}
    """
    return {
        n: int(unit_alive(m).sum()) if n in structured else int(m.count_nonzero())
        for n, m in masks.items()
    }


def _whole(keep: Tensor, like: Tensor) -> Tensor:
    """A mask shaped like ``like`` keeping the whole units (dim 0) ``keep`` marks."""
    return keep.reshape(-1, *([1] * (like.dim() - 1))).expand(like.shape).clone().to(like.device)


def random_units_like(
    reference: Mapping[str, Tensor], structured: Collection[str], *, generator: torch.Generator
) -> dict[str, Tensor]:
    """The structured random-pruning control: each ``structured`` layer keeps as many whole
    units as ``reference`` (the ticket's mask) keeps alive, drawn uniformly at random (the
    first of a ``randperm`` of its units), every weight of a kept unit kept; the other layers
    keep as many weights, at random (:func:`lth.pruning.selection.prune_random_like`). Layers
    are drawn in ``reference``'s order from ``generator``: the same state gives the same masks.

    Args:
        reference: The ticket's masks, ``{name: bool tensor}`` (dim 0: the units).
        structured: The layers pruned by whole units (:func:`structured_layers`).
        generator: A ``torch.Generator`` for the draws (keyword, required).

    Returns:
        dict[str, Tensor]: New masks with ``reference``'s names and shapes.

    Examples:
        >>> ticket = {"w": torch.tensor([[True, True], [False, False], [True, True]])}
        >>> m = random_units_like(ticket, {"w"}, generator=torch.Generator().manual_seed(0))
        >>> int(m["w"].all(1).sum()), bool((m["w"].all(1) | ~m["w"].any(1)).all())
        (2, True)
    """
    if not isinstance(generator, torch.Generator):
        raise LTHError("pass generator=torch.Generator().manual_seed(seed) for repeatable masks")
    new = {}
    for name, ref in reference.items():
        if name not in structured:
            new |= prune_random_like({name: ref}, generator=generator)
            continue
        pick = torch.randperm(ref.shape[0], generator=generator)[: int(unit_alive(ref).sum())]
        keep = torch.zeros(ref.shape[0], dtype=torch.bool)
        keep[pick] = True
        new[name] = _whole(keep, ref)
    return new


def shuffle_units(mask: Tensor, generator: torch.Generator) -> Tensor:
    """The structured layer-wise shuffle (Frankle et al. 2021's ablation at unit granularity):
    the units (dim 0) of ``mask`` permuted at random, each unit keeping its own pattern, so the
    layer keeps as many units and weights and every whole unit stays whole.

    Examples:
        >>> m = torch.tensor([[True, True], [False, False], [False, False]])
        >>> shuffle_units(m, torch.Generator().manual_seed(0)).sum().item()
        2
    """
    order = torch.randperm(mask.shape[0], generator=generator).to(mask.device)
    return mask[order].clone()
