"""The OpenAI Agents SDK in its default mode (the Responses API) running an agent with a
function tool through the proxy, the real CLI and the fake upstream."""

from __future__ import annotations

import json
from typing import Any

import openai
from agents import Agent, OpenAIProvider, RunConfig, Runner, function_tool

from tests.support.bodies import client_turns
from tests.support.fake_upstream import DEFAULT_TEXT, FakeUpstream
from tests.support.server import RunningServer


async def test_an_agent_calls_a_function_tool_and_answers(server: RunningServer, upstream: FakeUpstream) -> None:
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather for a city."""
        calls.append(city)
        return f"It is 22C and sunny in {city}."

    client = openai.AsyncOpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                                _strict_response_validation=True)
    agent = Agent(name="Forecaster", instructions="Answer weather questions with the tool.", model="gpt-4o",
                  tools=[get_weather])
    # The default provider with our client: the SDK's default, the Responses API.
    config = RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)
    result = await Runner.run(agent, 'Weather in Paris? [[tool:get_weather {"city": "Paris"}]]', run_config=config)

    assert calls == ["Paris"]
    assert result.final_output == DEFAULT_TEXT
    assert len(upstream.messages_calls) == 2
    first, second = (call.body for call in upstream.messages_calls)
    assert "Answer weather questions with the tool." in json.dumps(first.get("system"))
    tool: Any = next(t for t in first["tools"] if t["name"].endswith("get_weather"))
    assert tool["input_schema"]["properties"]["city"]["type"] == "string"
    turns = client_turns(second)
    assert [role for role, _ in turns] == ["user", "assistant", "user"]
    result_block = next(b for b in turns[2][1] if b["type"] == "tool_result")
    assert "22C and sunny in Paris" in json.dumps(result_block["content"])
    await client.close()


async def test_an_agent_streams_its_run(server: RunningServer, upstream: FakeUpstream) -> None:
    client = openai.AsyncOpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                                _strict_response_validation=True)
    agent = Agent(name="Echo", instructions="Be brief.", model="gpt-4o")
    config = RunConfig(model_provider=OpenAIProvider(openai_client=client), tracing_disabled=True)
    run = Runner.run_streamed(agent, "[[say:streaming through the agent]]", run_config=config)
    deltas = [event.data.delta async for event in run.stream_events()
              if event.type == "raw_response_event" and event.data.type == "response.output_text.delta"]
    assert "".join(deltas) == "streaming through the agent" == run.final_output
    assert len(upstream.messages_calls) == 1
    await client.close()
