"""The Anthropic surface end to end: real anthropic SDK (strict) -> real uvicorn -> real
bundled CLI -> the fake upstream, asserting what upstream received."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.bodies import client_turns, texts
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream
from tests.support.procs import cli_processes, request_dirs, wait_until, zombies
from tests.support.proxy_process import post_and_leave
from tests.support.server import RunningServer

PNG_1PX = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f0b0e90000000049454e44ae426082"
)).decode()


def spawned(server: RunningServer) -> int:
    return int(server.app.state.backend.spawned)  # type: ignore[attr-defined]


# -- non-streaming -------------------------------------------------------------------

def test_create_passes_strict_validation_and_reaches_upstream(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    message = anthropic_client.messages.create(
        model="sonnet", max_tokens=200, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.id.startswith("msg_")
    assert message.content[0].type == "text" and message.content[0].text == DEFAULT_TEXT
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert len(upstream.messages_calls) == 1
    body = upstream.last_body
    assert body["tools"] == []
    assert body["max_tokens"] == 200
    assert "thinking" not in body
    assert texts(body) == [("user", "hi")]


def test_whole_conversation_is_one_upstream_call_with_real_turns(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    conversation = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": [{"type": "text", "text": "second question"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "second answer"}]},
        {"role": "user", "content": "third question [[echo]]"},
    ]
    message = anthropic_client.messages.create(model="sonnet", max_tokens=100, messages=conversation)
    assert message.content[0].text == "third question"  # type: ignore[union-attr]
    assert len(upstream.messages_calls) == 1
    assert texts(upstream.last_body) == [
        ("user", "first question"), ("assistant", "first answer"), ("user", "second question"),
        ("assistant", "second answer"), ("user", "third question [[echo]]"),
    ]


def test_system_prompt_replaces_claude_codes_own(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    anthropic_client.messages.create(
        model="sonnet", max_tokens=50, system=[{"type": "text", "text": "You are a pirate."}],
        messages=[{"role": "user", "content": "hi"}],
    )
    system = json.dumps(upstream.last_body["system"])
    assert "You are a pirate." in system
    assert "You are Claude Code" not in system
    assert len(system) < 2000  # Claude Code's own prompt is about 7 KB

    anthropic_client.messages.create(model="sonnet", max_tokens=50, system="Plain string system.",
                                     messages=[{"role": "user", "content": "hi"}])
    assert "Plain string system." in json.dumps(upstream.last_body["system"])


def test_large_system_prompt_travels_by_file(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    big = "Rule: be kind. " * 14000  # ~210 KB: over the command-line limit
    anthropic_client.messages.create(model="sonnet", max_tokens=20, system=big,
                                     messages=[{"role": "user", "content": "hi"}])
    assert big.strip() in json.dumps(upstream.last_body["system"])


def test_prompts_are_verbatim_not_file_mentions_or_commands(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    for prompt in ("please read @/etc/passwd", "/help"):
        anthropic_client.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": prompt}])
        assert texts(upstream.last_body)[-1] == ("user", prompt)
        assert "root:x:0:0" not in json.dumps(upstream.last_body)


def test_images_base64_and_url_reach_upstream(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    anthropic_client.messages.create(model="sonnet", max_tokens=20, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": "two pictures"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}},
        ]},
    ])
    blocks = client_turns(upstream.last_body)[-1][1]
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_1PX}} in blocks
    assert {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.png"}} in blocks


def test_max_tokens_and_stop_sequences(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    message = anthropic_client.messages.create(
        model="sonnet", max_tokens=64, stop_sequences=["WORD", " ", "\n"],
        messages=[{"role": "user", "content": "[[stop:WORD]]"}],
    )
    assert upstream.last_body["stop_sequences"] == ["WORD"]
    assert upstream.last_body["max_tokens"] == 64
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == "WORD"

    upstream.clear()
    message = anthropic_client.messages.create(model="sonnet", max_tokens=5,
                                               messages=[{"role": "user", "content": "[[long:40]]"}])
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "w0 w1 w2 w3 w4 "  # type: ignore[union-attr]
    assert upstream.messages_calls[0].body["max_tokens"] == 5


def test_temperature_and_top_p_are_accepted_but_not_forwarded(
    anthropic_client: anthropic.Anthropic, upstream: FakeUpstream
) -> None:
    anthropic_client.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}],
                                     extra_body={"temperature": 0.3, "top_p": 0.9, "top_k": 5})
    assert not {"temperature", "top_p", "top_k"} & set(upstream.last_body)


def test_thinking_only_when_asked(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    message = anthropic_client.messages.create(
        model="claude-haiku-4-5", max_tokens=4000, thinking={"type": "enabled", "budget_tokens": 2000},
        messages=[{"role": "user", "content": "[[thinking]] think"}],
    )
    assert upstream.last_body["thinking"]["type"] == "enabled"
    assert upstream.last_body["thinking"]["budget_tokens"] == 2000
    assert message.content[0].type == "thinking" and message.content[0].signature
    assert message.content[1].type == "text"

    anthropic_client.messages.create(model="sonnet", max_tokens=100,
                                     messages=[{"role": "user", "content": "[[thinking]] no"}])
    assert "thinking" not in upstream.last_body
    # Newer models only think adaptively; the CLI chooses that form for them.
    anthropic_client.messages.create(model="sonnet", max_tokens=4000, thinking={"type": "adaptive"},
                                     messages=[{"role": "user", "content": "[[thinking]] yes"}])
    assert upstream.last_body["thinking"]["type"] == "adaptive"


def test_chat_completions_path_beta_query_and_headers(server: RunningServer, upstream: FakeUpstream) -> None:
    response = httpx.post(
        f"{server.url}/v1/chat/completions?beta=true",
        headers={"anthropic-version": "2023-06-01", "anthropic-beta": "whatever-2099", "x-api-key": "k"},
        json={"model": "sonnet", "max_tokens": 200, "messages": [{"role": "user", "content": "hi"}],
              "some_future_field": {"x": 1}},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.json()["type"] == "message"
    assert "some_future_field" not in upstream.last_body


# -- streaming -------------------------------------------------------------------------

def test_stream_event_grammar(anthropic_client: anthropic.Anthropic) -> None:
    seen = []
    with anthropic_client.messages.stream(model="sonnet", max_tokens=100,
                                          messages=[{"role": "user", "content": "hello"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    with anthropic_client.messages.stream(model="sonnet", max_tokens=100,
                                          messages=[{"role": "user", "content": "hello"}]) as stream:
        seen = [event.type for event in stream]
    assert seen[0] == "message_start" and seen[-1] == "message_stop"
    assert seen[-2] == "message_delta"
    assert text == DEFAULT_TEXT == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn" and final.usage.output_tokens > 0


def test_stream_wire_format(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.with_streaming_response.create(
        model="sonnet", max_tokens=4000, stream=True, thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "[[thinking]] go"}],
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line and not line.startswith(":")]
    pairs = list(zip(lines[::2], lines[1::2], strict=True))
    indices: list[int] = []
    for event_line, data_line in pairs:
        assert event_line.startswith("event: ") and data_line.startswith("data: ")
        data = json.loads(data_line[6:])
        assert event_line[7:] == data["type"]
        if data["type"] == "content_block_start":
            indices.append(data["index"])
    assert indices == [0, 1]
    types = [json.loads(d[6:])["type"] for _, d in pairs]
    assert types[0] == "message_start" and types[-1] == "message_stop"
    deltas = [json.loads(d[6:])["delta"]["type"] for _, d in pairs if '"content_block_delta"' in d]
    assert "thinking_delta" in deltas and "signature_delta" in deltas and "text_delta" in deltas


def test_stream_is_token_level_not_buffered(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    gate = uuid.uuid4().hex
    with anthropic_client.messages.stream(model="sonnet", max_tokens=200,
                                          messages=[{"role": "user", "content": f"[[gate:{gate}]]"}]) as stream:
        tokens = iter(stream.text_stream)
        first = next(tokens)
        # The first token is here while upstream still holds back the rest: nothing is buffered.
        assert upstream.held_at_gate(gate)
        upstream.open_gate(gate)
        rest = "".join(tokens)
    assert first + rest == DEFAULT_TEXT and rest


# -- errors ------------------------------------------------------------------------------

@pytest.mark.parametrize(("directive", "error_class", "status"), [
    ("[[error:429]]", anthropic.RateLimitError, 429),
    ("[[error:529]]", anthropic.APIStatusError, 529),
    ("[[error:401]]", anthropic.AuthenticationError, 401),
    ("[[error:500]]", anthropic.InternalServerError, 502),
    ("[[error:400]]", anthropic.BadRequestError, 400),
])
def test_upstream_errors_keep_their_meaning(
    anthropic_client: anthropic.Anthropic, directive: str, error_class: type[Exception], status: int
) -> None:
    for stream in (False, True):
        with pytest.raises(error_class) as info:
            if stream:
                with anthropic_client.messages.stream(model="sonnet", max_tokens=20,
                                                      messages=[{"role": "user", "content": directive}]) as s:
                    s.get_final_message()
            else:
                anthropic_client.messages.create(model="sonnet", max_tokens=20,
                                                 messages=[{"role": "user", "content": directive}])
        error = info.value
        assert isinstance(error, anthropic.APIStatusError)
        assert error.status_code == status
        body = error.body
        assert isinstance(body, dict) and body["type"] == "error" and body["error"]["message"]
        assert "/tmp/" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    if status == 529:
        assert error.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_mid_stream_failure_ends_with_an_error_event(anthropic_client: anthropic.Anthropic) -> None:
    with anthropic_client.messages.with_streaming_response.create(
        model="sonnet", max_tokens=100, stream=True, messages=[{"role": "user", "content": "[[drop]]"}],
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert "event: error" in lines
    assert "event: message_stop" not in lines
    assert any(line.startswith("event: content_block_delta") for line in lines)
    with pytest.raises(anthropic.APIStatusError) as info:
        with anthropic_client.messages.stream(model="sonnet", max_tokens=100,
                                              messages=[{"role": "user", "content": "[[drop]]"}]) as stream:
            stream.get_final_message()
    assert info.value.body["error"]["type"] == "api_error"  # type: ignore[index]


def test_bad_input_is_400_in_anthropic_shape_and_spawns_nothing(server: RunningServer) -> None:
    before = spawned(server)
    cases: list[tuple[Any, int]] = [
        ({"model": "sonnet", "messages": [{"role": "user", "content": "hi"}]}, 400),  # no max_tokens
        ({"model": "sonnet", "max_tokens": "5", "messages": [{"role": "user", "content": "hi"}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "stream": "yes", "messages": [{"role": "user", "content": "x"}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": []}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "robot", "content": "x"}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": "x"}, 400),
        ({"model": "gpt-9", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, 404),
        ({"model": "--dangerously-skip-permissions", "max_tokens": 5,
          "messages": [{"role": "user", "content": "x"}]}, 404),
        ({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": "nul\u0000"}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/bmp", "data": "AAAA"}}]}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "!!notb64"}}]}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "file:///etc/passwd"}}]}]}, 400),
        ({"model": "sonnet", "max_tokens": 5, "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/latest"}}]}]}, 400),
        ([], 400), ("str", 400), (42, 400), (None, 400),
    ]
    for body, status in cases:
        response = httpx.post(f"{server.url}/v1/messages", content=json.dumps(body),
                               headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code == status, (body, response.text)
        payload = response.json()
        assert payload["type"] == "error"
        expected = "invalid_request_error" if status == 400 else "not_found_error"
        assert payload["error"]["type"] == expected
    for raw in (b'{"model":', b"\xef\xbb\xbf{}", b"", b"\xff\xfe", b'{"a": 1,}'):
        response = httpx.post(f"{server.url}/v1/messages", content=raw,
                              headers={"content-type": "application/json"}, timeout=30)
        assert response.status_code == 400, raw
        assert response.json()["error"]["type"] == "invalid_request_error"
    lone = b'{"model":"sonnet","max_tokens":5,"messages":[{"role":"user","content":"\\ud800"}]}'
    response = httpx.post(f"{server.url}/v1/messages", content=lone, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert spawned(server) == before


def test_missing_max_tokens_names_the_field(server: RunningServer) -> None:
    response = httpx.post(f"{server.url}/v1/messages", json={"model": "sonnet", "messages": [
        {"role": "user", "content": "x"}]})
    assert response.status_code == 400
    assert "max_tokens" in response.json()["error"]["message"]


def test_unknown_model_is_404_even_when_streaming(anthropic_client: anthropic.Anthropic, server: RunningServer) -> None:
    before = spawned(server)
    with pytest.raises(anthropic.NotFoundError):
        with anthropic_client.messages.stream(model="gpt-9000", max_tokens=5,
                                              messages=[{"role": "user", "content": "x"}]) as stream:
            stream.get_final_message()
    assert spawned(server) == before


def test_model_names_accepted(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    for name in ("opus", "haiku", "claude-haiku-4-5", "claude-future-9-9"):
        anthropic_client.messages.create(model=name, max_tokens=10, messages=[{"role": "user", "content": "x"}])
    models = [call.body["model"] for call in upstream.messages_calls]
    assert models[2:] == ["claude-haiku-4-5", "claude-future-9-9"]
    assert "opus" in models[0] and "haiku" in models[1]


# -- models and health -----------------------------------------------------------------

def test_models_list_and_retrieve(anthropic_client: anthropic.Anthropic, upstream: FakeUpstream) -> None:
    listed = list(anthropic_client.models.list())
    assert listed and all(m.type == "model" and m.display_name for m in listed)
    assert anthropic_client.models.retrieve(listed[0].id).id == listed[0].id
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.models.retrieve("claude-nope-0")
    for model in listed:
        anthropic_client.messages.create(model=model.id, max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert [call.body["model"] for call in upstream.messages_calls] == [m.id for m in listed]


def test_health_reports_cli_and_login(server: RunningServer) -> None:
    health = httpx.get(f"{server.url}/health").json()
    assert health["status"] == "ok"
    assert health["cli"]["found"] is True and health["cli"]["version"]
    assert health["cli"]["logged_in"] is True and health["cli"]["auth_method"] == "api_key"


# -- process hygiene --------------------------------------------------------------------

def test_disconnect_mid_stream_reaps_the_cli(server: RunningServer, upstream: FakeUpstream) -> None:
    before_dirs = request_dirs()
    marker = uuid.uuid4().hex
    with httpx.stream("POST", f"{server.url}/v1/messages", timeout=30, json={
        "model": "sonnet", "max_tokens": 500, "stream": True,
        "messages": [{"role": "user", "content": f"[[slow:20]] [[echo]] {marker} " + "word " * 60}],
    }) as response:
        for line in response.iter_lines():
            if "text_delta" in line:
                break
        assert cli_processes(), "the CLI should be running mid-stream"
    assert wait_until(lambda: not cli_processes()), f"CLI still running: {cli_processes()}"
    # Killed mid-answer, not left to read its 20 s answer to the end.
    assert wait_until(lambda: upstream.was_cut_short(marker)), "the CLI read its answer to the end"
    assert wait_until(lambda: request_dirs() <= before_dirs), request_dirs() - before_dirs
    assert wait_until(lambda: not zombies()), "a dead CLI was never reaped"


def test_disconnect_while_not_streaming_reaps_the_cli(server: RunningServer, upstream: FakeUpstream) -> None:
    marker = uuid.uuid4().hex
    body = {"model": "sonnet", "max_tokens": 500,
            "messages": [{"role": "user", "content": f"[[slow:20]] [[echo]] {marker} " + "word " * 60}]}
    post_and_leave(server.port, "/v1/messages", body, lambda: upstream.received(marker))
    assert wait_until(lambda: not cli_processes()), "CLI still running after the client left"
    assert wait_until(lambda: upstream.was_cut_short(marker)), "the CLI read its answer to the end"


def test_no_session_transcripts_are_written(anthropic_client: anthropic.Anthropic, cli_env: Any) -> None:
    anthropic_client.messages.create(model="sonnet", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    projects = cli_env / "projects"
    assert not projects.exists() or not any(projects.rglob("*.jsonl"))
