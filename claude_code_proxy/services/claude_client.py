"""The Claude client service: the only module that imports ``claude_agent_sdk``.

Every request gets its own CLI process configured as a plain chat backend, never an
agent: no built-in tools, no MCP servers but the proxy's own, no user settings or
CLAUDE.md, verbatim prompts, restricted mode, a fresh private working directory and
temp directory (removed afterwards), no session persistence, and an allow-listed
environment.  Nothing in a request can change these options.

``run()`` yields the upstream Anthropic stream events of the one upstream message the
client asked for, then a ``Completion``; failures are raised as ``ClaudeProxyError``.
See docs/architecture.md and ../shared field notes for why each step is done this way.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import anyio
import structlog
from claude_agent_sdk import (
    AssistantMessage,
    ClaudeAgentOptions,
    ClaudeSDKClient,
    ClaudeSDKError,
    CLIConnectionError,
    CLINotFoundError,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    RateLimitEvent,
    ResultMessage,
    StreamEvent,
    SystemMessage,
    create_sdk_mcp_server,
    tool,
)

from claude_code_proxy.config.settings import Settings
from claude_code_proxy.exceptions import (
    AuthenticationError,
    ClaudeProxyError,
    GatewayTimeoutError,
    InvalidRequestError,
    IsolationError,
    NotFoundError,
    NotLoggedInError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    ServiceUnavailableError,
    UpstreamError,
)
from claude_code_proxy.models.chat import (
    CLIENT_SERVER,
    STRUCTURED_OUTPUT_TOOL,
    UPSTREAM_PREFIX,
    ChatRequest,
    ClientTool,
    Completion,
)
from claude_code_proxy.services.admission import Admission
from claude_code_proxy.services.warm_pool import WarmPool

BackendItem = dict[str, Any] | Completion
AFTER_RESPONSE_S = 0.03
RESULT_WAIT_S = 2.0
"""How long the CLI's result (its cost figure) is awaited after a complete answer."""
"""How long after an answer its cleanup and the next warm start begin."""
log = structlog.get_logger(__name__)

# Variables the CLI may inherit from the proxy's environment; every other variable is
# blanked in the child (the SDK always merges os.environ, so blanking is how we remove).
ENV_ALLOW = frozenset(
    {
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TERM",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE",
        "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
        "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_RUNTIME_DIR",
        "CLAUDE_CONFIG_DIR", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
    }
)
ENV_ALLOW_PREFIXES = ("LC_",)

# Fixed for every run: quiet, no updater, no side requests, no automatic retries of a
# refusal or a non-streaming fallback (either would duplicate text), no memory files.
FIXED_ENV = {
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_AUTOUPDATER": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "ENABLE_TOOL_SEARCH": "false",
    "CLAUDE_CODE_DISABLE_REFUSAL_RETRY": "1",
    "CLAUDE_CODE_DISABLE_NONSTREAMING_FALLBACK": "1",
    "CLAUDE_CODE_DISABLE_CLAUDE_MDS": "1",
    "CLAUDE_CODE_DISABLE_AUTO_MEMORY": "1",
    "CLAUDE_CODE_DISABLE_BACKGROUND_TASKS": "1",
}

# Stop reasons after which the CLI ends the run by itself; after any other (max_tokens,
# pause_turn...) it would send continuation requests, so the proxy ends the run instead.
_FINAL_STOPS = frozenset({"end_turn", "stop_sequence", "tool_use", "refusal"})

NOT_FOUND_HELP = (
    "The Claude Code CLI was not found. Reinstall claude-code-proxy (its SDK bundles the CLI) "
    "or set CLAUDE_PROXY_CLI_PATH to a `claude` executable."
)
LOGIN_HELP = (
    "The Claude Code CLI is not logged in. Run `claude` and use /login, or set "
    "CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`) or ANTHROPIC_API_KEY, then retry."
)


def cli_usable(path: str | None) -> bool:
    """An executable file (a directory passes the X_OK test too)."""
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


