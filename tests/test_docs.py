"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "lth",
    "lth.config",
    "lth.masks",
    "lth.pruning",
    "lth.models",
    "lth.criteria",
    "lth.stats",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_every_public_name_is_documented():
    import inspect

    import lth

    for name in lth.__all__:
        doc = inspect.getdoc(getattr(lth, name)) or ""
        assert len(doc) > 40, name
