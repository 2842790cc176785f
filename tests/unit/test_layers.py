"""Imports run one way: server -> stream_gateway -> commerce -> inventory, never back; the HTTP
transport touches no Redis or SQL; the load generators talk to the server only over its protocol."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ["server", "stream_gateway", "commerce", "inventory"]  # each may import those after it
OURS = set(LAYERS) | {"loadtest"}


def imports(path: Path) -> set[str]:
    """Top-level modules imported by a file (absolute imports; relative ones stay in the package)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_each_package_imports_only_the_layers_below_it() -> None:
    wrong = []
    for i, package in enumerate(LAYERS):
        allowed = set(LAYERS[i:])
        for path in sorted((ROOT / package).rglob("*.py")):
            for name in imports(path):
                top = name.split(".")[0]
                if top in OURS and top not in allowed:
                    wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_http_transport_touches_no_redis_or_sql() -> None:
    banned = ("redis", "sqlalchemy", "inventory.scripts", "inventory.store", "inventory.keys", "commerce.room_bus",
              "inventory.pools", "inventory.order_refunds", "inventory.presales", "inventory.saved")
    for module in ("api.py", "api_goods.py"):
        names = imports(ROOT / "server" / module)
        assert not [n for n in names if n.startswith(banned)], (module, names)


def test_load_generators_do_not_import_the_server() -> None:
    wrong = []
    for path in sorted((ROOT / "loadtest").rglob("*.py")):
        if path.name == "ab_parse.py":  # a micro-benchmark of one server function, on purpose
            continue
        if path.name == "cluster.py":  # measures the server's own stock client (Inventory.reserve_many, the
            continue                   # WAIT path) on the embedded server and cluster, on purpose
        wrong += [f"{path.name} imports {n}" for n in imports(path) if n.split(".")[0] in set(LAYERS)]
    assert not wrong, wrong
