"""The house's layering: no import circle among cloakbench's modules, lazy (function-level) imports included,
the mini model source imports nothing from the mini lab (training, validation, demo), and the product imports
nothing from the lab helpers of ``cloakbench.testing``; names: no package attribute shadows a submodule and no
two modules share a file name; and docs/ARCHITECTURE.md's layout names only files and folders that exist."""

from __future__ import annotations

import ast
import inspect
import pkgutil
import re
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "src" / "cloakbench"


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



def test_product_does_not_import_the_lab_helpers():
    """``cloakbench.testing`` is for the test suite and the benchmarks; only ``cloakbench doctor`` looks up the
    test images through it (``testing.shared_data``)."""
    graph = import_graph()
    assert "cloakbench.testing" in graph, "the graph has no cloakbench.testing"
    lab = lambda m: m == "cloakbench.testing" or m.startswith("cloakbench.testing.")  # noqa: E731
    for name, deps in graph.items():
        if lab(name):
            continue
        used = sorted(d for d in deps if lab(d))
        if name == "cloakbench.doctor":
            assert set(used) <= {"cloakbench.testing", "cloakbench.testing.shared_data"}, used
        else:
            assert not used, f"{name} imports the lab helpers {used}"


# ------------------------------------------------------------------ names

# File names that several modules may share: ``base.py`` is the base class and registry of each component kind
# (protect/, purify/, metrics/), the layout's one convention for it (docs/ARCHITECTURE.md).
SHARED_NAMES = {"__init__", "__main__", "base"}


def test_no_two_modules_share_a_name():
    where = defaultdict(list)
    for f in PKG.rglob("*.py"):
        where[f.stem].append(str(f.relative_to(PKG)))
    shared = {stem: sorted(paths) for stem, paths in where.items() if len(paths) > 1 and stem not in SHARED_NAMES}
    assert not shared, f"modules that share a name (rename one, or justify it in SHARED_NAMES): {shared}"


def test_stages_functions_do_not_shadow_their_modules():
    """``stages.protect`` is the function; its module is ``stages.protection`` (and so for every stage)."""
    from cloakbench import stages

    subs = {m.name for m in pkgutil.iter_modules(stages.__path__)}
    assert {"protection", "purification", "training", "sampling", "evaluation", "output"} <= subs
    for name in dir(stages):
        attr = getattr(stages, name)
        if inspect.isfunction(attr):
            assert name not in subs, f"stages.{name} (a function) shadows the module cloakbench.stages.{name}"
    for name in ("protect", "purify", "train", "sample", "evaluate", "class_images"):
        assert inspect.isfunction(getattr(stages, name)), name


def shadowing(init: Path) -> list[str]:
    """Names a package's ``__init__.py`` binds (by ``from .x import name``, a def, a class or an assignment) that
    are also the names of its submodules: such a name hides the module behind ``package.name``."""
    subs = {m.name for m in pkgutil.iter_modules([str(init.parent)])}
    out = []
    for node in ast.parse(init.read_text()).body:
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and not (node.level == 1 and node.module is None):  # from . import m
            names = [a.asname or a.name for a in node.names]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        elif isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
        out += [n for n in names if n in subs]
    return out


def test_shadow_reader_finds_a_planted_shadow(tmp_path):
    (tmp_path / "protect.py").write_text("def protect(): ...\n")
    (tmp_path / "output.py").write_text("")
    (tmp_path / "__init__.py").write_text("from . import output\nfrom .protect import protect\n")
    assert shadowing(tmp_path / "__init__.py") == ["protect"]


def test_no_package_attribute_shadows_a_submodule():
    found = {str(init.relative_to(PKG)): names for init in PKG.rglob("__init__.py") if (names := shadowing(init))}
    assert not found, f"package names that hide a submodule of the same name: {found}"

# ------------------------------------------------------------------ docs/ARCHITECTURE.md's layout

SAME: dict = {}  # a layout path -> another that also satisfies it (none today)
_ENTRY = re.compile(r"^( *)((?:[\w.-]+/)*[\w.-]+(?:\.py|/))(?: {2,}(.*))?$")
_NAMED = re.compile(r"(?<![\w./-])((?:[\w-]+/)*[\w-]+(?:\.py|/))(?![\w./-])")


