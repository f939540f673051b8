"""The upstream relay: every CLI's API traffic passes through the proxy, so that one client
request makes at most one model call, whatever the CLI would do on its own.

The CLI can call upstream again by itself: after an answer cut at ``max_tokens`` it asks
the model to go on (up to three times, with no switch to stop it), and it has other
recovery turns of the kind.  Killing the CLI when the proxy sees the cut is not enough: the
CLI sends its next call within milliseconds of the cut, often before the proxy has read
it.  So each CLI gets ``ANTHROPIC_BASE_URL`` pointing here, under a secret path of its own,
and its ``Gate`` decides:

- between requests, no model call goes through;
- during a request, one model call does.  Once upstream has answered it (any status below
  400) the gate is shut: a further call is answered here with a 400 and never leaves the
  machine.  A call that failed (an error status, an error event after a 200, a broken
  connection) leaves the gate open for the CLI's own retries (``CLAUDE_PROXY_CLI_MAX_RETRIES``;
  it retries 429, 529, 5xx and broken connections only).  Each opening is a generation: a
  call of an abandoned request that comes back late does not move the next one's gate.

Everything else passes through unchanged, byte for byte in both directions: method, path,
query, headers (but the hop-by-hop ones), body, and the answer as it streams, compressed or
not.  The relay listens on 127.0.0.1 only; an unknown path prefix gets a 404.  When the
upstream cannot be reached, the CLI's connection is dropped, as the upstream's would be, and
the gate keeps the reason for the error the client gets.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import secrets
import socket
import ssl
from collections.abc import Mapping
from contextlib import suppress
from dataclasses import dataclass
from urllib.parse import urlsplit

import h11
import httpcore2
import httpx2
import structlog

log = structlog.get_logger(__name__)

FIRST_PARTY = "https://api.anthropic.com"
ASSUME_FIRST_PARTY = "_CLAUDE_CODE_ASSUME_FIRST_PARTY_BASE_URL"
"""The CLI's switch for a base URL that leads to the first-party API (as the relay's does):
with it the CLI sends what it would send to api.anthropic.com itself."""
MODEL_CALL_PATH = "/v1/messages"
HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te", b"trailer",
    b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
MAX_HEAD_BYTES = 64 * 1024
READ_CHUNK = 64 * 1024
ERROR_EVENT = b"event: error"
CLI_REQUEST_TIMEOUT_S = 600.0
"""The CLI's own timeout for one API request (its ``X-Stainless-Timeout``)."""
_Out = h11.Response | h11.Data | h11.EndOfMessage


@dataclass
class Gate:
    """What one CLI may send upstream: nothing between requests, one answered model call
    during a request."""

    state: str = "shut"
    """``shut`` (no call may go), ``open`` (one may), ``calling`` (it is on its way),
    ``answered`` (upstream answered it: no further call may go)."""
    calls: int = 0
    """Model calls that went upstream since the gate last opened."""
    refused: int = 0
    """Model calls refused here since the gate last opened."""
    fault: str | None = None
    """Why the upstream could not be reached, when that is how the last call ended."""
    target: str = FIRST_PARTY
    """The upstream API's base URL, as the CLI would have called it (from its environment)."""
    generation: int = 0
    """Which opening the gate is in: what a call of an earlier one reports is ignored (a call
    still on its way when its request was abandoned must not move the next request's gate)."""

    def open(self) -> None:
        self.state, self.calls, self.refused, self.fault = "open", 0, 0, None
        self.generation += 1

    def shut(self) -> None:
        self.state = "shut"

    def admit(self) -> int | None:
        """The opening a model call goes out in, or None: refused."""
        if self.state != "open":
            self.refused += 1
            return None
        self.state, self.calls, self.fault = "calling", self.calls + 1, None
        return self.generation

    def answered(self, generation: int, status: int) -> None:
        """Upstream answered: below 400 the gate is done; an error leaves it open for the
        CLI's own retry (it retries 429, 529 and 5xx, never 400 or 403)."""
        if generation == self.generation and self.state == "calling":
            self.state = "answered" if status < 400 else "open"

    def failed(self, generation: int, reason: str | None = None) -> None:
        """The call broke before or while it was answered, or its answer was an error event:
        the CLI may retry it, as it would a refused call."""
        if generation != self.generation:
            return
        self.fault = reason
        if self.state in ("calling", "answered"):
            self.state = "open"


