"""A user model factory for tests/test_executors.py, imported by name on Ray's workers."""

from __future__ import annotations

import os
from pathlib import Path

from lth.models import build_model


def lenet(input_shape, num_classes):
    """LeNet-300-100; on a Ray worker it fails while the file named by $LTH_TEST_FACTORY_FAILS
    exists (say, a node without a library the model needs)."""
    flag = os.environ.get("LTH_TEST_FACTORY_FAILS")
    if flag and Path(flag).exists() and _in_ray_task():
        raise RuntimeError(Path(flag).read_text())
    return build_model("lenet_300_100", input_shape, num_classes)


def _in_ray_task() -> bool:
    import sys

    if "ray" not in sys.modules:
        return False
    import ray

    return ray.is_initialized() and ray.get_runtime_context().get_task_id() is not None
