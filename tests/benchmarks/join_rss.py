"""Peak RSS and time of joining batch results to their inputs (results.join_results).

Writes realistic files (chat requests of ~1 KB, chat completions of ~2 KB, shuffled,
with 400s, 429s and expiries in the error file and a resubmission round for the
retryable ones), then runs the join in a fresh subprocess per size and reads that
child's ``ru_maxrss``. Exits 1 when a run needs more memory than the target, or when the
50,000-request join takes longer than ``--target-seconds`` (issue 14: 2 s; CPU seconds are
printed beside the wall clock: on a shared machine they say more).

    .venv/bin/python tests/benchmarks/join_rss.py [--sizes 10000,50000,100000] [--target-mb 150]
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

EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."
WORDS = (
    "batch token model stream index result request latency window shard answer prompt "
    "airflow provider retry expiry cost usage score label review summary"
).split()


def _text(rng: random.Random, chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < chars:
        word = rng.choice(WORDS)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def _line(obj: object) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def _body(rng: random.Random, i: int) -> dict:
    prompt, completion = rng.randint(150, 400), rng.randint(200, 500)
    return {
        "id": f"chatcmpl-{i:08d}",
        "object": "chat.completion",
        "created": 1_760_000_000 + i,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0123456789",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "logprobs": None,
                "message": {"role": "assistant", "content": _text(rng, 1500), "refusal": None},
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 128 if i % 3 == 0 else 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
    }


def _ok(rng: random.Random, cid: str, i: int) -> bytes:
    return _line(
        {
            "id": f"batch_req_{i}",
            "custom_id": cid,
            "response": {"status_code": 200, "request_id": f"req_{i}", "body": _body(rng, i)},
            "error": None,
        }
    )


def write_files(directory: str, n: int) -> dict[str, str]:
    """Inputs, round-0 output/errors (shuffled) and round-1 output/requests for the retryable ones."""
    rng = random.Random(n)
    paths = {
        k: os.path.join(directory, f"{k}.jsonl")
        for k in ("input", "output0", "errors0", "requests1", "output1")
    }
    system = _text(rng, 400)
    kinds: list[str] = []
    with open(paths["input"], "wb") as inp:
        for i in range(n):
            body = {
                "model": "gpt-4o-mini",
                "temperature": 0,
                "messages": [
                    {"role": "system", "content": system},
                    {"role": "user", "content": _text(rng, 600)},
                ],
            }
            inp.write(
                _line(
                    {
                        "custom_id": f"req-{i:06d}",
                        "method": "POST",
                        "url": "/v1/chat/completions",
                        "body": body,
                    }
                )
            )
            roll = rng.random()
            kinds.append(
                "400" if roll < 0.02 else "expired" if roll < 0.03 else "429" if roll < 0.035 else "ok"
            )
    order = list(range(n))
    rng.shuffle(order)  # result files come in any order
    with (
        open(paths["output0"], "wb") as out,
        open(paths["errors0"], "wb") as err,
        open(paths["requests1"], "wb") as req1,
        open(paths["output1"], "wb") as out1,
    ):
        for i in order:
            cid, kind = f"req-{i:06d}", kinds[i]
            if kind == "ok":
                out.write(_ok(rng, cid, i))
                continue
            if kind == "400":
                err.write(
                    _line(
                        {
                            "id": f"batch_req_{i}",
                            "custom_id": cid,
                            "error": None,
                            "response": {
                                "status_code": 400,
                                "request_id": f"req_{i}",
                                "body": {
                                    "error": {
                                        "message": "This model's maximum context length is 128000 tokens.",
                                        "type": "invalid_request_error",
                                        "param": "messages",
                                        "code": "context_length_exceeded",
                                    }
                                },
                            },
                        }
                    )
                )
                continue
            if kind == "expired":
                err.write(
                    _line(
                        {
                            "id": f"batch_req_{i}",
                            "custom_id": cid,
                            "response": None,
                            "error": {
                                "code": "batch_expired",
                                "message": EXPIRED_MESSAGE,
                            },
                        }
                    )
                )
            else:
                err.write(
                    _line(
                        {
                            "id": f"batch_req_{i}",
                            "custom_id": cid,
                            "error": None,
                            "response": {
                                "status_code": 429,
                                "request_id": f"req_{i}",
                                "body": {
                                    "error": {
                                        "message": "Rate limit reached",
                                        "type": "requests",
                                        "param": None,
                                        "code": "rate_limit_exceeded",
                                    }
                                },
                            },
                        }
                    )
                )
            req1.write(_line({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": {}}))
            out1.write(_ok(rng, cid, i))
    return paths


def child(paths: dict[str, str], results_path: str) -> None:
    """Run in a fresh interpreter: import, note RSS, join from files, print figures as JSON."""
    from airflow_batch_provider.results import BatchResults, InputShard, join_results

    base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start, cpu_start = time.perf_counter(), time.process_time()
    with (
        open(paths["input"], "rb") as inp,
        open(paths["output0"], "rb") as out0,
        open(paths["errors0"], "rb") as err0,
        open(paths["requests1"], "rb") as req1,
        open(paths["output1"], "rb") as out1,
        open(results_path, "wb") as results,
    ):
        report = join_results(
            [InputShard(inp, "batch_0")],
            [
                BatchResults("batch_0", out0, err0, status="expired"),
                BatchResults("batch_1", out1, round=1, request_lines=req1, status="completed"),
            ],
            results,
        )
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    report.check()
    print(
        json.dumps(
            {
                "base_kb": base_kb,
                "peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "counts": report.counts,
                "usage": report.usage.to_dict(),
                "cost": report.estimate_cost()["usd"],
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,50000,100000")
    parser.add_argument("--target-mb", type=float, default=150.0)
    parser.add_argument("--target-seconds", type=float, default=2.0, help="for 50,000 requests")
    parser.add_argument("--child", nargs=2, metavar=("PATHS_JSON", "RESULTS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(json.loads(args.child[0]), args.child[1])
        return 0
    failed = False
    print(
        f"{'requests':>9} {'input MB':>9} {'results MB':>11} {'seconds':>8} {'CPU-s':>6} {'req/s':>8} "
        f"{'base RSS MB':>12} {'peak RSS MB':>12}  counts"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="join-rss-") as tmp:
            paths = write_files(tmp, n)
            results = os.path.join(tmp, "results.jsonl")
            root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--child", json.dumps(paths), results],
                capture_output=True,
                text=True,
                cwd=root,
                env={**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")},
            )
            if proc.returncode != 0:
                print(proc.stdout, proc.stderr, file=sys.stderr)
                return 2
            fig = json.loads(proc.stdout.strip().splitlines()[-1])
            in_mb = sum(os.path.getsize(p) for p in paths.values()) / 2**20
            peak_mb, base_mb = fig["peak_kb"] / 1024, fig["base_kb"] / 1024
            counts = " ".join(f"{k}={v}" for k, v in fig["counts"].items())
            print(
                f"{n:>9} {in_mb:>9.1f} {os.path.getsize(results) / 2**20:>11.1f} {fig['seconds']:>8.2f} "
                f"{fig['cpu_seconds']:>6.2f} "
                f"{n / fig['seconds']:>8.0f} {base_mb:>12.1f} {peak_mb:>12.1f}  {counts}"
            )
            if sum(fig["counts"].values()) != n:
                print(f"FAIL: statuses sum to {sum(fig['counts'].values())}, not {n}", file=sys.stderr)
                failed = True
            if n == 50_000 and fig["seconds"] > args.target_seconds:
                print(f"FAIL: {fig['seconds']:.2f} s > target {args.target_seconds:.1f} s", file=sys.stderr)
                failed = True
            if peak_mb > args.target_mb:
                print(f"FAIL: peak RSS {peak_mb:.1f} MB > target {args.target_mb:.0f} MB", file=sys.stderr)
                failed = True
    print(
        f"targets: peak RSS <= {args.target_mb:.0f} MB (child ru_maxrss, imports included); "
        f"50,000 requests in <= {args.target_seconds:.1f} s"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
