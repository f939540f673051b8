"""The Responses surface end to end: the real openai SDK (strict) -> real uvicorn -> the real
bundled CLI -> the fake upstream, asserting what upstream received."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import openai
import pytest
from pydantic import BaseModel

from tests.conftest import make_settings
from tests.support.bodies import client_turns, texts
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream
from tests.support.server import RunningServer, serve

WEATHER: Any = {"type": "function", "name": "get_weather", "description": "Weather for a city.", "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                               "additionalProperties": False}}
APPLY_PATCH: Any = {"type": "custom", "name": "apply_patch", "description": "Edit files with a patch."}


@pytest.fixture()
def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                         _strict_response_validation=True)


def system_text(body: dict[str, Any]) -> str:
    system = body.get("system") or ""
    return system if isinstance(system, str) else "\n".join(b.get("text", "") for b in system)


def test_create_answers_and_upstream_sees_one_exact_conversation(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    response = client.responses.create(model="gpt-4o", instructions="Be brief.", max_output_tokens=200, input=[
        {"role": "developer", "content": "Answer in English."},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "first answer", "annotations": []}]},
        {"role": "user", "content": [{"type": "input_text", "text": "second question"}]},
    ])
    assert response.status == "completed" and response.output_text == DEFAULT_TEXT
    assert response.model == "gpt-4o" and response.usage is not None and response.usage.output_tokens > 0
    assert len(upstream.messages_calls) == 1
    body = upstream.last_body
    assert "sonnet" in body["model"] and body["max_tokens"] == 200
    assert "Be brief.\nAnswer in English." in system_text(body)
    assert texts(body) == [("user", "first question"), ("assistant", "first answer"), ("user", "second question")]


def test_streaming_events_and_the_stream_helper(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    events = list(client.responses.create(model="sonnet", input="hi", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == DEFAULT_TEXT

    with client.responses.stream(model="sonnet", input="[[say:streamed words here]]") as stream:
        deltas = [event.delta for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == "streamed words here" == final.output_text
    assert final.status == "completed"


def test_max_output_tokens_cut_is_incomplete(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    response = client.responses.create(model="sonnet", input="[[long:40]]", max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None and response.incomplete_details.reason == "max_output_tokens"
    assert upstream.last_body["max_tokens"] == 5
    with client.responses.stream(model="sonnet", input="[[long:40]]", max_output_tokens=5) as stream:
        kinds = [event.type for event in stream]
    assert kinds[-1] == "response.incomplete" and "response.completed" not in kinds


class City(BaseModel):
    city: str
    sunny: bool


def test_parse_with_a_text_format(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    parsed = client.responses.parse(model="sonnet", text_format=City,
                                    input='[[say:{"city": "Paris", "sunny": true}]]')
    assert parsed.output_parsed == City(city="Paris", sunny=True)
    # The structured-output path: the CLI asks upstream for the schema through its own tool.
    assert any(tool["name"] == "StructuredOutput" for tool in upstream.last_body.get("tools", []))


def test_a_function_call_and_its_result_round_trip(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    first = client.responses.create(model="sonnet", tools=[WEATHER],
                                    input='Weather? [[tool:get_weather {"city": "Paris"}]]')
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("toolu_")
    tool = next(t for t in upstream.last_body["tools"] if t["name"].endswith("get_weather"))
    assert tool["input_schema"]["required"] == ["city"]

    second = client.responses.create(model="sonnet", tools=[WEATHER], input=[
        {"role": "user", "content": 'Weather? [[tool:get_weather {"city": "Paris"}]]'},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "22C and sunny"},
    ])
    assert second.output_text == DEFAULT_TEXT
    turns = client_turns(upstream.last_body)
    assert [role for role, _ in turns] == ["user", "assistant", "user"]
    use = next(b for b in turns[1][1] if b["type"] == "tool_use")
    assert use["id"] == call.call_id and use["input"] == {"city": "Paris"}
    result = next(b for b in turns[2][1] if b["type"] == "tool_result")
    assert result["tool_use_id"] == call.call_id and "22C and sunny" in json.dumps(result["content"])


def test_a_custom_tool_call(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    patch = "*** Begin Patch\\n*** Add File: a.txt\\n+hi\\n*** End Patch\\n"
    response = client.responses.create(model="sonnet", tools=[APPLY_PATCH],
                                       input=f'[[tool:apply_patch {{"input": "{patch}"}}]]')
    [call] = response.output
    assert call.type == "custom_tool_call" and call.name == "apply_patch"
    assert call.input == "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n"
    tool = next(t for t in upstream.last_body["tools"] if t["name"].endswith("apply_patch"))
    assert tool["input_schema"]["properties"]["input"]["type"] == "string"


def test_previous_response_id_sends_only_the_new_input(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    first = client.responses.create(model="sonnet", input="[[say:Nice to meet you, Ada.]] I am Ada.")
    second = client.responses.create(model="sonnet", input="What is my name?", previous_response_id=first.id)
    assert second.previous_response_id == first.id
    assert texts(upstream.last_body) == [("user", "[[say:Nice to meet you, Ada.]] I am Ada."),
                                         ("assistant", "Nice to meet you, Ada."), ("user", "What is my name?")]
    assert client.responses.retrieve(second.id).output_text == DEFAULT_TEXT
    items = client.responses.input_items.list(second.id)
    assert [item.content[0].text for item in items.data] == ["What is my name?"]  # type: ignore[union-attr]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="sonnet", input="again", previous_response_id=first.id)


def test_signed_thinking_round_trips_through_the_cli(client: openai.OpenAI, upstream: FakeUpstream) -> None:
    first = client.responses.create(
        model="sonnet", tools=[WEATHER], reasoning={"effort": "low", "summary": "auto"},
        include=["reasoning.encrypted_content"], input='[[thinking]] [[tool:get_weather {"city": "Oslo"}]]')
    reasoning, call = first.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Let me think about this carefully."
    assert reasoning.encrypted_content and call.type == "function_call"
    assert upstream.last_body["thinking"]["type"] in ("enabled", "adaptive")  # the CLI picks per model

    client.responses.create(model="sonnet", tools=[WEATHER], reasoning={"effort": "low"}, input=[
        {"role": "user", "content": '[[thinking]] [[tool:get_weather {"city": "Oslo"}]]'},
        reasoning.model_dump(exclude_none=True), call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "-5C"}])
    body = upstream.last_body
    # Kept on: the tool call came back with its signed thinking.
    assert body["thinking"]["type"] in ("enabled", "adaptive")
    assistant = client_turns(body)[1][1]
    assert assistant[0] == {"type": "thinking", "thinking": "Let me think about this carefully.",
                            "signature": "c2lnbmF0dXJl"}


def test_rate_limits_are_429_with_a_wait_codex_can_read(cli_env: Path, upstream: FakeUpstream) -> None:
    # One CLI retry: the CLI learns upstream's retry-after (7 s) and waits it out once.
    with serve(make_settings(cli_max_retries=1)) as server:
        client = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                               _strict_response_validation=True)
        with pytest.raises(openai.RateLimitError) as limited:
            client.responses.create(model="sonnet", input="[[error:429]]", timeout=60)
    assert len(upstream.messages_calls) == 2, "the proxy adds no retries of its own"
    assert abs(int(limited.value.response.headers["retry-after"]) - 7) <= 2
    error = limited.value.body
    assert isinstance(error, dict) and error["code"] == "rate_limit_exceeded"
    assert re.search(r"try again in \d+s", error["message"]), error
