"""A throwaway PostgreSQL server for the tests: ``initdb`` and ``pg_ctl`` from the
``postgresql`` system package, a cluster in a temporary directory, listening on a free
port on 127.0.0.1 only, trust authentication for local connections, stopped on exit.

PostgreSQL refuses to run as root; when the tests run as root, the server runs as the
``postgres`` system user the package creates (``runuser``).  ``scripts/install-test-deps.sh``
installs the package.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.proxy_process import free_port

MISSING = "PostgreSQL server binaries not found (run scripts/install-test-deps.sh to install the postgresql package)"


def server_bin() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``, newest version first."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        if (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a cluster; yields the URL of a fresh database in it."""
    binaries = server_bin()
    if binaries is None:
        raise RuntimeError(MISSING)
    # The server user must reach the directory: a test session's own temp dir is root's only.
    root = Path(tempfile.mkdtemp(prefix="ccp-pg-", dir="/tmp" if os.geteuid() == 0 else None))
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if os.geteuid() == 0:
        server_user = pwd.getpwnam("postgres")
        for path in (root, sockets):
            os.chown(path, server_user.pw_uid, server_user.pw_gid)
    port = free_port()
    log = root / "server.log"
    try:
        _run(_as_server_user([str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                        "-E", "UTF8", "--no-sync"]),
                       timeout=120)
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off -c max_connections=200"
        _run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
                              "-w", "-t", "60", "start"]), timeout=120)
        name = "ccp_" + uuid.uuid4().hex[:8]
        _run(_as_server_user([str(binaries / "createdb"), "-h", "127.0.0.1", "-p", str(port),
                              "-U", "postgres", name]), timeout=60)
        yield f"postgresql://postgres@127.0.0.1:{port}/{name}"
    finally:
        if (data / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w",
                                            "stop"]), capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)


def _run(command: list[str], timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{Path(command[-1]).name if command else ''} failed ({done.returncode}): "
                           f"{(done.stderr or done.stdout)[-2000:]}")


def new_database(url: str) -> str:
    """Another empty database on the same server (tests that must not see each other's rows)."""
    import psycopg

    name = "ccp_" + uuid.uuid4().hex[:8]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name
