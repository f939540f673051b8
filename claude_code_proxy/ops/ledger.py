"""The usage ledger: one row of metadata per request, in a SQLite file on this machine, or
in the PostgreSQL database replicas share (storage/database.py; the SQL here is portable).

What is stored is in ``UsageRecord``: times, surface, models, status, tokens, cost, a
client name and the API key's name.  Three model names: the one the client asked for
(``model_requested``, also for a request rejected before it ran), the one the proxy resolved
it to and handed the CLI (``model_resolved``: ``gpt-4o`` -> ``sonnet``), and the one that
answered (``model_used``, the upstream's id; empty when no model answered).  Never prompt or
answer text, never keys, never the raw user agent.

Writes never block or fail a request: ``record()`` only puts the row on a bounded queue;
one writer thread owns the write connection, commits in batches, purges rows older than
the retention on start and then periodically.  A failed write is logged (metadata only)
and counted in ``write_errors``; a full queue drops the row and counts it in ``dropped``.
Queries open their own short-lived connection (on SQLite, WAL lets them read beside the writer).

Buckets (``day``, ``hour``) are in the server's local time, which for a local proxy is
the user's.  Percentiles are nearest-rank (p95 of 20 values is the 19th smallest).
"""

from __future__ import annotations

import datetime
import functools
import math
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, get_args

import structlog

from claude_code_proxy.storage import migrations
from claude_code_proxy.storage.database import Database, DatabaseError, Row, SQLiteDatabase, open_database

log = structlog.get_logger(__name__)

Surface = str
"""The label of the API surface a request came through (surfaces/registry.py)."""
GroupBy = Literal["day", "hour", "model", "surface", "key"]
GROUP_BY_VALUES: tuple[str, ...] = get_args(GroupBy)

# Each bucket expression is a constant chosen from these tables, never client text.  On
# PostgreSQL, local time is the server's current UTC offset, passed as the one parameter.
_BUCKET_SQL: dict[str, dict[str, str]] = {
    "sqlite": {
        "day": "strftime('%Y-%m-%d', ts, 'unixepoch', 'localtime')",
        "hour": "strftime('%Y-%m-%d %H:00', ts, 'unixepoch', 'localtime')",
    },
    "postgresql": {
        "day": "to_char(to_timestamp(ts + ?) AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
        "hour": "to_char(to_timestamp(ts + ?) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00')",
    },
}
_GROUP_SQL: dict[str, str] = {
    "model": "COALESCE(NULLIF(model_used, ''), NULLIF(model_resolved, ''), model_requested)",
    "surface": "surface",
    "key": "key_name",
}


def _utc_offset() -> int:
    offset = datetime.datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


@dataclass(frozen=True)
class UsageRecord:
    ts: float
    surface: Surface
    route: str
    model_requested: str
    model_used: str
    stream: bool
    status: int
    error_kind: str | None
    duration_ms: float
    ttft_ms: float | None
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_creation_tokens: int
    cost_usd: float | None
    client: str
    request_id: str
    model_resolved: str = ""
    key_name: str = ""
    """The API key's name ("" without one, "default" for the CLAUDE_PROXY_API_KEY setting)."""

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


_COLUMNS = tuple(f.name for f in fields(UsageRecord))
_INSERT_SQL = f"INSERT INTO requests ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' for _ in _COLUMNS)})"  # noqa: S608


@dataclass(frozen=True)
class Totals:
    requests: int = 0
    errors: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def as_json(self) -> dict[str, Any]:
        # Rounded so float sums print cleanly, but only to nano-dollars: a request of a few
        # tokens costs micro-dollars, which must not round away to zero.
        return {**asdict(self), "cost_usd": round(self.cost_usd, 9), "error_rate": round(self.error_rate, 6)}


@dataclass(frozen=True)
class Summary:
    group_by: GroupBy
    totals: Totals
    series: list[tuple[str, Totals]]

    def as_json(self) -> dict[str, Any]:
        return {
            "group_by": self.group_by,
            "totals": self.totals.as_json(),
            "series": [{"key": key, **totals.as_json()} for key, totals in self.series],
        }


@dataclass(frozen=True)
class Percentiles:
    p50: float | None = None
    p95: float | None = None
    count: int = 0

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


# --- client names ---------------------------------------------------------------------

