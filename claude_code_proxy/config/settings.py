"""The one Settings class.

Values come from the environment (prefix ``CLAUDE_PROXY_``), then ``.env``, then the
defaults below, then auto-detection (the CLI path).  ``.env.example`` and
``docs/configuration.md`` are checked against this class by the test suite.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_MODELS = [
    "claude-opus-5-5",
    "claude-sonnet-5-5",
    "claude-haiku-5-5",
    "claude-haiku-4-5",
]

DEFAULT_MODEL_ALIASES = {
    "gpt-4o": "sonnet",
    "gpt-4o-mini": "haiku",
    "gpt-4.1": "sonnet",
    "gpt-4.1-mini": "haiku",
    "gpt-4.1-nano": "haiku",
    "gpt-4": "sonnet",
    "gpt-4-turbo": "sonnet",
    "gpt-3.5-turbo": "haiku",
    "gpt-5": "opus",
    "gpt-5-mini": "sonnet",
    "gpt-5-nano": "haiku",
    "gpt-5.5": "opus",  # Codex CLI's default profile (README: Codex CLI)
    "o1": "opus",
    "o3": "opus",
    "o3-mini": "sonnet",
    "o4-mini": "sonnet",
}


def _split_list(value: object) -> object:
    """Accept a JSON list or a plain comma-separated string for list settings."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("["):
            return json.loads(stripped)
        return [item.strip() for item in stripped.split(",") if item.strip()]
    return value


def _split_mapping(value: object) -> object:
    """Accept a JSON object or ``name=target,name=target`` for mapping settings."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            return json.loads(stripped)
        pairs = [item.split("=", 1) for item in stripped.split(",") if "=" in item]
        return {key.strip(): target.strip() for key, target in pairs}
    return value


class Settings(BaseSettings):
    """Every setting of the proxy; each field's description is its one-line meaning."""

    model_config = SettingsConfigDict(
        env_prefix="CLAUDE_PROXY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    host: str = Field("127.0.0.1", description="Address to bind; anything but loopback needs API_KEY.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port to listen on.")
    api_key: SecretStr | None = Field(
        None, description="Key clients must send (Bearer or x-api-key); empty means no key."
    )
    cli_path: str | None = Field(
        None, description="Claude Code CLI to run; empty means the SDK's bundled CLI, then `claude` on PATH."
    )
    default_model: str = Field("sonnet", description="Model used when a request names none.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_MODELS),
        description="Models listed by /v1/models (comma-separated or a JSON list).",
    )
    model_aliases: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: dict(DEFAULT_MODEL_ALIASES),
        description="Extra model names mapped to Claude models (name=target,... or a JSON object).",
    )
    request_timeout: float = Field(
        600.0, gt=0, description="Seconds a request may take in total before it fails with 504."
    )
    cli_max_retries: int = Field(
        0, ge=0, le=10, description="Retries the CLI itself makes on upstream 429/5xx, each a further upstream "
        "request (0: exactly one upstream request per client request; the proxy adds none).",
    )
    upstream_gate: bool = Field(
        True, description="Relay the CLIs' API calls through the proxy, so that one request makes at most one "
        "model call upstream (false: the CLIs call upstream directly, and may add a call after an answer cut at "
        "max_tokens).",
    )
    default_max_tokens: int = Field(
        4096, ge=1, description="max_tokens used on the OpenAI and Ollama surfaces when the client sends none."
    )
    max_tokens_limit: int = Field(128000, ge=1, description="Largest max_tokens a request may ask for.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins allowed to call the API (comma-separated); none by default."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra Host header names accepted besides localhost/127.0.0.1/[::1] (DNS-rebinding guard).",
    )
    max_concurrency: int = Field(4, ge=1, le=64, description="CLI processes running at once, at most.")
    queue_size: int = Field(16, ge=0, description="Requests that may wait for a free CLI slot; beyond it, 503.")
    queue_timeout: float = Field(30.0, gt=0, description="Seconds a request may wait in the queue before a 503.")
    first_event_timeout: float = Field(
        120.0, gt=0, description="Seconds to wait for the model's first event before a 504."
    )
    idle_timeout: float = Field(120.0, gt=0, description="Seconds allowed between two stream events before a 504.")
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 beyond).")
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's headers; the connection is closed after."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds a client has to send a request's body once its headers are in (408 after)."
    )
    max_connections: int = Field(
        256, ge=8, description="Open client connections at most; any beyond are answered 503 and closed at once."
    )
    max_messages: int = Field(2000, ge=1, description="Most messages one request may carry.")
    shutdown_grace: float = Field(
        10.0, ge=0, description="Seconds in-flight requests get to finish after SIGTERM."
    )
    warm_pool_size: int | None = Field(
        None, ge=0, le=64, description="CLI processes kept ready between requests, pre-started or reused "
        "(0 disables the pool; empty: one per CPU core, since two busy CLIs fill two cores).",
    )
    warm_pool_keys: int = Field(4, ge=1, description="Distinct request configurations the warm pool keeps.")
    warm_pool_idle: float = Field(300.0, gt=0, description="Seconds an unused warm process lives.")
    cli_reuse: bool = Field(
        True, description="Reuse a CLI for further requests of the same configuration, reset exactly "
        "between requests (false: every CLI serves one request).",
    )
    cli_max_requests: int = Field(200, ge=1, description="Requests one reused CLI serves before it is retired.")
    cli_max_age: float = Field(3600.0, gt=0, description="Seconds a reused CLI lives before it is retired.")
    cli_max_rss_mb: int = Field(1024, ge=64, description="Memory (RSS, MiB) beyond which a reused CLI is retired.")
    response_store_max_entries: int = Field(
        1000, ge=0, description="Responses kept in memory for previous_response_id (0 stores none)."
    )
    response_store_max_age: float = Field(
        3600.0, gt=0, description="Seconds a stored response stays retrievable (memory only, never on disk)."
    )
    usage_db: str = Field(
        "~/.local/share/claude-code-proxy/usage.db",
        description="SQLite file of the local usage ledger; empty disables the ledger.",
    )
    usage_retention_days: int = Field(90, ge=1, description="Days of ledger rows kept.")
    database_url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host/db) shared by replicas; empty means USAGE_DB.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level (DEBUG logs request metadata in more detail, never secrets)."
    )
    log_format: Literal["console", "json"] = Field(
        "console", description="Log line format: console for people, json for machines."
    )

    @field_validator("models", mode="before")
    @classmethod
    def _parse_models(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("cors_origins", "allowed_hosts", mode="before")
    @classmethod
    def _parse_lists(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("model_aliases", mode="before")
    @classmethod
    def _parse_aliases(cls, value: object) -> object:
        # The configured table extends (and may override) the built-in one.
        parsed = _split_mapping(value)
        return {**DEFAULT_MODEL_ALIASES, **parsed} if isinstance(parsed, dict) else parsed

    @field_validator("api_key", "cli_path", "warm_pool_size", "database_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @property
    def pool_size(self) -> int:
        """``warm_pool_size``, or one per CPU core when unset."""
        if self.warm_pool_size is not None:
            return self.warm_pool_size
        return max(2, min(16, os.cpu_count() or 2))

    def resolved_cli_path(self) -> str | None:
        """The CLI this proxy will run, or None when none can be found."""
        if self.cli_path:
            return self.cli_path
        return find_cli()


def is_loopback(host: str) -> bool:
    """Is ``host`` (a bind address or Host name) reachable only from this machine?"""
    bare = host.strip().strip("[]").lower()
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def find_cli() -> str | None:
    """The SDK's bundled CLI first, then ``claude`` on PATH."""
    # Located without importing it: only the Claude client service imports the SDK.
    spec = importlib.util.find_spec("claude_agent_sdk")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "_bundled" / "claude"
        if bundled.is_file():
            return str(bundled)
    return shutil.which("claude")


@lru_cache
def get_settings() -> Settings:
    return Settings()
