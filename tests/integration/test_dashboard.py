"""The dashboard in a real headless Chromium against a real server: it shows the numbers
``GET /usage`` reports, raises no script error, and looks right (a screenshot is kept
under the test's temp directory)."""

from __future__ import annotations

import dataclasses
import datetime
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from claude_code_proxy.ops import usage
from claude_code_proxy.ops.ledger import UsageLedger, UsageRecord
from tests.conftest import make_settings
from tests.support.fake_upstream import FakeUpstream
from tests.support.server import RunningServer, serve

DASH = "\u2013"  # what the page shows for "no value"

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--enable-logging=stderr", "--v=0",
    # Lets the page's fetches and first render finish before the DOM is dumped.
    "--virtual-time-budget=5000",
]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Chromium, installed by the test setup step (``make test-deps``), never by a test."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail("chromium is not installed: run `make test-deps` (scripts/install-test-deps.sh) first")
    return found


@dataclass
class Page:
    dom: str
    log: str
    metrics: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] = field(default_factory=dict)
    ids: dict[str, dict[str, str | None]] = field(default_factory=dict)
    texts: dict[str, str] = field(default_factory=dict)
    hours: dict[int, int] = field(default_factory=dict)
    models: list[tuple[str, list[str]]] = field(default_factory=list)
    recent: list[str] = field(default_factory=list)
    recent_cells: dict[str, list[str]] = field(default_factory=dict)


class _DomReader(HTMLParser):
    """Collects what the test compares: data-metric texts, element states, table rows."""

    def __init__(self, page: Page) -> None:
        super().__init__()
        self.page = page
        self.stack: list[tuple[str, dict[str, str | None], list[str]]] = []
        self.model_row: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.page.body = {k: v or "" for k, v in a.items()}
        if a.get("id"):
            self.page.ids[str(a["id"])] = a
        if tag == "g" and a.get("data-hour") is not None:
            self.page.hours[int(str(a["data-hour"]))] = int(str(a["data-requests"]))
        if tag == "tr" and a.get("data-model") is not None:
            self.model_row = (str(a["data-model"]), [])
            self.page.models.append(self.model_row)
        if tag == "tr" and a.get("data-request-id") is not None:
            self.page.recent.append(str(a["data-request-id"]))
            self.model_row = (str(a["data-request-id"]), [])
            self.page.recent_cells[self.model_row[0]] = self.model_row[1]
        if tag not in ("meta", "link", "input", "br", "line", "rect"):
            self.stack.append((tag, a, []))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            name, a, parts = self.stack.pop()
            text = "".join(parts).strip()
            if self.stack:
                self.stack[-1][2].append("".join(parts))
            if a.get("data-metric"):
                self.page.metrics[str(a["data-metric"])] = text
            if a.get("id"):
                self.page.texts[str(a["id"])] = text
            if name == "td" and self.model_row is not None:
                self.model_row[1].append(text)
            if name == "tr":
                self.model_row = None
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if self.stack:
            self.stack[-1][2].append(data)


def browse(chromium: str, url: str, profile: Path, *extra: str) -> Page:
    result = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
        capture_output=True, text=True, timeout=90, check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    page = Page(dom=result.stdout, log=result.stderr)
    _DomReader(page).feed(result.stdout)
    return page


def script_errors(log: str) -> list[str]:
    """Console errors and uncaught exceptions Chromium logged for the page."""
    return [line for line in log.splitlines()
            if "Uncaught" in line or ("CONSOLE" in line and ("error" in line.lower() or ":ERROR:" in line))]


def number(text: str) -> float:
    return float(re.sub(r"[^0-9.]", "", text))


def decimals(text: str) -> int:
    match = re.search(r"\.(\d+)", text)
    return len(match.group(1)) if match else 0


def assert_shows(text: str, value: float) -> None:
    """The rendered text is ``value`` at the precision shown."""
    assert text not in ("", DASH), f"nothing rendered for {value}"
    assert abs(number(text) - value) <= 0.5 * 10 ** -decimals(text) + 1e-9, (text, value)


def with_usage_routes(running: RunningServer, ledger: UsageLedger) -> None:
    app: Any = running.app
    app.state.ledger = ledger


