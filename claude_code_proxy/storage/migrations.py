"""The schema, one versioned step at a time, for each dialect.

Step N of ``SQLITE`` and step N of ``POSTGRESQL`` make the same tables; a test checks that
both lists are as long and end in the same tables and columns.  Each step runs in its own
transaction, under a lock, re-reading the version first: two replicas starting at once
apply each step exactly once.  Never edit a released step: add the next one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from claude_code_proxy.storage.database import Database

Steps = tuple[tuple[str, ...], ...]

SQLITE: Steps = (
    # v1: the request table, indexed by time.
    (
        """CREATE TABLE requests (
            id INTEGER PRIMARY KEY,
            ts REAL NOT NULL,
            surface TEXT NOT NULL,
            route TEXT NOT NULL,
            model_requested TEXT NOT NULL,
            model_used TEXT NOT NULL,
            stream INTEGER NOT NULL,
            status INTEGER NOT NULL,
            error_kind TEXT,
            duration_ms REAL NOT NULL,
            ttft_ms REAL,
            input_tokens INTEGER NOT NULL DEFAULT 0,
            output_tokens INTEGER NOT NULL DEFAULT 0,
            cache_read_tokens INTEGER NOT NULL DEFAULT 0,
            cache_creation_tokens INTEGER NOT NULL DEFAULT 0,
            cost_usd REAL,
            request_id TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX requests_ts ON requests (ts)",
    ),
    # v2: the client name; rows written before it read as "unknown".
    ("ALTER TABLE requests ADD COLUMN client TEXT NOT NULL DEFAULT 'unknown'",),
    # v3: the model name the request resolved to (handed to the CLI). Older rows read as '':
    # until v3, model_used held that name when no model answered, so theirs still show it.
    ("ALTER TABLE requests ADD COLUMN model_resolved TEXT NOT NULL DEFAULT ''",),
    # v4: named API keys (digests only), the key's name on each request, and the shared
    # state of per-key limits: admissions of the last minute, and running requests' leases.
    (
        "ALTER TABLE requests ADD COLUMN key_name TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX requests_key_ts ON requests (key_name, ts)",
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            rpm INTEGER,
            concurrency INTEGER,
            tokens_per_day INTEGER,
            usd_per_day REAL,
            usd_per_month REAL,
            revoked_at REAL
        )""",
        "CREATE TABLE key_admissions (key_name TEXT NOT NULL, ts REAL NOT NULL)",
        "CREATE INDEX key_admissions_key_ts ON key_admissions (key_name, ts)",
        "CREATE TABLE key_leases (lease_id TEXT PRIMARY KEY, key_name TEXT NOT NULL, expires_at REAL NOT NULL)",
        "CREATE INDEX key_leases_key ON key_leases (key_name, expires_at)",
    ),
)

POSTGRESQL: Steps = (
    (
        """CREATE TABLE requests (
            id BIGSERIAL PRIMARY KEY,
            ts DOUBLE PRECISION NOT NULL,
            surface TEXT NOT NULL,
            route TEXT NOT NULL,
            model_requested TEXT NOT NULL,
            model_used TEXT NOT NULL,
            stream INTEGER NOT NULL,
            status INTEGER NOT NULL,
            error_kind TEXT,
            duration_ms DOUBLE PRECISION NOT NULL,
            ttft_ms DOUBLE PRECISION,
            input_tokens BIGINT NOT NULL DEFAULT 0,
            output_tokens BIGINT NOT NULL DEFAULT 0,
            cache_read_tokens BIGINT NOT NULL DEFAULT 0,
            cache_creation_tokens BIGINT NOT NULL DEFAULT 0,
            cost_usd DOUBLE PRECISION,
            request_id TEXT NOT NULL DEFAULT ''
        )""",
        "CREATE INDEX requests_ts ON requests (ts)",
    ),
    ("ALTER TABLE requests ADD COLUMN client TEXT NOT NULL DEFAULT 'unknown'",),
    ("ALTER TABLE requests ADD COLUMN model_resolved TEXT NOT NULL DEFAULT ''",),
    (
        "ALTER TABLE requests ADD COLUMN key_name TEXT NOT NULL DEFAULT ''",
        "CREATE INDEX requests_key_ts ON requests (key_name, ts)",
        """CREATE TABLE api_keys (
            name TEXT PRIMARY KEY,
            digest TEXT NOT NULL UNIQUE,
            created_at DOUBLE PRECISION NOT NULL,
            rpm INTEGER,
            concurrency INTEGER,
            tokens_per_day BIGINT,
            usd_per_day DOUBLE PRECISION,
            usd_per_month DOUBLE PRECISION,
            revoked_at DOUBLE PRECISION
        )""",
        "CREATE TABLE key_admissions (key_name TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX key_admissions_key_ts ON key_admissions (key_name, ts)",
        "CREATE TABLE key_leases (lease_id TEXT PRIMARY KEY, key_name TEXT NOT NULL,"
        " expires_at DOUBLE PRECISION NOT NULL)",
        "CREATE INDEX key_leases_key ON key_leases (key_name, expires_at)",
    ),
)

SCHEMA_VERSION = len(SQLITE)
STEPS = {"sqlite": SQLITE, "postgresql": POSTGRESQL}
LOCK_NAME = "claude-code-proxy:schema"


def schema_version(db: Database, conn: Any) -> int:
    db.execute(conn, "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = db.execute(conn, "SELECT MAX(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(db: Database, conn: Any, target: int = SCHEMA_VERSION) -> int:
    """Bring the schema up to ``target``; returns the version found before."""
    steps = STEPS[db.dialect]
    with db.transaction(conn):  # even the version table is created under the lock
        db.lock(conn, LOCK_NAME)
        found = schema_version(db, conn)
    for version in range(found + 1, target + 1):
        with db.transaction(conn):
            db.lock(conn, LOCK_NAME)
            if schema_version(db, conn) >= version:
                continue  # another process applied it while this one waited
            for statement in steps[version - 1]:
                db.execute(conn, statement)
            db.execute(conn, "DELETE FROM schema_version")
            db.execute(conn, "INSERT INTO schema_version (version) VALUES (?)", (version,))
    return found