def child_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The environment overrides that turn the proxy's env into the child's allow-list."""
    blanked = {
        key: ""
        for key in environ
        if key not in ENV_ALLOW and not key.startswith(ENV_ALLOW_PREFIXES)
    }
    return {**blanked, **FIXED_ENV}


@dataclass
class CliStatus:
    found: bool
    path: str | None
    version: str | None = None
    logged_in: bool | None = None
    auth_method: str | None = None
    subscription_type: str | None = None
    api_key_source: str | None = None
    checked_at: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "found": self.found,
            "path": self.path,
            "version": self.version,
            "logged_in": self.logged_in,
            "auth_method": self.auth_method,
            "subscription_type": self.subscription_type,
        }


class ClaudeBackend(Protocol):
    """What the routes need from a backend; tests may pass a scripted one."""

    def run(self, request: ChatRequest) -> AsyncIterator[BackendItem]: ...

    async def status(self, *, refresh: bool = False) -> CliStatus: ...

    async def aclose(self) -> None: ...


@dataclass
class _RunState:
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
    result_follows: bool = False

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
            # always follows message_stop, where the run already ended).
            self.done = True
            if message.is_error or self.error_kind:
                raise self._error(message)
            raise UpstreamError("The Claude Code CLI ended without an answer.")
        return []

    def _event(self, event: dict[str, Any]) -> list[BackendItem]:
        kind = event.get("type")
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
            delta = event.get("delta", {})
            self.stop_reason = delta.get("stop_reason") or self.stop_reason
            self.stop_sequence = delta.get("stop_sequence") or self.stop_sequence
            usage = event.get("usage") or {}
            self.usage.update({k: v for k, v in normalize_usage(usage).items() if k in usage})
        elif kind == "message_stop":
            if self.stop_reason is None:
                raise UpstreamError("The upstream connection failed while the answer was streaming.")
            # The answer is complete: the client gets it now. After a final stop the CLI's
            # result (its cost figure) follows within milliseconds and is read in the
            # background; after any other (max_tokens...) the CLI would continue on its own.
            self.done = True
            self.result_follows = self.stop_reason in _FINAL_STOPS
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
        if status == 401 or self.error_kind == "authentication_failed":
            return AuthenticationError(
                "Claude rejected the Claude Code CLI's credentials. " + LOGIN_HELP.split(". ", 1)[1]
            )
        if status == 403:
            return PermissionDeniedError("The upstream API refused this request for these credentials.")
        if status == 404:
            return NotFoundError("The upstream API does not know this model.", param="model")
        if status in (400, 413, 422) or self.error_kind == "invalid_request":
            detail = text.removeprefix("API Error:").strip()[:500]
            return InvalidRequestError(f"The upstream API rejected the request: {detail}")
        if status is not None and status >= 500:
            return UpstreamError(f"The upstream API failed ({status}).")
        if "not logged in" in text.lower() or "/login" in text:
            return NotLoggedInError(LOGIN_HELP)
        return ClaudeProxyError("The Claude Code CLI failed to answer.")


def rate_limit_summary(event: Any) -> dict[str, Any]:
    info = event.rate_limit_info
    return {
        "status": info.status,
        "type": info.rate_limit_type,
        "resets_at": info.resets_at,
        "utilization": info.utilization,
        "reported_at": time.time(),
    }


def normalize_usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    keys = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    return {key: int(usage.get(key) or 0) for key in keys}


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


class _Deadlines:
    """The three deadlines of a run (first event, idle gap, total) plus a shutdown drain.

    Deadlines are kept as plain floats on the loop's clock; the error for one is built only
    when it fires.  The message loop waits under ``asyncio.timeout_at`` (a timer handle, no
    cancel scope per event), and a shutdown pulls every active timeout forward.
    """

    def __init__(self, settings: Settings, owner: ClaudeClient) -> None:
        now = time.monotonic()
        self.settings = settings
        self.owner = owner
        self.total = now + settings.request_timeout
        self.first = now + settings.first_event_timeout
        self.last_event: float | None = None

    def event(self) -> None:
        self.last_event = time.monotonic()

    def deadline(self) -> float:
        gap = self.first if self.last_event is None else self.last_event + self.settings.idle_timeout
        deadline = min(gap, self.total)
        draining = self.owner._draining
        return deadline if draining is None else min(deadline, draining)

    def error(self) -> ClaudeProxyError:
        """The error of the deadline that passed."""
        now = time.monotonic()
        draining = self.owner._draining
        if draining is not None and draining <= now:
            return ServiceUnavailableError("The proxy is shutting down; the answer was cut short.", retry_after=5)
        if self.total <= now:
            return GatewayTimeoutError(f"The request took longer than {self.settings.request_timeout:g} s.")
        if self.last_event is None:
            return GatewayTimeoutError(
                f"The model did not start answering within {self.settings.first_event_timeout:g} s.")
        return GatewayTimeoutError(f"The answer stalled for more than {self.settings.idle_timeout:g} s.")

    @contextmanager
    def scope(self) -> Iterator[anyio.CancelScope]:
        """A cancel scope for the start-up phase (connect, history), once per run."""
        with anyio.CancelScope(deadline=_loop_time(self.deadline())) as scope:
            self.owner._scopes.add(scope)
            try:
                yield scope
            finally:
                self.owner._scopes.discard(scope)

    def check(self, scope: anyio.CancelScope) -> None:
        """Raise the right error if ``scope`` ended because a deadline passed."""
        if scope.cancelled_caught:
            raise self.error()

    async def next_message(self, messages: AsyncIterator[Any]) -> Any:
        """The CLI's next message, or the error of whichever deadline passes first."""
        timeout = asyncio.timeout_at(_loop_time(self.deadline()))
        timeouts = self.owner._timeouts
        try:
            async with timeout:
                timeouts.add(timeout)
                try:
                    return await messages.__anext__()
                finally:
                    timeouts.discard(timeout)
        except TimeoutError:
            if timeout.expired():
                raise self.error() from None
            raise