# Checked in order: wrappers first, since they often send their SDK's agent too.
_KNOWN_CLIENTS: tuple[tuple[str, str], ...] = (
    ("open-webui", "open-webui"),
    ("openwebui", "open-webui"),
    ("langchain", "langchain"),
    ("llamaindex", "llamaindex"),
    ("litellm", "litellm"),
    ("continue", "continue"),
    ("cline", "cline"),
    ("aider", "aider"),
    ("claude-cli", "claude-code"),
    ("openai/python", "openai-python"),
    ("openai/js", "openai-js"),
    ("anthropic/python", "anthropic-python"),
    ("anthropic/js", "anthropic-js"),
    ("curl/", "curl"),
    ("wget/", "wget"),
    ("python-requests", "python-requests"),
    ("python-httpx", "python-httpx"),
    ("aiohttp", "aiohttp"),
    ("node-fetch", "node-fetch"),
    ("undici", "node"),
    ("go-http-client", "go"),
    ("mozilla/", "browser"),
)
_PRODUCT = re.compile(r"[a-z0-9][a-z0-9._-]{0,31}")


def client_name(user_agent: str) -> str:
    """A short, safe name for the tool behind a user agent: ``OpenAI/Python 3.54.0`` -> ``openai-python``."""
    agent = user_agent.strip().lower()
    if not agent:
        return "unknown"
    for needle, name in _KNOWN_CLIENTS:
        if needle in agent:
            return name
    # Otherwise the product token ("MyTool/1.2 ..." -> "mytool"), reduced to safe characters.
    match = _PRODUCT.match(agent.split("/", 1)[0].split(" ", 1)[0])
    return match.group(0) if match else "unknown"


# --- time windows ---------------------------------------------------------------------


def parse_when(value: str | None, *, end: bool = False) -> float | None:
    """Epoch seconds from epoch seconds, an ISO date or an ISO datetime (naive means local time).

    A bare date as an ``end`` bound means the end of that day, so ``--until 2025-01-31``
    includes the 31st.  Raises ValueError on anything else.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"{value!r} is not a valid time")
        return number
    if len(text) == 10:
        day = datetime.date.fromisoformat(text)
        start = datetime.datetime.combine(day, datetime.time.min)
        return (start + datetime.timedelta(days=1) if end else start).timestamp()
    return datetime.datetime.fromisoformat(text).timestamp()


# --- schema -----------------------------------------------------------------------------

# The steps live in storage/migrations.py, one list per dialect; these wrappers keep the
# SQLite-file form the ledger's own tests and tools use.
SCHEMA_VERSION = migrations.SCHEMA_VERSION
_SQLITE = SQLiteDatabase("")


def schema_version(conn: sqlite3.Connection) -> int:
    return migrations.schema_version(_SQLITE, conn)


def migrate(conn: sqlite3.Connection, target: int = SCHEMA_VERSION) -> int:
    """Bring a SQLite file's schema up to ``target``; returns the version found before."""
    return migrations.migrate(_SQLITE, conn, target)


