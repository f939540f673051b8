"""The request guards (issue 5, bar tests 21, 23-31) through a real server and real clients:
bind policy, API key (Bearer / x-api-key, constant time, never from the query string, every
route), Host allow-list, Origin and CORS, JSON-only POST bodies, and size limits.
"""

from __future__ import annotations

import hmac
import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from fastapi.routing import APIRoute

from claude_code_proxy.cli import bind_problem, is_loopback
from tests.conftest import make_settings
from tests.support.fake_upstream import DEFAULT_TEXT
from tests.support.proxy_process import free_port, head, proxy_env, proxy_process, raw_request, serve_command
from tests.support.server import RunningServer, serve

KEY = "test-proxy-key-0123456789"
ORIGIN = "https://app.example"
EVIL = "https://evil.example"
MAX_BODY = 64 * 1024
CHAT = {"model": "sonnet", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
OPENAI_CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
PUBLIC = ["/health", "/health/live", "/dashboard", "/dashboard/dashboard.js", "/dashboard/dashboard.css"]


@pytest.fixture(scope="module")
def secured(cli_env: Path) -> Iterator[RunningServer]:
    settings = make_settings(api_key=KEY, cors_origins=[ORIGIN], max_body_bytes=MAX_BODY)
    with serve(settings) as running:
        yield running


def spawned(server: RunningServer) -> int:
    return int(server.app.state.backend.spawned)  # type: ignore[attr-defined]


def bearer(key: str = KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def assert_shape(path: str, payload: dict[str, Any]) -> None:
    """The route's error shape: OpenAI's on /openai paths, Anthropic's elsewhere."""
    if path.startswith("/openai/"):
        assert set(payload) == {"error"} and {"message", "type", "param", "code"} <= set(payload["error"])
    else:
        assert payload["type"] == "error" and {"type", "message"} <= set(payload["error"])


def without_request_id(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "request_id"}


# -- bind policy (23) ---------------------------------------------------------------------

def test_bind_problem_allows_loopback_and_refuses_exposed_addresses_without_a_key() -> None:
    for host in ("127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]"):
        assert is_loopback(host), host
        assert bind_problem(host, has_key=False) is None, host
    for host in ("0.0.0.0", "::", "[::]", "192.168.1.10", "10.0.0.1", "example.com", ""):
        problem = bind_problem(host, has_key=False)
        assert problem is not None, host
        assert "CLAUDE_PROXY_API_KEY" in problem and "127.0.0.1" in problem
        assert bind_problem(host, has_key=True) is None, host


def test_exposed_bind_without_a_key_exits_at_once_with_a_clear_message(tmp_path: Path) -> None:
    # A server that started would run until killed: the timeout is only a hang guard.
    result = subprocess.run(
        serve_command(free_port(), "--host", "0.0.0.0"), cwd=tmp_path, capture_output=True, timeout=60,
        env=proxy_env({"CLAUDE_PROXY_API_KEY": None}),
    )
    assert result.returncode != 0
    message = result.stderr.decode()
    assert "0.0.0.0" in message and "CLAUDE_PROXY_API_KEY" in message
    assert "Traceback" not in message


def test_exposed_bind_with_a_key_starts_requires_the_key_and_stops_on_sigterm(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"CLAUDE_PROXY_API_KEY": KEY}
    with proxy_process(tmp_path, env, args=("--host", "0.0.0.0")) as proxy:
        assert httpx.get(f"{proxy.url}/health", timeout=30).status_code == 200
        refused = httpx.get(f"{proxy.url}/v1/models", timeout=10)
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert httpx.get(f"{proxy.url}/v1/models", headers=bearer(), timeout=10).status_code == 200
        proxy.sigterm()
        assert proxy.proc.wait(timeout=15) == 0


# -- authentication (24, 26) ------------------------------------------------------------------

WRONG_AUTH: dict[str, dict[str, str]] = {
    "no header": {},
    "wrong bearer": {"authorization": "Bearer wrong-key"},
    "basic": {"authorization": "Basic " + "dXNlcjp0ZXN0LXByb3h5LWtleS0wMTIzNDU2Nzg5"},
    "empty bearer": {"authorization": "Bearer "},
    "bearer without a key": {"authorization": "Bearer"},
    "key without scheme": {"authorization": KEY},
    "key with whitespace and more after it": {"x-api-key": KEY + " x"},
    "prefix of the key": {"x-api-key": KEY[:-1]},
    "wrong x-api-key": {"x-api-key": "wrong-key"},
    "right bearer, wrong x-api-key": {"authorization": f"Bearer {KEY}", "x-api-key": "wrong-key"},
    "wrong bearer, right x-api-key": {"authorization": "Bearer wrong-key", "x-api-key": KEY},
}


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/messages", CHAT), ("/v1/chat/completions", CHAT), ("/openai/v1/chat/completions", OPENAI_CHAT),
])
def test_every_auth_failure_gets_the_same_401_in_the_routes_shape(
    secured: RunningServer, path: str, body: dict[str, Any]
) -> None:
    before = spawned(secured)
    bodies = []
    for name, headers in WRONG_AUTH.items():
        data = json.dumps(body).encode()
        response = raw_request(secured.port, head("POST", path, {
            "Host": f"127.0.0.1:{secured.port}", "Content-Type": "application/json",
            "Content-Length": str(len(data)), "Connection": "close", **headers}), data)
        assert response.status == 401, (name, response.body)
        assert response.headers["www-authenticate"] == "Bearer", name
        payload: Any = response.json()
        if path.startswith("/openai/"):
            assert payload["error"]["type"] == "invalid_request_error"
            assert payload["error"]["code"] == "invalid_api_key"
        else:
            assert payload["type"] == "error" and payload["error"]["type"] == "authentication_error"
        assert KEY.encode() not in response.body and KEY[:8].encode() not in response.body
        bodies.append(without_request_id(payload))
    assert all(b == bodies[0] for b in bodies), "every failure must look the same"
    assert spawned(secured) == before


