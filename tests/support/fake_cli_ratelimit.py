"""A fake ``claude`` that reports the subscription's rate-limit state, as a logged-in
subscriber's CLI does (the real CLI only sends ``rate_limit_event`` messages when the API
answers with subscription rate-limit headers, which the fake upstream does not).

``make_ratelimit_cli(dir, mode)`` writes an executable speaking the SDK's stream-json protocol:

    warning    a ``rate_limit_event`` (status ``allowed_warning``, 80 % used), then a normal
               three-token answer with usage 3 in / 3 out and a cost of $0.0001
    rejected   a ``rate_limit_event`` (status ``rejected``), then a 429 error result

``auth status`` reports a claude.ai login with a ``max`` subscription.  It is separate from
``fake_cli.py`` so that module stays untouched.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

RESETS_IN = 3600

SCRIPT = r'''
import json, os, sys, time, uuid

MODE = {mode!r}
RESETS_AT = {resets_at!r}

if "--version" in sys.argv:
    print("9.9.9 (Claude Code)")
    sys.exit(0)
if len(sys.argv) > 2 and sys.argv[1] == "auth":
    print(json.dumps({{"loggedIn": True, "authMethod": "claude.ai", "subscriptionType": "max"}}))
    sys.exit(0)

SID = "fake-ratelimit-session"

def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

def event(ev):
    out({{"type": "stream_event", "uuid": str(uuid.uuid4()), "session_id": SID, "event": ev}})

def result(**extra):
    base = {{"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "result": "",
            "session_id": SID, "duration_ms": 1, "duration_api_ms": 1, "total_cost_usd": 0.0001,
            "usage": {{"input_tokens": 3, "output_tokens": 3}}, "stop_reason": "end_turn"}}
    base.update(extra)
    out(base)

def rate_limit(status, utilization):
    out({{"type": "rate_limit_event", "uuid": str(uuid.uuid4()), "session_id": SID,
         "rate_limit_info": {{"status": status, "resetsAt": RESETS_AT, "rateLimitType": "five_hour",
                              "utilization": utilization}}}})

for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("type") == "control_request":
        out({{"type": "control_response", "response": {{"subtype": "success", "request_id": msg["request_id"],
             "response": {{"commands": []}}}}}})
        continue
    if msg.get("type") != "user":
        continue
    if msg.get("shouldQuery") is False:
        result(num_turns=0, total_cost_usd=0.0, user_message_uuid=msg.get("uuid"))
        continue
    out({{"type": "system", "subtype": "init", "session_id": SID, "tools": [], "mcp_servers": [],
         "model": "claude-fake", "permissionMode": "dontAsk", "cwd": os.getcwd(), "apiKeySource": "none"}})
    if MODE == "rejected":
        rate_limit("rejected", 1.0)
        result(subtype="success", is_error=True, api_error_status=429, total_cost_usd=0.0,
               result="API Error: 429 rate limit reached", usage={{"input_tokens": 0, "output_tokens": 0}})
        continue
    rate_limit("allowed_warning", 0.8)
    event({{"type": "message_start", "message": {{"id": "msg_fakerl", "type": "message", "role": "assistant",
           "model": "claude-fake", "content": [], "stop_reason": None, "stop_sequence": None,
           "usage": {{"input_tokens": 3, "output_tokens": 1}}}}}})
    event({{"type": "content_block_start", "index": 0, "content_block": {{"type": "text", "text": ""}}}})
    for i in range(3):
        event({{"type": "content_block_delta", "index": 0, "delta": {{"type": "text_delta", "text": f"tok{{i}} "}}}})
    event({{"type": "content_block_stop", "index": 0}})
    event({{"type": "message_delta", "delta": {{"stop_reason": "end_turn", "stop_sequence": None}},
           "usage": {{"output_tokens": 3}}}})
    event({{"type": "message_stop"}})
    result()
'''


def make_ratelimit_cli(directory: Path, mode: str = "warning") -> tuple[Path, int]:
    """Write the fake CLI; return its path and the reset time (epoch seconds) it reports."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "claude"
    resets_at = int(time.time()) + RESETS_IN
    path.write_text(f"#!{sys.executable}\n" + SCRIPT.format(mode=mode, resets_at=resets_at))
    path.chmod(0o755)
    return path, resets_at
