"""Named keys through the app (httpx ASGI transport, scripted backend, a SQLite ledger):
who gets in, what carries the key's name, and limits refused in each surface's shape
before anything runs."""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import httpx
import pytest

from claude_code_proxy.accounts.keys import Limits
from claude_code_proxy.accounts.store import KeyStore
from claude_code_proxy.app import create_app
from claude_code_proxy.backend.admission import Ticket
from claude_code_proxy.backend.scripted import ScriptedBackend, text_answer
from claude_code_proxy.chat.answer import BackendItem, Completion
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.cli import build_parser, main
from claude_code_proxy.storage.database import open_database
from tests.api.test_surfaces import ANTHROPIC_BODY, OPENAI_BODY
from tests.conftest import make_settings

PATHS = {"/v1/messages": ANTHROPIC_BODY, "/openai/v1/chat/completions": OPENAI_BODY}


def keys(db: Path, *args: str) -> tuple[int, str, str]:
    """``claude-code-proxy keys --db DB ARGS``: exit status, stdout, stderr."""
    from claude_code_proxy.accounts import cli

    out, err = io.StringIO(), io.StringIO()
    status = cli.run(build_parser().parse_args(["keys", "--db", str(db), *args]), out, err)
    return status, out.getvalue(), err.getvalue()


def add_key(db: Path, name: str, *limits: str) -> str:
    status, out, err = keys(db, "add", name, *limits)
    assert status == 0, err
    return out.rstrip("\n").splitlines()[-1]


def app_for(db: Path, backend: Any = None, **settings: Any) -> Any:
    return create_app(make_settings(usage_db=str(db), **settings), backend or ScriptedBackend())


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "usage.db"


async def test_a_named_key_gets_in_and_its_name_is_on_the_ledger_row_log_and_metrics(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = add_key(db, "ci-bot")
    other = add_key(db, "laptop")
    app = app_for(db, log_level="INFO", log_format="json")
    async with client(app) as http:
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY)).status_code == 401
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer("ccp_wrong"))).status_code == 401
        # A right key never carries a wrong one along, nor another key.
        mixed = {**bearer(key), "x-api-key": other}
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=mixed)).status_code == 401
        ok = await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))
        assert ok.status_code == 200, ok.text
        ok = await http.post("/openai/v1/chat/completions", json=OPENAI_BODY, headers={"x-api-key": other})
        assert ok.status_code == 200, ok.text
        assert app.state.ledger.flush()
        usage = (await http.get("/usage", params={"group_by": "key"}, headers=bearer(key))).json()
        # The three refused requests were made with no valid key: their rows carry none.
        assert {row["key"]: row["requests"] for row in usage["series"]} == {"ci-bot": 1, "laptop": 1, "": 3}
        mine = (await http.get("/usage", params={"key": "ci-bot"}, headers=bearer(key))).json()
        assert mine["totals"]["requests"] == 1 and [r["key_name"] for r in mine["recent"]] == ["ci-bot"]
        metrics = (await http.get("/metrics", headers=bearer(key))).text
    assert 'claude_proxy_key_requests_total{key="ci-bot",status="200"} 1.0' in metrics
    assert 'claude_proxy_key_requests_total{key="laptop",status="200"} 1.0' in metrics
    assert 'claude_proxy_key_tokens_total{key="ci-bot",kind="input"} 10.0' in metrics
    logged = capsys.readouterr().err
    assert '"key": "ci-bot"' in logged and '"key": "laptop"' in logged
    assert key not in logged and other not in logged
    app.state.ledger.close()


async def test_the_setting_key_keeps_working_beside_named_keys_as_default(db: Path) -> None:
    key = add_key(db, "ci-bot")
    app = app_for(db, api_key="the-setting")
    async with client(app) as http:
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer("the-setting"))).status_code == 200
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))).status_code == 200
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY)).status_code == 401
        assert app.state.ledger.flush()
    assert [r.key_name for r in app.state.ledger.recent(5) if r.status == 200] == ["ci-bot", "default"]
    app.state.ledger.close()


async def test_without_any_key_loopback_stays_open_but_an_exposed_host_never_is(db: Path) -> None:
    async with client(app_for(db)) as http:
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY)).status_code == 200
    async with client(app_for(db, host="0.0.0.0")) as http:
        # An exposed server with no key at all is closed, not open.
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer("x"))).status_code == 401
        assert (await http.get("/health")).status_code == 200


