"""Bounded work under load (issue 5, bar tests 1-5, 12), on loopback only with the fake CLI:
a concurrency cap that is never exceeded, a bounded queue with a wait limit, 503 with
``Retry-After`` at once beyond it, queued requests that leave never spawning a CLI, and a
soak of mixed requests with client aborts that leaves no processes, directories, file
descriptors or memory behind.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.conftest import make_settings
from tests.support.fake_cli import make_fake_cli, open_gate, spawn_count
from tests.support.procs import SETTLE, cli_processes, peak_of, request_dirs, wait_until, zombies
from tests.support.server import RunningServer, serve

ANTHROPIC = "/v1/messages"
OPENAI = "/openai/v1/chat/completions"


def body_for(path: str, *, stream: bool) -> dict[str, Any]:
    return {"model": "sonnet" if path == ANTHROPIC else "gpt-4o", "max_tokens": 100, "stream": stream,
            "messages": [{"role": "user", "content": "hi"}]}


@contextmanager
def fake_server(directory: Path, mode: str, **overrides: Any) -> Iterator[RunningServer]:
    cli = make_fake_cli(directory, mode)
    with serve(make_settings(cli_path=str(cli), **overrides)) as running:
        yield running


@dataclass
class Outcome:
    path: str
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    body: str = ""
    to_status: float = 0.0
    error: str | None = None


async def stream_one(client: httpx.AsyncClient, path: str) -> Outcome:
    outcome = Outcome(path)
    started = time.monotonic()
    try:
        async with client.stream("POST", path, json=body_for(path, stream=True)) as response:
            outcome.status = response.status_code
            outcome.to_status = time.monotonic() - started
            outcome.headers = dict(response.headers)
            if response.status_code == 200:
                outcome.lines = [line async for line in response.aiter_lines() if line and not line.startswith(":")]
            else:
                outcome.body = (await response.aread()).decode()
    except httpx.HTTPError as exc:
        outcome.error = repr(exc)
    return outcome


def assert_well_formed(outcome: Outcome) -> None:
    """Bar test 12: every frame parses and the stream follows its surface's grammar."""
    if outcome.path == ANTHROPIC:
        assert len(outcome.lines) % 2 == 0
        names = []
        for event_line, data_line in zip(outcome.lines[::2], outcome.lines[1::2], strict=True):
            assert event_line.startswith("event: ") and data_line.startswith("data: ")
            data = json.loads(data_line[6:])
            assert data["type"] == event_line[7:]
            names.append(data["type"])
        assert names[:2] == ["message_start", "content_block_start"], names
        assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"], names
        assert set(names[2:-3]) == {"content_block_delta"}, names
        deltas = [json.loads(d[6:]) for e, d in zip(outcome.lines[::2], outcome.lines[1::2], strict=True)
                  if e == "event: content_block_delta"]
        text = "".join(d["delta"]["text"] for d in deltas)
        assert text == "".join(f"tok{i} " for i in range(10)), text
    else:
        assert all(line.startswith("data: ") for line in outcome.lines)
        assert outcome.lines[-1] == "data: [DONE]"
        chunks = [json.loads(line[6:]) for line in outcome.lines[:-1]]
        for chunk in chunks:
            assert chunk["object"] == "chat.completion.chunk" and chunk["id"] and "choices" in chunk
        finishes = [c["choices"][0].get("finish_reason") for c in chunks if c["choices"]]
        assert finishes[-1] == "stop" and all(f is None for f in finishes[:-1]), finishes
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
        assert text == "".join(f"tok{i} " for i in range(10)), text


# -- 40 concurrent streaming clients against C=4, Q=8 (bar tests 1, 12) --------------------

