"""Validator throughput and memory on a 200 MB / 50,000-line chat batch file.

Run: ``.venv/bin/python tests/benchmarks/validate_throughput.py [--rounds 3] [--keep DIR]``

Generates the file in a temporary directory, then times, each in a fresh subprocess
and interleaved over ``--rounds`` rounds (best round kept):

- ``json``: a bare ``json.loads`` loop over the file's lines (read with ``iter_lines``);
- ``validate``: ``validate_file`` on the same file (also reports its peak RSS);
- ``json-mem`` / ``validate-mem``: the same two over lines already in memory (no I/O),
  the stricter CPU-only comparison.

Throughput is compared in CPU time of the measured loop (best round), which a busy
machine disturbs far less than wall time; wall time is printed beside it.

Targets (exit 1 if one is missed): validator throughput >= 0.5x the bare loop, both
streamed and in memory; validator peak RSS <= 150 MB.

Then ``upload``: ``OpenAIBatchHook.upload_file`` sends the file to an emulator running in
another process; the uploading process's peak RSS must stay <= 150 MB (``--upload-only``
skips the validator runs).
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MIN_RATIO = 0.5
MAX_RSS_MB = 150.0
LINES = 50_000
TARGET_BYTES = 200 * 1024 * 1024 - 64 * 1024  # just under the service limit: the file is valid

_WORDS = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no what up out who them some "
    "classify summarize sentiment review product customer delivery quality price support refund answer "
    "café naïve résumé über straße façade déjà 東京 データ 요약 данные"
).split()


def generate(path: Path, lines: int = LINES, total_bytes: int = TARGET_BYTES, seed: int = 7) -> int:
    """Write a valid chat batch file of ``lines`` lines and about ``total_bytes`` bytes."""
    rng = random.Random(seed)
    corpus = " ".join(rng.choice(_WORDS) for _ in range(400_000))
    per_line = total_bytes // lines
    written = 0
    with path.open("wb") as out:
        for i in range(lines):
            line = {
                "custom_id": f"request-{i:06d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "temperature": 0,
                    "max_tokens": 64,
                    "messages": [
                        {"role": "system", "content": "Classify the review as positive, negative or mixed."},
                        {"role": "user", "content": ""},
                    ],
                },
            }
            empty = len(json.dumps(line, ensure_ascii=False).encode()) + 1
            start = rng.randrange(len(corpus) - per_line)
            text = corpus[start : start + per_line - empty]
            line["body"]["messages"][1]["content"] = text  # type: ignore[index]
            data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
            while len(data) > per_line:  # multi-byte characters: trim to the budget
                text = text[: -(1 + (len(data) - per_line) // 4)]
                line["body"]["messages"][1]["content"] = text  # type: ignore[index]
                data = (json.dumps(line, ensure_ascii=False) + "\n").encode()
            out.write(data)
            written += len(data)
    return written


def _child(mode: str, path: str) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    from airflow_batch_provider.batch_file import iter_lines, validate_file, validate_lines

    in_memory = mode.endswith("-mem")
    if in_memory:
        with open(path, "rb") as fileobj:
            lines = list(iter_lines(fileobj))
    loads = json.loads
    start, cpu_start = time.perf_counter(), time.process_time()
    count = 0
    if mode == "json":
        with open(path, "rb") as fileobj:
            for line in iter_lines(fileobj):
                loads(line)
                count += 1
    elif mode == "json-mem":
        for line in lines:
            loads(line)
            count += 1
    elif mode == "validate":
        report = validate_file(path, max_problems=5)
        count = report.request_count
    elif mode == "validate-mem":
        report = validate_lines(lines, max_problems=5)
        count = report.request_count
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if mode.startswith("validate") and not report.ok:
        raise SystemExit("benchmark file is invalid:\n" + report.format())
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    print(
        json.dumps(
            {"mode": mode, "seconds": seconds, "cpu": cpu, "lines": count, "peak_rss_mb": peak_kb / 1024}
        )
    )


def _measure(mode: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{mode} run failed:\n{done.stderr}{done.stdout}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _upload_child(path: str) -> None:
    """Upload ``path`` with ``OpenAIBatchHook.upload_file`` to an emulator in another process; print RSS."""
    import os

    import psutil

    from airflow_batch_provider.emulator.testing import running_emulator

    with (
        tempfile.TemporaryDirectory() as data_dir,
        running_emulator(profile="instant", mode="subprocess", data_dir=Path(data_dir)) as emulator,
    ):
        os.environ["AIRFLOW_CONN_OPENAI_BENCH"] = json.dumps(
            {"conn_type": "openai", "host": emulator.base_url, "password": emulator.api_key}
        )
        from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

        hook = OpenAIBatchHook("openai_bench")
        hook.get_conn()
        baseline = psutil.Process().memory_info().rss / 2**20  # Airflow + SDK imported, client built
        size = Path(path).stat().st_size
        start = time.perf_counter()
        uploaded = hook.upload_file(Path(path))
        seconds = time.perf_counter() - start
        with open(path, "rb") as lines:  # an iterable of lines: spooled to a temporary file first
            start = time.perf_counter()
            spooled = hook.upload_file(lines.__iter__(), filename="spooled.jsonl")
            spooled_seconds = time.perf_counter() - start
        if uploaded.bytes != size or spooled.bytes != size:
            raise SystemExit(f"uploaded {uploaded.bytes} and {spooled.bytes} bytes of {size}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process only, not the emulator
    result = {"peak_rss_mb": peak, "baseline_rss_mb": baseline, "seconds": seconds, "bytes": size}
    print(json.dumps({**result, "spooled_seconds": spooled_seconds}))


def upload_benchmark(path: Path) -> dict:
    """Upload ``path`` through the hook to the emulator (a separate process) and return
    ``{"peak_rss_mb", "baseline_rss_mb", "seconds", "bytes"}`` of the uploading process."""
    done = subprocess.run(
        [sys.executable, __file__, "--upload-child", str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"upload run failed:\n{done.stderr[-4000:]}{done.stdout[-2000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    mb, peak, base = result["bytes"] / 1e6, result["peak_rss_mb"], result["baseline_rss_mb"]
    print(
        f"upload (hook, path): {mb:.1f} MB in {result['seconds']:.2f} s ({mb / result['seconds']:.1f} MB/s); "
        f"from an iterable of lines (spooled): {result['spooled_seconds']:.2f} s"
    )
    print(
        f"upload client RSS: {base:.1f} MB before (Airflow + openai imported, client built), "
        f"peak {peak:.1f} MB over both uploads (+{peak - base:.1f} MB)"
    )
    return dict(result)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the file here and keep it")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    parser.add_argument("--upload-child", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--upload-only", action="store_true", help="measure only the hook upload")
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    if args.upload_child:
        _upload_child(args.upload_child)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        path = (args.keep or Path(tmp)) / "chat_batch.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        size = generate(path)
        mb = size / 1e6
        print(f"file: {path.name}, {LINES:,} lines, {size:,} bytes ({mb:.1f} MB = {size / 2**20:.1f} MiB)")
        if args.upload_only:
            upload_rss = upload_benchmark(path)["peak_rss_mb"]
            ok = upload_rss <= MAX_RSS_MB
            verdict = "PASS" if ok else "FAIL"
            print(f"{verdict}  upload client peak RSS = {upload_rss:.1f} MB (target <= 150 MB)")
            return 0 if ok else 1
        runs: dict[str, list[dict]] = {}
        for _ in range(args.rounds):  # interleaved, so load from other processes hits every mode
            for mode in ("json", "validate", "json-mem", "validate-mem"):
                runs.setdefault(mode, []).append(_measure(mode, path))
        # CPU time is the figure compared: wall time on a shared machine measures the neighbours.
        cpu = {mode: min(r["cpu"] for r in results) for mode, results in runs.items()}
        print(f"best of {args.rounds} rounds (CPU time; wall time in brackets):")
        for mode, results in runs.items():
            secs, wall = cpu[mode], min(r["seconds"] for r in results)
            print(
                f"{mode:>13}: {secs:5.2f} s  {mb / secs:6.1f} MB/s  {LINES / secs:8,.0f} lines/s"
                f"  [{wall:5.2f} s, {mb / wall:6.1f} MB/s]"
            )
        stream_ratio = cpu["json"] / cpu["validate"]
        mem_ratio = cpu["json-mem"] / cpu["validate-mem"]
        rss = max(r["peak_rss_mb"] for r in runs["validate"])
        checks = [
            (
                f"streamed ratio validate/json = {stream_ratio:.2f}x",
                stream_ratio >= MIN_RATIO,
                f">= {MIN_RATIO}x",
            ),
            (f"in-memory ratio validate/json = {mem_ratio:.2f}x", mem_ratio >= MIN_RATIO, f">= {MIN_RATIO}x"),
            (f"validator peak RSS (worst run) = {rss:.1f} MB", rss <= MAX_RSS_MB, f"<= {MAX_RSS_MB:.0f} MB"),
        ]
        upload = upload_benchmark(path)
        if upload is None:
            print("upload: skipped (upload_benchmark not implemented yet)")
        else:
            upload_rss = upload["peak_rss_mb"]
            checks.append(
                (f"upload client peak RSS = {upload_rss:.1f} MB", upload_rss <= MAX_RSS_MB, "<= 150 MB")
            )
        failed = 0
        for text, ok, target in checks:
            print(f"{'PASS' if ok else 'FAIL'}  {text} (target {target})")
            failed += not ok
        return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
