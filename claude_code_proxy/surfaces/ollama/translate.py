"""Pure translation between the Ollama API and the internal forms.

- ``from_chat`` / ``from_generate``: an ``/api/chat`` or ``/api/generate`` body -> ``ChatRequest``.
- ``to_chat_response`` / ``to_generate_response``: the neutral ``Answer`` -> Ollama's final object.
- ``stats``: the final object's durations (nanoseconds) and token counts.
- ``tags_entry`` / ``show_body``: the catalog as Ollama's model list and model card.

No I/O, no settings, no logging (the caller passes the default ``max_tokens``, the time
stamps and the clock readings).  Intentional divergences, each in docs/compatibility.md:

- every ``system`` message is hoisted into the system prompt, wherever it stands;
- images are bare base64 (Ollama's form); their type is read from their first bytes;
- ``thinking`` on earlier assistant turns is dropped (it carries no signature to send back),
  and thinking is switched off when the client replays a tool call;
- a model name's ``:tag`` is ignored: ``sonnet``, ``sonnet:latest`` and ``sonnet:x`` are one model.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

from claude_code_proxy.catalog import ModelEntry
from claude_code_proxy.chat.answer import Answer
from claude_code_proxy.chat.content import (
    check_base64_image,
    check_output_schema,
    check_strings,
    check_text,
    check_tools,
    clean_stop_sequences,
    effort_thinking,
    finish_conversation,
    merge_turns,
    sanitize_tool_id,
    text_blocks,
    tool_arguments,
)
from claude_code_proxy.chat.request import ChatRequest, ClientTool
from claude_code_proxy.exceptions import InvalidRequestError
from claude_code_proxy.surfaces.ollama.models import ChatBody, Format, GenerateBody, Generation, Message, ToolCall

# think: true/"low"/"medium"/"high" -> thinking budget (the OpenAI surface's table).
THINKING_BUDGETS = {"low": 1024, "medium": 2048, "high": 4096}
DEFAULT_THINK_LEVEL = "medium"
MIN_THINKING_BUDGET = 1024
LENGTH_STOPS = frozenset({"max_tokens", "model_context_window_exceeded", "compaction"})
EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

# Magic numbers of the image types upstream accepts (Ollama images carry no media type).
_IMAGE_MAGIC = ((b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
                (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"))

FAMILY = "claude"
CONTEXT_LENGTH = 200_000
CONTEXT_LENGTH_1M = 1_000_000
# Clients that predate ``capabilities`` look for ``.Tools`` in the template to offer tools.
TEMPLATE = ("{{- if .System }}{{ .System }}\n{{ end }}{{- if .Tools }}{{ .Tools }}\n{{ end }}"
            "{{- range .Messages }}{{ .Role }}: {{ .Content }}\n{{ end }}")


def model_name(requested: str) -> str:
    """The catalog name for an Ollama model name: ``sonnet:latest`` -> ``sonnet``."""
    name, _, _ = requested.strip().partition(":")
    return name


# -- requests ----------------------------------------------------------------------

def from_chat(body: ChatBody, model: str, default_max_tokens: int) -> ChatRequest:
    """An ``/api/chat`` body as the internal request (model already resolved)."""
    system, turns = translate_messages(body.messages)
    tools = client_tools(body)
    messages = finish_conversation(merge_turns(turns))
    max_tokens, thinking = max_tokens_and_thinking(body, default_max_tokens)
    if thinking is not None and replays_tool_call(messages):
        thinking = None  # upstream would want the signed thinking of that turn back
    return _request(body, model, messages, system, max_tokens, thinking, tools)


def from_generate(body: GenerateBody, model: str, default_max_tokens: int) -> ChatRequest:
    """An ``/api/generate`` body as the internal request: one user turn."""
    if body.suffix:
        raise InvalidRequestError(
            "suffix (fill-in-the-middle) is not supported: Claude has no insertion mode.", param="suffix")
    prompt = body.prompt or ""
    check_text(prompt, "prompt")
    blocks = [image_block(data, f"images.{i}") for i, data in enumerate(body.images or [])]
    if prompt.strip():
        blocks.append({"type": "text", "text": prompt})
    messages = finish_conversation([{"role": "user", "content": blocks}] if blocks else [])
    # ``raw`` means no template around the prompt; the template is what carries the system
    # prompt, so a raw prompt goes alone, as in Ollama.
    system = None if body.raw else body.system
    if system is not None:
        check_text(system, "system")
    max_tokens, thinking = max_tokens_and_thinking(body, default_max_tokens)
    return _request(body, model, messages, system if system and system.strip() else None,
                    max_tokens, thinking, [])


def _request(body: Generation, model: str, messages: list[dict[str, Any]], system: str | None, max_tokens: int,
             thinking: dict[str, Any] | None, tools: list[ClientTool]) -> ChatRequest:
    options = body.options
    stops = options.stop if options is not None else None
    return ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        system=system,
        stop_sequences=clean_stop_sequences([stops] if isinstance(stops, str) else stops),
        thinking=thinking,
        tools=tools,
        output_schema=output_schema(body.format),
    )


def max_tokens_and_thinking(body: Generation, default_max_tokens: int) -> tuple[int, dict[str, Any] | None]:
    """``options.num_predict`` (Ollama's -1 / -2 / 0 mean "no limit": the default) and
    ``think``; the thinking budget always stays below max_tokens."""
    predict = body.options.num_predict if body.options is not None else None
    explicit = predict if predict is not None and predict > 0 else None
    level = DEFAULT_THINK_LEVEL if body.think is True else body.think or None
    if level is not None and level not in THINKING_BUDGETS:
        raise InvalidRequestError('think must be true, false, "low", "medium" or "high".', param="think")
    return effort_thinking(level, explicit, default_max_tokens)


def output_schema(format_: Format | None) -> dict[str, Any] | None:
    """``"json"`` -> any object; a schema -> itself; ``""`` or none -> free text."""
    if isinstance(format_, dict):
        check_output_schema(format_, "format")
        return format_
    return {"type": "object"} if format_ == "json" else None


def translate_messages(messages: list[Message]) -> tuple[str | None, list[dict[str, Any]]]:
    """The hoisted system prompt, and the turns in Anthropic form (not yet merged)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    pending: list[tuple[str, str]] = []  # (id, name) of the latest tool calls still awaiting results
    for i, message in enumerate(messages):
        param = f"messages.{i}"
        text = message.content or ""
        check_text(text, f"{param}.content")
        if message.images and message.role != "user":
            raise InvalidRequestError("Images are only supported on user messages.", param=f"{param}.images")
        if message.role == "system":
            if text.strip():
                system.append(text)
        elif message.role == "user":
            blocks = [image_block(data, f"{param}.images.{j}") for j, data in enumerate(message.images or [])]
            turns.append({"role": "user", "content": blocks + text_blocks(text, "messages")})
        elif message.role == "assistant":
            calls = [tool_use(call, i, j) for j, call in enumerate(message.tool_calls or [])]
            pending = [(block["id"], block["name"]) for block in calls]
            turns.append({"role": "assistant", "content": text_blocks(text, "messages") + calls})
        else:
            call_id = _answered_call(message, pending, param)
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": call_id}
            if text.strip():
                block["content"] = text
            turns.append({"role": "user", "content": [block]})
    for turn in turns:
        check_strings(turn["content"], "messages")
    return "\n".join(system) or None, turns


def tool_use(call: ToolCall, index: int, position: int) -> dict[str, Any]:
    """An assistant turn's tool call; calls without an id (Ollama's older form) get one."""
    call_id = sanitize_tool_id(call.id) if call.id else f"call_{index}_{position}"
    return {"type": "tool_use", "id": call_id, "name": call.function.name,
            "input": tool_arguments(call.function.arguments,
                                    f"messages.{index}.tool_calls.{position}.function.arguments")}


def _answered_call(message: Message, pending: list[tuple[str, str]], param: str) -> str:
    """The tool call a ``tool`` message answers: by ``tool_call_id``, else by ``tool_name``,
    else the next unanswered call (Ollama's clients often send only the name, or nothing)."""
    wanted = sanitize_tool_id(message.tool_call_id) if message.tool_call_id else None
    for matches in (lambda item: item[0] == wanted, lambda item: item[1] == message.tool_name, lambda item: True):
        for item in pending:
            if matches(item):
                pending.remove(item)
                return item[0]
    raise InvalidRequestError("This tool message answers no tool call of the assistant message before it.",
                              param=param)


def image_block(data: str, param: str) -> dict[str, Any]:
    """An Ollama image (bare base64) as an Anthropic base64 image of its sniffed type."""
    check_base64_image(data, param)
    media_type = sniff_image(data)
    if media_type is None:
        raise InvalidRequestError("Unsupported image type; send PNG, JPEG, GIF or WebP images.", param=param)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def sniff_image(data: str) -> str | None:
    try:
        head = base64.b64decode(data[:24], validate=True)  # 24 characters = the first 18 bytes
    except (binascii.Error, ValueError):
        return None
    for magic, media_type in _IMAGE_MAGIC:
        if head.startswith(magic):
            return media_type
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def client_tools(body: ChatBody) -> list[ClientTool]:
    tools = [(f"tools.{i}.function.name", ClientTool(
        name=tool.function.name,
        description=tool.function.description or "",
        input_schema=tool.function.parameters if tool.function.parameters is not None else dict(EMPTY_SCHEMA),
    )) for i, tool in enumerate(body.tools or [])]
    check_tools(tools)  # each name once, none that reach the model as the same name
    return [tool for _, tool in tools]


def replays_tool_call(messages: list[dict[str, Any]]) -> bool:
    """The last assistant turn called a tool: upstream would want its signed thinking back."""
    for message in reversed(messages):
        if message["role"] == "assistant":
            return any(block["type"] == "tool_use" for block in message["content"])
    return False






# -- responses ---------------------------------------------------------------------

@dataclass(frozen=True)
class Marks:
    """``perf_counter()`` readings over one request (None: it never happened)."""

    started: float
    first_item: float | None
    """The backend's first item: a CLI is running and upstream has begun answering."""
    first_token: float | None
    finished: float


def stats(usage: dict[str, int], marks: Marks) -> dict[str, int]:
    """The final object's figures: measured durations in nanoseconds, upstream's token counts.

    ``load_duration`` is getting a CLI (admission, start-up or a warm one) until upstream's
    first event; ``prompt_eval_duration`` from there to the first token; ``eval_duration``
    the rest.  The three add up to ``total_duration``.
    """
    loaded = marks.first_item if marks.first_item is not None else marks.finished
    first = max(loaded, marks.first_token if marks.first_token is not None else marks.finished)

    def ns(start: float, end: float) -> int:
        return max(0, round((end - start) * 1e9))

    return {
        "total_duration": ns(marks.started, marks.finished),
        "load_duration": ns(marks.started, loaded),
        "prompt_eval_count": prompt_tokens(usage),
        "prompt_eval_duration": ns(loaded, first),
        "eval_count": int(usage.get("output_tokens") or 0),
        "eval_duration": ns(first, marks.finished),
    }


def prompt_tokens(usage: dict[str, int]) -> int:
    """Every token of the prompt: Anthropic counts cached ones apart."""
    return sum(int(usage.get(key) or 0)
               for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"))


def done_reason(stop_reason: str | None) -> str:
    """Ollama knows ``stop`` and ``length``; a tool call is a ``stop`` there too."""
    return "length" if stop_reason in LENGTH_STOPS else "stop"


def tool_call(block: dict[str, Any], index: int) -> dict[str, Any]:
    """A tool_use block as Ollama's tool call (arguments as an object)."""
    return {"id": block["id"], "function": {"index": index, "name": block["name"],
                                            "arguments": block.get("input") or {}}}


def to_chat_response(answer: Answer, *, model: str, created_at: str, figures: dict[str, int]) -> dict[str, Any]:
    """The neutral answer (tool names already restored) as ``/api/chat``'s one object."""
    message: dict[str, Any] = {"role": "assistant", "content": _joined(answer, "text")}
    thinking = _joined(answer, "thinking")
    if thinking:
        message["thinking"] = thinking
    calls = [block for block in answer.content if block.get("type") == "tool_use"]
    if calls:
        message["tool_calls"] = [tool_call(block, i) for i, block in enumerate(calls)]
    return {"model": model, "created_at": created_at, "message": message,
            **final_fields(answer.stop_reason, figures)}


def to_generate_response(answer: Answer, *, model: str, created_at: str, figures: dict[str, int]) -> dict[str, Any]:
    """The neutral answer as ``/api/generate``'s one object."""
    body: dict[str, Any] = {"model": model, "created_at": created_at, "response": _joined(answer, "text")}
    thinking = _joined(answer, "thinking")
    if thinking:
        body["thinking"] = thinking
    return {**body, **final_fields(answer.stop_reason, figures)}


def final_fields(stop_reason: str | None, figures: dict[str, int]) -> dict[str, Any]:
    return {"done": True, "done_reason": done_reason(stop_reason), **figures}


def loaded_response(body: Generation, created_at: str, *, chat: bool) -> dict[str, Any]:
    """Ollama's answer to a request with nothing to say: it only loads (or, with
    ``keep_alive: 0``, unloads) the model.  Here nothing is loaded either way."""
    out: dict[str, Any] = {"model": body.model, "created_at": created_at}
    out.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    return {**out, "done": True, "done_reason": "unload" if unloads(body.keep_alive) else "load"}


def unloads(keep_alive: str | float | None) -> bool:
    if isinstance(keep_alive, str):
        return keep_alive.strip() in ("0", "0s", "0m", "0h")
    return keep_alive == 0


def _joined(answer: Answer, kind: str) -> str:
    return "".join(block.get(kind, "") for block in answer.content if block.get("type") == kind)


# -- the model catalog -------------------------------------------------------------

def context_length(model_id: str) -> int:
    return CONTEXT_LENGTH_1M if model_id.endswith("[1m]") else CONTEXT_LENGTH


def supports_thinking(model_id: str) -> bool:
    """Every Claude model since 3.7 thinks; the aliases name current ones."""
    return not (model_id.startswith("claude-3-") and not model_id.startswith("claude-3-7"))


def details() -> dict[str, Any]:
    # No weights, so no format, size or quantization to report: empty, never invented.
    return {"parent_model": "", "format": "", "family": FAMILY, "families": [FAMILY],
            "parameter_size": "", "quantization_level": ""}


def digest(model_id: str) -> str:
    """A stable stand-in for a weights digest: clients use it to tell models apart."""
    return hashlib.sha256(model_id.encode()).hexdigest()


def tags_entry(entry: ModelEntry) -> dict[str, Any]:
    tag = f"{entry.id}:latest"
    return {"name": tag, "model": tag, "modified_at": entry.created_at, "size": 0,
            "digest": digest(entry.id), "details": details()}


def show_body(model_id: str, modified_at: str, default_max_tokens: int) -> dict[str, Any]:
    """``/api/show``'s model card for a resolved model."""
    capabilities = ["completion", "tools", "vision"] + (["thinking"] if supports_thinking(model_id) else [])
    length = context_length(model_id)
    return {
        "modelfile": f"# Served through the Claude Code CLI; there are no local weights.\nFROM {model_id}\n",
        "parameters": f"num_ctx {length}\nnum_predict {default_max_tokens}",
        "template": TEMPLATE,
        "details": details(),
        "model_info": {"general.architecture": FAMILY, "general.basename": model_id,
                       f"{FAMILY}.context_length": length},
        "capabilities": capabilities,
        "modified_at": modified_at,
    }