def _loop_time(monotonic_deadline: float) -> float:
    """A time.monotonic() deadline on the event loop's clock (anyio and asyncio use it).

    The loop's own clock is read directly: this also runs in plain loop callbacks (the
    shutdown signal), where anyio cannot tell which async library is running.
    """
    return asyncio.get_running_loop().time() + (monotonic_deadline - time.monotonic())


class _Slot:
    """A concurrency slot, freed exactly once; freeing it lets the pool start a replacement."""

    def __init__(self, owner: ClaudeClient, key: str, request: ChatRequest) -> None:
        self.owner = owner
        self.key = key
        self.request = request
        self.handed_off = False
        self.released = False
        self.succeeded = False
        """Only a configuration that just worked gets a replacement started."""

    def release(self) -> None:
        if self.released:
            return
        self.released = True
        owner = self.owner
        owner.admission.release()
        if self.succeeded and owner.pool.enabled and owner._draining is None:
            # The next request's process for this configuration starts once this one's CLI
            # is gone and the answer is out: it competes with no answer for CPU.
            owner._start_sweeper()
            asyncio.get_running_loop().call_later(AFTER_RESPONSE_S, owner._refill, self.key, self.request)


def _process_of(client: ClaudeSDKClient) -> Any:
    """The CLI process behind an SDK client (the SDK has no public handle on it)."""
    return getattr(getattr(client, "_transport", None), "_process", None)


async def _kill_and_reap(prepared: _Prepared) -> None:
    process = _process_of(prepared.client)
    if process is None:
        return
    if process.returncode is None:
        with suppress(Exception):
            process.kill()
    with anyio.CancelScope(shield=True), anyio.move_on_after(2), suppress(Exception):
        await process.wait()


@dataclass
class _Prepared:
    """A started, initialized CLI and its private directory; used for one request only."""

    client: ClaudeSDKClient
    workdir: Path


def spawn_key(request: ChatRequest) -> str:
    """Everything fixed when a CLI starts: processes are only ever shared by equal keys."""
    fixed = {
        "model": request.model,
        "system": request.system,
        "max_tokens": request.max_tokens,
        "stop": request.stop_sequences,
        "thinking": request.thinking,
        "tools": [[t.name, t.description, t.input_schema] for t in request.tools],
        "tool_choice": request.tool_choice,
        "output_schema": request.output_schema,
    }
    return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()


def allowed_tools(request: ChatRequest) -> frozenset[str]:
    names = {tool.upstream_name for tool in request.tools}
    if request.output_schema is not None:
        names.add(STRUCTURED_OUTPUT_TOOL)
    return frozenset(names)


