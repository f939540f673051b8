"""The Claude Code CLI backend: the only place a request meets ``claude_agent_sdk``.

``run()`` takes a pre-started CLI from the warm pool (or starts one), writes the
conversation as real history, sends the last user turn, and yields the upstream Anthropic
stream events of the one upstream message the client asked for, then a ``Completion``;
failures are raised as ``ClaudeProxyError``.  The pieces, each in its own module:

    options.py     how a CLI is started (safety options, environment, per-request knobs)
    run_state.py   the SDK's message stream -> events, an end, or an error
    deadlines.py   first-event, idle and total deadlines, and the shutdown drain
    process.py     start, and the one end-of-life path of every CLI process
    footprint.py   what a CLI leaves in the user's Claude configuration, removed after a kill
    probe.py       version and login state, for /health and doctor
    warm_pool.py   single-use pre-started CLIs, keyed by everything fixed at spawn
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import structlog
from claude_agent_sdk import (
    ClaudeSDKClient,
    ClaudeSDKError,
    CLIConnectionError,
    CLIJSONDecodeError,
    CLINotFoundError,
    RateLimitEvent,
    ResultMessage,
    StreamEvent,
    SystemMessage,
)

from claude_code_proxy.backend.admission import Admission, Ticket
from claude_code_proxy.backend.base import BackendObserver, BackendStats, CliStatus, NullObserver
from claude_code_proxy.backend.deadlines import Deadlines, Drain
from claude_code_proxy.backend.options import (
    MAX_CLI_MESSAGE_BYTES,
    NOT_FOUND_HELP,
    allowed_tools,
    build_options,
    cli_usable,
    spawn_key,
    upstream_history,
    upstream_host,
)
from claude_code_proxy.backend.prices import UnitPrices
from claude_code_proxy.backend.probe import probe_cli
from claude_code_proxy.backend.process import AFTER_RESPONSE_S, Prepared, Processes, kill_now
from claude_code_proxy.backend.quota import account_limited_error
from claude_code_proxy.backend.relay import UpstreamRelay
from claude_code_proxy.backend.reuse import interrupt, read_result, retire_reason, rewind
from claude_code_proxy.backend.run_state import RunState, check_isolation, rate_limit_summary
from claude_code_proxy.backend.warm_pool import WarmPool
from claude_code_proxy.chat.answer import BackendItem, Completion
from claude_code_proxy.chat.request import ChatRequest
from claude_code_proxy.config.settings import Settings
from claude_code_proxy.exceptions import ClaudeProxyError, IsolationError, ServiceUnavailableError, UpstreamError

log = structlog.get_logger(__name__)
RESULT_WAIT_S = 2.0
"""How long the CLI's result (its cost figure) is awaited after a complete answer."""
STATUS_TTL_S = 300


