"""The workspace's shape: services never import each other, and the core imports no service."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.infra import ROOT

SERVICES = ["ingest", "classifier", "router", "notifier", "api"]


def imported_modules(package_dir: Path) -> set[tuple[str, str]]:
    found = set()
    for path in package_dir.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found |= {(n.name.split(".")[0], str(path)) for n in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add((node.module.split(".")[0], str(path)))
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_never_imports_another(service: str) -> None:
    package = ROOT / "services" / service / "src" / f"plaza_{service}"
    assert package.is_dir()
    others = {f"plaza_{s}" for s in SERVICES if s != service} | {"plaza_cli"}
    bad = sorted(
        f"{where} imports {mod}" for mod, where in imported_modules(package) if mod in others
    )
    assert bad == []


def test_the_core_library_imports_no_service() -> None:
    apps = {f"plaza_{s}" for s in SERVICES} | {"plaza_cli"}
    bad = [
        f"{where} imports {mod}"
        for mod, where in imported_modules(ROOT / "lib/plaza/src/plaza")
        if mod in apps
    ]
    assert bad == []


def test_the_checker_would_notice_a_cross_import(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("from plaza_router.handler import RoutePost\nimport plaza_api\n")
    assert {m for m, _ in imported_modules(tmp_path)} == {"plaza_router", "plaza_api"}


@pytest.mark.parametrize("service", SERVICES)
def test_every_service_starts_one_way(service: str) -> None:
    main = ROOT / "services" / service / "src" / f"plaza_{service}" / "__main__.py"
    tree = ast.parse(main.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in tree.body)
