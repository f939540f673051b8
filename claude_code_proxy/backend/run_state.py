"""The run state machine: the SDK's message stream -> upstream events, an end, or an error.

``RunState.feed(message)`` takes each SDK message of one run and returns the upstream
Anthropic events to pass on; it marks the run done at the answer's ``message_stop`` and
raises the right ``ClaudeProxyError`` for a failure.  Pure: no I/O, no clock but the one
used to turn a rate-limit reset time into a ``Retry-After``.  SDK failures are converted
into the proxy's error hierarchy here and in backend/claude.py only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

import structlog
from claude_agent_sdk import AssistantMessage, ResultMessage, StreamEvent, SystemMessage

from claude_code_proxy.backend.options import LOGIN_HELP
from claude_code_proxy.backend.relay import Gate
from claude_code_proxy.chat.answer import BackendItem, normalize_usage
from claude_code_proxy.chat.request import CLIENT_SERVER, STRUCTURED_OUTPUT_TOOL, UPSTREAM_PREFIX
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
    UpstreamUnreachableError,
)

log = structlog.get_logger(__name__)

# Stop reasons after which the CLI ends the run by itself; after any other (max_tokens,
# pause_turn...) it would send continuation requests, so the proxy stops the turn instead.
_FINAL_STOPS = frozenset({"end_turn", "stop_sequence", "tool_use", "refusal"})


@dataclass
class UndeclaredToolCalls:
    """Drops the model's calls to tools the client did not declare from the answer.

    The model may call a tool it knows from elsewhere ("Bash", "Read"...).  Nothing runs it:
    the CLI has no tools of its own, and with one model turn it does not call upstream
    again after answering the call with an error.  The client never offered that tool, so
    it cannot run it either: the call is left out (the text around it stays), and when no
    declared call is left the answer ends as ``end_turn`` instead of ``tool_use``.
    """

    declared: frozenset[str]
    """Upstream names of the tools the model may call (client tools, structured output)."""
    dropped: set[int] = field(default_factory=set)
    kept_calls: int = 0

    def keep(self, event: dict[str, Any]) -> bool:
        """False for the start, deltas and stop of a call to an undeclared tool."""
        kind = event.get("type")
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return True
            name = str(block.get("name", ""))
            if name in self.declared:
                self.kept_calls += 1
                return True
            self.dropped.add(event.get("index", -1))
            # The name is the model's choice, never the client's text: safe to log (cut short).
            log.info("backend.undeclared_tool_call", tool=name[:64],
                     outcome="left out of the answer; nothing ran; no further upstream call")
            return False
        if kind in ("content_block_delta", "content_block_stop"):
            return event.get("index") not in self.dropped
        return True

    def stop_reason(self, event: dict[str, Any]) -> dict[str, Any]:
        """A ``tool_use`` stop with no call left to stop for ends the turn instead."""
        delta = event.get("delta") or {}
        if self.dropped and not self.kept_calls and delta.get("stop_reason") == "tool_use":
            return {**event, "delta": {**delta, "stop_reason": "end_turn"}}
        return event


@dataclass
class RunState:
    """Turns the SDK's message stream into upstream events, a Completion, or an error."""

    forwarded: bool = False
    message_started: bool = False
    done: bool = False
    stop_reason: str | None = None
    stop_sequence: str | None = None
    model: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    error_kind: str | None = None
    error_text: str = ""
    retry_status: int | None = None
    retry_delay_s: float | None = None
    rate_limit: dict[str, Any] | None = None
    allowed_tools: frozenset[str] = frozenset()
    structured: bool = False
    structured_blocks: set[int] = field(default_factory=set)
    client_tool_calls: int = 0
    result_cost: float | None = None
    """The cumulative cost figure of a result that ended the run early (an error)."""
    upstream_host: str = "api.anthropic.com"
    """Where the CLI's requests go: named in errors that are the upstream's fault."""
    gate: Gate | None = None
    """The CLI's relay gate, which knows why the upstream could not be reached."""
    cut_short: bool = False
    """The answer stopped where the CLI would go on by itself (max_tokens, pause_turn...)."""
    undeclared: UndeclaredToolCalls = field(init=False)

    def __post_init__(self) -> None:
        self.undeclared = UndeclaredToolCalls(self.allowed_tools)

    @property
    def result_follows(self) -> bool:
        """The answer ended at its ``message_stop``: the CLI's result (its cost) follows."""
        return self.done and self.stop_reason is not None and not self.cut_short

    def feed(self, message: Any) -> list[BackendItem]:
        if isinstance(message, StreamEvent):
            if message.parent_tool_use_id is not None:
                return []
            return self._event(message.event)
        if isinstance(message, SystemMessage):
            if message.subtype == "init":
                check_isolation(message.data, self.allowed_tools)
            elif message.subtype == "api_retry":
                if self.forwarded:
                    # The CLI would restart the answer from the beginning: end instead.
                    raise UpstreamError("The upstream connection failed while the answer was streaming.")
                self.retry_status = message.data.get("error_status")
                delay = message.data.get("retry_delay_ms")
                self.retry_delay_s = delay / 1000 if isinstance(delay, int | float) else None
            return []
        if isinstance(message, AssistantMessage):
            if message.error:
                self.error_kind = message.error
                self.error_text = " ".join(getattr(b, "text", "") for b in message.content)
            return []
        if isinstance(message, ResultMessage):
            # A result before the answer's message_stop: the run failed (a success result
            # always follows message_stop, where the run already ended).  The CLI's turn is
            # over: it could serve again once reset.
            self.done = True
            self.result_cost = message.total_cost_usd
            if message.is_error or self.error_kind:
                raise self._error(message)
            raise UpstreamError("The Claude Code CLI ended without an answer.")
        return []

    def _event(self, event: dict[str, Any]) -> list[BackendItem]:
        kind = event.get("type")
        if not self.undeclared.keep(event):
            return []
        if kind == "message_start":
            if self.message_started:  # the CLI retried a dropped connection: text would repeat
                raise UpstreamError("The upstream connection failed while the answer was streaming.")
            self.message_started = True
            message = event.get("message", {})
            self.model = message.get("model")
            self.usage = normalize_usage(message.get("usage"))
        elif self.structured and kind in ("content_block_start", "content_block_delta", "message_delta"):
            event = self._structured(event)
        if kind == "message_delta":
            event = self.undeclared.stop_reason(event)
            delta = event.get("delta", {})
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
            usage = event.get("usage") or {}
            self.usage.update({k: v for k, v in normalize_usage(usage).items() if k in usage})
            if delta.get("stop_reason") and delta["stop_reason"] not in _FINAL_STOPS:
                # Cut short (max_tokens...): the CLI calls upstream again on its own (a
                # continuation) as soon as the message ends, and an interrupt comes too
                # late for half of them.  The answer is complete here (message_delta is
                # the last event before message_stop): it ends now, and the caller kills
                # the CLI at once (``cut_short``); no result (cost figure) will follow.
                self.done = self.cut_short = True
                return [event, {"type": "message_stop"}]
        elif kind == "message_stop":
            if self.stop_reason is None:
                raise UpstreamError("The upstream connection failed while the answer was streaming.")
            # The answer is complete: the client gets it now.  The CLI's result (its cost
            # figure) follows within milliseconds and is read in the background.
            self.done = True
        elif kind in ("content_block_start", "content_block_delta"):
            self.forwarded = True
        return [event]

    def _structured(self, event: dict[str, Any]) -> dict[str, Any]:
        """The CLI's StructuredOutput tool call, shown to the client as the answer's JSON text."""
        kind = event["type"]
        if kind == "content_block_start":
            block = event.get("content_block", {})
            if block.get("type") == "tool_use" and block.get("name") == STRUCTURED_OUTPUT_TOOL:
                self.structured_blocks.add(event["index"])
                return {**event, "content_block": {"type": "text", "text": ""}}
            if block.get("type") == "tool_use":
                self.client_tool_calls += 1
        elif kind == "content_block_delta" and event["index"] in self.structured_blocks:
            partial = event.get("delta", {}).get("partial_json", "")
            return {**event, "delta": {"type": "text_delta", "text": partial}}
        elif kind == "message_delta" and self.structured_blocks and not self.client_tool_calls:
            delta = event.get("delta", {})
            if delta.get("stop_reason") == "tool_use":
                return {**event, "delta": {**delta, "stop_reason": "end_turn"}}
        return event

    def _error(self, result: Any) -> ClaudeProxyError:
        status = result.api_error_status or self.retry_status
        text = (self.error_text or result.result or "").strip()
        if status is None and ("not logged in" in text.lower() or "/login" in text):
            # No credentials at all: the CLI calls this authentication_failed too, but
            # nothing was rejected upstream; the fix is to log in.
            return NotLoggedInError(LOGIN_HELP)
        if status == 429 or self.error_kind == "rate_limit":
            retry_after = self.retry_delay_s
            resets_at = (self.rate_limit or {}).get("resets_at")
            if isinstance(resets_at, int | float) and resets_at > time.time():
                retry_after = resets_at - time.time()  # a subscription window: wait for its reset
            return RateLimitError("Rate limited by the upstream API; retry later.", retry_after=retry_after)
        if status == 529 or "overloaded" in text.lower():
            return OverloadedError("The upstream API is overloaded; retry in a moment.")
        if status == 403:  # before 401: the CLI calls a 403 "authentication_failed" too
            return PermissionDeniedError(f"The upstream API refused this request (403): {_upstream_detail(text)}")
        if status == 401 or self.error_kind == "authentication_failed":
            return AuthenticationError(
                "Claude rejected the Claude Code CLI's credentials. " + LOGIN_HELP.split(". ", 1)[1]
            )
        if status == 404:
            return NotFoundError("The upstream API does not know this model.", param="model")
        if status in (400, 413, 422) or self.error_kind == "invalid_request":
            detail = text.removeprefix("API Error:").strip()[:500]
            return InvalidRequestError(f"The upstream API rejected the request: {detail}")
        if status is not None and status >= 500:
            return UpstreamError(f"The upstream API failed ({status}).")
        if "not logged in" in text.lower() or "/login" in text:
            return NotLoggedInError(LOGIN_HELP)
        if status is None and text.startswith("API Error"):
            return _transport_error(text, self.upstream_host, self.gate.fault if self.gate else None)
        return ClaudeProxyError("The Claude Code CLI failed to answer.")


