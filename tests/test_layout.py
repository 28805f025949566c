"""The package's layout (issue 26): subpackages along layers, imports only pointing down, no
cycles, no imports back up to the package root, lazy imports marked, no file over 600 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "lth"

#: lower number = lower layer; a module may import its own layer (no cycles) and lower ones.
LAYERS = {
    "errors": 0, "version": 0, "registry": 0, "usercode": 0, "settings": 0,
    "config": 1, "progress": 1, "presets": 1, "configfile": 1,
    "data": 2, "core": 3, "pruning": 4, "runfolder": 5, "analysis": 6, "study": 7,
    "stability": 8, "cli": 9, "__main__": 10, "__init__": 10,
}  # fmt: skip
MAX_LINES = 600


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name."""
    out = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imports(path: Path, module: str) -> list[tuple[str, int, bool, str]]:
    """(imported lth module, line, inside a function, source line) of every lth import."""
    tree = ast.parse(path.read_text())
    lines = path.read_text().splitlines()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []

    def visit(node: ast.AST, in_function: bool, in_type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            checking = in_type_checking or (
                isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            )
            if isinstance(child, ast.ImportFrom) and not checking:
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                if base == "lth" or base.startswith("lth."):
                    targets = [base]
                    if base == "lth" or base.count(".") == 1:
                        targets = [f"{base}.{a.name}" for a in child.names]
                    for t in targets:
                        found.append((t, child.lineno, inner, lines[child.lineno - 1]))
            elif isinstance(child, ast.Import) and not checking:
                for a in child.names:
                    if a.name.startswith("lth"):
                        found.append((a.name, child.lineno, inner, lines[child.lineno - 1]))
            visit(child, inner, checking)

    visit(tree, False, False)
    return found


ALL = modules()


def resolve(target: str) -> str:
    """The module an import names (``lth.core.models`` or a name inside a package)."""
    while target not in ALL and "." in target:
        target = target.rpartition(".")[0]
    return target


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_point_down_and_never_back_to_the_root(module):
    mine = layer(module)
    for target, line, _, source in imports(ALL[module], module):
        target = resolve(target)
        theirs = layer(target)
        where = f"{ALL[module].relative_to(SRC.parent)}:{line}: {source.strip()}"
        if module != "lth":
            assert target != "lth", f"an import back up to the package root: {where}"
        if target == module:
            continue
        assert LAYERS[theirs] <= LAYERS[mine], f"an import up the layers: {where}"


@pytest.mark.parametrize("module", sorted(ALL))
def test_imports_inside_functions_are_deliberately_lazy(module):
    unmarked = [
        f"{ALL[module].relative_to(SRC.parent)}:{line}: {source.strip()}"
        for _, line, inside, source in imports(ALL[module], module)
        if inside and "lazy" not in source
    ]
    assert not unmarked, "imports inside functions without a '# lazy: why' comment: " + "; ".join(
        unmarked
    )


def test_no_import_cycles():
    graph = {m: {resolve(t) for t, _, inside, _ in imports(p, m) if not inside} - {m}
             for m, p in ALL.items()}  # fmt: skip
    state: dict[str, int] = {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt) :] + [nxt] if nxt in stack else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt, [*stack, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            walk(m, [m])


@pytest.mark.parametrize("module", sorted(ALL))
def test_no_source_file_is_over_600_lines(module):
    count = len(ALL[module].read_text().splitlines())
    assert count <= MAX_LINES, f"{ALL[module].relative_to(SRC.parent)} has {count} lines"


def test_every_subpackage_says_what_it_holds_and_may_import():
    for init in sorted(SRC.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert len(doc) > 80 and "import" in doc.lower(), f"{init.relative_to(SRC.parent)}: {doc!r}"
