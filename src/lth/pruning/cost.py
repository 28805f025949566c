"""What a ticket costs to store and run: its parameter count and FLOPs per example.

ShrinkBench (Blalock et al. 2020, "What is the State of Neural Network Pruning?", MLSys)
reports both for every pruned network; so does each level of ``summary.csv`` (``params``,
``flops``) and ``lth report``. A study pruning single weights counts them on the masked network
as it is (ShrinkBench's convention); a structured one (``granularity`` neuron or channel) on
the network :mod:`lth.pruning.shrink` makes of the ticket (a flat ``nn.Sequential``: dead units
and the weights that read them removed, which is what structured pruning saves; a model shrink
cannot handle is counted as it is):

* ``params``: the kept weights of every masked parameter plus every other parameter whole
  (biases, normalisation);
* ``flops``: multiply-accumulates per example of the weighted layers, one per kept weight of
  a ``Linear``, one per kept weight and output position (H_out × W_out) of a ``Conv2d``
  (ShrinkBench's convention: nonzero weights only; activations, pooling and biases not
  counted).

>>> import torch
>>> from torch import nn
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
>>> masks = {"1.weight": torch.ones(3, 4, dtype=torch.bool),
...          "3.weight": torch.ones(2, 3, dtype=torch.bool)}
>>> network_cost(net, masks, (1, 2, 2))          # 12 + 3 + 6 + 2 params, 12 + 6 MACs
(23, 18)
>>> masks["1.weight"][0] = False   # a dead neuron goes, with its bias and its out-weights
>>> network_cost(net, masks, (1, 2, 2))          # 8 + 2 + 4 + 2 params, 8 + 4 MACs
(16, 12)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lth.errors import LTHError
from lth.pruning.shrink import shrink

__all__ = ["network_cost"]


def _count(model: nn.Module, masks: Mapping[str, Tensor], input_shape: Sequence[int]):
    kept_of = {name: int(m.count_nonzero()) for name, m in masks.items()}
    params = 0
    for name, p in model.named_parameters():
        params += kept_of[name] if name in kept_of else p.numel()
    flops = 0
    hooks = []
    names = {m: n for n, m in model.named_modules()}

    def hook(module: nn.Module, _inputs, output: Tensor) -> None:
        nonlocal flops
        key = f"{names[module]}.weight"
        kept = kept_of[key] if key in kept_of else module.weight.numel()
        positions = output.shape[-1] * output.shape[-2] if isinstance(module, nn.Conv2d) else 1
        flops += kept * positions

    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv2d):
            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            param = next(model.parameters(), None)
            device = param.device if param is not None else "cpu"
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return params, flops


def network_cost(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    input_shape: Sequence[int],
    shrunk: bool = True,
) -> tuple[int, int]:
    """(parameters, FLOPs per example) of ``model`` under ``masks`` (see the module).

    Args:
        model: The network (its architecture; its values only matter for shrinking).
        masks: ``{parameter name: bool tensor}``, the ticket's masks.
        input_shape: One example's shape, e.g. ``(1, 28, 28)``.
        shrunk: Count on the shrunk network (about a second for LeNet-300-100); False: on the
            masked network as it is (ShrinkBench's nonzero count, milliseconds).

    Returns:
        tuple[int, int]: The parameter count and the multiply-accumulates per example.

    Examples:
        >>> conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1))
        >>> network_cost(conv, {"0.weight": torch.ones(2, 1, 3, 3, dtype=torch.bool)}, (1, 4, 4))
        (29, 80)
    """
    if not shrunk:
        return _count(model, masks, input_shape)
    try:
        small = shrink(model, masks)
    except LTHError:
        return _count(model, masks, input_shape)
    return _count(small.model, small.masks, input_shape)
