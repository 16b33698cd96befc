"""How many deferred batch waits can one triggerer event loop carry?

Runs N ``OpenAIBatchTrigger`` instances in ONE asyncio event loop against a
small OpenAI-compatible Batch server (separate process, 50 ms latency per
request, every batch completes ``--complete-after`` seconds after it was
created, request counts rising linearly until then), poll interval 1 s, on three
servers: one that lists newest first, a busy shared account (``UNRELATED`` other
batches interleaved per one of ours, listed newest first) and one without the list
endpoint. Prints, per row:

- seconds until every trigger fired (from the moment the batches were created),
- the worst event-loop stall: the largest lateness of a 10 ms ticker, raw (and,
  for diagnosis, minus GC time and minus time spent waiting for a CPU),
- the worst CPU stall: the same lateness bounded by the CPU the process used meanwhile beyond
  the tick (what it would be on an idle machine: the loop's own work and its GC),
- RSS growth per trigger, CPU seconds of the run, HTTP requests the server saw.

Rows with a target (``TARGETS``, from issue 14) say PASS/FAIL; the script exits 1
when one is missed. The full run (the default, what ``make bench`` runs) adds a
sweep of N on the busy account for ours and for the official provider's
``OpenAIBatchTrigger`` and common.ai's ``LLMBatchTrigger`` (each in a fresh child
process, given an ``AIRFLOW_CONN_...`` to the same server), and draws all fired and
worst stall against N into ``docs/benchmarks/trigger_scale.svg`` (hand-rolled SVG).

    .venv/bin/python tests/benchmarks/trigger_scale.py               # targets, sweep, peers, chart
    .venv/bin/python tests/benchmarks/trigger_scale.py --quick       # the target rows only
    .venv/bin/python tests/benchmarks/trigger_scale.py --rows ours:10000:nolist --profile /tmp/p.prof
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_KEY = "sk-bench-not-a-secret"
UNRELATED = 5  # a busy shared account: other users' batches per one of ours, interleaved
# (n, server mode): (all fired s, worst stall s, KB per trigger), as issue 14 states them
TARGETS: dict[tuple[int, str], tuple[float, float | None, float | None]] = {
    (1000, "lists"): (5.0, 0.050, 20.0),
    (1000, "busy"): (5.0, 0.050, 20.0),
    (1000, "nolist"): (5.0, 0.050, 20.0),
    (10_000, "busy"): (10.0, 0.100, None),
    (10_000, "nolist"): (20.0, None, None),
}
SVG = Path(__file__).resolve().parents[2] / "docs" / "benchmarks" / "trigger_scale.svg"

# --------------------------------------------------------------------------------------------------
# The server: a minimal asyncio HTTP/1.1 Batch API (retrieve, list with cursors, cancel).
# --------------------------------------------------------------------------------------------------


class BatchServer:
    """Just enough of the Batch API for polling, with fixed latency and a completion clock."""

    def __init__(self, latency: float) -> None:
        self.latency = latency
        self.batches: dict[str, dict[str, Any]] = {}  # insertion order = creation order
        self.order: list[str] = []  # newest first, as the API lists them
        self.index: dict[str, int] = {}
        self.stats: dict[str, int] = {"retrieve": 0, "list": 0, "cancel": 0, "other": 0}
        self.generation = 0
        self.listing = True
        self.keys: list[str] | None = None  # accepted Bearer keys; None: any
        self.by_key: dict[str, int] = {}

    def create(self, n: int, complete_after: float, total: int = 100, unrelated: int = 0) -> list[str]:
        """Create ``n`` batches; with ``unrelated`` > 0, that many batches of other users
        after each one (a busy shared account: ours are interleaved with theirs in the list)."""
        self.generation += 1
        now = time.time()
        ids = []
        for i in range(n):
            bid = f"batch_g{self.generation}_{i:06d}"
            self.batches[bid] = {"start": now, "complete_after": complete_after, "total": total}
            ids.append(bid)
            for j in range(unrelated):
                # Someone else's: some finished long ago, most running for hours.
                after = 0.0 if j % 3 == 0 else 86_400.0
                self.batches[f"batch_g{self.generation}_{i:06d}_x{j}"] = {
                    "start": now,
                    "complete_after": after,
                    "total": total,
                }
        self.order = list(reversed(list(self.batches)))
        self.index = {bid: i for i, bid in enumerate(self.order)}
        return ids

    def view(self, bid: str) -> dict[str, Any]:
        b = self.batches[bid]
        now = time.time()
        elapsed = now - b["start"]
        total = b["total"]
        status = "in_progress"
        done = min(total, int(total * elapsed / b["complete_after"])) if b["complete_after"] > 0 else total
        stamps: dict[str, Any] = {"in_progress_at": int(b["start"])}
        if b.get("cancelled_at"):
            status = "cancelled"
            stamps["cancelled_at"] = int(b["cancelled_at"])
        elif elapsed >= b["complete_after"]:
            status, done = "completed", total
            stamps["completed_at"] = int(b["start"] + b["complete_after"])
        return {
            "id": bid,
            "object": "batch",
            "endpoint": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "input_file_id": f"file-in-{bid}",
            "completion_window": "24h",
            "status": status,
            "created_at": int(b["start"]),
            "output_file_id": f"file-out-{bid}" if status == "completed" else None,
            "error_file_id": None,
            "errors": None,
            "request_counts": {"total": total, "completed": done, "failed": 0},
            "metadata": {"bench": "trigger_scale"},
            **stamps,
        }

    async def route(self, method: str, target: str, body: bytes, key: str = "") -> tuple[int, Any]:
        url = urlsplit(target)
        path = url.path
        if path.startswith("/v1/") and self.keys is not None:
            self.by_key[key] = self.by_key.get(key, 0) + 1
            if key not in self.keys:
                self.stats["other"] += 1
                return 401, _error("Incorrect API key provided.", "invalid_api_key")
        if path.startswith("/v1/batches"):
            rest = path[len("/v1/batches") :].strip("/")
            if method == "GET" and not rest:
                self.stats["list"] += 1
                if not self.listing:  # a service without the list endpoint
                    return 404, _error("Unknown route GET /v1/batches", "not_found")
                q = parse_qs(url.query)
                limit = max(1, min(100, int(q.get("limit", ["20"])[0])))
                start = 0
                if "after" in q:
                    after = q["after"][0]
                    if after not in self.index:
                        return 404, _error(f"No batch found with id '{after}'.", "not_found")
                    start = self.index[after] + 1
                ids = self.order[start : start + limit]
                data = [self.view(b) for b in ids]
                return 200, {
                    "object": "list",
                    "data": data,
                    "first_id": ids[0] if ids else None,
                    "last_id": ids[-1] if ids else None,
                    "has_more": start + limit < len(self.order),
                }
            parts = rest.split("/")
            bid = parts[0]
            if bid not in self.batches:
                return 404, _error(f"No batch found with id '{bid}'.", "not_found")
            if method == "GET" and len(parts) == 1:
                self.stats["retrieve"] += 1
                return 200, self.view(bid)
            if method == "POST" and parts[1:] == ["cancel"]:
                self.stats["cancel"] += 1
                self.batches[bid].setdefault("cancelled_at", time.time())
                return 200, self.view(bid)
        if path == "/_bench/create" and method == "POST":
            req = json.loads(body or b"{}")
            ids = self.create(
                int(req["n"]), float(req["complete_after"]), unrelated=int(req.get("unrelated", 0))
            )
            return 200, {"ids": ids, "created_at": time.time()}
        if path == "/_bench/stats":
            return 200, dict(self.stats)
        if path == "/_bench/listing" and method == "POST":
            self.listing = bool(json.loads(body or b"{}").get("enabled", True))
            return 200, {"listing": self.listing}
        if path == "/_bench/keys" and method == "POST":
            keys = json.loads(body or b"{}").get("keys")
            self.keys = list(keys) if keys is not None else None
            return 200, {"keys": len(self.keys) if self.keys is not None else None}
        if path == "/_bench/requests_by_key":
            return 200, dict(self.by_key)
        if path == "/_bench/reset_stats" and method == "POST":
            self.stats = dict.fromkeys(self.stats, 0)
            return 200, {}
        self.stats["other"] += 1
        return 404, _error(f"Unknown route {method} {path}", "not_found")

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                length = 0
                key = ""
                for line in lines[1:]:
                    name = line[:15].lower()
                    if name == "content-length:":
                        length = int(line[15:].strip())
                    elif name.startswith("authorization:"):
                        key = line[14:].strip().removeprefix("Bearer ")
                body = await reader.readexactly(length) if length else b""
                is_bench = target.startswith("/_bench")
                if not is_bench and self.latency:
                    await asyncio.sleep(self.latency)
                try:
                    status, payload = await self.route(method, target, body, key)
                except Exception as exc:  # a bug here must show, not hang the client
                    status, payload = 500, _error(f"benchmark server error: {exc!r}", "server_error")
                data = json.dumps(payload).encode()
                reason = {200: "OK", 401: "Unauthorized", 404: "Not Found"}.get(status, "Error")
                writer.write(
                    f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\nx-request-id: req_bench\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


async def _serve(port: int, latency: float) -> None:
    server = BatchServer(latency)
    srv = await asyncio.start_server(server.handle, "127.0.0.1", port, backlog=8192, limit=1 << 20)
    print(f"listening on http://127.0.0.1:{srv.sockets[0].getsockname()[1]}/v1", flush=True)
    await srv.serve_forever()


def _run_server(port: int, latency: float) -> None:
    try:
        import uvloop

        uvloop.run(_serve(port, latency))
    except ImportError:  # pragma: no cover - uvloop is optional
        asyncio.run(_serve(port, latency))


def start_server(latency: float) -> tuple[subprocess.Popen[str], str]:
    """Start the server in its own process (it must not share the measured loop); return its URL."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"benchmark server did not start: {line!r}")
    return proc, line.removeprefix("listening on ")


