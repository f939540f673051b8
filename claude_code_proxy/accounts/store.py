"""Named keys and their limit counters, in the ledger's database.  Synchronous: the server
calls it from worker threads (accounts/limits.py), the ``keys`` command directly.

Admission is one transaction per request, under a lock on the key's name, so a key's
limits hold exactly however many replicas share the database:

    rpm             admissions of the last 60 seconds (a sliding window, one row each)
    concurrency     leases of running requests (deleted when the request ends; a lease
                    left by a replica that died expires after the longest a request may take)
    tokens/USD      sums of the key's ledger rows since the start of the local day or month

The token and cost sums see requests once they are recorded, so requests already
running when a budget runs out still finish: a budget can be passed by what was in flight.
"""

from __future__ import annotations

import datetime
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from claude_code_proxy.accounts.keys import LIMIT_LABELS, LIMIT_NAMES, ApiKey, Limits, check_name, digest, new_key
from claude_code_proxy.exceptions import KeyLimitError
from claude_code_proxy.storage.database import Database, Row

RPM_WINDOW_S = 60.0


class KeyExistsError(ValueError):
    pass


@dataclass(frozen=True)
class KeySnapshot:
    keys: dict[str, ApiKey]
    """The keys in force, by the hex SHA-256 digest of the key."""
    in_use: bool
    """Any key was ever added (revoked ones count): keys stay required after the last is revoked."""


class NoSuchKeyError(KeyError):
    pass


@dataclass(frozen=True)
class Lease:
    lease_id: str | None
    key_name: str


def day_start(now: float) -> float:
    """The start of ``now``'s local day (epoch seconds)."""
    moment = datetime.datetime.fromtimestamp(now)
    return datetime.datetime.combine(moment.date(), datetime.time.min).timestamp()


def next_day_start(now: float) -> float:
    moment = datetime.datetime.fromtimestamp(now)
    tomorrow = moment.date() + datetime.timedelta(days=1)
    return datetime.datetime.combine(tomorrow, datetime.time.min).timestamp()


def month_start(now: float) -> float:
    moment = datetime.datetime.fromtimestamp(now)
    return datetime.datetime(moment.year, moment.month, 1).timestamp()


def next_month_start(now: float) -> float:
    moment = datetime.datetime.fromtimestamp(now)
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return datetime.datetime(year, month, 1).timestamp()


def _limits(row: Row) -> Limits:
    return Limits(**{name: row[name] for name in LIMIT_NAMES})


class KeyStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    # -- management (the ``keys`` command) -----------------------------------------------
    def add(self, name: str, limits: Limits | None = None) -> str:
        """Store a new key named ``name``; returns the key, which is never stored."""
        check_name(name)
        limits = limits or Limits()
        key = new_key()
        db = self.db
        columns = ("name", "digest", "created_at", *LIMIT_NAMES)
        values = (name, digest(key).hex(), self.clock(), *(getattr(limits, n) for n in LIMIT_NAMES))
        with db.connection() as conn, db.transaction(conn):
            if db.rows(conn, "SELECT name FROM api_keys WHERE name = ? AND revoked_at IS NULL", (name,)):
                raise KeyExistsError(f"a key named {name!r} exists already (revoke it first)")
            db.execute(conn, "DELETE FROM api_keys WHERE name = ?", (name,))  # a revoked key of that name
            db.execute(conn, f"INSERT INTO api_keys ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608 - constant columns
                       values)
        return key

    def list(self) -> list[ApiKey]:
        rows = self.db.query(f"SELECT name, created_at, {', '.join(LIMIT_NAMES)} FROM api_keys"  # noqa: S608
                             " WHERE revoked_at IS NULL ORDER BY name")
        return [ApiKey(row["name"], _limits(row), float(row["created_at"])) for row in rows]

    def revoke(self, name: str) -> bool:
        db = self.db
        with db.connection() as conn, db.transaction(conn):
            # Kept as a revoked row (digest and all): keys stay required once any was added.
            gone = db.execute(conn, "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                              (self.clock(), name)).rowcount
            db.execute(conn, "DELETE FROM key_admissions WHERE key_name = ?", (name,))
            db.execute(conn, "DELETE FROM key_leases WHERE key_name = ?", (name,))
        return bool(gone)

    def set_limits(self, name: str, changes: dict[str, Any]) -> ApiKey:
        """Change some of a key's limits (None removes one); the others stay."""
        db = self.db
        with db.connection() as conn, db.transaction(conn):
            rows = db.rows(conn, f"SELECT name, created_at, {', '.join(LIMIT_NAMES)} FROM api_keys"  # noqa: S608
                           " WHERE name = ? AND revoked_at IS NULL", (name,))
            if not rows:
                raise NoSuchKeyError(name)
            limits = _limits(rows[0]).updated(changes)
            assignments = ", ".join(f"{n} = ?" for n in LIMIT_NAMES)
            db.execute(conn, f"UPDATE api_keys SET {assignments} WHERE name = ?",  # noqa: S608 - constant columns
                       (*(getattr(limits, n) for n in LIMIT_NAMES), name))
        return ApiKey(name, limits, float(rows[0]["created_at"]))

    # -- the server ----------------------------------------------------------------------
    def active(self) -> dict[str, ApiKey]:
        """Every key in force, by the hex SHA-256 digest of the key."""
        return self.snapshot().keys

    def snapshot(self) -> KeySnapshot:
        rows = self.db.query(f"SELECT name, digest, created_at, revoked_at, {', '.join(LIMIT_NAMES)} FROM api_keys")  # noqa: S608
        keys = {row["digest"]: ApiKey(row["name"], _limits(row), float(row["created_at"]))
                for row in rows if row["revoked_at"] is None}
        return KeySnapshot(keys, bool(rows))

    def admit(self, key: ApiKey, lease_seconds: float) -> Lease:
        """Count one request against ``key``'s limits, or raise KeyLimitError naming the one
        it would break (with how long until it would not)."""
        db, limits, name = self.db, key.limits, key.name
        lease_id: str | None = None
        with db.connection() as conn, db.transaction(conn):
            db.lock(conn, f"key:{name}")
            now = self.clock()
            if limits.rpm is not None:
                db.execute(conn, "DELETE FROM key_admissions WHERE key_name = ? AND ts <= ?",
                           (name, now - RPM_WINDOW_S))
                [row] = db.rows(conn, "SELECT COUNT(*) AS n, MIN(ts) AS oldest FROM key_admissions WHERE key_name = ?",
                                (name,))
                if int(row["n"]) >= limits.rpm:
                    oldest = float(row["oldest"]) if row["oldest"] is not None else now
                    raise self._refused(key, "rpm", limits.rpm, oldest + RPM_WINDOW_S - now)
            if limits.concurrency is not None:
                db.execute(conn, "DELETE FROM key_leases WHERE key_name = ? AND expires_at <= ?", (name, now))
                [row] = db.rows(conn, "SELECT COUNT(*) AS n FROM key_leases WHERE key_name = ?", (name,))
                if int(row["n"]) >= limits.concurrency:
                    raise self._refused(key, "concurrency", limits.concurrency, 1.0)
            self._check_budgets(conn, key, now)
            if limits.rpm is not None:
                db.execute(conn, "INSERT INTO key_admissions (key_name, ts) VALUES (?, ?)", (name, now))
            if limits.concurrency is not None:
                lease_id = uuid.uuid4().hex
                db.execute(conn, "INSERT INTO key_leases (lease_id, key_name, expires_at) VALUES (?, ?, ?)",
                           (lease_id, name, now + lease_seconds))
        return Lease(lease_id, name)

    def release(self, lease: Lease) -> None:
        if lease.lease_id is None:
            return
        with self.db.connection() as conn:
            self.db.execute(conn, "DELETE FROM key_leases WHERE lease_id = ?", (lease.lease_id,))

    def _check_budgets(self, conn: Any, key: ApiKey, now: float) -> None:
        limits = key.limits
        if limits.tokens_per_day is not None or limits.usd_per_day is not None:
            tokens, usd = self._spent(conn, key.name, day_start(now))
            wait = next_day_start(now) - now
            if limits.tokens_per_day is not None and tokens >= limits.tokens_per_day:
                raise self._refused(key, "tokens_per_day", limits.tokens_per_day, wait)
            if limits.usd_per_day is not None and usd >= limits.usd_per_day:
                raise self._refused(key, "usd_per_day", limits.usd_per_day, wait)
        if limits.usd_per_month is not None:
            _, usd = self._spent(conn, key.name, month_start(now))
            if usd >= limits.usd_per_month:
                raise self._refused(key, "usd_per_month", limits.usd_per_month, next_month_start(now) - now)

    def _spent(self, conn: Any, name: str, since: float) -> tuple[int, float]:
        [row] = self.db.rows(
            conn,
            "SELECT COALESCE(SUM(input_tokens + output_tokens + cache_read_tokens + cache_creation_tokens), 0)"
            " AS tokens, COALESCE(SUM(cost_usd), 0.0) AS usd FROM requests WHERE key_name = ? AND ts >= ?",
            (name, since),
        )
        return int(row["tokens"]), float(row["usd"])

    @staticmethod
    def _refused(key: ApiKey, limit: str, value: float, retry_after: float) -> KeyLimitError:
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        return KeyLimitError(
            f"The API key {key.name!r} has reached its limit of {shown} {LIMIT_LABELS[limit]}; "
            f"retry in {max(1, round(retry_after))} s.",
            limit=limit,
            retry_after=max(1.0, retry_after),
        )


__all__ = ["KeyExistsError", "KeySnapshot", "KeyStore", "Lease", "NoSuchKeyError", "day_start", "month_start"]
