"""The words and numbers on lth's figures: tick labels of one precision per axis
(:class:`PercentTicks`) and study titles from the registries' display names
(:func:`study_title`: "LeNet-300-100 on MNIST", not "lenet_300_100 on mnist")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable

from matplotlib.ticker import Formatter

from lth.core.models import MODELS
from lth.data import get_spec
from lth.errors import LTHError

__all__ = ["PercentTicks", "fmt_fixed", "study_title", "tick_decimals"]


def tick_decimals(values: Iterable[float]) -> int:
    """Decimals of the tick labels of one axis (values of 1 and more): 1 when any of them
    below 100 is not a whole number, else 0, so that "7.0" stands beside "10.8", not "7".

    >>> tick_decimals([100, 64.1, 7.0]), tick_decimals([100, 80, 60])
    (1, 0)
    """
    return int(any(1 <= v < 100 and abs(v - round(v)) >= 0.05 for v in values))


def fmt_fixed(value: float, decimals: int) -> str:
    """A tick label with ``decimals`` (100 and whole values of a 0-decimal axis plain; values
    below 1 with two significant digits).

    >>> [fmt_fixed(v, 1) for v in (100.0, 10.8, 7.0, 0.47)]
    ['100', '10.8', '7.0', '0.47']
    """
    if value < 1:
        return f"{value:.2g}"
    if value >= 99.95:
        return f"{value:.0f}"
    return f"{value:.{decimals}f}"


class PercentTicks(Formatter):
    """Tick labels of a percentage axis, one precision for every tick (:func:`tick_decimals`):
    '100, 51.2, 26.2, 7.0', never '7' beside '10.8'."""

    decimals = 0

    def set_locs(self, locs) -> None:
        """Choose the precision from the ticks in view."""
        super().set_locs(locs)
        self.decimals = tick_decimals(locs)

    def __call__(self, x: float, pos: int | None = None) -> str:
        return fmt_fixed(x, self.decimals)


def study_title(model: object, dataset: object) -> str:
    """'LeNet-300-100 on MNIST': the model's and the dataset's display names from their
    registries (a name they do not know, e.g. a user model's 'pkg.mod:fn', as it is).

    >>> study_title("lenet_300_100", "fashion_mnist")
    'LeNet-300-100 on Fashion-MNIST'
    """
    model = None if model in (None, "None", "") else str(model)
    dataset = None if dataset in (None, "None", "") else str(dataset)
    model = model and MODELS.title(model)
    if dataset:
        # a dataset this process does not know: its name as the run recorded it
        with contextlib.suppress(LTHError):
            dataset = get_spec(dataset).title
    if model and dataset:
        return f"{model} on {dataset}"
    return model or dataset or ""
