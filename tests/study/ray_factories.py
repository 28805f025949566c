"""User model factories for tests/study/test_executors.py, imported by name on Ray's workers."""

from __future__ import annotations

import os
import time
from pathlib import Path

from torch import nn

from lth.core.models import build_model

HOLD = "LTH_TEST_HOLD"  # lenet_held: the folder through which a unit is held for the test


def lenet(input_shape, num_classes):
    """LeNet-300-100; on a Ray worker it fails while the file named by $LTH_TEST_FACTORY_FAILS
    exists (say, a node without a library the model needs)."""
    flag = os.environ.get("LTH_TEST_FACTORY_FAILS")
    if flag and Path(flag).exists() and _in_ray_task():
        raise RuntimeError(Path(flag).read_text())
    return build_model("lenet_300_100", input_shape, num_classes)


class HeldLeNet(nn.Module):
    """LeNet-300-100 whose forward pass may hold its unit (:func:`lenet_held`). Not a flat
    ``nn.Sequential``: lth trains it through its module (a flat one is run by lth's own
    stacked kernels, which never call the module)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        _hold_level_1()
        return self.net(x)


def lenet_held(input_shape, num_classes):
    """:class:`HeldLeNet`: the first unit of level 1 that runs it on a Ray worker claims
    ``$LTH_TEST_HOLD/caught`` (its worker's pid) at its first forward pass and waits there
    until the test, having killed that worker, creates ``release``. The kill lands mid-unit on
    a machine of any speed; the retried unit (the claim is taken) goes on. In the forward
    pass, not the factory: a worker builds the model once and keeps it for later units."""
    return HeldLeNet(build_model("lenet_300_100", input_shape, num_classes))


def _hold_level_1() -> None:
    folder = os.environ.get(HOLD)
    if not folder or (Path(folder) / "caught").exists() or not _in_ray_task():
        return
    if "level 1 group" in _task_name():
        _claim_and_wait(Path(folder))


def _claim_and_wait(folder: Path) -> None:
    """Publish this process's pid as ``caught`` (once: a link is atomic and never replaces),
    then wait for ``release`` (bounded, so a broken test fails instead of hanging)."""
    mine = folder / f"claim.{os.getpid()}"
    mine.write_text(str(os.getpid()))
    try:
        os.link(mine, folder / "caught")
    except FileExistsError:
        return  # another unit was caught: this one (e.g. the retry) goes on
    finally:
        mine.unlink()
    for _ in range(6000):
        if (folder / "release").exists():
            return
        time.sleep(0.1)


def _task_name() -> str:
    import ray

    return ray.get_runtime_context().get_task_name() or ""


def _in_ray_task() -> bool:
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None
