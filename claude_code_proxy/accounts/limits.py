"""The server's side of named keys: a cache of the keys for the guard, and the per-request
hold on a key's limits for the exchange.  The database work runs in worker threads.

``KeyCache`` reloads the keys when they are older than ``refresh_s`` (half a second), at
the next request that needs them: a key added or revoked with the ``keys`` command, on
this replica or another, takes effect within a second, without a restart.  If the
database cannot be read, the last keys read stay in force and the failure is logged.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import anyio
import structlog

from claude_code_proxy.accounts.keys import ApiKey
from claude_code_proxy.accounts.store import KeySnapshot, KeyStore, Lease

log = structlog.get_logger(__name__)

REFRESH_S = 0.5


class KeyCache:
    def __init__(
        self, store: KeyStore | None, refresh_s: float = REFRESH_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.clock = clock
        self._snapshot = KeySnapshot({}, in_use=False)
        self._loaded_at: float | None = None
        self._lock = anyio.Lock()

    async def snapshot(self) -> KeySnapshot:
        """The named keys (by digest, hex) and whether any was ever added; at most
        ``refresh_s`` old."""
        if self.store is not None and self._stale():
            async with self._lock:
                if self._stale():  # another request may have reloaded while this one waited
                    await self._reload(self.store)
        return self._snapshot

    async def keys(self) -> dict[str, ApiKey]:
        return (await self.snapshot()).keys

    async def lookup(self, key_digest: bytes) -> ApiKey | None:
        return (await self.keys()).get(key_digest.hex())

    def _stale(self) -> bool:
        return self._loaded_at is None or self.clock() - self._loaded_at >= self.refresh_s

    async def _reload(self, store: KeyStore) -> None:
        try:
            self._snapshot = await anyio.to_thread.run_sync(store.snapshot)
        except Exception as exc:
            log.error("keys.reload_failed", error_class=type(exc).__name__, error=str(exc)[:200])
        self._loaded_at = self.clock()


class KeyLimits:
    """Holds a request's place under its key's limits for as long as it runs."""

    def __init__(self, store: KeyStore | None, lease_seconds: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds

    @asynccontextmanager
    async def hold(self, key: ApiKey | None) -> AsyncIterator[None]:
        """Admit the request under ``key``'s limits (KeyLimitError if one is reached), and
        release its concurrency lease when the block ends, however it ends."""
        store = self.store
        if store is None or key is None or not key.limits.any:
            yield
            return
        lease: Lease = await anyio.to_thread.run_sync(store.admit, key, self.lease_seconds)
        try:
            yield
        finally:
            if lease.lease_id is not None:
                with anyio.CancelScope(shield=True):
                    try:
                        await anyio.to_thread.run_sync(store.release, lease)
                    except Exception as exc:  # the lease expires on its own
                        log.error("keys.release_failed", key=key.name, error_class=type(exc).__name__)


__all__ = ["KeyCache", "KeyLimits"]
