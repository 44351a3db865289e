"""The package's layers (docs/design.md, "Layers"): each subpackage imports only the ones below it, and no
module imports another that (directly or through others) imports it back, lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import sal

PACKAGE = Path(sal.__file__).parent
# bottom to top; the modules directly in sal/ (api, cli, ...) are the entry layer above them all
LAYERS = ["core", "metrics", "methods", "spec", "landscape", "training", "tracking", "queue", "stats", "report",
          "sweeps"]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def _imports() -> dict[str, set[str]]:
    """module -> the sal modules it imports at run time (imports under ``if TYPE_CHECKING`` do not run)."""
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join(base + ([node.module] if node.module else []))
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            found |= {t for t in targets if t in files and t != name}
        graph[name] = found
    return graph


def test_every_subpackage_is_a_known_layer():
    folders = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert folders == set(LAYERS)


def test_imports_only_go_down_the_layers():
    upward = sorted(f"{a} -> {b}" for a, targets in _imports().items() for b in targets
                    if _layer(b) > _layer(a))
    assert upward == []


def test_no_import_cycles():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


def test_the_check_sees_imports():
    """The graph is not empty by accident: the training loop imports its data and the core names."""
    graph = _imports()
    assert {"sal.training.data", "sal.core.names"} <= graph["sal.training.run"]
    assert "sal.training.plugins" in graph["sal.training.data"]
