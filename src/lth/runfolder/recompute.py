"""The pruning a level should have done, recomputed from a run's config and masks alone.

``lth verify`` (:mod:`lth.runfolder.verify`) checks each level against these: how many weights
each layer or ranked group loses (:func:`removals`), which ones magnitude pruning removes
(:func:`magnitude_prune`, an implementation independent of :mod:`lth.pruning.selection`), and
which layers are the output and conv layers (:func:`layer_kinds`), read from the tensors.
A criterion that prunes at initialisation in one shot (:func:`prunes_in_one_shot`) computes
each level's mask afresh at the counts IMP reaches at that level (:func:`one_shot_kept`), so
its masks need not shrink from level to level.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from lth.config import DEFAULT_OUTPUT_RATE, ExperimentConfig
from lth.pruning.criteria import CRITERIA
from lth.pruning.selection import layer_rates, target_rate, target_rate_count

__all__ = [
    "layer_kinds",
    "level_rate",
    "magnitude_prune",
    "one_shot_kept",
    "pruned_in_one_shot",
    "prunes_in_one_shot",
    "removals",
]


def prunes_in_one_shot(config: ExperimentConfig) -> bool | None:
    """Whether the run's criterion computes each level's mask in one shot from θ0 (a
    registered criterion's entry says); ``None`` for code named ``package.module:function``,
    which verify does not import."""
    if config.criterion in CRITERIA:
        return CRITERIA[config.criterion].one_shot
    return None if ":" in config.criterion else False


def pruned_in_one_shot(
    config: ExperimentConfig,
    prev: dict[str, Tensor],
    masks: dict[str, Tensor],
    level: int,
    output: str | None,
    conv: set[str],
) -> bool:
    """Whether ``level``'s ticket masks are checked as a one-shot criterion's: the registry
    says (:func:`prunes_in_one_shot`); for code verify does not import, the counts do (not
    IMP's :func:`removals` from ``prev``: one-shot)."""
    shot = prunes_in_one_shot(config)
    if shot is not None:
        return shot
    counts = removals(config, prev, level, output, conv).items()
    return any(sum(int(prev[n].sum() - masks[n].sum()) for n in g) != k for g, k in counts)


def level_rate(config: ExperimentConfig, level: int) -> float:
    """The rate of the layers other than the output and conv layers at ``level`` (from 1):
    ``rate_schedule``'s entry for it, else ``rate``."""
    schedule = config.rate_schedule
    return schedule[level - 1] if schedule and 1 <= level <= len(schedule) else config.rate


def _kept_after(config: ExperimentConfig, size: int, base, level: int) -> int:
    """Weights a group of ``size`` keeps after ``level`` levels removing round(rate × kept),
    ``base(level)`` the level's rate (brought to the target's steps with ``target``)."""
    c, kept = config, size
    for lv in range(1, level + 1):
        rate = base(lv)
        if c.target and rate:
            goal = c.target ** (math.log1p(-rate) / math.log1p(-c.rate))
            rate = target_rate_count(kept, size, goal, lv, c.levels)
        kept -= round(rate * kept)
    return kept


def one_shot_kept(
    config: ExperimentConfig, sizes: dict[str, int], level: int, output: str | None, conv: set[str]
) -> dict[tuple[str, ...], int]:
    """{layers ranked together: weights they keep} at ``level`` for a one-shot criterion: IMP's
    counts at that level (layer-wise; global with ``pruning = "global"``, or ``"auto"`` with an
    ``output_rate`` other than the default), and with ``pruning = "auto"`` otherwise every
    non-excluded layer ranked together at the sum of IMP's layer-wise counts."""
    c = config

    def base(name: str):
        if name in c.exclude:
            return lambda lv: 0.0
        if name == output:
            return lambda lv: c.output_rate
        if c.conv_rate and name in conv:
            return lambda lv: c.conv_rate
        return lambda lv: level_rate(c, lv)

    apart = c.pruning == "global" or (c.pruning == "auto" and c.output_rate != DEFAULT_OUTPUT_RATE)
    if apart:
        alone = [n for n in sizes if n in c.exclude or n == output]
        ranked = tuple(n for n in sizes if n not in alone)
        out = {(n,): _kept_after(c, sizes[n], base(n), level) for n in alone}
        total = sum(sizes[n] for n in ranked)
        return out | ({ranked: _kept_after(c, total, base(""), level)} if ranked else {})
    per_layer = {(n,): _kept_after(c, sizes[n], base(n), level) for n in sizes}
    if c.pruning == "layerwise":
        return per_layer
    ranked = tuple(n for n in sizes if n not in c.exclude)
    out = {(n,): sizes[n] for n in sizes if n in c.exclude}
    return out | ({ranked: sum(per_layer[(n,)] for n in ranked)} if ranked else {})


def removals(
    config: ExperimentConfig,
    prev: dict[str, Tensor],
    level: int,
    output: str | None,
    conv: set[str],
    one_shot: bool = False,
) -> dict[tuple[str, ...], int]:
    """How many weights ``level`` removes from each group of layers ranked together (one layer
    per group in layer-wise pruning), given the masks ``prev`` of the level before.

    ``one_shot``: the criterion computes each mask afresh (:func:`one_shot_kept`); a group then
    loses what ``prev`` keeps of it less its count at ``level``. Otherwise:

    Per-layer rates: ``rate``; ``output_rate`` for the output layer; ``conv_rate`` for conv
    layers; 0 for ``exclude``. Global pruning ranks every layer but the excluded ones and the
    output layer together at ``rate``. With a ``target``, a group of per-level rate r is
    brought towards ``target ** (ln(1 - r) / ln(1 - rate))`` by :func:`target_rate`.
    """
    c = config
    names = list(prev)
    if one_shot:
        sizes = {n: prev[n].numel() for n in names}
        kept = one_shot_kept(c, sizes, level, output, conv)
        return {g: sum(int(prev[n].sum()) for n in g) - k for g, k in kept.items()}
    hidden = level_rate(c, level)
    if output in prev:
        rates = layer_rates(names, hidden, c.output_rate, output)
    else:
        rates = layer_rates(names, hidden)
    if c.conv_rate:
        rates |= {n: c.conv_rate for n in names if n in conv}
    rates |= dict.fromkeys(c.exclude, 0.0)
    if c.pruning == "global":
        ranked = tuple(n for n in names if n not in c.exclude and n != output)
        groups = {(n,): rates[n] for n in names if n not in ranked}
        groups[ranked] = hidden
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