def upstream_tool_choice(request: ChatRequest) -> dict[str, Any]:
    choice = dict(request.tool_choice or {})
    if choice.get("type") == "tool":
        by_name = {tool.name: tool.upstream_name for tool in request.tools}
        choice["name"] = by_name.get(choice.get("name", ""), choice.get("name"))
    return choice


def upstream_history(request: ChatRequest) -> list[dict[str, Any]]:
    """Earlier turns, with the client's tool names in tool_use blocks as the model knows them."""
    by_name = {tool.name: tool.upstream_name for tool in request.tools}
    history = []
    for turn in request.messages[:-1]:
        if turn["role"] == "assistant" and any(b.get("type") == "tool_use" for b in turn["content"]):
            content = [
                {**b, "name": by_name.get(b["name"], b["name"])} if b.get("type") == "tool_use" else b
                for b in turn["content"]
            ]
            turn = {**turn, "content": content}
        history.append(turn)
    return history


def _never_run(client_tool: ClientTool) -> Any:
    @tool(client_tool.cli_name, client_tool.description, client_tool.schema)
    async def handler(args: dict[str, Any]) -> dict[str, Any]:
        # Never reached: the PreToolUse hook defers every call back to the client.
        return {"content": [{"type": "text", "text": "This tool runs on the client."}], "is_error": True}

    return handler


async def _defer_tool_call(input_data: HookInput, tool_use_id: str | None, context: HookContext) -> HookJSONOutput:
    """End the run at the model's tool call: the client, not the CLI, runs its tools."""
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "defer"}}


def _drop_stderr(line: str) -> None:
    log.debug("cli.stderr", chars=len(line))