def _nearest_rank(ordered: list[float], pct: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


class _Flush:
    def __init__(self) -> None:
        self.done = threading.Event()


_STOP = object()


class UsageLedger:
    """The ledger; ``path`` None or empty disables it (records are dropped, queries are empty).

    ``writer=False`` opens it for queries only (the ``usage`` command): no writer thread and
    no purge, so reading with other settings never deletes what the server keeps.
    """

    def __init__(
        self,
        location: Database | str | None,
        retention_days: int,
        *,
        purge_interval: float = 3600.0,
        batch_size: int = 500,
        max_queue: int = 10_000,
        clock: Callable[[], float] = time.time,
        writer: bool = True,
    ) -> None:
        self.retention_days = retention_days
        self.write_errors = 0
        self.dropped = 0
        self._purge_interval = purge_interval
        self._batch_size = batch_size
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=max_queue)
        self._closed = False
        self._thread: threading.Thread | None = None
        self.db: Database | None = None
        if isinstance(location, Database):
            self.db = location
        elif location and location.strip():
            try:
                self.db = open_database(location)
            except DatabaseError as exc:
                # The proxy still serves; it only cannot keep its ledger.
                log.error("ledger.unavailable", error=str(exc)[:300])
        if self.db is not None and writer:
            self._thread = threading.Thread(target=self._run, name="usage-ledger", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.db is not None

    @property
    def path(self) -> str | None:
        """Where the rows are: a file path, or a database URL without its password."""
        return self.db.description if self.db is not None else None

    # --- writing ------------------------------------------------------------------------

    def record(self, rec: UsageRecord) -> None:
        """Queue one row; never blocks, never raises."""
        if self._thread is None or self._closed:
            return
        try:
            self._queue.put_nowait(rec)
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("ledger.queue_full", dropped=self.dropped)

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued before this call is committed (or failed)."""
        if self._thread is None or self._closed:
            return True
        marker = _Flush()
        try:
            self._queue.put(marker, timeout=timeout)
        except queue.Full:
            return False
        return marker.done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer thread."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def purge(self) -> int:
        """Delete rows older than the retention now; returns how many went."""
        if self.db is None:
            return 0
        with self.db.connection() as conn:
            return self._purge(conn)

    def _purge(self, conn: Any) -> int:
        assert self.db is not None
        cutoff = self._clock() - self.retention_days * 86400
        with self.db.transaction(conn):
            deleted = int(self.db.execute(conn, "DELETE FROM requests WHERE ts < ?", (cutoff,)).rowcount)
        if deleted:
            log.info("ledger.purged", rows=deleted, retention_days=self.retention_days)
        return deleted

    def _run(self) -> None:
        assert self.db is not None
        conn = self.db.connect()
        try:
            self._guarded(lambda: self._purge(conn), "purge")
            next_purge = time.monotonic() + self._purge_interval
            stopping = False
            while not stopping:
                try:
                    item: object = self._queue.get(timeout=max(0.0, next_purge - time.monotonic()))
                except queue.Empty:
                    item = None
                batch: list[UsageRecord] = []
                flushes: list[_Flush] = []
                # The queue is FIFO, so a flush marker or the stop sentinel comes after
                # every row queued before it.
                while item is not None:
                    if item is _STOP:
                        stopping = True
                        break
                    if isinstance(item, _Flush):
                        flushes.append(item)
                    elif isinstance(item, UsageRecord):
                        batch.append(item)
                    if len(batch) >= self._batch_size:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        item = None
                if batch:
                    self._write(conn, batch)
                for flush in flushes:
                    flush.done.set()
                if time.monotonic() >= next_purge:
                    self._guarded(lambda: self._purge(conn), "purge")
                    next_purge = time.monotonic() + self._purge_interval
        finally:
            conn.close()

    def _write(self, conn: Any, batch: list[UsageRecord]) -> None:
        db = self.db
        assert db is not None
        rows = [_row(rec) for rec in batch]

        def insert(chunk: list[tuple[object, ...]]) -> None:
            with db.transaction(conn):
                conn.cursor().executemany(db.sql(_INSERT_SQL), chunk)

        if self._guarded(lambda: insert(rows), "write", rows=len(rows)):
            return
        # One bad row must not cost the others: retry them one by one.
        for row in rows:
            if not self._guarded(functools.partial(insert, [row]), "write", rows=1):
                self.write_errors += 1

    def _guarded(self, action: Callable[[], object], what: str, **extra: object) -> bool:
        try:
            action()
        except Exception as exc:
            # Never the row itself: only what went wrong.
            log.error(f"ledger.{what}_error", error_class=type(exc).__name__, error=str(exc)[:200], **extra)
            return False
        return True

    # --- reading ------------------------------------------------------------------------

    def _query(self, sql: str, params: Iterable[object]) -> list[Row]:
        if self.db is None:
            return []
        return self.db.query(sql, list(params))

    @staticmethod
    def _window(since: float | None, until: float | None, key: str | None = None) -> tuple[str, list[object]]:
        clauses: list[str] = ["1 = 1"]
        params: list[object] = []
        if key is not None:
            clauses.append("key_name = ?")
            params.append(key)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(since)
        if until is not None:
            clauses.append("ts < ?")
            params.append(until)
        return " AND ".join(clauses), params

    def summary(
        self, since: float | None = None, until: float | None = None, group_by: GroupBy = "day",
        key: str | None = None,
    ) -> Summary:
        if group_by not in GROUP_BY_VALUES:
            raise ValueError(f"group_by must be one of {', '.join(GROUP_BY_VALUES)}")
        where, params = self._window(since, until, key)
        aggregates = (
            "COUNT(*) AS requests, COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS errors,"
            " COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens,"
            " COALESCE(SUM(cache_read_tokens), 0) AS cache_read_tokens,"
            " COALESCE(SUM(cache_creation_tokens), 0) AS cache_creation_tokens,"
            " COALESCE(SUM(cost_usd), 0.0) AS cost_usd"
        )
        dialect = self.db.dialect if self.db is not None else "sqlite"
        bucket = _GROUP_SQL.get(group_by) or _BUCKET_SQL[dialect][group_by]
        if "?" in bucket:
            params = [_utc_offset(), *params]
        rows = self._query(
            f"SELECT {bucket} AS bucket, {aggregates} FROM requests WHERE {where} GROUP BY bucket ORDER BY bucket",  # noqa: S608 - constant SQL
            params,
        )
        series = [(str(row["bucket"]), _totals(row)) for row in rows]
        if group_by in ("model", "key"):
            series.sort(key=lambda item: (-item[1].requests, item[0]))
        total = Totals(
            requests=sum(t.requests for _, t in series),
            errors=sum(t.errors for _, t in series),
            input_tokens=sum(t.input_tokens for _, t in series),
            output_tokens=sum(t.output_tokens for _, t in series),
            cache_read_tokens=sum(t.cache_read_tokens for _, t in series),
            cache_creation_tokens=sum(t.cache_creation_tokens for _, t in series),
            cost_usd=sum(t.cost_usd for _, t in series),
        )
        return Summary(group_by=group_by, totals=total, series=series)

    def percentiles(
        self, since: float | None = None, until: float | None = None, key: str | None = None
    ) -> dict[str, Percentiles]:
        where, params = self._window(since, until, key)
        out: dict[str, Percentiles] = {}
        for column in ("duration_ms", "ttft_ms"):
            rows = self._query(
                f"SELECT {column} FROM requests WHERE {where} AND {column} IS NOT NULL ORDER BY {column}",  # noqa: S608
                params,
            )
            values = [float(row[column]) for row in rows]
            out[column] = Percentiles(_nearest_rank(values, 50), _nearest_rank(values, 95), len(values))
        return out

    def report(
        self, since: float | None = None, until: float | None = None, group_by: GroupBy = "day", recent: int = 20,
        key: str | None = None,
    ) -> dict[str, Any]:
        """Everything ``GET /usage`` and ``claude-code-proxy usage --json`` answer; ``key``
        keeps only the requests made with that key's name."""
        summary = self.summary(since, until, group_by, key)
        return {
            "since": since,
            "until": until,
            "key": key,
            **summary.as_json(),
            "percentiles": {name: p.as_json() for name, p in self.percentiles(since, until, key).items()},
            "recent": [rec.as_json() for rec in self.recent(recent, key)] if recent > 0 else [],
            "ledger": {
                "enabled": self.enabled,
                "retention_days": self.retention_days,
                "write_errors": self.write_errors,
                "dropped": self.dropped,
            },
        }

    def recent(self, limit: int = 20, key: str | None = None) -> list[UsageRecord]:
        where, params = self._window(None, None, key)
        rows = self._query(
            f"SELECT {', '.join(_COLUMNS)} FROM requests WHERE {where} ORDER BY ts DESC, id DESC LIMIT ?",  # noqa: S608
            [*params, max(0, limit)],
        )
        return [_record(row) for row in rows]


def _totals(row: Row) -> Totals:
    return Totals(
        requests=int(row["requests"]),
        errors=int(row["errors"]),
        input_tokens=int(row["input_tokens"]),
        output_tokens=int(row["output_tokens"]),
        cache_read_tokens=int(row["cache_read_tokens"]),
        cache_creation_tokens=int(row["cache_creation_tokens"]),
        cost_usd=float(row["cost_usd"]),
    )


def _row(rec: UsageRecord) -> tuple[object, ...]:
    # ``stream`` is an integer column in both dialects.
    return tuple(int(rec.stream) if name == "stream" else getattr(rec, name) for name in _COLUMNS)


def _record(row: Row) -> UsageRecord:
    values = {name: row[name] for name in _COLUMNS}
    values["stream"] = bool(values["stream"])
    return UsageRecord(**values)
