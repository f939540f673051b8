"""The upstream relay (backend/relay.py): the CLIs' calls pass through it unchanged, and its
gate lets one model call per request reach upstream, whatever the CLI does on its own.

The relay is driven by a real HTTP client and by the real CLI, against the fake upstream.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio
from claude_agent_sdk import ClaudeSDKClient, ResultMessage

from claude_code_proxy.backend.options import build_options
from claude_code_proxy.backend.relay import Gate, UpstreamRelay, tls_context
from claude_code_proxy.chat.request import ChatRequest
from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream, refusing_url

MODEL = "claude-sonnet-4-5"


@pytest_asyncio.fixture(loop_scope="function")
async def relay(upstream: FakeUpstream) -> AsyncIterator[UpstreamRelay]:
    relay = UpstreamRelay()
    await relay.start()
    try:
        yield relay
    finally:
        await relay.aclose()


def ask(marker: str, directive: str = "[[say:hello]]", max_tokens: int = 50) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": max_tokens, "stream": True,
            "messages": [{"role": "user", "content": f"{marker} {directive}"}]}


def calls_for(upstream: FakeUpstream, marker: str) -> list[dict[str, Any]]:
    return [call.body for call in upstream.messages_calls if marker in json.dumps(call.body["messages"])]


async def test_one_model_call_per_opening_passes_and_the_rest_is_refused_here(
    relay: UpstreamRelay, upstream: FakeUpstream
) -> None:
    base, gate = relay.register(upstream.url)
    marker = f"m{uuid.uuid4().hex[:10]}"
    headers = {"x-api-key": "sk-test", "anthropic-version": "2023-06-01", "x-extra": "kept"}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30) as client:
        # Shut between requests: nothing goes upstream.
        refused = await client.post("/v1/messages", json=ask(marker))
        assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
        assert calls_for(upstream, marker) == []

        gate.open()
        answer = await client.post("/v1/messages?beta=true", json=ask(marker))
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        assert "event: message_stop" in answer.text and "hello" in answer.text
        # The call arrived as sent: path, query, headers (the hop-by-hop ones aside), body.
        [call] = [c for c in upstream.messages_calls if marker in json.dumps(c.body)]
        assert call.path == "/v1/messages?beta=true" and call.body == ask(marker)
        assert call.headers["x-api-key"] == "sk-test" and call.headers["x-extra"] == "kept"
        assert call.headers["host"] == upstream.url.removeprefix("http://")

        # Answered: a second call in the same request (a continuation) never leaves.
        again = await client.post("/v1/messages", json=ask(marker))
        assert again.status_code == 400 and "one model call upstream per client request" in again.text
        assert len(calls_for(upstream, marker)) == 1 and (gate.calls, gate.refused) == (1, 1)

        # Anything but a model call passes whatever the gate says.
        gate.shut()
        assert (await client.post("/v1/messages/count_tokens", json=ask(marker))).json()["input_tokens"] > 0
        assert (await client.get("/v1/models")).status_code == 200

        # The next request opens it again.
        gate.open()
        assert (await client.post("/v1/messages", json=ask(marker))).status_code == 200
        assert len(calls_for(upstream, marker)) == 2


@pytest.mark.parametrize(("directive", "status", "shows"), [
    ("[[error:529]]", 529, "overloaded_error"),  # upstream's own refusal, passed on
    # Overloaded after a 200: a failed call all the same (the CLI would retry it without the relay).
    ("[[say:a b c d]] [[midstream_error]]", 200, "overloaded_error"),
], ids=["refused", "error_event_after_200"])
async def test_a_failed_call_leaves_the_gate_open_for_the_clis_own_retry(
    relay: UpstreamRelay, upstream: FakeUpstream, directive: str, status: int, shows: str
) -> None:
    base, gate = relay.register(upstream.url)
    marker = f"m{uuid.uuid4().hex[:10]}"
    gate.open()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        failed = await client.post("/v1/messages", json=ask(marker, directive))
        assert failed.status_code == status and shows in failed.text
        assert gate.state == "open"
        assert (await client.post("/v1/messages", json=ask(marker))).status_code == 200
        assert gate.state == "answered" and gate.calls == 2 and len(calls_for(upstream, marker)) == 2


async def test_an_unknown_path_is_404_and_an_unreachable_upstream_drops_the_connection() -> None:
    relay = UpstreamRelay()
    await relay.start()
    try:
        base, gate = relay.register(refusing_url())
        async with httpx.AsyncClient(timeout=30) as client:
            unknown = await client.post(f"http://127.0.0.1:{relay.port}/not-a-token/v1/messages", json={})
            assert unknown.status_code == 404 and unknown.headers["connection"] == "close"
            gate.open()
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"{base}/v1/messages", json=ask("x"))
        assert gate.fault == "the connection was refused" and gate.state == "open"
        relay.forget(base)
        assert relay.gates == {}
    finally:
        await relay.aclose()


async def test_the_clis_continuation_after_max_tokens_is_refused(
    relay: UpstreamRelay, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The real CLI, left to run after an answer cut at max_tokens (the proxy would kill it),
    asks the model to go on; the gate refuses, and upstream sees the one call."""
    base, gate = relay.register(upstream.url)
    marker = f"m{uuid.uuid4().hex[:10]}"
    request = ChatRequest(model=MODEL, max_tokens=40,
                          messages=[{"role": "user", "content": [{"type": "text", "text": f"{marker} [[long:300]]"}]}])
    (tmp_path / "tmp").mkdir()
    options = build_options(make_settings(), None, request, tmp_path, base)
    result: ResultMessage | None = None
    gate.open()
    async with ClaudeSDKClient(options) as client:
        await client.query(f"{marker} [[long:300]]")
        async for message in client.receive_response():
            if isinstance(message, ResultMessage):
                result = message
    assert result is not None
    assert gate.calls == 1 and gate.refused >= 1, gate
    [body] = calls_for(upstream, marker)
    assert body["max_tokens"] == 40


