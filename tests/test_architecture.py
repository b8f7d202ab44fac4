"""The house's layering: no import circle among cloakbench's modules, lazy (function-level) imports included,
and the mini model source imports nothing from the mini lab (training, validation, demo)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "cloakbench"


def modules() -> dict[str, Path]:
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the cloakbench modules it imports anywhere in its body, lazy imports included (``from .x
    import y`` resolves to ``x.y`` when that is a module, else to ``x``; importing a module also imports the
    ``__init__`` of every package above it, so those count too)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                # importing a.b.c runs a/__init__ and a/b/__init__ first (except the importer's own packages)
                chain = [t] + [t.rsplit(".", k)[0] for k in range(1, t.count("."))]
                for m in chain:
                    if m and m != name and m in mods and not name.startswith(m + "."):
                        graph[name].add(m)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        x = stack.pop()
                        on_stack.discard(x)
                        comp.append(x)
                        if x == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
            elif w not in index:
                index[w] = low[w] = len(index)
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(sorted(graph[w]))))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return found


def test_cycle_finder_finds_a_planted_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    graph = import_graph()
    assert len(graph) > 50 and graph["cloakbench.cli"], "the graph was not read"
    assert cycles(graph) == []


def test_mini_model_source_does_not_import_the_lab():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("cloakbench.models.mini.") or name == "cloakbench.models.mini":
            assert not [d for d in deps if d.startswith("cloakbench.minilab")], name
    core = [n for n in graph if not n.startswith(("cloakbench.minilab", "cloakbench.cli", "cloakbench.doctor"))]
    for name in core:
        assert not [d for d in graph[name] if d.startswith("cloakbench.minilab")], f"{name} imports the mini lab"
