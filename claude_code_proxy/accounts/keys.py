"""Named API keys and their limits: what a key is, how it is made, hashed and named.  Pure.

A key is ``ccp_`` and 43 URL-safe characters (256 random bits).  Only its SHA-256 digest
is stored: the key itself is shown once, when it is made.  A plain digest is enough for
a secret this random (nobody can guess their way to a preimage); a slow password hash
would only cost every request time.

The single ``CLAUDE_PROXY_API_KEY`` setting keeps working beside named keys; its requests
carry the name ``default``, which ``keys add`` therefore refuses.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, fields
from typing import Any

PREFIX = "ccp_"
SETTING_KEY_NAME = "default"
"""The name requests made with the ``CLAUDE_PROXY_API_KEY`` setting carry."""
NAME_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def check_name(name: str) -> str:
    """``name`` if it is a valid key name; ValueError saying why not."""
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(
            "a key name is 1-64 characters: lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if name == SETTING_KEY_NAME:
        raise ValueError(f"{SETTING_KEY_NAME!r} is the name of the CLAUDE_PROXY_API_KEY setting's key")
    return name


@dataclass(frozen=True)
class Limits:
    """A key's limits; None means no limit.  Days and months are the server's local calendar."""

    rpm: int | None = None
    """Requests admitted in any 60 seconds."""
    concurrency: int | None = None
    """Requests running at once."""
    tokens_per_day: int | None = None
    """Tokens (input, output, cache reads and writes) recorded today."""
    usd_per_day: float | None = None
    usd_per_month: float | None = None

    @property
    def any(self) -> bool:
        return any(value is not None for value in asdict(self).values())

    def as_json(self) -> dict[str, Any]:
        return asdict(self)

    def updated(self, changes: dict[str, Any]) -> Limits:
        """These limits with ``changes`` applied (a value of None removes that limit)."""
        return Limits(**{**asdict(self), **changes})


LIMIT_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Limits))

# How each limit is named to people: in 429 messages and the ``keys`` command's flags.
LIMIT_LABELS: dict[str, str] = {
    "rpm": "requests per minute (--rpm)",
    "concurrency": "concurrent requests (--concurrency)",
    "tokens_per_day": "tokens per day (--tokens-per-day)",
    "usd_per_day": "USD per day (--usd-per-day)",
    "usd_per_month": "USD per month (--usd-per-month)",
}


@dataclass(frozen=True)
class ApiKey:
    """A named key as the server knows it: never the key itself."""

    name: str
    limits: Limits = Limits()
    created_at: float = 0.0


SETTING_KEY = ApiKey(SETTING_KEY_NAME)


__all__ = ["LIMIT_LABELS", "LIMIT_NAMES", "SETTING_KEY", "SETTING_KEY_NAME", "ApiKey", "Limits", "check_name",
           "digest", "new_key"]