async def test_keys_added_and_revoked_take_effect_on_a_running_app_within_a_second(db: Path) -> None:
    add_key(db, "first")  # keys are required from the start
    app = app_for(db)
    async with client(app) as http:
        assert (await http.get("/v1/models", headers=bearer("ccp_not_yet"))).status_code == 401
        key = add_key(db, "late")
        added = time.monotonic()
        while (await http.get("/v1/models", headers=bearer(key))).status_code != 200:
            assert time.monotonic() - added < 5, "a new key was not taken up"
            await asyncio.sleep(0.05)
        assert keys(db, "revoke", "late")[0] == 0
        revoked = time.monotonic()
        while (await http.get("/v1/models", headers=bearer(key))).status_code != 401:
            assert time.monotonic() - revoked < 5, "a revoked key still works"
            await asyncio.sleep(0.05)
    # The cache reloads every half second (the bound itself is checked with a fake clock in
    # tests/unit/test_key_store.py): here only that it happens on a live app.
    assert app.state.keys.refresh_s <= 0.5


@pytest.mark.parametrize("stream", [False, True])
async def test_over_the_rpm_limit_is_a_429_in_each_surface_shape_and_runs_nothing(db: Path, stream: bool) -> None:
    key = add_key(db, "bot", "--rpm", "2")
    backend = ScriptedBackend()
    async with client(app_for(db, backend)) as http:
        for path, body in PATHS.items():
            response = await http.post(path, json={**body, "stream": stream}, headers=bearer(key))
            assert response.status_code == 200, response.text
        for path, body in PATHS.items():
            response = await http.post(path, json={**body, "stream": stream}, headers=bearer(key))
            assert response.status_code == 429
            assert 1 <= int(response.headers["retry-after"]) <= 60
            payload = response.json()
            message = payload["error"]["message"]
            assert "'bot'" in message and "2 requests per minute (--rpm)" in message
            if path.startswith("/openai"):
                assert payload["error"]["type"] == "rate_limit_error"
                assert payload["error"]["code"] == "rate_limit_exceeded"
            else:
                assert payload["type"] == "error" and payload["error"]["type"] == "rate_limit_error"
    assert len(backend.requests) == 2, "a refused request must not run"


