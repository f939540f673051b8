"""The run state machine: scripted SDK messages in, upstream events, an end or an error out.

The messages are the SDK's own types, built as the SDK parses them from the CLI.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent, SystemMessage, TextBlock
from claude_agent_sdk.types import RateLimitEvent, RateLimitInfo

from claude_code_proxy.backend import run_state
from claude_code_proxy.backend.run_state import RunState, check_isolation, rate_limit_summary
from claude_code_proxy.exceptions import (
    AuthenticationError,
    ClaudeProxyError,
    InvalidRequestError,
    IsolationError,
    NotFoundError,
    NotLoggedInError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    UpstreamError,
)

USAGE = {"input_tokens": 12, "output_tokens": 1, "cache_creation_input_tokens": 4, "cache_read_input_tokens": 2}
NOW = 1_700_000_000.0


@pytest.fixture(autouse=True)
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one clock RunState reads (a rate-limit reset time -> Retry-After)."""
    monkeypatch.setattr(run_state, "time", SimpleNamespace(time=lambda: NOW))


def sdk_event(event: dict[str, Any], parent: str | None = None) -> StreamEvent:
    return StreamEvent(uuid="u", session_id="s", event=event, parent_tool_use_id=parent)


def message_start(model: str = "claude-sonnet-4-5") -> StreamEvent:
    return sdk_event({"type": "message_start", "message": {
        "id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [], "usage": USAGE}})


def block_start(index: int, block: dict[str, Any]) -> StreamEvent:
    return sdk_event({"type": "content_block_start", "index": index, "content_block": block})


def block_delta(index: int, **delta: Any) -> StreamEvent:
    return sdk_event({"type": "content_block_delta", "index": index, "delta": delta})


def message_delta(stop_reason: str | None, stop_sequence: str | None = None, **usage: int) -> StreamEvent:
    return sdk_event({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                      "usage": usage})


MESSAGE_STOP = sdk_event({"type": "message_stop"})


def result(*, is_error: bool = True, status: int | None = None, text: str | None = None) -> ResultMessage:
    return ResultMessage(subtype="success" if not is_error else "error_during_execution", duration_ms=5,
                         duration_api_ms=3, is_error=is_error, num_turns=1, session_id="s", result=text,
                         api_error_status=status, total_cost_usd=0.001)


def assistant_error(kind: Any, text: str) -> AssistantMessage:
    return AssistantMessage(content=[TextBlock(text=text)], model="<synthetic>", error=kind)


def feed_all(state: RunState, messages: list[Any]) -> list[Any]:
    items: list[Any] = []
    for message in messages:
        assert not state.done, "nothing is fed after the run is done"
        items += state.feed(message)
    return items


def test_a_text_answer_is_passed_through_and_ends_at_message_stop() -> None:
    state = RunState()
    messages: list[Any] = [
        SystemMessage("init", {"tools": [], "mcp_servers": []}),
        message_start(),
        sdk_event({"type": "ping"}),
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, type="text_delta", text="Hi"),
        sdk_event({"type": "content_block_stop", "index": 0}),
        message_delta("end_turn", output_tokens=7, cache_read_input_tokens=9),
        MESSAGE_STOP,
    ]
    items = feed_all(state, messages)
    assert items == [m.event for m in messages[1:]]  # upstream's own events, in order
    assert state.done and state.result_follows and state.forwarded
    assert (state.stop_reason, state.stop_sequence, state.model) == ("end_turn", None, "claude-sonnet-4-5")
    # message_start's usage, updated by exactly the fields message_delta carries.
    assert state.usage == {**USAGE, "output_tokens": 7, "cache_read_input_tokens": 9}


@pytest.mark.parametrize("stop_reason", ["end_turn", "stop_sequence", "tool_use", "refusal"])
def test_after_a_final_stop_the_answer_ends_at_message_stop_and_a_result_follows(stop_reason: str) -> None:
    state = RunState()
    feed_all(state, [message_start(), message_delta(stop_reason, "END" if stop_reason == "stop_sequence" else None)])
    assert not state.done
    assert feed_all(state, [MESSAGE_STOP]) == [MESSAGE_STOP.event]
    assert state.done and state.result_follows and not state.cut_short
    assert state.stop_sequence == ("END" if stop_reason == "stop_sequence" else None)


@pytest.mark.parametrize("stop_reason", ["max_tokens", "pause_turn", "model_context_window_exceeded"])
def test_a_cut_answer_ends_at_its_message_delta(stop_reason: str) -> None:
    # After these the CLI calls upstream again on its own as soon as the message ends: the
    # answer ends at its last event (message_stop added), and the caller kills the CLI.
    state = RunState()
    items = feed_all(state, [message_start(), message_delta(stop_reason, output_tokens=5)])
    assert items[-1] == {"type": "message_stop"} and items[-2]["delta"]["stop_reason"] == stop_reason
    assert state.done and state.cut_short and not state.result_follows
    assert state.usage["output_tokens"] == 5


def test_calls_to_undeclared_tools_are_left_out_and_the_turn_ends() -> None:
    state = RunState(allowed_tools=frozenset({"mcp__client__get_weather"}))
    items = feed_all(state, [
        message_start(),
        block_start(0, {"type": "text", "text": ""}),
        block_delta(0, type="text_delta", text="Let me look."),
        sdk_event({"type": "content_block_stop", "index": 0}),
        block_start(1, {"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}),
        block_delta(1, type="input_json_delta", partial_json='{"command": "ls"}'),
        sdk_event({"type": "content_block_stop", "index": 1}),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ])
    assert [item.get("index") for item in items if "index" in item] == [0, 0, 0]
    assert not any("Bash" in str(item) for item in items)
    assert state.stop_reason == "end_turn" and state.done and state.result_follows


def test_a_declared_call_beside_an_undeclared_one_stays_a_tool_call() -> None:
    state = RunState(allowed_tools=frozenset({"mcp__client__get_weather"}))
    items = feed_all(state, [
        message_start(),
        block_start(0, {"type": "tool_use", "id": "t1", "name": "Read", "input": {}}),
        sdk_event({"type": "content_block_stop", "index": 0}),
        block_start(1, {"type": "tool_use", "id": "t2", "name": "mcp__client__get_weather", "input": {}}),
        sdk_event({"type": "content_block_stop", "index": 1}),
        message_delta("tool_use"),
        MESSAGE_STOP,
    ])
    assert [item.get("index") for item in items if "index" in item] == [1, 1]
    assert state.stop_reason == "tool_use"


def test_subagent_events_and_other_messages_are_not_forwarded() -> None:
    state = RunState()
    assert state.feed(sdk_event({"type": "message_start", "message": {}}, parent="toolu_x")) == []
    assert state.feed(SystemMessage("status", {"anything": 1})) == []
    assert state.feed(AssistantMessage(content=[TextBlock(text="whole")], model="m")) == []
    assert state.feed(object()) == []
    assert not state.message_started and not state.done and state.error_kind is None


def test_a_second_message_start_ends_the_run_instead_of_repeating_text() -> None:
    state = RunState()
    feed_all(state, [message_start(), block_start(0, {"type": "text", "text": ""})])
    with pytest.raises(UpstreamError, match="while the answer was streaming"):
        state.feed(message_start())


def test_message_stop_without_a_stop_reason_is_a_broken_stream() -> None:
    state = RunState()
    with pytest.raises(UpstreamError):
        feed_all(state, [message_start(), MESSAGE_STOP])


def test_a_retry_before_any_token_is_noted_and_after_one_ends_the_run() -> None:
    state = RunState()
    state.feed(SystemMessage("api_retry", {"error_status": 529, "retry_delay_ms": 1500, "attempt": 1}))
    assert (state.retry_status, state.retry_delay_s) == (529, 1.5)
    state.feed(SystemMessage("api_retry", {"error_status": None, "retry_delay_ms": "soon"}))
    assert (state.retry_status, state.retry_delay_s) == (None, None)
    feed_all(state, [message_start(), block_start(0, {"type": "text", "text": ""})])
    with pytest.raises(UpstreamError):
        state.feed(SystemMessage("api_retry", {"error_status": 500, "retry_delay_ms": 100}))


def test_a_success_result_before_message_stop_is_no_answer() -> None:
    state = RunState()
    with pytest.raises(UpstreamError, match="without an answer"):
        feed_all(state, [message_start(), result(is_error=False, text="")])
    assert state.done


# -- isolation -------------------------------------------------------------------------------

def test_init_with_only_allowed_tools_passes() -> None:
    allowed = frozenset({"mcp__client__get_weather", "StructuredOutput"})
    state = RunState(allowed_tools=allowed)
    init = {"tools": ["mcp__client__get_weather"], "mcp_servers": [{"name": "client", "status": "connected"}]}
    assert state.feed(SystemMessage("init", init)) == []


@pytest.mark.parametrize(("init", "allowed"), [
    ({"tools": ["Bash"], "mcp_servers": []}, frozenset()),
    ({"tools": [], "mcp_servers": [{"name": "github"}]}, frozenset()),
    ({"tools": [], "mcp_servers": ["client"]}, frozenset()),  # no client tool: no client server either
    ({"tools": ["mcp__client__a", "mcp__client__b"], "mcp_servers": ["client"]}, frozenset({"mcp__client__a"})),
])
def test_isolation_fails_closed(init: dict[str, Any], allowed: frozenset[str]) -> None:
    with pytest.raises(IsolationError):
        RunState(allowed_tools=allowed).feed(SystemMessage("init", init))
    with pytest.raises(IsolationError):
        check_isolation(init, allowed)


# -- structured output -----------------------------------------------------------------------

def structured_run(*extra_tool: bool) -> tuple[RunState, list[Any]]:
    state = RunState(structured=True, allowed_tools=frozenset({"StructuredOutput", "mcp__client__f"}))
    messages = [
        message_start(),
        block_start(0, {"type": "tool_use", "id": "toolu_s", "name": "StructuredOutput", "input": {}}),
        block_delta(0, type="input_json_delta", partial_json='{"answer": '),
        block_delta(0, type="input_json_delta", partial_json="42}"),
        sdk_event({"type": "content_block_stop", "index": 0}),
    ]
    if extra_tool:
        messages.append(block_start(1, {"type": "tool_use", "id": "toolu_c", "name": "mcp__client__f", "input": {}}))
    messages += [message_delta("tool_use"), MESSAGE_STOP]
    return state, feed_all(state, messages)


def test_structured_output_is_shown_as_the_answer_text() -> None:
    state, items = structured_run()
    assert items[1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert [i["delta"] for i in items[2:4]] == [{"type": "text_delta", "text": '{"answer": '},
                                               {"type": "text_delta", "text": "42}"}]
    assert items[-2]["delta"]["stop_reason"] == "end_turn" and state.stop_reason == "end_turn"


def test_structured_output_with_a_client_tool_call_stays_a_tool_call() -> None:
    state, items = structured_run(True)
    assert items[-2]["delta"]["stop_reason"] == "tool_use" and state.stop_reason == "tool_use"
    assert state.client_tool_calls == 1


def test_without_a_schema_a_structured_output_call_is_an_undeclared_tool() -> None:
    state = RunState(allowed_tools=frozenset({"mcp__client__f"}))
    start = block_start(0, {"type": "tool_use", "id": "t", "name": "StructuredOutput", "input": {}})
    assert state.feed(message_start()) and state.feed(start) == []


# -- errors: what the CLI reports -> the proxy's error ---------------------------------------

def fail(*messages: Any, state: RunState | None = None) -> ClaudeProxyError:
    state = state or RunState()
    with pytest.raises(ClaudeProxyError) as info:
        feed_all(state, list(messages))
    assert state.done
    return info.value


ERROR_TABLE: list[tuple[str, list[Any], type[ClaudeProxyError], int]] = [
    ("401", [result(status=401, text="API Error: 401 invalid x-api-key")], AuthenticationError, 401),
    ("authentication_failed without a status",
     [assistant_error("authentication_failed", "Invalid API key"), result(text="")], AuthenticationError, 401),
    ("403", [result(status=403, text="API Error: 403")], PermissionDeniedError, 403),
    ("404", [result(status=404, text="API Error: 404 model: nope")], NotFoundError, 404),
    ("429", [result(status=429, text="API Error: 429")], RateLimitError, 429),
    ("rate_limit without a status", [assistant_error("rate_limit", "limit"), result()], RateLimitError, 429),
    ("529", [result(status=529, text="API Error: 529")], OverloadedError, 529),
    ("overloaded text", [result(text='API Error: {"type":"overloaded_error"} Overloaded')], OverloadedError, 529),
    ("500", [result(status=500, text="API Error: 500")], UpstreamError, 502),
    ("503", [result(status=503)], UpstreamError, 502),
    ("the status of a retry that ran out",
     [SystemMessage("api_retry", {"error_status": 502, "retry_delay_ms": 10}), result()], UpstreamError, 502),
    ("400", [result(status=400, text="API Error: 400 prompt is too long")], InvalidRequestError, 400),
    ("413", [result(status=413)], InvalidRequestError, 400),
    ("invalid_request without a status", [assistant_error("invalid_request", "bad"), result()],
     InvalidRequestError, 400),
    ("not logged in", [result(text="Not logged in · Please run /login")], NotLoggedInError, 503),
    ("not logged in, said by the assistant message",
     [assistant_error("authentication_failed", "Not logged in · Please run /login"), result(text="")],
     NotLoggedInError, 503),
    ("unknown", [result(text="something else")], ClaudeProxyError, 500),
    ("an AssistantMessage error makes even a success result a failure",
     [assistant_error("server_error", "oops"), result(is_error=False)], ClaudeProxyError, 500),
]


@pytest.mark.parametrize(("messages", "kind", "status"), [c[1:] for c in ERROR_TABLE],
                         ids=[c[0] for c in ERROR_TABLE])
def test_error_mapping(messages: list[Any], kind: type[ClaudeProxyError], status: int) -> None:
    error = fail(*messages)
    assert type(error) is kind and error.status_code == status


def test_error_messages_say_what_to_do_and_nothing_internal() -> None:
    invalid = fail(result(status=400, text="API Error: " + "x" * 2000))
    assert invalid.message.startswith("The upstream API rejected the request: x") and len(invalid.message) < 600
    assert "API Error" not in invalid.message
    assert "claude-code-proxy login" in fail(result(text="Not logged in · Please run /login")).message
    assert fail(result(status=404)).param == "model"
    assert "setup-token" in fail(result(status=401)).message


def test_retry_after_comes_from_the_retry_delay() -> None:
    error = fail(SystemMessage("api_retry", {"error_status": 429, "retry_delay_ms": 2500}), result())
    assert isinstance(error, RateLimitError) and error.retry_after == 2.5


def test_retry_after_waits_for_the_subscription_window_to_reset() -> None:
    state = RunState(rate_limit={"status": "rejected", "resets_at": NOW + 600})
    error = fail(SystemMessage("api_retry", {"error_status": 429, "retry_delay_ms": 2500}), result(), state=state)
    assert error.retry_after == 600
    past = RunState(rate_limit={"status": "rejected", "resets_at": NOW - 5})
    assert fail(result(status=429), state=past).retry_after is None  # a reset in the past means nothing


def test_rate_limit_summary() -> None:
    event = RateLimitEvent(
        rate_limit_info=RateLimitInfo(status="allowed_warning", resets_at=int(NOW) + 60,
                                      rate_limit_type="five_hour", utilization=0.9),
        uuid="u", session_id="s")
    assert rate_limit_summary(event) == {"status": "allowed_warning", "type": "five_hour",
                                         "resets_at": int(NOW) + 60, "utilization": 0.9, "reported_at": NOW,
                                         "overage_status": None, "overage_resets_at": None,
                                         "overage_disabled_reason": None, "using_overage": None, "windows": {}}


def test_rate_limit_summary_keeps_every_window_and_the_overage_state() -> None:
    # What a current CLI sends: utilization per window only, in the raw event.
    raw = {"status": "allowed", "resetsAt": int(NOW) + 60, "rateLimitType": "five_hour", "overageStatus": "rejected",
           "overageDisabledReason": "out_of_credits", "isUsingOverage": False,
           "unifiedWindows": {
               "five_hour": {"utilization": 0.85, "resetsAt": int(NOW) + 60, "status": "allowed_warning"},
               "seven_day": {"utilization": 0.1, "resetsAt": int(NOW) + 600, "status": "allowed"}}}
    event = RateLimitEvent(
        rate_limit_info=RateLimitInfo(status="allowed", resets_at=int(NOW) + 60, rate_limit_type="five_hour",
                                      overage_status="rejected", overage_disabled_reason="out_of_credits", raw=raw),
        uuid="u", session_id="s")
    summary = rate_limit_summary(event)
    assert summary["utilization"] == 0.85  # from the window that applies
    assert summary["windows"] == {
        "five_hour": {"status": "allowed_warning", "utilization": 0.85, "resets_at": int(NOW) + 60},
        "seven_day": {"status": "allowed", "utilization": 0.1, "resets_at": int(NOW) + 600}}
    assert (summary["overage_status"], summary["overage_disabled_reason"], summary["using_overage"]) == (
        "rejected", "out_of_credits", False)
