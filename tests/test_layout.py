"""The package layout that remote code needs: flat modules, relative imports only, no import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "modeling_umgf"


def relative_imports() -> dict[str, set[str]]:
    """Module -> the modules of the package it imports (relative imports, read from the source)."""
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1, f"{path.name}: `from {'.' * node.level}...` (the package must stay flat)"
                imported.add(node.module or "__init__")
            if isinstance(node, (ast.Import, ast.ImportFrom)) and not getattr(node, "level", 0):
                names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n and n.split(".")[0] == "modeling_umgf" for n in names), (
                    f"{path.name} imports the package by name: remote code needs `from .module import X`"
                )
        graph[path.stem] = imported
    return graph


def test_modules_import_each_other_relatively_and_without_cycles() -> None:
    graph = relative_imports()
    assert {"modeling_umgf", "processing_umgf", "pipeline_umgf", "schema"} <= set(graph)
    state: dict[str, str] = {}

    def visit(module: str, path: list[str]) -> None:
        if state.get(module) == "done":
            return
        assert state.get(module) != "open", f"import cycle: {' -> '.join([*path, module])}"
        state[module] = "open"
        for imported in graph.get(module, ()):
            if imported != "__init__":
                visit(imported, [*path, module])
        state[module] = "done"

    for module in graph:
        if module != "__init__":
            visit(module, [])