class GatedBackend(ScriptedBackend):
    """Holds each run until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def run(self, request: ChatRequest, ticket: Ticket) -> AsyncGenerator[BackendItem, None]:
        ticket.taken = True
        self.requests.append(request)
        try:
            await self.gate.wait()
            for item in text_answer("Held."):
                yield item
        finally:
            ticket.release()


async def test_concurrency_limit_refuses_while_one_runs_and_admits_after(db: Path) -> None:
    key = add_key(db, "agent", "--concurrency", "1")
    backend = GatedBackend()
    async with client(app_for(db, backend)) as http:
        first = asyncio.create_task(http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key)))
        while not backend.requests:
            await asyncio.sleep(0.01)
        second = await http.post("/openai/v1/chat/completions", json=OPENAI_BODY, headers=bearer(key))
        assert second.status_code == 429
        assert "1 concurrent requests (--concurrency)" in second.json()["error"]["message"]
        backend.gate.set()
        assert (await first).status_code == 200
        third = await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))
        assert third.status_code == 200, third.text
    assert len(backend.requests) == 2


def costly(cost: float) -> ScriptedBackend:
    def script(chat: ChatRequest) -> list[Any]:
        *events, done = text_answer("Hello from the script.")
        assert isinstance(done, Completion)
        return [*events, Completion(done.stop_reason, None, done.usage, cost, done.model)]

    return ScriptedBackend(script)


@pytest.mark.parametrize(("flag", "value", "label"), [
    ("--tokens-per-day", "15", "15 tokens per day"),  # one answer is 10 input + 5 output tokens
    ("--usd-per-day", "0.5", "0.5 USD per day"),
    ("--usd-per-month", "0.5", "0.5 USD per month"),
])
async def test_budgets_refuse_once_spent_with_a_retry_after_until_the_next_day_or_month(
    db: Path, flag: str, value: str, label: str
) -> None:
    key = add_key(db, "nightly", flag, value)
    backend = costly(0.5)
    app = app_for(db, backend)
    async with client(app) as http:
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))).status_code == 200
        assert app.state.ledger.flush()
        refused = await http.post("/openai/v1/chat/completions", json=OPENAI_BODY, headers=bearer(key))
        assert app.state.ledger.flush()
    assert refused.status_code == 429 and label in refused.json()["error"]["message"], refused.text
    wait = int(refused.headers["retry-after"])
    assert 1 <= wait <= (86400 + 3600 if "day" in flag else 31 * 86400 + 3600)
    assert len(backend.requests) == 1
    [row, *_] = app.state.ledger.recent(5)
    assert (row.key_name, row.status, row.error_kind) == ("nightly", 429, "key_limit")
    app.state.ledger.close()


async def test_changed_limits_apply_without_a_restart(db: Path) -> None:
    key = add_key(db, "bot", "--rpm", "1")
    async with client(app_for(db)) as http:
        assert (await http.get("/v1/models", headers=bearer(key))).status_code == 200  # not a model call
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))).status_code == 200
        assert (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))).status_code == 429
        assert keys(db, "set", "bot", "--rpm", "none")[0] == 0
        changed = time.monotonic()
        while (await http.post("/v1/messages", json=ANTHROPIC_BODY, headers=bearer(key))).status_code != 200:
            assert time.monotonic() - changed < 5
            await asyncio.sleep(0.05)


def test_keys_command_add_list_set_revoke(db: Path) -> None:
    status, out, _ = keys(db, "add", "ci-bot", "--rpm", "10", "--usd-per-day", "2.5")
    key = out.rstrip("\n").splitlines()[-1]
    assert status == 0 and key.startswith("ccp_") and key == key.strip()
    assert "10 requests per minute" in out and "2.5 USD per day" in out
    status, out, _ = keys(db, "list")
    assert status == 0 and "ci-bot" in out and "10 requests per minute" in out and key not in out
    status, out, _ = keys(db, "set", "ci-bot", "--rpm", "none", "--concurrency", "3")
    assert status == 0 and "3 concurrent requests" in out and "per minute" not in out
    assert keys(db, "add", "ci-bot")[0] == 1
    status, _, err = keys(db, "add", "default")
    assert status == 1 and "CLAUDE_PROXY_API_KEY" in err
    assert keys(db, "revoke", "ci-bot")[0] == 0
    status, _, err = keys(db, "revoke", "ci-bot")
    assert status == 1 and "no key named 'ci-bot'" in err
    db_store = open_database(str(db))
    assert db_store is not None and KeyStore(db_store).list() == []


@pytest.mark.parametrize("args", [["add", "x", "--rpm", "0"], ["add", "x", "--rpm", "many"],
                                  ["add", "x", "--usd-per-day", "-1"]])
def test_keys_command_refuses_bad_limits(db: Path, args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "--db", str(db), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--" in err
    add_key(db, "x")
    status, _, err = keys(db, "set", "x")
    assert status == 2 and "give at least one limit" in err


def test_limits_round_trip_through_the_command(db: Path) -> None:
    add_key(db, "all", "--rpm", "1", "--concurrency", "2", "--tokens-per-day", "3", "--usd-per-day", "4.5",
            "--usd-per-month", "6")
    found = open_database(str(db))
    assert found is not None
    [key] = KeyStore(found).list()
    assert key.limits == Limits(rpm=1, concurrency=2, tokens_per_day=3, usd_per_day=4.5, usd_per_month=6.0)


def test_the_usage_command_filters_and_groups_by_key(db: Path) -> None:
    from claude_code_proxy.ops import usage_cli
    from claude_code_proxy.ops.ledger import UsageLedger
    from tests.unit.test_ledger import rec

    ledger = UsageLedger(str(db), 36500)
    now = time.time()
    for index in range(5):
        ledger.record(rec(now - index, key_name="ci-bot" if index < 3 else "", input_tokens=10, request_id=f"r{index}"))
    ledger.close()

    def usage(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        parsed = build_parser().parse_args(["usage", "--db", str(db), *args])
        assert usage_cli.run(parsed, out, err) == 0, err.getvalue()
        return out.getvalue()

    table = usage("--group-by", "key", "--recent", "5")
    rows = {line.split()[0]: line.split()[1] for line in table.splitlines() if line.startswith(("ci-bot", "(none)"))}
    assert rows == {"ci-bot": "3", "(none)": "2"}
    assert "ci-bot" in table.split("latest requests:")[1]
    only = usage("--key", "ci-bot", "--json")


    report = json.loads(only)
    assert report["key"] == "ci-bot" and report["totals"]["requests"] == 3 and report["totals"]["input_tokens"] == 30


async def test_stored_responses_are_scoped_by_named_key(db: Path) -> None:
    first, second = add_key(db, "first"), add_key(db, "second")
    async with client(app_for(db)) as http:
        created = await http.post("/openai/v1/responses", json={"model": "gpt-4o", "input": "hi"},
                                  headers=bearer(first))
        assert created.status_code == 200, created.text
        response_id = created.json()["id"]
        assert (await http.get(f"/openai/v1/responses/{response_id}", headers=bearer(first))).status_code == 200
        other = await http.get(f"/openai/v1/responses/{response_id}", headers=bearer(second))
        assert other.status_code == 404
        follow_up = await http.post("/openai/v1/responses", headers=bearer(second), json={
            "model": "gpt-4o", "input": "and?", "previous_response_id": response_id})
        assert follow_up.status_code == 404
