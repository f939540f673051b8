"""How a CLI is started for a request: its options and its environment.

Every CLI is a plain chat backend, never an agent: no built-in tools, no MCP servers but
the proxy's own (client tools that never run), no user settings or CLAUDE.md, verbatim
prompts, restricted mode, a constant neutral working directory, a private temp directory, no session
persistence, and an allow-listed environment.  Nothing in a request can change these.
Per-request knobs travel through the CLI's own channels (see docs/architecture.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from claude_agent_sdk import (
    ClaudeAgentOptions,
    HookContext,
    HookInput,
    HookJSONOutput,
    HookMatcher,
    create_sdk_mcp_server,
    tool,
)

from claude_code_proxy.backend.relay import ASSUME_FIRST_PARTY, is_first_party
from claude_code_proxy.chat.request import CLIENT_SERVER, STRUCTURED_OUTPUT_TOOL, ChatRequest, ClientTool
from claude_code_proxy.config.settings import Settings

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
# refusal or a non-streaming fallback (either would duplicate text), no memory files; and
# what keeps the upstream body close to the client's (docs/compatibility.md):
# - no experimental betas: the CLI's cache marker sits on the client's last turn (not on
#   its own note after it), and no empty per-turn control turns are added;
# - no per-prompt attachments (notes the CLI adds to a user turn);
# - no model fallback: the model the client asked for or an error, never a second call to
#   another model (and no fallback beta whose removal the CLI would retry a 400 with);
# - the AGENTS.md plugin's per-session store write off (it writes to the user's config).
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
    "CLAUDE_CODE_DISABLE_EXPERIMENTAL_BETAS": "1",
    "CLAUDE_CODE_DISABLE_ATTACHMENTS": "1",
    "CLAUDE_CODE_NO_MODEL_FALLBACK": "1",
    "CLAUDE_CODE_AGENTS_MD_ROWS_EVERY_PROCESS": "1",
}

NEUTRAL_CWD = "/"
"""The working directory of every CLI.  The CLI names it in the environment note it adds to
every upstream body: constant, so identical requests send identical bodies and a growing
conversation keeps a cacheable prefix.  The CLI writes nothing there and no tool runs."""

MODEL_TURNS = 1
"""One model turn per request: after a tool call (declared or not) the CLI stops instead of
answering the call itself and calling upstream again."""

MAX_CLI_MESSAGE_BYTES = 64 * 1024 * 1024
"""The largest single message the CLI may write to the proxy.  The CLI relays a whole
content block in one message once the block ends (and a single upstream delta in one
event), so this bounds the size of one answer block: the SDK's default of 1 MiB cut
answers of a few hundred thousand words off at their very end."""

NOT_FOUND_HELP = (
    "The Claude Code CLI was not found. Reinstall claude-code-proxy (its SDK bundles the CLI) "
    "or set CLAUDE_PROXY_CLI_PATH to a `claude` executable."
)
LOGIN_HELP = (
    "The Claude Code CLI is not logged in. Run `claude-code-proxy login`, or set "
    "CLAUDE_CODE_OAUTH_TOKEN (from `claude-code-proxy setup-token`) or ANTHROPIC_API_KEY, then retry."
)


def cli_usable(path: str | None) -> bool:
    """An executable file (a directory passes the X_OK test too)."""
    return path is not None and os.path.isfile(path) and os.access(path, os.X_OK)


def upstream_host(environ: dict[str, str] | os._Environ[str]) -> str:
    """The host (and port) the CLI sends its requests to, without any credentials in the URL."""
    parts = urlsplit(environ.get("ANTHROPIC_BASE_URL") or "https://api.anthropic.com")
    host = parts.hostname or "api.anthropic.com"
    return f"{host}:{parts.port}" if parts.port else host


def child_env(environ: dict[str, str] | os._Environ[str]) -> dict[str, str]:
    """The environment overrides that turn the proxy's env into the child's allow-list."""
    blanked = {
        key: ""
        for key in environ
        if key not in ENV_ALLOW and not key.startswith(ENV_ALLOW_PREFIXES)
    }
    return {**blanked, **FIXED_ENV}


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
    """Earlier turns, with the client's tool names in tool_use blocks as the model knows them,
    and on older models a cache marker on the last answer (``marks_last_answer``)."""
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
    if marks_last_answer(request) and history and history[-1]["role"] == "assistant":
        content = list(history[-1]["content"])
        markable = [i for i, block in enumerate(content) if block.get("type") not in UNMARKABLE]
        if markable:
            content[markable[-1]] = {**content[markable[-1]], "cache_control": {"type": "ephemeral"}}
            history[-1] = {**history[-1], "content": content}
    return history


OLDER_FAMILY = re.compile(r"claude-(?:opus|sonnet|haiku)-4-[5-7](?![0-9])")
"""Models on which the CLI writes its environment note into the client's last user turn."""
UNMARKABLE = frozenset({"thinking", "redacted_thinking"})


