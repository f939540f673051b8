"""Admission: the concurrency limit, the bounded queue, its wait limit, cancellation and the
in-order hand-over of a freed slot.  Plain asyncio; the tests wait on conditions, never on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial

import pytest

from claude_code_proxy.backend.admission import Admission, Ticket
from claude_code_proxy.exceptions import ServiceUnavailableError

LONG = 3600.0  # a queue wait no test reaches: the tests end every wait themselves


async def until(condition: Callable[[], bool]) -> None:
    """Let the other tasks run until ``condition`` holds (no clock involved)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def waiting(admission: Admission, count: int) -> Callable[[], bool]:
    return lambda: admission.waiting == count


async def queued(admission: Admission, count: int) -> list[asyncio.Task[Ticket]]:
    """``count`` tasks waiting in line, in order."""
    tasks = []
    for _ in range(count):
        in_line = waiting(admission, admission.waiting + 1)
        tasks.append(asyncio.create_task(admission.enter()))
        await until(in_line)
    return tasks


async def test_up_to_the_limit_enter_at_once() -> None:
    admission = Admission(max_concurrency=2, queue_size=0, queue_timeout=LONG)
    first, second = await admission.enter(), await admission.enter()
    assert (admission.active, admission.waiting, admission.peak) == (2, 0, 2)
    with pytest.raises(ServiceUnavailableError, match="queue full") as info:
        await admission.enter()
    assert info.value.retry_after is not None and info.value.retry_after >= 1
    first.release()
    second.release()
    assert (admission.active, admission.peak) == (0, 2)


async def test_a_ticket_is_released_once() -> None:
    admission = Admission(1, 0, LONG)
    ticket = await admission.enter()
    ticket.release()
    ticket.release()
    assert ticket.released and admission.active == 0
    assert (await admission.enter()) is not None and admission.active == 1


def served(order: list[int], i: int, task: asyncio.Task[Ticket]) -> None:
    order.append(i)


async def test_a_freed_slot_goes_to_the_oldest_waiter() -> None:
    admission = Admission(1, 3, LONG)
    holder = await admission.enter()
    tasks = await queued(admission, 3)
    order: list[int] = []
    for i, task in enumerate(tasks):
        task.add_done_callback(partial(served, order, i))
    holder.release()
    await until(lambda: len(order) == 1)
    assert order == [0] and admission.active == 1 and admission.waiting == 2
    tasks[0].result().release()
    await until(lambda: len(order) == 2)
    tasks[1].result().release()
    await until(lambda: len(order) == 3)
    assert order == [0, 1, 2] and admission.active == 1  # handed over: never more than the limit
    tasks[2].result().release()
    assert (admission.active, admission.waiting, admission.peak) == (0, 0, 1)


async def test_a_newcomer_does_not_jump_the_queue() -> None:
    admission = Admission(1, 2, LONG)
    holder = await admission.enter()
    [waiter] = await queued(admission, 1)
    holder.release()  # the slot is the waiter's now, before it even ran
    late = asyncio.create_task(admission.enter())
    await until(lambda: waiter.done())
    assert not late.done() and admission.waiting == 1
    waiter.result().release()
    await until(late.done)
    late.result().release()
    assert admission.active == 0


async def test_the_queue_is_bounded() -> None:
    admission = Admission(1, 2, LONG)
    holder = await admission.enter()
    tasks = await queued(admission, 2)
    with pytest.raises(ServiceUnavailableError, match="queue full"):
        await admission.enter()
    assert admission.waiting == 2
    holder.release()
    for task in tasks:
        await until(task.done)
        task.result().release()
    assert admission.active == 0


async def test_a_waiter_gives_up_after_the_queue_timeout() -> None:
    # A short wait limit: the only timing here is that the wait does end (a lower bound
    # nothing can break); the slot holder never lets go while it waits.
    admission = Admission(1, 1, queue_timeout=0.05)
    holder = await admission.enter()
    with pytest.raises(ServiceUnavailableError, match="waited too long") as info:
        await admission.enter()
    assert info.value.retry_after == 1.0
    assert (admission.active, admission.waiting) == (1, 0)
    holder.release()
    assert admission.active == 0
    (await admission.enter()).release()  # the timed-out waiter left nothing behind in the line


async def test_a_waiter_cancelled_while_queued_never_gets_a_slot() -> None:
    admission = Admission(1, 2, LONG)
    holder = await admission.enter()
    gone, next_in_line = await queued(admission, 2)
    gone.cancel()
    await until(lambda: admission.waiting == 1)
    assert gone.cancelled()
    holder.release()
    await until(next_in_line.done)  # the freed slot skipped the cancelled waiter
    ticket = next_in_line.result()
    assert admission.active == 1
    ticket.release()
    assert admission.active == 0


async def test_a_waiter_cancelled_just_as_it_was_handed_a_slot_passes_it_on() -> None:
    admission = Admission(1, 2, LONG)
    holder = await admission.enter()
    unlucky, next_in_line = await queued(admission, 2)
    holder.release()  # the slot is handed to ``unlucky``...
    unlucky.cancel()  # ...which is cancelled before it could run
    await until(next_in_line.done)
    ticket = next_in_line.result()
    assert unlucky.cancelled() and admission.active == 1
    ticket.release()
    assert (admission.active, admission.waiting) == (0, 0)


async def test_a_cancelled_last_waiter_frees_the_slot() -> None:
    admission = Admission(1, 1, LONG)
    holder = await admission.enter()
    [unlucky] = await queued(admission, 1)
    holder.release()
    unlucky.cancel()
    await until(lambda: unlucky.done())
    assert (admission.active, admission.waiting) == (0, 0)
