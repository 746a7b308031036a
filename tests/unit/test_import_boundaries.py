"""The folders are the architecture, and the imports keep it so: the two jobs share only the
contracts (schemas/), the model code (model/) and the streamrec core, never each other; the
contracts and the model code depend on nothing above them; the core does not reach into the
jobs, the producer or the benchmarks. Read from the sources, so a lazy import inside a function
counts too."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["tool"][
    "setuptools"
]["package-dir"]
# What the shared core is: the modules of streamrec/ that are not commands or the server (its
# lookups, the operator page).
ENTRY_POINTS = {"cli", "demo", "personal"} | {
    p.stem for p in (ROOT / "streamrec").glob("*.py") if p.stem.startswith(("serve", "console"))
}
CORE = {p.stem for p in (ROOT / "streamrec").glob("*.py")} - ENTRY_POINTS - {"__init__"}

# folder -> what its modules may import of streamrec besides themselves.
ALLOWED = {
    "schemas": {"core"},
    "model": {"schemas", "core"},
    "batch": {"schemas", "model", "core"},
    "streaming": {"schemas", "model", "core"},
    "core": {"schemas", "model", "core", "stack"},
}


def layer_of(module: str) -> str:
    """The folder a ``streamrec...`` module name lives in (``core`` for the shared core,
    ``entry`` for commands and the server)."""
    parts = module.split(".")
    if len(parts) > 1 and f"streamrec.{parts[1]}" in PACKAGE_DIRS and parts[1] != "streamrec":
        return PACKAGE_DIRS[f"streamrec.{parts[1]}"]
    if len(parts) == 1 or parts[1] in CORE:
        return "core"
    return "entry"


def imports_of(path: Path) -> set[str]:
    """Every streamrec module a source file imports (``from streamrec import x`` as
    ``streamrec.x``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("streamrec")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("streamrec"):
            module = node.module or ""
            found |= (
                {f"{module}.{a.name}" for a in node.names} if module == "streamrec" else {module}
            )
    return found


def sources(layer: str) -> list[Path]:
    if layer == "core":
        return [ROOT / "streamrec" / f"{name}.py" for name in sorted(CORE)]
    return sorted((ROOT / layer).glob("*.py"))


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {module} ({layer_of(module)})"
        for path in sources(layer)
        for module in sorted(imports_of(path))
        if layer_of(module) != layer and layer_of(module) not in ALLOWED[layer]
    ]
    assert not crossings, "\n".join(crossings)


def test_the_walk_sees_the_real_tree() -> None:
    assert {"redis_lists", "lookup", "errors", "storage"} <= CORE
    assert layer_of("streamrec.batch.job") == "batch"
    assert layer_of("streamrec.serve") == "entry" and layer_of("streamrec.errors") == "core"
    assert "streamrec.schemas.event_store" in imports_of(ROOT / "batch" / "prepare.py")