def marks_last_answer(request: ChatRequest) -> bool:
    """On 4.5-4.7 models the CLI's environment note opens the client's last user turn, in
    front of the CLI's cache marker there, and moves on to the next last turn in the next
    request: no later request repeats that marked prefix.  A marker on the last answer, which
    the CLI keeps, ends a prefix the next request does repeat, so a follow-up reads the
    conversation up to the previous answer from the prompt cache.  The client's own markers
    come first: with any, none is added (the API takes four per request, and the CLI sets
    up to three)."""
    if OLDER_FAMILY.search(request.model) is None:
        return False
    return not any(_has_marker(block) for turn in request.messages for block in turn["content"])


def _has_marker(block: Any) -> bool:
    """A cache marker on the block or on a block inside it (a tool result's content)."""
    if not isinstance(block, dict):
        return False
    inner = block.get("content")
    return "cache_control" in block or (isinstance(inner, list) and any(_has_marker(b) for b in inner))


def _never_run(client_tool: ClientTool) -> Any:
    @tool(client_tool.cli_name, client_tool.description, client_tool.schema)
    async def handler(args: dict[str, Any]) -> dict[str, Any]:
        # Never reached: the PreToolUse hook defers every call back to the client.
        return {"content": [{"type": "text", "text": "This tool runs on the client."}], "is_error": True}

    return handler


async def _defer_tool_call(input_data: HookInput, tool_use_id: str | None, context: HookContext) -> HookJSONOutput:
    """End the run at the model's tool call: the client, not the CLI, runs its tools."""
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "defer"}}


def _extra_body_settings(workdir: Path, extra_body: dict[str, Any]) -> str:
    """A settings file whose ``env`` block carries the fields the CLI merges into the upstream
    body.  One environment variable is limited to 128 KiB (E2BIG at spawn), and stop
    sequences or tool_choice can be larger; the CLI reads a settings file given with
    ``--settings`` even with every other settings source off."""
    path = workdir / "settings.json"
    path.write_text(json.dumps({"env": {"CLAUDE_CODE_EXTRA_BODY": json.dumps(extra_body)}}), encoding="utf-8")
    return str(path)


def _drop_stderr(line: str) -> None:
    log.debug("cli.stderr", chars=len(line))


def build_options(settings: Settings, cli_path: str | None, request: ChatRequest, workdir: Path,
                  relay_url: str | None = None) -> ClaudeAgentOptions:
    """The CLI options for one request: fixed safety options plus the request's knobs.
    With ``relay_url`` the CLI sends its API calls there (backend/relay.py)."""
    env = child_env(os.environ)
    if relay_url is not None:
        env["ANTHROPIC_BASE_URL"] = relay_url
        # The relay is on loopback: never through an HTTP proxy the environment names.
        for name in ("NO_PROXY", "no_proxy"):
            env[name] = ",".join(filter(None, [os.environ.get(name, ""), "127.0.0.1", "localhost"]))
        if is_first_party(os.environ.get("ANTHROPIC_BASE_URL")):
            # The relay forwards to the first-party API: the CLI behaves as it would there.
            env[ASSUME_FIRST_PARTY] = "1"
    env["CLAUDE_CODE_TMPDIR"] = str(workdir / "tmp")
    env["CLAUDE_CODE_MAX_RETRIES"] = str(settings.cli_max_retries)
    env["CLAUDE_CODE_MAX_OUTPUT_TOKENS"] = str(request.max_tokens)
    extra_body: dict[str, Any] = {}
    if request.stop_sequences:
        extra_body["stop_sequences"] = request.stop_sequences
    if request.tools and request.tool_choice:
        # The SDK has no tool_choice option; the CLI merges this into the upstream body.
        extra_body["tool_choice"] = upstream_tool_choice(request)
    settings_file = _extra_body_settings(workdir, extra_body) if extra_body else None
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
        cli_path=cli_path,
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
        cwd=NEUTRAL_CWD,
        max_turns=MODEL_TURNS,
        env=env,
        settings=settings_file,
        extra_args={"no-session-persistence": None, "restricted": None},
        # Piped, never printed: the CLI's stderr can hold paths, tokens or prompt text.
        stderr=_drop_stderr,
        max_buffer_size=MAX_CLI_MESSAGE_BYTES,
    )
