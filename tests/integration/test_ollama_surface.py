"""The Ollama surface end to end: the official ``ollama`` client -> real uvicorn -> real
bundled CLI -> the fake upstream, asserting what upstream received.  Then GitHub
Copilot's Ollama discovery, replayed request by request, before it chats over the
OpenAI surface.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import ollama
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import make_settings
from tests.support.bodies import client_turns, texts
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream, count_tokens
from tests.support.procs import cli_processes, wait_until
from tests.support.server import RunningServer, serve

PNG_1PX = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d4944415478da63f8cfc0f01f0005000201a5f0b0e90000000049454e44ae426082"
)
HI = [{"role": "user", "content": "hi"}]
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def get_weather(city: str) -> str:
    """Get the current weather for a city.

    Args:
      city: The city to look up.

    Returns:
      The weather.
    """
    return "sunny"


@pytest.fixture()
def client(server: RunningServer) -> ollama.Client:
    return ollama.Client(host=server.url)


def spawned(server: RunningServer) -> int:
    return int(server.app.state.backend.spawned)  # type: ignore[attr-defined]


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    return system if isinstance(system, str) else "\n".join(b.get("text", "") for b in system)


def check_final(response: ollama.ChatResponse | ollama.GenerateResponse, upstream: FakeUpstream) -> None:
    """Real figures: upstream's token counts, measured durations that add up."""
    assert response.done is True and response.done_reason == "stop"
    assert response.prompt_eval_count == count_tokens(upstream.last_body)
    assert response.eval_count == len(DEFAULT_TEXT.split())  # the fake upstream's one token per word
    figures = [getattr(response, key) for key in DURATIONS]
    assert all(isinstance(value, int) and value > 0 for value in figures), figures
    total, *parts = figures
    assert abs(sum(parts) - total) <= 3


# -- discovery ---------------------------------------------------------------------

def test_list_and_show(client: ollama.Client) -> None:
    listed = client.list()
    names = [model.model for model in listed.models]
    assert names == [f"{model}:latest" for model in make_settings().models]
    first = listed.models[0]
    assert first.modified_at is not None and first.digest and first.details is not None
    assert first.details.family == "claude"

    shown = client.show(names[-1])
    assert shown.capabilities is not None
    assert {"completion", "tools", "vision", "thinking"} <= set(shown.capabilities)
    assert shown.modelinfo is not None
    assert shown.modelinfo[f"{shown.modelinfo['general.architecture']}.context_length"] == 200_000
    assert shown.template and shown.parameters and shown.details is not None

    with pytest.raises(ollama.ResponseError) as info:
        client.show("llama3.2")
    assert info.value.status_code == 404 and "llama3.2" in info.value.error
    assert client.ps().models == []


# -- chat --------------------------------------------------------------------------

def test_chat_plain(client: ollama.Client, upstream: FakeUpstream) -> None:
    response = client.chat(model="claude-haiku-4-5:latest", messages=HI)
    assert response.message.role == "assistant" and response.message.content == DEFAULT_TEXT
    assert response.model == "claude-haiku-4-5:latest" and response.created_at
    check_final(response, upstream)
    body = upstream.last_body
    assert body["model"] == "claude-haiku-4-5"
    assert texts(body) == [("user", "hi")]
    assert body["max_tokens"] == make_settings().default_max_tokens


def test_chat_streams_token_by_token(client: ollama.Client, upstream: FakeUpstream) -> None:
    parts = list(client.chat(model="sonnet", messages=HI, stream=True))
    assert len(parts) > 3 and all(not part.done for part in parts[:-1])
    assert "".join(part.message.content or "" for part in parts) == DEFAULT_TEXT
    assert all(part.model == "sonnet" and part.created_at for part in parts)
    check_final(parts[-1], upstream)


def test_multi_turn_with_a_system_prompt_and_options(client: ollama.Client, upstream: FakeUpstream) -> None:
    response = client.chat(model="sonnet", messages=[
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "arr"},
        {"role": "user", "content": "second [[echo]]"},
    ], options={"num_predict": 77, "temperature": 0.3, "stop": ["never-said"]}, keep_alive="10m")
    assert response.message.content == "second"
    body = upstream.last_body
    assert "You are a pirate." in system_text(body)
    assert texts(body) == [("user", "first"), ("assistant", "arr"), ("user", "second [[echo]]")]
    assert body["max_tokens"] == 77 and body["stop_sequences"] == ["never-said"]
    assert "temperature" not in body