def _upstream_detail(text: str) -> str:
    """The upstream's own message from the CLI's "... API Error: 403 <message>" text."""
    detail = text.split("API Error:", 1)[-1].strip()
    return re.sub(r"^\d{3}\s+", "", detail)[:500] or "no reason given"


# What the CLI's "API Error: ..." text says when no HTTP answer came at all.
_CONNECTION_FAULTS = (
    ("ECONNREFUSED", "the connection was refused"),
    ("ENOTFOUND", "its host name does not resolve"),
    ("EAI_AGAIN", "its host name does not resolve"),
    ("ETIMEDOUT", "the connection timed out"),
    ("ECONNRESET", "the connection was reset"),
    ("EHOSTUNREACH", "the host is unreachable"),
    ("ENETUNREACH", "the network is unreachable"),
    ("CERT_", "its TLS certificate was not accepted"),
    ("certificate", "its TLS certificate was not accepted"),
    ("Connection error", "the connection failed"),
)


def _transport_error(text: str, host: str, fault: str | None = None) -> ClaudeProxyError:
    """An upstream fault below HTTP: no connection, or an answer that is not an event stream.
    ``fault``: why the relay could not reach the upstream, when it could not."""
    if fault is not None:
        return UpstreamUnreachableError(f"The upstream API at {host} could not be reached: {fault}.")
    for marker, reason in _CONNECTION_FAULTS:
        if marker.lower() in text.lower():
            return UpstreamUnreachableError(f"The upstream API at {host} could not be reached: {reason}.")
    return UpstreamError(f"The upstream API at {host} sent an empty or malformed response.")


