"""The server's event loop and HTTP parser: uvloop and httptools when installed, else the standard ones."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from claude_code_proxy import cli


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not a dependency on Windows")
def test_serve_uses_uvloop_and_httptools_installed_with_the_proxy() -> None:
    # Both are dependencies of the package (pyproject.toml): an install without them is broken.
    assert importlib.util.find_spec("uvloop") is not None
    assert importlib.util.find_spec("httptools") is not None
    assert cli.server_choices() == ("uvloop", "httptools")


def test_serve_falls_back_to_asyncio_and_h11(monkeypatch: pytest.MonkeyPatch) -> None:
    installed: set[str] = set()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in installed else None)
    assert cli.server_choices() == ("asyncio", "h11")
    installed.add("httptools")
    assert cli.server_choices() == ("asyncio", "httptools")
    installed.add("uvloop")
    assert cli.server_choices() == ("uvloop", "httptools")