async def _one(message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield message


class ClaudeClient:
    """Runs one fresh, locked-down CLI process per request."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cli_path = settings.resolved_cli_path()
        self._status: CliStatus | None = None
        self._status_lock = asyncio.Lock()
        self.spawned = 0
        """CLI processes started for requests (tests assert bad input starts none)."""
        self.admission = Admission(settings.max_concurrency, settings.queue_size, settings.queue_timeout)
        self._clients: set[ClaudeSDKClient] = set()
        self._scopes: set[anyio.CancelScope] = set()
        self._timeouts: set[asyncio.Timeout] = set()
        self._cleanups: set[asyncio.Task[None]] = set()
        self._pending: dict[asyncio.TimerHandle, Callable[[], None]] = {}
        self._draining: float | None = None
        self.rate_limit: dict[str, Any] | None = None
        """The subscription's latest rate-limit state the CLI reported (shown by /health)."""
        self.warm_starts = 0
        self.on_warm: Callable[[bool, str], None] | None = None
        """Told of every warm-pool hit (True) or miss (False), with the model (metrics)."""
        self.pool: WarmPool[_Prepared] = WarmPool(
            size=settings.warm_pool_size,
            max_keys=settings.warm_pool_keys,
            idle_seconds=settings.warm_pool_idle,
            spawn=self._prepare,
            dispose=self._dispose,
            budget_left=self._budget_left,
        )
        self._sweeper: asyncio.Task[None] | None = None

    # -- options -----------------------------------------------------------
    def options(self, request: ChatRequest, workdir: Path) -> ClaudeAgentOptions:
        """The CLI options for one request: fixed safety options plus the request's knobs."""
        env = child_env(os.environ)
        env["CLAUDE_CODE_TMPDIR"] = str(workdir / "tmp")
        env["CLAUDE_CODE_MAX_RETRIES"] = str(self.settings.cli_max_retries)
        env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(request.max_tokens)
        extra_body: dict[str, Any] = {}
        if request.stop_sequences:
            extra_body["stop_sequences"] = request.stop_sequences
        if request.tools and request.tool_choice:
            # The SDK has no tool_choice option; the CLI merges this into the upstream body.
            extra_body["tool_choice"] = upstream_tool_choice(request)
        if extra_body:
            env["CLAUDE_CODE_EXTRA_BODY"] = json.dumps(extra_body)
        thinking: Any = {"type": "disabled"}
        if request.thinking is None:
            env["CLAUDE_CODE_DISABLE_THINKING"] = "1"
        else:
            thinking = dict(request.thinking)
        system_prompt: Any = request.system or ""
        if len(system_prompt.encode()) > 32 * 1024:
            # The command line cannot carry a large prompt (E2BIG near 128 KiB): use a file.
            path = workdir / "system-prompt.txt"
            path.write_text(system_prompt, encoding="utf-8")
            system_prompt = {"type": "file", "path": str(path)}
        mcp_servers: dict[str, Any] = {}
        hooks: dict[Any, list[HookMatcher]] | None = None
        if request.tools:
            # Client tools: in-process MCP tools whose bodies never run, and a PreToolUse hook
            # that defers every call, so the run ends right after the model's tool_use.
            server = create_sdk_mcp_server(CLIENT_SERVER, tools=[_never_run(tool) for tool in request.tools])
            mcp_servers = {CLIENT_SERVER: server}
        if request.tools or request.output_schema is not None:
            hooks = {"PreToolUse": [HookMatcher(matcher=None, hooks=[_defer_tool_call])]}
        output_format = None
        if request.output_schema is not None:
            output_format = {"type": "json_schema", "schema": request.output_schema}
        return ClaudeAgentOptions(
            cli_path=self.cli_path,
            model=request.model,
            system_prompt=system_prompt,
            tools=[],
            mcp_servers=mcp_servers,
            hooks=hooks,
            output_format=output_format,
            strict_mcp_config=True,
            setting_sources=[],
            skills=[],
            plugins=[],
            verbatim_prompts=True,
            permission_mode="dontAsk",
            include_partial_messages=True,
            thinking=thinking,
            cwd=str(workdir / "cwd"),
            env=env,
            extra_args={"no-session-persistence": None, "restricted": None},
            # Piped, never printed: the CLI's stderr can hold paths, tokens or prompt text.
            stderr=_drop_stderr,
        )

    # -- running -----------------------------------------------------------
    async def run(self, request: ChatRequest) -> AsyncIterator[BackendItem]:
        if self._draining is not None:
            raise ServiceUnavailableError("The proxy is shutting down.", retry_after=5)
        if not cli_usable(self.cli_path):
            raise ServiceUnavailableError(NOT_FOUND_HELP)
        key = spawn_key(request)
        await self.admission.acquire()
        slot = _Slot(self, key, request)
        if self._draining is not None:  # shutdown began while this request waited in line
            slot.release()
            raise ServiceUnavailableError("The proxy is shutting down.", retry_after=5)
        try:
            run = self._run(request, key, slot)
            try:
                async for item in run:
                    yield item
            finally:
                await run.aclose()  # tear the CLI down now, not when garbage-collected
        finally:
            if not slot.handed_off:
                slot.release()

    async def _prepare(self, request: ChatRequest) -> _Prepared:
        """Start and initialize a CLI for ``request``'s configuration (a cold start)."""
        workdir = Path(tempfile.mkdtemp(prefix="claude-proxy-"))
        (workdir / "cwd").mkdir(mode=0o700)
        (workdir / "tmp").mkdir(mode=0o700)
        client = ClaudeSDKClient(self.options(request, workdir))
        self.spawned += 1
        prepared = _Prepared(client, workdir)
        self._clients.add(client)
        try:
            await client.connect()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._dispose(prepared)
            raise
        return prepared

    async def _settle(
        self, prepared: _Prepared, messages: AsyncIterator[Any] | None, completion: Completion, slot: _Slot
    ) -> None:
        """Read the CLI's result after the answer went out, for its cost; then end the CLI."""
        cost: float | None = None
        try:
            if messages is not None:
                with anyio.move_on_after(RESULT_WAIT_S):
                    async for message in messages:
                        if isinstance(message, ResultMessage):
                            if not message.is_error:
                                cost = message.total_cost_usd
                            break
        except Exception:
            cost = None
        finally:
            completion.settle(cost)
            await _kill_and_reap(prepared)
            slot.release()
            await self._dispose(prepared)

    def _start(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        task = asyncio.get_running_loop().create_task(work())
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    def _release(self, prepared: _Prepared, slot: _Slot) -> None:
        """End a used CLI: killed now, its slot freed once it is reaped, cleaned up later.

        The answer is not held back by any of it; shutdown waits for it.
        """
        process = _process_of(prepared.client)
        if process is not None and process.returncode is None:
            with suppress(Exception):
                process.kill()

        async def reap() -> None:
            await _kill_and_reap(prepared)
            slot.release()

        self._start(reap)
        self._later(lambda: self._dispose(prepared))

    def _later(self, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` shortly, after the current answer has been written out.

        Cleanup and warm starts do synchronous work on the event loop (a process spawn is a
        fork and exec); started at once they would delay the response by ~10 ms.
        ``aclose()`` starts whatever is still waiting.
        """
        loop = asyncio.get_running_loop()

        def start() -> None:
            self._pending.pop(handle, None)
            self._start(work)

        handle = loop.call_later(AFTER_RESPONSE_S, start)
        self._pending[handle] = start

    async def _dispose(self, prepared: _Prepared) -> None:
        with anyio.CancelScope(shield=True):
            await self._teardown(prepared.client)
            self._clients.discard(prepared.client)
            shutil.rmtree(prepared.workdir, ignore_errors=True)

    def _budget_left(self) -> int:
        pool = self.pool
        return self.settings.max_concurrency - self.admission.active - pool.ready_count - pool.starting_count

    async def _run(self, request: ChatRequest, key: str, slot: _Slot) -> AsyncGenerator[BackendItem, None]:
        clock = _Deadlines(self.settings, self)
        prepared = self.pool.take(key)
        self.warm_starts += prepared is not None
        if self.on_warm is not None and self.pool.enabled:
            self.on_warm(prepared is not None, request.model)
        if prepared is None:
            self.pool.make_room()
        state = _RunState(allowed_tools=allowed_tools(request), structured=request.output_schema is not None)
        completion: Completion | None = None
        messages: AsyncIterator[Any] | None = None
        try:
            with clock.scope() as scope:
                if prepared is None:
                    prepared = await self._prepare(request)
                client = prepared.client
                messages = client.receive_messages().__aiter__()
                await self._seed(client, messages, upstream_history(request), state.allowed_tools, request.model)
                await client.query(_one(self._user(request.messages[-1], should_query=True)))
            clock.check(scope)
            while not state.done:
                try:
                    message = await clock.next_message(messages)
                except StopAsyncIteration:
                    raise ClaudeProxyError("The Claude Code CLI exited before it finished answering.") from None
                if isinstance(message, StreamEvent):
                    clock.event()
                elif isinstance(message, RateLimitEvent):
                    self.rate_limit = rate_limit_summary(message)
                    state.rate_limit = self.rate_limit
                for item in state.feed(message):
                    yield item
            if state.done:
                completion = Completion(state.stop_reason, state.stop_sequence, state.usage, None, state.model,
                                        pending=state.result_follows)
                slot.succeeded = True
                yield completion
        except CLINotFoundError:
            raise ServiceUnavailableError(NOT_FOUND_HELP) from None
        except (CLIConnectionError, ClaudeSDKError):
            raise ClaudeProxyError("The Claude Code CLI exited before it finished answering.") from None
        finally:
            # The answer is complete or abandoned: nothing more is wanted from this CLI (after
            # max_tokens it would even start continuation requests), so stop it now. Never reused.
            # The slot goes with the CLI: it is freed once the process is gone, not before.
            if completion is not None and completion.pending and prepared is not None:
                slot.handed_off = True
                self._start(lambda: self._settle(prepared, messages, completion, slot))
            elif prepared is not None:
                slot.handed_off = True
                self._release(prepared, slot)
            if completion is not None and completion.pending and prepared is None:
                completion.settle(None)

    def begin_drain(self, grace: float) -> None:
        """Shutdown: refuse new runs, and end the running ones ``grace`` seconds from now."""
        self._draining = time.monotonic() + grace
        drain_at = _loop_time(self._draining)
        for scope in list(self._scopes):
            scope.deadline = min(scope.deadline, drain_at)
        for timeout in list(self._timeouts):
            when = timeout.when()
            timeout.reschedule(drain_at if when is None else min(when, drain_at))

    @staticmethod
    def _user(message: dict[str, Any], *, should_query: bool) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "user",
            "message": {"role": "user", "content": message["content"]},
            "parent_tool_use_id": None,
        }
        if not should_query:
            out["uuid"] = str(uuid.uuid4())
            out["shouldQuery"] = False
        return out

    async def _seed(
        self,
        client: ClaudeSDKClient,
        messages: AsyncIterator[Any],
        history: list[dict[str, Any]],
        allowed: frozenset[str],
        model_hint: str,
    ) -> None:
        """Write earlier turns as real history: gated user turns, then assistant turns.

        Assistant turns carry a message id and the model the CLI resolved (from its init
        report): without them the CLI treats the turn as foreign and drops its signed
        thinking blocks, which upstream needs back when thinking is on.
        """
        model = model_hint
        for turn in history:
            if turn["role"] == "assistant":
                uses_tool = any(block.get("type") == "tool_use" for block in turn["content"])
                await client.query(_one({
                    "type": "assistant",
                    "message": {
                        "id": f"msg_history{uuid.uuid4().hex[:16]}",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": turn["content"],
                        "stop_reason": "tool_use" if uses_tool else "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                    "parent_tool_use_id": None,
                }))
                continue
            message = self._user(turn, should_query=False)
            await client.query(_one(message))
            # Wait for the CLI's acknowledgement before writing the next item.
            async for reply in messages:
                if isinstance(reply, SystemMessage) and reply.subtype == "init":
                    check_isolation(reply.data, allowed)
                    model = reply.data.get("model") or model
                if isinstance(reply, ResultMessage):
                    if reply.is_error:
                        raise ClaudeProxyError("The Claude Code CLI refused the conversation history.")
                    break

    @staticmethod
    async def _teardown(client: ClaudeSDKClient) -> None:
        """Kill the CLI (a used one is never kept), then close the SDK client around it."""
        process = _process_of(client)
        if process is not None and process.returncode is None:
            with suppress(Exception):
                process.kill()
        with anyio.move_on_after(6), suppress(Exception):
            await client.disconnect()
        if process is not None and process.returncode is None:
            with anyio.move_on_after(2), suppress(Exception):
                await process.wait()

    # -- health --------------------------------------------------------------
    async def status(self, *, refresh: bool = False) -> CliStatus:
        """CLI path, version and login state; cached, since each probe spawns the CLI."""
        async with self._status_lock:
            fresh = self._status and time.monotonic() - self._status.checked_at < 300
            if self._status is not None and fresh and not refresh:
                return self._status
            self._status = await self._probe()
            return self._status

    async def _probe(self) -> CliStatus:
        path = self.cli_path
        if path is None or not cli_usable(path):
            return CliStatus(found=False, path=path, checked_at=time.monotonic())
        env = {**os.environ, **child_env(os.environ)}
        status = CliStatus(found=True, path=path, checked_at=time.monotonic())
        code, out = await _capture([path, "--version"], env)
        if code == 0:
            status.version = out.strip().split(" ", 1)[0]
        code, out = await _capture([path, "auth", "status"], env)
        with suppress(ValueError):
            info = json.loads(out)
            status.logged_in = bool(info.get("loggedIn"))
            status.auth_method = info.get("authMethod")
            status.subscription_type = info.get("subscriptionType")
            status.api_key_source = info.get("apiKeySource")
        return status

    def _refill(self, key: str, request: ChatRequest) -> None:
        if self._draining is None:
            self.pool.refill(key, request)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self.pool.sweep_forever())

    async def aclose(self) -> None:
        """Stop the warm pool and kill every CLI still running (server shutdown)."""
        with anyio.CancelScope(shield=True):
            if self._sweeper is not None:
                self._sweeper.cancel()
            await self.pool.aclose()
            for client in list(self._clients):
                await self._teardown(client)
            deadline = time.monotonic() + 15
            while (self._pending or self._cleanups) and time.monotonic() < deadline:
                for handle, start in list(self._pending.items()):
                    handle.cancel()
                    start()  # cleanups scheduled for "just after the answer": now
                if self._cleanups:
                    await asyncio.wait(list(self._cleanups), timeout=max(0.1, deadline - time.monotonic()))


async def _capture(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a short CLI command with no stdin; (exit code, stdout) or (-1, "")."""
    try:
        with anyio.fail_after(15):
            result = await anyio.run_process(argv, env=env, check=False, stdin=None, cwd=tempfile.gettempdir())
    except (OSError, TimeoutError):
        return -1, ""
    return result.returncode, result.stdout.decode("utf-8", "replace")


__all__ = ["BackendItem", "ClaudeBackend", "ClaudeClient", "CliStatus", "child_env"]