def test_a_gate_admits_one_call_per_opening_and_ignores_calls_of_an_earlier_one() -> None:
    gate = Gate()
    assert gate.admit() is None
    gate.open()
    first = gate.admit()
    assert first is not None and gate.admit() is None
    gate.answered(first, 200)
    assert gate.state == "answered" and gate.admit() is None
    gate.failed(first)  # its answer turned out to be an error event: the CLI may retry
    assert gate.state == "open"
    gate.open()
    second = gate.admit()
    assert second is not None
    gate.failed(second, "the connection was reset")
    assert gate.state == "open" and gate.fault == "the connection was reset"
    # A call of an abandoned request that comes back late changes nothing in the next one.
    gate.open()
    third = gate.admit()
    gate.answered(second, 529)
    gate.failed(second, "the connection was refused")
    assert gate.state == "calling" and gate.fault is None and third is not None
    gate.answered(third, 200)
    assert gate.state == "answered"


async def test_an_answer_that_breaks_off_leaves_the_gate_open_and_the_cli_sees_the_break() -> None:
    async def half_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        await writer.drain()
        writer.close()  # before the last chunk

    server = await asyncio.start_server(half_answer, "127.0.0.1", 0)
    relay = UpstreamRelay()
    await relay.start()
    try:
        base, gate = relay.register(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
        gate.open()
        async with httpx.AsyncClient(timeout=30) as client:
            with pytest.raises(httpx.RemoteProtocolError):
                await client.post(f"{base}/v1/messages", json=ask("x"))
        assert gate.state == "open" and gate.fault is None  # reached, then broken: not "unreachable"
    finally:
        await relay.aclose()
        server.close()


def test_the_relay_trusts_the_certificates_the_cli_would(tmp_path: Path) -> None:
    """A network that inspects TLS gives the CLI its certificate with NODE_EXTRA_CA_CERTS;
    the relay, which now makes the CLI's connections, trusts it too."""
    key, cert = tmp_path / "ca.key", tmp_path / "ca.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=inspecting-proxy-test-ca"],
                   check=True, capture_output=True)

    def names(context: ssl.SSLContext) -> set[str]:
        return {value for ca in context.get_ca_certs() for rdn in ca["subject"] for _, value in rdn}

    assert "inspecting-proxy-test-ca" in names(tls_context({"NODE_EXTRA_CA_CERTS": str(cert)}))
    tls_context({"SSL_CERT_FILE": str(tmp_path / "missing.pem"), "NODE_EXTRA_CA_CERTS": str(tmp_path / "gone")})
