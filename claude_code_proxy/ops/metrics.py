"""What one request did: filled in as it runs, written once to the log and the usage ledger.

The request middleware (web/context.py) creates a ``RequestMetrics`` per request; the
exchange adds the model and notes the first token, the completion (tokens, cost) and any
failure as the backend's items pass.  A non-streaming request is recorded by the middleware
when its response is ready; a stream is recorded by the exchange when the stream ends,
however it ends (completed, failed, or the client left).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from claude_code_proxy.chat.answer import Completion
from claude_code_proxy.exceptions import ClaudeProxyError
from claude_code_proxy.log import escape

log = structlog.get_logger("claude_code_proxy")
Recorder = Callable[["RequestMetrics"], None]
MODEL_NAME_CHARS = 128
"""The longest model name kept for the log line and the ledger."""


@dataclass
class RequestMetrics:
    request_id: str
    route: str
    method: str
    client: str
    surface: str
    key_name: str = ""
    """The API key's name (set by the guard): "" without a key, "default" for the setting's."""
    ts: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    model_requested: str = ""
    model_resolved: str = ""
    model_used: str = ""
    stream: bool = False
    stream_started: bool = False
    status: int = 0
    error_kind: str | None = None
    ttft_ms: float | None = None
    first_item_at: float | None = None
    """``perf_counter()`` when the backend's first item arrived (its CLI running, upstream answering)."""
    first_token_at: float | None = None
    usage: dict[str, int] = field(default_factory=dict)
    cost_usd: float | None = None
    duration_ms: float = 0.0
    recorded: bool = False
    recorders: list[Recorder] = field(default_factory=list)
    quiet: bool = False
    """Logged at debug when it succeeds (health checks and scrapes would flood the log)."""
    completion: Completion | None = None

    @property
    def is_model_call(self) -> bool:
        return bool(self.model_requested or self.model_resolved)

    @property
    def model_shown(self) -> str:
        """The most precise name known: the model that answered, else what the request resolved to."""
        return self.model_used or self.model_resolved or self.model_requested

    def first_item(self) -> None:
        if self.first_item_at is None:
            self.first_item_at = time.perf_counter()

    def first_token(self) -> None:
        if self.ttft_ms is None:
            self.first_token_at = time.perf_counter()
            self.ttft_ms = round((self.first_token_at - self.started) * 1000, 1)

    def complete(self, completion: Completion) -> None:
        self.usage = dict(completion.usage)
        self.cost_usd = completion.cost_usd
        # The name upstream reported: any string at all, so bounded for the log and the ledger.
        self.model_used = (completion.model or self.model_used)[:MODEL_NAME_CHARS]
        self.completion = completion

    def fail(self, error: ClaudeProxyError | str) -> None:
        self.error_kind = error if isinstance(error, str) else error.kind

    def finish(self, status: int) -> None:
        """Record once: a log line with metadata only, then each recorder (the ledger...).

        The duration is the client's (until now); if the run's cost figure is still on its
        way, the record waits for it.
        """
        if self.recorded:
            return
        self.recorded = True
        self.status = status
        self.duration_ms = round((time.perf_counter() - self.started) * 1000, 1)
        if self.completion is not None and self.completion.pending:
            self.completion.when_settled(self._settled)
            return
        self._record()

    def _settled(self, completion: Completion) -> None:
        self.cost_usd = completion.cost_usd
        self._record()

    def _record(self) -> None:
        if self.completion is not None:
            self.cost_usd = self.completion.cost_usd  # settled (perhaps before finish() ran)
        status = self.status
        fields: dict[str, Any] = {
            "request_id": self.request_id, "method": self.method, "route": self.route, "status": status,
            "duration_ms": self.duration_ms, "surface": self.surface, "error": self.error_kind,
            "key": self.key_name,
        }
        if self.is_model_call:
            fields.update(
                model=escape(self.model_requested), model_resolved=escape(self.model_resolved),
                model_used=escape(self.model_used), stream=self.stream,
                ttft_ms=self.ttft_ms, input_tokens=self.usage.get("input_tokens", 0),
                output_tokens=self.usage.get("output_tokens", 0),
                cache_read_tokens=self.usage.get("cache_read_input_tokens", 0),
                cache_creation_tokens=self.usage.get("cache_creation_input_tokens", 0),
                cost_usd=self.cost_usd, client=self.client,
            )
        if self.quiet and status < 400:
            log.debug("request", **fields)
        else:
            log.info("request", **fields)
        for recorder in self.recorders:
            try:
                recorder(self)
            except Exception as exc:
                log.warning("metrics.recorder_failed", error_class=type(exc).__name__)
