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

from .config import OPTIMIZERS


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

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: float) -> None:
        """Apply one update with these gradients (same shapes and strides as the parameters)."""
        if self.kind == "adam":
            torch._foreach_add_(self.state_steps, 1)
            torch._fused_adam_(
                self.params,
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
                self.params,
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
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        self.steps_taken = int(state["steps_taken"])
        adam = ("exp_avg", "exp_avg_sq", "state_steps")
        names = adam if self.kind == "adam" else ("momentum_buffer",)
        for name in names:
            for dst, src in zip(getattr(self, name), state[name], strict=True):
                dst.copy_(src)
