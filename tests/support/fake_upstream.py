"""A scripted fake Anthropic Messages API for tests and benchmarks.

It listens on 127.0.0.1, records every request body it receives, and answers in the
exact SSE grammar the Claude Code CLI parses.  What it answers is chosen by
directives found in the text of the last user turn, so a test can script the model:

    [[echo]]              reply with the last user turn's own text
    [[say:TEXT]]          reply with TEXT verbatim (up to the closing ]])
    [[thinking]]          a signed thinking block before the text
    [[tool:NAME {json}]]  a tool_use block (repeatable: parallel calls)
    [[error:STATUS]]      an HTTP error (429 carries retry-after: 7)
    [[slow:SECONDS]]      spread the text deltas over SECONDS
    [[gate:NAME]]         send the first text delta, then hold the rest until open_gate(NAME)
    [[hang]]              accept the request, then never answer
    [[drop]]              send a few deltas, then cut the connection
    [[midstream_error]]   send one delta, then an overloaded_error event (after the 200)
    [[long:N]]            N tokens of text, cut at max_tokens
    [[big:N]]             N characters of text (``big_text(N)``) in one delta
    [[big:N:K]]           the same N characters spread over K deltas
    [[garbage]]           a 200 event stream that is not SSE at all
    [[model:NAME]]        report NAME as the answering model (default: the model asked for)
    [[stop:WORD]]         the text contains WORD; honour stop_sequences
    [[cache:N]]           report N cache-read input tokens
    [[quota:STATUS:UTIL]] subscription rate-limit headers (anthropic-ratelimit-unified-*):
                          STATUS allowed|allowed_warning|rejected, UTIL the 5-hour window's
                          utilization (0-1), resetting an hour from now; rejected is a 429
    [[agent:NAME:N]]      (in the first user turn) an agent loop: call tool NAME with
                          {"round": k} until N tool rounds are in the history, then finish

Without directives it replies "Hello from the fake upstream." token by token.
``refusing_url()`` is an upstream that refuses every connection (nothing listens there).

With ``prompt_cache`` on, it also keeps a prompt cache the way the Messages API does: each
``cache_control`` marker writes the prefix up to its block (tools, then system, then
messages, markers themselves ignored); a later request reads the longest written prefix
it starts with, found from one of its own markers at most 20 blocks back, and reports it
as ``cache_read_input_tokens`` (the rest of the marked prefix as cache creation).  Like the
API, it refuses a request with more than four ``cache_control`` markers (a 400), prompt cache
on or off.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TEXT = "Hello from the fake upstream."
_DIRECTIVE = re.compile(r"\[\[(\w+)(?::(.*?))?\]\]", re.S)


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeUpstream:
    """The server and its request log; use as a context manager."""

    requests: list[Recorded] = field(default_factory=list)
    cut_short: list[str] = field(default_factory=list)
    """The last user text of each answer whose reader left before its end (a CLI killed mid-answer)."""
    prompt_cache: PromptCache | None = None
    """Set to a ``PromptCache`` to report cache reads and writes as the API would."""
    host: str = "127.0.0.1"
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _gates: dict[str, threading.Event] = field(default_factory=dict)
    _held: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeUpstream:
        upstream = self

        class Handler(_Handler):
            owner = upstream

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)  # port 0: any free one
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests read ------------------------------------------------------
    def record(self, rec: Recorded) -> None:
        with self._lock:
            self.requests.append(rec)

    def clear(self) -> None:
        with self._lock:
            self.requests.clear()
            self.cut_short.clear()

    def note_cut_short(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.cut_short.append(last_user_text(body))

    def gate(self, name: str) -> threading.Event:
        with self._lock:
            return self._gates.setdefault(name, threading.Event())

    def open_gate(self, name: str) -> None:
        self.gate(name).set()

    def held_at_gate(self, name: str) -> bool:
        """An answer is waiting at gate ``name`` now, its first delta sent, the rest held."""
        with self._lock:
            return name in self._held

    def hold(self, name: str) -> None:
        with self._lock:
            self._held.add(name)
        try:
            self.gate(name).wait(60)
        finally:
            with self._lock:
                self._held.discard(name)

    def received(self, marker: str) -> bool:
        """A messages call whose last user turn contains ``marker`` arrived."""
        return any(marker in last_user_text(r.body) for r in self.messages_calls)

    def was_cut_short(self, marker: str) -> bool:
        """The answer to the call carrying ``marker`` lost its reader before its end."""
        with self._lock:
            return any(marker in text for text in self.cut_short)

    @property
    def messages_calls(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/v1/messages") and "count_tokens" not in r.path]

    @property
    def last_body(self) -> dict[str, Any]:
        calls = self.messages_calls
        assert calls, "upstream received no /v1/messages call"
        return calls[-1].body


def refusing_url() -> str:
    """A loopback URL where nothing listens: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def big_text(size: int) -> str:
    """``size`` characters of deterministic text: numbered words, so a test sees any loss."""
    words: list[str] = []
    total = 0
    n = 0
    while total < size:
        word = f"w{n} "
        words.append(word)
        total += len(word)
        n += 1
    return "".join(words)[:size]


