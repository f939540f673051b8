"""Two proxy replicas (real processes, real CLIs) sharing one PostgreSQL database: a key's
request limit holds across both, and either replica's ``/usage`` shows both replicas' requests."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.support.fake_upstream import FakeUpstream
from tests.support.postgres import new_database
from tests.support.procs import wait_until
from tests.support.proxy_process import ProxyProcess, proxy_env, proxy_process

LIMIT = 3
REQUESTS = 8


def add_key(database_url: str, name: str, *limits: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "claude_code_proxy", "keys", "add", name, *limits],
        env=proxy_env({"CLAUDE_PROXY_DATABASE_URL": database_url}), capture_output=True, text=True, timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.rstrip("\n").splitlines()[-1]


def test_two_replicas_share_key_limits_and_usage(postgres_url: str, tmp_path: Path, upstream: FakeUpstream) -> None:
    database_url = new_database(postgres_url)
    key = add_key(database_url, "team-agent", "--rpm", str(LIMIT))
    env: dict[str, str | None] = {"CLAUDE_PROXY_DATABASE_URL": database_url, "CLAUDE_PROXY_HOST": "127.0.0.1"}
    with proxy_process(tmp_path / "a", env) as first, proxy_process(tmp_path / "b", env) as second:
        replicas = {"a": first, "b": second}

        def ask(index: int) -> int:
            name = "ab"[index % 2]
            response = httpx.post(
                f"{replicas[name].url}/v1/messages", timeout=120,
                headers={"authorization": f"Bearer {key}", "x-request-id": f"req_{name}_{index}"},
                json={"model": "sonnet", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]},
            )
            if response.status_code == 429:
                assert "3 requests per minute (--rpm)" in response.json()["error"]["message"]
            return response.status_code

        with ThreadPoolExecutor(REQUESTS) as pool:
            statuses = list(pool.map(ask, range(REQUESTS)))
        assert sorted(statuses) == [200] * LIMIT + [429] * (REQUESTS - LIMIT), statuses
        assert len(upstream.messages_calls) == LIMIT, "only admitted requests reach upstream"

        def usage(replica: ProxyProcess) -> dict[str, object]:
            response = httpx.get(f"{replica.url}/usage", timeout=30, headers={"authorization": f"Bearer {key}"},
                                 params={"key": "team-agent", "group_by": "key", "recent": 50})
            assert response.status_code == 200, response.text
            body: dict[str, object] = response.json()
            return body

        for replica in (first, second):
            # Each replica writes its rows a moment after answering: wait until all are in.
            assert wait_until(lambda r=replica: usage(r)["totals"]["requests"] == REQUESTS, timeout=30)  # type: ignore[index,misc]
            seen = usage(replica)
            ids = {row["request_id"] for row in seen["recent"]}  # type: ignore[attr-defined]
            assert {i for i in ids if i.startswith("req_a_")} and {i for i in ids if i.startswith("req_b_")}
            assert seen["totals"]["errors"] == REQUESTS - LIMIT  # type: ignore[index]
            assert seen["series"] == [{**seen["totals"], "key": "team-agent"}]  # type: ignore[dict-item]
