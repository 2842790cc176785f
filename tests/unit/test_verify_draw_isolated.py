"""``verify_draw`` is the checker viewers run on their own machine: it must stand alone, importing
only the Python standard library (nothing of the server's packages, nothing installed)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVER_PACKAGES = {"server", "stream_gateway", "commerce", "inventory", "loadtest"}


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module.split(".")[0])
    return out


def test_verify_draw_imports_only_the_standard_library() -> None:
    files = sorted((ROOT / "verify_draw").rglob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "__main__.py"}
    wrong = []
    for path in files:
        for name in _imports(path):
            if name == "verify_draw":
                continue
            if name in SERVER_PACKAGES or name not in sys.stdlib_module_names:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, wrong


def test_no_server_package_imports_it_but_the_cli() -> None:
    """The server may call the checker (``livesale verify-draw``); the layers below it never do."""
    users = []
    for package in ("stream_gateway", "commerce", "inventory"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if "verify_draw" in _imports(path):
                users.append(str(path.relative_to(ROOT)))
    assert not users, users
