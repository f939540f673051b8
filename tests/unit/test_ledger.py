"""The usage ledger: concurrent writes, retention, migrations, failures, and ``GET /usage``
aggregates checked against values computed by hand."""

from __future__ import annotations

import argparse
import datetime
import io
import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient

from claude_code_proxy.app import create_app
from claude_code_proxy.ops.ledger import (
    SCHEMA_VERSION,
    Totals,
    UsageLedger,
    UsageRecord,
    client_name,
    migrate,
    parse_when,
    schema_version,
)
from claude_code_proxy.ops.usage_cli import add_parser, format_cost, model_cell, run
from tests.conftest import make_settings
from tests.support.procs import wait_until


def local(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> float:
    # Naive on purpose: the ledger buckets in local time.
    return datetime.datetime(year, month, day, hour, minute).timestamp()


def rec(ts: float, **changes: Any) -> UsageRecord:
    base = UsageRecord(
        ts=ts, surface="anthropic", route="/v1/messages", model_requested="sonnet", model_used="claude-sonnet-4-5",
        stream=False, status=200, error_kind=None, duration_ms=100.0, ttft_ms=None, input_tokens=0,
        output_tokens=0, cache_read_tokens=0, cache_creation_tokens=0, cost_usd=None, client="curl",
        request_id="req_x",
    )
    return replace(base, **changes)


def count_rows(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0])


@pytest.fixture()
def db(tmp_path: Path) -> Path:
    return tmp_path / "ledger" / "usage.db"


@pytest.fixture()
def ledger(db: Path) -> Iterator[UsageLedger]:
    led = UsageLedger(str(db), 36500)
    yield led
    led.close()


# --- client names -----------------------------------------------------------------------------


@pytest.mark.parametrize(("agent", "name"), [
    ("OpenAI/Python 3.54.0", "openai-python"),
    ("OpenAI/JS 5.1.0", "openai-js"),
    ("Anthropic/Python 2.12.0", "anthropic-python"),
    ("Anthropic/JS 0.60.0", "anthropic-js"),
    ("curl/8.5.0", "curl"),
    ("langchain-openai/0.3 OpenAI/Python 1.99.0", "langchain"),
    ("Open-WebUI/0.6.5", "open-webui"),
    ("Continue/1.0 node-fetch", "continue"),
    ("claude-cli/2.1.0 (external, cli)", "claude-code"),
    ("Mozilla/5.0 (X11; Linux x86_64) Chrome/150", "browser"),
    ("MyTool/1.2 (+https://example.org)", "mytool"),
    ("", "unknown"),
    ("   ", "unknown"),
    ("\x1b[31m/1.0", "unknown"),
    ("A" * 300, "a" * 32),
])
def test_client_name(agent: str, name: str) -> None:
    assert client_name(agent) == name


def test_parse_when() -> None:
    assert parse_when(None) is None
    assert parse_when("") is None
    assert parse_when("1700000000") == 1700000000.0
    assert parse_when("1700000000.5") == 1700000000.5
    assert parse_when("2025-01-31") == local(2025, 1, 31)
    assert parse_when("2025-01-31", end=True) == local(2025, 2, 1)
    assert parse_when("2025-01-31T10:30:00") == local(2025, 1, 31, 10, 30)
    assert parse_when("2025-01-31T10:30:00Z") == datetime.datetime(2025, 1, 31, 10, 30, tzinfo=datetime.UTC).timestamp()
    for bad in ("yesterday", "2025-13-01", "nan", "inf", "-5", "2025-01-31T25:00"):
        with pytest.raises(ValueError):
            parse_when(bad)


# --- storage ------------------------------------------------------------------------------------


def test_file_is_private_wal_and_versioned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    led = UsageLedger("~/.local/share/ccp/usage.db", 90)
    try:
        path = tmp_path / ".local/share/ccp/usage.db"
        assert led.path == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert schema_version(conn) == SCHEMA_VERSION
    finally:
        led.close()


