"""No import cycles in dva/: the graph is built from the source with `ast`, so a cycle hidden inside a function
(imported late, on first call) counts as much as one at the top of a file.

What is an edge, module A -> module B:
- every `import` and `from ... import` in A, at any depth: module level, inside functions and classes, under
  `if TYPE_CHECKING:` or `try:` (a cycle through type hints is still two modules that need each other);
- `import dva.x.y` -> dva.x.y; `from dva.x import name` -> dva.x.name when that is a module (a submodule),
  else -> dva.x (its `__init__`, or dva/x.py); relative imports are resolved against A's package;
- a package's `__init__` importing its own submodules is an ordinary edge, pkg -> pkg.a.
Not an edge: the parents Python imports implicitly first (`import dva.x.y` runs dva/x/__init__ before
dva/x/y.py), or every submodule would depend on its package's `__init__` and each `__init__` that imports a
submodule would be a cycle. So `pkg -> pkg.a -> pkg` is a cycle only when pkg.a imports from `pkg` itself.
A module is dva/x.py or dva/x/__init__.py alike (dva.stores is either), imports outside dva/ are ignored.
"""

from __future__ import annotations

import ast
from pathlib import Path

DVA = Path(__file__).resolve().parents[1] / "dva"


def modules(package: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under package (a package is named by its `__init__.py`)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = path.relative_to(package.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of `known` that module name (at path) imports, anywhere in its source."""
    is_package = path.name == "__init__.py"
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from A's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join(package + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
    edges = set()
    for target in targets:
        while target and target not in known:  # `import dva.x.y.attr` cannot happen, but `import dva.x` of a file can
            target = target.rpartition(".")[0]
        if target and target != name:
            edges.add(target)
    return edges


def import_graph(package: Path = DVA) -> dict[str, set[str]]:
    known = modules(package)
    return {name: imports(name, path, known) for name, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a -> ... -> a) per strongly connected group of modules (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_path_within(graph, group) for group in groups]


def _path_within(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module, staying inside the group."""
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]] & group):
            if target == start:
                return path + [start]
            if target not in seen:
                seen.add(target)
                paths.append(path + [target])
    raise AssertionError(f"{group} is strongly connected but has no cycle through {start}")


def test_dva_has_no_import_cycle():
    graph = import_graph()
    assert "dva.pipeline.extract" in graph and "dva.trainer.model.compose" in graph  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles in dva/ (move the shared definition to the module that owns it):\n" + "\n".join(" -> ".join(c) for c in found)


def test_the_graph_sees_late_relative_and_submodule_imports_and_not_implicit_parents(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from pkg.sub import b\n",  # a package importing its own submodule: an edge, not a cycle
        "a.py": "def late():\n    from .sub.b import thing\n",  # inside a function, relative
        "sub/__init__.py": "",
        "sub/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import c\n",  # c is a submodule
        "c.py": "import pkg.a\n",
        "d.py": "import pkg.sub.b\nfrom pkg.sub import b\n",  # its parents are not edges
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(pkg)
    assert graph["pkg"] == {"pkg.sub.b"} and graph["pkg.d"] == {"pkg.sub.b"} and graph["pkg.sub"] == set()
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
    (pkg / "c.py").write_text("import os\n")  # no way back to a: no cycle
    assert cycles(import_graph(pkg)) == []
    (pkg / "c.py").write_text("from pkg import d\n")
    (pkg / "d.py").write_text("from pkg import VERSION\n")  # a name of pkg's __init__: pkg -> sub.b -> c -> d -> pkg
    assert cycles(import_graph(pkg)) == [["pkg", "pkg.sub.b", "pkg.c", "pkg.d", "pkg"]]


def test_dva_data_never_imports_the_face_stage():
    # one direction: the layout the face stage writes (crops, records) and the frames it reads are dva/data's, so
    # the stage depends on dva/data and never the reverse (scan reads the records without the stage)
    graph = import_graph()
    assert "dva.data.plain" in graph and "dva.faces.stage" in graph
    back = sorted(f"{name} -> {target}" for name, targets in graph.items() if name.startswith("dva.data")
                  for target in targets if target == "dva.faces" or target.startswith("dva.faces."))
    assert not back, "dva/data imports the face stage (move what it needs into dva/data):\n" + "\n".join(back)
