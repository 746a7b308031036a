"""Small modules and short functions, so the next engineer can read each in one sitting: no
source module over about 400 lines and no function over about 60 of its own lines (a nested
function, such as a route inside its router's factory, counts on its own). Tests are exempt."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("streamrec", "streamrec/commands", "schemas", "streaming", "batch", "model")
FOLDERS += ("producer", "stack", "bench")
# "About": the limits leave room for a docstring or an argument list wrapped by the formatter.
MODULE_LINES, FUNCTION_LINES = 430, 75
SOURCES = sorted(p for folder in FOLDERS for p in (ROOT / folder).glob("*.py"))


def own_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's lines less those of the functions and classes defined inside it."""
    nested, todo = 0, list(ast.iter_child_nodes(function))
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            nested += (node.end_lineno or node.lineno) - start + 1
        else:
            todo.extend(ast.iter_child_nodes(node))
    return (function.end_lineno or function.lineno) - function.lineno + 1 - nested


def test_the_walk_reads_the_tree() -> None:
    assert len(SOURCES) > 100
    assert ROOT / "streamrec" / "serve.py" in SOURCES


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_modules_and_functions_stay_small(path: Path) -> None:
    text = path.read_text("utf-8")
    assert len(text.splitlines()) <= MODULE_LINES, f"{len(text.splitlines())} lines"
    long = [
        f"{node.name} (line {node.lineno}): {own_lines(node)} lines"
        for node in ast.walk(ast.parse(text))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and own_lines(node) > FUNCTION_LINES
    ]
    assert not long, "; ".join(long)