def test_concurrent_writers_lose_no_rows(db: Path) -> None:
    # Two ledgers on one file (two proxies on one machine), many threads each, and readers
    # querying all along: every row lands, nothing raises, no write error.
    ledgers = [UsageLedger(str(db), 36500, batch_size=7), UsageLedger(str(db), 36500, batch_size=50)]
    threads_per_ledger, per_thread = 8, 150
    failures: list[BaseException] = []
    stop_reading = threading.Event()

    def write(led: UsageLedger, worker: int) -> None:
        try:
            for i in range(per_thread):
                led.record(rec(time.time(), request_id=f"req_{id(led)}_{worker}_{i}", input_tokens=1))
        except BaseException as exc:
            failures.append(exc)

    def read() -> None:
        try:
            while not stop_reading.is_set():
                ledgers[0].summary(group_by="model")
                ledgers[1].recent(5)
        except BaseException as exc:
            failures.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    writers = [threading.Thread(target=write, args=(led, n)) for led in ledgers for n in range(threads_per_ledger)]
    for thread in readers + writers:
        thread.start()
    for thread in writers:
        thread.join()
    for led in ledgers:
        assert led.flush(timeout=30)
    stop_reading.set()
    for thread in readers:
        thread.join()
    expected = len(ledgers) * threads_per_ledger * per_thread
    assert failures == []
    assert [led.write_errors for led in ledgers] == [0, 0]
    assert [led.dropped for led in ledgers] == [0, 0]
    assert count_rows(db) == expected
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(DISTINCT request_id) FROM requests").fetchone()[0] == expected
    assert ledgers[0].summary().totals.input_tokens == expected
    for led in ledgers:
        led.close()


