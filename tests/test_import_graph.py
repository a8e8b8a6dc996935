"""The package's import graph, read from the source (ast), not from what happens to be loaded.

Every ``import`` counts: module level, under ``TYPE_CHECKING`` and inside functions. A circle
between two modules means neither can be read alone; the runtime wing must not reach the report
wing; only ``_telemetry`` speaks to OpenTelemetry.
"""

from __future__ import annotations

import ast
from pathlib import Path

import shadow_middleware

PACKAGE = Path(shadow_middleware.__file__).parent
NAME = "shadow_middleware"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imported_names(path: Path) -> set[str]:
    """Every absolute module name ``path`` imports, with ``from x import y`` also naming ``x.y``
    (``y`` may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            submodules = {f"{module}.{alias.name}" for alias in node.names}
            found.update(submodules)
            if not submodules <= MODULES.keys():
                # ``from . import stats`` imports the submodule; the package is loaded already
                found.add(module)
    return found


def graph() -> dict[str, set[str]]:
    return {name: (imported_names(path) & MODULES.keys()) - {name} for name, path in MODULES.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    # The check below passes on an empty answer: make sure it can say something else.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_the_package() -> None:
    edges = graph()
    assert f"{NAME}._wire" in edges and f"{NAME}._config" in edges  # the graph was read
    assert cycles(edges) == []


def test_wire_depends_on_nothing_in_the_package() -> None:
    # The module a security reviewer reads alone (docs/architecture.md).
    assert graph()[f"{NAME}._wire"] == set()


def test_the_runtime_wing_never_imports_the_report_wing() -> None:
    # The runtime wing: shadow_middleware/_*.py (``__main__`` imports the report lazily, by design).
    runtime = {n: d for n, d in graph().items() if n.startswith(f"{NAME}._") and not n.endswith("__")}
    assert f"{NAME}._engine" in runtime
    for name, deps in runtime.items():
        assert not {d for d in deps if d.startswith(f"{NAME}.report")}, name


def test_only_telemetry_imports_opentelemetry() -> None:
    users = {
        module_name(p)
        for p in PACKAGE.rglob("*.py")
        if any(n.split(".")[0] == "opentelemetry" for n in imported_names(p))
    }
    assert users == {f"{NAME}._telemetry"}
