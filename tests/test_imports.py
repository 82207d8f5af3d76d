"""The package's import structure: no module imports another that imports it back (directly or
round a longer circle, counting imports inside functions too), and the profiler's measuring code
stays below the commands and the deploy side."""

import ast
import json
import importlib
import os

PACKAGES = ("edgeff", "edgeff.commands", "edgeff.kernels", "edgeff.deploy", "edgeff.federated")


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


# What a training run loads: only what training uses. Export (ONNX, onnxruntime), the deploy side and the
# report's plots load only with the commands that need them; each would add resident memory the run never uses.
NOT_FOR_TRAINING = ("onnx", "onnxruntime", "matplotlib", "edgeff.export", "edgeff.deploy", "edgeff.report",
                    "edgeff.report_plots", "edgeff.predictor", "edgeff.commands.export", "edgeff.commands.deploy")
LOADED_BY_A_RUN = """
import json, sys
from edgeff.cli import main
code = main(sys.argv[1:])
print(json.dumps([code, sorted(m for m in sys.modules if m.split(".")[0] in ("onnx", "onnxruntime", "matplotlib", "edgeff"))]))
"""


def test_a_training_run_never_imports_export_deploy_or_report(tmp_path):
    import subprocess
    import sys

    import numpy as np

    rng = np.random.default_rng(0)
    data = tmp_path / "blobs.npz"
    np.savez(data, x_train=rng.random((200, 16), np.float32), y_train=rng.integers(0, 3, 200),
             x_test=rng.random((50, 16), np.float32), y_test=rng.integers(0, 3, 50))
    r = subprocess.run([sys.executable, "-c", LOADED_BY_A_RUN, "train", "--dataset", str(data), "--model", "16-8",
                        "--epochs", "1", "--head-epochs", "1", "--quiet", "--out", str(tmp_path / "run")],
                       capture_output=True, text=True, timeout=600)
    code, loaded = json.loads(r.stdout.strip().splitlines()[-1])
    assert code == 0, r.stderr
    assert "edgeff.train" in loaded                # the probe sees what the run imported
    assert not [m for m in loaded if m.startswith(NOT_FOR_TRAINING)], loaded
