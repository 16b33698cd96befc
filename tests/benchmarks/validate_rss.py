"""Peak memory of validation on hostile inputs, in the CLI and in the submit operator.

Run: ``.venv/bin/python tests/benchmarks/validate_rss.py [--keep DIR] [--only NAME]``

Inputs (generated in a temporary directory):

- ``many_lines``: 4,000,000 small request lines (about 400 MB), the last one repeating the
  first line's custom_id: the duplicate check must still find it after its ids went to disk;
- ``long_line``: one line of 300 MB (more than any batch takes);
- ``deep_line``: a line nested 5,000 deep (and a valid line after it);
- ``largest_line``: one valid line just under ``MAX_LINE_BYTES``, the most a line may cost.

Each runs, in a fresh process, through

- ``cli``: the ``airflow-batch validate`` console script; peak RSS from ``wait4``;
- ``operator``: ``OpenAIBatchSubmitOperator.execute`` on the file (it fails validation before
  any upload; no server needed); the child reports its RSS after a warm-up run on a one-line
  file (Airflow, the SDK, object storage imported), and its peak.

Targets (exit 1 if one is missed): the CLI's peak RSS <= 150 MB; the operator's peak RSS
<= 150 MB above what its imports alone take (Airflow 3 and the ``openai`` SDK already take
about 140 MB before the first line is read), and every input reported as expected (the
duplicate found, the long line and the deep line named by number, no traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MAX_RSS_MB = 150.0
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "airflow-batch"
LINE = (
    b'{"custom_id":"r%07d","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[]}}\n'
)


def generate(directory: Path, only: str | None) -> dict[str, Path]:
    """Write the inputs; return name -> path."""
    from airflow_batch_provider.batch_file import MAX_LINE_BYTES

    paths = {n: directory / f"{n}.jsonl" for n in ("many_lines", "long_line", "deep_line", "largest_line")}
    if only:
        paths = {only: paths[only]}
    if "many_lines" in paths:
        with paths["many_lines"].open("wb") as out:
            for start in range(0, 4_000_000, 10_000):
                out.write(b"".join(LINE % i for i in range(start, start + 10_000)))
            out.write(LINE % 0)  # line 4,000,001 repeats line 1's custom_id
    head = b'{"custom_id":"big","method":"POST","url":"/v1/chat/completions","body":{"model":"m","pad":"'
    if "long_line" in paths:
        with paths["long_line"].open("wb") as out:
            out.write(head)
            block = b"x" * (1 << 20)
            for _ in range(300):
                out.write(block)
            out.write(b'"}}\n' + LINE % 1)
    if "deep_line" in paths:
        paths["deep_line"].write_bytes(
            b'{"custom_id":"deep","body":' + b"[" * 5_000 + b"]" * 5_000 + b"}\n" + LINE % 1
        )
    if "largest_line" in paths:
        with paths["largest_line"].open("wb") as out:
            out.write(head)
            pad = MAX_LINE_BYTES - len(head) - len(b'"}}')
            block = b"y" * (1 << 20)
            for _ in range(pad >> 20):
                out.write(block)
            out.write(b"y" * (pad & ((1 << 20) - 1)) + b'"}}\n')
    return paths


EXPECTED = {  # (line, code) the report must name; None: the file is valid
    "many_lines": (4_000_001, "duplicate_custom_id"),
    "long_line": (1, "line_too_long"),
    "deep_line": (1, "invalid_json_line"),
    "largest_line": None,
}


def _operator_child(path: str) -> None:
    """Run the submit operator's execute on ``path`` in this fresh process; print figures as JSON."""
    os.environ["AIRFLOW_CONN_OPENAI_BENCH"] = json.dumps(
        {"conn_type": "openai", "host": "http://127.0.0.1:9/v1", "password": "sk-bench"}
    )
    from types import SimpleNamespace

    from airflow_batch_provider.exceptions import BatchFileError
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    ti = SimpleNamespace(dag_id="bench", task_id="submit", run_id="r", map_index=-1)
    # Warm up on a one-line invalid file: what execute imports on first use (object storage,
    # fsspec) and the connection read count as imports, not as the cost of the input.
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tiny:
        tiny.write(b"{\n")
        tiny.flush()
        warm = OpenAIBatchSubmitOperator(task_id="submit", input_path=tiny.name, conn_id="openai_bench")
        try:
            warm.execute({"ti": ti})  # type: ignore[arg-type]
        except BatchFileError:
            pass
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    op = OpenAIBatchSubmitOperator(task_id="submit", input_path=path, conn_id="openai_bench")
    start = time.perf_counter()
    problems: list[tuple[int | None, str]] = []
    outcome = "valid"
    try:
        op.execute({"ti": ti})  # type: ignore[arg-type]
    except BatchFileError as err:
        outcome = "invalid"
        problems = [(p.line, p.code) for p in err.report.problems] if err.report else []
    except Exception as err:  # a valid file goes on to the (absent) server
        outcome = f"valid, then {type(err).__name__}"
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"baseline": baseline, "peak": peak, "seconds": seconds, "outcome": outcome, "problems": problems}
        )
    )