def test_whitespace_around_or_inside_the_key_never_makes_a_wrong_key_match(secured: RunningServer) -> None:
    # HTTP strips a header value's outer whitespace (RFC 9110 OWS) before the app sees it;
    # whitespace that survives is part of the presented key and must not be trimmed away.
    for headers in ({"authorization": f"Bearer  {KEY}"}, {"x-api-key": f"{KEY} {KEY}"},
                    {"x-api-key": f"{KEY}\t."}, {"authorization": f"Bearer {KEY} ."}):
        assert httpx.get(f"{secured.url}/v1/models", headers=headers, timeout=10).status_code == 401, headers


def test_both_correct_forms_are_accepted(secured: RunningServer) -> None:
    for headers in (bearer(), {"x-api-key": KEY}, {"authorization": f"bearer {KEY}"},
                    {"authorization": f"Bearer {KEY}", "x-api-key": KEY}):
        for path in ("/v1/models", "/openai/v1/models", "/usage"):
            response = httpx.get(f"{secured.url}{path}", headers=headers, timeout=10)
            assert response.status_code == 200, (headers, path, response.text)


@pytest.mark.parametrize("query", [f"api_key={KEY}", f"key={KEY}", f"%6Bey={KEY}", f"x-api-key={KEY}",
                                   f"authorization=Bearer%20{KEY}", f"access_token={KEY}", f"token={KEY}"])
