"""The warm pool in single-use mode (cli_reuse=false): pre-started CLIs keyed by their spawn-time
configuration, each used once.  Reuse is tested in test_reuse.py."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.procs import cli_processes, request_dirs, wait_until
from tests.support.server import RunningServer, serve


@pytest.fixture()
def pooled(cli_env: Path) -> Iterator[RunningServer]:
    with serve(make_settings(warm_pool_size=2, warm_pool_keys=2, max_concurrency=4, cli_reuse=False)) as running:
        yield running


def backend(server: RunningServer) -> Any:
    return server.app.state.backend  # type: ignore[attr-defined]


def client(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0, _strict_response_validation=True)


def ask(server: RunningServer, system: str = "Be brief.", text: str = "[[echo]] hello") -> str:
    message = client(server).messages.create(model="sonnet", max_tokens=100, system=system,
                                             messages=[{"role": "user", "content": text}])
    return message.content[0].text  # type: ignore[union-attr]


def normalized(body: dict[str, Any]) -> str:
    """The upstream body without what differs between any two runs (ids, directories)."""
    body = dict(body)
    body.pop("metadata", None)
    text = json.dumps(body, sort_keys=True)
    return re.sub(r"claude-proxy-[A-Za-z0-9_]+", "claude-proxy-X", text)


def test_second_request_with_the_same_configuration_starts_warm(
    pooled: RunningServer, upstream: FakeUpstream
) -> None:
    assert ask(pooled) == "hello"
    assert backend(pooled).warm_starts == 0
    assert wait_until(lambda: backend(pooled).pool.ready_count == 1)
    assert ask(pooled) == "hello"
    assert backend(pooled).warm_starts == 1
    assert backend(pooled).pool.hits == 1
    # The body upstream received is the same whether the CLI started cold or warm.
    cold, warm = upstream.messages_calls[0].body, upstream.messages_calls[1].body
    assert normalized(cold) == normalized(warm)


def test_a_warm_process_is_used_once_then_replaced(pooled: RunningServer) -> None:
    ask(pooled)
    for _ in range(3):
        assert wait_until(lambda: backend(pooled).pool.ready_count == 1)
        ask(pooled)
    pool = backend(pooled).pool
    assert pool.hits == 3
    # One cold start, and one pre-start per request: 4 requests used 4 different processes.
    assert wait_until(lambda: backend(pooled).spawned == 5)
    assert backend(pooled).warm_starts == 3


def test_a_different_configuration_misses_and_keys_are_bounded(cli_env: Path) -> None:
    with serve(make_settings(warm_pool_size=2, warm_pool_keys=1, cli_reuse=False)) as running:
        ask(running, system="A")
        assert wait_until(lambda: backend(running).pool.ready_count == 1)
        ask(running, system="B")
        assert backend(running).warm_starts == 0
        # Only one key is kept: B's process (the pool's second start) replaced A's.
        pool = backend(running).pool
        assert wait_until(lambda: pool.started == 2 and pool.ready_count == 1)
        ask(running, system="A")
        assert backend(running).warm_starts == 0
        assert wait_until(lambda: len(cli_processes()) == 1)


def test_idle_warm_processes_expire(cli_env: Path) -> None:
    with serve(make_settings(warm_pool_size=1, warm_pool_idle=1.0, cli_reuse=False)) as running:
        ask(running)
        pool = backend(running).pool
        # A replacement became ready (counted, since on a busy machine it may expire before a
        # look at the pool could see it), then left the pool with no request taking it.
        assert wait_until(lambda: pool.started == 1)
        assert wait_until(lambda: pool.ready_count == 0 and not cli_processes())
        assert pool.hits == 0 and pool.started == 1


def test_pool_respects_the_concurrency_budget(cli_env: Path) -> None:
    with serve(make_settings(warm_pool_size=4, max_concurrency=1)) as running:
        ask(running, system="A")
        assert wait_until(lambda: backend(running).pool.ready_count == 1)
        ask(running, system="B")  # evicts A's ready process to stay within one CLI
        pool, admission = backend(running).pool, running.app.state.admission  # type: ignore[attr-defined]
        # Settled: B's request reaped (its slot free), nothing starting or being disposed.
        assert wait_until(lambda: admission.active == 0 and pool.ready_count == 1 and pool.starting_count == 0
                          and not pool._tasks)
        assert len(cli_processes()) <= 1


def test_shutdown_stops_ready_processes(cli_env: Path) -> None:
    before = request_dirs()
    with serve(make_settings(warm_pool_size=2, cli_reuse=False)) as running:
        ask(running)
        assert wait_until(lambda: backend(running).pool.ready_count == 1)
        assert cli_processes()
    assert wait_until(lambda: not cli_processes())
    assert wait_until(lambda: request_dirs() <= before)


def test_streaming_warm_start_has_the_same_answer(pooled: RunningServer) -> None:
    ask(pooled)
    assert wait_until(lambda: backend(pooled).pool.ready_count == 1)
    with client(pooled).messages.stream(model="sonnet", max_tokens=100, system="Be brief.",
                                        messages=[{"role": "user", "content": "[[echo]] hello"}]) as stream:
        text = "".join(stream.text_stream)
    assert text == "hello"
    assert backend(pooled).warm_starts == 1


def test_hits_and_misses_reach_metrics(pooled: RunningServer) -> None:
    ask(pooled)
    assert wait_until(lambda: backend(pooled).pool.ready_count == 1)
    ask(pooled)
    text = httpx.get(f"{pooled.url}/metrics").text
    assert 'claude_proxy_warm_pool_hits_total{model="sonnet"} 1.0' in text
    assert 'claude_proxy_warm_pool_misses_total{model="sonnet"} 1.0' in text