def records(now: float) -> list[UsageRecord]:
    today = datetime.datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    month = today.replace(day=1)
    out = []
    models = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-5-5"]
    for i in range(12):
        ts = max(today.timestamp() + 1, now - i * 1500)  # today, spread over the last hours
        failed = i % 5 == 4
        out.append(UsageRecord(
            ts=ts, surface="openai" if i % 2 else "anthropic",
            route="/openai/v1/chat/completions" if i % 2 else "/v1/messages",
            model_requested="gpt-4o" if i % 2 else "sonnet", model_used=models[i % 3], stream=i % 3 == 0,
            status=529 if failed else 200, error_kind="overloaded_error" if failed else None,
            duration_ms=900.0 + 137.5 * i, ttft_ms=None if failed else 210.0 + 31.25 * i,
            input_tokens=1500 + 250 * i, output_tokens=0 if failed else 120 + 45 * i,
            cache_read_tokens=800 * i, cache_creation_tokens=0 if i else 2048,
            cost_usd=None if failed else 0.0042 * (i + 1), client=["openai-python", "curl", "anthropic-python"][i % 3],
            request_id=f"req_today_{i}",
        ))
    if month.date() != today.date():  # earlier this month: in the month's numbers, not today's
        out.append(UsageRecord(
            ts=month.timestamp() + 3600, surface="anthropic", route="/v1/messages", model_requested="opus",
            model_used="claude-opus-5-5", stream=False, status=200, error_kind=None, duration_ms=5000.0,
            ttft_ms=700.0, input_tokens=40000, output_tokens=9000, cache_read_tokens=0, cache_creation_tokens=0,
            cost_usd=1.25, client="continue", request_id="req_month",
        ))
    out.append(UsageRecord(  # last month or earlier: in neither
        ts=month.timestamp() - 86400 * 3, surface="openai", route="/openai/v1/chat/completions",
        model_requested="gpt-4o", model_used="claude-haiku-4-5", stream=True, status=200, error_kind=None,
        duration_ms=300.0, ttft_ms=90.0, input_tokens=777, output_tokens=77, cache_read_tokens=0,
        cache_creation_tokens=0, cost_usd=0.5, client="curl", request_id="req_old",
    ))
    return out


@pytest.fixture()
def dashboard_server(tmp_path: Path) -> Iterator[RunningServer]:
    ledger = UsageLedger(str(tmp_path / "usage.db"), 36500)
    for rec in records(time.time()):
        ledger.record(rec)
    assert ledger.flush()
    with serve(make_settings(usage_db="")) as running:
        with_usage_routes(running, ledger)
        yield running
    ledger.close()


