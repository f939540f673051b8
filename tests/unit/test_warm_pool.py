"""The warm pool with fake processes: take, refill, the key and size bounds, idle expiry,
the shared budget and shutdown.  A controllable clock stands in for ``time.monotonic``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from types import SimpleNamespace
from typing import Any

import pytest

from claude_code_proxy.backend import warm_pool
from claude_code_proxy.backend.warm_pool import WarmPool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class Fakes:
    """spawn/dispose that record what they were asked; a spawn can be held at a gate."""

    def __init__(self) -> None:
        self.spawned: list[str] = []
        self.disposed: list[str] = []
        self.budget = 10
        self.gate: asyncio.Event | None = None
        self.fail = False

    async def spawn(self, spec: Any) -> str:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise OSError("no such file")
        self.spawned.append(spec)
        return f"proc-{spec}-{len(self.spawned)}"

    async def dispose(self, item: str) -> None:
        self.disposed.append(item)


@pytest.fixture()
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(warm_pool, "time", SimpleNamespace(monotonic=clock.monotonic))
    return clock


@pytest.fixture()
def fakes() -> Fakes:
    return Fakes()


def make_pool(fakes: Fakes, *, size: int = 4, max_keys: int = 4, idle_seconds: float = 60) -> WarmPool[str]:
    return WarmPool(size=size, max_keys=max_keys, idle_seconds=idle_seconds, spawn=fakes.spawn,
                    dispose=fakes.dispose, budget_left=lambda: fakes.budget)


async def settle(pool: WarmPool[str]) -> None:
    """Wait for every background start and dispose the pool has in flight."""
    while pool._tasks:
        await asyncio.gather(*list(pool._tasks))


_pass_turn = asyncio.sleep  # kept: the sweeper test replaces asyncio.sleep


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(10_000):
        if condition():
            return
        await _pass_turn(0)
    raise AssertionError("condition never held")


async def test_a_miss_then_a_refill_then_a_hit(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes)
    counted: list[str] = []
    pool.on_hit, pool.on_miss = (lambda: counted.append("hit")), (lambda: counted.append("miss"))
    assert pool.take("a") is None
    pool.refill("a", "a")
    assert pool.starting_count == 1 and pool.ready_count == 0
    await settle(pool)
    assert (pool.ready_count, pool.starting_count, pool.started) == (1, 0, 1)
    assert pool.take("a") == "proc-a-1"
    assert pool.take("a") is None  # single use: nobody gets that process again
    assert (pool.hits, pool.misses, counted) == (1, 2, ["miss", "hit", "miss"])


async def test_one_ready_process_per_key(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes)
    pool.refill("a", "a")
    pool.refill("a", "a")  # one is starting already
    await settle(pool)
    pool.refill("a", "a")  # one is ready already
    await settle(pool)
    assert fakes.spawned == ["a"] and pool.ready_count == 1


async def test_the_size_bound_evicts_another_key(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes, size=2)
    for key in ("a", "b", "c"):
        pool.refill(key, key)
        await settle(pool)
    assert pool.ready_count == 2
    assert fakes.disposed == ["proc-a-1"]  # the oldest other key made room
    assert pool.take("a") is None and pool.take("c") == "proc-c-3"


async def test_keys_are_evicted_least_recently_used(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes, size=10, max_keys=2)
    pool.refill("a", "a")
    pool.refill("b", "b")
    await settle(pool)
    pool.refill("a", "a")  # touches "a": now "b" is the least recently used
    pool.refill("c", "c")
    await settle(pool)
    assert fakes.disposed == ["proc-b-2"]
    assert pool.take("b") is None
    assert pool.take("a") == "proc-a-1" and pool.take("c") == "proc-c-3"


async def test_a_start_that_ends_with_no_key_room_is_disposed(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes, size=10, max_keys=1)
    fakes.gate = asyncio.Event()
    pool.refill("a", "a")
    pool.refill("b", "b")  # "a" is still starting, so it holds no key yet
    fakes.gate.set()
    await settle(pool)
    assert pool.ready_count == 1 and len(fakes.disposed) == 1


async def test_idle_processes_expire(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes, idle_seconds=60)
    pool.refill("a", "a")
    await settle(pool)
    clock.now += 59
    pool.refill("b", "b")
    await settle(pool)
    clock.now += 2  # "a" is 61 s old, "b" 2 s
    assert pool.take("a") is None
    await settle(pool)
    assert fakes.disposed == ["proc-a-1"]
    assert pool.take("b") == "proc-b-2"


async def test_the_sweeper_expires_without_requests(
        clock: Clock, fakes: Fakes, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = make_pool(fakes, idle_seconds=60)
    pool.refill("a", "a")
    await settle(pool)
    ticks = asyncio.Queue[None]()

    async def tick(seconds: float) -> None:
        assert seconds == 5.0
        await ticks.get()

    monkeypatch.setattr("claude_code_proxy.backend.warm_pool.asyncio.sleep", tick)
    sweeper = asyncio.create_task(pool.sweep_forever())
    clock.now += 61
    ticks.put_nowait(None)
    await until(lambda: pool.ready_count == 0)
    await settle(pool)
    assert fakes.disposed == ["proc-a-1"]
    sweeper.cancel()
    with suppress(asyncio.CancelledError):
        await sweeper


async def test_no_start_beyond_the_budget(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes)
    fakes.budget = 0
    pool.refill("a", "a")
    assert pool.starting_count == 0 and fakes.spawned == []
    fakes.budget = 1
    pool.refill("a", "a")
    await settle(pool)
    # Out of budget again: "b" may start only by evicting the ready process of another key.
    fakes.budget = 0
    pool.refill("b", "b")
    await settle(pool)
    assert fakes.disposed == ["proc-a-1"] and pool.take("b") == "proc-b-2"


async def test_make_room_gives_a_running_request_the_budget(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes)
    pool.refill("a", "a")
    pool.refill("b", "b")
    await settle(pool)
    pool.make_room()  # budget left: nothing to do
    assert pool.ready_count == 2
    fakes.budget = 0
    pool.make_room()
    await settle(pool)
    assert fakes.disposed == ["proc-a-1"] and pool.ready_count == 1


async def test_a_failed_start_leaves_nothing_behind(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes)
    fakes.fail = True
    pool.refill("a", "a")
    await settle(pool)
    assert (pool.ready_count, pool.starting_count, pool.started) == (0, 0, 0)
    fakes.fail = False
    pool.refill("a", "a")  # and the key may be tried again
    await settle(pool)
    assert pool.ready_count == 1


async def test_a_disabled_pool_does_nothing(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes, size=0)
    assert not pool.enabled
    pool.refill("a", "a")
    assert pool.take("a") is None and (pool.hits, pool.misses) == (0, 0) and fakes.spawned == []


async def test_aclose_stops_ready_and_starting_processes(clock: Clock, fakes: Fakes) -> None:
    pool = make_pool(fakes)
    pool.refill("a", "a")
    await settle(pool)
    fakes.gate = asyncio.Event()
    pool.refill("b", "b")
    closing = asyncio.create_task(pool.aclose())
    await until(lambda: not pool.enabled)
    assert pool.take("a") is None
    fakes.gate.set()  # the start in flight finishes after the pool closed: disposed, not kept
    await closing
    assert sorted(fakes.disposed) == ["proc-a-1", "proc-b-2"] and pool.ready_count == 0
