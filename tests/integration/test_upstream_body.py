"""What the model sees: the upstream bodies the real CLI sends for the client's requests (the
fake upstream logs each one) as a conversation grows, on every surface, and what the API's
prompt cache saves on them (the fake keeps one, the way the Messages API does).

The CLI adds an "# Environment" note to every body (docs/compatibility.md, "What the model
sees"). On 5.5-family models it is a ``role: "system"`` turn after the client's last turn,
behind the cache marker; on 4.5-family models it is ``<system-reminder>`` blocks at the start
of the client's last user turn, in front of the marker, so the proxy marks the client's last
answer as well.  These tests pin down what that means for caching on each family.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import ollama
import openai
import pytest

from tests.conftest import make_settings
from tests.integration.test_observability import scrape, total
from tests.support.fake_upstream import FakeUpstream, PromptCache
from tests.support.procs import wait_until
from tests.support.server import RunningServer, ledger_row, serve

NEWER = "claude-sonnet-5-5"
"""A 5.5-family model (as are 4.8, 5 and the opus/sonnet/haiku aliases): the CLI's note is a
``role: "system"`` turn after the client's last turn."""
OLDER = "claude-sonnet-4-5"
"""A 4.5-family model (4.5 to 4.7): the CLI's note is ``<system-reminder>`` blocks at the
start of the client's last user turn."""
SYSTEM = "Be brief."
SURFACES = ["anthropic", "openai_chat", "responses", "ollama"]
NOTE_START = "# Environment\nYou have been invoked in the following environment: \n"
NEUTRAL_CWD = " - Primary working directory: /\n"