class ClaudeClient:
    """Runs each request on a locked-down CLI process: pre-started, or reused after an exact reset."""

    def __init__(
        self, settings: Settings, admission: Admission, observer: BackendObserver | None = None
    ) -> None:
        self.settings = settings
        self.cli_path = settings.resolved_cli_path()
        self.admission = admission
        self.observer = observer or NullObserver()
        self.processes = Processes(UpstreamRelay() if settings.upstream_gate else None)
        self.drain = Drain()
        self.rate_limit: dict[str, Any] | None = None
        """The subscription's latest rate-limit state the CLI reported (shown by /health)."""
        self.warm_starts = 0
        self.prices = UnitPrices()
        """Each model's price per token as the CLI's results show it (for answers cut short)."""
        self.reused = 0
        """Requests served by a CLI that had answered before (reset by a rewind)."""
        self._status: CliStatus | None = None
        self._status_lock = asyncio.Lock()
        self.pool: WarmPool[Prepared] = WarmPool(
            size=settings.pool_size,
            max_keys=settings.warm_pool_keys,
            idle_seconds=settings.warm_pool_idle,
            spawn=self._prepare,
            dispose=self.processes.dispose,
            budget_left=self._budget_left,
        )
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def spawned(self) -> int:
        return self.processes.spawned

    # -- the contract ------------------------------------------------------------------
    def ready(self) -> None:
        if self.drain.draining:
            raise ServiceUnavailableError("The proxy is shutting down.", retry_after=5)
        if not cli_usable(self.cli_path):
            raise ServiceUnavailableError(NOT_FOUND_HELP)
        limited = account_limited_error(self.rate_limit)
        if limited is not None:  # fail fast: a CLI started now would only be refused upstream
            raise limited

    def stats(self) -> BackendStats:
        return BackendStats(spawned=self.spawned, warm_ready=self.pool.ready_count, rate_limit=self.rate_limit)

    def begin_drain(self, grace: float) -> None:
        self.drain.begin(grace)

    async def status(self, *, refresh: bool = False) -> CliStatus:
        """CLI path, version and login state; cached, since each probe spawns the CLI."""
        async with self._status_lock:
            fresh = self._status and time.monotonic() - self._status.checked_at < STATUS_TTL_S
            if self._status is None or not fresh or refresh:
                self._status = await probe_cli(self.cli_path)
            return self._status

    async def run(self, request: ChatRequest, ticket: Ticket) -> AsyncGenerator[BackendItem, None]:
        ticket.taken = True
        slot = _Slot(self, spawn_key(request), request, ticket)
        if self.drain.draining:  # shutdown began while this request waited in line
            slot.release()
            raise ServiceUnavailableError("The proxy is shutting down.", retry_after=5)
        try:
            run = self._run(request, slot)
            try:
                async for item in run:
                    yield item
            finally:
                await run.aclose()  # tear the CLI down now, not when garbage-collected
        finally:
            if not slot.handed_off:
                slot.release()

    async def aclose(self) -> None:
        """Stop the warm pool and end every CLI still running (server shutdown)."""
        with anyio.CancelScope(shield=True):
            if self._sweeper is not None:
                self._sweeper.cancel()
            await self.pool.aclose()
            await self.processes.aclose()

    # -- one run -----------------------------------------------------------------------
    async def _prepare(self, request: ChatRequest) -> Prepared:
        return await self.processes.start(
            lambda workdir, relay_url: build_options(self.settings, self.cli_path, request, workdir, relay_url))

    async def _run(self, request: ChatRequest, slot: _Slot) -> AsyncGenerator[BackendItem, None]:
        clock = Deadlines(self.settings, self.drain)
        prepared = self._take(slot.key)
        self.warm_starts += prepared is not None
        if self.pool.enabled:
            (self.observer.warm_hit if prepared is not None else self.observer.warm_miss)(request.model)
        if prepared is None:
            self.pool.make_room()
        state = RunState(allowed_tools=allowed_tools(request), structured=request.output_schema is not None,
                         upstream_host=upstream_host(os.environ))
        completion: Completion | None = None
        failed = False
        final = _user(request.messages[-1], should_query=True)
        first_uuid: str = final["uuid"]
        try:
            with clock.scope() as scope:
                if prepared is None:
                    prepared = await self._prepare(request)
                client = prepared.client
                messages = prepared.stream()
                seeded = await self._seed(client, messages, upstream_history(request), state.allowed_tools,
                                          request.model)
                first_uuid = seeded or first_uuid
                state.gate = prepared.gate
                if prepared.gate is not None:
                    prepared.gate.open()  # this request's one model call may go upstream
                await client.query(_one(final))
            clock.check(scope)
            while not state.done:
                try:
                    message = await clock.next_message(messages)
                except StopAsyncIteration:
                    raise ClaudeProxyError("The Claude Code CLI exited before it finished answering.") from None
                if isinstance(message, StreamEvent):
                    clock.event()
                elif isinstance(message, RateLimitEvent):
                    state.rate_limit = self._rate_limited(message)
                items = state.feed(message)
                if state.cut_short:
                    # At max_tokens (and the like) the CLI calls upstream again on its own as
                    # soon as the answer ends: the relay's gate refuses that call, and the CLI,
                    # which would go on trying, ends now.
                    kill_now(prepared)
                for item in items:
                    yield item
            cost = self.prices.estimate(state.model or request.model, state.usage) if state.cut_short else None
            completion = Completion(state.stop_reason, state.stop_sequence, state.usage, cost, state.model,
                                    pending=state.result_follows)
            slot.succeeded = True
            yield completion
        except CLINotFoundError:
            failed = True
            raise ServiceUnavailableError(NOT_FOUND_HELP) from None
        except CLIJSONDecodeError as error:
            failed = True
            if isinstance(error.original_error, json.JSONDecodeError):  # a corrupt line, not a big one
                raise ClaudeProxyError("The Claude Code CLI exited before it finished answering.") from None
            # One content block (the CLI relays each whole) beyond the SDK's message limit.
            raise UpstreamError(
                f"The answer has a block larger than {MAX_CLI_MESSAGE_BYTES >> 20} MiB, "
                "more than the proxy accepts from the CLI."
            ) from None
        except (CLIConnectionError, ClaudeSDKError):
            failed = True
            raise ClaudeProxyError("The Claude Code CLI exited before it finished answering.") from None
        except IsolationError:
            failed = True  # never reused: it showed tools the proxy did not put there
            raise
        finally:
            # The answer is complete or abandoned; the slot goes with the CLI: freed once the
            # CLI is back in the pool or gone, not before.
            if prepared is not None and prepared.gate is not None:
                prepared.gate.shut()
            if prepared is not None:
                slot.handed_off = True
                self._leave(_Ending(prepared, slot, first_uuid, final["uuid"], completion), state, failed)
            elif completion is not None and completion.pending:
                completion.settle(None)

    def _leave(self, ending: _Ending, state: RunState, failed: bool) -> None:
        """Decide what becomes of a CLI after its request: reset for the next one, or the end.

        A clean end: its result (the cost) follows, then a reset.  An upstream error: the
        result was read, reset.  Abandoned (client gone, deadline): stop the turn, then reset.
        An answer cut short (max_tokens) was killed at its end, and a CLI that failed or
        showed unexpected tools is never trusted again: those end at once.  One that is not
        reused exits by itself where its turn is over (its result read), else it is killed.
        """
        completion = ending.completion
        idle = False
        if state.cut_short:
            failed = True  # killed at the answer's end
        elif completion is not None and completion.pending:
            ending.read_result = True
        elif completion is None and state.done:
            ending.prepared.cost_seen = state.result_cost or ending.prepared.cost_seen
            idle = not failed
        elif completion is None and not failed:
            ending.interrupt = True
        else:
            failed = True
        ending.reuse = not failed and self._reusable(ending.prepared)
        if ending.reuse or ending.read_result:
            self.processes.background(functools.partial(self._after, ending))
        else:
            self.processes.end(ending.prepared, ending.slot.release, idle=idle)

    def _rate_limited(self, event: RateLimitEvent) -> dict[str, Any]:
        """Keep the account's latest rate-limit state (it may come before or after the answer)."""
        self.rate_limit = rate_limit_summary(event)
        return self.rate_limit

    async def _seed(
        self,
        client: ClaudeSDKClient,
        messages: AsyncIterator[Any],
        history: list[dict[str, Any]],
        allowed: frozenset[str],
        model_hint: str,
    ) -> str | None:
        """Write earlier turns as real history: gated user turns, then assistant turns.

        Assistant turns carry a message id and the model the CLI resolved (from its init
        report): without them the CLI treats the turn as foreign and drops its signed
        thinking blocks, which upstream needs back when thinking is on.  Returns the uuid of
        the first user turn written (where a rewind cuts back to), or None.
        """
        model = model_hint
        first: str | None = None
        for turn in history:
            if turn["role"] == "assistant":
                uses_tool = any(block.get("type") == "tool_use" for block in turn["content"])
                await client.query(_one({
                    "type": "assistant",
                    "message": {
                        "id": f"msg_history{uuid.uuid4().hex[:16]}",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": turn["content"],
                        "stop_reason": "tool_use" if uses_tool else "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 0, "output_tokens": 0},
                    },
                    "parent_tool_use_id": None,
                }))
                continue
            message = _user(turn, should_query=False)
            first = first or message["uuid"]
            await client.query(_one(message))
            # Wait for the CLI's acknowledgement before writing the next item.
            async for reply in messages:
                if isinstance(reply, SystemMessage) and reply.subtype == "init":
                    check_isolation(reply.data, allowed)
                    model = reply.data.get("model") or model
                if isinstance(reply, ResultMessage):
                    if reply.is_error:
                        raise ClaudeProxyError("The Claude Code CLI refused the conversation history.")
                    break
        return first

    async def _after(self, ending: _Ending) -> None:
        """After a request: its result (the cost), then reset and back to the pool, or the end."""
        prepared, completion = ending.prepared, ending.completion
        reusable = ending.reuse
        idle = not (ending.read_result or ending.interrupt)  # its turn is over: the result was read
        try:
            if ending.read_result or ending.interrupt:
                result = await (interrupt(prepared, RESULT_WAIT_S, self._rate_limited) if ending.interrupt
                                else read_result(prepared.stream(), RESULT_WAIT_S, self._rate_limited))
                idle = result is not None
                total = None if result is None else result.total_cost_usd
                if result is not None:
                    self.prices.learn(result.model_usage)
                if completion is not None:
                    # The CLI's cost figure adds up over its life: this request's is the
                    # difference.  An error result counts too: after a call to a tool the
                    # client did not declare, the run ends at its one model turn.
                    completion.settle(None if total is None else max(0.0, total - prepared.cost_seen))
                reusable = reusable and result is not None
                if total is not None:
                    prepared.cost_seen = total
            prepared.uses += 1
            if reusable and await rewind(prepared, ending.first_uuid, ending.last_uuid):
                self._start_sweeper()  # idle CLIs in the pool expire
                if self.pool.put(ending.slot.key, prepared):
                    ending.slot.release(recycled=True)
                    return
        except Exception as exc:
            log.warning("cli.after_request_failed", error_class=type(exc).__name__)
        finally:
            if completion is not None and completion.pending:
                completion.settle(None)
        self.processes.end(prepared, ending.slot.release, idle=idle)

    def _reusable(self, prepared: Prepared) -> bool:
        if not self.settings.cli_reuse or self.drain.draining or not self.pool.enabled:
            return False
        reason = retire_reason(prepared, self.settings)
        if reason is not None:
            log.debug("cli.retired", reason=reason, uses=prepared.uses)
            return False
        return True

    def _take(self, key: str) -> Prepared | None:
        """A ready CLI for ``key`` that may still serve (others are ended on the way), or None."""
        while (prepared := self.pool.take(key)) is not None:
            if prepared.uses == 0 or retire_reason(prepared, self.settings) is None:
                self.reused += prepared.uses > 0
                return prepared
            self.processes.background(functools.partial(self.processes.dispose, prepared))
        return None

    # -- the warm pool -----------------------------------------------------------------
    def _budget_left(self) -> int:
        pool = self.pool
        return self.settings.max_concurrency - self.admission.active - pool.ready_count - pool.starting_count

    def _refill(self, key: str, request: ChatRequest) -> None:
        if not self.drain.draining:
            self.pool.refill(key, request)

    def _start_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self.pool.sweep_forever())


