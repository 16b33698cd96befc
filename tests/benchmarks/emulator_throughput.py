"""Emulator throughput and memory benchmark (issue 2).

Starts the emulator as a subprocess (instant profile, fake backend) and measures:

1. seconds from upload start to output downloaded for a 50,000-request chat batch
   (target <= 20 s on a 2-core machine);
2. the server's peak RSS over the whole run, polled with psutil (target <= 300 MB);
3. RSS growth of the server while a ~200 MB file is uploaded (target: no growth,
   i.e. <= 32 MB of noise): uploads are streamed to disk.

Prints the figures beside the targets; exits 1 if a target is missed.
Run: ``.venv/bin/python tests/benchmarks/emulator_throughput.py [--requests N] [--upload-mb M]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import openai
import psutil

TARGET_SECONDS = 20.0
TARGET_RSS_MB = 300.0
TARGET_UPLOAD_GROWTH_MB = 32.0
MB = 1024 * 1024


class RssMonitor:
    """Poll a process's RSS in a thread; ``peak`` and ``window_peak`` in bytes."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self.window_peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        return int(self.process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.current()
            except psutil.Error:
                return
            self.peak = max(self.peak, rss)
            self.window_peak = max(self.window_peak, rss)
            time.sleep(self.interval)

    def start(self) -> RssMonitor:
        self._thread.start()
        return self

    def reset_window(self) -> None:
        self.window_peak = 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def start_server(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_batch_provider.emulator",
            "--port",
            "0",
            "--profile",
            "instant",
            "--data-dir",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
    )
    assert process.stdout is not None
    line = process.stdout.readline().decode().strip()
    if not line.startswith("Emulator listening on "):
        process.kill()
        raise SystemExit(f"emulator did not start: {line!r}")
    threading.Thread(target=process.stdout.read, daemon=True).start()
    url = line.rsplit(" ", 1)[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the clock starts once the server answers
        try:
            if httpx.get(url.removesuffix("/v1") + "/_emulator/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("emulator did not answer within 30 s")


def write_chat_batch(path: Path, requests: int) -> None:
    with path.open("w") as fh:
        for i in range(requests):
            body = {
                "model": "gpt-4o-mini",
                "messages": [
                    {"role": "system", "content": "You are a terse classifier."},
                    {
                        "role": "user",
                        "content": f"Classify review {i}: the product arrived on time and works.",
                    },
                ],
                "max_tokens": 64,
            }
            fh.write(
                json.dumps(
                    {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
                )
                + "\n"
            )


def write_big_file(path: Path, megabytes: int) -> None:
    filler = "x" * 4000
    line_template = (
        '{"custom_id": "big-%d", "method": "POST", "url": "/v1/chat/completions", '
        '"body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "%s"}]}}\n'
    )
    target = megabytes * MB
    with path.open("w") as fh:
        i = 0
        while fh.tell() < target - 5000:
            fh.write(line_template % (i, filler))
            i += 1


def wait_for(client: openai.OpenAI, batch_id: str, timeout: float = 120.0) -> openai.types.Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        if time.monotonic() > deadline:
            raise SystemExit(f"batch {batch_id} still {batch.status} after {timeout} s")
        time.sleep(0.1)


def verdict(ok: bool) -> str:
    return "OK" if ok else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--upload-mb", type=int, default=200)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as tmp:
        root = Path(tmp)
        batch_file, big_file = root / "chat.jsonl", root / "big.jsonl"
        write_chat_batch(batch_file, args.requests)
        process, base_url = start_server(root / "data")
        monitor = RssMonitor(process.pid).start()
        client = openai.OpenAI(base_url=base_url, api_key="sk-emulator", max_retries=0)
        try:
            started = time.monotonic()
            with batch_file.open("rb") as fh:
                uploaded = client.files.create(file=fh, purpose="batch")
            t_upload = time.monotonic()
            batch = client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            batch = wait_for(client, batch.id)
            t_done = time.monotonic()
            if batch.status != "completed" or not batch.output_file_id:
                raise SystemExit(f"batch ended {batch.status}: {batch.errors}")
            output = root / "output.jsonl"
            with client.files.with_streaming_response.content(batch.output_file_id) as response:
                response.stream_to_file(output)
            finished = time.monotonic()
            with output.open("rb") as fh:
                lines = sum(1 for _ in fh)
            if lines != args.requests:
                raise SystemExit(f"output has {lines} lines, expected {args.requests}")

            write_big_file(big_file, args.upload_mb)
            time.sleep(0.3)
            before = monitor.current()
            monitor.reset_window()
            up_started = time.monotonic()
            with big_file.open("rb") as fh:
                big = client.files.create(file=fh, purpose="batch")
            up_seconds = time.monotonic() - up_started
            time.sleep(0.2)
            growth = max(monitor.window_peak, monitor.current()) - before
        finally:
            monitor.stop()
            process.terminate()
            process.wait(15)

    seconds = finished - started
    peak_mb = monitor.peak / MB
    growth_mb = growth / MB
    results = [
        seconds <= TARGET_SECONDS,
        peak_mb <= TARGET_RSS_MB,
        growth_mb <= TARGET_UPLOAD_GROWTH_MB,
    ]
    print(f"emulator throughput: {args.requests:,} chat requests, instant profile, fake backend")
    print(
        f"  upload start -> output downloaded  {seconds:7.2f} s    target <= {TARGET_SECONDS:.0f} s    "
        f"{verdict(results[0])}"
    )
    print(
        f"    upload {t_upload - started:.2f} s, create+validate+run+finalize (polled) "
        f"{t_done - t_upload:.2f} s, download {finished - t_done:.2f} s; output {lines:,} lines"
    )
    print(
        f"  server peak RSS                    {peak_mb:7.1f} MB   target <= {TARGET_RSS_MB:.0f} MB   "
        f"{verdict(results[1])}"
    )
    print(
        f"  {big.bytes / MB:.0f} MB upload ({up_seconds:.2f} s): server RSS growth {growth_mb:6.1f} MB   "
        f"target <= {TARGET_UPLOAD_GROWTH_MB:.0f} MB   {verdict(results[2])}"
    )
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
