"""The layering docs/architecture.md draws, checked on the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "claude_code_proxy"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every ``claude_code_proxy`` module ``path`` imports, at any depth of the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("claude_code_proxy")}


MODULES = {module_name(path): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def under(name: str, *packages: str) -> bool:
    return any(name == f"claude_code_proxy.{p}" or name.startswith(f"claude_code_proxy.{p}.") for p in packages)


def offenders(layer: str, *forbidden: str) -> dict[str, list[str]]:
    return {
        module: sorted(name for name in names if under(name, *forbidden))
        for module, names in MODULES.items()
        if under(module, layer) and any(under(name, *forbidden) for name in names)
    }


def test_the_package_was_read() -> None:
    assert {"claude_code_proxy.exchange", "claude_code_proxy.backend.claude",
            "claude_code_proxy.surfaces.anthropic.translate"} <= set(MODULES)


def test_chat_is_neutral() -> None:
    """The neutral request and answer know no surface, no backend, no web framework."""
    assert offenders("chat", "surfaces", "backend", "web", "exchange", "ops", "app", "config") == {}


def test_the_backend_knows_no_surface_and_no_http() -> None:
    assert offenders("backend", "surfaces", "web", "exchange", "ops", "app") == {}


@pytest.mark.parametrize("surface", sorted(p.name for p in (PACKAGE / "surfaces").iterdir()
                                           if (p / "__init__.py").exists()))
def test_surfaces_never_import_each_other(surface: str) -> None:
    others = [f"surfaces.{p.name}" for p in (PACKAGE / "surfaces").iterdir()
              if (p / "__init__.py").exists() and p.name != surface]
    assert offenders(f"surfaces.{surface}", *others, "backend") == {}


def test_translators_and_encoders_are_pure() -> None:
    """No I/O layer below a surface's translate and encode: no backend, exchange or app."""
    pure = {m: names for m, names in MODULES.items() if m.endswith((".translate", ".encode"))}
    assert len(pure) >= 4
    for module, names in pure.items():
        assert not [n for n in names if under(n, "backend", "exchange", "app", "ops")], module


def test_only_the_app_wires_the_layers_together() -> None:
    """Nothing imports the app factory: it is the top."""
    assert [m for m, names in MODULES.items() if "claude_code_proxy.app" in names and m != "claude_code_proxy.cli"] \
        == []
