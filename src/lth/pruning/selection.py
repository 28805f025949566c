"""Selection of the weights to prune, as pure functions ``(scores, masks, rates) -> new masks``.

A criterion (:mod:`lth.pruning.criteria`) scores every prunable weight, higher kept; the functions
here select by those scores: :func:`select_layerwise` (each layer at its rate),
:func:`select_global` (layers ranked together); :func:`round_rate` spreads a level's rate over
several rounds, as SynFlow prunes. :func:`prune_layerwise` and :func:`prune_global` are the
magnitude criterion (scores ``|w|``) with these selections.

Inputs are never modified; a returned mask is always a subset of the mask it came from. Each
level removes ``round(rate * survivors)`` weights (Python's round, as torch.nn.utils.prune does),
ranking only the weights that still survive, so already-pruned zeros are never counted again.
Ties in score are broken deterministically: the earlier layer (dict order), then the lower
flat index, is pruned first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch
from torch import nn

from lth.errors import LTHError
from lth.pruning.masks import MaskSet, as_name_set, check_masks, named_weights, names_preview

__all__ = [
    "layer_rates",
    "prune_global",
    "prune_layerwise",
    "prune_random_like",
    "round_rate",
    "select_global",
    "select_layerwise",
    "target_rate",
    "target_rate_count",
]

Weights = Mapping[str, torch.Tensor] | nn.Module


def _check_rate(rate: float, what: str) -> float:
    """Return ``rate`` as a float, or raise LTHError unless it is a number in [0, 1)."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise LTHError(f"{what} must be a number in [0, 1), got {rate!r}")
    if not 0.0 <= rate < 1.0:  # also rejects NaN
        raise LTHError(f"{what} must be in [0, 1) (0.2 prunes 20% per level), got {rate!r}")
    return float(rate)


def layer_rates(
    names: Sequence[str],
    rate: float,
    output_rate: float | None = None,
    output_name: str | None = None,
) -> dict[str, float]:
    """Per-layer pruning rates: ``rate`` for every name, ``output_rate`` for the output layer.

    The rates ``prune_layerwise`` takes (Frankle & Carbin 2019: 20% hidden, 10% output).

    Args:
        names: The masked parameter names, in layer order (a lone string is one name).
        rate: Fraction of each layer's surviving weights pruned per level, in ``[0, 1)``.
        output_rate: The output layer's rate, in ``[0, 1)``; ``None`` (the default) gives it
            ``rate`` too.
        output_name: The output layer's name; ``None`` (the default) means the last name
            (the output layer of a feed-forward net).

    Returns:
        ``{name: rate}`` in the order of ``names``.

    Raises:
        LTHError: A rate outside ``[0, 1)``, no names while ``output_rate`` or
            ``output_name`` is given, or an ``output_name`` that is not among the names.

    Examples:
        >>> layer_rates(["fc1.weight", "fc2.weight", "fc3.weight"], 0.2, 0.1)
        {'fc1.weight': 0.2, 'fc2.weight': 0.2, 'fc3.weight': 0.1}
    """
    names = [names] if isinstance(names, str) else list(names)
    rates = dict.fromkeys(names, _check_rate(rate, "rate"))
    if output_rate is None and output_name is None:
        return rates
    if not names:
        raise LTHError("no layer names given; pass the prunable parameter names")
    output_name = names[-1] if output_name is None else output_name
    if output_name not in rates:
        raise LTHError(
            f"output_name {output_name!r} is not among the layers: {names_preview(names)}"
        )
    if output_rate is not None:
        rates[output_name] = _check_rate(output_rate, "output_rate")
    return rates


def _survivors(scores: dict[str, torch.Tensor], masks: MaskSet, name: str, what: str):
    """Return (flat mask on the scores' device, flat survivor indices, their scores) of one
    layer; ``what`` names the scores in the error about NaN."""
    score = scores[name].detach()
    flat_mask = masks[name].reshape(-1).to(score.device)
    idx = flat_mask.nonzero().squeeze(1)  # ascending flat indices
    values = score.reshape(-1)[idx]
    if values.is_floating_point() and bool(torch.isnan(values).any()):
        if what == "weights":
            raise LTHError(
                f"weights of {name!r} contain NaN; training diverged (lower the learning rate) "
                "before pruning"
            )
        raise LTHError(f"{what} of {name!r} contain NaN; the criterion cannot rank them")
    return flat_mask, idx, values


