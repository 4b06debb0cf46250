"""Imports point one way: bridge -> ven, policies; ven -> the policy's event model only;
policies imports neither. ``ven/`` holds one sub-package per OpenADR version and, beside
them, only what both share."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    """The modules a file imports, also under ``if TYPE_CHECKING`` and inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


def test_policies_import_neither_ven_nor_bridge():
    for path in sorted((ROOT / "policies").rglob("*.py")):
        reached = {n for n in _imports(path) if _top(n) in ("ven", "bridge")}
        assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}"


def test_ven_imports_only_the_policys_event_model_and_no_bridge():
    for path in sorted((ROOT / "ven").rglob("*.py")):
        names = _imports(path)
        assert not {n for n in names if _top(n) == "bridge"}, path
        policies = {n for n in names if _top(n) == "policies"}
        assert policies <= {"policies.events"}, f"{path.relative_to(ROOT)} imports {policies}"


def test_one_sub_package_per_openadr_version_and_only_shared_modules_beside_them():
    ven = ROOT / "ven"
    assert sorted(p.name for p in ven.iterdir() if p.is_dir() and p.name != "__pycache__") \
        == ["oadr20b", "oadr3"]
    assert sorted(p.name for p in ven.glob("*.py")) == ["__init__.py", "interface.py",
                                                        "shared.py"]
    for version, other in (("oadr20b", "ven.oadr3"), ("oadr3", "ven.oadr20b")):
        for path in sorted((ven / version).rglob("*.py")):
            reached = {n for n in _imports(path) if n.startswith(other)}
            assert not reached, f"{path.relative_to(ROOT)} imports {sorted(reached)}"
    for shared in ("interface.py", "shared.py"):
        assert not {n for n in _imports(ven / shared) if n.startswith(("ven.oadr", "openleadr"))}