@pytest.fixture(scope="module")
def reusing(cli_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server that reuses its CLIs (as by default), with a usage ledger and counters of its own."""
    db = tmp_path_factory.mktemp("ledger") / "usage.db"
    with serve(make_settings(usage_db=str(db), warm_pool_size=1, warm_pool_keys=8)) as running:
        yield running


@pytest.fixture(scope="module")
def single_use(cli_env: Path) -> Iterator[RunningServer]:
    """A server that starts a fresh CLI for every request."""
    with serve(make_settings(warm_pool_size=0)) as running:
        yield running


@pytest.fixture()
def prompt_cache(upstream: FakeUpstream) -> Iterator[PromptCache]:
    """An empty prompt cache in the fake upstream for this test only."""
    upstream.prompt_cache = PromptCache()
    try:
        yield upstream.prompt_cache
    finally:
        upstream.prompt_cache = None


# -- the client's side --------------------------------------------------------------------------

def conversation(history: int) -> list[dict[str, Any]]:
    """``history`` earlier exchanges, as the fake upstream answered them, then a question."""
    messages: list[dict[str, Any]] = []
    for k in range(history):
        messages += [{"role": "user", "content": f"question {k} [[say:answer {k}]]"},
                     {"role": "assistant", "content": f"answer {k}"}]
    return [*messages, {"role": "user", "content": f"question {history} [[say:answer {history}]]"}]


def follow_up(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same conversation one exchange later: the answer received, then a new question."""
    answered = messages[-1]["content"].split("[[say:")[1].removesuffix("]]")
    return [*messages, {"role": "assistant", "content": answered},
            {"role": "user", "content": f"and then? [[say:done {len(messages)}]]"}]


def ask(server: RunningServer, surface: str, model: str, messages: list[dict[str, Any]],
        request_id: str) -> int | None:
    """One non-streaming request with SYSTEM as the system prompt, through the surface's own
    SDK; the cache-read tokens the answer reports (None: the API has no such figure)."""
    headers = {"x-request-id": request_id}
    if surface == "anthropic":
        claude = anthropic.Anthropic(base_url=server.url, api_key="anything", max_retries=0,
                                     _strict_response_validation=True)
        reply = claude.messages.create(model=model, max_tokens=100, system=SYSTEM, messages=messages,  # type: ignore[arg-type]
                                       extra_headers=headers)
        return reply.usage.cache_read_input_tokens
    if surface == "ollama":
        client = ollama.Client(host=server.url, headers=headers)
        answer = client.chat(model=model, messages=[{"role": "system", "content": SYSTEM}, *messages])
        assert answer.done_reason == "stop"
        return None
    gpt = openai.OpenAI(base_url=f"{server.url}/openai/v1", api_key="anything", max_retries=0,
                        _strict_response_validation=True)
    if surface == "openai_chat":
        chat: Any = [{"role": "system", "content": SYSTEM}, *messages]
        completion = gpt.chat.completions.create(model=model, messages=chat, extra_headers=headers)
        assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
        return completion.usage.prompt_tokens_details.cached_tokens
    response = gpt.responses.create(model=model, instructions=SYSTEM, input=messages,  # type: ignore[arg-type]
                                    max_output_tokens=100, extra_headers=headers)
    assert response.status == "completed" and response.usage is not None
    return response.usage.input_tokens_details.cached_tokens


# -- reading the upstream bodies ---------------------------------------------------------------

def unmarked(value: Any) -> Any:
    """``value`` without its ``cache_control`` markers."""
    if isinstance(value, dict):
        return {k: unmarked(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [unmarked(v) for v in value]
    return value


def marked_message(body: dict[str, Any]) -> int:
    """The index of the message that holds the body's last cache marker."""
    marked = [i for i, m in enumerate(body["messages"])
              if isinstance(m["content"], list) and any("cache_control" in b for b in m["content"])]
    assert marked, "the CLI put no cache marker in the messages"
    return marked[-1]


def tokens(blocks: list[str]) -> int:
    """What the fake upstream counts for these prefix blocks (about four characters a token)."""
    return sum(max(1, len(block) // 4) for block in blocks)


def system_prefix(body: dict[str, Any]) -> list[str]:
    """The body's blocks up to and including its last marker in ``system``."""
    blocks, marked = PromptCache.blocks(body)
    in_system = len(body.get("tools") or []) + len(body["system"])
    return blocks[: [m for m in marked if m < in_system][-1] + 1]


def note(body: dict[str, Any]) -> str:
    """The text of the CLI's environment note, wherever the model family puts it."""
    for message in body["messages"]:
        content = message["content"]
        texts = [content] if isinstance(content, str) else [b.get("text", "") for b in content]
        for text in texts:
            if NOTE_START in text:
                return text
    raise AssertionError("no environment note in the body")


def without_session(body: dict[str, Any]) -> dict[str, Any]:
    """The body with the CLI process's session id left out of ``metadata.user_id``."""
    user_id = json.loads(body["metadata"]["user_id"])
    assert set(user_id) == {"device_id", "account_uuid", "session_id"}, user_id
    del user_id["session_id"]
    return {**body, "metadata": {**body["metadata"], "user_id": user_id}}


# -- a cacheable prefix -------------------------------------------------------------------------

@pytest.mark.parametrize("history", [1, 3, 7])
@pytest.mark.parametrize("surface", SURFACES)
def test_each_request_is_a_cacheable_prefix_of_the_next(
    reusing: RunningServer, upstream: FakeUpstream, prompt_cache: PromptCache, surface: str, history: int
) -> None:
    first = conversation(history)
    first_id, next_id = (f"prefix-{surface}-{n}-{uuid.uuid4().hex[:8]}" for n in (1, 2))
    ask(reusing, surface, NEWER, first, first_id)
    body_n = upstream.last_body
    written = ledger_row(reusing, first_id)["cache_creation_tokens"]  # recorded, counted
    before = total(scrape(reusing.url), "claude_proxy_tokens_total", kind="cache_read")
    reported = ask(reusing, surface, NEWER, follow_up(first), next_id)
    body_next = upstream.last_body
    assert len(upstream.messages_calls) == 2

    # Request N's last marker sits on the client's last turn; after it comes only the CLI's note.
    k = marked_message(body_n)
    assert body_n["messages"][k]["role"] == "user"
    assert body_n["messages"][k]["content"][-1] == {"type": "text", "text": first[-1]["content"],
                                                    "cache_control": {"type": "ephemeral"}}
    assert [m["role"] for m in body_n["messages"][k + 1:]] == ["system"]
    assert body_n["messages"][-1]["content"].startswith(NOTE_START)
    # Request N+1 repeats everything up to that marker byte for byte (markers aside)...
    assert json.dumps(body_next["system"]) == json.dumps(body_n["system"])
    assert json.dumps(body_next["tools"]) == json.dumps(body_n["tools"])
    assert json.dumps(unmarked(body_next["messages"][: k + 1])) == json.dumps(unmarked(body_n["messages"][: k + 1]))
    # ...and goes on with the client's next turns, then the same note.
    assert unmarked(body_next["messages"][k + 1: k + 3]) == [
        {"role": "assistant", "content": [{"type": "text", "text": f"answer {history}"}]},
        {"role": "user", "content": [{"type": "text", "text": follow_up(first)[-1]["content"]}]}]
    assert body_next["messages"][k + 3:] == body_n["messages"][k + 1:]

    # So request N+1 reads all of request N's marked prefix from the cache, which request N
    # wrote; the client, the ledger and the metrics all show it.
    blocks, marked = PromptCache.blocks(body_n)
    prefix = tokens(blocks[: marked[-1] + 1])
    assert written == prefix
    row = ledger_row(reusing, next_id)
    assert row["cache_read_tokens"] == prefix > 0
    assert reported == (None if surface == "ollama" else prefix)  # Ollama's API has no cache figure
    assert wait_until(lambda: total(scrape(reusing.url), "claude_proxy_tokens_total", kind="cache_read")
                      - before == prefix)


@pytest.mark.parametrize("history", [1, 3, 7])
@pytest.mark.parametrize("surface", SURFACES)
def test_older_models_cache_the_history_up_to_the_last_answer(
    reusing: RunningServer, upstream: FakeUpstream, prompt_cache: PromptCache, surface: str, history: int
) -> None:
    """On 4.5-family models the CLI's note opens the client's last turn, in front of the CLI's
    marker there, and moves to the next last turn in the next request: no later request
    repeats that marked prefix (a documented limit).  The proxy marks the client's last
    answer instead, which ends a prefix the next request repeats byte for byte: a follow-up
    reads the conversation up to the previous answer from the cache."""
    first = conversation(history)
    next_id = f"older-{surface}-{uuid.uuid4().hex[:8]}"
    ask(reusing, surface, OLDER, first, f"{next_id}-first")
    body_n = upstream.last_body
    reported = ask(reusing, surface, OLDER, follow_up(first), next_id)
    body_next = upstream.last_body

    k = marked_message(body_n)
    assert k == len(body_n["messages"]) - 1 and body_n["messages"][k]["role"] == "user"
    *reminders, last = body_n["messages"][k]["content"]
    assert last == {"type": "text", "text": first[-1]["content"], "cache_control": {"type": "ephemeral"}}
    assert reminders[0]["text"].startswith("<system-reminder>\n" + NOTE_START)
    assert all(block["text"].startswith("<system-reminder>\n") for block in reminders)
    # The proxy's marker: on the client's last answer, the turn before.
    assert body_n["messages"][k - 1] == {"role": "assistant", "content": [
        {"type": "text", "text": first[-2]["content"], "cache_control": {"type": "ephemeral"}}]}
    assert json.dumps(body_next["system"]) == json.dumps(body_n["system"])
    assert json.dumps(unmarked(body_next["messages"][:k])) == json.dumps(unmarked(body_n["messages"][:k]))
    # In request N+1 that turn is the client's text alone, and the note opens the new last turn.
    assert body_next["messages"][k]["content"] == [{"type": "text", "text": first[-1]["content"]}]
    assert unmarked(body_next["messages"][-1]["content"][:-1]) == reminders

    blocks, marked = PromptCache.blocks(body_n)
    through_answer = tokens(blocks[: marked[-2] + 1])
    assert through_answer > tokens(system_prefix(body_n))
    assert ledger_row(reusing, next_id)["cache_read_tokens"] == through_answer
    assert reported == (None if surface == "ollama" else through_answer)


def test_older_models_cache_the_history_with_a_client_marker_on_the_last_answer(
    reusing: RunningServer, upstream: FakeUpstream, prompt_cache: PromptCache
) -> None:
    """The way round it on 4.5-family models (Anthropic surface): a marker of the client's own
    on its last assistant turn, which the CLI keeps, ends a prefix the next request repeats."""
    def marked_last_answer(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        *before, answer, question = messages
        return [*before, {"role": "assistant", "content": [
            {"type": "text", "text": answer["content"], "cache_control": {"type": "ephemeral"}}]}, question]

    first = conversation(3)
    next_id = f"older-marked-{uuid.uuid4().hex[:8]}"
    ask(reusing, "anthropic", OLDER, marked_last_answer(first), f"{next_id}-first")
    body_n = upstream.last_body
    ask(reusing, "anthropic", OLDER, marked_last_answer(follow_up(first)), next_id)
    body_next = upstream.last_body

    # Four markers: the CLI's identity line, the system prompt, the client's own, the last turn.
    assert len(PromptCache.blocks(body_n)[1]) == 4
    answer = len(body_n["messages"]) - 2
    assert body_n["messages"][answer]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert unmarked(body_next["messages"][: answer + 1]) == unmarked(body_n["messages"][: answer + 1])
    blocks, marked = PromptCache.blocks(body_n)
    through_answer = tokens(blocks[: marked[-2] + 1])
    assert ledger_row(reusing, next_id)["cache_read_tokens"] == through_answer > tokens(system_prefix(body_n))


def test_a_client_marker_beyond_the_limit_of_four_is_the_apis_400(
    reusing: RunningServer, upstream: FakeUpstream, prompt_cache: PromptCache
) -> None:
    """The CLI's markers (identity line, system prompt, last turn) count toward the API's limit
    of four: a client with a system prompt has one of its own left."""
    messages = conversation(3)
    for index in (1, 3):
        messages[index] = {"role": "assistant", "content": [
            {"type": "text", "text": messages[index]["content"], "cache_control": {"type": "ephemeral"}}]}
    claude = anthropic.Anthropic(base_url=reusing.url, api_key="anything", max_retries=0,
                                 _strict_response_validation=True)
    with pytest.raises(anthropic.BadRequestError) as refused:
        claude.messages.create(model=NEWER, max_tokens=100, system=SYSTEM, messages=messages)  # type: ignore[arg-type]
    assert "A maximum of 4 blocks with cache_control may be provided. Found 5." in str(refused.value)
    assert len(upstream.messages_calls) == 1


# -- identical requests, a neutral note --------------------------------------------------------

@pytest.mark.parametrize("model", [NEWER, OLDER])
def test_identical_requests_send_identical_bodies_with_a_neutral_note(
    reusing: RunningServer, single_use: RunningServer, upstream: FakeUpstream, model: str
) -> None:
    messages = conversation(2)
    tag = uuid.uuid4().hex[:8]
    messages[-1] = {"role": "user", "content": f"same question {tag} [[say:same answer]]"}

    def body_of(server: RunningServer) -> dict[str, Any]:
        ask(server, "anthropic", model, messages, f"same-{tag}-{uuid.uuid4().hex[:6]}")
        return upstream.last_body

    # Two fresh CLIs: only the session id (each process's own) differs.
    fresh = [body_of(single_use), body_of(single_use)]
    assert json.loads(fresh[0]["metadata"]["user_id"])["session_id"] != \
        json.loads(fresh[1]["metadata"]["user_id"])["session_id"]
    assert without_session(fresh[0]) == without_session(fresh[1])

    # One reused CLI, reset between the two requests: the whole body is the same, session id too.
    backend: Any = reusing.app.state.backend  # type: ignore[attr-defined]
    returned = backend.pool.returned
    first = body_of(reusing)
    assert wait_until(lambda: backend.pool.returned > returned)  # back in the pool after its reset
    reused = backend.reused
    second = body_of(reusing)
    assert backend.reused == reused + 1
    assert json.dumps(second) == json.dumps(first)
    assert without_session(first) == without_session(fresh[0])

    # The note is the same for every request: no per-request path, the CLI's cwd is "/".
    text = json.dumps(first)
    assert NEUTRAL_CWD in note(first)
    assert "claude-proxy-" not in text and tempfile.gettempdir() not in text
    # Nothing the CLI adds sits between the client's turns: only after or in its last one.
    client_turns = [unmarked(m["content"]) for m in first["messages"][: len(messages) - 1]]
    assert client_turns == [[{"type": "text", "text": m["content"]}] for m in messages[:-1]]