def _split(text: str, parts: int) -> list[str]:
    step = -(-len(text) // max(1, parts))
    return [text[i:i + step] for i in range(0, len(text), step)] or [text]


def last_user_text(body: dict[str, Any]) -> str:
    """The text the client wrote in the final user turn (system reminders removed)."""
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [
            b.get("text", "")
            for b in content
            if b.get("type") == "text" and not b.get("text", "").lstrip().startswith("<system-reminder>")
        ]
        return "\n".join(texts)
    return ""


def agent_step(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The next move of an ``[[agent:NAME:N]]`` loop scripted in the first user turn."""
    messages = body.get("messages", [])
    first = next((m for m in messages if m.get("role") == "user"), None)
    if first is None:
        return []
    content = first["content"]
    text = content if isinstance(content, str) else " ".join(b.get("text", "") for b in content)
    match = re.search(r"\[\[agent:([\w.\-]+):(\d+)\]\]", text)
    if not match:
        return []
    rounds = sum(
        1 for m in messages
        if m.get("role") == "assistant" and isinstance(m.get("content"), list)
        and any(b.get("type") == "tool_use" for b in m["content"])
    )
    if rounds < int(match.group(2)):
        return [("tool", f'{match.group(1)} {{"round": {rounds + 1}}}')]
    return [("say", f"Finished after {rounds} tool rounds.")]


def directives(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2) or "") for m in _DIRECTIVE.finditer(text)]


LOOKBACK_BLOCKS = 20
MAX_CACHE_MARKERS = 4
"""The Messages API refuses a request with more ``cache_control`` markers (a 400)."""


@dataclass
class PromptCache:
    """Prefixes written at ``cache_control`` markers, by hash, with their size in tokens."""

    written: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @staticmethod
    def blocks(body: dict[str, Any]) -> tuple[list[str], list[int]]:
        """The request as cacheable blocks in API order, and the indices that carry a marker."""
        units: list[str] = []
        marked: list[int] = []

        def add(item: dict[str, Any]) -> None:
            if "cache_control" in item:
                marked.append(len(units))
            units.append(json.dumps({k: v for k, v in item.items() if k != "cache_control"}, sort_keys=True))

        for tool in body.get("tools") or []:
            add(tool)
        system = body.get("system")
        for block in [{"type": "text", "text": system}] if isinstance(system, str) else system or []:
            add(block)
        for message in body.get("messages", []):
            units.append(json.dumps({"turn": message.get("role")}))  # a turn boundary is part of the prefix
            content = message.get("content")
            for block in [{"type": "text", "text": content}] if isinstance(content, str) else content or []:
                add(block)
        return units, marked

    def usage(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """(uncached input, cache read, cache creation) tokens for this request; writes its prefixes."""
        units, marked = self.blocks(body)
        sizes, hashes = [0], [hashlib.sha256()]
        for unit in units:
            digest = hashes[-1].copy()
            digest.update(unit.encode())
            hashes.append(digest)
            sizes.append(sizes[-1] + max(1, len(unit) // 4))
        keys = [h.hexdigest() for h in hashes]  # keys[k]: the prefix of the first k blocks
        with self._lock:
            read = 0
            for mark in marked:
                for end in range(mark + 1, max(0, mark + 1 - LOOKBACK_BLOCKS), -1):
                    if keys[end] in self.written:
                        read = max(read, sizes[end])
                        break
            created = 0
            for mark in marked:
                self.written[keys[mark + 1]] = sizes[mark + 1]
                created = max(created, sizes[mark + 1] - read)
        return sizes[-1] - read - created, read, created


def count_tokens(body: dict[str, Any]) -> int:
    """A stable, monotone stand-in for a tokenizer: ~4 characters a token."""
    size = len(json.dumps(body.get("messages", []))) + len(json.dumps(body.get("system", "")))
    size += len(json.dumps(body.get("tools", [])))
    return max(1, size // 4)


class _Handler(BaseHTTPRequestHandler):
    owner: FakeUpstream
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._json(200, {"data": [], "has_more": False})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw)
        except ValueError:
            body = {"_raw": raw.decode("utf-8", "replace")}
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.owner.record(Recorded(self.path, headers, body))
        if "count_tokens" in self.path:
            self._json(200, {"input_tokens": count_tokens(body)})
            return
        if not self.path.startswith("/v1/messages"):
            self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "not found"}})
            return
        try:
            self._answer(body)
        except (BrokenPipeError, ConnectionResetError):
            self.owner.note_cut_short(body)

    # -- responses ------------------------------------------------------------
    def _json(self, status: int, payload: dict[str, Any], extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", "req_fake")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _event(self, name: str, payload: dict[str, Any]) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode())
        self.wfile.flush()

    def _answer(self, body: dict[str, Any]) -> None:
        text_in = last_user_text(body)
        found = directives(text_in)
        if all(name == "agent" for name, _ in found):
            found = agent_step(body)
        names = {name for name, _ in found}
        args = {name: arg for name, arg in found}

        markers = len(PromptCache.blocks(body)[1])
        if markers > MAX_CACHE_MARKERS:
            self._json(400, {"type": "error", "error": {"type": "invalid_request_error", "message":
                             f"A maximum of {MAX_CACHE_MARKERS} blocks with cache_control may be provided. "
                             f"Found {markers}."}})
            return
        quota = _quota_headers(args["quota"]) if "quota" in names else {}
        if quota and quota["anthropic-ratelimit-unified-status"] == "rejected":
            self._json(429, {"type": "error", "error": {"type": "rate_limit_error",
                                                        "message": "fake upstream: plan limit reached"}}, quota)
            return
        if "error" in names:
            status = int(args["error"] or 500)
            kinds = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     429: "rate_limit_error", 529: "overloaded_error"}
            extra = {"retry-after": "7"} if status == 429 else {}
            self._json(status, {"type": "error", "error": {"type": kinds.get(status, "api_error"),
                                                           "message": f"fake upstream error {status}"}}, extra)
            return
        if "hang" in names:
            self.owner._stop.wait(120)
            return
        if "garbage" in names:
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("connection", "close")
            self.end_headers()
            self.close_connection = True
            self.wfile.write(b"<html>this is not an event stream</html>\n\n\x00\xff{]\n\n")
            self.wfile.flush()
            return

        text = DEFAULT_TEXT
        if "echo" in names:
            text = _DIRECTIVE.sub("", text_in).strip() or "(empty)"
        if "say" in names:
            text = args["say"]
        stop_reason = "end_turn"
        stop_sequence = None
        pieces = _tokens(text)
        if "long" in names:
            pieces = [f"w{i} " for i in range(int(args["long"] or 100))]
        if "big" in names:
            size, _, parts = args["big"].partition(":")
            pieces = _split(big_text(int(size)), int(parts or 1))
        if "stop" in names:
            word = args["stop"]
            pieces = _tokens(f"Before the word {word} and after it.")
            if word in (body.get("stop_sequences") or []):
                cut = "".join(pieces).index(word)
                pieces = _tokens("".join(pieces)[:cut])
                stop_reason, stop_sequence = "stop_sequence", word
        max_tokens = int(body.get("max_tokens") or 4096)
        if len(pieces) > max_tokens:
            pieces, stop_reason = pieces[:max_tokens], "max_tokens"
        tools = [(name_arg.split(" ", 1)[0], name_arg.split(" ", 1)[1] if " " in name_arg else "{}")
                 for name, name_arg in found if name == "tool"]
        if tools:
            stop_reason = "tool_use"
            if "say" not in names:
                pieces = []
        cache_read = int(args.get("cache") or 0)
        delay = float(args["slow"]) / max(1, len(pieces)) if "slow" in names else 0.0

        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", "req_fake")
        self.send_header("connection", "close")
        for key, value in quota.items():
            self.send_header(key, value)
        self.end_headers()
        self.close_connection = True
        usage = {"input_tokens": count_tokens(body), "output_tokens": 1,
                 "cache_creation_input_tokens": 0, "cache_read_input_tokens": cache_read}
        if self.owner.prompt_cache is not None:
            fresh, read, created = self.owner.prompt_cache.usage(body)
            usage.update(input_tokens=fresh, cache_read_input_tokens=read, cache_creation_input_tokens=created)
        self._event("message_start", {"type": "message_start", "message": {
            "id": f"msg_fake{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
            "model": args.get("model") or body.get("model", "claude-fake"), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": usage}})
        self._event("ping", {"type": "ping"})
        index = 0
        output_tokens = 0
        if "thinking" in names and body.get("thinking", {}).get("type") in ("enabled", "adaptive"):
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "thinking", "thinking": "", "signature": ""}})
            for piece in _tokens("Let me think about this carefully."):
                self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "thinking_delta", "thinking": piece}})
                output_tokens += 1
            self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                "delta": {"type": "signature_delta", "signature": "c2lnbmF0dXJl"}})
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        if pieces:
            self._event("content_block_start", {"type": "content_block_start", "index": index,
                                                "content_block": {"type": "text", "text": ""}})
            for n, piece in enumerate(pieces):
                if "drop" in names and n == 3:
                    self.wfile.flush()
                    self.connection.shutdown(2)
                    return
                if delay:
                    time.sleep(delay)
                self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                    "delta": {"type": "text_delta", "text": piece}})
                output_tokens += 1
                if n == 0 and "gate" in names:
                    self.owner.hold(args["gate"])
                if n == 0 and "midstream_error" in names:  # overloaded after the answer began
                    self._event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                                     "message": "Overloaded"}})
                    return
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        for n, (name, raw_input) in enumerate(tools):
            self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": {
                "type": "tool_use", "id": f"toolu_fake{n}{uuid.uuid4().hex[:8]}",
                "name": _upstream_tool_name(body, name), "input": {}}})
            compact = json.dumps(json.loads(raw_input))
            if compact != "{}":
                half = len(compact) // 2
                for part in (compact[:half], compact[half:]):
                    self._event("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "input_json_delta", "partial_json": part}})
            output_tokens += 2
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
            index += 1
        self._event("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                                      "usage": {"output_tokens": max(1, output_tokens)}})
        self._event("message_stop", {"type": "message_stop"})


QUOTA_RESET_S = 3600


def _quota_headers(arg: str | None) -> dict[str, str]:
    """The unified rate-limit headers a subscription's responses carry."""
    status, _, utilization = (arg or "allowed:0.5").partition(":")
    reset = str(int(time.time()) + QUOTA_RESET_S)
    return {
        "anthropic-ratelimit-unified-status": status,
        "anthropic-ratelimit-unified-reset": reset,
        "anthropic-ratelimit-unified-representative-claim": "five_hour",
        "anthropic-ratelimit-unified-5h-status": status,
        "anthropic-ratelimit-unified-5h-utilization": utilization or "0.5",
        "anthropic-ratelimit-unified-5h-reset": reset,
        "anthropic-ratelimit-unified-7d-status": "allowed",
        "anthropic-ratelimit-unified-7d-utilization": "0.1",
        "anthropic-ratelimit-unified-7d-reset": str(int(time.time()) + 7 * 86400),
        "anthropic-ratelimit-unified-overage-status": "rejected",
        "anthropic-ratelimit-unified-overage-disabled-reason": "out_of_credits",
        "anthropic-ratelimit-unified-fallback-percentage": "0.5",
    }


def _upstream_tool_name(body: dict[str, Any], name: str) -> str:
    """The name the model must use: the declared tool whose name ends with NAME."""
    for tool in body.get("tools", []):
        declared = tool.get("name", "")
        if declared == name or declared.endswith("__" + name):
            return str(declared)
    return name


def _tokens(text: str) -> list[str]:
    """Split text into word-sized pieces that concatenate back to it exactly."""
    return re.findall(r"\S+\s*|\s+", text) or [text]


if __name__ == "__main__":  # a manual run: python -m tests.support.fake_upstream
    with FakeUpstream() as server:
        print(server.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass
