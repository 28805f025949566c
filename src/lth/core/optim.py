"""Adam and SGD over lists of stacked tensors, one fused kernel per step; learning-rate schedule.

The optimizers work on plain tensor lists instead of ``torch.optim`` objects: their Python
overhead is as large as the arithmetic for a LeNet-sized step. The update rules are exactly
those of ``torch.optim.Adam`` / ``torch.optim.SGD`` (the tests compare against them). A
gradient that is 0 (a pruned weight) leaves its weight, its moments and its momentum at 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from lth.config import OPTIMIZERS


def learning_rate(
    base_lr: float,
    iteration: int,
    milestones: Sequence[int] = (),
    gamma: float = 0.1,
    warmup: int = 0,
) -> float:
    """The learning rate for step ``iteration`` (0-based): linear warm-up, then step decay.

    A milestone m multiplies the rate by ``gamma`` from step m on, so a level of T iterations
    (steps 0..T-1) never reaches a milestone at T or later; its final rate is
    ``learning_rate(base_lr, T - 1, milestones, gamma)``. A level that starts at step k (late
    rewinding) takes its rates from step k on: the schedule is not restarted.
    """
    lr = base_lr * gamma ** sum(1 for m in milestones if iteration >= m)
    if warmup > 0 and iteration < warmup:
        lr *= (iteration + 1) / warmup
    return lr


class FusedOptimizer:
    """Adam (L2 weight decay, as torch.optim.Adam) or SGD with momentum over a list of tensors."""

    def __init__(
        self,
        params: list[Tensor],
        kind: str = "adam",
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        if kind not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind = kind
        self.params = params
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.betas = betas
        self.eps = eps
        self.steps_taken = 0
        if kind == "adam":
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
            # float32 whatever the parameters' dtype, as torch.optim's fused Adam keeps them
            f32 = torch.float32
            self.state_steps = [torch.zeros((), device=p.device, dtype=f32) for p in params]
        else:
            self.momentum_buffer = [torch.zeros_like(p) for p in params] if momentum else []
        self.index: Tensor | None = None  # compact: where each entry sits in the dense layout
        self.size = 0

    def _state_lists(self) -> list[list[Tensor]]:
        if self.kind == "adam":
            return [self.exp_avg, self.exp_avg_sq]
        return [self.momentum_buffer] if self.momentum_buffer else []

    def compact(self, index: Tensor, size: int) -> None:
        """Declare the (one, flat) parameter compact: its entry i is entry ``index[i]`` of a
        dense layout of ``size`` entries whose others are pruned weights (gradient 0, state
        0, weight 0; a dense update would leave them so). The step runs over the compact
        entries alone; :meth:`state_dict` and :meth:`load_state_dict` use the dense layout,
        so a checkpoint is the same whatever the kernels."""
        if len(self.params) != 1 or self.index is not None:
            raise ValueError("compact() takes one flat parameter, once")
        self.index = index
        self.size = size

    def _expand(self) -> dict[str, Tensor]:
        """The compact state scattered into the dense layout (zeros elsewhere)."""
        names = ("exp_avg", "exp_avg_sq") if self.kind == "adam" else ("momentum_buffer",)
        out = {}
        for name, lst in zip(names, self._state_lists()):
            dense = lst[0].new_zeros(self.size)
            out[name] = dense.index_copy_(0, self.index, lst[0])
        return out

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: float) -> None:
        """Apply one update with these gradients (same shapes and strides as the parameters)."""
        self._step(self.params, grads, lr)

    def _step(self, params: list[Tensor], grads: list[Tensor], lr: float) -> None:
        if self.kind == "adam":
            torch._foreach_add_(self.state_steps, 1)
            torch._fused_adam_(
                params,
                grads,
                self.exp_avg,
                self.exp_avg_sq,
                [],
                self.state_steps,
                lr=lr,
                beta1=self.betas[0],
                beta2=self.betas[1],
                weight_decay=self.weight_decay,
                eps=self.eps,
                amsgrad=False,
                maximize=False,
            )
        else:
            torch._fused_sgd_(
                params,
                grads,
                self.momentum_buffer,
                weight_decay=self.weight_decay,
                momentum=self.momentum,
                lr=lr,
                dampening=0.0,
                nesterov=False,
                maximize=False,
                is_first_step=self.steps_taken == 0,
            )
        self.steps_taken += 1

    def state_dict(self) -> dict:
        """Everything needed to continue exactly where this optimizer stopped."""
        state: dict = {"steps_taken": self.steps_taken}
        if self.kind == "adam":
            state |= {
                "exp_avg": [t.clone() for t in self.exp_avg],
                "exp_avg_sq": [t.clone() for t in self.exp_avg_sq],
                "state_steps": [t.clone() for t in self.state_steps],
            }
        else:
            state["momentum_buffer"] = [t.clone() for t in self.momentum_buffer]
        if self.index is not None:  # the same layout whatever the kernels
            state |= {name: [t] for name, t in self._expand().items()}
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        self.steps_taken = int(state["steps_taken"])
        adam = ("exp_avg", "exp_avg_sq", "state_steps")
        names = adam if self.kind == "adam" else ("momentum_buffer",)
        for name in names:
            for dst, src in zip(getattr(self, name), state[name], strict=True):
                if self.index is not None and name != "state_steps":
                    src = src.to(dst.device).index_select(0, self.index)
                dst.copy_(src)
