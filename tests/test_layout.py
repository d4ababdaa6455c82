"""The package layout that remote code needs: flat modules, relative imports only, no import cycle."""

from __future__ import annotations

import ast
import io
import re
import tokenize
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


# Every module of the package, the remote-code modules and the tools beside them.
CHECKED_MODULES = tuple(sorted(str(path.relative_to(PACKAGE).with_suffix("")) for path in PACKAGE.rglob("*.py")))

# A citation's year (Zhang et al., AAAI 2021; Koehn 2004) and a dataset's (Twitter-2015, twitter2017) are names.
YEAR = r"(19[5-9]\d|20[0-3]\d)"  # not a size such as 2048
NAMED_YEARS = re.compile(rf"[A-Z][A-Za-z-]+( et al\.)?,? ([A-Z]{{2,}} )?{YEAR}|[A-Za-z]-?{YEAR}")
LAB_NOTES = {
    "a date": re.compile(rf"\b{YEAR}\b"),
    "an issue number": re.compile(r"\bissues?\b|#\d", re.IGNORECASE),
    "a machine": re.compile(r"Xeon|EPYC|Ryzen|Core i\d|\b[AHB]\d00\b|\bM\d (Pro|Max)\b|\d+[- ]cores?\b|vCPU"),
    "a speed figure": re.compile(
        r"\d+(\.\d+)? ?(ms|s|µs|sec|seconds|it/s|samples/s)\b|\d+(\.\d+)? ?(x|times) (faster|slower)"
        r"|times (faster|slower)|(speed-?up|faster|slower) (of|by) \d",
        re.IGNORECASE,
    ),
}


def prose(path: Path) -> list[tuple[int, str]]:
    """The docstrings (and other string statements) and comments of a module, with their first line numbers."""
    source = path.read_text(encoding="utf-8")
    texts = [
        (node.lineno, node.value.value)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
    ]
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return texts + [(token.start[0], token.string) for token in tokens if token.type == tokenize.COMMENT]


def lab_notes(path: Path) -> list[str]:
    """``file:line: what`` for every docstring or comment of ``path`` that cites a date, an issue, a machine or a
    speed figure (those belong in BENCHMARKS.md)."""
    found = []
    for line, text in prose(path):
        cleaned = NAMED_YEARS.sub("", text)
        found += [f"{path.name}:{line}: {what}" for what, pattern in LAB_NOTES.items() if pattern.search(cleaned)]
    return found


def test_docstrings_and_comments_say_what_and_why_not_when_where_or_how_fast() -> None:
    paths = [PACKAGE / f"{module}.py" for module in CHECKED_MODULES]
    assert [path for path in paths if not path.exists()] == []
    assert [note for path in paths for note in lab_notes(path)] == []


def test_lab_notes_are_found() -> None:
    """The check can fail: it finds each kind of note, and lets citations and dataset names through."""
    notes = {
        "measured 2026-11-29": "a date",
        "see issue 23": "an issue number",
        "(#15)": "an issue number",
        "on a Xeon": "a machine",
        "16-core box": "a machine",
        "in 12 ms": "a speed figure",
        "3x faster": "a speed figure",
        "several times faster": "a speed figure",
    }
    for text, what in notes.items():
        assert [name for name, pattern in LAB_NOTES.items() if pattern.search(NAMED_YEARS.sub("", text))] == [what]
    names = ("Zhang et al., AAAI 2021", "Vaswani et al. 2017", "Koehn 2004", "Twitter-2015", "twitter2017", "2048-d")
    for text in names:
        assert not any(pattern.search(NAMED_YEARS.sub("", text)) for pattern in LAB_NOTES.values()), text


def test_only_the_package_init_registers_auto_classes() -> None:
    """One registration place: no checked module but ``__init__`` calls ``register`` or ``register_for_auto_class``."""
    calls = []
    for module in CHECKED_MODULES:
        tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
        calls += [
            f"{module}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("register", "register_for_auto_class")
        ]
    assert calls and all(call.startswith("__init__:") for call in calls), calls
