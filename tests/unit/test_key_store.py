"""The key store and its limit counters on SQLite, with a clock the test moves."""

from __future__ import annotations

import datetime
import threading
from pathlib import Path

import pytest

from claude_code_proxy.accounts.keys import ApiKey, Limits, check_name, digest
from claude_code_proxy.accounts.limits import KeyCache
from claude_code_proxy.accounts.store import KeyExistsError, KeyStore, day_start
from claude_code_proxy.exceptions import KeyLimitError
from claude_code_proxy.ops.ledger import UsageLedger
from claude_code_proxy.storage.database import open_database
from tests.unit.test_ledger import rec


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


NOON = datetime.datetime(2025, 3, 10, 12, 0).timestamp()


@pytest.fixture()
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "usage.db")


def store_at(path: str, clock: Clock) -> KeyStore:
    db = open_database(path)
    assert db is not None
    return KeyStore(db, clock)


def test_keys_are_stored_as_digests_and_listed_without_them(db_path: str) -> None:
    store = store_at(db_path, Clock(NOON))
    key = store.add("ci-bot", Limits(rpm=5))
    assert key.startswith("ccp_") and len(key) > 40
    assert store.active() == {digest(key).hex(): ApiKey("ci-bot", Limits(rpm=5), NOON)}
    assert key.encode() not in Path(db_path).read_bytes()
    assert [k.name for k in store.list()] == ["ci-bot"]
    with pytest.raises(KeyExistsError):
        store.add("ci-bot")
    assert store.set_limits("ci-bot", {"concurrency": 2, "rpm": None}).limits == Limits(concurrency=2)
    assert store.revoke("ci-bot") and not store.revoke("ci-bot")
    assert store.active() == {} and store.list() == []
    assert store.snapshot().in_use, "keys stay required once one was added"
    store.add("ci-bot")  # a revoked name can be used again


@pytest.mark.parametrize("name", ["", "Upper", "-dash", "a b", "x" * 65, "default", "ключ"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_name(name)


def test_rpm_is_a_sliding_minute_with_an_exact_retry_after(db_path: str) -> None:
    clock = Clock(NOON)
    store = store_at(db_path, clock)
    store.add("bot", Limits(rpm=2))
    key = store.active().popitem()[1]
    store.admit(key, 60)
    clock.now += 20
    store.admit(key, 60)
    clock.now += 10
    with pytest.raises(KeyLimitError) as refused:
        store.admit(key, 60)
    assert refused.value.limit == "rpm" and refused.value.retry_after == pytest.approx(30)
    assert "2 requests per minute" in refused.value.message and "'bot'" in refused.value.message
    clock.now += 30  # the first admission is now a minute old
    store.admit(key, 60)
    with pytest.raises(KeyLimitError):
        store.admit(key, 60)


def test_concurrency_leases_are_released_or_expire(db_path: str) -> None:
    clock = Clock(NOON)
    store = store_at(db_path, clock)
    store.add("bot", Limits(concurrency=1))
    key = store.active().popitem()[1]
    first = store.admit(key, 600)
    with pytest.raises(KeyLimitError) as refused:
        store.admit(key, 600)
    assert refused.value.limit == "concurrency"
    store.release(first)
    store.admit(key, 600)  # released: admitted; this one is never released...
    clock.now += 601  # ...and expires, as a lease of a replica that died would
    store.admit(key, 600)


def test_budgets_count_todays_and_this_months_ledger_rows(db_path: str) -> None:
    clock = Clock(NOON)
    store = store_at(db_path, clock)
    store.add("bot", Limits(tokens_per_day=100, usd_per_day=1.0, usd_per_month=3.0))
    key = store.active().popitem()[1]
    ledger = UsageLedger(store.db, 36500)
    yesterday = NOON - 86400
    ledger.record(rec(yesterday, key_name="bot", input_tokens=500, cost_usd=2.5))  # yesterday: not today's
    ledger.record(rec(NOON - 60, key_name="other", input_tokens=500, cost_usd=5.0))  # another key
    ledger.record(rec(NOON - 60, key_name="bot", input_tokens=40, output_tokens=30, cache_read_tokens=20,
                      cache_creation_tokens=9, cost_usd=0.1))
    assert ledger.flush()
    store.admit(key, 60)  # 99 tokens, $0.10 today, $2.60 this month
    ledger.record(rec(NOON - 30, key_name="bot", output_tokens=1))
    assert ledger.flush()
    with pytest.raises(KeyLimitError) as refused:
        store.admit(key, 60)
    assert refused.value.limit == "tokens_per_day"
    midnight = day_start(NOON) + 86400
    assert refused.value.retry_after == pytest.approx(midnight - NOON)
    assert "100 tokens per day" in refused.value.message

    store.set_limits("bot", {"tokens_per_day": None})
    ledger.record(rec(NOON - 20, key_name="bot", cost_usd=0.45))  # $3.05 this month, $0.55 today
    assert ledger.flush()
    with pytest.raises(KeyLimitError) as refused:
        store.admit(key.__class__("bot", Limits(usd_per_day=1.0, usd_per_month=3.0)), 60)
    assert refused.value.limit == "usd_per_month" and "3 USD per month" in refused.value.message
    ledger.close()


def test_two_stores_on_one_file_admit_exactly_n(db_path: str) -> None:
    # Two processes' worth of stores (separate connections), many threads: rpm=N admits exactly N.
    first, second = store_at(db_path, Clock(NOON)), store_at(db_path, Clock(NOON))
    first.add("shared", Limits(rpm=7))
    key = first.active().popitem()[1]
    admitted: list[int] = []
    refused: list[int] = []

    def worker(store: KeyStore, n: int) -> None:
        for i in range(n):
            try:
                store.admit(key, 60)
                admitted.append(i)
            except KeyLimitError:
                refused.append(i)

    threads = [threading.Thread(target=worker, args=(store, 5)) for store in (first, second) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert (len(admitted), len(refused)) == (7, 23)


async def test_the_cache_reloads_at_most_every_refresh_interval(db_path: str) -> None:
    clock = Clock(100.0)
    store = store_at(db_path, Clock(NOON))
    cache = KeyCache(store, refresh_s=0.5, clock=clock)
    assert await cache.keys() == {}
    key = store.add("late")
    clock.now += 0.4
    assert await cache.lookup(digest(key)) is None  # within the interval: the cached set
    clock.now += 0.1
    found = await cache.lookup(digest(key))
    assert found is not None and found.name == "late"
    store.revoke("late")
    clock.now += 0.5
    assert await cache.lookup(digest(key)) is None
