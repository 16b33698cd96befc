"""The emulator's service-side validation of batch input files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_batch_provider.emulator.config import Limits
from airflow_batch_provider.emulator.validation import count_embedding_inputs, validate_file, validate_lines

CHAT = "/v1/chat/completions"


def line(custom_id="a", url=CHAT, model="gpt-4o-mini", **extra) -> bytes:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    data = {"custom_id": custom_id, "method": "POST", "url": url, "body": body, **extra}
    return json.dumps(data).encode() + b"\n"


def codes(result) -> list[tuple[str, int | None]]:
    return [(e["code"], e["line"]) for e in result.errors]


def test_valid_file_counts_requests_and_model():
    result = validate_lines([line("a"), line("b"), b"\n"], CHAT, Limits())
    assert result.ok
    assert (result.request_count, result.model) == (2, "gpt-4o-mini")
    assert result.byte_count == len(line("a")) + len(line("b")) + 1


def test_each_problem_has_code_line_and_param():
    lines = [
        line("a"),
        b"{not json\n",
        line("a"),  # duplicate
        line("c", model="gpt-4o"),  # second model
        line("d", url="/v1/embeddings"),
        json.dumps({"custom_id": "e", "url": CHAT, "body": {"model": "gpt-4o-mini"}}).encode(),  # no method
        json.dumps(
            {"custom_id": "f", "method": "GET", "url": CHAT, "body": {"model": "gpt-4o-mini"}}
        ).encode(),
        json.dumps({"custom_id": "g", "method": "POST", "url": CHAT, "body": {}}).encode(),  # no model
        b"[1, 2]\n",
    ]
    result = validate_lines(lines, CHAT, Limits())
    assert not result.ok
    assert codes(result) == [
        ("invalid_json_line", 2),
        ("duplicate_custom_id", 3),
        ("mismatched_model", 4),
        ("mismatched_url", 5),
        ("missing_required_parameter", 6),
        ("invalid_method", 7),
        ("missing_required_parameter", 8),
        ("invalid_type", 9),
    ]
    assert result.errors[0]["message"] == "This line is not parseable as valid JSON."
    assert result.errors[0]["param"] is None
    params = {e["code"]: e["param"] for e in result.errors}
    assert params["duplicate_custom_id"] == "custom_id"
    assert params["mismatched_model"] == "body.model"
    assert params["mismatched_url"] == "url"
    assert "line 1" in result.errors[1]["message"]  # where the custom_id was first used


def test_empty_file_fails():
    result = validate_lines([b"\n"], CHAT, Limits())
    assert codes(result) == [("empty_file", None)]


def test_request_limit():
    result = validate_lines([line(str(i)) for i in range(4)], CHAT, Limits(max_requests=3))
    assert codes(result) == [("too_many_requests", None)]
    assert "4 requests" in result.errors[0]["message"]


def test_embedding_input_limit():
    lines = [
        json.dumps(
            {
                "custom_id": str(i),
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": ["a", "b", "c"]},
            }
        ).encode()
        for i in range(2)
    ]
    result = validate_lines(lines, "/v1/embeddings", Limits(max_embedding_inputs=5))
    assert result.embedding_inputs == 6
    assert codes(result) == [("too_many_embedding_inputs", None)]


@pytest.mark.parametrize(
    ("value", "count"), [("text", 1), (["a", "b"], 2), ([1, 2, 3], 1), ([[1, 2], [3]], 2)]
)
def test_count_embedding_inputs(value, count):
    assert count_embedding_inputs(value) == count


def test_reported_errors_are_bounded_but_counted():
    result = validate_lines([b"x\n"] * 30, CHAT, Limits(max_reported_errors=5))
    assert len(result.errors) == 5
    assert result.error_count == 30


def test_oversized_file_fails_from_its_size(tmp_path: Path):
    path = tmp_path / "big.jsonl"
    path.write_bytes(line("a") * 10)
    result = validate_file(path, CHAT, Limits(max_batch_bytes=100))
    assert codes(result) == [("file_too_large", None)]
    assert validate_file(path, CHAT, Limits()).errors[0]["code"] == "duplicate_custom_id"


def test_moderations_may_omit_model():
    data = {"custom_id": "m", "method": "POST", "url": "/v1/moderations", "body": {"input": "hello"}}
    assert validate_lines([json.dumps(data).encode()], "/v1/moderations", Limits()).ok
