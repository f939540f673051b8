"""A fake ``claude`` executable for faults the real CLI cannot be made to show.

``make_fake_cli(dir, mode)`` writes an executable that speaks just enough of the SDK's
stream-json protocol (initialize, gated history, one answer) and misbehaves as asked:

    ok                 a normal three-token answer
    crash_mid_stream   three text deltas, a secret on stderr, then exit(1)
    hang_before_init   never answers the initialize request
    hang               initializes, then never sends an event
    stall              two deltas, then silence
    retry_forever      api_retry system messages, never an answer
    init_with_tools    reports a Bash tool and an MCP server at init, then sleeps
    slow               ten deltas 0.3 s apart
    trickle            a delta every 0.3 s for a minute (only a total deadline ends it)
    gated              waits until a file ``open`` exists beside it (``open_gate``), then answers
    ratelimit_warning  a rate_limit_event (allowed_warning, 80 % used), then a normal answer
    ratelimit_rejected a rate_limit_event (rejected), then a 429 error result

(The real CLI sends rate_limit_event only when upstream answers with subscription
rate-limit headers, which the fake upstream does not.)  The ratelimit modes log in as a
claude.ai ``max`` subscriber.

It appends one line per spawn (its argv) to ``spawns.log`` beside it, and one per user
message it receives to ``prompts.log``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

SCRIPT = r'''
import json, os, sys, time, uuid

MODE = {mode!r}
HERE = {here!r}
RESETS_AT = {resets_at!r}
with open(os.path.join(HERE, "spawns.log"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\n")

if MODE == "version" or "--version" in sys.argv or "-v" in sys.argv:
    print("2.1.330 (Claude Code)")
    sys.exit(0)
if len(sys.argv) > 2 and sys.argv[1] == "auth":
    if MODE.startswith("ratelimit"):
        print(json.dumps({{"loggedIn": True, "authMethod": "claude.ai", "subscriptionType": "max"}}))
    else:
        print(json.dumps({{"loggedIn": True, "authMethod": "api_key"}}))
    sys.exit(0)

SID = "fake-session"

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def event(ev):
    out({{"type": "stream_event", "uuid": str(uuid.uuid4()), "session_id": SID, "event": ev}})

def result(**extra):
    base = {{"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": "",
            "session_id": SID, "duration_ms": 1, "duration_api_ms": 1, "total_cost_usd": 0.0,
            "usage": {{"input_tokens": 3, "output_tokens": 3}}, "stop_reason": "end_turn"}}
    base.update(extra)
    out(base)

def init(tools=(), servers=()):
    out({{"type": "system", "subtype": "init", "session_id": SID, "tools": list(tools),
         "mcp_servers": list(servers), "model": "claude-fake", "permissionMode": "dontAsk",
         "cwd": os.getcwd(), "apiKeySource": "ANTHROPIC_API_KEY"}})

def deltas(n, delay=0.0):
    event({{"type": "message_start", "message": {{"id": "msg_fakecli", "type": "message", "role": "assistant",
           "model": "claude-fake", "content": [], "stop_reason": None, "stop_sequence": None,
           "usage": {{"input_tokens": 3, "output_tokens": 1}}}}}})
    event({{"type": "content_block_start", "index": 0, "content_block": {{"type": "text", "text": ""}}}})
    for i in range(n):
        if delay:
            time.sleep(delay)
        event({{"type": "content_block_delta", "index": 0, "delta": {{"type": "text_delta", "text": f"tok{{i}} "}}}})

def rate_limit(status, utilization):
    out({{"type": "rate_limit_event", "uuid": str(uuid.uuid4()), "session_id": SID,
         "rate_limit_info": {{"status": status, "resetsAt": RESETS_AT, "rateLimitType": "five_hour",
                              "utilization": utilization}}}})

def finish():
    event({{"type": "content_block_stop", "index": 0}})
    event({{"type": "message_delta", "delta": {{"stop_reason": "end_turn", "stop_sequence": None}},
           "usage": {{"output_tokens": 3}}}})
    event({{"type": "message_stop"}})
    result()

for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("type") == "control_request":
        sub = msg["request"].get("subtype")
        if sub == "initialize" and MODE == "hang_before_init":
            continue
        out({{"type": "control_response", "response": {{"subtype": "success", "request_id": msg["request_id"],
             "response": {{"commands": []}}}}}})
        continue
    if msg.get("type") != "user":
        continue
    with open(os.path.join(HERE, "prompts.log"), "a") as f:
        f.write(json.dumps(msg.get("message", {{}}).get("content")) + "\n")
    if msg.get("shouldQuery") is False:
        result(num_turns=0, user_message_uuid=msg.get("uuid"))
        continue
    if MODE == "init_with_tools":
        init(tools=["Bash"], servers=[{{"name": "evil", "status": "connected"}}])
        time.sleep(600)
        continue
    init()
    if MODE == "crash_mid_stream":
        deltas(3)
        sys.stderr.write("CANARY-STDERR sk-ant-oat-canary /home/someone/secret\n")
        sys.stderr.flush()
        os._exit(1)
    elif MODE == "hang":
        time.sleep(600)
    elif MODE == "stall":
        deltas(2)
        time.sleep(600)
    elif MODE == "retry_forever":
        for attempt in range(1, 1000):
            out({{"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 1000,
                 "retry_delay_ms": 500, "error_status": 529, "error": "overloaded", "session_id": SID,
                 "uuid": str(uuid.uuid4())}})
            time.sleep(0.5)
    elif MODE == "slow":
        deltas(10, delay=0.3)
        finish()
    elif MODE == "trickle":
        deltas(200, delay=0.3)
        finish()
    elif MODE == "gated":
        while not os.path.exists(os.path.join(HERE, "open")):
            time.sleep(0.02)
        deltas(10)
        finish()
    elif MODE == "ratelimit_rejected":
        rate_limit("rejected", 1.0)
        result(is_error=True, api_error_status=429, result="API Error: 429 rate limit reached",
               usage={{"input_tokens": 0, "output_tokens": 0}})
    elif MODE == "ratelimit_warning":
        rate_limit("allowed_warning", 0.8)
        deltas(3)
        event({{"type": "content_block_stop", "index": 0}})
        event({{"type": "message_delta", "delta": {{"stop_reason": "end_turn", "stop_sequence": None}},
               "usage": {{"output_tokens": 3}}}})
        event({{"type": "message_stop"}})
        result(total_cost_usd=0.0001)
    else:
        deltas(3)
        finish()
'''


RESETS_IN = 3600


def make_fake_cli(directory: Path, mode: str, resets_at: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claude"
    body = SCRIPT.format(mode=mode, here=str(directory), resets_at=resets_at)
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path


def open_gate(directory: Path) -> None:
    """Let every ``gated`` fake CLI in ``directory`` (waiting or still to come) answer."""
    (directory / "open").touch()


def spawn_count(directory: Path) -> int:
    log = directory / "spawns.log"
    if not log.exists():
        return 0
    return sum(1 for line in log.read_text().splitlines() if "--output-format" in line)


def prompts(directory: Path) -> list[str]:
    log = directory / "prompts.log"
    return log.read_text().splitlines() if log.exists() else []


def make_ratelimit_cli(directory: Path, mode: str = "warning") -> tuple[Path, int]:
    """A fake CLI in a ratelimit mode; its path and the reset time (epoch s) it reports."""
    resets_at = int(time.time()) + RESETS_IN
    return make_fake_cli(directory, f"ratelimit_{mode}", resets_at), resets_at
