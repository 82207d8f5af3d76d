"""The package's import structure: no module imports another that imports it back (directly or
round a longer circle, counting imports inside functions too), and the profiler's measuring code
stays below the commands and the deploy side."""

import ast
import importlib
import os

PACKAGES = ("edgeff", "edgeff.commands", "edgeff.kernels", "edgeff.deploy")


def modules():
    """{module name: source path} for every module of the package."""
    found = {}
    for package in PACKAGES:
        where = importlib.import_module(package).__path__[0]
        for name in sorted(os.listdir(where)):
            if name.endswith(".py"):
                found[package if name == "__init__.py" else f"{package}.{name[:-3]}"] = os.path.join(where, name)
    return found


def imports_of(name, path, known):
    """The package's modules that `name` imports anywhere in its source."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    with open(path, encoding="utf-8") as f:
        tree = ast.parse(f.read(), path)
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([node.module] if node.module else []))
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return out & set(known) - {name}


def graph():
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def find_circle(edges):
    """One import circle as [a, b, ..., a], or None."""
    state = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt]
            if nxt not in state and (circle := visit(nxt, trail + [nxt])):
                return circle
        state[node] = "done"
        return None

    for start in sorted(edges):
        if start not in state and (circle := visit(start, [start])):
            return circle
    return None


def test_the_graph_sees_lazy_and_relative_imports():
    edges = graph()
    assert "edgeff.deploy.trust" in edges["edgeff.deploy.transport"]        # from . import trust
    assert "edgeff.errors" in edges["edgeff.commands.train"]                 # from ..errors import ...
    assert find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_import_circle():
    assert find_circle(graph()) is None


def test_profiler_measures_without_commands_or_deploy():
    below = graph()["edgeff.profile"]
    assert not {m for m in below if m.startswith(("edgeff.commands", "edgeff.deploy"))}
