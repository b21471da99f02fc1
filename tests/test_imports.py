"""The package's import graph: no cycle, no forbidden edge, and a light CLI.

Edges are the `bandlift.*` imports written in the source (module level or inside functions), read with
ast. Packages: bandlift.rt (the engine), bandlift.train (with its torch-free evaluation subpackage
bandlift.train.eval) and bandlift.export. The engine imports neither of the others; training does not
import export; export uses the model and the contract. Importing a subcommand by name (the CLI's
table) is not an edge.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"bandlift.rt": ROOT / "rt", "bandlift.train": ROOT / "train", "bandlift.export": ROOT / "export"}
# package -> packages it may import (besides itself)
ALLOWED = {
    "bandlift.rt": set(),
    "bandlift.train": {"bandlift.rt"},
    "bandlift.export": {"bandlift.rt", "bandlift.train"},
}


def _modules() -> dict[str, Path]:
    out = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = path
    return out


def _imports(module: str, path: Path, known) -> set[str]:
    """The bandlift modules `module` imports (resolved to modules that exist)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("bandlift.") and name != module:
                found.add(name)
    return found


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def _graph():
    modules = _modules()
    return {m: _imports(m, p, modules) for m, p in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_forbidden_edge():
    bad = [f"{m} -> {t}" for m, targets in _graph().items() for t in sorted(targets)
           if _package(t) != _package(m) and _package(t) not in ALLOWED[_package(m)]]
    assert not bad, "forbidden imports:\n" + "\n".join(bad)


def test_no_import_cycle_between_modules():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_no_import_cycle_between_packages():
    packages: dict[str, set[str]] = {}
    for m, targets in _graph().items():
        packages.setdefault(_package(m), set()).update(_package(t) for t in targets if _package(t) != _package(m))
    cycle = _cycle(packages)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_graph_walker_sees_edges():  # the checks above would pass vacuously if the walker saw nothing
    graph = _graph()
    assert "bandlift.rt.model.session" in graph["bandlift.rt.api"]
    assert "bandlift.rt.model.contract" in graph["bandlift.export.onnx_export"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_cli_imports_no_heavy_dependency():
    code = ("import sys, bandlift.rt.cli; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'librosa', 'matplotlib')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_engine_and_evaluation_never_import_torch():
    """rt (the engine), train.eval and the degradation pipeline are torch-free, even inside functions."""
    modules = _modules()
    torch_free = [m for m in modules if m.startswith(("bandlift.rt", "bandlift.train.eval"))
                  or m in ("bandlift.train", "bandlift.train.degrade", "bandlift.train.data.sources",
                           "bandlift.train.cli", "bandlift.train.cli.eval", "bandlift.train.cli.demo", "bandlift.train.recipes")]
    bad = []
    for m in torch_free:
        for node in ast.walk(ast.parse(modules[m].read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            bad += [f"{m}: {n}" for n in names if n.split(".")[0] == "torch"]
    assert not bad, bad


def test_only_commands_raise_cli_errors():
    """Library code raises its own errors (BandliftError's subclasses: the dispatcher prints them as one
    line); CLIError is for the command modules (the CLI's table, and bandlift.rt.cli itself)."""
    from bandlift.rt.cli import SUBCOMMANDS

    commands = {module for module, _ in SUBCOMMANDS.values()}
    users = set()
    for module, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and any(a.name == "CLIError" for a in node.names):
                users.add(module)
    assert users, "no module imports CLIError: the test reads the wrong files"
    assert {m for m in users if m not in commands and not m.startswith("bandlift.rt.cli")} == set()
