"""The pruning policy of a study: how each level prunes, and on which schedule each branch trains.

:class:`PruningPolicy` holds the per-layer rates (``rate``, ``conv_rate``, ``output_rate``,
``target``), the selection (layer-wise or global, ``exclude``), the criterion's scoring with its
inputs made on demand, and :meth:`~PruningPolicy.prune`, which gives a ticket's next mask.
:func:`level_train_config` and :func:`schedule` say where and how a branch trains at a level
(late rewinding, fine-tuning; a control that starts from fresh weights trains the whole
schedule). :func:`derive_seed` gives every random stream of a study its seed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from lth.config import DEFAULT_OUTPUT_RATE, ExperimentConfig, TrainConfig
from lth.core.models import output_layer
from lth.core.optim import learning_rate
from lth.errors import LTHError
from lth.pruning.controls import full_schedule
from lth.pruning.criteria import get_criterion, model_holding
from lth.pruning.granularity import prune_units, structured_layers, unit_counts
from lth.pruning.masks import MaskSet, masked_weights
from lth.pruning.selection import (
    layer_rates,
    round_rate,
    select_global,
    select_layerwise,
    target_rate,
    target_rate_count,
)
from lth.usercode import NO_TRUST, CodeTrust

__all__ = ["PruningPolicy", "derive_seed", "level_train_config", "schedule"]


def derive_seed(seed: int, *keys: object) -> int:
    """A stable 63-bit seed for one random stream of the study (same on every platform)."""
    digest = hashlib.sha256(repr((seed, *keys)).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class PruningPolicy:
    """How a study prunes its tickets: rates, selection, the criterion's scores, the new mask.

    ``template`` is the model every ticket copies (its output layer and conv layers set the
    per-type rates); ``data`` and ``device`` are what a criterion that names them gets;
    ``config.criterion`` is imported as code only if ``trust`` allows it.
    """

    def __init__(
        self,
        config: ExperimentConfig,
        template: nn.Module,
        data,
        device: torch.device,
        trust: CodeTrust = NO_TRUST,
    ) -> None:
        self.config, self.template, self.data, self.device = config, template, data, device
        self.output = output_layer(template)
        self.criterion = get_criterion(config.criterion, trust)
        if self.criterion.at_init and (config.reset != "rewind" or config.rewind_iteration):
            raise LTHError(
                f"criterion {config.criterion} prunes at initialisation: each level trains "
                "from θ0; use reset rewind with rewind_iteration 0"
            )
        self.conv_layers = {
            f"{n}.weight" for n, m in template.named_modules() if isinstance(m, nn.Conv2d)
        }
        if config.granularity == "channel" and not self.conv_layers:
            raise LTHError(
                "granularity channel prunes conv filters and this model has no conv layer; "
                "use granularity neuron"
            )

    def rates(self, masks: MaskSet, level: int) -> dict[str, float]:
        """Per-layer pruning rates of layer-wise pruning at ``level`` (excluded layers too).

        By layer type: ``rate``, ``conv_rate`` for conv layers, ``output_rate`` for the output
        layer (Frankle & Carbin 2019 prune it at half the rate). With a ``target``, a layer of
        per-level rate r reaches ``target ** (ln(1 - r) / ln(1 - rate))`` after the last level
        (what as many levels at these rates would leave), in steps of :func:`target_rate`.
        """
        c = self.config
        rates = layer_rates(list(masks), self.hidden_rate(level))
        if self.output in rates:
            rates[self.output] = c.output_rate
        if c.conv_rate:
            rates |= {n: c.conv_rate for n in masks if n in self.conv_layers}
        if c.target:
            share = {n: math.log1p(-r) / math.log1p(-c.rate) for n, r in rates.items()}
            return {
                n: target_rate(m, c.target ** share[n], level, c.levels) for n, m in masks.items()
            }
        return rates

    def selection(self, masks: MaskSet, level: int) -> tuple[dict[str, float], list[str], float]:
        """How ``level`` prunes: (per-layer rates of the layers pruned on their own, the layers
        ranked together, their rate).

        Layer-wise pruning prunes every layer on its own (``exclude``d ones at rate 0). Global
        pruning ranks every layer together except those in ``exclude`` and the output layer,
        which is pruned on its own at its rate (``output_rate``, as in layer-wise pruning).
        """
        c = self.config
        rates = self.rates(masks, level)
        if c.pruning != "global":
            return rates | dict.fromkeys(c.exclude, 0.0), [], 0.0
        alone = [n for n in (self.output,) if n in masks and n not in c.exclude]
        ranked = [n for n in masks if n not in (*c.exclude, *alone)]
        rate = self.hidden_rate(level)
        if c.target:
            flat = [masks[n].flatten() for n in ranked]
            rate = target_rate(torch.cat(flat), c.target, level, c.levels) if flat else 0.0
        return {n: rates[n] for n in alone}, ranked, rate

    def hidden_rate(self, level: int) -> float:
        """The rate of the layers that are neither the output nor conv layers at ``level``
        (from 1): the level's entry of ``rate_schedule``, else ``rate``."""
        schedule = self.config.rate_schedule
        return schedule[level - 1] if schedule and 1 <= level <= len(schedule) else self.config.rate

    def one_shot_mode(self) -> str:
        """How a one-shot criterion ranks: ``every_layer`` (``pruning = "auto"`` with the
        default ``output_rate``: all non-excluded layers together, the output layer included),
        ``global`` (the output layer apart at IMP's output count, the others together), or
        ``layerwise`` (each layer at IMP's count for it)."""
        c = self.config
        if c.pruning == "auto":
            return "every_layer" if c.output_rate == DEFAULT_OUTPUT_RATE else "global"
        return c.pruning

    def imp_kept(self, sizes: dict[str, int], level: int, pruning: str) -> dict[tuple, int]:
        """Weights each group keeps after ``level`` levels of IMP (``pruning`` layerwise or
        global) with this config's rates, from ``sizes`` (full layer sizes): what
        :meth:`prune` with the magnitude criterion leaves, computed from counts alone."""
        c = self.config

        def chain(names: tuple[str, ...], base: Callable[[int], float]) -> int:
            size = sum(sizes[n] for n in names)
            kept = size
            for lv in range(1, level + 1):
                rate = base(lv)
                if c.target and rate:
                    share = math.log1p(-rate) / math.log1p(-c.rate)
                    rate = target_rate_count(kept, size, c.target**share, lv, c.levels)
                kept -= round(rate * kept)
            return kept

        def layer_base(n: str) -> Callable[[int], float]:
            if n in c.exclude:
                return lambda lv: 0.0
            if n == self.output:
                return lambda lv: c.output_rate
            if c.conv_rate and n in self.conv_layers:
                return lambda lv: c.conv_rate
            return self.hidden_rate

        if pruning != "global":
            return {(n,): chain((n,), layer_base(n)) for n in sizes}
        alone = [n for n in sizes if n in c.exclude or n == self.output]
        ranked = tuple(n for n in sizes if n not in alone)
        out = {(n,): chain((n,), layer_base(n)) for n in alone}
        return out | ({ranked: chain(ranked, self.hidden_rate)} if ranked else {})

    def one_shot_targets(self, sizes: dict[str, int], level: int) -> dict[tuple, int]:
        """{group of layers ranked together: weights it keeps} of a one-shot criterion's mask
        at ``level``: the counts IMP reaches at that level (:meth:`imp_kept`, layer-wise unless
        ``pruning`` is global), grouped as :meth:`one_shot_mode` says; excluded layers alone,
        keeping every weight."""
        mode = self.one_shot_mode()
        kept = self.imp_kept(sizes, level, "global" if mode == "global" else "layerwise")
        if mode != "every_layer":
            return kept
        ranked = tuple(n for n in sizes if n not in self.config.exclude)
        out = {(n,): sizes[n] for n in sizes if n in self.config.exclude}
        return out | ({ranked: sum(kept[(n,)] for n in ranked)} if ranked else {})

    def prune(
        self,
        weights: dict[str, Tensor],
        masks: MaskSet,
        level: int,
        replicate: int = 0,
        init: dict[str, Tensor] | None = None,
    ) -> MaskSet:
        """The ticket's mask for ``level``: score the survivors of ``masks`` with the criterion
        and select by :meth:`selection` (in ``criterion.rounds`` rounds, rescoring each time).

        ``weights`` are what the criterion prunes (the trained weights, or θ0 for criteria
        that prune at initialisation), ``init`` is θ0 (default: ``weights``). A one-shot
        criterion (:attr:`~lth.pruning.criteria.Criterion.one_shot`) ignores what ``masks``
        keep: it prunes the all-ones mask to :meth:`one_shot_targets` at ``level``.
        """
        if self.config.granularity != "weight":  # whole units: lth.pruning.granularity
            return self.prune_structured(weights, masks, level, replicate, init)
        if self.criterion.one_shot:
            masks = {n: torch.ones_like(m, dtype=torch.bool) for n, m in masks.items()}
            sizes = {n: m.numel() for n, m in masks.items()}
            groups = self.one_shot_targets(sizes, level)
            rate_of = {g: (sum(sizes[n] for n in g) - k) / sum(sizes[n] for n in g) or 0.0
                       for g, k in groups.items()}  # fmt: skip
            several = [g for g in groups if len(g) > 1]
            ranked = list(several[0]) if several else []
            rate = rate_of[several[0]] if several else 0.0
            alone = {g[0]: r for g, r in rate_of.items() if len(g) == 1}
        else:
            alone, ranked, rate = self.selection(masks, level)
        score = self.scorer(weights, init, replicate, level)
        rounds = self.criterion.rounds
        start = {n: int(m.count_nonzero()) for n, m in masks.items()}
        start_ranked = sum(start[n] for n in ranked)
        current = masks
        for k in range(1, rounds + 1):
            scores = score(current)
            now = {n: int(m.count_nonzero()) for n, m in current.items()}
            if rounds == 1:
                rates, group_rate = alone, rate
            else:
                rates = {n: round_rate(start[n], r, now[n], k, rounds) for n, r in alone.items()}
                kept = sum(now[n] for n in ranked)
                group_rate = round_rate(start_ranked, rate, kept, k, rounds)
            new = current
            if ranked:
                others = [n for n in current if n not in ranked]
                new = select_global(scores, current, group_rate, exclude=others)
            if rates or not ranked:
                subset = {n: current[n] for n in rates} if ranked else current
                new = {**new, **select_layerwise(scores, subset, rates)}
            current = new
        return current

    def unit_layers(self, names) -> set[str]:
        """The layers among ``names`` this study prunes by whole units
        (:func:`~lth.pruning.granularity.structured_layers`; none at weight granularity)."""
        c = self.config
        return structured_layers(names, c.granularity, self.output, self.conv_layers)

    def unit_rates(self, masks: MaskSet, level: int) -> dict[str, float]:
        """Per-layer rates of a structured level: :meth:`rates` (a fraction of the alive units
        of a layer pruned by units, of the weights of the others), 0 for ``exclude``d layers
        and, with ``neuron``, for the output layer (its units are the classes)."""
        c = self.config
        rates = self.rates(masks, level) | dict.fromkeys(c.exclude, 0.0)
        if c.granularity == "neuron" and self.output in rates:
            rates[self.output] = 0.0
        return rates

    def unit_kept(self, masks: MaskSet, level: int) -> dict[str, int]:
        """What each layer keeps after ``level`` structured IMP levels from the all-ones mask:
        alive units of a layer pruned by units, weights of the others (each level removes
        ``round(rate × what is left)``), computed from the shapes alone."""
        kept = unit_counts({n: torch.ones_like(m, dtype=torch.bool) for n, m in masks.items()},
                           self.unit_layers(masks))  # fmt: skip
        for lv in range(1, level + 1):
            rates = self.unit_rates(masks, lv)
            kept = {n: k - round(rates[n] * k) for n, k in kept.items()}
        return kept

    def prune_structured(
        self,
        weights: dict[str, Tensor],
        masks: MaskSet,
        level: int,
        replicate: int = 0,
        init: dict[str, Tensor] | None = None,
    ) -> MaskSet:
        """Structured pruning (``granularity`` neuron or channel): whole units of the layers
        :meth:`unit_layers` names, ranked by their summed scores within each layer, at the
        layer-wise rates (:func:`~lth.pruning.granularity.prune_units`), in
        ``criterion.rounds`` rounds on SynFlow's exponential schedule (rescoring each time).

        A one-shot criterion (``snip``, ``grasp``, ``synflow``, ``magnitude_init``) ignores
        ``masks``: it scores θ0 under the all-ones mask and keeps in each layer the units
        structured IMP keeps at ``level`` (:meth:`unit_kept`): the same per-layer unit counts,
        ranked within each layer (structured pruning is layer-wise: a unit's summed score
        grows with its fan-in, so units of different layers are not ranked together, and the
        at-init method chooses which units, not the per-layer densities).
        """
        structured = self.unit_layers(masks)
        rates = self.unit_rates(masks, level)
        if self.criterion.one_shot:
            masks = {n: torch.ones_like(m, dtype=torch.bool) for n, m in masks.items()}
            full, goal = unit_counts(masks, structured), self.unit_kept(masks, level)
            rates = {n: (full[n] - goal[n]) / full[n] if full[n] else 0.0 for n in masks}
        score = self.scorer(weights, init, replicate, level)
        rounds = self.criterion.rounds
        start = unit_counts(masks, structured)
        current = masks
        for k in range(1, rounds + 1):
            step = rates
            if rounds > 1:
                now = unit_counts(current, structured)
                step = {n: round_rate(start[n], r, now[n], k, rounds) for n, r in rates.items()}
            current = prune_units(score(current), current, step, structured)
        return current

    def scorer(
        self, weights: dict[str, Tensor], init: dict[str, Tensor] | None, replicate: int, level: int
    ) -> Callable[[MaskSet], dict[str, Tensor]]:
        """The criterion's scores of the weights under given masks, with its inputs made only
        when it names them (the model is built afresh for each set of masks)."""
        init = weights if init is None else init
        # a one-shot criterion draws the same examples at every level of a replicate
        keys = (replicate,) if self.criterion.one_shot else (replicate, level)
        seed = derive_seed(self.config.seed, "criterion", *keys)
        generator = torch.Generator().manual_seed(seed)

        def score(masks: MaskSet) -> dict[str, Tensor]:
            inputs = {
                "weights": lambda: masked_weights(weights, masks),
                "init": lambda: init,
                "masks": lambda: masks,
                "model": lambda: model_holding(self.template, weights, masks, self.device),
                "data": lambda: self.data,
                "generator": lambda: generator,
            }
            return self.criterion.scores(masks, inputs)

        return score


