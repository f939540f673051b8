"""A limited account is refused before anything runs, through the app (scripted backend)."""

from __future__ import annotations

import time

import httpx
import pytest

from claude_code_proxy.app import create_app
from claude_code_proxy.backend.scripted import ScriptedBackend
from tests.api.test_surfaces import ANTHROPIC_BODY, OPENAI_BODY
from tests.conftest import make_settings
from tests.unit.test_quota import state


@pytest.mark.parametrize("path", ["/v1/messages", "/openai/v1/chat/completions"])
async def test_a_limited_account_is_refused_before_anything_runs(path: str) -> None:
    backend = ScriptedBackend()
    backend.rate_limit = {**state("rejected", 0), "resets_at": time.time() + 600}
    app = create_app(make_settings(), backend)
    body = ANTHROPIC_BODY if path == "/v1/messages" else OPENAI_BODY
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        for stream in (False, True):
            response = await client.post(path, json={**body, "stream": stream})
            assert response.status_code == 429
            assert 590 <= int(response.headers["retry-after"]) <= 600
            assert "weekly limit is reached" in response.json()["error"]["message"]
        shown = (await client.get("/v1/usage/quota")).json()
        assert shown["limited"] is True
        backend.rate_limit["resets_at"] = time.time() - 1  # the window reset
        assert (await client.post(path, json=body)).status_code == 200
    assert len(backend.requests) == 1
