"""The response store: recent responses kept in memory so a client can continue from one.

A client that sends ``previous_response_id`` sends only its new input; the stored
conversation (every earlier input item and output item, signed thinking included) is
put in front of it.  Bounded by count and age (``CLAUDE_PROXY_RESPONSE_STORE_MAX_ENTRIES``,
``..._MAX_AGE``), scoped by the API key a request presents (as a SHA-256 digest), never
written to disk: a restart forgets everything, and an unknown or expired id is a 404.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import TypeAdapter
from starlette.requests import Request

from claude_code_proxy.accounts.keys import SETTING_KEY_NAME
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.exceptions import NotFoundError
from claude_code_proxy.surfaces.openai_responses.models import InputItem

_ITEMS = TypeAdapter(list[InputItem])
_ID_PREFIXES = {
    "message": "msg", "function_call": "fc", "function_call_output": "fco", "custom_tool_call": "ctc",
    "custom_tool_call_output": "ctco", "local_shell_call": "lsh", "local_shell_call_output": "lsho",
    "reasoning": "rs",
}


@dataclass
class StoredResponse:
    response: dict[str, Any]
    """The finished response, its reasoning items always carrying ``encrypted_content``."""
    input_items: list[dict[str, Any]]
    """This request's own input, as ``input_items`` lists it."""
    context: list[dict[str, Any]]
    """The whole conversation to continue from: earlier context, this input, this output."""
    show_encrypted: bool
    """Whether the client asked for ``reasoning.encrypted_content``."""
    stored_at: float = field(default=0.0)

    def public(self) -> dict[str, Any]:
        """The response as the client first saw it."""
        if self.show_encrypted:
            return self.response
        output = [{k: v for k, v in item.items() if k != "encrypted_content"} for item in self.response["output"]]
        return {**self.response, "output": output}

    def history(self) -> list[Any]:
        """The conversation as input items, to put in front of a follow-up's input."""
        return _ITEMS.validate_python(self.context)


class ResponseStore:
    def __init__(self, max_entries: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.max_age = max_age
        self.clock = clock
        self._entries: OrderedDict[tuple[str, str], StoredResponse] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0

    def put(self, scope: str, entry: StoredResponse) -> None:
        if not self.enabled:
            return
        self._expire()
        entry.stored_at = self.clock()
        self._entries[(scope, entry.response["id"])] = entry
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, scope: str, response_id: str, param: str | None = None) -> StoredResponse:
        self._expire()
        entry = self._entries.get((scope, response_id))
        if entry is None:
            raise NotFoundError(
                f"No stored response with id {response_id!r}: it was never stored (store=false), has expired, "
                "was deleted, or the proxy restarted.", param=param)
        return entry

    def delete(self, scope: str, response_id: str) -> None:
        self.get(scope, response_id)
        del self._entries[(scope, response_id)]

    def __len__(self) -> int:
        return len(self._entries)

    def _expire(self) -> None:
        cutoff = self.clock() - self.max_age
        while self._entries:
            key, oldest = next(iter(self._entries.items()))
            if oldest.stored_at >= cutoff:
                return
            del self._entries[key]


def with_ids(items: list[dict[str, Any]], new_id: Callable[[str], str]) -> list[dict[str, Any]]:
    """Input items as ``input_items`` lists them: each with an id and, for messages,
    content as a list of parts."""
    out = []
    for item in items:
        kind = item.get("type") or "message"
        shaped = {**item, "type": kind}
        if kind == "message":
            content = item.get("content")
            if isinstance(content, str):
                part = "output_text" if item.get("role") == "assistant" else "input_text"
                shaped["content"] = [{"type": part, "text": content, **({"annotations": []} if part == "output_text"
                                                                         else {})}]
            shaped.setdefault("status", "completed")
        shaped.setdefault("id", new_id(_ID_PREFIXES.get(kind, "item")))
        out.append(shaped)
    return out


def key_scope(settings: Settings, request: Request | None = None) -> str:
    """Whose responses a request may see: the named API key it presented (web/guards.py put
    it on the request), else a digest of the CLAUDE_PROXY_API_KEY setting (every request
    that got this far presented it), or one shared scope when the proxy has no key."""
    key = getattr(request.state, "api_key", None) if request is not None else None
    if key is not None and key.name != SETTING_KEY_NAME:
        return f"named:{key.name}"
    if settings.api_key is None:
        return ""
    return hashlib.sha256(settings.api_key.get_secret_value().encode()).hexdigest()


def store_for(request: Request, settings: Settings) -> ResponseStore:
    """The app's response store, made on first use."""
    state = request.app.state
    store: ResponseStore | None = getattr(state, "response_store", None)
    if store is None:
        store = state.response_store = ResponseStore(settings.response_store_max_entries,
                                                     settings.response_store_max_age)
    return store