def _validated(weights: Weights, masks: MaskSet) -> dict[str, torch.Tensor]:
    """Check the masks against the weights and return the weights as a dict."""
    tensors = named_weights(weights)
    check_masks(masks, tensors)
    return tensors


def _magnitudes(weights: Weights, masks: MaskSet) -> dict[str, torch.Tensor]:
    """``|w|`` of every masked layer: the magnitude criterion's scores."""
    tensors = _validated(weights, masks)
    return {name: tensors[name].detach().abs() for name in masks}


def prune_layerwise(weights: Weights, masks: MaskSet, rates: Mapping[str, float]) -> MaskSet:
    """Layer-wise magnitude pruning: remove ``round(rate * survivors)`` lowest-|w| survivors.

    Ranks only the surviving weights of each layer by ``|w|`` (ties: lower flat index first);
    the inputs are not changed. Frankle & Carbin 2019, Algorithm 1 step 3 (prune p% of the
    surviving weights of each layer).

    Args:
        weights: The weights scored, a model or a dict of tensors (the trained weights in
            iterative magnitude pruning).
        masks: The current masks, ``{name: bool tensor}``; only masked layers are pruned.
        rates: ``{name: rate in [0, 1)}``, e.g. from ``layer_rates``; masked layers not named
            keep their mask.

    Returns:
        New masks with the same names, each a subset of its current mask, on the weights'
        device.

    Raises:
        LTHError: Masks that do not fit the weights, a rate outside ``[0, 1)`` or for a layer
            without a mask, or NaN among the surviving weights (training diverged).

    Examples:
        >>> w = {"w": torch.tensor([0.5, -0.1, 2.0, 0.3])}
        >>> prune_layerwise(w, {"w": torch.ones(4, dtype=torch.bool)}, {"w": 0.5})["w"].tolist()
        [True, False, True, False]
    """
    return select_layerwise(_magnitudes(weights, masks), masks, rates, what="weights")


def select_layerwise(
    scores: Mapping[str, torch.Tensor],
    masks: MaskSet,
    rates: Mapping[str, float],
    *,
    what: str = "scores",
) -> MaskSet:
    """Layer-wise selection: remove each layer's ``round(rate * survivors)`` lowest-scored
    survivors (ties: lower flat index first); layers without a rate keep their mask.

    ``scores`` holds a tensor shaped like each mask (higher is kept); returns new masks.
    """
    tensors = _validated(dict(scores), masks)
    unknown = [name for name in rates if name not in masks]
    if unknown:
        raise LTHError(
            f"rates given for {names_preview(unknown)}, which have no mask; "
            f"masked layers: {names_preview(masks)}"
        )
    checked = {name: _check_rate(r, f"rate for {name!r}") for name, r in rates.items()}
    new: MaskSet = {}
    for name in masks:
        flat_mask, idx, values = _survivors(tensors, masks, name, what)
        n_prune = round(checked.get(name, 0.0) * idx.numel())
        flat_new = flat_mask.clone()
        if n_prune:
            order = torch.sort(values, stable=True).indices  # ties: lower flat index first
            flat_new[idx[order[:n_prune]]] = False
        new[name] = flat_new.view(masks[name].shape)
    return new


