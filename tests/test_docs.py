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


def test_readme_is_the_front_door_and_every_link_resolves():
    """The README stays short, and every relative link of the README and the docs pages
    points to a file that exists (the site's pages, figures and results)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    readme = root / "README.md"
    assert len(readme.read_text().splitlines()) <= 300
    pages = [readme, *sorted((root / "docs").rglob("*.md"))]
    pages = [p for p in pages if "results" not in p.relative_to(root).parts[:2]]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(root)}: {target}"
            checked += 1
    assert checked > 20
