"""Where the ledger, the named keys and the limit counters live: a SQLite file or PostgreSQL.

``open_database(location)`` takes ``CLAUDE_PROXY_DATABASE_URL`` (``postgresql://...``) or,
when that is empty, the ``CLAUDE_PROXY_USAGE_DB`` file path (``sqlite:///path`` also works),
prepares it (file mode, WAL, migrations) and returns a ``Database``.  Callers write their
SQL once, with ``?`` placeholders and portable SQL; ``db.sql()`` turns it into the driver's
form, and the few statements that differ come from ``db.dialect``.

Connections are DB-API connections in autocommit mode; ``transaction()`` is the one way
to group statements.  On SQLite a transaction takes the write lock up front (``BEGIN
IMMEDIATE``), so every transaction is serialized across processes sharing the file; on
PostgreSQL, ``lock()`` takes a transaction-scoped advisory lock on a name, which is what
makes a key's limits hold across replicas.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import structlog

from claude_code_proxy.storage import migrations

log = structlog.get_logger(__name__)

Dialect = Literal["sqlite", "postgresql"]
Row = dict[str, Any]


class DatabaseError(Exception):
    """The database cannot be opened or prepared (the message never carries a password)."""


class Database:
    dialect: Dialect
    description: str
    """Where it is, for logs and messages: a path, or a URL without its password."""

    def connect(self) -> Any:
        raise NotImplementedError

    def sql(self, text: str) -> str:
        return text

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def lock(self, conn: Any, name: str) -> None:
        """Inside a transaction: wait until no other transaction holds ``name``."""

    @contextmanager
    def transaction(self, conn: Any) -> Iterator[None]:
        # Explicit, because connections here are in autocommit mode.
        self.begin(conn)
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def execute(self, conn: Any, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> Any:
        return conn.execute(self.sql(sql), tuple(params))

    def rows(self, conn: Any, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        cursor = self.execute(conn, sql, params)
        names = [column[0] for column in cursor.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def query(self, sql: str, params: tuple[Any, ...] | list[Any] = ()) -> list[Row]:
        """One read on a short-lived connection of its own."""
        with self.connection() as conn:
            return self.rows(conn, sql, params)

    @contextmanager
    def connection(self) -> Iterator[Any]:
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    def prepare(self) -> None:
        with self.connection() as conn:
            found = migrations.migrate(self, conn)
        if found > migrations.SCHEMA_VERSION:
            raise DatabaseError(f"schema version {found} is newer than this proxy's {migrations.SCHEMA_VERSION}")
        if 0 < found < migrations.SCHEMA_VERSION:
            log.info("database.migrated", from_version=found, to_version=migrations.SCHEMA_VERSION)


class SQLiteDatabase(Database):
    dialect: Dialect = "sqlite"

    def __init__(self, path: str) -> None:
        self.path = str(Path(path).expanduser())
        self.description = self.path

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=True)
        conn.execute("PRAGMA busy_timeout = 10000")
        return conn

    def begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def prepare(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Created owner-only before SQLite opens it; SQLite gives -wal/-shm the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        os.chmod(path, 0o600)
        with self.connection() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
        super().prepare()


class PostgresDatabase(Database):
    dialect: Dialect = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self.description = redact(url)

    def connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.url, autocommit=True, connect_timeout=10)

    def sql(self, text: str) -> str:
        # Portable SQL uses ``?``; psycopg wants ``%s`` and a literal ``%`` doubled.
        return text.replace("%", "%%").replace("?", "%s")

    def lock(self, conn: Any, name: str) -> None:
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))


def redact(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def is_postgres_url(location: str) -> bool:
    return location.split(":", 1)[0].lower() in ("postgresql", "postgres", "postgresql+psycopg")


def open_database(location: str | None) -> Database | None:
    """The prepared database at ``location`` (a PostgreSQL URL or a SQLite path), or None
    when ``location`` is empty.  Raises DatabaseError when it cannot be opened."""
    location = (location or "").strip()
    if not location:
        return None
    db: Database
    if is_postgres_url(location):
        scheme, rest = location.split(":", 1)
        db = PostgresDatabase("postgresql:" + rest if scheme.lower() != "postgresql" else location)
    else:
        db = SQLiteDatabase(location.removeprefix("sqlite://") if location.startswith("sqlite:///") else location)
    try:
        db.prepare()
    except DatabaseError:
        raise
    except Exception as exc:  # sqlite3, psycopg and OS errors alike
        message = str(exc).replace(getattr(db, "url", "\0"), db.description)[:300]
        raise DatabaseError(f"cannot open the database at {db.description}: {type(exc).__name__}: {message}") from None
    return db


__all__ = ["Database", "DatabaseError", "PostgresDatabase", "Row", "SQLiteDatabase", "is_postgres_url",
           "open_database", "redact"]
