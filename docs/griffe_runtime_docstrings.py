"""Griffe extension for the API reference: docstrings that lth writes at import time.

mkdocstrings reads ``src/`` without importing it, so it would show ``ExperimentConfig``'s
docstring as written in the source, without the ``Attributes:`` section that
``lth.config._document`` builds from the settings' declarations. For the classes of the
modules named here this extension imports the class and uses its runtime ``__doc__``.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from pathlib import Path

import griffe

#: modules whose class docstrings are completed at import time (lth.config imports no torch)
RUNTIME_DOCSTRING_MODULES = ("lth.config",)


class RuntimeDocstrings(griffe.Extension):
    """Replace the static docstring of a class by its runtime ``__doc__`` where they differ."""

    def on_class_instance(self, *, cls: griffe.Class, **kwargs: object) -> None:
        if cls.module.path not in RUNTIME_DOCSTRING_MODULES or cls.docstring is None:
            return
        # import the source being documented (src/), not another installed copy of lth
        root = str(Path(cls.module.filepath).parents[cls.module.path.count(".")])
        if root not in sys.path:
            sys.path.insert(0, root)
        module = importlib.import_module(cls.module.path)
        if Path(module.__file__) != Path(cls.module.filepath):
            raise RuntimeError(f"{cls.module.path} was imported from {module.__file__}")
        doc = inspect.getdoc(getattr(module, cls.name))
        if doc and doc != cls.docstring.value:
            cls.docstring = griffe.Docstring(
                doc,
                lineno=cls.docstring.lineno,
                endlineno=cls.docstring.endlineno,
                parent=cls,
                parser=cls.docstring.parser,
                parser_options=cls.docstring.parser_options,
            )
