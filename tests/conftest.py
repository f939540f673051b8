"""Shared fixtures: the fake upstream, an environment pointing the real CLI at it, and a server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anthropic
import pytest

from claude_code_proxy.config.settings import Settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer, serve

FAKE_KEY = "sk-ant-api03-fake-upstream-key"


@pytest.fixture(scope="session")
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as server:
        yield server


@pytest.fixture(scope="session", autouse=True)
def cli_env(upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Point every CLI the tests start at the fake upstream, with an empty config dir."""
    config_dir = tmp_path_factory.mktemp("claude-config")
    # Per-request directories go under this session's own temp dir, so leak checks see
    # only this session's directories.
    session_tmp = tmp_path_factory.mktemp("tmp")
    saved = dict(os.environ)
    for key in list(os.environ):
        if key.startswith(("CLAUDE_PROXY_", "ANTHROPIC_", "CLAUDE_CODE_")):
            del os.environ[key]
    os.environ.update({
        "ANTHROPIC_BASE_URL": upstream.url,
        "ANTHROPIC_API_KEY": FAKE_KEY,
        "CLAUDE_CONFIG_DIR": str(config_dir),
        "TMPDIR": str(session_tmp),
    })
    tempfile.tempdir = None  # re-read TMPDIR
    try:
        yield config_dir
    finally:
        os.environ.clear()
        os.environ.update(saved)
        tempfile.tempdir = None


def make_settings(**overrides: object) -> Settings:
    # No ledger unless a test asks for one: tests never write to the user's home.
    # No warm pool either (it starts CLIs in the background); its own tests turn it on.
    values: dict[str, object] = {"cli_max_retries": 0, "log_level": "WARNING", "usage_db": "", "warm_pool_size": 0}
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def server(cli_env: Path) -> Iterator[RunningServer]:
    with serve(make_settings()) as running:
        yield running


@pytest.fixture()
def anthropic_client(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0,
                               _strict_response_validation=True)


@pytest.fixture(autouse=True)
def _clear_upstream_log(upstream: FakeUpstream) -> None:
    upstream.clear()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL server for this test session (tests/support/postgres.py)."""
    from tests.support.postgres import MISSING, postgres_server, server_bin

    if server_bin() is None:
        # Not a skip: `make test` installs it first (make test-deps), so its absence is a defect.
        raise RuntimeError(MISSING)
    with postgres_server() as url:
        yield url


@pytest.fixture()
def pg_url(postgres_url: str) -> str:
    """An empty database of its own on the session's PostgreSQL server."""
    from tests.support.postgres import new_database

    return new_database(postgres_url)
