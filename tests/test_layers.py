"""The engine's modules import downward only: no import cycle, counting imports inside functions
too (a lazy import hides a loop from Python, not from the reader)."""
from __future__ import annotations

import ast
from pathlib import Path

import engine

ROOT = Path(engine.__file__).parent


def _module(path: Path) -> str:
    parts = ["engine", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set) -> set:
    name = _module(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()

    def add(target: str):
        # `from . import x` names a module when engine.<...>.x is one, else the package itself
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            found.add(target)

    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "engine" or alias.name.startswith("engine."):
                    add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            elif node.module and (node.module == "engine" or node.module.startswith("engine.")):
                mod = node.module
            else:
                continue
            for alias in node.names:
                full = f"{mod}.{alias.name}"
                add(full if full in modules else mod)
    return found


def import_graph() -> dict[str, set]:
    files = [p for p in ROOT.rglob("*.py")]
    modules = {_module(p) for p in files}
    return {_module(p): _imports(p, modules) for p in files}


def cycles(graph: dict[str, set]) -> list[list[str]]:
    """Every strongly connected set of more than one module (or a module importing itself), each
    as one loop through it."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                out.append(_loop(graph, set(comp)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _loop(graph, comp: set) -> list[str]:
    """One path from the component's first module back to itself, within the component."""
    start = min(comp)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & comp):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return sorted(comp)


def test_no_import_cycle_inside_the_engine_package():
    found = cycles(import_graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_cycle_finder_finds_a_loop():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_and_relative_imports():
    graph = import_graph()
    assert "engine.compiler" in graph["engine.catalog"]
    assert "engine.server.app" in graph["engine.cli"]  # imported inside a function


def test_the_runtime_does_not_import_the_compiler():
    graph = import_graph()
    assert "engine.compiler" not in graph["engine.stream"]
    assert "engine.compiler" not in graph["engine.program"]
    for name in ("chat", "messages", "responses", "passthrough", "ops"):
        assert "engine.server.app" not in graph[f"engine.server.{name}"], name


def test_the_benchmark_is_outside_the_runtime_import_path():
    """engine/bench (the top level of the repository is fixed, so it lives in the package) is
    loaded only by `engine bench`: nothing the server or the compiler imports reaches it."""
    bench = ROOT / "bench"
    users = sorted(str(p.relative_to(ROOT)) for p in ROOT.rglob("*.py")
                   if bench not in p.parents and ("engine.bench" in p.read_text(encoding="utf-8")
                                                  or "from .bench" in p.read_text(encoding="utf-8")
                                                  or "from ..bench" in p.read_text(encoding="utf-8")))
    assert users == ["cli.py"]
    graph = import_graph()
    assert not any(m.startswith("engine.bench") for name, deps in graph.items()
                   if not name.startswith("engine.bench") and name != "engine.cli" for m in deps)
