"""``python -m bench.hotpath``: the proxy's own CPU under different server choices, side by side.

Every variant is the proxy as ``claude-code-proxy serve`` runs it, but with uvicorn's event
loop and HTTP parser chosen (``asyncio``/``uvloop``, ``h11``/``httptools``) and, with
``+orjson``, orjson encoding the JSON answers and stream frames (orjson is not a dependency:
``pip install orjson`` to include that variant).  All variants run at once against one fake
upstream with the reusing warm pool, and requests go to them in turn, so machine load hits
them alike.  Measured per variant: the proxy process's own CPU per short non-streaming
request (exact per-thread counters, window from before the request until the proxy is idle
again, so its after-answer work counts) and per streamed event (``[[long:N]]`` answers).
Writes bench/results/hotpath-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import httpx

from bench import scenarios
from bench.harness import FakeUpstreamProcess, ProxyProcess, cli_environment, own_cpu, wait_settled
from bench.profile import stream_once
from bench.report import table
from bench.stats import ratio, summarize

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_VARIANTS = "asyncio/h11,uvloop/h11,asyncio/httptools,uvloop/httptools,uvloop/httptools+orjson"


class Variant(ProxyProcess):
    def __init__(self, name: str) -> None:
        choice, _, encoder = name.partition("+")
        self.loop, _, self.http = choice.partition("/")
        self.encoder = encoder or "json"
        self.name = name
        super().__init__(pool_size=None, label=name.replace("/", "-").replace("+", "-"))

    def command(self) -> list[str]:
        return [sys.executable, "-m", "bench.hotpath", "serve", str(self.port), self.loop, self.http, self.encoder]


def serve(port: int, loop: str, http: str, encoder: str) -> None:
    """The proxy exactly as ``claude_code_proxy.cli.serve`` starts it, with the choices given."""
    import uvicorn

    from claude_code_proxy.app import create_app
    from claude_code_proxy.cli import DrainingServer
    from claude_code_proxy.config.settings import Settings

    if encoder == "orjson":
        import orjson
        from starlette.responses import JSONResponse

        from claude_code_proxy.web import ndjson, sse

        def dumps(data: Any) -> str:
            return orjson.dumps(data).decode()

        sse.dumps = dumps  # type: ignore[assignment]
        ndjson.dumps = dumps  # type: ignore[assignment]
        JSONResponse.render = lambda self, content: orjson.dumps(content)  # type: ignore[method-assign]
    settings = Settings(host="127.0.0.1", port=port)
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, access_log=False, log_config=None,
                            timeout_graceful_shutdown=int(settings.shutdown_grace) + 3, loop=loop, http=http)
    DrainingServer(config, on_exit=lambda: app.state.backend.begin_drain(settings.shutdown_grace)).run()


async def measure(variants: list[Variant], rounds: int, streams: int, tokens: int, log: Any) -> dict[str, Any]:
    raw: dict[str, dict[str, Any]] = {
        v.name: {"wall_s": [], "cpu_s": [], "stream_cpu_s": 0.0, "frames": 0} for v in variants
    }
    async with httpx.AsyncClient(timeout=scenarios.TIMEOUT) as client:

        async def settled(v: Variant) -> None:
            assert v.ps is not None
            await asyncio.to_thread(wait_settled, v.ps, want_children=1, timeout=8)

        for v in variants:  # priming: the pool's CLI, first-use costs
            for _ in range(3):
                await scenarios.proxy_once(client, v.url, scenarios.messages_body())
                await settled(v)
        log(f"{rounds} rounds of one short request per variant")
        for r in range(rounds):
            for v in variants if r % 2 == 0 else variants[::-1]:
                assert v.ps is not None
                await settled(v)
                before = own_cpu(v.ps)
                wall, _ = await scenarios.proxy_once(client, v.url, scenarios.messages_body())
                await settled(v)  # the after-answer work (result, rewind, ledger) counts
                raw[v.name]["wall_s"].append(wall)
                raw[v.name]["cpu_s"].append(own_cpu(v.ps) - before)
        log(f"{streams} long streams ({tokens} deltas) per variant, both surfaces in turn")
        for s in range(streams):
            for v in variants:
                assert v.ps is not None
                await settled(v)
                before = own_cpu(v.ps)
                _, frames = await stream_once(client, v.url, "anthropic" if s % 2 == 0 else "openai", tokens)
                await settled(v)
                raw[v.name]["stream_cpu_s"] += own_cpu(v.ps) - before
                raw[v.name]["frames"] += frames
    return raw


def summarize_variants(raw: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    base = next(iter(raw))
    out: dict[str, dict[str, Any]] = {}
    for name, r in raw.items():
        cpu = summarize([x * 1000 for x in r["cpu_s"]])
        out[name] = {
            "requests": len(r["cpu_s"]),
            "wall_ms": summarize([x * 1000 for x in r["wall_s"]]),
            "cpu_ms_per_request": cpu,
            "us_per_event": r["stream_cpu_s"] * 1e6 / r["frames"] if r["frames"] else None,
        }
    for entry in out.values():
        entry["cpu_vs_first"] = ratio(entry["cpu_ms_per_request"]["mean"], out[base]["cpu_ms_per_request"]["mean"])
        entry["event_vs_first"] = ratio(entry["us_per_event"], out[base]["us_per_event"])
    return out


def render(summary: dict[str, dict[str, Any]]) -> str:
    rows = []
    for name, e in summary.items():
        cpu = e["cpu_ms_per_request"]
        rows.append([name, str(e["requests"]), f"{e['wall_ms']['p50']:.0f}", f"{cpu['p50']:.2f}", f"{cpu['mean']:.2f}",
                     f"{e['cpu_vs_first']:.2f}x", "-" if e["us_per_event"] is None else f"{e['us_per_event']:.0f}",
                     "-" if e["event_vs_first"] is None else f"{e['event_vs_first']:.2f}x"])
    return table(["variant", "n", "wall p50 ms", "proxy CPU-ms/req p50", "mean", "vs first", "us/event",
                  "vs first"], rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(int(argv[1]), argv[2], argv[3], argv[4])
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.hotpath", description=__doc__)
    parser.add_argument("--variants", default=DEFAULT_VARIANTS,
                        help="loop/http[+orjson], comma-separated; the first is the reference")
    parser.add_argument("--rounds", type=int, default=30, help="short requests per variant (default 30)")
    parser.add_argument("--streams", type=int, default=4, help="long streams per variant (default 4)")
    parser.add_argument("--tokens", type=int, default=2000, help="deltas per long stream (default 2000)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    skipped = [n for n in names if n.endswith("+orjson") and importlib.util.find_spec("orjson") is None]
    names = [n for n in names if n not in skipped]
    if skipped:
        print(f"skipped (orjson is not installed): {', '.join(skipped)}", file=sys.stderr)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    upstream = FakeUpstreamProcess()
    variants = [Variant(name) for name in names]
    try:
        upstream.start()
        with cli_environment(upstream.url):
            try:
                for v in variants:
                    v.start()
                raw = asyncio.run(measure(variants, args.rounds, args.streams, args.tokens, log))
            finally:
                for v in variants:
                    v.stop()
    finally:
        upstream.stop()
    summary = summarize_variants(raw)
    print(render(summary))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"hotpath-{stamp}.json"
    path.write_text(json.dumps({"summary": summary, "raw": raw, "rounds": args.rounds, "streams": args.streams,
                                "tokens": args.tokens}, indent=2) + "\n", encoding="utf-8")
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