def tls_context(environ: Mapping[str, str]) -> ssl.SSLContext:
    """The certificates the CLI itself would trust: the HTTP client's defaults (the system's
    store, ``SSL_CERT_FILE`` or ``SSL_CERT_DIR``), plus ``NODE_EXTRA_CA_CERTS``, which a
    network that inspects TLS asks Node programs such as the CLI to add."""
    context = httpcore2.default_ssl_context()
    extra = environ.get("NODE_EXTRA_CA_CERTS")
    if extra and os.path.isfile(extra):
        with suppress(ssl.SSLError, OSError):
            context.load_verify_locations(cafile=extra)
    return context


def is_first_party(url: str | None) -> bool:
    return not url or urlsplit(url).hostname == "api.anthropic.com"


class UpstreamRelay:
    """An HTTP/1.1 relay on 127.0.0.1 for the CLIs' calls to the upstream API."""

    def __init__(self) -> None:
        self.gates: dict[str, Gate] = {}
        self._server: asyncio.Server | None = None
        self._client: httpx2.AsyncClient | None = None
        self._lock = asyncio.Lock()
        self._connections: set[asyncio.StreamWriter] = set()
        self.port = 0

    # -- life ----------------------------------------------------------------------------
    async def start(self) -> None:
        async with self._lock:
            if self._server is not None:
                return
            # No total deadline (an answer may take minutes); a silence as long as the CLI's
            # own request timeout ends a call whose CLI can no longer be told.
            self._client = httpx2.AsyncClient(
                verify=tls_context(os.environ),
                timeout=httpx2.Timeout(None, connect=30.0, read=CLI_REQUEST_TIMEOUT_S),
                limits=httpx2.Limits(max_connections=None, max_keepalive_connections=32),
                follow_redirects=False,
            )
            self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
            self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        async with self._lock:
            server, self._server = self._server, None
            if server is not None:
                server.close()
                for writer in list(self._connections):
                    writer.transport.abort()
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()  # answers still streaming break off
            if server is not None:
                with suppress(Exception):
                    await asyncio.wait_for(server.wait_closed(), 5)

    def register(self, target: str | None) -> tuple[str, Gate]:
        """A new CLI's base URL and gate (shut until its first request); its calls go on to
        ``target`` (the ``ANTHROPIC_BASE_URL`` it would have had; None: the first-party API)."""
        token = secrets.token_urlsafe(18)
        gate = self.gates[token] = Gate(target=(target or FIRST_PARTY).rstrip("/"))
        return f"http://127.0.0.1:{self.port}/{token}", gate

    def forget(self, base_url: str) -> None:
        self.gates.pop(base_url.rsplit("/", 1)[-1], None)

    # -- one connection ------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(writer)
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
        try:
            while True:
                request = await _next(conn, reader)
                if not isinstance(request, h11.Request):
                    return  # the CLI is done with this connection
                token, _, rest = request.target.decode("ascii", "replace").lstrip("/").partition("/")
                gate = self.gates.get(token)
                if gate is None:  # nothing is read from a caller that is not one of our CLIs
                    await _refuse(conn, writer, 404, "not_found_error", "Unknown relay path.", close=True)
                    return
                body = await _body(conn, reader)
                if not await self._answer(conn, writer, request, "/" + rest, body, gate):
                    writer.transport.abort()  # as an unreachable upstream would leave it
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (h11.ProtocolError, ConnectionError, RuntimeError, httpx2.HTTPError):
            writer.transport.abort()
        finally:
            self._connections.discard(writer)
            with suppress(Exception):
                writer.close()

    async def _answer(self, conn: h11.Connection, writer: asyncio.StreamWriter, request: h11.Request,
                      path: str, body: bytes, gate: Gate) -> bool:
        """Forward one request and its answer; False if the upstream could not be reached."""
        client = self._client
        if client is None:
            raise ConnectionError("the relay is closing")
        generation: int | None = None
        if request.method == b"POST" and path.split("?", 1)[0].rstrip("/") == MODEL_CALL_PATH:
            generation = gate.admit()
            if generation is None:
                # Expected after an answer cut at max_tokens, when the CLI's continuation beats its kill.
                log.info("backend.extra_upstream_call_refused", calls=gate.calls, refused=gate.refused)
                await _refuse(conn, writer, 400, "invalid_request_error",
                              "claude-code-proxy sends one model call upstream per client request; "
                              "this one was not sent.")
                return True
        headers = [(name, value) for name, value in request.headers if name.lower() not in HOP_BY_HOP]
        upstream = client.build_request(request.method.decode(), gate.target + path, headers=headers, content=body)
        try:
            response = await client.send(upstream, stream=True)
        except httpx2.TransportError as exc:
            if generation is not None:
                gate.failed(generation, _reason(exc))
            log.info("backend.upstream_unreachable", error_class=type(exc).__name__)
            return False
        try:
            if generation is not None:
                gate.answered(generation, response.status_code)
            out_headers = [(n, v) for n, v in response.headers.raw if n.lower() not in HOP_BY_HOP]
            length = response.headers.get("content-length")
            if length is not None:
                out_headers.append((b"content-length", length.encode()))
            await _write(conn, writer, h11.Response(status_code=response.status_code, headers=out_headers,
                                                    reason=response.reason_phrase.encode()))
            # An error event in an answer that began with 200 (overloaded mid-stream) is a
            # failed call the CLI may retry.  Readable only when the stream is not compressed.
            watch = generation is not None and response.headers.get("content-encoding", "identity") == "identity"
            tail = b""
            try:
                async for chunk in response.aiter_raw():
                    if watch and generation is not None and ERROR_EVENT in tail + chunk:
                        gate.failed(generation)
                        watch = False
                    tail = chunk[-len(ERROR_EVENT):]
                    await _write(conn, writer, h11.Data(data=chunk))
            except httpx2.TransportError:
                if generation is not None:
                    gate.failed(generation)  # reached, then broken: the CLI may retry
                return False  # the answer broke off upstream: so does the CLI's
            await _write(conn, writer, h11.EndOfMessage())
        finally:
            await response.aclose()
        return True


