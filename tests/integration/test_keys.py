"""Named keys end to end: the ``keys`` command as a user runs it, a running server with the
real CLI against the fake upstream, and the real SDKs as clients."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anthropic
import openai
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.proxy_process import free_port, proxy_env
from tests.support.server import serve


def keys_command(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "claude_code_proxy", "keys", *args],
        env=proxy_env({"CLAUDE_PROXY_USAGE_DB": str(db)}), capture_output=True, text=True, timeout=60, check=False,
    )


def test_a_key_with_an_rpm_limit_through_both_sdks(tmp_path: Path, upstream: FakeUpstream) -> None:
    db = tmp_path / "usage.db"
    added = keys_command(db, "add", "overnight-agent", "--rpm", "1")
    assert added.returncode == 0, added.stderr
    key = added.stdout.rstrip("\n").splitlines()[-1]
    assert key.startswith("ccp_") and " " not in key

    with serve(make_settings(usage_db=str(db))) as server:
        claude = anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0,
                                     _strict_response_validation=True)
        gpt = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key=key, max_retries=0,
                            _strict_response_validation=True)
        reply = claude.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        assert reply.content and len(upstream.messages_calls) == 1
        with pytest.raises(openai.RateLimitError) as refused:
            gpt.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
        assert "requests per minute (--rpm)" in str(refused.value)
        assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60
        assert len(upstream.messages_calls) == 1, "a refused request reached upstream"

        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=server.url, api_key="ccp_unknown", max_retries=0).messages.create(
                model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])

        revoked = keys_command(db, "revoke", "overnight-agent")
        assert revoked.returncode == 0, revoked.stderr
        deadline = time.monotonic() + 10
        while True:
            try:
                claude.models.list()
            except anthropic.AuthenticationError:
                break
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.05)

        ledger = server.app.state.ledger  # type: ignore[attr-defined]
        assert ledger.flush()
        rows = [(r.key_name, r.status) for r in ledger.recent(10) if r.route != "/v1/models"]
        assert ("overnight-agent", 200) in rows and ("overnight-agent", 429) in rows
        assert key not in db.read_bytes().decode("latin-1")

    listed = keys_command(db, "list")
    assert listed.returncode == 0 and "No named keys" in listed.stdout
    # Revoking the last key leaves the server closed, not open.
    with serve(make_settings(usage_db=str(db))) as server:
        with pytest.raises(anthropic.AuthenticationError):
            anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0).models.list()


def test_a_replica_that_cannot_open_its_shared_database_does_not_start(tmp_path: Path) -> None:
    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    started = subprocess.run(
        [sys.executable, "-m", "claude_code_proxy", "serve", "--port", str(free_port())],
        env=proxy_env({"CLAUDE_PROXY_DATABASE_URL": "postgresql://proxy:s3cret@127.0.0.1:1/proxy"}),
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )
    assert started.returncode == 2, started.stderr
    assert "CLAUDE_PROXY_DATABASE_URL" in started.stderr and "cannot open the database" in started.stderr
    assert "s3cret" not in started.stderr + started.stdout and "Traceback" not in started.stderr
