"""Faults (issue 5, bar tests 6-11, 13-14, 17-21): a misbehaving CLI (the fake ``claude`` of
tests/support/fake_cli.py), a missing CLI or missing credentials, upstream 429 through the
real CLI, client disconnects, and hostile input on both surfaces.  Every failure gets its
documented status or a terminal error event: never a hang, a 500 with internals, or a
``[DONE]`` / ``message_stop`` after a failure.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings
from tests.support.fake_cli import make_fake_cli, spawn_count
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream
from tests.support.procs import cli_processes, request_dirs, wait_until, zombies
from tests.support.proxy_process import post_and_leave
from tests.support.server import RunningServer, serve

ANTHROPIC = "/v1/messages"
OPENAI = "/openai/v1/chat/completions"
SURFACES = [ANTHROPIC, OPENAI]
# Nothing internal may reach a client: CLI stderr (the fake CLI's canary), paths, tracebacks.
FORBIDDEN = ["CANARY", "sk-ant-", "/home/", "/root/", "/tmp/", "Traceback", 'File "', "Error output",
             "claude_code_proxy", "site-packages"]


def body_for(path: str, text: str = "hi", *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    model = "sonnet" if path == ANTHROPIC else "gpt-4o"
    body: dict[str, Any] = {"model": model, "max_tokens": 200, "stream": stream,
                            "messages": [{"role": "user", "content": text}], **extra}
    return body


def spawned(server: RunningServer) -> int:
    return int(server.app.state.backend.spawned)  # type: ignore[attr-defined]


def assert_clean(text: str, *also: str) -> None:
    for marker in [*FORBIDDEN, *also]:
        assert marker not in text, f"{marker!r} leaked into a response: {text[:500]}"


def assert_error_shape(path: str, payload: Any) -> dict[str, Any]:
    if path == OPENAI:
        assert set(payload) == {"error"}, payload
        error = payload["error"]
        assert {"message", "type", "param", "code"} <= set(error)
    else:
        assert payload["type"] == "error", payload
        error = payload["error"]
        assert {"type", "message"} <= set(error)
    assert error["message"]
    return dict(error)


@contextmanager
def fake_server(directory: Path, mode: str, **overrides: Any) -> Iterator[RunningServer]:
    cli = make_fake_cli(directory, mode)
    with serve(make_settings(cli_path=str(cli), **overrides)) as running:
        yield running
    # Only after a passing body (an exception skips this): no fake CLI outlived the server.
    assert wait_until(lambda: not cli_processes()), "a fake CLI outlived its request"



@dataclass
class Streamed:
    status: int
    headers: httpx.Headers
    lines: list[str]
    times: list[float]
    text: str
    elapsed: float

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """Anthropic frames as (event name, data)."""
        out = []
        name = ""
        for line in self.lines:
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
        return out

    def chunks(self) -> list[Any]:
        """OpenAI data payloads (``[DONE]`` as the string)."""
        return [line[6:] if line[6:] == "[DONE]" else json.loads(line[6:])
                for line in self.lines if line.startswith("data: ")]


def post_stream(server: RunningServer, path: str, body: dict[str, Any], timeout: float = 60) -> Streamed:
    started = time.monotonic()
    lines: list[str] = []
    times: list[float] = []
    with httpx.stream("POST", f"{server.url}{path}", json=body, timeout=timeout) as response:
        if not response.headers.get("content-type", "").startswith("text/event-stream"):
            response.read()
            return Streamed(response.status_code, response.headers, [], [], response.text,
                            time.monotonic() - started)
        for line in response.iter_lines():
            if line and not line.startswith(":"):
                lines.append(line)
                times.append(time.monotonic() - started)
        return Streamed(response.status_code, response.headers, lines, times, "\n".join(lines),
                        time.monotonic() - started)


def post(server: RunningServer, path: str, body: Any, timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, timeout=timeout)


def assert_truncated_stream(path: str, streamed: Streamed, expected_text: str) -> dict[str, Any]:
    """Deltas, then one terminal error frame; never a success ending. Returns the error."""
    assert streamed.status == 200, streamed.text
    if path == ANTHROPIC:
        events = streamed.events()
        names = [name for name, _ in events]
        assert names[0] == "message_start", names
        text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
        assert text.startswith(expected_text), text
        assert names[-1] == "error", names
        assert "message_stop" not in names
        return dict(events[-1][1]["error"])
    chunks = streamed.chunks()
    assert "[DONE]" not in chunks
    text = "".join((c["choices"][0]["delta"].get("content") or "") for c in chunks[:-1] if c.get("choices"))
    assert text.startswith(expected_text), text
    assert all(c["choices"][0].get("finish_reason") is None for c in chunks[:-1] if c.get("choices")), chunks
    last = chunks[-1]
    assert set(last) == {"error"}, last
    return dict(last["error"])


# -- the CLI crashing mid-stream (6, 32) ----------------------------------------------------

@pytest.mark.parametrize("path", SURFACES)
def test_cli_crash_mid_stream_ends_with_an_error_frame_and_leaks_nothing(tmp_path: Path, path: str) -> None:
    cli_dir = tmp_path / "cli"
    with fake_server(cli_dir, "crash_mid_stream") as server:
        streamed = post_stream(server, path, body_for(path, stream=True))
        error = assert_truncated_stream(path, streamed, "tok0 tok1 tok2")
        assert error["message"]
        assert_clean(streamed.text, str(tmp_path))
        assert wait_until(lambda: not cli_processes())

        response = post(server, path, body_for(path))
        assert 500 <= response.status_code < 600 and response.status_code != 501, response.text
        assert_error_shape(path, response.json())
        assert_clean(response.text, str(tmp_path))
        assert "tok0" not in response.text
        assert wait_until(lambda: not cli_processes())

        make_fake_cli(cli_dir, "ok")  # the same path now answers normally: the server recovered
        response = post(server, path, body_for(path))
        assert response.status_code == 200, response.text
        assert "tok0 tok1 tok2" in response.text
        assert wait_until(lambda: not zombies()), "a dead CLI was never reaped"


# -- deadlines (8, 9) -------------------------------------------------------------------------

FIRST = 1.5


@pytest.mark.parametrize("mode", ["hang_before_init", "hang", "retry_forever"])
@pytest.mark.parametrize("path", SURFACES)
def test_no_first_event_is_504_at_the_first_event_deadline(tmp_path: Path, mode: str, path: str) -> None:
    cli_dir = tmp_path / "cli"
    # The other deadlines are far away: only the first-event deadline can end these requests,
    # and its error says it was that one (no clock margin a busy machine could eat).
    with fake_server(cli_dir, mode, first_event_timeout=FIRST, idle_timeout=60, request_timeout=120) as server:
        for stream in (False, True):
            before = spawned(server)
            started = time.monotonic()
            response = post(server, path, body_for(path, stream=stream), timeout=60)
            elapsed = time.monotonic() - started
            assert response.status_code == 504, (stream, response.text)
            error = assert_error_shape(path, response.json())
            assert error["type"] == ("timeout_error" if path == ANTHROPIC else "timeout")
            assert error["message"] == f"The model did not start answering within {FIRST:g} s.", error
            assert elapsed >= FIRST, f"504 after {elapsed:.2f} s, before the {FIRST} s deadline"
            assert spawned(server) == before + 1, "exactly one CLI: the proxy never retries"
            assert_clean(response.text)
            assert wait_until(lambda: not cli_processes()), "the hung CLI was not torn down"
        assert spawn_count(cli_dir) == 2


@pytest.mark.parametrize("path", SURFACES)
def test_a_stall_mid_stream_ends_with_an_error_event_after_the_idle_deadline(tmp_path: Path, path: str) -> None:
    idle = 1.5
    stalled = f"The answer stalled for more than {idle:g} s."
    with fake_server(tmp_path / "cli", "stall", first_event_timeout=60, idle_timeout=idle,
                     request_timeout=120) as server:
        streamed = post_stream(server, path, body_for(path, stream=True), timeout=60)
        error = assert_truncated_stream(path, streamed, "tok0 tok1")
        assert error["type"] == ("timeout_error" if path == ANTHROPIC else "timeout")
        assert error["message"] == stalled, error  # the idle deadline, not the first-event or total one
        assert streamed.times[-1] >= idle
        assert wait_until(lambda: not cli_processes())

        started = time.monotonic()
        response = post(server, path, body_for(path), timeout=60)
        assert response.status_code == 504, response.text
        assert assert_error_shape(path, response.json())["message"] == stalled
        assert time.monotonic() - started >= idle
        assert wait_until(lambda: not cli_processes())


def test_the_total_deadline_is_504(tmp_path: Path) -> None:
    # "trickle" streams a token every 0.3 s for a minute: only the total deadline ends it, and
    # its first token comes long before that deadline even on a busy machine.
    total = 4.0
    took_too_long = f"The request took longer than {total:g} s."
    with fake_server(tmp_path / "cli", "trickle", first_event_timeout=60, idle_timeout=60,
                     request_timeout=total) as server:
        started = time.monotonic()
        response = post(server, ANTHROPIC, body_for(ANTHROPIC), timeout=60)
        assert response.status_code == 504, response.text
        assert assert_error_shape(ANTHROPIC, response.json())["message"] == took_too_long
        assert time.monotonic() - started >= total
        streamed = post_stream(server, OPENAI, body_for(OPENAI, stream=True), timeout=60)
        assert assert_truncated_stream(OPENAI, streamed, "tok0")["message"] == took_too_long
        assert streamed.elapsed >= total


# -- fail closed on an unexpected tool surface (37) -------------------------------------------

@pytest.mark.parametrize("path", SURFACES)
def test_an_init_with_tools_fails_closed_and_kills_the_cli(tmp_path: Path, path: str) -> None:
    with fake_server(tmp_path / "cli", "init_with_tools", first_event_timeout=20) as server:
        for stream in (False, True):
            if stream:
                streamed = post_stream(server, path, body_for(path, stream=True), timeout=30)
                status, text = streamed.status, streamed.text
                if status == 200:  # refused in-band: must still be a terminal error, no answer
                    assert "tok0" not in text and "message_stop" not in text and "[DONE]" not in text
                    assert '"error"' in text
                else:
                    assert 500 <= status < 600, text
            else:
                response = post(server, path, body_for(path), timeout=30)
                status, text = response.status_code, response.text
                assert 500 <= status < 600, text
                assert_error_shape(path, response.json())
            # Refused for what the CLI reported, not after waiting for it (its first-event
            # deadline would be a 504 and the fake CLI sleeps 30 s before anything else).
            assert "did not allow" in text, text
            assert "tok0" not in text and DEFAULT_TEXT not in text
            assert "Bash" not in text or "tool" in text.lower()
            assert_clean(text)
            # The fake CLI would sleep 30 s: it must be killed, not waited for.
            assert wait_until(lambda: not cli_processes())


# -- a missing or unusable CLI (10) -------------------------------------------------------------

ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@-]+/)*[\w.@-]+")


@pytest.mark.parametrize("kind", ["missing", "not_executable", "directory"])
def test_a_missing_cli_is_a_503_with_how_to_fix_it(tmp_path: Path, kind: str) -> None:
    if kind == "missing":
        cli = tmp_path / "nonexistent" / "claude"
    elif kind == "directory":
        cli = tmp_path / "claude-dir"
        cli.mkdir()
    else:
        cli = make_fake_cli(tmp_path / "cli", "ok")
        cli.chmod(0o644)
    with serve(make_settings(cli_path=str(cli))) as server:
        health = httpx.get(f"{server.url}/health", timeout=30)
        assert health.status_code == 200
        assert health.json()["status"] == "cli_not_found"
        for path in SURFACES:
            for stream in (False, True):
                response = post(server, path, body_for(path, stream=stream), timeout=30)
                assert response.status_code == 503, response.text
                error = assert_error_shape(path, response.json())
                assert "CLAUDE_PROXY_CLI_PATH" in error["message"]
                assert str(cli) not in response.text and str(tmp_path) not in response.text
                assert not ABSOLUTE_PATH.search(error["message"]), error["message"]
                assert_clean(response.text)
        assert spawned(server) == 0
        assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200


# -- credentials missing (11) -------------------------------------------------------------------

def test_missing_credentials_with_the_real_cli_is_a_503_saying_how_to_log_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upstream: FakeUpstream
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("CLAUDE_CODE_OAUTH_TOKEN", raising=False)
    empty = tmp_path / "empty-config"
    empty.mkdir()
    monkeypatch.setenv("CLAUDE_CONFIG_DIR", str(empty))
    with serve(make_settings()) as server:
        for path in SURFACES:
            for stream in (False, True):
                response = post(server, path, body_for(path, stream=stream), timeout=60)
                assert response.status_code == 503, response.text
                error = assert_error_shape(path, response.json())
                message = error["message"].lower()
                assert "login" in message or "log in" in message, error["message"]
                assert_clean(response.text, str(empty))
        assert upstream.messages_calls == [], "no credentials: nothing may reach upstream"
        assert wait_until(lambda: not cli_processes())


# -- upstream 429 through the real CLI (7) ---------------------------------------------------------

@pytest.mark.parametrize(("retries", "calls"), [(1, 2), (0, 1)])
def test_upstream_429_keeps_its_retry_after_and_only_the_cli_retries(
    cli_env: Path, upstream: FakeUpstream, retries: int, calls: int
) -> None:
    with serve(make_settings(cli_max_retries=retries)) as server:
        for path in SURFACES if retries == 0 else [ANTHROPIC]:
            upstream.clear()
            response = post(server, path, body_for(path, "[[error:429]]"), timeout=60)
            assert response.status_code == 429, response.text
            error = assert_error_shape(path, response.json())
            assert error["type"] == "rate_limit_error"
            if retries:
                # The CLI waited out the upstream's retry-after once; the client gets the same hint.
                assert abs(int(response.headers["retry-after"]) - 7) <= 2, response.headers
            elif "retry-after" in response.headers:
                assert 1 <= int(response.headers["retry-after"]) <= 60
            assert len(upstream.messages_calls) == calls, "the proxy must add no retries of its own"
            assert spawned(server) == (1 if retries else SURFACES.index(path) + 1)


# -- client disconnects (13, 14) ---------------------------------------------------------------

SLOW = "[[slow:20]] [[echo]] " + "word " * 60


@pytest.mark.parametrize("path", SURFACES)
@pytest.mark.parametrize("stream", [True, False])
def test_a_client_disconnect_reaps_the_cli_mid_answer(
    server: RunningServer, upstream: FakeUpstream, path: str, stream: bool
) -> None:
    before_dirs = request_dirs()
    marker = uuid.uuid4().hex
    text = f"{SLOW} {marker}"
    if stream:
        with httpx.stream("POST", f"{server.url}{path}", json=body_for(path, text, stream=True),
                          timeout=30) as response:
            for line in response.iter_lines():
                if "word" in line:
                    break
            assert cli_processes(), "the CLI should be running mid-stream"
    else:  # leave once the answer is under way upstream
        post_and_leave(server.port, path, body_for(path, text), lambda: upstream.received(marker))
    assert wait_until(lambda: not cli_processes()), f"CLI still running: {cli_processes()}"
    # Killed, not left to finish: upstream saw its reader leave in the middle of the 20 s answer.
    assert wait_until(lambda: upstream.was_cut_short(marker)), "the CLI read its answer to the end"
    assert wait_until(lambda: request_dirs() <= before_dirs), request_dirs() - before_dirs
    assert wait_until(lambda: not zombies()), "a dead CLI was never reaped"
    # The slot is free again: a normal request goes through.
    assert post(server, path, body_for(path)).status_code == 200


@pytest.mark.parametrize("mode", ["hang", "hang_before_init", "stall"])
def test_a_disconnect_reaps_a_cli_that_is_not_answering(tmp_path: Path, mode: str) -> None:
    with fake_server(tmp_path / "cli", mode) as server:
        for path in SURFACES:
            with pytest.raises(httpx.ReadTimeout):
                post(server, path, body_for(path, stream=mode == "stall"), timeout=1.5)
            # The fake CLI would sit there for ten minutes: gone means killed.
            assert wait_until(lambda: not cli_processes()), mode
            assert wait_until(lambda: not zombies()), f"{mode}: a killed CLI was never reaped"


# -- bad input never 500s and never spawns (17-21) ----------------------------------------------

REJECTED = {400, 404, 413}


def bad_bodies(path: str, port: int) -> list[tuple[str, Any, set[int]]]:
    """(name, JSON body, acceptable statuses) for one surface."""
    anthropic = path == ANTHROPIC
    model = "sonnet" if anthropic else "gpt-4o"
    base: dict[str, Any] = {"model": model, "max_tokens": 5}

    def with_messages(messages: Any, **extra: Any) -> dict[str, Any]:
        return {**base, "messages": messages, **extra}

    def image(url: str) -> dict[str, Any]:
        if anthropic:
            block: dict[str, Any] = {"type": "image", "source": {"type": "url", "url": url}}
            if url.startswith("data:"):
                header, _, data = url[5:].partition(",")
                block = {"type": "image", "source": {"type": "base64", "media_type": header.split(";")[0],
                                                     "data": data}}
        else:
            block = {"type": "image_url", "image_url": {"url": url}}
        return with_messages([{"role": "user", "content": [{"type": "text", "text": "see"}, block]}])

    user = [{"role": "user", "content": "x"}]
    cases: list[tuple[str, Any, set[int]]] = [
        ("array body", [], {400}), ("string body", "str", {400}), ("number body", 42, {400}),
        ("null body", None, {400}), ("true body", True, {400}),
        ("messages string", with_messages("x"), {400}),
        ("messages object", with_messages({"role": "user", "content": "x"}), {400}),
        ("empty messages", with_messages([]), {400}),
        ("unknown role", with_messages([{"role": "robot", "content": "x"}]), {400}),
        ("content number", with_messages([{"role": "user", "content": 42}]), {400}),
        ("content part unknown", with_messages([{"role": "user", "content": [{"type": "hologram"}]}]), {400}),
        ("message not object", with_messages(["hi"]), {400}),
        ("stream yes", with_messages(user, stream="yes"), {400}),
        ("temperature hot", with_messages(user, temperature="hot"), {400}),
        ("max_tokens -1", {**with_messages(user), "max_tokens": -1}, {400}),
        ("max_tokens 0", {**with_messages(user), "max_tokens": 0}, {400}),
        ("max_tokens 1.5", {**with_messages(user), "max_tokens": 1.5}, {400}),
        ("max_tokens string", {**with_messages(user), "max_tokens": "5"}, {400}),
        ("max_tokens huge", {**with_messages(user), "max_tokens": 10**9}, {400}),
        ("max_tokens bool", {**with_messages(user), "max_tokens": True}, {400}),
        ("model number", {**with_messages(user), "model": 42}, {400}),
        ("unknown model", {**with_messages(user), "model": "gpt-9"}, {404}),
        ("flag as model", {**with_messages(user), "model": "--dangerously-skip-permissions"}, {404}),
        ("NUL in content", with_messages([{"role": "user", "content": "nul\u0000byte"}]), {200, 400}),
        ("NUL in system", with_messages(user, system="sys\u0000tem") if anthropic
         else with_messages([{"role": "system", "content": "sys\u0000tem"}, *user]), {200, 400}),
        ("invalid base64", image("data:image/png;base64,!!not-base64!!"), {400}),
        ("empty base64", image("data:image/png;base64,"), {400}),
        ("unsupported image type", image("data:image/bmp;base64,AAAA"), {400}),
        ("svg image", image("data:image/svg+xml;base64,PHN2Zy8+"), {400}),
        ("link-local image", image("http://169.254.169.254/latest/meta-data/"), {400}),
        ("loopback image", image(f"http://127.0.0.1:{port}/"), {400}),
        ("localhost image", image("http://localhost/x.png"), {400}),
        ("ipv6 loopback image", image("http://[::1]/x.png"), {400}),
        ("private image", image("http://10.0.0.1/x.png"), {400}),
        ("file image", image("file:///etc/passwd"), {400}),
        ("relative file image", image("file://../x"), {400}),
        ("ftp image", image("ftp://example.com/x.png"), {400}),
    ]
    if not anthropic:
        cases += [("n 2", with_messages(user, n=2), {400}),
                  ("tool role without id", with_messages([{"role": "tool", "content": "x"}]), {400})]
    return cases


RAW_BODIES: list[tuple[str, bytes]] = [
    ("truncated", b'{"model":'), ("trailing comma", b'{"model": "sonnet",}'), ("bom", b"\xef\xbb\xbf{}"),
    ("empty", b""), ("whitespace", b"  \n "), ("invalid utf-8", b"\xff\xfe\xfd"), ("single quotes", b"{'a': 1}"),
    ("NaN", b'{"model": NaN, "messages": []}'), ("nested 500 deep", b"[" * 500 + b"]" * 500),
    ("lone surrogate", b'{"model":"M","max_tokens":5,"messages":[{"role":"user","content":"\\ud800"}]}'),
    ("lone low surrogate", b'{"model":"M","max_tokens":5,"messages":[{"role":"user","content":"a\\udfffb"}]}'),
    ("surrogate in model", b'{"model":"\\ud800","max_tokens":5,"messages":[{"role":"user","content":"x"}]}'),
]


@pytest.mark.parametrize("path", SURFACES)
def test_bad_input_is_never_a_500_and_spawns_nothing(server: RunningServer, path: str) -> None:
    problems = []
    for name, body, allowed in bad_bodies(path, server.port):
        before = spawned(server)
        response = httpx.post(f"{server.url}{path}", content=json.dumps(body).encode(), timeout=30,
                              headers={"content-type": "application/json"})
        status = response.status_code
        if status not in allowed:
            problems.append(f"{name}: {status} {response.text[:200]}")
            continue
        if status >= 400:
            assert_error_shape(path, response.json())
            assert_clean(response.text)
            if spawned(server) != before:
                problems.append(f"{name}: rejected with {status} but spawned a CLI")
    model = "sonnet" if path == ANTHROPIC else "gpt-4o"
    for name, raw in RAW_BODIES:
        before = spawned(server)
        raw = raw.replace(b'"M"', f'"{model}"'.encode())
        response = httpx.post(f"{server.url}{path}", content=raw, timeout=30,
                              headers={"content-type": "application/json"})
        if response.status_code != 400:
            problems.append(f"raw {name}: {response.status_code} {response.text[:200]}")
            continue
        error = assert_error_shape(path, response.json())
        assert error["type"] == "invalid_request_error"
        assert_clean(response.text)
        if spawned(server) != before:
            problems.append(f"raw {name}: spawned a CLI")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", SURFACES)
def test_deeply_nested_json_is_a_400_not_a_500(server: RunningServer, path: str) -> None:
    before = spawned(server)
    for raw in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 50_000 + b"1" + b"}" * 50_000):
        response = httpx.post(f"{server.url}{path}", content=raw, timeout=30,
                              headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert assert_error_shape(path, response.json())["type"] == "invalid_request_error"
    assert spawned(server) == before


@pytest.mark.parametrize("path", SURFACES)
def test_numeric_forms_of_loopback_image_urls_are_refused(server: RunningServer, path: str) -> None:
    before = spawned(server)
    for url in ("http://127.1/x.png", "http://2130706433/x.png", "http://0x7f000001/x.png", "http://0177.0.0.1/x.png",
                "http://0/x.png", "http://[::ffff:127.0.0.1]/x.png", "http://[::ffff:a9fe:a9fe]/latest"):
        if path == ANTHROPIC:
            block: dict[str, Any] = {"type": "image", "source": {"type": "url", "url": url}}
        else:
            block = {"type": "image_url", "image_url": {"url": url}}
        body = body_for(path, "x")
        body["messages"] = [{"role": "user", "content": [{"type": "text", "text": "see"}, block]}]
        response = post(server, path, body, timeout=30)
        assert response.status_code == 400, (url, response.status_code)
    assert spawned(server) == before


@pytest.mark.parametrize("path", SURFACES)
def test_a_200_kb_system_prompt_reaches_upstream(server: RunningServer, upstream: FakeUpstream, path: str) -> None:
    big = "Rule: answer kindly. " * 10_000  # ~210 KB: too big for one argv element
    body = body_for(path, "hi")
    if path == ANTHROPIC:
        body["system"] = big
    else:
        body["messages"] = [{"role": "system", "content": big}, *body["messages"]]
    response = post(server, path, body, timeout=120)
    assert response.status_code == 200, response.text
    assert big.strip() in json.dumps(upstream.last_body["system"])


@pytest.mark.parametrize("path", SURFACES)
def test_ten_thousand_messages_are_refused_before_any_is_read(server: RunningServer, path: str) -> None:
    before = spawned(server)
    turns: list[Any] = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(10_000)]
    # One message in the middle is invalid: had the messages been validated one by one first,
    # the answer would be a 400 naming it; the count is checked on the raw body instead.
    turns[5000] = {"role": "robot", "content": 42}
    response = post(server, path, {**body_for(path), "messages": turns}, timeout=60)
    assert response.status_code == 413, response.text
    error = assert_error_shape(path, response.json())
    assert "messages" in error["message"] and "5000" not in error["message"]
    assert spawned(server) == before
    assert httpx.get(f"{server.url}/health/live", timeout=5).status_code == 200