def test_record_never_waits_for_a_locked_database(db: Path) -> None:
    led = UsageLedger(str(db), 36500, max_queue=50)
    assert led.flush()  # the start-up purge is done: the writer now waits for rows
    locker = sqlite3.connect(db, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        led.record(rec(time.time(), request_id="first"))
        # The writer took that row and now waits on the lock with it.
        assert wait_until(led._queue.empty)
        # Never blocked: the lock is held until after these calls, so a record() that waited
        # for it would never return; a full queue drops instead.
        for i in range(200):
            led.record(rec(time.time(), request_id=f"r{i}"))
        assert led.dropped == 200 - 50
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert led.flush(timeout=30)
    led.close()
    assert led.write_errors == 0
    assert count_rows(db) == 1 + 50


def test_close_flushes_queued_rows(db: Path) -> None:
    led = UsageLedger(str(db), 36500)
    for i in range(1234):
        led.record(rec(time.time(), request_id=f"r{i}"))
    led.close()
    assert count_rows(db) == 1234
    led.record(rec(time.time()))  # after close: ignored, not raised
    assert count_rows(db) == 1234


def test_write_errors_are_counted_not_raised(db: Path, ledger: UsageLedger) -> None:
    # A row SQLite cannot bind fails alone; its batch neighbours are still written.
    poison = rec(time.time(), input_tokens=cast(int, object()))
    ledger.record(rec(time.time(), request_id="before"))
    ledger.record(poison)
    ledger.record(rec(time.time(), request_id="after"))
    assert ledger.flush()
    assert ledger.write_errors == 1
    assert sorted(r.request_id for r in ledger.recent(10)) == ["after", "before"]

    # The table vanishes under the writer: every later row is an error, none is raised.
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE requests")
    ledger.record(rec(time.time()))
    ledger.record(rec(time.time()))
    assert ledger.flush()
    assert ledger.write_errors == 3


def test_unusable_path_disables_the_ledger(tmp_path: Path) -> None:
    (tmp_path / "a-directory.db").mkdir()
    led = UsageLedger(str(tmp_path / "a-directory.db"), 90)
    assert not led.enabled
    led.record(rec(time.time()))
    assert led.summary().totals.requests == 0
    led.close()


@pytest.mark.parametrize("path", [None, "", "  "])
def test_disabled_ledger(path: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    led = UsageLedger(path, 90)
    assert not led.enabled
    led.record(rec(time.time()))
    assert led.flush()
    summary = led.summary(group_by="model")
    assert summary.totals.requests == 0 and summary.series == []
    assert led.recent(10) == []
    assert led.percentiles()["duration_ms"].p50 is None
    assert led.report()["ledger"]["enabled"] is False
    assert led.purge() == 0
    led.close()
    assert list(tmp_path.iterdir()) == []


def test_retention_purges_on_start_and_periodically(db: Path) -> None:
    now = [local(2025, 6, 15, 12)]
    day = 86400.0
    first = UsageLedger(str(db), 30, clock=lambda: now[0])
    first.record(rec(now[0] - 31 * day, request_id="old"))
    first.record(rec(now[0] - 29 * day, request_id="kept"))
    first.record(rec(now[0], request_id="today"))
    first.close()
    assert count_rows(db) == 3

    # On start: the 31-day-old row goes.
    second = UsageLedger(str(db), 30, purge_interval=0.05, clock=lambda: now[0])
    assert second.flush()
    assert sorted(r.request_id for r in second.recent(10)) == ["kept", "today"]

    # Periodically: two days later, "kept" is 31 days old too.
    now[0] += 2 * day
    assert wait_until(lambda: [r.request_id for r in second.recent(10)] == ["today"]), "the periodic purge did not run"
    second.close()


def test_migration_from_v1_keeps_rows(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        migrate(conn, target=1)
        conn.execute(
            "INSERT INTO requests (ts, surface, route, model_requested, model_used, stream, status,"
            " duration_ms, input_tokens, output_tokens, request_id)"
            " VALUES (?, 'openai', '/openai/v1/chat/completions', 'gpt-4o', 'sonnet', 1, 200, 50.0, 7, 9, 'old')",
            (time.time(),),
        )
        assert schema_version(conn) == 1
        assert "client" not in [row[1] for row in conn.execute("PRAGMA table_info(requests)")]

    led = UsageLedger(str(db), 36500)
    led.record(rec(time.time() + 1, request_id="new", client="openai-python"))
    led.close()
    with sqlite3.connect(db) as conn:
        assert schema_version(conn) == SCHEMA_VERSION == 4
        rows = dict(conn.execute("SELECT request_id, client FROM requests").fetchall())
    assert rows == {"old": "unknown", "new": "openai-python"}
    reader = UsageLedger(str(db), 36500, writer=False)
    old = reader.recent(5)[-1]
    assert (old.stream, old.input_tokens, old.output_tokens, old.ttft_ms) == (True, 7, 9, None)


def test_migration_from_v2_adds_the_resolved_model(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        migrate(conn, target=2)
        conn.execute(
            "INSERT INTO requests (ts, surface, route, model_requested, model_used, stream, status, error_kind,"
            " duration_ms, request_id) VALUES (?, 'openai', '/openai/v1/chat/completions', 'gpt-4o', 'sonnet', 0,"
            " 529, 'overloaded_error', 50.0, 'old')",
            (time.time(),),
        )
    led = UsageLedger(str(db), 36500)
    led.record(rec(time.time() + 1, request_id="new", model_requested="gpt-4o", model_resolved="sonnet",
                   model_used="", status=529, error_kind="overloaded_error"))
    led.close()
    with sqlite3.connect(db) as conn:
        assert schema_version(conn) == SCHEMA_VERSION
    reader = UsageLedger(str(db), 36500, writer=False)
    new, old = reader.recent(2)
    assert (new.model_requested, new.model_resolved, new.model_used) == ("gpt-4o", "sonnet", "")
    assert (old.model_requested, old.model_resolved, old.model_used) == ("gpt-4o", "", "sonnet")
    # Both failed rows count under the name they resolved to, whichever column holds it.
    assert [(key, t.requests) for key, t in reader.summary(group_by="model").series] == [("sonnet", 2)]


def test_costs_keep_their_digits() -> None:
    assert [format_cost(v) for v in (None, 0.0, 0.000012, 0.00075, 0.0042, 0.533, 1.25, 1234.5)] == [
        "-", "$0.00", "$0.000012", "$0.00075", "$0.0042", "$0.5330", "$1.25", "$1,234"]
    assert Totals(cost_usd=0.000000123).as_json()["cost_usd"] == 1.23e-7


def test_a_record_shows_what_was_asked_and_what_it_resolved_to() -> None:
    def shown(**models: str) -> str:
        return model_cell({"model_requested": "", "model_resolved": "", "model_used": "", **models})

    assert shown(model_requested="gpt-4o", model_resolved="sonnet", model_used="claude-sonnet-4-5") == (
        "gpt-4o -> claude-sonnet-4-5")
    assert shown(model_requested="gpt-4o", model_resolved="sonnet") == "gpt-4o -> sonnet"
    assert shown(model_requested="sonnet", model_resolved="sonnet") == "sonnet"
    assert shown(model_requested="gpt-9") == "gpt-9"
    assert shown() == "-"


def test_newer_schema_is_left_alone(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        migrate(conn)
        conn.execute("UPDATE schema_version SET version = 99")
    led = UsageLedger(str(db), 90)
    assert not led.enabled
    led.close()
    with sqlite3.connect(db) as conn:
        assert schema_version(conn) == 99


# --- aggregates -----------------------------------------------------------------------------------

# Nine requests over two days, two surfaces, three models; totals computed by hand below.
DAY1, DAY2 = local(2025, 3, 10, 9, 15), local(2025, 3, 11, 14, 40)
KNOWN = [
    rec(DAY1, model_used="claude-sonnet-4-5", input_tokens=100, output_tokens=10, cache_read_tokens=5,
        duration_ms=100, ttft_ms=40, cost_usd=0.010, request_id="k1"),
    rec(DAY1 + 60, model_used="claude-sonnet-4-5", input_tokens=200, output_tokens=20, cache_creation_tokens=50,
        duration_ms=200, ttft_ms=60, cost_usd=0.020, request_id="k2", stream=True),
    rec(DAY1 + 120, surface="openai", model_requested="gpt-4o", model_used="claude-haiku-4-5", input_tokens=300,
        output_tokens=30, duration_ms=300, ttft_ms=20, cost_usd=0.003, request_id="k3", client="openai-python"),
    rec(DAY1 + 3600, surface="openai", model_requested="gpt-4o", model_used="claude-haiku-4-5", status=429,
        error_kind="rate_limit_error", duration_ms=400, request_id="k4"),
    rec(DAY1 + 7200, model_used="claude-opus-5-5", input_tokens=1000, output_tokens=500, cache_read_tokens=700,
        duration_ms=500, ttft_ms=100, cost_usd=0.5, request_id="k5"),
    rec(DAY2, model_used="claude-sonnet-4-5", input_tokens=50, output_tokens=5, duration_ms=600, ttft_ms=80,
        cost_usd=0.001, request_id="k6"),
    rec(DAY2 + 60, surface="openai", model_requested="gpt-4o", model_used="", status=504,
        error_kind="timeout_error", duration_ms=700, request_id="k7"),
    rec(DAY2 + 120, surface="openai", model_requested="gpt-4o-mini", model_used="claude-haiku-4-5",
        input_tokens=10, output_tokens=1, duration_ms=800, ttft_ms=30, cost_usd=None, request_id="k8"),
    rec(DAY2 + 180, model_used="claude-sonnet-4-5", input_tokens=40, output_tokens=4, cache_read_tokens=3,
        duration_ms=900, ttft_ms=50, cost_usd=0.004, request_id="k9"),
]
ALL = {"requests": 9, "errors": 2, "input_tokens": 1700, "output_tokens": 570, "cache_read_tokens": 708,
       "cache_creation_tokens": 50, "cost_usd": 0.538, "error_rate": round(2 / 9, 6)}


def load(led: UsageLedger) -> UsageLedger:
    for r in KNOWN:
        led.record(r)
    assert led.flush()
    return led


def test_summary_by_day_model_surface(ledger: UsageLedger) -> None:
    load(ledger)
    by_day = ledger.summary(group_by="day").as_json()
    assert by_day["totals"] == ALL
    assert [(row["key"], row["requests"], row["errors"], row["input_tokens"]) for row in by_day["series"]] == [
        ("2025-03-10", 5, 1, 1600), ("2025-03-11", 4, 1, 100),
    ]
    by_model = {row["key"]: row for row in ledger.summary(group_by="model").as_json()["series"]}
    # A failed request without a model used counts under the model it asked for.
    assert set(by_model) == {"claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-5-5", "gpt-4o"}
    assert by_model["claude-sonnet-4-5"] == {
        "key": "claude-sonnet-4-5", "requests": 4, "errors": 0, "input_tokens": 390, "output_tokens": 39,
        "cache_read_tokens": 8, "cache_creation_tokens": 50, "cost_usd": 0.035, "error_rate": 0.0,
    }
    assert (by_model["claude-haiku-4-5"]["requests"], by_model["claude-haiku-4-5"]["errors"]) == (3, 1)
    assert by_model["claude-haiku-4-5"]["cost_usd"] == 0.003
    assert by_model["gpt-4o"]["error_rate"] == 1.0
    by_surface = {row["key"]: row["requests"] for row in ledger.summary(group_by="surface").as_json()["series"]}
    assert by_surface == {"anthropic": 5, "openai": 4}
    by_hour = ledger.summary(DAY1 - 1, DAY2 - 3600, group_by="hour").as_json()["series"]
    assert [(row["key"], row["requests"]) for row in by_hour] == [
        ("2025-03-10 09:00", 3), ("2025-03-10 10:00", 1), ("2025-03-10 11:00", 1),
    ]


def test_percentiles_are_nearest_rank(ledger: UsageLedger) -> None:
    load(ledger)
    p = ledger.percentiles()
    # duration: 100..900 (9 values): p50 is the 5th (500), p95 the 9th (900).
    assert (p["duration_ms"].p50, p["duration_ms"].p95, p["duration_ms"].count) == (500, 900, 9)
    # ttft: 20 30 40 50 60 80 100 (7 values, two requests had none): 4th and 7th.
    assert (p["ttft_ms"].p50, p["ttft_ms"].p95, p["ttft_ms"].count) == (50, 100, 7)
    day2 = ledger.percentiles(since=local(2025, 3, 11))
    assert (day2["duration_ms"].p50, day2["duration_ms"].p95) == (700, 900)


def test_recent_is_latest_first_and_metadata_only(ledger: UsageLedger) -> None:
    load(ledger)
    latest = ledger.recent(3)
    assert [r.request_id for r in latest] == ["k9", "k8", "k7"]
    assert set(latest[0].as_json()) == {
        "ts", "surface", "route", "model_requested", "model_used", "stream", "status", "error_kind",
        "duration_ms", "ttft_ms", "input_tokens", "output_tokens", "cache_read_tokens", "cache_creation_tokens",
        "cost_usd", "client", "request_id", "model_resolved", "key_name",
    }


# --- GET /usage through a real server --------------------------------------------------------------


def with_usage_routes(client: TestClient, led: UsageLedger) -> None:
    app: Any = client.app
    app.state.ledger = led


@pytest.fixture(scope="module")
def usage_server() -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(usage_db="")), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture()
def loaded(usage_server: TestClient, ledger: UsageLedger) -> TestClient:
    with_usage_routes(usage_server, load(ledger))
    return usage_server


def test_usage_endpoint_totals_and_series(loaded: TestClient) -> None:
    body = loaded.get("/usage", params={"recent": 2}).json()
    assert body["group_by"] == "day"
    assert body["totals"] == ALL
    assert [(row["key"], row["requests"], row["cost_usd"]) for row in body["series"]] == [
        ("2025-03-10", 5, 0.533), ("2025-03-11", 4, 0.005),
    ]
    assert body["percentiles"] == {
        "duration_ms": {"p50": 500.0, "p95": 900.0, "count": 9},
        "ttft_ms": {"p50": 50.0, "p95": 100.0, "count": 7},
    }
    assert [row["request_id"] for row in body["recent"]] == ["k9", "k8"]
    assert body["ledger"] == {"enabled": True, "retention_days": 36500, "write_errors": 0, "dropped": 0}


@pytest.mark.parametrize(("params", "requests", "input_tokens"), [
    ({"since": "2025-03-11"}, 4, 100),
    ({"until": "2025-03-10"}, 5, 1600),  # a bare date as until includes that day
    ({"since": str(DAY1 + 120), "until": str(DAY1 + 7200)}, 2, 300),  # epoch seconds, until exclusive
    ({"since": "2025-03-10T10:00:00", "until": "2025-03-11T14:41:00"}, 3, 1050),
    ({"since": "2025-04-01"}, 0, 0),
])
def test_usage_endpoint_windows(loaded: TestClient, params: dict[str, str], requests: int,
                                input_tokens: int) -> None:
    response = loaded.get("/usage", params={**params, "group_by": "surface"})
    assert response.status_code == 200, response.text
    totals = response.json()["totals"]
    assert (totals["requests"], totals["input_tokens"]) == (requests, input_tokens)


def test_usage_endpoint_group_by_model(loaded: TestClient) -> None:
    series = loaded.get("/usage", params={"group_by": "model"}).json()["series"]
    # Most used first.
    assert [(row["key"], row["requests"]) for row in series] == [
        ("claude-sonnet-4-5", 4), ("claude-haiku-4-5", 3), ("claude-opus-5-5", 1), ("gpt-4o", 1),
    ]


@pytest.mark.parametrize(("params", "param"), [
    ({"since": "yesterday"}, "since"),
    ({"until": "2025-02-30"}, "until"),
    ({"since": "2025-03-11", "until": "2025-03-10T00:00:00"}, "until"),
    ({"group_by": "week"}, "group_by"),
    ({"recent": "-1"}, "recent"),
    ({"recent": "many"}, "recent"),
])
def test_usage_endpoint_rejects_bad_params(loaded: TestClient, params: dict[str, str], param: str) -> None:
    response = loaded.get("/usage", params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert param in body["error"]["message"]


def test_usage_endpoint_with_ledger_disabled(usage_server: TestClient) -> None:
    with_usage_routes(usage_server, UsageLedger("", 90))
    body = usage_server.get("/usage", params={"group_by": "model"}).json()
    assert body["totals"]["requests"] == 0
    assert body["series"] == [] and body["recent"] == []
    assert body["ledger"]["enabled"] is False


def test_dashboard_assets_are_served_with_a_strict_policy(loaded: TestClient) -> None:
    page = loaded.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/dashboard/dashboard.js"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from another origin
    script = loaded.get("/dashboard/dashboard.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert "sessionStorage" in script.text and "localStorage" not in script.text
    assert "innerHTML" not in script.text
    assert loaded.get("/dashboard/dashboard.css").status_code == 200
    assert loaded.get("/dashboard/secrets.txt").status_code == 404
    assert loaded.get("/dashboard/dashboard.html").status_code == 404


# --- the CLI -----------------------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    out, err = io.StringIO(), io.StringIO()
    code = run(parser.parse_args(["usage", *argv]), out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_json_matches_the_endpoint(db: Path, loaded: TestClient) -> None:
    code, out, _ = cli("--db", str(db), "--since", "2025-03-01", "--group-by", "model", "--json")
    assert code == 0
    body = json.loads(out)
    api = loaded.get("/usage", params={"since": "2025-03-01", "group_by": "model", "recent": 0}).json()
    assert body["totals"] == api["totals"] == ALL
    assert body["series"] == api["series"]


def test_cli_table(db: Path, ledger: UsageLedger) -> None:
    load(ledger)
    code, out, _ = cli("--db", str(db), "--since", "2025-03-01", "--until", "2025-03-31", "--recent", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("Usage 2025-03-01 00:00 .. 2025-04-01 00:00, by day")
    assert lines[2].split() == ["day", "requests", "errors", "input", "output", "cache", "read", "cache", "write",
                                "cost"]
    assert lines[4].split() == ["2025-03-10", "5", "1", "1,600", "560", "705", "50", "$0.5330"]
    assert lines[5].split() == ["2025-03-11", "4", "1", "100", "10", "3", "0", "$0.0050"]
    assert lines[7].split() == ["total", "9", "2", "1,700", "570", "708", "50", "$0.5380"]
    assert "error rate 22.2%" in out
    assert "duration   p50 500 ms, p95 900 ms" in out
    assert "k9" not in out  # request ids stay out of the table; models and clients are shown
    assert "latest requests:" in out and "claude-sonnet-4-5" in out


def test_cli_never_purges(db: Path, ledger: UsageLedger) -> None:
    # The rows are from 2025; a 90-day retention in the CLI's settings must not delete them.
    load(ledger)
    code, out, _ = cli("--db", str(db), "--since", "2025-03-01", "--json")
    assert code == 0 and json.loads(out)["totals"]["requests"] == 9
    assert count_rows(db) == 9


def test_cli_without_a_ledger_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "usage.db"
    code, out, err = cli("--db", str(missing))
    assert code == 0
    assert "No usage recorded yet" in err and "(no requests)" in out
    assert not missing.parent.exists()
    code, _, err = cli("--db", "")
    assert code == 1 and "disabled" in err
    code, _, err = cli("--db", str(missing), "--since", "last week")
    assert code == 2


def test_nothing_but_metadata_is_stored(db: Path, ledger: UsageLedger) -> None:
    load(ledger)
    with sqlite3.connect(db) as conn:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    assert not columns & {"prompt", "messages", "content", "response", "text", "user_agent", "api_key"}
    assert os.path.getsize(db) > 0