def test_dashboard_shows_what_the_api_reports(chromium: str, dashboard_server: RunningServer,
                                              tmp_path: Path) -> None:
    url = f"{dashboard_server.url}/dashboard"
    page = browse(chromium, url, tmp_path / "profile", "--dump-dom")

    assert script_errors(page.log) == []
    assert page.ids["js-errors"].get("hidden") is not None, page.texts.get("js-errors")
    assert page.ids["status"]["data-state"] == "ok", page.texts.get("status")
    assert page.ids["login"].get("hidden") is not None
    assert int(page.body["data-refreshes"]) >= 1

    # Ask the API exactly what the page asked it.
    today = httpx.get(f"{dashboard_server.url}/usage",
                      params={"since": page.body["data-today-since"], "group_by": "hour", "recent": 25}).json()
    month = httpx.get(f"{dashboard_server.url}/usage",
                      params={"since": page.body["data-month-since"], "group_by": "model", "recent": 0}).json()
    assert today["totals"]["requests"] == 12
    assert month["totals"]["requests"] == 12 + (datetime.date.today().day != 1)

    for prefix, report in (("today", today), ("month", month)):
        totals = report["totals"]
        for name in ("requests", "errors", "input_tokens", "output_tokens", "cache_read_tokens",
                     "cache_creation_tokens", "cost_usd"):
            assert_shows(page.metrics[f"{prefix}.{name}"], totals[name])
        assert page.metrics[f"{prefix}.cost_usd"].startswith("$")
        assert_shows(page.metrics[f"{prefix}.error_rate"], totals["error_rate"] * 100)
    for name in ("duration_ms", "ttft_ms"):
        for p in ("p50", "p95"):
            assert_shows(page.metrics[f"today.{name}.{p}"], today["percentiles"][name][p])
        assert_shows(page.metrics[f"today.{name}.count"], today["percentiles"][name]["count"])

    hours = {int(row["key"][11:13]): row["requests"] for row in today["series"]}
    assert page.hours == {hour: hours.get(hour, 0) for hour in range(24)}
    assert [model for model, _ in page.models] == [row["key"] for row in month["series"]]
    for (_, cells), row in zip(page.models, month["series"], strict=True):
        assert_shows(cells[1], row["requests"])
        assert_shows(cells[3], row["input_tokens"])
        assert_shows(cells[7], row["cost_usd"])
    assert page.recent == [rec["request_id"] for rec in today["recent"]]
    assert "req_old" not in page.recent[:12]

    shot = tmp_path / "dashboard.png"
    browse(chromium, url, tmp_path / "profile-shot", "--window-size=1280,1600", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 50_000  # a rendered page, not a blank one


def test_dashboard_with_an_empty_ledger(chromium: str, tmp_path: Path) -> None:
    ledger = UsageLedger(str(tmp_path / "usage.db"), 90)
    with serve(make_settings(usage_db="")) as running:
        with_usage_routes(running, ledger)
        page = browse(chromium, f"{running.url}/dashboard", tmp_path / "profile", "--dump-dom")
    ledger.close()
    assert script_errors(page.log) == []
    assert page.ids["status"]["data-state"] == "ok"
    assert page.metrics["today.requests"] == "0"
    assert page.metrics["today.cost_usd"] == "$0.00"
    assert page.metrics["today.duration_ms.p50"] == DASH
    assert "No requests recorded yet." in page.texts["recent"]


def test_dashboard_asks_for_the_key(chromium: str, tmp_path: Path) -> None:
    ledger = UsageLedger(str(tmp_path / "usage.db"), 90)
    with serve(make_settings(usage_db="", api_key="sk-dashboard-test")) as running:
        with_usage_routes(running, ledger)
        assert httpx.get(f"{running.url}/usage").status_code == 401
        # The page and its assets carry no data, so they load without the key.
        for path in sorted(usage.PUBLIC_PATHS):
            assert httpx.get(running.url + path).status_code == 200, f"{path} must be public (PUBLIC_PATHS)"
        assert httpx.get(f"{running.url}/usage",
                         headers={"authorization": "Bearer sk-dashboard-test"}).status_code == 200
        page = browse(chromium, f"{running.url}/dashboard", tmp_path / "profile", "--dump-dom")
    ledger.close()
    # The 401 the page gets before the key is entered is expected; nothing else is.
    assert [line for line in script_errors(page.log) if "status of 401" not in line] == []
    assert page.ids["status"]["data-state"] == "auth"
    assert page.ids["login"].get("hidden") is None
    assert page.metrics["today.requests"] == DASH


def test_dashboard_shows_keys_and_the_account_quota(chromium: str, tmp_path: Path) -> None:
    ledger = UsageLedger(str(tmp_path / "usage.db"), 36500)
    for index, rec in enumerate(records(time.time())):
        ledger.record(dataclasses.replace(rec, key_name=("ci-bot", "laptop", "")[index % 3]))
    assert ledger.flush()
    resets = int(time.time()) + 3600
    with serve(make_settings(usage_db="")) as running:
        with_usage_routes(running, ledger)
        running.app.state.backend.rate_limit = {  # type: ignore[attr-defined]
            "status": "allowed_warning", "type": "five_hour", "resets_at": resets, "utilization": 0.85,
            "overage_status": "rejected", "overage_resets_at": None, "overage_disabled_reason": "out_of_credits",
            "using_overage": False, "reported_at": time.time(),
            "windows": {"five_hour": {"status": "allowed_warning", "utilization": 0.85, "resets_at": resets},
                        "seven_day": {"status": "allowed", "utilization": 0.1, "resets_at": resets + 86400}}}
        page = browse(chromium, f"{running.url}/dashboard", tmp_path / "profile", "--dump-dom")
        month = httpx.get(f"{running.url}/usage",
                          params={"since": page.body["data-month-since"], "group_by": "key", "recent": 0}).json()
    ledger.close()
    assert script_errors(page.log) == []
    assert page.ids["status"]["data-state"] == "ok", page.texts.get("status")
    # The account's quota panel: its state, each window's use, the extra-usage state.
    assert page.ids["quota"]["data-state"] == "allowed_warning"
    assert "85.0% used" in page.texts["quota-summary"] and "out_of_credits" in page.texts["quota-summary"]
    assert re.findall(r'data-window="([a-z_]+)"', page.dom) == ["five_hour", "seven_day"]
    assert "10.0%" in page.texts["quota-windows"]
    # By key this month, as /usage?group_by=key answers; the key selector offers the named keys.
    groups = re.findall(r'<tbody id="keys">(.*?)</tbody>', page.dom, re.S)[0]
    assert re.findall(r'data-group="([^"]*)"', groups) == [row["key"] for row in month["series"]]
    assert {"ci-bot", "laptop", ""} <= {row["key"] for row in month["series"]}
    assert "(no key)" in groups
    options = re.findall(r'<option value="([^"]*)"', page.dom)
    assert options[0] == "" and {"ci-bot", "laptop"} <= set(options)


def test_latest_requests_show_the_model_asked_for_and_what_it_resolved_to(
    chromium: str, tmp_path: Path, upstream: FakeUpstream
) -> None:
    """Failed requests too: never an empty model; and a cheap request's cost is not $0.0000."""
    with serve(make_settings(usage_db=str(tmp_path / "usage.db"))) as running:
        gpt = openai.OpenAI(base_url=f"{running.url}/openai/v1", api_key="x", max_retries=0,
                            _strict_response_validation=True)

        def ask(request_id: str, model: str, text: str) -> None:
            gpt.chat.completions.create(model=model, messages=[{"role": "user", "content": text}],
                                        extra_headers={"x-request-id": request_id})

        with pytest.raises(openai.NotFoundError):
            ask("req-unknown", "gpt-9-nonexistent", "hi")
        # Rejected before its model is resolved (raw, since the SDK itself refuses such a max_tokens).
        body = {"model": "haiku", "max_tokens": 10**9, "messages": [{"role": "user", "content": "hi"}]}
        limited = httpx.post(f"{running.url}/v1/messages", headers={"x-request-id": "req-limit"}, json=body)
        assert limited.status_code == 400 and limited.json()["type"] == "error"
        with pytest.raises(openai.APIStatusError):
            ask("req-failed", "gpt-4o", "[[error:529]]")
        ask("req-ok", "gpt-4o", "hi")
        answered_by = upstream.requests[-1].body["model"]
        assert len(upstream.requests) == 2  # the rejected requests never reached a CLI
        app: Any = running.app
        assert app.state.ledger.flush()
        report = httpx.get(f"{running.url}/usage", params={"recent": 10}).json()
        page = browse(chromium, f"{running.url}/dashboard", tmp_path / "profile", "--dump-dom")
        shot = tmp_path / "latest.png"  # kept for a person to look at
        browse(chromium, f"{running.url}/dashboard", tmp_path / "profile-shot", "--window-size=1400,1500",
               f"--screenshot={shot}")

    assert script_errors(page.log) == []
    rows = {rec["request_id"]: rec for rec in report["recent"]}
    assert (rows["req-unknown"]["model_requested"], rows["req-unknown"]["model_resolved"]) == ("gpt-9-nonexistent", "")
    assert (rows["req-failed"]["model_resolved"], rows["req-failed"]["model_used"]) == ("sonnet", "")
    assert (rows["req-ok"]["model_resolved"], rows["req-ok"]["model_used"]) == ("sonnet", answered_by)

    # Columns: time, surface, key, client, model, resolved to, stream, status, ..., cost.
    shown = {rid: (cells[4], cells[5], cells[7].split()[0]) for rid, cells in page.recent_cells.items()}
    assert shown["req-unknown"] == ("gpt-9-nonexistent", DASH, "404")
    assert shown["req-limit"] == ("haiku", DASH, "400")
    assert shown["req-failed"][:2] == ("gpt-4o", "sonnet") and shown["req-failed"][2] != "200"
    assert shown["req-ok"] == ("gpt-4o", answered_by, "200")

    cost = rows["req-ok"]["cost_usd"]
    assert cost is not None and 0 < cost < 0.01, cost  # a few tokens: a fraction of a cent
    text = page.recent_cells["req-ok"][-1]
    assert number(text) > 0, text
    assert_shows(text, cost)
    assert abs(number(text) - cost) / cost < 0.05, (text, cost)  # two significant digits, not $0.0000
