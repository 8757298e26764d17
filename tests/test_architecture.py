"""The shape of the ml package: no import cycles, and light modules stay light.

Import cycles are looked for in every import, at module level and inside functions alike: a
function-level import is still a dependency, only a later one. One kind of edge is not one: a
package's ``__init__`` choosing one of its own submodules inside a function (the warehouse
factory loading the DuckDB or BigQuery engine), since the submodules build on the package's
base classes by design; at module level even that edge counts.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ml"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    files = [
        *PACKAGE.glob("*.py"),
        *(PACKAGE / "warehouse").glob("*.py"),
        *(PACKAGE / "dashboard").glob("*.py"),
    ]
    return {_module_name(path): path for path in sorted(files)}


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The ml modules one import statement names (``import ml.x``, ``from ml.x import y``,
    ``from ml import x``, relative forms resolved)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = package[: len(package) - node.level + 1]
        source = ".".join(base + ([node.module] if node.module else []))
    else:
        source = node.module or ""
    # `from ml import x` may name a submodule x as well as an attribute of ml: count both.
    return [source, *(f"{source}.{alias.name}" for alias in node.names)]


def _deferred(tree: ast.AST) -> set[int]:
    """The ids of the import statements inside functions."""
    functions = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)
    return {
        id(node)
        for function in ast.walk(tree)
        if isinstance(function, functions)
        for node in ast.walk(function)
        if isinstance(node, (ast.Import, ast.ImportFrom))
    }


def import_graph() -> dict[str, set[str]]:
    """Every ml module -> the ml modules it imports anywhere in its file."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        is_package = path.name == "__init__.py"
        deferred = _deferred(tree)
        for node in ast.walk(tree):
            for target in _imported(node, name, is_package):
                # `import ml.a.b` loads ml.a too, but the dependency that matters is the
                # deepest module named; packages' __init__ are not edges of their own.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if not target or target in (name, "ml"):
                    continue
                if is_package and target.startswith(f"{name}.") and id(node) in deferred:
                    continue  # the package's factory picking one of its own submodules
                graph[name].add(target)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each group of modules that import each other in a circle."""
    return [_cycle_through(graph, set(c)) for c in tangles(graph)]


def tangles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component with more than one module (Tarjan): the modules
    that import each other, directly or around a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def _cycle_through(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """One cycle inside ``component`` from its first module, by breadth-first search."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & component):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return sorted(component)


def test_the_import_graph_is_read_from_every_ml_module():
    graph = import_graph()
    assert {"ml.train", "ml.backtest", "ml.cli", "ml.warehouse.duckdb_engine"} <= set(graph)
    assert "ml.features" in graph["ml.backtest"]  # module level
    assert "ml.score" in graph["ml.pipeline"]  # function level
    assert {"ml.landing", "ml.ingest", "ml.transform"} <= graph["ml.flows"]
    assert "ml.warehouse" in graph["ml.warehouse.duckdb_engine"]  # the package's base classes
    assert "ml.dashboard.data" in graph["ml.dashboard.pages"]


def test_no_import_cycles_among_ml_modules():
    graph = import_graph()
    lines = []
    for component in tangles(graph):
        members = set(component)
        edges = [f"{a} -> {b}" for a in component for b in sorted(graph[a] & members)]
        cycle = " -> ".join(_cycle_through(graph, members))
        lines.append(f"{cycle}; all imports among {', '.join(component)}: {'; '.join(edges)}")
    assert not lines, "import cycles among ml modules:\n" + "\n".join(lines)


def test_cycle_finder_reports_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    ("modules", "heavy"),
    [
        ("ml.cli, ml.ingest", ("tensorflow", "keras", "prefect")),
        ("ml.upload", ("tensorflow", "keras")),
        ("ml.pipeline, ml.context", ("tensorflow", "keras")),
        ("ml.landing", ("tensorflow", "keras", "prefect")),
        ("ml.flows", ("tensorflow", "keras")),
        ("ml.monitor", ("tensorflow", "keras", "prefect")),
        (
            "ml.dashboard.data, ml.dashboard.figures, ml.dashboard.pages",
            ("tensorflow", "keras", "prefect"),
        ),
    ],
)
def test_light_modules_do_not_import_tensorflow(modules, heavy):
    """Loading files, the CLI itself, the landing folder, the flows' wiring, the pipeline's,
    the monitor and the dashboard never load TensorFlow or Keras: only the commands that fit or
    load a network do, inside their functions. The CLI, the landing folder and the dashboard do
    not load Prefect either (`stockcast --help` and `watch --once` on an empty folder answer at
    once; the dashboard reads tables)."""
    code = f"import sys, {modules}; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


# The modules that fit or load a network (they import Keras inside their functions).
NETWORK_MODULES = {"ml.model", "ml.train", "ml.promote", "ml.fitting", "ml.gate", "ml.backtest"}


def test_the_monitor_never_reaches_for_a_network():
    """ml.monitor reads forecasts from the warehouse: neither it nor anything it imports, at
    module level or inside a function, fits or loads a network (tests/test_monitor.py runs it in
    a fresh process and checks TensorFlow stays unloaded)."""
    graph = import_graph()
    assert not graph["ml.monitor"] & NETWORK_MODULES
    source = (PACKAGE / "monitor.py").read_text()
    for library in ("tensorflow", "keras"):
        assert f"import {library}" not in source and f"from {library}" not in source