def prune_global(
    weights: Weights, masks: MaskSet, rate: float, exclude: Collection[str] = ()
) -> MaskSet:
    """Global magnitude pruning: ``round(rate * survivors)`` lowest-|w| across layers.

    Ranks the surviving weights of all non-``exclude``d layers together (ties: earlier layer,
    then lower index), so layers lose different fractions; the inputs are not changed.

    Args:
        weights: The weights scored, a model or a dict of tensors.
        masks: The current masks, ``{name: bool tensor}``; only masked layers are pruned.
        rate: Fraction of the surviving weights of the ranked layers pruned, in ``[0, 1)``.
        exclude: Names of masked layers left out of the ranking; they keep their mask
            (default: none).

    Returns:
        New masks with the same names, each a subset of its current mask, on the weights'
        device.

    Raises:
        LTHError: Masks that do not fit the weights, a rate outside ``[0, 1)``, an
            ``exclude`` name without a mask, or NaN among the surviving weights.

    Examples:
        >>> import torch, lth
        >>> weights = {"a": torch.tensor([0.1, -0.2, 0.3, 0.4]), "b": torch.tensor([1.0, 2.0])}
        >>> masks = {name: torch.ones_like(w, dtype=torch.bool) for name, w in weights.items()}
        >>> new = lth.prune_global(weights, masks, 0.5)
        >>> lth.count_remaining(new)       # the 3 smallest of 6 are all in layer a
        {'a': (1, 4), 'b': (2, 2)}
        >>> new = lth.prune_global(weights, masks, 0.5, exclude=["b"])
        >>> new["a"].tolist(), new["b"].tolist()
        ([False, False, True, True], [True, True])
    """
    return select_global(_magnitudes(weights, masks), masks, rate, exclude, what="weights")


def select_global(
    scores: Mapping[str, torch.Tensor],
    masks: MaskSet,
    rate: float,
    exclude: Collection[str] = (),
    *,
    what: str = "scores",
) -> MaskSet:
    """Global selection: remove the ``round(rate * survivors)`` lowest-scored survivors of all
    non-``exclude``d layers ranked together (ties: earlier layer, then lower index)."""
    tensors = _validated(dict(scores), masks)
    rate = _check_rate(rate, "rate")
    excluded = as_name_set(exclude, "exclude")
    unknown = sorted(excluded - set(masks))
    if unknown:
        raise LTHError(
            f"exclude names {names_preview(unknown)} have no mask; "
            f"masked layers: {names_preview(masks)}"
        )
    new: MaskSet = {name: mask.to(tensors[name].device, copy=True) for name, mask in masks.items()}
    ranked = [name for name in masks if name not in excluded]
    if not ranked:
        return new
    parts = {name: _survivors(tensors, masks, name, what) for name in ranked}
    n_prune = round(rate * sum(idx.numel() for _, idx, _ in parts.values()))
    if n_prune == 0:
        return new
    device = parts[ranked[0]][2].device
    dtype = parts[ranked[0]][2].dtype
    for _, _, values in parts.values():
        dtype = torch.promote_types(dtype, values.dtype)
    values = torch.cat([v.to(device=device, dtype=dtype) for _, _, v in parts.values()])
    order = torch.sort(values, stable=True).indices  # ties: earlier layer, then lower index
    pruned = torch.zeros(values.numel(), dtype=torch.bool, device=device)
    pruned[order[:n_prune]] = True
    counts = [idx.numel() for _, idx, _ in parts.values()]
    for name, layer_pruned in zip(ranked, pruned.split(counts), strict=True):
        flat_mask, idx, _ = parts[name]
        flat_new = flat_mask.clone()
        flat_new[idx[layer_pruned.to(idx.device)]] = False
        new[name] = flat_new.view(masks[name].shape)
    return new


def round_rate(start: int, rate: float, now: int, k: int, rounds: int) -> float:
    """The rate of round ``k`` of ``rounds`` (from 1) that prunes a group of ``start``
    survivors to ``start - round(rate * start)`` along an exponential schedule.

    After round k the group keeps ``round(start * d ** (k / rounds))`` weights, d the fraction
    the level keeps (Tanaka et al. 2020, SynFlow's schedule); the last round lands exactly on
    the one-shot count. ``now``: the weights the group keeps before round k.

    >>> round_rate(100, 0.5, 100, 1, 2)  # 100 -> 71 -> 50
    0.29
    """
    final = start - round(rate * start)
    goal = final if k >= rounds or start == 0 else round(start * (final / start) ** (k / rounds))
    goal = max(goal, final)
    return 0.0 if now == 0 else max(0.0, (now - goal) / now)


