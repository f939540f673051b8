"""The ledger, the keys and the limit counters on a real PostgreSQL server (started by the
``postgres_url`` fixture), checked against the same work on SQLite."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from claude_code_proxy.accounts.keys import Limits
from claude_code_proxy.accounts.store import KeyStore
from claude_code_proxy.exceptions import KeyLimitError
from claude_code_proxy.ops.ledger import GROUP_BY_VALUES, UsageLedger
from claude_code_proxy.storage import migrations
from claude_code_proxy.storage.database import Database, open_database, redact
from tests.unit.test_ledger import ALL, KNOWN


def opened(location: str) -> Database:
    db = open_database(location)
    assert db is not None
    return db


def columns(db: Database) -> dict[str, list[str]]:
    tables = ("requests", "api_keys", "key_admissions", "key_leases", "schema_version")
    if db.dialect == "sqlite":
        return {t: sorted(r["name"] for r in db.query(f"PRAGMA table_info({t})")) for t in tables}
    return {t: sorted(r["column_name"] for r in db.query(
        "SELECT column_name FROM information_schema.columns WHERE table_name = ?", (t,))) for t in tables}


def test_both_dialects_have_every_step_and_end_in_the_same_tables(pg_url: str, tmp_path: Path) -> None:
    assert len(migrations.SQLITE) == len(migrations.POSTGRESQL) == migrations.SCHEMA_VERSION
    postgres, sqlite = opened(pg_url), opened(str(tmp_path / "usage.db"))
    assert columns(postgres) == columns(sqlite)
    assert "key_name" in columns(postgres)["requests"]
    assert postgres.query("SELECT version FROM schema_version") == [{"version": migrations.SCHEMA_VERSION}]


def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            opened(pg_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert opened(pg_url).query("SELECT COUNT(*) AS n FROM schema_version") == [{"n": 1}]


def report_without_location(ledger: UsageLedger, **kwargs: Any) -> dict[str, Any]:
    return ledger.report(**kwargs)


@pytest.mark.parametrize("group_by", GROUP_BY_VALUES)
def test_the_ledger_answers_the_same_on_postgresql_and_sqlite(pg_url: str, tmp_path: Path, group_by: str) -> None:
    answers = []
    for location in (pg_url, str(tmp_path / "usage.db")):
        ledger = UsageLedger(location, 36500)
        for index, record in enumerate(KNOWN):
            ledger.record(replace(record, key_name="ci" if index % 2 else "laptop"))
        assert ledger.flush()
        answers.append((ledger.report(group_by=group_by, recent=5),  # type: ignore[arg-type]
                        ledger.report(group_by=group_by, recent=5, key="ci")))  # type: ignore[arg-type]
        ledger.close()
    (postgres, postgres_ci), (sqlite, sqlite_ci) = answers
    assert postgres["totals"] == ALL
    assert postgres == sqlite and postgres_ci == sqlite_ci
    assert postgres_ci["totals"]["requests"] == 4


def test_key_limits_hold_exactly_across_two_stores(pg_url: str) -> None:
    # Two replicas' worth of stores, each its own database object and connections.
    first, second = KeyStore(opened(pg_url)), KeyStore(opened(pg_url))
    first.add("shared", Limits(rpm=6, concurrency=4))
    key = next(iter(second.active().values()))
    admitted: list[Any] = []
    refused: list[str] = []
    lock = threading.Lock()

    def worker(store: KeyStore) -> None:
        for _ in range(4):
            try:
                lease = store.admit(key, 600)
            except KeyLimitError as exc:
                with lock:
                    refused.append(exc.limit)
            else:
                with lock:
                    admitted.append(lease)

    threads = [threading.Thread(target=worker, args=(store,)) for store in (first, second) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Concurrency 4 bites first (no lease is released), then the rest are refused too.
    assert len(admitted) == 4 and len(refused) == 20
    for lease in admitted:
        first.release(lease)
    second.admit(key, 600)  # leases released, and 5 of 6 admissions this minute
    first.admit(key, 600)
    with pytest.raises(KeyLimitError) as refused_rpm:
        second.admit(key, 600)
    assert refused_rpm.value.limit == "rpm"


def test_a_database_url_never_shows_its_password(pg_url: str) -> None:
    assert redact("postgresql://app:s3cret@db:5432/proxy") == "postgresql://app:***@db:5432/proxy"
    db = opened(pg_url)
    assert db.description == pg_url  # no password in this one
    with pytest.raises(Exception) as failed:
        open_database("postgresql://app:s3cret@127.0.0.1:1/none")
    assert "s3cret" not in str(failed.value) and "***" in str(failed.value)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