def test_a_key_in_the_query_string_is_never_accepted(secured: RunningServer, query: str) -> None:
    assert httpx.get(f"{secured.url}/v1/models?{query}", timeout=10).status_code == 401
    response = httpx.post(f"{secured.url}/openai/v1/chat/completions?{query}", json=OPENAI_CHAT, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


# -- every route is protected (27) ------------------------------------------------------------

GET_PATHS = ["/v1/models", "/v1/models/sonnet", "/openai/v1/models", "/openai/v1/models/gpt-4o", "/usage",
             "/usage?days=1", "/dashboard/other.js", "/docs", "/redoc", "/openapi.json", "/metrics", "/ready",
             "/no/such/route", "/v1/messages", "/openai/v1/chat/completions", "/v1", "/", "/health/../v1/models",
             "/HEALTH", "/health/", "/v1/messages/count_tokens"]
POST_PATHS = ["/v1/messages", "/v1/chat/completions", "/openai/v1/chat/completions", "/v1/messages/count_tokens",
              "/v1/models", "/health/../v1/messages", "/no/such/route", "/openai/v1/completions", "/usage"]


def api_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, set[str]]]:
    """(path, methods) of every route, through included routers of any FastAPI version."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield prefix + route.path, set(route.methods)
        elif getattr(route, "original_router", None) is not None:
            context = getattr(route, "include_context", None)
            yield from api_routes(route.original_router.routes, prefix + (getattr(context, "prefix", "") or ""))


def test_every_route_but_health_and_the_dashboard_page_needs_the_key(secured: RunningServer) -> None:
    before = spawned(secured)
    for path in PUBLIC:
        assert httpx.get(f"{secured.url}{path}", timeout=30).status_code == 200, path
    for path in GET_PATHS:
        assert httpx.get(f"{secured.url}{path}", timeout=10).status_code == 401, path
        assert httpx.request("DELETE", f"{secured.url}{path}", timeout=10).status_code == 401, path
    for path in POST_PATHS:
        response = httpx.post(f"{secured.url}{path}", json=CHAT, timeout=10)
        assert response.status_code == 401, path
    # Every route the app declares, with its parameters filled in.
    routes = list(api_routes(secured.app.routes))  # type: ignore[attr-defined]
    assert {"/v1/messages", "/openai/v1/chat/completions", "/usage", "/health"} <= {p for p, _ in routes}
    for route_path, methods in routes:
        path = re.sub(r"\{[^}]+\}", "x", route_path)
        for method in methods:
            response = httpx.request(method, f"{secured.url}{path}", json=CHAT if method == "POST" else None,
                                     timeout=30)
            if route_path in PUBLIC:
                assert response.status_code == 200, (method, path)
            else:
                assert response.status_code == 401, (method, path, response.status_code)
    assert spawned(secured) == before


def test_docs_and_openapi_are_off_even_with_the_key(secured: RunningServer) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(f"{secured.url}{path}", headers=bearer(), timeout=10).status_code == 404, path


# -- the official SDKs (24) ---------------------------------------------------------------------

def anthropic_client(server: RunningServer, monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> anthropic.Anthropic:
    # The SDK falls back to ANTHROPIC_API_KEY / ANTHROPIC_AUTH_TOKEN (set for the CLI): not here.
    with monkeypatch.context() as patch:
        patch.delenv("ANTHROPIC_API_KEY", raising=False)
        patch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
        return anthropic.Anthropic(base_url=server.url, max_retries=0, _strict_response_validation=True, **kwargs)


def test_anthropic_sdk_with_a_bearer_token(secured: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = anthropic_client(secured, monkeypatch, auth_token=KEY)
    message = client.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    with client.messages.stream(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}]) as s:
        assert "".join(s.text_stream) == DEFAULT_TEXT
    assert client.models.list().data
    with pytest.raises(anthropic.AuthenticationError):
        anthropic_client(secured, monkeypatch, auth_token="wrong").models.list()


def test_anthropic_sdk_with_x_api_key(secured: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    client = anthropic_client(secured, monkeypatch, api_key=KEY)
    message = client.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.content[0].text == DEFAULT_TEXT  # type: ignore[union-attr]
    legacy = anthropic_client(secured, monkeypatch, api_key=None, auth_token=None, default_headers={"x-api-key": KEY})
    assert legacy.models.list().data
    with pytest.raises(anthropic.AuthenticationError) as info:
        anthropic_client(secured, monkeypatch, api_key="wrong").messages.create(
            model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert info.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_openai_sdk_with_the_key(secured: RunningServer) -> None:
    client = openai.OpenAI(base_url=f"{secured.url}/openai/v1", api_key=KEY, max_retries=0,
                           _strict_response_validation=True)
    completion = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == DEFAULT_TEXT
    stream = client.chat.completions.create(model="gpt-4o", stream=True,
                                            messages=[{"role": "user", "content": "hi"}])
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == DEFAULT_TEXT
    assert client.models.list().data
    wrong = openai.OpenAI(base_url=f"{secured.url}/openai/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    assert info.value.code == "invalid_api_key"


# -- constant-time comparison (25) ------------------------------------------------------------

def test_keys_are_compared_as_sha256_digests_in_constant_time(
    secured: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[object, object]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    cases = [(bearer(), 200), ({"x-api-key": KEY}, 200), (bearer("wrong"), 401), ({"x-api-key": "x" * 500}, 401),
             ({"authorization": f"Bearer {KEY}", "x-api-key": "nope"}, 401)]
    for headers, status in cases:
        calls.clear()
        assert httpx.get(f"{secured.url}/v1/models", headers=headers, timeout=10).status_code == status
        assert calls, f"compare_digest was not used for {headers}"
        for a, b in calls:
            assert isinstance(a, bytes) and isinstance(b, bytes)
            assert len(a) == 32 and len(b) == 32, "compare digests, not raw keys"
        presented = sum(1 for k in headers if k in ("authorization", "x-api-key"))
        assert len(calls) >= presented


# -- Host allow-list (31) ---------------------------------------------------------------------

def host_request(server: RunningServer, host: str | None, *, method: str = "GET", path: str = "/v1/models",
                 extra: dict[str, str] | None = None, body: bytes = b"") -> Any:
    headers: list[tuple[str, str]] = []
    if host is not None:
        headers.append(("Host", host))
    headers += list((extra or {}).items())
    headers.append(("Connection", "close"))
    return raw_request(server.port, head(method, path, headers), body)


@pytest.mark.parametrize("host", ["attacker.example:{port}", "attacker.example", "localhost.attacker.example:{port}",
                                  "127.0.0.1.nip.io:{port}", "0x7f000001:{port}", "2130706433:{port}",
                                  "127.1:{port}", "", None,
                                  "[::ffff:127.0.0.1]:{port}", "localhost.:{port}"])
def test_a_foreign_host_is_421_before_auth_and_before_the_body(secured: RunningServer, host: str | None) -> None:
    value = host.format(port=secured.port) if host is not None else None
    # HTTP/1.1 without any Host header is already a 400 in the HTTP layer; either is a refusal.
    refused = {421} if value is not None else {400, 421}
    before = spawned(secured)
    response = host_request(secured, value, extra=bearer())
    assert response.status in refused, (value, response.status)
    # Before auth: no key at all still gets 421, not 401.
    assert host_request(secured, value).status in refused
    # Before the body: announce a body, never send it, still get the answer (a server that
    # waited for the body would never answer, and raw_request would time out).
    response = host_request(secured, value, method="POST", path="/v1/messages",
                            extra={"Content-Type": "application/json", "Content-Length": "100000"})
    assert response.status in refused
    if response.status == 421:
        assert response.json()["type"] == "error"  # type: ignore[index]
    assert spawned(secured) == before


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LOCALHOST:{port}",
                                  "localhost", "127.0.0.1"])
def test_loopback_hosts_pass(secured: RunningServer, host: str) -> None:
    value = host.format(port=secured.port)
    assert host_request(secured, value, extra=bearer()).status == 200, value
    assert host_request(secured, value).status == 401, value


def test_allowed_hosts_setting_extends_the_list(cli_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAUDE_PROXY_ALLOWED_HOSTS", "proxy.internal, Other.Lan")
    with serve(make_settings()) as running:
        for host in ("proxy.internal:{port}", "other.lan", "OTHER.LAN:{port}", "localhost:{port}"):
            value = host.format(port=running.port)
            assert host_request(running, value).status == 200, value
        for host in ("attacker.example:{port}", "proxy.internal.attacker.example", "sub.proxy.internal"):
            value = host.format(port=running.port)
            assert host_request(running, value).status == 421, value


# -- Origin and CORS (28, 30) -----------------------------------------------------------------

@pytest.mark.parametrize("origin", [EVIL, "null", "http://localhost.evil.example", f"{ORIGIN}.evil.example",
                                    "http://app.example", "https://app.example:8443", "file://"])
def test_a_foreign_origin_is_refused_even_with_the_key(secured: RunningServer, origin: str) -> None:
    before = spawned(secured)
    headers = {**bearer(), "origin": origin}
    for path, body in (("/v1/messages", CHAT), ("/openai/v1/chat/completions", OPENAI_CHAT)):
        response = httpx.post(f"{secured.url}{path}", json=body, headers=headers, timeout=10)
        assert response.status_code == 403, (origin, path, response.text)
        assert "access-control-allow-origin" not in response.headers
        assert "access-control-allow-credentials" not in response.headers
    response = httpx.get(f"{secured.url}/v1/models", headers=headers, timeout=10)
    assert response.status_code == 403 and "access-control-allow-origin" not in response.headers
    assert spawned(secured) == before


@pytest.mark.parametrize("origin", [EVIL, "null"])
def test_a_preflight_from_a_foreign_origin_is_refused(secured: RunningServer, origin: str) -> None:
    response = httpx.options(f"{secured.url}/openai/v1/chat/completions", timeout=10, headers={
        "origin": origin, "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
        "access-control-request-private-network": "true",
    })
    assert response.status_code in (400, 403)
    lowered = {k.lower() for k in response.headers}
    assert not any(k.startswith("access-control-allow") for k in lowered), response.headers


def test_a_configured_origin_is_echoed_exactly_without_credentials(secured: RunningServer) -> None:
    preflight = httpx.options(f"{secured.url}/v1/messages", timeout=10, headers={
        "origin": ORIGIN, "access-control-request-method": "POST",
        "access-control-request-headers": "x-api-key,content-type,anthropic-version",
    })
    assert preflight.status_code in (200, 204)
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "access-control-allow-credentials" not in preflight.headers
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "x-api-key" in preflight.headers["access-control-allow-headers"].lower()

    response = httpx.post(f"{secured.url}/v1/messages", json=CHAT, headers={**bearer(), "origin": ORIGIN},
                          timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers.get_list("access-control-allow-origin") == [ORIGIN]
    assert "access-control-allow-credentials" not in response.headers
    # An allowed origin still needs the key, and its 401 stays readable to the page.
    refused = httpx.get(f"{secured.url}/v1/models", headers={"origin": ORIGIN}, timeout=10)
    assert refused.status_code == 401
    assert refused.headers.get("access-control-allow-origin") == ORIGIN


def test_an_allowed_origin_may_send_the_headers_its_sdk_uses(secured: RunningServer) -> None:
    wanted = "x-api-key,content-type,anthropic-version,x-stainless-os,anthropic-dangerous-direct-browser-access"
    preflight = httpx.options(f"{secured.url}/v1/messages", timeout=10, headers={
        "origin": ORIGIN, "access-control-request-method": "POST", "access-control-request-headers": wanted})
    allowed = {h.strip() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert set(wanted.split(",")) <= allowed


def test_without_configured_origins_no_origin_is_allowed(server: RunningServer) -> None:
    for origin in (EVIL, "http://localhost:3000", f"http://127.0.0.1:{server.port}", "null"):
        response = httpx.get(f"{server.url}/v1/models", headers={"origin": origin}, timeout=10)
        assert response.status_code == 403, origin
        assert "access-control-allow-origin" not in response.headers
    for value in ("*", "null"):
        assert all(h[0].lower() != "access-control-allow-origin" or h[1] != value
                   for h in httpx.get(f"{server.url}/v1/models", timeout=10).headers.items())


# -- JSON-only bodies (29) --------------------------------------------------------------------

@pytest.mark.parametrize("content_type", ["text/plain", None, "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/plain; charset=utf-8",
                                          "application/jsonx", "application/json-seq", ""])
@pytest.mark.parametrize("origin", [None, EVIL])
def test_a_non_json_post_is_refused_and_spawns_nothing(
    secured: RunningServer, content_type: str | None, origin: str | None
) -> None:
    before = spawned(secured)
    for path, body in (("/v1/messages", CHAT), ("/openai/v1/chat/completions", OPENAI_CHAT)):
        headers = bearer()
        if content_type is not None:
            headers["content-type"] = content_type
        if origin is not None:
            headers["origin"] = origin
        response = httpx.post(f"{secured.url}{path}", content=json.dumps(body).encode(), headers=headers, timeout=10)
        expected = {403} if origin else {415}
        assert response.status_code in expected, (content_type, origin, response.status_code, response.text)
        assert_shape(path, response.json())
    assert spawned(secured) == before


def test_json_with_a_charset_is_accepted(secured: RunningServer) -> None:
    response = httpx.post(f"{secured.url}/v1/messages", content=json.dumps(CHAT).encode(), timeout=60,
                          headers={**bearer(), "content-type": "Application/JSON; charset=utf-8"})
    assert response.status_code == 200, response.text


# -- size limits (21) ---------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/messages", "/openai/v1/chat/completions"])
def test_an_oversized_content_length_is_413_before_the_body_is_sent(secured: RunningServer, path: str) -> None:
    before = spawned(secured)
    response = raw_request(secured.port, head("POST", path, {
        "Host": f"127.0.0.1:{secured.port}", "Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
        "Content-Length": str(MAX_BODY + 1), "Connection": "close",
    }), timeout=30)  # no body is ever sent: a server waiting for it would never answer (recv times out)
    assert response.status == 413, response
    payload = response.json()
    if path.startswith("/openai/"):
        assert payload["error"]["code"] == "request_too_large"  # type: ignore[index]
    else:
        assert payload["type"] == "error" and payload["error"]["type"] == "request_too_large"  # type: ignore[index]
    assert spawned(secured) == before


@pytest.mark.parametrize("path", ["/v1/messages", "/openai/v1/chat/completions"])
def test_an_oversized_chunked_body_is_413(secured: RunningServer, path: str) -> None:
    before = spawned(secured)
    filler = "x" * (MAX_BODY * 2)
    data = json.dumps({**(CHAT if path == "/v1/messages" else OPENAI_CHAT), "filler": filler}).encode()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(data), 8192):
            yield data[start:start + 8192]

    response = httpx.post(f"{secured.url}{path}", content=chunks(), timeout=10,
                          headers={**bearer(), "content-type": "application/json"})
    assert response.status_code == 413, response.text
    payload = response.json()
    if path.startswith("/openai/"):
        assert payload["error"]["code"] == "request_too_large"
    else:
        assert payload["error"]["type"] == "request_too_large"
    assert spawned(secured) == before
    # The server is still fine afterwards.
    assert httpx.get(f"{secured.url}/health/live", timeout=5).status_code == 200


def test_a_body_just_under_the_limit_is_read(secured: RunningServer) -> None:
    data = json.dumps({**CHAT, "metadata": {"user_id": "u"}, "filler": "y" * (MAX_BODY - 500)}).encode()
    assert len(data) <= MAX_BODY
    response = httpx.post(f"{secured.url}/v1/messages", content=data, timeout=60,
                          headers={**bearer(), "content-type": "application/json"})
    assert response.status_code != 413, response.text


@pytest.mark.parametrize(("path", "model"), [("/v1/messages", "sonnet"), ("/openai/v1/chat/completions", "gpt-4o")])
def test_too_many_messages_is_413(secured: RunningServer, path: str, model: str) -> None:
    before = spawned(secured)
    limit = secured.app.state.settings.max_messages  # type: ignore[attr-defined]
    turns = [{"role": "user" if i % 2 == 0 else "assistant", "content": "m"} for i in range(limit + 1)]
    response = httpx.post(f"{secured.url}{path}", json={"model": model, "max_tokens": 5, "messages": turns},
                          headers=bearer(), timeout=10)
    assert response.status_code == 413, response.text
    assert "messages" in response.text
    assert spawned(secured) == before


@pytest.mark.parametrize(("path", "field"), [("/v1/messages", "max_tokens"),
                                             ("/openai/v1/chat/completions", "max_tokens"),
                                             ("/openai/v1/chat/completions", "max_completion_tokens")])
def test_max_tokens_over_the_limit_is_400_naming_the_field(secured: RunningServer, path: str, field: str) -> None:
    before = spawned(secured)
    limit = secured.app.state.settings.max_tokens_limit  # type: ignore[attr-defined]
    body = {"model": "sonnet" if path == "/v1/messages" else "gpt-4o", field: limit + 1,
            "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{secured.url}{path}", json=body, headers=bearer(), timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert field in error["message"]
    if path.startswith("/openai/"):
        assert error["param"] == field and error["type"] == "invalid_request_error"
    else:
        assert error["type"] == "invalid_request_error"
    assert spawned(secured) == before
