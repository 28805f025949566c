"""The examples in the public docstrings run and print what they say."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import inspect
import re

import pytest

from lth.config import ExperimentConfig

MODULES = [
    "lth",
    "lth.config",
    "lth.pruning.criteria",
    "lth.data.dataset",
    "lth.errors",
    "lth.runfolder.results",
    "lth.pruning.masks",
    "lth.core.models",
    "lth.pruning.selection",
    "lth.analysis.stats",
    "lth.core.init",
    "lth.runfolder.runs",
    "lth.runfolder.export",
    "lth.study.runner",
    "lth.runfolder.packed",
    "lth.runfolder.publish",
    "lth.runfolder.verify_published",
    "lth.study.replay",
    "lth.pruning.granularity",
    "lth.runfolder.verify_structured",
    "lth.pruning.cost",
]

#: Public names whose docstrings do not have Args, Returns and an example yet (none now).
PENDING: set[str] = set()


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, offline_and_isolated, no_figures):
    """Offline and without the user's cache: load_dataset's example reads the bundled MNIST.
    The examples' studies draw no figures (none of them shows one)."""
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_every_public_name_is_documented():
    import lth

    for name in lth.__all__:
        doc = inspect.getdoc(getattr(lth, name)) or ""
        assert len(doc) > 40, name


def _section(doc: str, title: str) -> str:
    """The body of the Google-style section ``title`` of a cleaned docstring ("" if none)."""
    lines = doc.splitlines()
    if f"{title}:" not in lines:
        return ""
    body = []
    for line in lines[lines.index(f"{title}:") + 1 :]:
        if line and not line.startswith(" "):
            break
        body.append(line)
    return "\n".join(body)


def _documented(section: str) -> set[str]:
    """The names a section's entries describe (``name: ...`` or ``name (type): ...``)."""
    return set(re.findall(r"^    (\w+)(?: \([^)]*\))?:", section, flags=re.MULTILINE))


def test_every_public_name_has_args_returns_and_an_example():
    """What the API reference shows: every parameter (or field) described, what comes back,
    and an example (test_docstring_examples runs it)."""
    import lth

    assert PENDING.issubset(lth.__all__)
    for name in sorted(set(lth.__all__) - PENDING):
        obj = getattr(lth, name)
        doc = inspect.getdoc(obj) or ""
        assert ">>> " in _section(doc, "Examples"), f"{name}: no Examples section with >>>"
        if inspect.isclass(obj):
            described = _documented(_section(doc, "Args") + "\n" + _section(doc, "Attributes"))
            assert described, f"{name}: no Args or Attributes"
            wanted = (
                {f.name for f in dataclasses.fields(obj)}
                if dataclasses.is_dataclass(obj)
                else set()
            )
        else:
            described = _documented(_section(doc, "Args"))
            assert _section(doc, "Returns").strip(), f"{name}: no Returns"
            wanted = set(inspect.signature(obj).parameters)
        assert wanted <= described, f"{name}: {sorted(wanted - described)} not described"
    for name in PENDING:  # done? then it leaves PENDING and the checks above hold it
        doc = inspect.getdoc(getattr(lth, name)) or ""
        assert not ("Args:" in doc and ">>> " in doc), f"{name} is documented: drop it from PENDING"


def test_api_reference_shows_the_settings_of_experiment_config():
    """mkdocstrings reads src/ without importing it; the griffe extension of docs/ gives it
    ExperimentConfig's docstring as lth.config writes it at import, Attributes included."""
    griffe = pytest.importorskip("griffe")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    extension = griffe.load_extensions(str(root / "docs" / "griffe_runtime_docstrings.py"))
    loader = griffe.GriffeLoader(
        extensions=extension, search_paths=[str(root / "src")], docstring_parser="google"
    )
    config = loader.load("lth.config")["ExperimentConfig"]
    sections = {section.kind.value: section for section in config.docstring.parsed}
    assert {"attributes", "raises", "examples"} <= set(sections)
    attributes = {a.name: a for a in sections["attributes"].value}
    assert str(attributes["rate"].annotation) == "float"
    assert "Default: ``0.2``" in attributes["rate"].description
    assert set(attributes) == {f.name for f in dataclasses.fields(ExperimentConfig)}


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


def test_every_module_is_listed_in_the_modules_page():
    """docs/reference/modules.md names every module of the package (one line each)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "reference" / "modules.md").read_text()
    src = root / "src"
    for path in sorted((src / "lth").rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] in ("__init__", "__main__") and len(parts) > 2:
            continue
        name = ".".join(parts).removesuffix(".__init__")
        if name in ("lth", "lth.__main__"):
            continue
        assert f"`{name}`" in page, f"{name} is missing from docs/reference/modules.md"
