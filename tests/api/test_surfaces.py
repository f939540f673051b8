"""Routes, guards, encoders and the registry through httpx's ASGI transport and a scripted backend.

Fast (no CLI, no sockets): what a route hands the exchange, how each surface renders an
answer and an error, and that the registry knows every route the app serves.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, Request

from claude_code_proxy.app import create_app
from claude_code_proxy.backend.scripted import ScriptedBackend, text_answer
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.exceptions import ClaudeProxyError, RateLimitError
from claude_code_proxy.surfaces.registry import Surface, default_surfaces
from tests.conftest import make_settings

ANTHROPIC_BODY = {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
OPENAI_BODY = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": "hi"}]}


def client_for(backend: ScriptedBackend, **settings: Any) -> httpx.AsyncClient:
    app = create_app(make_settings(**settings), backend)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture()
async def scripted() -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedBackend]]:
    backend = ScriptedBackend()
    async with client_for(backend) as client:
        yield client, backend


async def test_anthropic_answer_and_what_the_backend_was_handed(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/v1/messages", json={**ANTHROPIC_BODY, "system": "Be brief."})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == [{"type": "text", "text": "Hello from the script."}]
    assert body["stop_reason"] == "end_turn" and body["type"] == "message"
    [chat] = backend.requests
    assert chat.model == "claude-sonnet-4-5" and chat.system == "Be brief." and chat.max_tokens == 50
    assert chat.messages == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]


async def test_openai_answer_hoists_the_system_prompt(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/openai/v1/chat/completions", json=OPENAI_BODY)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o"
    assert body["choices"][0]["message"]["content"] == "Hello from the script."
    assert backend.requests[0].system == "Be brief."


async def test_anthropic_stream_frames(scripted: Any) -> None:
    client, _ = scripted
    response = await client.post("/v1/messages", json={**ANTHROPIC_BODY, "stream": True})
    names = [line[len("event: "):] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    text = "".join(json.loads(line[6:])["delta"]["text"] for line in response.text.splitlines()
                   if line.startswith("data: ") and '"text_delta"' in line)
    assert text == "Hello from the script."


async def test_openai_stream_ends_with_done(scripted: Any) -> None:
    client, _ = scripted
    response = await client.post("/openai/v1/chat/completions", json={**OPENAI_BODY, "stream": True})
    data = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert [c["choices"][0]["finish_reason"] for c in chunks].count("stop") == 1


@pytest.mark.parametrize(("path", "body"), [("/v1/messages", ANTHROPIC_BODY),
                                            ("/openai/v1/chat/completions", OPENAI_BODY)])
async def test_an_error_before_the_first_token_keeps_its_status_in_the_surface_shape(path: str, body: Any) -> None:
    backend = ScriptedBackend(lambda chat: [RateLimitError("slow down", retry_after=7)])
    async with client_for(backend) as client:
        for stream in (False, True):
            response = await client.post(path, json={**body, "stream": stream},
                                         headers={"x-request-id": "req_mine"})
            assert response.status_code == 429
            assert response.headers["retry-after"] == "7"
            assert response.headers["x-request-id"] == "req_mine"
            payload = response.json()
            if path.startswith("/openai"):
                assert payload["error"]["code"] == "rate_limit_exceeded"
            else:
                # The body's request id is the request's own, the one in the header and the log.
                assert payload["request_id"] == "req_mine"
                assert payload["error"]["type"] == "rate_limit_error"


async def test_a_failure_mid_stream_is_an_error_event() -> None:
    backend = ScriptedBackend(lambda chat: [*text_answer("partial")[:3], ClaudeProxyError("boom")])
    async with client_for(backend) as client:
        response = await client.post("/v1/messages", json={**ANTHROPIC_BODY, "stream": True})
        assert response.status_code == 200
        assert "event: error" in response.text and "message_stop" not in response.text


async def test_bad_input_spawns_nothing_and_is_a_400_in_the_surface_shape(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/v1/messages", json={"model": "claude-sonnet-4-5", "messages": []})
    assert response.status_code == 400 and response.json()["type"] == "error"
    response = await client.post("/openai/v1/chat/completions", json={"model": "gpt-4o", "messages": "x"})
    assert response.status_code == 400 and "error" in response.json()
    assert backend.requests == []


async def test_guards_run_before_the_route(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/v1/messages", content=b"{}", headers={"content-type": "text/plain"})
    assert response.status_code == 415
    response = await client.post("/v1/messages", json=ANTHROPIC_BODY, headers={"host": "evil.example"})
    assert response.status_code == 421
    assert backend.requests == []


async def test_the_api_key_guard_uses_the_registry_public_paths() -> None:
    async with client_for(ScriptedBackend(), api_key="sekret") as client:
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/v1/models")).status_code == 401
        assert (await client.get("/openai/v1/models")).status_code == 401
        ok = await client.get("/v1/models", headers={"authorization": "Bearer sekret"})
        assert ok.status_code == 200


def _key(route: Any) -> tuple[str, frozenset[str]]:
    return route.path, frozenset(getattr(route, "methods", None) or ())


def _flatten(routes: list[Any]) -> list[Any]:
    """Every endpoint route, through included routers (FastAPI keeps those as wrappers)."""
    out = []
    for route in routes:
        inner = getattr(route, "original_router", None)
        out += _flatten(inner.routes) if inner is not None else [route]
    return out


def test_every_route_the_app_serves_is_known_to_the_registry() -> None:
    app = create_app(make_settings(), ScriptedBackend())
    registry = app.state.registry
    served = _flatten(app.router.routes)
    assert len(served) >= 10, "the app serves its routes"
    unknown = []
    for route in served:
        # The surface whose prefix owns the path must be the one that declared the route.
        owner = registry.for_path(route.path.split("{")[0].rstrip("/") or "/")
        if _key(route) not in {_key(r) for r in _flatten(owner.routes())}:
            unknown.append(route.path)
    assert unknown == []
    # Every model route, public path and quiet path the registry lists is served.
    paths = {route.path for route in served} | {"/dashboard/dashboard.js", "/dashboard/dashboard.css"}
    assert registry.model_paths <= paths
    assert registry.public_paths <= paths
    assert registry.quiet_paths <= paths


def test_a_route_outside_the_registry_is_caught() -> None:
    app = create_app(make_settings(), ScriptedBackend())

    @app.get("/v1/sneaky")
    async def sneaky() -> dict[str, str]:
        return {}

    registry = app.state.registry
    route = next(r for r in _flatten(app.router.routes) if r.path == "/v1/sneaky")
    owner = registry.for_path("/v1/sneaky")
    assert _key(route) not in {_key(r) for r in _flatten(owner.routes())}


def toy_surface() -> Surface:
    """A whole surface in a few lines: one route, one error shape, one registry entry."""
    router = APIRouter()

    @router.post("/toy/ask")
    async def ask(request: Request) -> Any:
        from claude_code_proxy.chat.answer import Answer
        from claude_code_proxy.exchange import exchange
        from claude_code_proxy.web.body import json_object

        body = await json_object(request)
        chat = ChatRequest(model="sonnet", messages=[{"role": "user", "content": [
            {"type": "text", "text": str(body.get("q", ""))}]}], max_tokens=10)

        def render(answer: Answer) -> dict[str, Any]:
            return {"a": "".join(b.get("text", "") for b in answer.content)}

        class Encoder:
            def __init__(self, names: dict[str, str]) -> None:
                pass

            def feed(self, event: dict[str, Any]) -> list[bytes]:
                return []

            def finish(self, completion: Any) -> list[bytes]:
                return []

            def error(self, error: ClaudeProxyError) -> list[bytes]:
                return []

        return await exchange(request, chat, requested_model="toy", stream=False, encoder=Encoder, render=render)

    def error_body(error: ClaudeProxyError, request_id: str) -> tuple[int, dict[str, Any]]:
        return error.status_code, {"toy_error": error.message, "id": request_id}

    return Surface(name="toy", label="toy", prefixes=("/toy",), router=router, error_body=error_body,
                   model_paths=frozenset({"/toy/ask"}))


async def test_a_toy_surface_needs_one_package_and_one_registry_entry() -> None:
    recorded: list[Any] = []
    backend = ScriptedBackend()
    app = create_app(make_settings(), backend, surfaces=[*default_surfaces(), toy_surface()])
    app.state.ledger.record = recorded.append  # type: ignore[method-assign]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        response = await client.post("/toy/ask", json={"q": "hi"})
        assert response.json() == {"a": "Hello from the script."}
        missing = await client.get("/toy/nothing", headers={"x-request-id": "req_toy"})
        assert missing.status_code == 404 and missing.json()["toy_error"].startswith("No route")
        assert missing.json()["id"] == "req_toy"
    # The model route reached the metrics and the ledger under the surface's label.
    assert [r.surface for r in recorded] == ["toy"]
    assert backend.requests[0].messages[0]["content"][0]["text"] == "hi"




@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("body", [
    {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "n": 1},
    {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "response_format": {"type": "json_object"}},
    {"model": "gpt-4o", "max_completion_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
])
async def test_an_openai_body_on_the_anthropic_path_points_at_openai_v1(scripted: Any, path: str, body: Any) -> None:
    client, backend = scripted
    response = await client.post(path, json=body)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "/openai/v1" in message and "OpenAI Chat Completions" in message, message
    assert backend.requests == []


async def test_an_anthropic_body_with_a_mistake_gets_no_openai_hint(scripted: Any) -> None:
    client, _ = scripted
    response = await client.post("/v1/messages", json={"model": "claude-sonnet-4-5",
                                                       "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "max_tokens" in message and "/openai/v1" not in message