def tree_blocks(text: str) -> list[list[str]]:
    """The fenced blocks of ``text`` that draw a file tree: the first line names a folder (``src/cloakbench/``)."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M)
    return [b.splitlines() for b in blocks if re.fullmatch(r"[\w./-]+/", b.splitlines()[0].strip() if b.strip() else "")]


def tree_paths(lines: list[str], root: Path = REPO, pkg: Path = PKG) -> list[tuple[int, str, list[Path]]]:
    """``(line number, name as written, where it may be)`` for every path a tree block names.

    An entry is a path at the start of a line (``  purify/``, ``  images.py``), then two spaces or more and its
    description; a line indented to the description column or deeper continues the description. An entry's
    folder is the nearest less-indented folder entry above it (the repository root at the top level: the tree's
    first line is ``src/cloakbench/``). A path in a description (``aspl.py``, ``report/``, ``stages/protection.py``)
    is looked for in its entry (a folder entry, or the folder of a file entry) and, when it has a ``/``, in the
    package root too. Text in backticks is code or a command, not a path."""
    out: list[tuple[int, str, list[Path]]] = []
    stack: list[tuple[int, Path]] = []  # (indent, folder) of the open folder entries
    context, desc_col = root, None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if desc_col is not None and indent >= desc_col:
            text = line
        else:
            m = _ENTRY.match(line.rstrip())
            assert m, f"docs/ARCHITECTURE.md tree line {n} is neither an entry nor a description: {line!r}"
            while stack and stack[-1][0] >= indent:
                stack.pop()
            path = (stack[-1][1] if stack else root) / m.group(2)
            out.append((n, m.group(2), [path]))
            if m.group(2).endswith("/"):
                stack.append((indent, path))
            context = path if m.group(2).endswith("/") else path.parent
            desc_col = m.start(3) if m.group(3) else indent + len(m.group(2)) + 2
            text = m.group(3) or ""
        for name in _NAMED.findall(re.sub(r"`[^`]*`", "", text)):
            out.append((n, name, [context / name] + ([pkg / name] if "/" in name.rstrip("/") else [])))
    return out


def missing_paths(text: str, root: Path = REPO, pkg: Path = PKG) -> list[str]:
    """The paths the tree blocks of ``text`` name that do not exist (a folder where ``name/``, a file otherwise)."""

    def there(p: Path, folder: bool) -> bool:
        return (p.is_dir() if folder else p.is_file()) or (p in SAME and SAME[p].exists())

    missing = []
    for block in tree_blocks(text):
        for n, name, places in tree_paths(block, root, pkg):
            if not any(there(p, name.endswith("/")) for p in places):
                missing.append(f"line {n} of the tree: {name} ({places[0].relative_to(root)})")
    return missing


def test_layout_reader_finds_a_missing_path(tmp_path):
    (tmp_path / "src" / "pkg" / "purify").mkdir(parents=True)
    (tmp_path / "src" / "pkg" / "purify" / "jpeg.py").write_text("")
    (tmp_path / "src" / "pkg" / "stages").mkdir()
    (tmp_path / "src" / "pkg" / "stages" / "protection.py").write_text("")
    (tmp_path / "src" / "pkg" / "audit.py").write_text("")
    (tmp_path / "tests").mkdir()
    doc = "\n".join(["```", "src/pkg/", "  purify/    the purifiers: jpeg.py, `file.py:Class` names,",
                      "              gridpure.py and report/", "  audit.py   through stages/protection.py:external",
                      "  models/    the models", "tests/       tests", "```"])
    pkg = tmp_path / "src" / "pkg"
    assert missing_paths(doc, tmp_path, pkg) == ["line 3 of the tree: gridpure.py (src/pkg/purify/gridpure.py)",
                                                 "line 3 of the tree: report/ (src/pkg/purify/report)",
                                                 "line 5 of the tree: models/ (src/pkg/models)"]
    (pkg / "purify" / "gridpure.py").write_text("")
    (pkg / "purify" / "report").mkdir()
    (pkg / "models").mkdir()
    assert missing_paths(doc, tmp_path, pkg) == []


def test_architecture_layout_names_only_paths_that_exist():
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    assert tree_blocks(text), "docs/ARCHITECTURE.md has no layout tree"
    assert len([p for b in tree_blocks(text) for p in tree_paths(b)]) > 40, "the layout tree was not read"
    missing = missing_paths(text)
    assert not missing, "docs/ARCHITECTURE.md names paths that do not exist:\n" + "\n".join(missing)
