"""``claude-code-proxy keys``: add, list, change and revoke named API keys.

The keys live in the ledger's database (``CLAUDE_PROXY_DATABASE_URL``, else the
``CLAUDE_PROXY_USAGE_DB`` file), so a running server, and every replica sharing the
database, sees a change within a second.  ``keys add`` prints the new key alone on the
last line of its output; it is shown only then.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO, cast

from claude_code_proxy.accounts.keys import LIMIT_LABELS, LIMIT_NAMES, ApiKey, Limits
from claude_code_proxy.accounts.store import KeyExistsError, KeyStore, NoSuchKeyError
from claude_code_proxy.storage.database import DatabaseError, open_database

_UNSET = "none"


def _count(text: str) -> int | None:
    if text.strip().lower() == _UNSET:
        return None
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a whole number of at least 1, or 'none'")
    return value


def _amount(text: str) -> float | None:
    if text.strip().lower() == _UNSET:
        return None
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be an amount above 0, or 'none'")
    return value


def _count_arg(text: str) -> int | None:
    try:
        return _count(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', not {text!r}") from None


def _amount_arg(text: str) -> float | None:
    try:
        return _amount(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an amount (such as 2.50) or 'none', not {text!r}") from None


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    for name in LIMIT_NAMES:
        flag = "--" + name.replace("_", "-")
        kind = _amount_arg if name.startswith("usd") else _count_arg
        label = LIMIT_LABELS[name].split(" (")[0]
        parser.add_argument(flag, dest=name, type=kind, default=argparse.SUPPRESS, metavar="N",
                            help=f"at most N {label} ('none' removes the limit)")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = cast(argparse.ArgumentParser, subparsers.add_parser(
        "keys", help="manage named API keys and their limits", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter))
    parser.add_argument("--db", help="database: a PostgreSQL URL or a SQLite file (default: the server's)")
    actions = parser.add_subparsers(dest="keys_command", required=True)
    add = actions.add_parser("add", help="make a new key (printed once, on the last line)")
    add.add_argument("name", help="the key's name, shown in logs, metrics and the usage ledger")
    _add_limit_flags(add)
    listing = actions.add_parser("list", help="list the keys and their limits (never the keys)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    revoke = actions.add_parser("revoke", help="revoke a key (effective within a second)")
    revoke.add_argument("name")
    change = actions.add_parser("set", help="change a key's limits")
    change.add_argument("name")
    _add_limit_flags(change)
    for action in (add, listing, revoke, change):  # `keys add NAME --db URL` works too
        action.add_argument("--db", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    location = args.db if args.db is not None else _server_location()
    if not location:
        print("Named keys are kept in the usage ledger, which is switched off (CLAUDE_PROXY_USAGE_DB is empty "
              "and CLAUDE_PROXY_DATABASE_URL is not set).", file=err)
        return 1
    try:
        db = open_database(location)
    except DatabaseError as exc:
        print(f"keys: {exc}", file=err)
        return 1
    assert db is not None
    store = KeyStore(db)
    limits = {name: getattr(args, name) for name in LIMIT_NAMES if hasattr(args, name)}
    command = args.keys_command
    try:
        if command == "add":
            key = store.add(args.name, Limits(**limits))
            print(f"Added the key {args.name!r} ({describe(Limits(**limits))}).", file=out)
            print("Copy it now: it is not shown again. Clients send it as 'Authorization: Bearer <key>' "
                  "or 'x-api-key: <key>'.", file=out)
            print(key, file=out)
        elif command == "list":
            keys = store.list()
            if args.json:
                json.dump([{"name": k.name, "created_at": k.created_at, "limits": k.limits.as_json()} for k in keys],
                          out, indent=2)
                out.write("\n")
            else:
                out.write(render(keys))
        elif command == "revoke":
            if not store.revoke(args.name):
                print(f"keys: no key named {args.name!r}", file=err)
                return 1
            print(f"Revoked the key {args.name!r}.", file=out)
        elif command == "set":
            if not limits:
                print("keys set: give at least one limit to change, such as --rpm 10 or --rpm none", file=err)
                return 2
            changed = store.set_limits(args.name, limits)
            print(f"The key {args.name!r} now has {describe(changed.limits)}.", file=out)
    except (KeyExistsError, ValueError) as exc:
        print(f"keys: {exc}", file=err)
        return 1
    except NoSuchKeyError:
        print(f"keys: no key named {args.name!r}", file=err)
        return 1
    return 0


def describe(limits: Limits) -> str:
    parts = [f"{value:g} {LIMIT_LABELS[name].split(' (')[0]}"
             for name, value in limits.as_json().items() if value is not None]
    return ", ".join(parts) if parts else "no limits"


def render(keys: list[ApiKey]) -> str:
    if not keys:
        return "No named keys. Add one with: claude-code-proxy keys add NAME\n"
    width = max(len(k.name) for k in keys)
    lines = [f"{'name'.ljust(width)}  created           limits"]
    for key in keys:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(key.created_at))
        lines.append(f"{key.name.ljust(width)}  {created}  {describe(key.limits)}")
    return "\n".join(lines) + "\n"


def _server_location() -> str:
    from claude_code_proxy.config.settings import get_settings

    settings = get_settings()
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    return url or settings.usage_db


__all__ = ["add_parser", "describe", "render", "run"]
