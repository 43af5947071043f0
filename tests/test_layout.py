"""The package's layout: stage subpackages whose imports point down the pipeline, without cycles.

A static check (``ast``, every import in a module, also the ones inside functions): it does not
import qecat_core, so a cycle that Python would resolve at run time by a lazy import still counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "qecat_core"

#: The stages in pipeline order: a package imports only itself and the packages before it.
ORDER = ("common", "calculators", "results", "catalog", "enumerate", "label", "model", "screen", "cli")


def module_name(path: Path) -> str:
    parts = ["qecat_core", *path.relative_to(PKG).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the qecat_core modules it imports (``from pkg import submodule`` resolved)."""
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                deps.update(a.name for a in node.names if a.name.startswith("qecat_core."))
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("qecat_core"):
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in modules else node.module)
        graph[name] = {d for d in deps if d in modules and d != name and d != "qecat_core"}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def stage(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_import_cycles_between_modules():
    found = cycles(import_graph())
    assert found == [], f"import cycles: {found}"


def test_imports_point_down_the_pipeline():
    bad = []
    for mod, deps in import_graph().items():
        s = stage(mod)
        if s not in ORDER:
            continue
        for d in deps:
            t = stage(d)
            if t in ORDER and ORDER.index(t) > ORDER.index(s):
                bad.append(f"{mod} -> {d}")
    assert bad == [], "imports against the pipeline order " + " < ".join(ORDER) + ":\n" + "\n".join(sorted(bad))


def test_stages_are_packages_with_a_docstring():
    top = sorted(p.name for p in PKG.glob("*.py"))
    assert top == ["__init__.py"], f"modules left at the top of qecat_core: {top}"
    for name in ORDER:
        init = PKG / name / "__init__.py"
        assert init.is_file(), f"qecat_core/{name} is not a package"
        assert ast.get_docstring(ast.parse(init.read_text())), f"qecat_core/{name}/__init__.py has no docstring"


def test_the_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