async def until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` from async code (only a hang reaches the limit)."""
    deadline = time.monotonic() + SETTLE
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.02)


def test_forty_concurrent_streams_never_exceed_the_cap(tmp_path: Path) -> None:
    cli_dir = tmp_path / "cli"
    before_dirs = request_dirs()
    # The CLIs answer only once the gate opens, after all forty requests were admitted, queued
    # or refused: how many get in never depends on how fast a busy machine serves them.
    with fake_server(cli_dir, "gated", max_concurrency=4, queue_size=8, queue_timeout=120) as server:
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]

        async def main() -> list[Outcome]:
            limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
            async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as client:
                paths = [ANTHROPIC if i % 2 == 0 else OPENAI for i in range(40)]
                tasks = [asyncio.create_task(stream_one(client, p)) for p in paths]
                await until(lambda: sum(t.done() for t in tasks) == 28 and backend.admission.active == 4
                            and backend.admission.waiting == 8)
                open_gate(cli_dir)
                return await asyncio.gather(*tasks)

        with peak_of(lambda: len(cli_processes()), 0.05) as peak:
            outcomes = asyncio.run(main())

        assert [o.error for o in outcomes if o.error] == []
        ok = [o for o in outcomes if o.status == 200]
        busy = [o for o in outcomes if o.status == 503]
        assert len(ok) == 12 and len(busy) == 28, sorted(o.status for o in outcomes)
        for outcome in ok:
            assert_well_formed(outcome)
        for outcome in busy:
            assert int(outcome.headers["retry-after"]) >= 1
            payload = json.loads(outcome.body)
            # Refused at once for a full queue, never after waiting in it (no clock needed:
            # the two refusals say which one they are).
            assert "queue full" in payload["error"]["message"], payload
        assert 1 <= peak[0] <= 4, f"peak of {peak[0]} CLI processes"
        assert backend.admission.peak <= 4
        assert backend.spawned == 12 and spawn_count(cli_dir) == 12
        assert wait_until(lambda: not cli_processes())
        assert wait_until(lambda: backend.admission.active == 0 and backend.admission.waiting == 0)
        assert wait_until(lambda: request_dirs() <= before_dirs)
        assert wait_until(lambda: not zombies())


# -- queue wait limit (bar test 3) -------------------------------------------------------------

def test_queued_requests_get_503_at_the_wait_limit_and_never_spawn(tmp_path: Path) -> None:
    cli_dir = tmp_path / "cli"
    # The first request holds the only slot until the gate opens, after the queued ones gave up.
    with fake_server(cli_dir, "gated", max_concurrency=1, queue_size=4, queue_timeout=1) as server:
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]

        async def main() -> tuple[Outcome, list[tuple[Outcome, float]]]:
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
                first = asyncio.create_task(stream_one(client, ANTHROPIC))
                await until(lambda: backend.admission.active == 1)

                async def timed(path: str) -> tuple[Outcome, float]:
                    started = time.monotonic()
                    outcome = await stream_one(client, path)
                    return outcome, time.monotonic() - started

                queued = await asyncio.gather(*(timed(p) for p in (ANTHROPIC, OPENAI, ANTHROPIC, OPENAI)))
                open_gate(cli_dir)
                return await first, list(queued)

        first, queued = asyncio.run(main())
        for outcome, waited in queued:
            assert outcome.status == 503, outcome
            assert "retry-after" in outcome.headers
            # Refused for waiting too long (not for a full queue), and never before the limit.
            assert "waited too long" in json.loads(outcome.body)["error"]["message"], outcome.body
            assert waited >= 1.0, f"queued request refused after {waited:.2f} s, before the 1 s limit"
        assert first.status == 200
        assert_well_formed(first)
        assert backend.spawned == 1 and spawn_count(cli_dir) == 1
        assert backend.admission.waiting == 0


# -- a request cancelled while queued never spawns (bar test 4) --------------------------------

def test_a_request_cancelled_while_queued_never_spawns(tmp_path: Path) -> None:
    cli_dir = tmp_path / "cli"
    # The first request holds the only slot until the gate opens, after every queued client left.
    with fake_server(cli_dir, "gated", max_concurrency=1, queue_size=4, queue_timeout=120) as server:
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]
        results: dict[str, Any] = {}

        def first() -> None:
            results["first"] = httpx.post(f"{server.url}{ANTHROPIC}", json=body_for(ANTHROPIC, stream=False),
                                          timeout=60)

        runner = threading.Thread(target=first)
        runner.start()
        assert wait_until(lambda: backend.admission.active == 1)
        for path, stream in ((ANTHROPIC, False), (OPENAI, True), (OPENAI, False), (ANTHROPIC, True)):
            with pytest.raises(httpx.ReadTimeout):
                if stream:
                    with httpx.stream("POST", f"{server.url}{path}", json=body_for(path, stream=True),
                                      timeout=0.6) as response:
                        response.read()
                else:
                    httpx.post(f"{server.url}{path}", json=body_for(path, stream=False), timeout=0.6)
        assert wait_until(lambda: backend.admission.waiting == 0), "left clients must leave the queue"
        open_gate(cli_dir)
        runner.join(timeout=60)
        assert results["first"].status_code == 200
        # The slot comes free once the first CLI is reaped; a leaked waiter would have been
        # handed it at that moment and started a CLI.
        assert wait_until(lambda: backend.admission.active == 0)
        assert backend.spawned == 1 and spawn_count(cli_dir) == 1
        after = httpx.post(f"{server.url}{OPENAI}", json=body_for(OPENAI, stream=False), timeout=30)
        assert after.status_code == 200
        assert backend.spawned == 2


# -- soak: 500 mixed requests with 10% aborts (bar test 5) -------------------------------------

def open_fds() -> int:
    return psutil.Process().num_fds()


def rss() -> int:
    return int(psutil.Process().memory_info().rss)


async def soak(server: RunningServer, count: int, workers: int) -> dict[str, int]:
    tally = {"ok": 0, "aborted": 0, "other": 0}
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for i in range(count):
        jobs.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        while True:
            try:
                i = jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            path = ANTHROPIC if i % 2 == 0 else OPENAI
            abort = i % 10 == 3
            stream = abort or (i // 2) % 2 == 0
            if stream:
                async with client.stream("POST", path, json=body_for(path, stream=True)) as response:
                    if abort:
                        async for line in response.aiter_lines():
                            if "tok" in line:
                                break
                        tally["aborted"] += 1
                        continue  # leaving the block closes the connection mid-stream
                    lines = [line async for line in response.aiter_lines() if line]
                    good = response.status_code == 200 and ("message_stop" in lines[-1] or lines[-1] == "data: [DONE]")
            else:
                response = await client.post(path, json=body_for(path, stream=False))
                good = response.status_code == 200 and "tok0" in response.text
            tally["ok" if good else "other"] += 1

    async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(workers)))
    return tally


@pytest.mark.timeout(900)  # 550 CLI starts: minutes on a busy machine
def test_soak_of_mixed_requests_with_aborts_leaves_nothing_behind(tmp_path: Path) -> None:
    cli_dir = tmp_path / "cli"
    before_dirs = request_dirs()
    with fake_server(cli_dir, "ok", max_concurrency=4, queue_size=16) as server:
        warm = asyncio.run(soak(server, 50, 4))
        assert warm["other"] == 0, warm
        assert wait_until(lambda: not cli_processes())
        gc.collect()
        fds, memory = open_fds(), rss()

        started = time.monotonic()
        tally = asyncio.run(soak(server, 500, 4))
        elapsed = time.monotonic() - started
        assert tally["other"] == 0, tally
        assert tally["aborted"] == 50 and tally["ok"] == 450, tally

        assert wait_until(lambda: not cli_processes()), cli_processes()
        assert wait_until(lambda: request_dirs() <= before_dirs), request_dirs() - before_dirs
        assert wait_until(lambda: not zombies())
        backend: Any = server.app.state.backend  # type: ignore[attr-defined]
        assert wait_until(lambda: backend.admission.active == 0 and backend.admission.waiting == 0)
        assert backend.admission.peak <= 4
        gc.collect()
        assert wait_until(lambda: open_fds() <= fds + 10), f"fds {fds} -> {open_fds()}"
        growth = (rss() - memory) / 2**20
        assert growth < 60, f"RSS grew {growth:.0f} MB over 500 requests"
        print(f"soak: 500 requests in {elapsed:.1f} s, RSS +{growth:.1f} MB, fds {fds} -> {open_fds()}")