async def _next(conn: h11.Connection, reader: asyncio.StreamReader) -> h11.Event | type[h11.PAUSED]:
    """The next event from the CLI (reading as needed)."""
    while (event := conn.next_event()) is h11.NEED_DATA:
        conn.receive_data(await reader.read(READ_CHUNK))
    return event  # type: ignore[return-value]


async def _body(conn: h11.Connection, reader: asyncio.StreamReader) -> bytes:
    chunks: list[bytes] = []
    while isinstance(event := await _next(conn, reader), h11.Data):
        chunks.append(bytes(event.data))
    if not isinstance(event, h11.EndOfMessage):
        raise ConnectionError("the CLI left in the middle of a request")
    return b"".join(chunks)


async def _write(conn: h11.Connection, writer: asyncio.StreamWriter, event: _Out) -> None:
    data = conn.send(event)
    if data:
        writer.write(data)
        await writer.drain()


async def _refuse(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, kind: str, message: str,
                  *, close: bool = False) -> None:
    """A whole small answer in the Messages API's error shape, made here."""
    body = json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    if close:
        headers.append(("connection", "close"))
    await _write(conn, writer, h11.Response(status_code=status, headers=headers))
    await _write(conn, writer, h11.Data(data=body))
    await _write(conn, writer, h11.EndOfMessage())


def _reason(exc: httpx2.TransportError) -> str:
    """Why the upstream could not be reached, from the error and its causes."""
    if isinstance(exc, httpx2.TimeoutException):
        return "the connection timed out"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return "its TLS certificate was not accepted"
        if isinstance(cause, socket.gaierror):
            return "its host name does not resolve"
        if isinstance(cause, OSError) and cause.errno in _ERRNO_REASONS:
            return _ERRNO_REASONS[cause.errno]
        cause = cause.__cause__ or cause.__context__
    return "the connection failed"


_ERRNO_REASONS = {
    errno.ECONNREFUSED: "the connection was refused",
    errno.ECONNRESET: "the connection was reset",
    errno.ETIMEDOUT: "the connection timed out",
    errno.EHOSTUNREACH: "the host is unreachable",
    errno.ENETUNREACH: "the network is unreachable",
}