def _run(command: list[str]) -> tuple[str, str, int, float, float]:
    """Run ``command``; return stdout, stderr, exit status, its own peak RSS (MB) and wall seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        return out.read().decode(), err.read().decode(), proc.returncode, usage.ru_maxrss / 1024, seconds


def measure_cli(name: str, path: Path) -> tuple[bool, str]:
    stdout, stderr, status, peak, seconds = _run([str(SCRIPT), "validate", "--json", str(path)])
    expected = EXPECTED[name]
    report = json.loads(stdout) if stdout.strip() else {}
    problems = [(p["line"], p["code"]) for p in report.get("problems", [])]
    ok_report = (
        (status == 0 and report.get("ok")) if expected is None else (status == 1 and expected in problems)
    )
    ok = ok_report and peak <= MAX_RSS_MB and "Traceback" not in stderr
    verdict = "PASS" if ok else "FAIL"
    found = "valid" if report.get("ok") else f"{report.get('problem_count')} problems, first {problems[:2]}"
    return ok, f"{verdict}  cli       {name:>12}: peak RSS {peak:6.1f} MB, {seconds:6.1f} s; {found}"


def measure_operator(name: str, path: Path) -> tuple[bool, str]:
    stdout, stderr, status, _, seconds = _run([sys.executable, __file__, "--operator-child", str(path)])
    if status != 0 or not stdout.strip():
        return False, f"FAIL  operator  {name:>12}: exit {status}\n{stderr[-3000:]}"
    fig = json.loads(stdout.strip().splitlines()[-1])
    expected = EXPECTED[name]
    problems = [tuple(p) for p in fig["problems"]]
    ok_report = fig["outcome"].startswith("valid") if expected is None else expected in problems
    added = fig["peak"] - fig["baseline"]
    ok = ok_report and added <= MAX_RSS_MB
    verdict = "PASS" if ok else "FAIL"
    return ok, (
        f"{verdict}  operator  {name:>12}: peak RSS {fig['peak']:6.1f} MB = {fig['baseline']:.1f} MB imports "
        f"+ {added:5.1f} MB, {fig['seconds']:6.1f} s; {fig['outcome']}, first {problems[:2]}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep", type=Path, help="write the inputs here and keep them")
    parser.add_argument("--only", choices=sorted(EXPECTED), help="one input only")
    parser.add_argument("--path", choices=("cli", "operator"), help="one code path only")
    parser.add_argument("--operator-child", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.operator_child:
        _operator_child(args.operator_child)
        return 0
    failed = False
    with tempfile.TemporaryDirectory(prefix="validate-rss-") as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        paths = generate(directory, args.only)
        for name, path in paths.items():
            print(f"{name}: {path.stat().st_size:,} bytes")
            chosen = {"cli": measure_cli, "operator": measure_operator}
            for measure in [chosen[args.path]] if args.path else chosen.values():
                ok, text = measure(name, path)
                print(text, flush=True)
                failed |= not ok
    print(
        f"targets: CLI peak RSS <= {MAX_RSS_MB:.0f} MB; operator peak RSS <= {MAX_RSS_MB:.0f} MB above "
        "its imports; each input reported as expected"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
