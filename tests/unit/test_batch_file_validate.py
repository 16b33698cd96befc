"""The streaming validator: one test (at least) per rule, plus report bounds and memory."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.batch_file import (
    BATCH_ENDPOINTS,
    MAX_BYTES,
    MAX_EMBEDDING_INPUTS,
    MAX_REQUESTS,
    PROBLEM_MESSAGES,
    Problem,
    RequestLine,
    ShardLimits,
    count_embedding_inputs,
    normalize_endpoint,
    validate_file,
    validate_lines,
)
from airflow_batch_provider.batch_file import lines as batch_file
from airflow_batch_provider.exceptions import BatchFileError

CHAT = "/v1/chat/completions"

MSG = [{"role": "user", "content": "x"}]  # the messages a chat body needs


def request(i: int | str = 0, **overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "custom_id": f"q-{i}",
        "method": "POST",
        "url": CHAT,
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hello {i}"}]},
    }
    data.update(overrides)
    return data


def line(i: int | str = 0, **overrides: Any) -> bytes:
    return (json.dumps(request(i, **overrides)) + "\n").encode()


def valid_lines(n: int) -> list[bytes]:
    return [line(i) for i in range(n)]


def codes(report) -> list[tuple[int | None, str]]:
    return [(p.line, p.code) for p in report.problems]


def only(report) -> Problem:
    assert report.problem_count == 1, report.format()
    return report.problems[0]


def test_valid_file_reports_counts_endpoint_model_and_sha(tmp_path: Path) -> None:
    data = b"".join(valid_lines(5))
    path = tmp_path / "ok.jsonl"
    path.write_bytes(data)
    report = validate_file(path)
    assert report.ok and report.problems == [] and report.problem_count == 0
    assert report.request_count == 5
    assert report.byte_count == len(data)
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert (report.endpoint, report.model, report.source) == (CHAT, "gpt-4o-mini", str(path))


# --- JSON and encoding ---------------------------------------------------------------


def test_invalid_json_is_reported_with_line_and_column() -> None:
    report = validate_lines([line(0), b'{"custom_id": "q-1", "method": "POST",,}\n', line(2)])
    problem = only(report)
    assert (problem.line, problem.code) == (2, "invalid_json_line")
    assert "column 39" in problem.message and "one complete JSON object" in problem.message


def test_a_line_cut_short_is_reported_at_its_end_not_on_the_next_line() -> None:
    cut = b'{"custom_id": "q-1", "method": "POST"\n'
    problem = only(validate_lines([line(0), cut]))
    assert (problem.line, problem.code) == (2, "invalid_json_line")
    assert f"column {len(cut)}" in problem.message, problem.message  # the newline's column
    assert "not closed" in problem.message and "cut short" in problem.message


def test_an_unterminated_string_has_a_readable_message() -> None:
    for cut in (b'{"custom_id": "q-1", "method": "PO\n', b'{"custom_id": "q-1", "method": "PO'):
        problem = only(validate_lines([cut]))
        assert problem.message.startswith("unterminated string: the line ends inside a string"), problem
        assert "control character" not in problem.message


def test_a_literal_tab_inside_a_string_is_not_called_unterminated() -> None:
    problem = only(validate_lines([b'{"custom_id": "q\t1"}\n']))
    assert "Invalid control character at column 17" in problem.message
    assert " at at " not in problem.message


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_rejected_although_json_loads_accepts_them(constant: str) -> None:
    raw = line(0).replace(b'"gpt-4o-mini"', b'"gpt-4o-mini", "temperature": ' + constant.encode())
    json.loads(raw)  # the stdlib accepts it: the validator must not
    problem = only(validate_lines([raw]))
    assert (problem.line, problem.code) == (1, "invalid_json_line")
    assert constant.lstrip("-") in problem.message and "null" in problem.message


def test_trailing_garbage_after_the_object_is_rejected() -> None:
    problem = only(validate_lines([line(0), line(1).rstrip(b"\n") + b" {}\n"]))
    assert (problem.line, problem.code) == (2, "invalid_json_line")
    assert "after the JSON object" in problem.message


def test_two_objects_on_one_line_are_rejected() -> None:
    problem = only(validate_lines([line(0).rstrip(b"\n") + line(1)]))
    assert problem.code == "invalid_json_line"


def test_byte_order_mark_is_named() -> None:
    problem = only(validate_lines([b"\xef\xbb\xbf" + line(0)]))
    assert problem.code == "invalid_json_line" and "BOM" in problem.message


def test_invalid_utf8_is_reported_with_offset() -> None:
    raw = line(0).replace(b"hello", b"hel\xfflo")
    problem = only(validate_lines([raw]))
    assert (problem.line, problem.code) == (1, "invalid_utf8")
    offset = raw.index(b"\xff")
    assert f"offset {offset}" in problem.message and "0xff" in problem.message


def test_utf8_encoded_surrogate_is_invalid_utf8() -> None:
    # json.loads(bytes) decodes with surrogatepass and would accept this line.
    raw = line(0).replace(b"hello", b"\xed\xa0\x80")
    json.loads(raw)
    assert only(validate_lines([raw])).code == "invalid_utf8"


def test_non_ascii_utf8_is_valid() -> None:
    raw = (
        json.dumps(
            request(0, body={"model": "m", "messages": [{"role": "user", "content": "café 東京"}]}),
            ensure_ascii=False,
        )
        + "\n"
    ).encode()
    assert validate_lines([raw]).ok


@pytest.mark.parametrize(
    ("raw", "kind"), [(b"[1, 2]", "array"), (b'"text"', "string"), (b"42", "number"), (b"null", "null")]
)
def test_a_line_that_is_not_an_object(raw: bytes, kind: str) -> None:
    problem = only(validate_lines([line(0), raw + b"\n"]))
    assert (problem.line, problem.code) == (2, "not_an_object")
    assert kind in problem.message and '"custom_id"' in problem.message


# --- blank lines and the end of the file -----------------------------------------------


def test_one_trailing_newline_is_fine_and_no_newline_is_fine() -> None:
    assert validate_lines([line(0), line(1)]).ok
    assert validate_lines([line(0), line(1).rstrip(b"\n")]).ok


def test_blank_line_in_the_middle_is_an_error() -> None:
    problem = only(validate_lines([line(0), b"\n", line(1)]))
    assert (problem.line, problem.code) == (2, "blank_line")


def test_whitespace_only_line_is_blank() -> None:
    assert codes(validate_lines([line(0), b"  \t\r\n", line(1)])) == [(2, "blank_line")]


def test_blank_line_at_the_end_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"
    path.write_bytes(line(0) + line(1) + b"\n")
    assert codes(validate_file(path)) == [(3, "blank_line")]


def test_empty_items_count_as_newline_separated_lines() -> None:
    # Items without newlines are joined by one: [a, "", b] is "a\n\nb".
    assert codes(validate_lines([line(0).rstrip(b"\n"), b"", line(1)])) == [(2, "blank_line")]
    # A final b"" is the trailing newline of the previous line, not a blank line.
    report = validate_lines([line(0).rstrip(b"\n"), b""])
    assert report.ok and report.byte_count == len(line(0))


def test_crlf_line_endings_are_valid() -> None:
    assert validate_lines([line(0).replace(b"\n", b"\r\n"), line(1).replace(b"\n", b"\r\n")]).ok


def test_lines_without_newlines_hash_as_the_joined_file() -> None:
    items = [line(i).rstrip(b"\n") for i in range(3)]
    report = validate_lines(items)
    joined = b"\n".join(items)
    assert report.ok and report.sha256 == hashlib.sha256(joined).hexdigest()
    assert report.byte_count == len(joined)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    problem = only(validate_file(path))
    assert (problem.line, problem.code) == (None, "empty_file")
    assert problem.format().startswith("file: ")


def test_file_of_blank_lines_is_empty_too() -> None:
    assert codes(validate_lines([b"\n", b"\n"])) == [
        (1, "blank_line"),
        (2, "blank_line"),
        (None, "empty_file"),
    ]


# --- custom_id ---------------------------------------------------------------------------


def test_missing_custom_id() -> None:
    data = request(0)
    del data["custom_id"]
    problem = only(validate_lines([line(1), (json.dumps(data) + "\n").encode()]))
    assert (problem.line, problem.code, problem.custom_id) == (2, "missing_custom_id", None)


def test_null_custom_id_is_missing() -> None:
    assert only(validate_lines([line(0, custom_id=None)])).code == "missing_custom_id"


def test_empty_custom_id() -> None:
    assert only(validate_lines([line(0, custom_id="")])).code == "empty_custom_id"


@pytest.mark.parametrize("value", [7, 1.5, True, ["a"], {"id": 1}])
def test_non_string_custom_id(value: Any) -> None:
    problem = only(validate_lines([line(0, custom_id=value)]))
    assert problem.code == "invalid_custom_id" and json.dumps(value) in problem.message


def test_duplicate_custom_id_names_both_lines() -> None:
    lines = [line(1), line(2), line(3), line(4), line(5), line(6), line(3)]
    problem = only(validate_lines(lines))
    assert (problem.line, problem.code, problem.custom_id) == (7, "duplicate_custom_id", "q-3")
    assert problem.format().startswith('line 7: duplicate custom_id "q-3" (first on line 3): ')


def test_every_repeat_points_to_the_first_occurrence() -> None:
    report = validate_lines([line("a"), line("a"), line("a")])
    assert [p.message.split("(")[1].split(")")[0] for p in report.problems] == ["first on line 1"] * 2


def test_long_custom_ids_are_compared_exactly() -> None:
    long_a, long_b = "x" * 200 + "a", "x" * 200 + "b"
    report = validate_lines([line(0, custom_id=long_a), line(1, custom_id=long_b), line(2, custom_id=long_a)])
    assert codes(report) == [(3, "duplicate_custom_id")]


# --- method, url, body, model --------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "post", None, 1])
def test_method_other_than_post(method: Any) -> None:
    problem = only(validate_lines([line(0, method=method)]))
    assert (problem.code, problem.custom_id) == ("invalid_method", "q-0")
    assert '"POST"' in problem.message
    assert problem.format().endswith('(custom_id "q-0")')


def test_missing_method() -> None:
    data = request(0)
    del data["method"]
    assert only(validate_lines([(json.dumps(data) + "\n").encode()])).code == "invalid_method"


@pytest.mark.parametrize(
    "url", ["/v1/foo", "chat/completions", "https://api.openai.com/v1/chat/completions", None, 3]
)
def test_url_that_is_not_a_batch_endpoint(url: Any) -> None:
    problem = only(validate_lines([line(0, url=url)]))
    assert problem.code == "invalid_url" and "/v1/chat/completions" in problem.message


def test_urls_differing_within_the_file() -> None:
    body = {"model": "gpt-4o-mini", "input": "x"}
    problem = only(validate_lines([line(0), line(1), line(2, url="/v1/embeddings", body=body)]))
    assert (problem.line, problem.code) == (3, "url_mismatch")
    assert "/v1/chat/completions (line 1)" in problem.message


def test_url_differing_from_the_declared_endpoint() -> None:
    report = validate_lines(valid_lines(2), endpoint="/v1/responses")
    assert codes(report) == [(1, "url_mismatch"), (2, "url_mismatch")]
    assert "declared endpoint" in report.problems[0].message
    assert report.endpoint == "/v1/responses"


def test_declared_endpoint_is_normalized_and_checked() -> None:
    assert validate_lines(valid_lines(2), endpoint="chat/completions").ok
    assert normalize_endpoint("/v1/embeddings/") == "/v1/embeddings"
    with pytest.raises(ValueError, match="not a batch endpoint"):
        validate_lines(valid_lines(1), endpoint="/v1/images/variations")


def test_every_sdk_batch_endpoint_is_accepted() -> None:
    from typing import get_args, get_type_hints

    from openai.types.batch_create_params import BatchCreateParams

    required = get_type_hints(BatchCreateParams, include_extras=True)["endpoint"]
    sdk = set(get_args(get_args(required)[0]))
    assert "/v1/chat/completions" in sdk and sdk <= BATCH_ENDPOINTS


def test_missing_body() -> None:
    data = request(0)
    del data["body"]
    problem = only(validate_lines([(json.dumps(data) + "\n").encode()]))
    assert (problem.code, problem.custom_id) == ("missing_body", "q-0")


@pytest.mark.parametrize("body", [[], "text", 5])
def test_body_that_is_not_an_object(body: Any) -> None:
    assert only(validate_lines([line(0, body=body)])).code == "invalid_body"


@pytest.mark.parametrize(
    "body", [{"messages": MSG}, {"model": "", "messages": MSG}, {"model": None, "messages": MSG}]
)
def test_body_without_model(body: dict[str, Any]) -> None:
    problem = only(validate_lines([line(0), line(1, body=body)]))
    assert (problem.line, problem.code) == (2, "missing_model")


def test_non_string_model() -> None:
    assert only(validate_lines([line(0, body={"model": ["a"], "messages": MSG})])).code == "invalid_model"


def test_missing_model_on_the_first_line_is_reported() -> None:
    assert codes(validate_lines([line(0, body={"messages": MSG}), line(1)])) == [(1, "missing_model")]


def test_more_than_one_model_in_the_file() -> None:
    other = {"model": "gpt-4o", "messages": MSG}
    report = validate_lines([line(0), line(1), line(2, body=other), line(3, body=other)])
    assert codes(report) == [(3, "model_mismatch"), (4, "model_mismatch")]
    assert '"gpt-4o" differs from "gpt-4o-mini" (first on line 1)' in report.problems[0].message
    assert report.model == "gpt-4o-mini"


# --- file-level limits -------------------------------------------------------------------------


def test_limits_default_to_the_service() -> None:
    assert (MAX_REQUESTS, MAX_BYTES, MAX_EMBEDDING_INPUTS) == (50_000, 200 * 1024 * 1024, 50_000)
    assert ShardLimits() == ShardLimits(50_000, 200 * 1024 * 1024, 50_000)


def test_more_than_50000_requests() -> None:
    assert validate_lines(line(i) for i in range(50_000)).ok
    report = validate_lines(line(i) for i in range(50_001))
    problem = only(report)
    assert (problem.line, problem.code) == (None, "too_many_requests")
    assert "50,001" in problem.message and report.request_count == 50_001


def test_more_than_200_mb() -> None:
    pad = "x" * (4 * 1024 * 1024)  # 51 lines of 4 MiB: just over 200 MiB, one line in memory at a time
    lines = (line(i, body={"model": "m", "messages": MSG, "pad": pad}) for i in range(51))
    report = validate_lines(lines)
    problem = only(report)
    assert (problem.line, problem.code) == (None, "file_too_large")
    assert report.byte_count > MAX_BYTES and f"{MAX_BYTES:,}" in problem.message


def test_byte_limit_is_configurable() -> None:
    lines = valid_lines(3)
    limit = sum(map(len, lines))
    assert validate_lines(lines, limits=ShardLimits(max_bytes=limit)).ok
    assert only(validate_lines(lines, limits=ShardLimits(max_bytes=limit - 1))).code == "file_too_large"


def embedding_line(i: int, value: Any) -> bytes:
    return line(i, url="/v1/embeddings", body={"model": "text-embedding-3-small", "input": value})


def test_more_than_50000_embedding_inputs() -> None:
    ok = validate_lines([embedding_line(0, ["a"] * 49_999), embedding_line(1, "b")])
    assert ok.ok and ok.embedding_inputs == 50_000
    report = validate_lines([embedding_line(0, ["a"] * 49_999), embedding_line(1, ["b", "c"])])
    problem = only(report)
    assert (problem.code, report.embedding_inputs) == ("too_many_embedding_inputs", 50_001)


def test_embedding_inputs_are_counted_per_input() -> None:
    assert count_embedding_inputs("text") == 1
    assert count_embedding_inputs(["a", "b", "c"]) == 3
    assert count_embedding_inputs([1, 2, 3]) == 1  # one tokenized input
    assert count_embedding_inputs([[1, 2], [3]]) == 2
    report = validate_lines(
        [embedding_line(0, "a"), embedding_line(1, ["a", "b"]), embedding_line(2, [5, 6])]
    )
    assert report.ok and report.embedding_inputs == 4


def test_chat_inputs_are_not_embedding_inputs() -> None:
    assert validate_lines([line(0, body={"model": "m", "input": ["a"] * 60_000})]).embedding_inputs == 0


# --- the report ----------------------------------------------------------------------------------


def test_report_is_bounded_but_counts_every_problem() -> None:
    lines = [b"not json\n"] * 1_000
    report = validate_lines(lines, max_problems=10)
    assert len(report.problems) == 10 and report.problem_count == 1_000 and report.truncated
    assert [p.line for p in report.problems] == list(range(1, 11))
    assert "1,000 problems (showing 10)" in report.format().splitlines()[-1]
    assert len(validate_lines(lines, max_problems=None).problems) == 1_000


def test_file_level_problems_survive_the_bound() -> None:
    lines = [b"bad\n"] * 5
    report = validate_lines(lines, max_problems=2, limits=ShardLimits(max_requests=3))
    assert codes(report) == [(1, "invalid_json_line"), (2, "invalid_json_line"), (None, "too_many_requests")]
    assert report.problem_count == 6


def test_max_problems_zero_keeps_only_counts() -> None:
    report = validate_lines([b"bad\n"] * 3, max_problems=0)
    assert report.problems == [] and report.problem_count == 3 and not report.ok
    with pytest.raises(ValueError):
        validate_lines([], max_problems=-1)


def test_format_and_to_dict() -> None:
    report = validate_lines([line(1), line(2), line(1)], source="in.jsonl")
    text = report.format().splitlines()
    assert text[0] == (
        'line 3: duplicate custom_id "q-1" (first on line 1): give every request its own custom_id'
    )
    size = len(line(1) + line(2) + line(1))
    assert text[-1] == f"in.jsonl: invalid: 1 problem in 3 requests, {size:,} bytes"
    data = json.loads(json.dumps(report.to_dict()))
    assert data["ok"] is False and data["problem_count"] == 1 and data["problems"][0]["line"] == 3
    assert data["problems"][0] == {
        "line": 3,
        "code": "duplicate_custom_id",
        "message": report.problems[0].message,
        "custom_id": "q-1",
    }
    assert set(data) >= {
        "source",
        "request_count",
        "byte_count",
        "endpoint",
        "model",
        "embedding_inputs",
        "sha256",
    }


def test_valid_summary() -> None:
    size = len(b"".join(valid_lines(2)))
    assert validate_lines(valid_lines(2), source="a").format() == (
        f"a: valid: 2 requests, {size} bytes, endpoint /v1/chat/completions, model gpt-4o-mini"
    )


def test_raise_for_problems() -> None:
    validate_lines(valid_lines(1)).raise_for_problems()
    report = validate_lines([b"x\n"])
    with pytest.raises(BatchFileError, match="line 1: not valid JSON") as caught:
        report.raise_for_problems()
    assert caught.value.report is report


def test_every_message_says_what_to_do() -> None:
    for code, message in PROBLEM_MESSAGES.items():
        assert ":" in message or code == "invalid_json_line", code


def test_several_problems_on_one_line_are_all_reported() -> None:
    report = validate_lines([line(0, method="GET", url="/v1/x", body={"temperature": 0})])
    assert [p.code for p in report.problems] == ["invalid_method", "invalid_url", "missing_model"]


# --- inputs and resources ----------------------------------------------------------------------------


def test_validate_file_accepts_str_path_and_object_storage_path(tmp_path: Path) -> None:
    from airflow.sdk import ObjectStoragePath

    path = tmp_path / "f.jsonl"
    path.write_bytes(b"".join(valid_lines(3)) + b"\n")
    for target in (str(path), path, ObjectStoragePath(f"file://{path}")):
        assert codes(validate_file(target)) == [(4, "blank_line")], target


def test_unreadable_file_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        validate_file(tmp_path / "missing.jsonl")


def test_memory_does_not_grow_with_file_size(tmp_path: Path) -> None:
    pad = "y" * 10_000
    path = tmp_path / "big.jsonl"
    with path.open("wb") as out:
        for i in range(2_000):  # 20 MB
            out.write(line(i, body={"model": "m", "messages": MSG, "pad": pad}))
    tracemalloc.start()
    try:
        report = validate_file(path, chunk_size=256 * 1024)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.ok and report.byte_count > 20_000_000
    assert peak < 2_000_000, f"peak {peak:,} bytes for a {report.byte_count:,}-byte file"


def test_validator_agrees_with_request_line() -> None:
    samples = [
        line(0),
        line(0, method="GET"),
        line(0, url="/v1/nope"),
        line(0, custom_id=""),
        line(0, custom_id=3),
        line(0, body={"x": 1}),
        line(0, body=[]),
        line(0, extra_key=True),
        line(0, body={"model": "m", "t": 1}).replace(b"1}", b"NaN}"),
    ]
    for raw in samples:
        try:
            RequestLine.from_json_line(raw)
            model_ok = True
        except ValueError:
            model_ok = False
        assert validate_lines([raw]).ok == model_ok, raw


# --- memory stays flat whatever the input (issue 11 section 4) --------------------------------


def test_a_line_past_the_cap_is_reported_and_the_following_lines_still_checked(tmp_path: Path) -> None:
    long_line = line(1, body={"model": "m", "messages": MSG, "pad": "z" * 3_000_000})
    data = line(0) + long_line + b"not json\n" + line(3) + line(3)
    path = tmp_path / "long.jsonl"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        report = validate_file(path, chunk_size=64 * 1024, max_line_bytes=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert codes(report) == [(2, "line_too_long"), (3, "invalid_json_line"), (5, "duplicate_custom_id")]
    problem = report.problems[0]
    assert f"{len(long_line) - 1:,} bytes, more than the 100,000-byte limit" in problem.message
    # Counted and hashed like any line, but never held whole.
    assert report.byte_count == len(data) and report.request_count == 5
    assert report.sha256 == hashlib.sha256(data).hexdigest()
    assert peak < 1_000_000, f"peak {peak:,} bytes for a {len(long_line):,}-byte line"


def test_a_line_over_the_cap_without_a_newline_at_the_end_of_the_file(tmp_path: Path) -> None:
    data = line(0) + b'{"custom_id": "x", "pad": "' + b"y" * 50_000
    path = tmp_path / "tail.jsonl"
    path.write_bytes(data)
    report = validate_file(path, chunk_size=4096, max_line_bytes=10_000)
    assert codes(report) == [(2, "line_too_long")]
    assert report.byte_count == len(data) and report.sha256 == hashlib.sha256(data).hexdigest()


def test_the_cap_is_the_batch_byte_limit_when_lower_and_applies_to_lines_in_memory() -> None:
    lines = [line(0), line(1, body={"model": "gpt-4o-mini", "messages": MSG, "pad": "p" * 500})]
    report = validate_lines(lines, limits=ShardLimits(max_bytes=300))
    assert (2, "line_too_long") in codes(report)
    assert codes(validate_lines(lines, max_line_bytes=len(lines[1]) - 1)) == []  # the newline is free
    assert codes(validate_lines(lines, max_line_bytes=len(lines[1]) - 2)) == [(2, "line_too_long")]


def test_deep_nesting_is_an_invalid_line_with_its_number_not_a_traceback(tmp_path: Path) -> None:
    deep = b'{"custom_id": "d", "body": ' + b"[" * 5_000 + b"]" * 5_000 + b"}\n"
    path = tmp_path / "deep.jsonl"
    path.write_bytes(line(0) + deep + b"{" * 5_000 + b"\n" + line(3))
    report = validate_file(path)
    assert codes(report) == [(2, "invalid_json_line"), (3, "invalid_json_line")]
    assert "nested too deeply" in report.problems[0].message


def test_a_value_nested_near_the_limit_is_quoted_without_a_traceback() -> None:
    import sys

    depth = sys.getrecursionlimit() - 100  # parses, but json.dumps of it from deep inside may not
    raw = b'{"custom_id": ' + b"[" * depth + b"]" * depth + b"}\n"
    report = validate_lines([raw])
    assert codes(report)[0] in {(1, "invalid_custom_id"), (1, "invalid_json_line")}


def _duplicates_naive(ids: list[str]) -> list[tuple[int, str, int]]:
    first: dict[str, int] = {}
    out = []
    for n, cid in enumerate(ids, 1):
        if first.setdefault(cid, n) != n:
            out.append((n, cid, first[cid]))
    return out


def test_duplicates_stay_exact_across_a_spill_to_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_file, "MAX_IDS_IN_MEMORY", 7, raising=False)
    ids = [f"id-{i}" for i in range(40)]
    # Repeats within one in-memory run, across runs, of ids already on disk, long ids that
    # share a prefix, and ids with lone surrogates (which sqlite TEXT could not bind).
    ids += ["id-3", "id-3", "id-39", "id-0", "\ud800x", "\ud800x", "L" * 500 + "a", "L" * 500 + "b"]
    ids += [f"late-{i}" for i in range(20)] + ["id-5", "late-1", "L" * 500 + "a", "late-19"]
    lines = [line(0, custom_id=cid) for cid in ids]
    report = validate_lines(lines, max_problems=None)
    found = [(p.line, p.custom_id, p.message) for p in report.problems]
    expected = _duplicates_naive(ids)
    assert [(n, cid) for n, cid, _ in found] == [(n, cid) for n, cid, _ in expected]
    for (_, _, message), (_, _, first) in zip(found, expected, strict=True):
        assert f"(first on line {first})" in message
    assert report.problem_count == len(expected) and not any(
        p.code != "duplicate_custom_id" for p in report.problems
    )


def test_a_bounded_report_keeps_the_first_lines_even_when_duplicates_are_found_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(batch_file, "MAX_IDS_IN_MEMORY", 5, raising=False)
    ids = [f"id-{i}" for i in range(12)] + ["id-1"] + [f"x-{i}" for i in range(3)]
    lines = [line(0, custom_id=cid) for cid in ids] + [b"bad\n"] * 4
    report = validate_lines(lines, max_problems=3)
    assert codes(report) == [
        (13, "duplicate_custom_id"),
        (17, "invalid_json_line"),
        (18, "invalid_json_line"),
    ]
    assert report.problem_count == 5


def test_the_custom_id_check_does_not_keep_every_id_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batch_file, "MAX_IDS_IN_MEMORY", 500, raising=False)
    lines = (b'{"custom_id": "request-%07d", "method": "POST"}\n' % i for i in range(20_000))
    tracemalloc.start()
    try:
        report = validate_lines(lines, max_problems=0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.request_count == 20_000
    # All 20,000 ids in a dict take about 2 MB; 500 of them, a few tens of kB.
    assert peak < 600_000, f"peak {peak:,} bytes of Python objects for 20,000 custom_ids"


# --- the human report ----------------------------------------------------------------------------


def test_repeated_problems_are_grouped_in_the_human_report() -> None:
    lines = [b"not json\n"] * 200 + [line(200), line(201, method="GET"), line(202), line(203, method="GET")]
    report = validate_lines(lines, max_problems=None)
    text = report.format().splitlines()
    assert text[0].startswith("lines 1-200: not valid JSON (Expecting value at column 1)")
    assert text[1].startswith('lines 202, 204: method is "GET": use "POST"')
    assert text[1].endswith('(custom_id "q-201" and 1 more)')
    assert text[2].startswith("<lines>: invalid: 202 problems in 204 requests")
    assert len(text) == 3
    # The machine-readable report keeps one entry per problem.
    assert len(report.to_dict()["problems"]) == 202


def test_many_scattered_lines_are_listed_with_a_count() -> None:
    lines = [b"x\n" if i % 2 else line(i) for i in range(40)]
    text = validate_lines(lines).format().splitlines()[0]
    assert text.startswith("lines 2, 4, 6, 8, 10, 12, 14, 16, ... (20 lines in all): not valid JSON")


def test_counts_of_one_are_singular() -> None:
    report = validate_lines([b"x\n"], source="one.jsonl")
    assert report.summary() == "one.jsonl: invalid: 1 problem in 1 request, 2 bytes"
    assert validate_lines(valid_lines(1), source="a").summary().startswith("a: valid: 1 request, ")