def test_tools_round_trip(client: ollama.Client, upstream: FakeUpstream) -> None:
    messages: list[Any] = [{"role": "user", "content": '[[tool:get_weather {"city": "Paris"}]]'}]
    first = client.chat(model="sonnet", messages=messages, tools=[get_weather])
    [call] = first.message.tool_calls or []
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    assert first.done_reason == "stop"
    declared = {tool["name"]: tool for tool in upstream.last_body["tools"]}["mcp__client__get_weather"]
    assert declared["description"].startswith("Get the current weather for a city.")
    assert declared["input_schema"]["properties"]["city"]["type"] == "string"
    assert len(upstream.messages_calls) == 1, "nothing runs the tool: the call ends the run"

    streamed = [part for part in client.chat(model="sonnet", messages=messages, tools=[get_weather], stream=True)
                if part.message.tool_calls]
    assert [c.function.arguments for part in streamed for c in part.message.tool_calls or []] == [{"city": "Paris"}]

    # The client sends the call back without an id (its types have none) and the result by tool name.
    messages += [first.message, {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
                 {"role": "user", "content": "[[say:It is sunny.]]"}]
    second = client.chat(model="sonnet", messages=messages, tools=[get_weather])
    assert second.message.content == "It is sunny."
    turns = client_turns(upstream.last_body)
    assert [role for role, _ in turns] == ["user", "assistant", "user"]
    [use] = [b for b in turns[1][1] if b["type"] == "tool_use"]
    assert use["name"] == "mcp__client__get_weather" and use["input"] == {"city": "Paris"}
    result = turns[2][1][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == use["id"]
    assert "sunny" in json.dumps(result["content"])


class Person(BaseModel):
    name: str
    age: int


def test_format_schema_and_json(client: ollama.Client, upstream: FakeUpstream) -> None:
    directive = '[[tool:StructuredOutput {"name": "Ada", "age": 36}]]'
    response = client.chat(model="sonnet", messages=[{"role": "user", "content": directive}],
                           format=Person.model_json_schema())
    assert Person.model_validate_json(response.message.content or "") == Person(name="Ada", age=36)
    assert response.done_reason == "stop" and not response.message.tool_calls
    schema = {tool["name"]: tool for tool in upstream.last_body["tools"]}["StructuredOutput"]["input_schema"]
    assert set(schema["properties"]) == {"name", "age"}

    generated = client.generate(model="sonnet", prompt='[[tool:StructuredOutput {"ok": true}]]', format="json")
    assert json.loads(generated.response) == {"ok": True}


def test_think(client: ollama.Client, upstream: FakeUpstream) -> None:
    prompt = [{"role": "user", "content": "[[thinking]] go"}]
    response = client.chat(model="claude-haiku-4-5", messages=prompt, think=True)
    assert response.message.thinking == "Let me think about this carefully."
    assert response.message.content == DEFAULT_TEXT
    body = upstream.last_body
    assert (body["thinking"]["type"], body["thinking"]["budget_tokens"]) == ("enabled", 2048)
    assert body["max_tokens"] == make_settings().default_max_tokens + 2048

    parts = list(client.chat(model="claude-haiku-4-5", messages=prompt, think="low", stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "Let me think about this carefully."
    assert "".join(p.message.content or "" for p in parts) == DEFAULT_TEXT
    assert upstream.last_body["thinking"]["budget_tokens"] == 1024

    client.chat(model="claude-haiku-4-5", messages=prompt, think=False)
    assert upstream.last_body.get("thinking", {}).get("type") != "enabled"


def test_images(client: ollama.Client, upstream: FakeUpstream) -> None:
    response = client.chat(model="sonnet", messages=[
        {"role": "user", "content": "what is this?", "images": [PNG_1PX]}])
    assert response.message.content == DEFAULT_TEXT
    blocks = client_turns(upstream.last_body)[-1][1]
    data = base64.b64encode(PNG_1PX).decode()
    assert {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}} in blocks
    assert {"type": "text", "text": "what is this?"} in blocks


# -- generate ----------------------------------------------------------------------

def test_generate(client: ollama.Client, upstream: FakeUpstream) -> None:
    response = client.generate(model="haiku", prompt="Why is the sky blue?", system="Answer in one line.",
                               options={"num_predict": 64})
    assert response.response == DEFAULT_TEXT and response.model == "haiku"
    check_final(response, upstream)
    body = upstream.last_body
    assert "Answer in one line." in system_text(body)
    assert texts(body) == [("user", "Why is the sky blue?")] and body["max_tokens"] == 64

    parts = list(client.generate(model="haiku", prompt="hi", stream=True, images=[PNG_1PX]))
    assert "".join(p.response or "" for p in parts) == DEFAULT_TEXT and parts[-1].done
    assert any(b["type"] == "image" for b in client_turns(upstream.last_body)[-1][1])


# -- errors ------------------------------------------------------------------------

def test_errors_are_ollama_shaped_and_spawn_nothing(client: ollama.Client, server: RunningServer) -> None:
    before = spawned(server)
    for call in (lambda: client.chat(model="llama3.2:latest", messages=HI),
                 lambda: list(client.chat(model="llama3.2", messages=HI, stream=True)),
                 lambda: client.generate(model="mistral", prompt="x")):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 404 and "does not exist" in info.value.error
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="sonnet", prompt="def f(", suffix="    return x")
    assert info.value.status_code == 400 and "suffix" in info.value.error
    for call in (lambda: client.pull("llama3.2"), lambda: client.embed(model="sonnet", input="x"),
                 lambda: client.delete("sonnet")):
        with pytest.raises(ollama.ResponseError) as info:
            call()
        assert info.value.status_code == 501 and "no local weights" in info.value.error
    assert spawned(server) == before


def test_a_failure_mid_stream_raises_in_the_client(client: ollama.Client) -> None:
    received: list[str] = []
    with pytest.raises(ollama.ResponseError) as info:
        for part in client.chat(model="sonnet", messages=[{"role": "user", "content": "[[drop]]"}], stream=True):
            received.append(part.message.content or "")
            assert not part.done
    assert info.value.error and "".join(received)  # tokens came, then the error line


def test_disconnect_mid_stream_ends_the_cli(server: RunningServer, client: ollama.Client) -> None:
    body = {"model": "sonnet", "messages": [{"role": "user", "content": "[[slow:20]] " + "word " * 60}]}
    with httpx.stream("POST", f"{server.url}/api/chat", json=body, timeout=30) as response:
        for line in response.iter_lines():
            if json.loads(line)["message"]["content"]:
                break
        assert cli_processes(), "the CLI should be running mid-stream"
    assert wait_until(lambda: not cli_processes(), timeout=5.0), "CLI still running after the client left"
    assert client.chat(model="sonnet", messages=HI).message.content == DEFAULT_TEXT


def test_curl_style_bodies_work_and_browsers_stay_out(server: RunningServer, upstream: FakeUpstream) -> None:
    # What Ollama's documentation does: curl -d '{...}' (a form content type).
    raw = json.dumps({"model": "sonnet", "prompt": "hi", "stream": False})
    form = httpx.post(f"{server.url}/api/generate", content=raw,
                      headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 200 and form.json()["response"] == DEFAULT_TEXT
    calls = len(upstream.messages_calls)
    page = httpx.post(f"{server.url}/api/generate", content=raw,
                      headers={"content-type": "text/plain", "origin": "http://evil.example"})
    assert page.status_code == 403 and list(page.json()) == ["error"]
    assert len(upstream.messages_calls) == calls


def test_the_api_key_as_a_bearer_header(cli_env: Any, upstream: FakeUpstream) -> None:
    with serve(make_settings(api_key="the-right-key")) as keyed:
        assert httpx.get(keyed.url).status_code == 401
        assert httpx.get(keyed.url, headers={"authorization": "Bearer the-right-key"}).text == "Ollama is running"
        with pytest.raises(ollama.ResponseError) as info:
            ollama.Client(host=keyed.url).list()
        assert info.value.status_code == 401
        with pytest.raises(ollama.ResponseError):
            ollama.Client(host=keyed.url, headers={"Authorization": "Bearer wrong"}).chat(model="sonnet", messages=HI)
        assert not upstream.messages_calls
        right = ollama.Client(host=keyed.url, headers={"Authorization": "Bearer the-right-key"})
        assert right.chat(model="sonnet", messages=HI).message.content == DEFAULT_TEXT


# -- GitHub Copilot ----------------------------------------------------------------

def test_copilot_discovery_then_chat_over_the_openai_surface(server: RunningServer, upstream: FakeUpstream) -> None:
    """Copilot's Ollama provider, request by request: version gate, tags, show per model
    (capabilities and context length), then OpenAI chat at ``<base>/v1/chat/completions``.
    Its base URL here is ``<server>/openai`` (README)."""
    base = f"{server.url}/openai"
    # Its discovery requests carry no key (so it works only with the proxy's key unset).
    with httpx.Client(base_url=base, headers={"user-agent": "GitHubCopilotChat/0.30.0"}) as copilot:
        version = copilot.get("/api/version").json()["version"]
        assert [int(part) for part in version.split(".")] >= [0, 6, 4]
        models = [model["model"] for model in copilot.get("/api/tags").json()["models"]]
        assert models
        for model in models:
            info = copilot.post("/api/show", json={"model": model}).json()
            architecture = info["model_info"]["general.architecture"]
            assert info["model_info"][f"{architecture}.context_length"] == 200_000
            assert {"tools", "vision"} <= set(info["capabilities"]) and info["model_info"]["general.basename"]
    assert not upstream.messages_calls

    chat = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, _strict_response_validation=True)
    model = models[-1]  # "claude-haiku-4-5:latest", exactly as listed
    stream = chat.chat.completions.create(
        model=model, stream=True, stream_options={"include_usage": True}, max_completion_tokens=300,
        messages=[{"role": "system", "content": "You are a coding assistant."},
                  {"role": "user", "content": "first"}, {"role": "assistant", "content": "ok"},
                  {"role": "user", "content": "second"}],
        tools=[{"type": "function", "function": {"name": "read_file", "parameters": {
            "type": "object", "properties": {"path": {"type": "string"}}}}}],
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DEFAULT_TEXT
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    body = upstream.last_body
    assert body["model"] == "claude-haiku-4-5" and body["max_tokens"] == 300
    assert "You are a coding assistant." in system_text(body)
    assert texts(body) == [("user", "first"), ("assistant", "ok"), ("user", "second")]
    assert "mcp__client__read_file" in {tool["name"] for tool in body["tools"]}
