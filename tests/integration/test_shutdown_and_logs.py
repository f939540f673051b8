"""The server as a real subprocess (issue 5, bar tests 15, 32-34): SIGTERM drains in-flight
streams within the grace period and leaves no CLI behind; logs carry metadata only (canary
secrets planted in env, headers, query strings, prompts and CLI stderr never appear in any
log line or error body) and client-controlled strings cannot forge log lines.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import FAKE_KEY
from tests.support.fake_cli import make_fake_cli
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import SETTLE, is_alive, wait_until
from tests.support.proxy_process import ProxyProcess, head, proxy_process, raw_request

ANTHROPIC = "/v1/messages"
OPENAI = "/openai/v1/chat/completions"
DRAINED = "The proxy is shutting down; the answer was cut short."
GRACE = 5.0
"""Long enough for a short stream to finish on a busy machine; a long one is cut at it."""


def body_for(path: str, text: str, *, stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "sonnet" if path == ANTHROPIC else "gpt-4o", "max_tokens": 500, "stream": stream,
            "messages": [{"role": "user", "content": text}], **extra}


# -- SIGTERM drain (15) ------------------------------------------------------------------------

@dataclass
class StreamRecord:
    lines: list[str] = field(default_factory=list)
    first_delta: threading.Event = field(default_factory=threading.Event)
    ended_at: float = 0.0
    error: str | None = None


def read_stream(url: str, body: dict[str, Any], record: StreamRecord) -> None:
    try:
        with httpx.stream("POST", url, json=body, timeout=60) as response:
            for line in response.iter_lines():
                if not line or line.startswith(":"):
                    continue
                record.lines.append(line)
                if "text_delta" in line:
                    record.first_delta.set()
    except httpx.HTTPError as exc:
        record.error = repr(exc)
    finally:
        record.ended_at = time.monotonic()
        record.first_delta.set()


def test_sigterm_finishes_short_streams_cuts_long_ones_and_exits(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"CLAUDE_PROXY_SHUTDOWN_GRACE": str(GRACE)}
    with proxy_process(tmp_path, env) as proxy:
        short, long = StreamRecord(), StreamRecord()
        threads = [
            threading.Thread(target=read_stream, args=(f"{proxy.url}{ANTHROPIC}", body_for(
                ANTHROPIC, "[[slow:1.2]] [[echo]] one two three four five six", stream=True), short)),
            threading.Thread(target=read_stream, args=(f"{proxy.url}{ANTHROPIC}", body_for(
                ANTHROPIC, "[[slow:20]] [[echo]] " + "word " * 60, stream=True), long)),
        ]
        for thread in threads:
            thread.start()
        assert long.first_delta.wait(60) and short.first_delta.wait(60)
        assert short.error is None and long.error is None, (short.error, long.error)
        assert short.ended_at == 0.0, "the short stream must still be running at SIGTERM"
        assert len(proxy.live_cli_children()) == 2

        sent = time.monotonic()  # taken before the signal: whatever the server does comes after it
        proxy.sigterm()
        # Intake stops at once: new connections are refused (or answered 503) while the long
        # stream still runs, that is before the drain deadline.
        refused_while_draining = False
        while long.ended_at == 0.0 and proxy.proc.poll() is None:
            try:
                if httpx.get(f"{proxy.url}/health/live", timeout=5).status_code == 503:
                    refused_while_draining = long.ended_at == 0.0
                    break
            except httpx.HTTPError:
                refused_while_draining = long.ended_at == 0.0
                break
            proxy.live_cli_children()  # keep recording the CLI pids
            time.sleep(0.05)
        assert refused_while_draining, "new connections still accepted after SIGTERM"

        while proxy.proc.poll() is None and any(t.is_alive() for t in threads):
            proxy.live_cli_children()
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=SETTLE)
        # Between the streams' end and the process exit, no CLI may be left.
        if proxy.proc.poll() is None:
            assert wait_until(lambda: not proxy.live_cli_children() or proxy.proc.poll() is not None)
        try:
            proxy.proc.wait(timeout=SETTLE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the server did not exit after SIGTERM:\n{proxy.logs()[-3000:]}")

        short_text = "\n".join(short.lines)
        assert short.error is None, short.error
        assert "event: message_stop" in short_text and "event: error" not in short_text, short_text

        long_text = "\n".join(long.lines)
        assert long.error is None, long.error
        assert long.lines[-2:][0] == "event: error", long.lines[-4:]
        assert "message_stop" not in long_text
        # Cut by the drain (not by another deadline, nor at its own end 20 s on), never before it.
        assert json.loads(long.lines[-1][6:])["error"]["message"] == DRAINED, long.lines[-1]
        assert long.ended_at - sent >= GRACE, f"the long stream ended {long.ended_at - sent:.1f} s after SIGTERM"
        assert proxy.proc.returncode == 0, proxy.proc.returncode
        assert proxy.children_seen, "the CLI pids were never observed"
        assert wait_until(lambda: not [p for p in proxy.children_seen if is_alive(p)]), [
            p for p in proxy.children_seen if is_alive(p)]
        assert "Traceback" not in proxy.logs(), proxy.logs()[-3000:]


def test_a_request_queued_at_sigterm_never_starts_a_cli(tmp_path: Path, upstream: FakeUpstream) -> None:
    env: dict[str, str | None] = {"CLAUDE_PROXY_SHUTDOWN_GRACE": str(GRACE), "CLAUDE_PROXY_MAX_CONCURRENCY": "1",
                                  "CLAUDE_PROXY_WARM_POOL_SIZE": "0"}
    with proxy_process(tmp_path, env) as proxy:
        running = StreamRecord()
        first = threading.Thread(target=read_stream, args=(f"{proxy.url}{ANTHROPIC}", body_for(
            ANTHROPIC, "[[slow:1.5]] [[echo]] one two three four five six", stream=True), running))
        first.start()
        assert running.first_delta.wait(60)
        outcome: dict[str, int] = {}

        def post_queued() -> None:
            response = httpx.post(f"{proxy.url}{ANTHROPIC}", json=body_for(ANTHROPIC, "[[echo]] later"), timeout=60)
            outcome["status"] = response.status_code

        second = threading.Thread(target=post_queued)
        second.start()
        # It waits in line behind the running request.
        assert wait_until(lambda: proxy.metric("claude_proxy_queue_waiting") == 1)
        spawned_before = len(proxy.live_cli_children())
        proxy.sigterm()
        first.join(timeout=SETTLE)
        second.join(timeout=SETTLE)
        assert running.error is None  # the running one finished within the grace period
        # The queued one was refused when its turn came, instead of starting a CLI the
        # shutdown would cut short.
        assert outcome.get("status") == 503
        assert spawned_before == 1
        assert proxy.proc.wait(timeout=SETTLE) == 0
        assert len(upstream.messages_calls) == 1, "only the running request reached upstream"


def test_sigterm_exit_code_is_0(tmp_path: Path) -> None:
    with proxy_process(tmp_path, {"CLAUDE_PROXY_SHUTDOWN_GRACE": str(GRACE)}) as proxy:
        assert httpx.post(f"{proxy.url}{ANTHROPIC}", json=body_for(ANTHROPIC, "hi"), timeout=60).status_code == 200
        proxy.sigterm()
        assert proxy.proc.wait(timeout=SETTLE) == 0


# -- secrets never reach logs or error bodies (32, 33) --------------------------------------------

CANARY_KEY = "canary-proxy-key-7f3a1d"
CANARY_AWS = "canary-aws-secret-9c1e55"
CANARY_WRONG = "canary-wrong-xapikey-31b0"
CANARY_BEARER = "canary-wrong-bearer-a4d2"
CANARY_QUERY = "canary-query-0e77"
CANARY_HEADER = "canary-header-5b19"
CANARY_PROMPT = "CANARY-PROMPT-c0ffee"
CANARY_ANSWER = "CANARY-ANSWER-d00d"
SECRETS = [CANARY_KEY, CANARY_AWS, CANARY_WRONG, CANARY_BEARER, CANARY_QUERY, CANARY_HEADER, FAKE_KEY,
           "CANARY-STDERR", "sk-ant-oat", "sk-ant-api", "/home/someone"]
INTERNALS = ["Traceback", 'File "', "/tmp/", "/root/", "site-packages", "Error output"]


def canary_env(level: str, fmt: str, **extra: str) -> dict[str, str | None]:
    return {"CLAUDE_PROXY_LOG_LEVEL": level, "CLAUDE_PROXY_LOG_FORMAT": fmt, "CLAUDE_PROXY_API_KEY": CANARY_KEY,
            "AWS_SECRET_ACCESS_KEY": CANARY_AWS, **extra}


def auth(key: str = CANARY_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def exercise(proxy: ProxyProcess, *, answers: bool) -> list[httpx.Response]:
    """Requests carrying canaries every way a client can; returns every response."""
    url = proxy.url
    out = [
        httpx.get(f"{url}/v1/models", headers={"x-api-key": CANARY_WRONG}, timeout=10),
        httpx.get(f"{url}/v1/models", headers=auth(CANARY_BEARER), timeout=10),
        httpx.get(f"{url}/v1/models?api_key={CANARY_KEY}&key={CANARY_QUERY}", timeout=10),
        httpx.post(f"{url}{OPENAI}?api_key={CANARY_QUERY}", json=body_for(OPENAI, CANARY_PROMPT), timeout=10),
        httpx.post(f"{url}{ANTHROPIC}", json=body_for(ANTHROPIC, CANARY_PROMPT),
                   headers={"x-api-key": CANARY_WRONG}, timeout=10),
        httpx.get(f"{url}/v1/models?token={CANARY_QUERY}", headers={**auth(), "x-custom": CANARY_HEADER,
                                                                   "cookie": f"session={CANARY_HEADER}"}, timeout=10),
        httpx.post(f"{url}{ANTHROPIC}", json=body_for(ANTHROPIC, CANARY_PROMPT, max_tokens=10**9), headers=auth(),
                   timeout=10),
        httpx.post(f"{url}{ANTHROPIC}", json={"model": "no-such-model-canary", "max_tokens": 5,
                                              "messages": [{"role": "user", "content": CANARY_PROMPT}]},
                   headers=auth(), timeout=10),
    ]
    for path in (ANTHROPIC, OPENAI):
        for stream in (False, True):
            text = f"{CANARY_PROMPT} [[say:{CANARY_ANSWER}]]" if answers else CANARY_PROMPT
            out.append(httpx.post(f"{url}{path}", json=body_for(path, text, stream=stream),
                                  headers={"x-api-key": CANARY_KEY}, timeout=60))
    if answers:  # upstream failures through the real CLI
        for directive in ("[[error:401]]", "[[error:500]]", "[[error:400]]"):
            out.append(httpx.post(f"{url}{OPENAI}", json=body_for(OPENAI, f"{CANARY_PROMPT} {directive}"),
                                  headers=auth(), timeout=60))
    return out


def error_bodies(responses: list[httpx.Response]) -> str:
    texts = []
    for response in responses:
        if response.status_code >= 400:
            texts.append(response.text)
        elif '"error"' in response.text:  # an in-band error event of a stream
            texts.append("\n".join(line for line in response.text.splitlines() if "error" in line))
    return "\n".join(texts)


def assert_no(markers: list[str], text: str, where: str) -> None:
    found = [m for m in markers if m in text]
    assert not found, f"{found} in {where}:\n{text[-3000:]}"


def test_no_secret_reaches_a_debug_log_or_an_error_body(tmp_path: Path) -> None:
    with proxy_process(tmp_path, canary_env("DEBUG", "json")) as proxy:
        responses = exercise(proxy, answers=True)
        assert [r.status_code for r in responses[:5]] == [401, 401, 401, 401, 401]
        assert [r.status_code for r in responses[5:8]] == [200, 400, 404]
        assert all(r.status_code >= 400 for r in responses[12:]), [r.status_code for r in responses[12:]]
        successes = [r for r in responses[8:12] if r.status_code == 200]
        assert len(successes) == 4, [r.status_code for r in responses[8:12]]
        assert all(CANARY_ANSWER in r.text for r in successes)  # the answer itself reaches the client
        logs = proxy.logs()
    assert logs.strip(), "the server logged nothing"
    assert_no(SECRETS, logs, "the DEBUG log")
    assert not re.search(r"Bearer (?!\[?REDACTED)\S", logs), "a bearer token was logged"
    bodies = error_bodies(responses)
    assert_no([*SECRETS, *INTERNALS], bodies, "error bodies")
    assert any(line.startswith("{") and json.loads(line).get("event") == "request" for line in logs.splitlines())


@pytest.fixture(scope="module")
def crashed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[httpx.Response], str, Path]:
    """A DEBUG/json server whose CLI crashes mid-answer after writing secrets to its stderr."""
    base = tmp_path_factory.mktemp("crash-logs")
    cli = make_fake_cli(base / "cli", "crash_mid_stream")
    env = canary_env("DEBUG", "json", CLAUDE_PROXY_CLI_PATH=str(cli))
    with proxy_process(base / "server", env) as proxy:
        responses = exercise(proxy, answers=False)
        logs = proxy.logs()
    return responses, logs, base


def test_cli_stderr_never_reaches_an_error_body(crashed_run: tuple[list[httpx.Response], str, Path]) -> None:
    responses, _, base = crashed_run
    crashed = responses[8:12]
    assert [r.status_code >= 500 for r in crashed] == [True, False, True, False], [
        r.status_code for r in crashed]  # non-stream: a 5xx; stream: 200 with a terminal error event
    assert all("tok0" in r.text and '"error"' in r.text for r in (crashed[1], crashed[3]))
    assert_no([*SECRETS, *INTERNALS, str(base)], error_bodies(responses), "error bodies")


def test_cli_stderr_never_reaches_the_log(crashed_run: tuple[list[httpx.Response], str, Path]) -> None:
    _, logs, _ = crashed_run
    assert_no(SECRETS, logs, "the DEBUG log")


def test_no_prompt_or_answer_text_at_info(tmp_path: Path) -> None:
    with proxy_process(tmp_path, canary_env("INFO", "console")) as proxy:
        responses = exercise(proxy, answers=True)
        assert sum(1 for r in responses if r.status_code == 200 and CANARY_ANSWER in r.text) == 4
        logs = proxy.logs()
    assert '"request"' in logs or " request " in logs, "requests must still be logged (metadata)"
    assert_no([*SECRETS, CANARY_PROMPT, CANARY_ANSWER], logs, "the INFO log")


# -- log injection (34) -------------------------------------------------------------------------

FORGED = re.compile(r"^\s*FORGED")
CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")


def inject_headers_and_path(proxy: ProxyProcess) -> None:
    url = proxy.url
    hostile = ["abc%0D%0AFORGED fake=1", "id\x85FORGED", "x" * 10_000 + "FORGED", "\x1b[31mFORGED\x1b[0m"]
    for value in hostile:
        for name in ("x-request-id", "user-agent"):
            # httpx sends only printable ASCII in headers; raw-socket the rest (as latin-1 bytes).
            if re.search(r"[^\x20-\x7e]", value):
                raw_request(proxy.port, head("GET", "/v1/models", [
                    ("Host", f"127.0.0.1:{proxy.port}"), ("Authorization", f"Bearer {CANARY_KEY}"),
                    (name, value), ("Connection", "close")]))
            else:
                httpx.get(f"{url}/v1/models", headers={**auth(), name: value}, timeout=10)
    # Raw CR/LF inside a header: the HTTP layer must refuse it (400), never pass it on.
    response = raw_request(proxy.port, b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                           b"X-Request-Id: a\rFORGED b\r\nConnection: close\r\n\r\n" % proxy.port)
    assert response.status in (0, 400)
    httpx.get(f"{url}/v1/models%0D%0AFORGED%1B[31m", headers={**auth(), "x-request-id": "ok-id"}, timeout=10)
    httpx.get(f"{url}/no/such%0AFORGED", headers=auth(), timeout=10)
    httpx.get(f"{url}/v1/models/" + "p" * 3000, headers=auth(), timeout=10)


def inject_body_strings(proxy: ProxyProcess) -> None:
    url = proxy.url
    for model in ("x\r\nFORGED model", "\u2028FORGED", "\x1b[2J\x1b[HFORGED", "m" * 5000):
        httpx.post(f"{url}{ANTHROPIC}", headers=auth(), timeout=10,
                   json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        httpx.post(f"{url}{OPENAI}", headers=auth(), timeout=10,
                   json={"model": model, "messages": [{"role": "user", "content": "x"}]})
    httpx.post(f"{url}{OPENAI}", headers=auth(), timeout=60,
               json={**body_for(OPENAI, "hi"), "user": "u\r\nFORGED user", "metadata": {"k": "\nFORGED"}})


def assert_console_log_safe(logs: str) -> None:
    assert "\x1b" not in logs, "an ANSI escape reached the log"
    for line in logs.splitlines():  # splitlines also breaks on \x85, \u2028...
        assert not FORGED.match(line), repr(line)
        assert len(line) < 2000, f"an unbounded client value was logged ({len(line)} chars)"


def test_client_strings_cannot_forge_json_log_lines(tmp_path: Path) -> None:
    with proxy_process(tmp_path, canary_env("DEBUG", "json")) as proxy:
        inject_headers_and_path(proxy)
        inject_body_strings(proxy)
        logs = proxy.logs()
    records = 0
    for line in logs.splitlines():
        assert not FORGED.match(line), line
        assert not CONTROL.search(line), repr(line[:300])
        try:
            record = json.loads(line)
        except ValueError:
            continue  # uvicorn's own plain-text lines ("Invalid HTTP request received.")
        records += 1
        for key in ("request_id", "route", "client"):
            value = record.get(key)
            if isinstance(value, str):
                assert len(value) <= 256, (key, len(value))
                assert not CONTROL.search(value), (key, value[:300])
    assert records and "FORGED" in logs, "the hostile values were expected in the log, escaped"


def test_header_and_path_strings_cannot_forge_console_log_lines(tmp_path: Path) -> None:
    with proxy_process(tmp_path, canary_env("DEBUG", "console")) as proxy:
        inject_headers_and_path(proxy)
        logs = proxy.logs()
    assert_console_log_safe(logs)
    assert "FORGED" in logs


def test_body_strings_cannot_forge_console_log_lines(tmp_path: Path) -> None:
    with proxy_process(tmp_path, canary_env("DEBUG", "console")) as proxy:
        inject_body_strings(proxy)
        logs = proxy.logs()
    assert_console_log_safe(logs)


def test_a_client_leaving_early_logs_no_traceback(tmp_path: Path) -> None:
    with proxy_process(tmp_path, canary_env("INFO", "console", CLAUDE_PROXY_MAX_CONCURRENCY="1")) as proxy:
        for path in (ANTHROPIC, OPENAI):
            for stream in (False, True):
                with pytest.raises(httpx.ReadTimeout):
                    with httpx.stream("POST", f"{proxy.url}{path}", headers=auth(), timeout=1.0,
                                      json=body_for(path, "[[hang]]", stream=stream)) as response:
                        response.read()
        assert wait_until(lambda: not proxy.live_cli_children())
        # Each of the four requests is logged once it is over: wait for all four lines.
        assert wait_until(lambda: proxy.logs().count("client_disconnected") >= 4), proxy.logs()[-3000:]
        logs = proxy.logs()
    assert "Traceback" not in logs and "unhandled_error" not in logs, logs[-3000:]