def rate_limit_summary(event: Any) -> dict[str, Any]:
    """The account's rate-limit state from a CLI rate-limit event (backend/quota.py reads it)."""
    info = event.rate_limit_info
    raw = info.raw if isinstance(info.raw, dict) else {}
    windows = {
        str(name)[:32]: {
            "status": window.get("status"),
            "utilization": window.get("utilization"),
            "resets_at": window.get("resetsAt"),
        }
        for name, window in (raw.get("unifiedWindows") or {}).items()
        if isinstance(window, dict)
    }
    utilization = info.utilization
    if utilization is None and info.rate_limit_type in windows:
        # Newer CLIs report utilization per window only.
        utilization = windows[info.rate_limit_type]["utilization"]
    return {
        "status": info.status,
        "type": info.rate_limit_type,
        "resets_at": info.resets_at,
        "utilization": utilization,
        "overage_status": info.overage_status,
        "overage_resets_at": info.overage_resets_at,
        "overage_disabled_reason": info.overage_disabled_reason,
        "using_overage": raw.get("isUsingOverage"),
        "windows": windows,
        "reported_at": time.time(),
    }


def check_isolation(init: dict[str, Any], allowed_tools: frozenset[str] = frozenset()) -> None:
    """Fail closed if the CLI reports any tool or MCP server the proxy did not put there."""
    tools = set(init.get("tools") or [])
    servers = {s.get("name") if isinstance(s, dict) else s for s in init.get("mcp_servers") or []}
    allowed_servers = {CLIENT_SERVER} if any(t.startswith(UPSTREAM_PREFIX) for t in allowed_tools) else set()
    if tools - allowed_tools or servers - allowed_servers:
        log.warning(
            "security.isolation_violation",
            unexpected_tools=sorted(tools - allowed_tools)[:20],
            unexpected_servers=sorted(str(s) for s in servers - allowed_servers)[:20],
        )
        raise IsolationError("The Claude Code CLI started with tools the proxy did not allow; request refused.")