def prune_random_like(
    reference: MaskSet, previous: MaskSet | None = None, *, generator: torch.Generator
) -> MaskSet:
    """The random-pruning control: random masks with ``reference``'s per-layer kept counts.

    Each layer keeps exactly as many weights as ``reference`` (the ticket's mask) keeps,
    chosen uniformly at random; the same generator state gives the same masks.

    Args:
        reference: The masks whose per-layer kept counts are copied, ``{name: bool tensor}``.
        previous: ``None`` (the default): any entry may be kept. Masks with the same layers
            and shapes: only their survivors may be kept (a chain of shrinking masks).
        generator: A ``torch.Generator`` for the draws (keyword, required).

    Returns:
        New masks with ``reference``'s names and shapes, on its devices.

    Raises:
        LTHError: No ``torch.Generator``, masks that are not bool tensors, ``previous``
            with other layers or shapes, or a layer where ``previous`` keeps fewer weights
            than ``reference``.

    Examples:
        >>> import torch, lth
        >>> ticket = {"w": torch.tensor([True, False, True, False, True, False])}
        >>> control = lth.prune_random_like(ticket, generator=torch.Generator().manual_seed(0))
        >>> lth.count_remaining(control)
        {'w': (3, 6)}
        >>> again = lth.prune_random_like(ticket, generator=torch.Generator().manual_seed(0))
        >>> torch.equal(control["w"], again["w"])
        True
    """
    if not isinstance(generator, torch.Generator):
        raise LTHError("pass generator=torch.Generator().manual_seed(seed) for repeatable masks")
    check_masks(reference, reference)  # bool tensors
    if previous is not None:
        check_masks(previous, previous)
        if set(previous) != set(reference):
            raise LTHError(
                "reference and previous mask sets must have the same layers; "
                f"they differ in {names_preview(sorted(set(reference) ^ set(previous)))}"
            )
        check_masks(reference, previous)  # same shapes
    new: MaskSet = {}
    for name, ref in reference.items():
        n_keep = int(ref.count_nonzero())
        if previous is None:
            candidates = None
            n_candidates = ref.numel()
        else:
            candidates = previous[name].reshape(-1).to(ref.device).nonzero().squeeze(1)
            n_candidates = candidates.numel()
            if n_keep > n_candidates:
                raise LTHError(
                    f"layer {name!r}: reference keeps {n_keep} entries but previous keeps only "
                    f"{n_candidates}; random pruning must follow a chain with shrinking masks"
                )
        pick = torch.randperm(n_candidates, generator=generator, device=generator.device)
        pick = pick[:n_keep].to(ref.device)
        keep = pick if candidates is None else candidates[pick]
        flat = torch.zeros(ref.numel(), dtype=torch.bool, device=ref.device)
        flat[keep] = True
        new[name] = flat.view(ref.shape)
    return new


def target_rate(mask: torch.Tensor, target: float, level: int, levels: int) -> float:
    """The rate that brings ``mask`` to ``round(size × target ** (level / levels))`` kept entries.

    Pruning at this rate at every level reaches ``target`` (a fraction of the weights kept)
    after ``levels`` levels, each layer within one weight of it; the constant per-level rate
    ``1 - target ** (1 / levels)`` would drift by rounding. ``mask`` may hold several layers
    flattened together (global pruning).

    >>> target_rate(torch.ones(100, dtype=torch.bool), 0.25, 1, 2)  # 100 -> 50 kept
    0.5
    """
    return target_rate_count(int(mask.sum()), mask.numel(), target, level, levels)


def target_rate_count(kept: int, size: int, target: float, level: int, levels: int) -> float:
    """:func:`target_rate` from counts alone, for schedules simulated without masks.

    Args:
        kept: The group's survivors before the level.
        size: The group's weights in all (pruned or not).
        target: The fraction of ``size`` to keep after the last level, in (0, 1].
        level: The level being pruned, from 1.
        levels: The number of levels.

    Returns:
        The rate that brings ``kept`` to ``round(size × target ** (level / levels))``
        (0 if already there).

    Raises:
        LTHError: ``levels`` < 1 or ``target`` outside (0, 1].

    >>> target_rate_count(100, 100, 0.25, 1, 2)
    0.5
    """
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
        raise LTHError(f"levels must be a positive integer, got {levels!r}")
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target <= 1:
        raise LTHError(
            f"target must be a fraction in (0, 1] (e.g. 0.036 for 3.6% remaining), got {target!r}"
        )
    goal = round(size * target ** (level / levels))
    return 0.0 if kept == 0 else max(0.0, (kept - goal) / kept)