def _http(base_url: str, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
    import urllib.request

    root = base_url.removesuffix("/v1")
    data = json.dumps(payload).encode() if payload is not None else None
    req = urllib.request.Request(root + path, data=data, method=method)
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------------------------------
# The worker: runs N triggers of one implementation in one loop, measures, prints one JSON line.
# --------------------------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _cpu_wait() -> float:
    """Seconds this thread has spent runnable but waiting for a CPU (Linux schedstat; else 0)."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            return int(f.read().split()[1]) / 1e9
    except (OSError, ValueError, IndexError):
        return 0.0


def _make_triggers(impl: str, ids: list[str], conn_id: str, poll: float, deadline: float) -> list[Any]:
    if impl == "ours":
        from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger

        return [
            OpenAIBatchTrigger(
                conn_id=conn_id,
                batch_ids=[bid],
                poll_interval=poll,
                max_poll_interval=10 * poll,
                deadline=deadline,
            )
            for bid in ids
        ]
    if impl == "official":
        from airflow.providers.openai.triggers.openai import OpenAIBatchTrigger as Official

        return [Official(conn_id=conn_id, batch_id=bid, poll_interval=poll, end_time=deadline) for bid in ids]
    if impl == "common_ai":
        from airflow.providers.common.ai.triggers.llm_batch import LLMBatchTrigger

        return [
            LLMBatchTrigger(
                llm_conn_id=conn_id,
                adapter="openai",
                batch_id=bid,
                poll_interval=poll,  # type: ignore[arg-type]
                end_time=deadline,
                cancel_on_kill=False,
                cancel_on_timeout=False,
                timeout=int(deadline - time.time()),
            )
            for bid in ids
        ]
    raise ValueError(impl)


async def _measure(impl: str, n: int, base_url: str, conn_id: str, args: argparse.Namespace) -> dict:
    import gc

    # Steady state, as in a triggerer that already runs other triggers: one trigger of this
    # implementation runs to completion first, so one-time imports and client set-up
    # (connection lookup, TLS context) happen outside the measured window.
    warm = await asyncio.to_thread(_http, base_url, "POST", "/_bench/create", {"n": 1, "complete_after": 0})
    async for _ in _make_triggers(impl, warm["ids"], conn_id, args.poll, time.time() + 60)[0].run():
        break
    gc.collect()
    if not args.no_gc_freeze:
        # A full collection of the ~200k objects Airflow leaves after import takes 0.3-0.5 s
        # here, whoever allocates; freezing them (as Airflow does before forking workers)
        # keeps the stall figure about the triggers. --no-gc-freeze shows it with them.
        gc.freeze()
    gc_pauses: list[float] = []
    gc_start = [0.0]
    gc_total = [0.0]

    def on_gc(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_start[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_start[0])
            gc_total[0] += gc_pauses[-1]

    gc.callbacks.append(on_gc)
    rss0 = _rss()
    peak = rss0
    max_lag = max_lag_no_gc = max_lag_own = max_cpu_lag = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal max_lag, max_lag_no_gc, max_lag_own, max_cpu_lag, peak
        tick = 0.010
        loop = asyncio.get_running_loop()
        expected = loop.time() + tick
        i = 0
        gc_seen, waited_seen = gc_total[0], _cpu_wait()
        cpu_seen = time.process_time()
        while not stop.is_set():
            await asyncio.sleep(max(0.0, expected - loop.time()))
            now = loop.time()
            lag = now - expected
            max_lag = max(max_lag, lag)
            # The CPU the process used since the last tick beyond the tick itself: what this
            # lateness would be on an idle machine (the loop's work and GC, not other processes).
            cpu_now = time.process_time()
            max_cpu_lag = max(max_cpu_lag, min(lag, cpu_now - cpu_seen - tick))
            cpu_seen = cpu_now
            # the same lateness minus the time the garbage collector ran meanwhile, and minus
            # the time this thread sat ready but without a CPU (other processes on the machine)
            in_gc, waited = gc_total[0] - gc_seen, _cpu_wait() - waited_seen
            max_lag_no_gc = max(max_lag_no_gc, lag - in_gc)
            max_lag_own = max(max_lag_own, lag - in_gc - waited)
            gc_seen, waited_seen = gc_total[0], waited_seen + waited
            expected = now + tick
            i += 1
            if i % 20 == 0:
                peak = max(peak, _rss())

    unrelated = UNRELATED if args.mode == "busy" else 0
    created = await asyncio.to_thread(
        _http,
        base_url,
        "POST",
        "/_bench/create",
        {"n": n, "complete_after": args.complete_after, "unrelated": unrelated},
    )
    await asyncio.to_thread(_http, base_url, "POST", "/_bench/reset_stats", {})
    t0 = time.time()
    deadline = t0 + args.budget
    triggers = _make_triggers(impl, created["ids"], conn_id, args.poll, deadline)
    fired: list[float] = []
    statuses: dict[str, int] = {}
    samples: list[str] = []

    async def one(trigger: Any) -> None:
        async for event in trigger.run():
            fired.append(time.time())
            key = str(event.payload.get("status"))
            if key == "error":
                key += ":" + str(event.payload.get("reason") or event.payload.get("termination_reason"))
            statuses[key] = statuses.get(key, 0) + 1
            if key != "success" and len(samples) < 3:
                samples.append(str(event.payload.get("message"))[:500])
            return

    poller = None
    if impl == "ours":  # hold the shared poller to report its counters
        from airflow_batch_provider.triggers.poller import get_poller

        poller = get_poller(conn_id)  # the instance every trigger below will share
    tick_task = asyncio.create_task(ticker())
    await asyncio.sleep(0.05)  # let the ticker settle before the herd arrives
    cpu0 = time.process_time()
    profile = None
    if args.profile:
        import cProfile

        profile = cProfile.Profile(time.process_time)  # CPU, not wall: the machine is shared
        profile.enable()
    await asyncio.gather(*(one(t) for t in triggers))
    if profile is not None:
        profile.disable()
        profile.dump_stats(args.profile)
    cpu = time.process_time() - cpu0  # this process's CPU while the triggers ran
    stop.set()
    await tick_task
    gc.callbacks.remove(on_gc)
    peak = max(peak, _rss())
    stats = await asyncio.to_thread(_http, base_url, "GET", "/_bench/stats")
    return {
        "impl": impl,
        "n": n,
        "mode": args.mode,
        "cpu_s": round(cpu, 1),
        "all_fired_s": round(max(fired) - created["created_at"], 2) if fired else None,
        "first_fired_s": round(min(fired) - created["created_at"], 2) if fired else None,
        "worst_stall_ms": round(max_lag * 1000, 1),
        "worst_stall_excl_gc_ms": round(max(max_lag_no_gc, 0.0) * 1000, 1),
        "worst_stall_excl_gc_cpu_wait_ms": round(max(max_lag_own, 0.0) * 1000, 1),
        "worst_stall_cpu_ms": round(max(max_cpu_lag, 0.0) * 1000, 1),
        "worst_gc_ms": round(max(gc_pauses, default=0.0) * 1000, 1),
        "gc_total_ms": round(sum(gc_pauses) * 1000, 1),
        "rss_kb_per_trigger": round((peak - rss0) / 1024 / n, 1),
        "events": statuses,
        "requests": stats,
        "error_samples": samples,
        "poller": dict(poller.stats) if poller is not None else None,
    }


def _worker(args: argparse.Namespace) -> None:
    conn_id = "bench_openai"
    os.environ[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
        {"conn_type": "openai", "host": args.base_url, "password": API_KEY}
    )
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    # Measure polling, not log formatting: every implementation logs at WARNING and above.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    result = asyncio.run(_measure(args.worker, args.worker_n, args.base_url, conn_id, args))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------------
# The driver.
# --------------------------------------------------------------------------------------------------


def _run_worker(impl: str, n: int, mode: str, base_url: str, args: argparse.Namespace) -> dict[str, Any]:
    _http(base_url, "POST", "/_bench/listing", {"enabled": mode != "nolist"})
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        impl,
        "--worker-n",
        str(n),
        "--mode",
        mode,
        "--base-url",
        base_url,
        "--poll",
        str(args.poll),
        "--complete-after",
        str(args.complete_after),
        "--budget",
        str(args.budget),
        *(["--no-gc-freeze"] if args.no_gc_freeze else []),
        *(["--profile", args.profile] if args.profile and impl == "ours" else []),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.budget + 600)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout)[-2000:]
    return {"impl": impl, "n": n, "mode": mode, "error": f"worker exited {proc.returncode}: {tail}"}


def _target(r: dict[str, Any]) -> tuple[float, float | None, float | None] | None:
    if r.get("impl") != "ours":
        return None
    return TARGETS.get((r["n"], r.get("mode", ""))) or TARGETS.get((r["n"], "*"))


def _verdict(r: dict[str, Any]) -> tuple[str, bool]:
    """The row's targets with PASS/FAIL, and whether every one was met."""
    target = _target(r)
    if target is None:
        return "", True
    if "error" in r:
        return "FAIL (no result)", False
    fired_t, stall_t, mem_t = target
    checks = [(f"fired<={fired_t:g}s", (r["all_fired_s"] or 1e9) <= fired_t)]
    if stall_t is not None:
        checks.append((f"stall<={stall_t * 1000:g}ms", r["worst_stall_ms"] <= stall_t * 1000))
    if mem_t is not None:
        checks.append((f"mem<={mem_t:g}KB", r["rss_kb_per_trigger"] <= mem_t))
    text = "  ".join(f"{name}:{'PASS' if ok else 'FAIL'}" for name, ok in checks)
    return text, all(ok for _, ok in checks)


NAMES = {
    "ours": "airflow_batch_provider",
    "official": "providers.openai OpenAIBatchTrigger",
    "common_ai": "providers.common.ai LLMBatchTrigger",
}
MODES = {
    "lists": "lists newest first",
    "busy": f"busy account: lists, {UNRELATED}x unrelated",
    "nolist": "cannot list (retrieve only)",
}


def _svg(results: list[dict[str, Any]], title: str, note: str) -> str:
    """A two-panel log-log line chart (all fired, worst stall) against N: hand-rolled SVG."""
    import math
    from xml.sax.saxutils import escape

    colors = {"ours": "#1f77b4", "official": "#d62728", "common_ai": "#2ca02c"}
    panels = [("all_fired_s", "all fired (s)"), ("worst_stall_ms", "worst loop stall (ms)")]
    width, height, pw, ph, left, top = 960, 430, 380, 280, 70, 60
    rows = [r for r in results if "error" not in r and r.get("mode") == "busy" and r.get("all_fired_s")]
    ns = sorted({r["n"] for r in rows}) or [1]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<text x="{width / 2}" y="40" text-anchor="middle" fill="#555">{escape(note)}</text>',
    ]

    def ticks(lo: float, hi: float) -> list[float]:
        found = []
        for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
            for m in (1, 2, 5):
                v = m * 10**e
                if lo <= v <= hi:
                    found.append(v)
        return found

    for p, (key, label) in enumerate(panels):
        x0 = left + p * (pw + 100)
        values = [r[key] for r in rows if r[key] > 0] or [1.0]
        lo, hi = min(values) / 1.5, max(values) * 1.5
        nlo, nhi = ns[0] / 1.3, ns[-1] * 1.3

        def sx(n: float, x0: float = x0, nlo: float = nlo, nhi: float = nhi) -> float:
            return x0 + pw * (math.log(n) - math.log(nlo)) / (math.log(nhi) - math.log(nlo))

        def sy(v: float, lo: float = lo, hi: float = hi) -> float:
            return top + ph - ph * (math.log(max(v, lo)) - math.log(lo)) / (math.log(hi) - math.log(lo))

        out.append(f'<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
        for v in ticks(lo, hi):
            y = sy(v)
            out.append(f'<line x1="{x0}" y1="{y:.1f}" x2="{x0 + pw}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
        for n in ns:
            x = sx(n)
            out.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + ph}" stroke="#eee"/>')
            out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{n:,}</text>')
        out.append(
            f'<text x="{x0 + pw / 2}" y="{top + ph + 34}" '
            'text-anchor="middle">batches (one trigger each)</text>'
        )
        out.append(
            f'<text x="{x0 - 50}" y="{top + ph / 2}" text-anchor="middle" '
            f'transform="rotate(-90 {x0 - 50} {top + ph / 2})">{escape(label)}</text>'
        )
        for impl, color in colors.items():
            pts = sorted((r["n"], r[key]) for r in rows if r["impl"] == impl and r[key] > 0)
            if not pts:
                continue
            path = " ".join(f"{sx(n):.1f},{sy(v):.1f}" for n, v in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for n, v in pts:
                out.append(f'<circle cx="{sx(n):.1f}" cy="{sy(v):.1f}" r="3.5" fill="{color}"/>')
                out.append(
                    f'<text x="{sx(n) + 5:.1f}" y="{sy(v) - 6:.1f}" fill="{color}" '
                    f'font-size="10">{v:g}</text>'
                )
    y = top + ph + 56
    for i, (impl, color) in enumerate(colors.items()):
        x = left + i * 300
        out.append(f'<rect x="{x}" y="{y - 10}" width="14" height="4" fill="{color}"/>')
        out.append(f'<text x="{x + 20}" y="{y - 4}">{escape(NAMES[impl])}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _write_chart(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    import datetime
    import platform

    day = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    note = (
        f"{day}, {machine}; {MODES['busy']}; {args.latency * 1000:g} ms latency; "
        f"batches done at {args.complete_after:g} s; poll {args.poll:g} s; log scales"
    )
    os.makedirs(os.path.dirname(os.path.abspath(args.svg)), exist_ok=True)
    with open(args.svg, "w") as f:
        f.write(_svg(results, "One triggerer event loop: N batch waits", note))
    print(f"chart: {args.svg}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="the target rows only: no sweep, no peers, no chart")
    p.add_argument("--sweep", type=int, nargs="*", default=[100, 300, 1000, 3000, 10_000], help="N for ours")
    p.add_argument("--peer-n", type=int, nargs="*", default=[100, 300, 1000], help="N for the peers")
    p.add_argument("--peers", choices=["all", "none", "official", "common_ai"], default="all")
    p.add_argument("--rows", nargs="*", help="only these rows, as impl:n:mode (e.g. ours:10000:nolist)")
    p.add_argument("--latency", type=float, default=0.05, help="server latency per request, seconds")
    p.add_argument("--complete-after", type=float, default=3.0, help="batch completes this long after start")
    p.add_argument("--poll", type=float, default=1.0, help="poll interval, seconds")
    p.add_argument("--budget", type=float, default=300.0, help="deadline given to every trigger, seconds")
    p.add_argument("--no-gc-freeze", action="store_true", help="keep import-time objects in the GC")
    p.add_argument("--svg", default=str(SVG), help="where to write the chart ('' for none)")
    p.add_argument("--profile", help="cProfile the triggers of ours into this file")
    p.add_argument("--chart-from", nargs="*", help="only draw the chart from these runs' printed output")
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="busy", help=argparse.SUPPRESS)
    p.add_argument("--base-url", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve:
        _run_server(0, args.latency)
        return 0
    if args.worker:
        _worker(args)
        return 0
    if args.chart_from:
        rows = []
        for name in args.chart_from:
            with open(name) as f:
                rows += [r for line in f if line.startswith("raw: ") for r in json.loads(line[5:])]
        _write_chart(rows, args)
        return 0

    runs: list[tuple[str, int, str]] = [("ours", n, mode) for (n, mode) in TARGETS]
    if args.rows:
        runs = [(i, int(n), m) for i, n, m in (row.split(":") for row in args.rows)]
    elif not args.quick:
        peers = {"all": ["official", "common_ai"], "none": []}.get(args.peers, [args.peers])
        runs += [("ours", n, "busy") for n in args.sweep if ("ours", n, "busy") not in runs]
        runs += [(peer, n, "busy") for peer in peers for n in args.peer_n]
    proc, base_url = start_server(args.latency)
    try:
        print(
            f"server {base_url}: latency {args.latency * 1000:g} ms, batches complete "
            f"{args.complete_after:g} s after creation; poll interval {args.poll:g} s; "
            f"one event loop per row (fresh process); stall = lateness of a 10 ms ticker, raw; "
            f"import-time heap {'NOT ' if args.no_gc_freeze else ''}frozen (gc.freeze)\n",
            flush=True,
        )
        header = (
            f"{'implementation':<36}{'N':>6}  {'server':<32}{'all fired s':>12}{'worst stall ms':>15}"
            f"{'excl. GC & CPU wait':>20}{'CPU stall ms':>13}{'KB/trigger':>11}{'CPU s':>7}{'requests':>9}"
            "  events / targets"
        )
        print(header)
        print("-" * len(header))
        results, missed = [], []
        for impl, n, mode in runs:
            r = _run_worker(impl, n, mode, base_url, args)
            results.append(r)
            verdict, ok = _verdict(r)
            if not ok:
                missed.append(f"{impl} N={n} {mode}: {verdict}")
            if "error" in r:
                print(f"{NAMES[impl]:<36}{n:>6}  {MODES[mode]:<32}ERROR {r['error'][-600:]}", flush=True)
                continue
            reqs = sum(r["requests"].values())
            print(
                f"{NAMES[impl]:<36}{n:>6}  {MODES[mode]:<32}{r['all_fired_s']!s:>12}{r['worst_stall_ms']:>15}"
                f"{r['worst_stall_excl_gc_cpu_wait_ms']:>20}{r.get('worst_stall_cpu_ms', '-')!s:>13}"
                f"{r['rss_kb_per_trigger']:>11}{r['cpu_s']:>7}"
                f"{reqs:>9}  {r['events']} {verdict}",
                flush=True,
            )
        print("\nraw: " + json.dumps(results))
        if args.svg and not args.quick and not args.rows:
            _write_chart(results, args)
        if missed:
            print("\nMISSED TARGETS:\n  " + "\n  ".join(missed))
            return 1
        print("\nevery target met")
        return 0
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
