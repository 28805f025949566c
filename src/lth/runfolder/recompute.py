"""The pruning a level should have done, recomputed from a run's config and masks alone.

``lth verify`` (:mod:`lth.runfolder.verify`) checks each level against these: how many weights
each layer or ranked group loses (:func:`removals`), which ones magnitude pruning removes
(:func:`magnitude_prune`, an implementation independent of :mod:`lth.pruning.selection`), and
which layers are the output and conv layers (:func:`layer_kinds`), read from the tensors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lth.config import ExperimentConfig
from lth.pruning.selection import layer_rates, target_rate

__all__ = ["layer_kinds", "magnitude_prune", "removals"]


def removals(
    config: ExperimentConfig,
    prev: dict[str, Tensor],
    level: int,
    output: str | None,
    conv: set[str],
) -> dict[tuple[str, ...], int]:
    """How many weights ``level`` removes from each group of layers ranked together (one layer
    per group in layer-wise pruning), given the masks ``prev`` of the level before.

    Per-layer rates: ``rate``; ``output_rate`` for the output layer; ``conv_rate`` for conv
    layers; 0 for ``exclude``. Global pruning ranks every layer but the excluded ones and the
    output layer together at ``rate``. With a ``target``, a group of per-level rate r is
    brought towards ``target ** (ln(1 - r) / ln(1 - rate))`` by :func:`target_rate`.
    """
    c = config
    names = list(prev)
    if output in prev:
        rates = layer_rates(names, c.rate, c.output_rate, output)
    else:
        rates = layer_rates(names, c.rate)
    if c.conv_rate:
        rates |= {n: c.conv_rate for n in names if n in conv}
    rates |= dict.fromkeys(c.exclude, 0.0)
    if c.pruning == "global":
        ranked = tuple(n for n in names if n not in c.exclude and n != output)
        groups = {(n,): rates[n] for n in names if n not in ranked}
        groups[ranked] = c.rate
    else:
        groups = {(n,): rates[n] for n in names}
    out = {}
    for group, rate in groups.items():
        if not group:
            continue
        kept = sum(int(prev[n].sum()) for n in group)
        if c.target and rate:
            whole = torch.cat([prev[n].reshape(-1) for n in group])
            rate = target_rate(whole, c.target ** (math.log1p(-rate) / math.log1p(-c.rate)),
                               level, c.levels)  # fmt: skip
        out[group] = round(rate * kept)
    return out


def magnitude_prune(
    weights: dict[str, Tensor], masks: dict[str, Tensor], removed: dict[tuple[str, ...], int]
) -> dict[str, Tensor]:
    """Masks after removing, in each group, its count of lowest-|w| survivors (ties: the
    earlier layer, then the lower flat index): an implementation independent of
    :mod:`lth.pruning.selection`."""
    new = {n: m.clone() for n, m in masks.items()}
    for group, n in removed.items():
        where = [(name, masks[name].reshape(-1).nonzero().reshape(-1)) for name in group]
        scores = torch.cat([weights[name].reshape(-1)[idx].abs() for name, idx in where])
        drop = torch.zeros(scores.numel(), dtype=torch.bool)
        drop[torch.argsort(scores, stable=True)[:n]] = True
        for (name, idx), gone in zip(where, drop.split([i.numel() for _, i in where])):
            new[name].reshape(-1)[idx[gone]] = False
    return new


def layer_kinds(masks: dict[str, Tensor], init: dict[str, Tensor]) -> tuple[str | None, set[str]]:
    """(output layer's weight, conv layers' weights) from the tensors alone: the last 2-D
    weight (the last ``nn.Linear``'s, :func:`lth.core.models.output_layer`, in every registry model)
    and the masked 4-D weights (``nn.Conv2d``'s)."""
    two_d = [n for n, t in init.items() if n.endswith("weight") and t.dim() == 2]
    return (two_d[-1] if two_d else None), {n for n, m in masks.items() if m.dim() == 4}
