"""The Ollama surface through httpx's ASGI transport and a scripted backend.

Fast (no CLI, no sockets): discovery bodies, NDJSON framing, what the routes hand the
backend, Ollama-shaped errors, the guards as they apply at the root.  The official
``ollama`` client against the real CLI: tests/integration/test_ollama_surface.py.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from claude_code_proxy.app import create_app
from claude_code_proxy.backend.scripted import ScriptedBackend, text_answer
from claude_code_proxy.chat.answer import BackendItem, Completion
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.exceptions import ClaudeProxyError, RateLimitError
from tests.conftest import make_settings

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 24).decode()
USER_HI = [{"role": "user", "content": "hi"}]
DURATIONS = ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration")


def client_for(backend: ScriptedBackend, **settings: Any) -> httpx.AsyncClient:
    app = create_app(make_settings(**settings), backend)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


@pytest.fixture()
async def scripted() -> AsyncIterator[tuple[httpx.AsyncClient, ScriptedBackend]]:
    backend = ScriptedBackend()
    async with client_for(backend) as client:
        yield client, backend


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.headers["content-type"] == "application/x-ndjson"
    raw = response.text.split("\n")
    assert raw[-1] == "", "every object ends with a newline"
    return [json.loads(line) for line in raw[:-1]]


def tool_answer(name: str, arguments: dict[str, Any], *, thinking: str = "", text: str = "") -> list[BackendItem]:
    """Items of an answer that (optionally) thinks, says ``text``, then calls ``name``."""
    usage = {"input_tokens": 30, "output_tokens": 12, "cache_creation_input_tokens": 5, "cache_read_input_tokens": 7}
    items: list[BackendItem] = [{"type": "message_start", "message": {
        "id": "msg_1", "model": "claude-scripted", "content": [], "usage": {**usage, "output_tokens": 1}}}]
    index = 0
    for kind, value in (("thinking", thinking), ("text", text)):
        if value:
            items += [
                {"type": "content_block_start", "index": index, "content_block": {"type": kind, kind: ""}},
                {"type": "content_block_delta", "index": index, "delta": {"type": f"{kind}_delta", kind: value}},
                {"type": "content_block_stop", "index": index},
            ]
            index += 1
    raw = json.dumps(arguments)
    items += [
        {"type": "content_block_start", "index": index, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": f"mcp__client__{name}", "input": {}}},
        {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": raw[:5]}},
        {"type": "content_block_delta", "index": index, "delta": {"type": "input_json_delta", "partial_json": raw[5:]}},
        {"type": "content_block_stop", "index": index},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 12}},
        {"type": "message_stop"},
        Completion("tool_use", None, usage, 0.0, "claude-scripted"),
    ]
    return items


# -- discovery ---------------------------------------------------------------------

async def test_root_answers_like_ollama_for_get_and_head(scripted: Any) -> None:
    client, _ = scripted
    response = await client.get("/")
    assert response.status_code == 200 and response.text == "Ollama is running"
    head = await client.head("/")
    assert head.status_code == 200 and head.content == b""


async def test_version_is_one_current_clients_accept(scripted: Any) -> None:
    client, _ = scripted
    version = (await client.get("/api/version")).json()["version"]
    assert tuple(int(part) for part in version.split(".")) >= (0, 6, 4)


async def test_tags_lists_the_catalog_with_ollama_fields(scripted: Any) -> None:
    client, _ = scripted
    models = (await client.get("/api/tags")).json()["models"]
    assert [m["name"] for m in models] == [f"{m}:latest" for m in make_settings().models]
    for model in models:
        assert model["model"] == model["name"]
        assert model["modified_at"].endswith("Z") and model["size"] == 0 and len(model["digest"]) == 64
        assert {"family", "parameter_size", "quantization_level"} <= model["details"].keys()
        assert model["details"]["family"] == "claude"
    assert len({m["digest"] for m in models}) == len(models)


@pytest.mark.parametrize("name", ["claude-haiku-4-5", "claude-haiku-4-5:latest", "sonnet", "gpt-4o:latest"])
async def test_show_describes_any_catalog_name_with_or_without_a_tag(scripted: Any, name: str) -> None:
    client, _ = scripted
    response = await client.post("/api/show", json={"model": name})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["capabilities"]) == {"completion", "tools", "vision", "thinking"}
    family = body["model_info"]["general.architecture"]
    assert body["model_info"][f"{family}.context_length"] == 200_000
    assert body["details"]["family"] == family
    assert isinstance(body["template"], str) and ".Tools" in body["template"]
    assert "num_ctx 200000" in body["parameters"]


async def test_show_takes_the_older_name_field_and_refuses_unknown_models(scripted: Any) -> None:
    client, _ = scripted
    assert (await client.post("/api/show", json={"name": "haiku"})).status_code == 200
    missing = await client.post("/api/show", json={"model": "llama3.2:3b"})
    assert missing.status_code == 404 and missing.json() == {"error": missing.json()["error"]}
    assert "llama3.2:3b" in missing.json()["error"]
    assert (await client.post("/api/show", json={})).status_code == 400


async def test_ps_lists_nothing_loaded(scripted: Any) -> None:
    client, _ = scripted
    assert (await client.get("/api/ps")).json() == {"models": []}


async def test_the_api_is_also_under_openai_for_copilot(scripted: Any) -> None:
    client, backend = scripted
    for path in ("/api/version", "/api/tags", "/api/ps"):
        assert (await client.get("/openai" + path)).json() == (await client.get(path)).json()
    show = await client.post("/openai/api/show", json={"model": "sonnet"})
    assert show.json() == (await client.post("/api/show", json={"model": "sonnet"})).json()
    answer = await client.post("/openai/api/chat", json={"model": "sonnet", "messages": USER_HI, "stream": False})
    assert answer.json()["message"]["content"] == "Hello from the script." and len(backend.requests) == 1
    assert (await client.post("/openai/api/pull", json={})).status_code == 501
    # Copilot then chats over the OpenAI surface with a name exactly as /api/tags lists it.
    listed = (await client.get("/openai/api/tags")).json()["models"][-1]["model"]
    completion = await client.post("/openai/v1/chat/completions", json={"model": listed, "messages": USER_HI})
    assert completion.status_code == 200 and completion.json()["model"] == listed
    assert backend.requests[-1].model == listed.removesuffix(":latest")
    refused = await client.post("/openai/v1/chat/completions", json={"model": "sonnet:7b", "messages": USER_HI})
    assert refused.status_code == 404  # only the tag the list hands out, elsewhere than Ollama's own routes
    assert list((await client.get("/openai/api/nothing")).json()) == ["error"]


# -- chat and generate -------------------------------------------------------------

async def test_chat_streams_ndjson_by_default(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/api/chat", json={"model": "sonnet:latest", "messages": USER_HI})
    assert response.status_code == 200
    objects = lines(response)
    for obj in objects:
        assert obj["model"] == "sonnet:latest" and obj["created_at"].endswith("Z")
        assert obj["message"]["role"] == "assistant" and isinstance(obj["done"], bool)
    assert [obj["done"] for obj in objects] == [False] * (len(objects) - 1) + [True]
    assert "".join(obj["message"]["content"] for obj in objects) == "Hello from the script."
    last = objects[-1]
    assert last["done_reason"] == "stop" and last["message"]["content"] == ""
    assert last["prompt_eval_count"] == 10 and last["eval_count"] == len("Hello from the script.") // 4
    assert all(isinstance(last[key], int) and last[key] >= 0 for key in DURATIONS)
    assert last["total_duration"] > 0
    parts = last["load_duration"] + last["prompt_eval_duration"] + last["eval_duration"]
    assert abs(parts - last["total_duration"]) <= 3  # rounding of each part
    assert backend.requests[0].model == "sonnet"


async def test_chat_with_stream_false_is_one_object(scripted: Any) -> None:
    client, _ = scripted
    response = await client.post("/api/chat", json={"model": "haiku", "messages": USER_HI, "stream": False})
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["message"] == {"role": "assistant", "content": "Hello from the script."}
    assert body["done"] is True and body["done_reason"] == "stop" and body["model"] == "haiku"
    assert all(isinstance(body[key], int) for key in DURATIONS)
    assert body["prompt_eval_count"] == 10


async def test_generate_streams_responses_and_honours_system_and_raw(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/api/generate", json={"model": "sonnet", "prompt": "Why?", "system": "Be brief."})
    objects = lines(response)
    assert "".join(obj["response"] for obj in objects) == "Hello from the script."
    assert objects[-1]["done"] is True and objects[-1]["response"] == ""
    chat = backend.requests[-1]
    assert chat.system == "Be brief."
    assert chat.messages == [{"role": "user", "content": [{"type": "text", "text": "Why?"}]}]
    whole = await client.post("/api/generate", json={"model": "sonnet", "prompt": "[INST] x [/INST]",
                                                     "system": "ignored when raw", "raw": True, "stream": False})
    assert whole.json()["response"] == "Hello from the script."
    assert backend.requests[-1].system is None


async def test_generate_refuses_suffix_plainly(scripted: Any) -> None:
    client, backend = scripted
    response = await client.post("/api/generate", json={"model": "sonnet", "prompt": "def f(", "suffix": "return x"})
    assert response.status_code == 400 and "suffix" in response.json()["error"]
    assert backend.requests == []


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/chat", {"messages": []}, "message"),
    ("/api/generate", {"prompt": ""}, "response"),
])
async def test_nothing_to_say_only_loads_the_model(scripted: Any, path: str, body: Any, field: str) -> None:
    client, backend = scripted
    loaded = (await client.post(path, json={"model": "sonnet", **body})).json()
    assert loaded["done"] is True and loaded["done_reason"] == "load" and field in loaded
    unloaded = (await client.post(path, json={"model": "sonnet", "keep_alive": 0, **body})).json()
    assert unloaded["done_reason"] == "unload"
    assert backend.requests == []
    assert (await client.post(path, json={"model": "nope", **body})).status_code == 404


async def test_conversation_fields_reach_the_backend(scripted: Any) -> None:
    client, backend = scripted
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is this?", "images": [PNG, JPEG]},
        {"role": "assistant", "content": "Let me look.", "thinking": "unsigned, so dropped",
         "tool_calls": [{"function": {"name": "lookup", "arguments": {"q": "x"}}},
                        {"function": {"name": "zoom", "arguments": "{\"level\": 2}"}}]},
        {"role": "tool", "tool_name": "zoom", "content": "zoomed"},
        {"role": "tool", "content": "found"},
        {"role": "system", "content": "Answer in French."},
    ]
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look up.",
                                               "parameters": {"type": "object", "properties": {"q": {}}}}},
             {"type": "function", "function": {"name": "zoom"}}]
    response = await client.post("/api/chat", json={
        "model": "opus", "messages": messages, "tools": tools, "stream": False, "keep_alive": "5m",
        "options": {"num_predict": 321, "stop": ["END", " "], "temperature": 0.2, "top_k": 5, "seed": 1}})
    assert response.status_code == 200, response.text
    chat: ChatRequest = backend.requests[0]
    assert chat.model == "opus" and chat.max_tokens == 321 and chat.stop_sequences == ["END"]
    assert chat.system == "Be brief.\nAnswer in French."
    assert [tool.name for tool in chat.tools] == ["lookup", "zoom"]
    assert chat.tools[1].input_schema == {"type": "object", "properties": {}}
    user, assistant, results = chat.messages
    assert [block["source"]["media_type"] for block in user["content"][:2]] == ["image/png", "image/jpeg"]
    assert user["content"][2] == {"type": "text", "text": "What is this?"}
    assert assistant["content"] == [
        {"type": "text", "text": "Let me look."},
        {"type": "tool_use", "id": "call_2_0", "name": "lookup", "input": {"q": "x"}},
        {"type": "tool_use", "id": "call_2_1", "name": "zoom", "input": {"level": 2}},
    ]
    # Matched by tool_name first, then in order: each result answers its own call.
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_2_1", "content": "zoomed"},
        {"type": "tool_result", "tool_use_id": "call_2_0", "content": "found"},
    ]
    assert chat.thinking is None and chat.output_schema is None


async def test_defaults_think_and_format(scripted: Any) -> None:
    client, backend = scripted

    async def handed(**fields: Any) -> ChatRequest:
        response = await client.post("/api/chat", json={"model": "sonnet", "messages": USER_HI, "stream": False,
                                                        **fields})
        assert response.status_code == 200, response.text
        chat: ChatRequest = backend.requests[-1]
        return chat

    default = make_settings().default_max_tokens
    plain = await handed()
    assert plain.max_tokens == default and plain.thinking is None
    assert (await handed(options={"num_predict": -1})).max_tokens == default  # Ollama's "no limit"
    thinking = await handed(think=True)
    assert thinking.thinking == {"type": "enabled", "budget_tokens": 2048}
    assert thinking.max_tokens == default + 2048
    assert (await handed(think="high")).thinking == {"type": "enabled", "budget_tokens": 4096}
    capped = await handed(think="high", options={"num_predict": 3000})
    assert capped.thinking == {"type": "enabled", "budget_tokens": 2999} and capped.max_tokens == 3000
    assert (await handed(think="low", options={"num_predict": 500})).thinking is None
    assert (await handed(think=False)).thinking is None
    assert (await handed(format="json")).output_schema == {"type": "object"}
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    assert (await handed(format=schema)).output_schema == schema
    assert (await handed(format="")).output_schema is None


async def test_tool_calls_stream_whole_with_object_arguments() -> None:
    answer = tool_answer("get_weather", {"city": "Paris"}, thinking="Hmm.", text="On it.")
    backend = ScriptedBackend(lambda chat: answer)
    async with client_for(backend) as client:
        tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
        response = await client.post("/api/chat", json={"model": "sonnet", "messages": USER_HI, "tools": tools})
        objects = lines(response)
        messages = [obj["message"] for obj in objects]
        assert messages[0] == {"role": "assistant", "content": "", "thinking": "Hmm."}
        assert messages[1] == {"role": "assistant", "content": "On it."}
        assert messages[2]["tool_calls"] == [
            {"id": "toolu_1", "function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]
        assert objects[-1]["done"] is True and objects[-1]["done_reason"] == "stop"
        assert objects[-1]["prompt_eval_count"] == 30 + 5 + 7 and objects[-1]["eval_count"] == 12

        whole = (await client.post("/api/chat", json={"model": "sonnet", "messages": USER_HI, "tools": tools,
                                                      "stream": False})).json()
        assert whole["message"] == {"role": "assistant", "content": "On it.", "thinking": "Hmm.",
                                    "tool_calls": messages[2]["tool_calls"]}


async def test_max_tokens_is_done_reason_length(scripted: Any) -> None:
    backend = ScriptedBackend(lambda chat: text_answer("cut", stop_reason="max_tokens"))
    async with client_for(backend) as client:
        body = (await client.post("/api/generate", json={"model": "sonnet", "prompt": "x", "stream": False})).json()
        assert body["done_reason"] == "length"


# -- errors ------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
async def test_unknown_models_are_an_ollama_404_and_spawn_nothing(scripted: Any, path: str) -> None:
    client, backend = scripted
    response = await client.post(path, json={"model": "llama3.2:latest", "messages": USER_HI, "prompt": "hi"})
    assert response.status_code == 404
    assert list(response.json()) == ["error"] and "llama3.2:latest" in response.json()["error"]
    assert backend.requests == []


@pytest.mark.parametrize("body", [
    {"model": "sonnet", "messages": "hi"},
    {"model": "sonnet", "messages": [{"role": "robot", "content": "hi"}]},
    {"model": "sonnet", "messages": USER_HI, "stream": "yes"},
    {"model": "sonnet", "messages": USER_HI, "options": {"num_predict": "5"}},
    {"model": "sonnet", "messages": USER_HI, "think": "maximum"},
    {"model": "sonnet", "messages": USER_HI, "format": "yaml"},
    {"model": "sonnet", "messages": USER_HI, "options": {"num_predict": 10_000_000}},
    {"model": "sonnet", "messages": [{"role": "user", "content": "x", "images": ["bm90IGFuIGltYWdl"]}]},
    {"model": "sonnet", "messages": [{"role": "user", "content": "x", "images": ["***"]}]},
    {"model": "sonnet", "messages": [{"role": "tool", "content": "orphan"}]},
    {"model": "sonnet", "messages": [{"role": "system", "content": "only a system prompt"}]},
    {"model": "sonnet", "messages": [{"role": "user", "content": "a\u0000b"}]},
])
async def test_bad_input_is_an_ollama_400_and_spawns_nothing(scripted: Any, body: Any) -> None:
    client, backend = scripted
    response = await client.post("/api/chat", json=body)
    assert response.status_code == 400, response.text
    assert list(response.json()) == ["error"] and response.json()["error"]
    assert backend.requests == []


async def test_unsupported_image_types_are_named(scripted: Any) -> None:
    client, _ = scripted
    bmp = base64.b64encode(b"BM" + b"\x00" * 30).decode()
    response = await client.post("/api/generate", json={"model": "sonnet", "prompt": "x", "images": [bmp]})
    assert response.status_code == 400 and "PNG, JPEG, GIF or WebP" in response.json()["error"]
    assert response.json()["error"].startswith("images.0: ")  # the field at fault, in the one string there is


async def test_an_error_before_the_first_token_keeps_its_status() -> None:
    backend = ScriptedBackend(lambda chat: [RateLimitError("slow down", retry_after=7)])
    async with client_for(backend) as client:
        for stream in (False, True):
            response = await client.post("/api/chat", json={"model": "sonnet", "messages": USER_HI, "stream": stream})
            assert response.status_code == 429 and response.headers["retry-after"] == "7"
            assert response.json() == {"error": "slow down"}


async def test_a_failure_mid_stream_is_an_error_line_and_never_done() -> None:
    backend = ScriptedBackend(lambda chat: [*text_answer("partial answer")[:3], ClaudeProxyError("boom")])
    async with client_for(backend) as client:
        objects = lines(await client.post("/api/chat", json={"model": "sonnet", "messages": USER_HI}))
        assert objects[-1] == {"error": "boom"}
        assert not any(obj.get("done") for obj in objects)


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/pull"), ("POST", "/api/push"), ("POST", "/api/create"), ("POST", "/api/copy"),
    ("DELETE", "/api/delete"), ("HEAD", "/api/blobs/sha256:abc"), ("POST", "/api/blobs/sha256:abc"),
    ("POST", "/api/embed"), ("POST", "/api/embeddings"),
])
async def test_local_weight_endpoints_say_there_are_none(scripted: Any, method: str, path: str) -> None:
    client, _ = scripted
    response = await client.request(method, path, json={"model": "sonnet"})
    assert response.status_code == 501
    if method != "HEAD":
        assert "no local weights" in response.json()["error"]


async def test_unknown_paths_keep_their_owner_shape(scripted: Any) -> None:
    client, _ = scripted
    ollama = await client.get("/api/nothing")
    assert ollama.status_code == 404 and list(ollama.json()) == ["error"]
    assert (await client.get("/api/chat")).json() == {"error": "Method GET is not allowed here."}
    elsewhere = await client.get("/nothing")
    assert elsewhere.status_code == 404 and elsewhere.json()["type"] == "error"  # the default shape
    assert (await client.get("/v1/nothing")).json()["type"] == "error"


def test_the_registry_gives_ollama_the_root_and_api_only() -> None:
    registry = create_app(make_settings(), ScriptedBackend()).state.registry
    assert registry.for_path("/").name == "ollama"
    assert registry.for_path("/api/chat").name == "ollama"
    assert registry.for_path("/nothing").name == "anthropic"
    assert registry.for_path("/v1/messages").name == "anthropic"
    assert registry.for_path("/openai/v1/models").name == "openai_chat"
    assert registry.for_path("/openai/api/show").name == "ollama"  # Copilot's base (routes.py)
    assert registry.for_path("/health").name == "ops"


# -- guards ------------------------------------------------------------------------

async def test_a_json_body_is_taken_whatever_its_content_type(scripted: Any) -> None:
    client, backend = scripted
    body = json.dumps({"model": "sonnet", "messages": USER_HI, "stream": False})
    for content_type in ("application/x-www-form-urlencoded", "text/plain", None):
        headers = {"content-type": content_type} if content_type else {}
        response = await client.post("/api/chat", content=body, headers=headers)
        assert response.status_code == 200, (content_type, response.text)
    assert len(backend.requests) == 3
    # The other surfaces still insist on JSON.
    refused = await client.post("/openai/v1/chat/completions", content=body, headers={"content-type": "text/plain"})
    assert refused.status_code == 415


async def test_browser_requests_stay_refused() -> None:
    backend = ScriptedBackend()
    async with client_for(backend, cors_origins=["http://app.example"]) as client:
        body = json.dumps({"model": "sonnet", "messages": USER_HI, "stream": False})
        foreign = await client.post("/api/chat", content=body,
                                    headers={"content-type": "text/plain", "origin": "http://evil.example"})
        assert foreign.status_code == 403 and list(foreign.json()) == ["error"]
        # Even an allowed origin must send JSON as JSON: a "simple" request is a CSRF vector.
        simple = await client.post("/api/chat", content=body,
                                   headers={"content-type": "text/plain", "origin": "http://app.example"})
        assert simple.status_code == 415 and list(simple.json()) == ["error"]
        allowed = await client.post("/api/chat", content=body,
                                    headers={"content-type": "application/json", "origin": "http://app.example"})
        assert allowed.status_code == 200
    assert len(backend.requests) == 1


async def test_the_api_key_is_required_everywhere_on_the_surface() -> None:
    async with client_for(ScriptedBackend(), api_key="sekret") as client:
        for path in ("/", "/api/version", "/api/tags", "/api/ps", "/openai/api/tags"):
            refused = await client.get(path)
            assert refused.status_code == 401 and list(refused.json()) == ["error"]
            assert (await client.get(path, headers={"authorization": "Bearer sekret"})).status_code == 200
        refused = await client.post("/api/chat", json={"model": "sonnet", "messages": USER_HI})
        assert refused.status_code == 401
