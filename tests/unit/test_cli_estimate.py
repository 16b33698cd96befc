"""`airflow-batch estimate` through the real console script / module, in a subprocess.

The subprocess inherits ``TIKTOKEN_CACHE_DIR`` (seeded offline by tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import tiktoken

SCRIPT = Path(sys.executable).parent / "airflow-batch"
TEXTS = ["Is this review positive? 'Great café, naïve staff.'", "東京 データ 요약 данные", "short"]


def line(custom_id: str, content: str, **body: object) -> str:
    full = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **body}
    return (
        json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": full})
        + "\n"
    )


def run(*args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "airflow_batch_provider.cli"]
    return subprocess.run(
        [*command, "estimate", *args], capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(line(f"q-{i}", t, max_tokens=100) for i, t in enumerate(TEXTS)))
    return path


def _tokens(encoding: str = "o200k_base") -> int:
    enc = tiktoken.get_encoding(encoding)
    return sum(3 + len(enc.encode("user")) + len(enc.encode(t)) + 3 for t in TEXTS)


def test_json_estimate_is_exact(batch_file: Path) -> None:
    done = run(str(batch_file), "--json", script=True)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["source"] == str(batch_file) and data["requests"] == 3
    assert data["input_tokens"] == _tokens() and data["exact"] is True and data["tokenizer"] == "o200k_base"
    assert data["output_tokens_bound"] == 300
    assert data["cost_high_usd"] == round((_tokens() * 0.075 + 300 * 0.30) / 1e6, 6)
    assert data["price_source"] == "built-in"


def test_text_output_and_what_if_model(batch_file: Path) -> None:
    done = run(str(batch_file), "--model", "gpt-4-0613")
    assert done.returncode == 0, done.stderr
    assert (
        f"3 requests, {_tokens('cl100k_base'):,} input tokens (cl100k_base), output bound 300" in done.stdout
    )
    assert "model gpt-4-0613" in done.stdout
    assert "no price known for model 'gpt-4-0613'" in done.stdout  # the table has no gpt-4: said, not guessed


def test_default_output_tokens_bounds_requests_without_a_maximum(tmp_path: Path) -> None:
    path = tmp_path / "no_max.jsonl"
    path.write_text(line("a", "x") + line("b", "y"))
    data = json.loads(run(str(path), "--json", "--default-output-tokens", "50").stdout)
    assert data["output_tokens_bound"] == 100 and data["output_bound_from"] == {"default_output_tokens": 2}
    data = json.loads(run(str(path), "--json").stdout)
    assert data["output_tokens_bound"] == 2 * 16_384 and data["output_bound_from"] == {"model_max": 2}


def test_a_line_that_is_not_a_request_exits_1(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(line("a", "x") + "{not json\n")
    done = run(str(path))
    assert done.returncode == 1
    assert "1 line(s) are not request lines and were skipped: validate the file" in done.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run(str(tmp_path / "missing.jsonl")).returncode == 2
    assert "cannot read" in run(str(tmp_path / "missing.jsonl")).stderr
    assert run(str(tmp_path), "--default-output-tokens", "-1").returncode == 2