def level_train_config(
    config: ExperimentConfig, train_config: TrainConfig, level: int, branch: str = "ticket"
) -> TrainConfig:
    """Training settings of a branch at a level: fine-tuning (the ticket and the random
    pruning control at levels >= 1) goes on at the schedule's final rate, the rate of its
    last step (milestones at or past the last iteration are never reached); a control that
    starts from fresh weights (reinit) gets the full schedule."""
    tc = train_config
    if level == 0 or config.reset != "finetune" or full_schedule(branch):
        return tc
    final_lr = learning_rate(tc.lr, tc.iterations - 1, tc.milestones, tc.gamma)
    return dataclasses.replace(tc, lr=final_lr, milestones=(), warmup=0)


def schedule(
    config: ExperimentConfig, train_config: TrainConfig, level: int, branch: str
) -> tuple[int, TrainConfig]:
    """(start iteration, training settings) of a branch at a level.

    Late rewinding to step k (Frankle et al. 2020, Algorithm 1): at levels >= 1 the
    ticket and the random-pruning control (which starts from the ticket's weights) train
    from step k to T, with the schedule and data order as they stand at step k; the
    reinit control starts from fresh weights and trains from step 0.
    """
    late = level > 0 and config.reset == "rewind" and not full_schedule(branch)
    start = config.rewind_iteration if late else 0
    return start, level_train_config(config, train_config, level, branch)
