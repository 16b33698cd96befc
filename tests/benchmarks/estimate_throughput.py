"""Estimate throughput and memory against validate, on 200 MB / 50,000-request chat batch files.

Run: ``.venv/bin/python tests/benchmarks/estimate_throughput.py [--rounds 3] [--keep DIR]``

Two files of 50,000 lines, just under 200 MB each:

- ``unique``: the validate benchmark's file (``validate_throughput.generate``): a short system
  prompt and ~4 KB of text of its own in every request, so every byte goes through the tokenizer;
- ``shared``: a ~3.5 KB instructions prompt shared by every request and ~0.5 KB of text of its own
  (the usual shape of a classification batch: the counting cache counts the shared prompt once).

For each file, ``validate_file`` and ``estimate_file`` run each in a fresh subprocess,
interleaved over ``--rounds`` rounds (best round kept), and are compared in CPU time of the
measured call (a busy machine disturbs it far less than wall time; wall time is printed too).

Targets (exit 1 if one is missed): estimate time <= 2x validate time on each file; estimate
peak RSS <= 150 MB (memory flat with file size). The token counts are exact (tiktoken,
``o200k_base``): the script fails if the estimate fell back to the approximation.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from validate_throughput import LINES, TARGET_BYTES, generate  # noqa: E402

MAX_RATIO = 2.0
MAX_RSS_MB = 150.0


def generate_shared(path: Path, lines: int = LINES, total_bytes: int = TARGET_BYTES, seed: int = 11) -> int:
    """A valid chat file whose requests share a long instructions prompt (one distinct string)."""
    rng = random.Random(seed)
    words = (
        "review product delivery price quality support refund answer label positive negative mixed".split()
    )
    instructions = "You label customer reviews. " + " ".join(rng.choice(words) for _ in range(500))
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
                    "max_tokens": 16,
                    "messages": [
                        {"role": "system", "content": instructions},
                        {"role": "user", "content": ""},
                    ],
                },
            }
            room = per_line - len(json.dumps(line).encode()) - 1
            line["body"]["messages"][1]["content"] = " ".join(  # type: ignore[index]
                rng.choice(words) for _ in range(room // 8)
            )[:room]
            data = (json.dumps(line) + "\n").encode()
            out.write(data)
            written += len(data)
    return written


def _child(mode: str, path: str) -> None:
    """One measurement in this (fresh) process, printed as JSON."""
    from airflow_batch_provider.batch_file import validate_file
    from airflow_batch_provider.batch_file.estimate import estimate_file, load_encoding

    load_encoding("o200k_base")  # loading the encoding's files is not counted: once per process
    start, cpu_start = time.perf_counter(), time.process_time()
    extra: dict = {}
    if mode == "validate":
        report = validate_file(path, max_problems=5)
        if not report.ok:
            raise SystemExit("benchmark file is invalid:\n" + report.format())
        count = report.request_count
    elif mode == "estimate":
        result = estimate_file(path)
        count = result.requests
        extra = {"input_tokens": result.input_tokens, "exact": result.exact, "summary": result.summary()}
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "mode": mode,
                "seconds": seconds,
                "cpu": cpu,
                "lines": count,
                "peak_rss_mb": peak_kb / 1024,
                **extra,
            }
        )
    )


def _measure(mode: str, path: Path) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise SystemExit(f"{mode} run failed:\n{done.stderr[-4000:]}{done.stdout[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _seed_cache() -> None:
    """The tokenizer's files, offline, as the tests get them (never downloaded here)."""
    if "TIKTOKEN_CACHE_DIR" not in os.environ:
        os.environ["TIKTOKEN_CACHE_DIR"] = os.path.join(
            tempfile.gettempdir(), "airflow-batch-provider-tiktoken"
        )
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from tests import tiktoken_cache

    tiktoken_cache.seed(os.environ["TIKTOKEN_CACHE_DIR"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the files here and keep them")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return 0
    _seed_cache()
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name, make in (("unique", generate), ("shared", generate_shared)):
            path = folder / f"{name}_chat_batch.jsonl"
            size = make(path)
            mb = size / 1e6
            print(f"\nfile {name}: {LINES:,} lines, {size:,} bytes ({mb:.1f} MB)")
            runs: dict[str, list[dict]] = {}
            for _ in range(args.rounds):  # interleaved: load from other processes hits both modes
                for mode in ("validate", "estimate"):
                    runs.setdefault(mode, []).append(_measure(mode, path))
            cpu = {mode: min(r["cpu"] for r in results) for mode, results in runs.items()}
            for mode, results in runs.items():
                wall = min(r["seconds"] for r in results)
                print(f"{mode:>9}: {cpu[mode]:6.2f} s CPU  {mb / cpu[mode]:6.1f} MB/s  [{wall:6.2f} s wall]")
            last = runs["estimate"][-1]
            print(f"   result: {last['summary']}")
            ratio = cpu["estimate"] / cpu["validate"]
            rss = max(r["peak_rss_mb"] for r in runs["estimate"])
            checks += [
                (f"{name}: estimate/validate time = {ratio:.2f}x", ratio <= MAX_RATIO, f"<= {MAX_RATIO}x"),
                (f"{name}: estimate peak RSS = {rss:.1f} MB", rss <= MAX_RSS_MB, f"<= {MAX_RSS_MB:.0f} MB"),
                (f"{name}: counts exact (tiktoken)", bool(last["exact"]), "exact"),
            ]
    print()
    failed = 0
    for text, ok, target in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text} (target {target})")
        failed += not ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