@dataclass
class _Ending:
    """How a request left its CLI, for deciding whether the CLI can serve again."""

    prepared: Prepared
    slot: _Slot
    first_uuid: str
    last_uuid: str
    completion: Completion | None
    read_result: bool = False
    """A clean end: the CLI's result (the cost) follows."""
    interrupt: bool = False
    """Abandoned mid-turn: the turn must be stopped before a reset."""
    reuse: bool = False
    """It may serve another request once reset."""


class _Slot:
    """A run's concurrency ticket; freeing it may start the configuration's replacement."""

    def __init__(self, owner: ClaudeClient, key: str, request: ChatRequest, ticket: Ticket) -> None:
        self.owner = owner
        self.key = key
        self.request = request
        self.ticket = ticket
        self.handed_off = False
        self.succeeded = False
        """Only a configuration that just worked gets a replacement started."""

    def release(self, *, recycled: bool = False) -> None:
        """Free the slot; unless the CLI went back to the pool, start its replacement."""
        if self.ticket.released:
            return
        self.ticket.release()
        owner = self.owner
        if self.succeeded and not recycled and owner.pool.enabled and not owner.drain.draining:
            # The next request's process for this configuration starts once this one's CLI
            # is gone and the answer is out: it competes with no answer for CPU.
            owner._start_sweeper()
            asyncio.get_running_loop().call_later(AFTER_RESPONSE_S, owner._refill, self.key, self.request)


def _user(message: dict[str, Any], *, should_query: bool) -> dict[str, Any]:
    # Every user message carries a uuid: a rewind names where to cut back to.
    out: dict[str, Any] = {
        "type": "user",
        "message": {"role": "user", "content": message["content"]},
        "parent_tool_use_id": None,
        "uuid": str(uuid.uuid4()),
    }
    if not should_query:
        out["shouldQuery"] = False
    return out


async def _one(message: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    yield message


__all__ = ["ClaudeClient"]
