"""``claude-code-proxy usage``: the ledger's summary as a terminal table (or ``--json``)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO, cast

from claude_code_proxy.ops.ledger import GROUP_BY_VALUES, GroupBy, UsageLedger, parse_when
from claude_code_proxy.storage.database import is_postgres_url

_COLUMNS = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("input_tokens", "input"),
    ("output_tokens", "output"),
    ("cache_read_tokens", "cache read"),
    ("cache_creation_tokens", "cache write"),
    ("cost_usd", "cost"),
)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``usage`` to the CLI's subcommands (``subparsers`` is ``add_subparsers()``'s result)."""
    parser = cast(
        argparse.ArgumentParser,
        subparsers.add_parser("usage", help="summarize the local usage ledger", description=__doc__),
    )
    parser.add_argument("--since", help="start: ISO date, ISO datetime or epoch seconds (default: 30 days ago)")
    parser.add_argument("--until", help="end, exclusive; a bare date includes that day (default: now)")
    parser.add_argument("--group-by", choices=GROUP_BY_VALUES, default="day", help="rows of the table (default: day)")
    parser.add_argument("--recent", type=int, default=0, metavar="N", help="also list the N latest requests")
    parser.add_argument("--key", help="only the requests made with this API key's name")
    parser.add_argument("--json", action="store_true", help="print the JSON that GET /usage answers")
    parser.add_argument("--db", help="ledger file or PostgreSQL URL (default: CLAUDE_PROXY_DATABASE_URL, "
                                     "else CLAUDE_PROXY_USAGE_DB)")
    return parser


def run(args: argparse.Namespace, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    try:
        since = parse_when(args.since)
        until = parse_when(args.until, end=True)
    except ValueError:
        print("usage: --since/--until take an ISO date (2025-01-31), an ISO datetime or epoch seconds", file=err)
        return 2
    if since is None:
        since = time.time() - 30 * 86400
    db, retention = _ledger_location(args.db)
    if not db:
        print("The usage ledger is disabled (CLAUDE_PROXY_USAGE_DB is empty).", file=err)
        return 1
    exists = is_postgres_url(db) or Path(db).expanduser().exists()
    # A missing file is not created here (the server creates it): the report is just empty.
    ledger = UsageLedger(db if exists else None, retention, writer=False)
    try:
        if exists and not ledger.enabled:
            print(f"Cannot open the usage ledger at {db}.", file=err)
            return 1
        report = ledger.report(since, until, cast(GroupBy, args.group_by), max(0, args.recent), args.key)
    finally:
        ledger.close()
    if not exists:
        print(f"No usage recorded yet ({db} does not exist).", file=err)
    if args.json:
        json.dump(report, out, indent=2)
        out.write("\n")
    else:
        out.write(render(report))
    return 0


def _ledger_location(override: str | None) -> tuple[str, int]:
    from claude_code_proxy.config.settings import get_settings

    settings = get_settings()
    url = settings.database_url.get_secret_value() if settings.database_url else ""
    return (override if override is not None else url or settings.usage_db), settings.usage_retention_days


def _cell(name: str, value: Any) -> str:
    if name == "cost_usd":
        return format_cost(value)
    return f"{value:,}"


def format_cost(value: float | None) -> str:
    """Dollars with enough digits: cents and fractions, and below a cent two significant
    digits, so a request of a few tokens never shows as $0.0000 (same rule as the dashboard)."""
    if value is None:
        return "-"
    if value == 0:
        return "$0.00"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    digits = min(12, max(4, 1 - math.floor(math.log10(value))))
    return f"${value:.{digits}f}"


def model_cell(record: dict[str, Any]) -> str:
    """What the client asked for, then what it resolved to (the model that answered, else the
    name handed to the CLI) when that differs: ``gpt-4o -> claude-sonnet-4-5``."""
    asked = record["model_requested"] or "-"
    resolved = record["model_used"] or record.get("model_resolved") or ""
    return asked if resolved in ("", asked) else f"{asked} -> {resolved}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _when(epoch: float | None) -> str:
    return "now" if epoch is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(epoch))


def render(report: dict[str, Any]) -> str:
    """The report as a plain-text table, for people."""
    head = [str(report["group_by"])] + [title for _, title in _COLUMNS]
    body = [[str(row["key"]) or "(none)"] + [_cell(name, row[name]) for name, _ in _COLUMNS]
            for row in report["series"]]
    total = ["total"] + [_cell(name, report["totals"][name]) for name, _ in _COLUMNS]
    widths = [max(len(line[i]) for line in [head, *body, total]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        # The key column is left-aligned, numbers right-aligned.
        padded = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))]
        return "  ".join(padded)

    rule = "  ".join("-" * w for w in widths)
    scope = f", key {report['key']}" if report.get("key") is not None else ""
    out = [f"Usage {_when(report['since'])} .. {_when(report['until'])}{scope}, by {report['group_by']}", "",
           line(head), rule]
    out += [line(cells) for cells in body] or ["(no requests)"]
    out += [rule, line(total), ""]
    totals, pct = report["totals"], report["percentiles"]
    out.append(f"error rate {totals['error_rate'] * 100:.1f}%")
    out.append(f"duration   p50 {_ms(pct['duration_ms']['p50'])}, p95 {_ms(pct['duration_ms']['p95'])}")
    out.append(f"ttft       p50 {_ms(pct['ttft_ms']['p50'])}, p95 {_ms(pct['ttft_ms']['p95'])}")
    if report["recent"]:
        out += ["", "latest requests:"]
        for rec in report["recent"]:
            out.append(
                f"  {_when(rec['ts'])}  {rec['surface']:<9}  {rec['key_name'] or '-':<12}  {rec['client']:<16}"
                f"  {model_cell(rec):<32}  {rec['status']}  {_ms(rec['duration_ms']):>10}"
                f"  {rec['input_tokens']:>7,} in  {rec['output_tokens']:>7,} out  {format_cost(rec['cost_usd']):>10}"
            )
    ledger = report["ledger"]
    if ledger["write_errors"] or ledger["dropped"]:
        out.append(f"\nledger write errors: {ledger['write_errors']}, dropped: {ledger['dropped']}")
    return "\n".join(out) + "\n"
