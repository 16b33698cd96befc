"""The streaming join of result files to input requests (results.join_results)."""

from __future__ import annotations

import io
import json
import os
import random

import pytest

from airflow_batch_provider.exceptions import BatchFileError, ReconciliationError
from airflow_batch_provider.results import BatchResults, InputShard, iter_retryable_lines, join_results
from tests.unit import _results_factory as f


def run(inputs, batches, **kwargs):
    out = io.BytesIO()
    report = join_results(inputs, batches, out, **kwargs)
    return report, f.parse_jsonl(out.getvalue())


def test_one_line_per_input_in_input_order_whatever_the_output_order() -> None:
    ids = [f"q-{i}" for i in range(200)]
    outputs = [f.ok(i, f.chat_body(text=i)) for i in ids]
    random.Random(7).shuffle(outputs)
    report, rows = run(
        [f.request(i, content=i) for i in ids], [BatchResults("b1", outputs, status="completed")]
    )
    assert [r["custom_id"] for r in rows] == ids
    assert all(r["status"] == "succeeded" for r in rows)
    assert rows[5]["request"] == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "q-5"}]}
    assert rows[5]["response"]["choices"][0]["message"]["content"] == "q-5"
    assert rows[5]["error"] is None and rows[5]["batch_id"] == "b1"
    assert list(rows[0]) == ["custom_id", "status", "request", "response", "error", "batch_id"]
    assert report.total == 200 and report.counts["succeeded"] == 200
    report.check(min_success_ratio=1.0)


def test_every_status_and_counts_sum_to_input_count() -> None:
    inputs = [f.request(i) for i in "abcdef"]
    batch = BatchResults(
        "b1",
        output_lines=[f.ok("a")],
        error_lines=[
            f.http_error("b", 400, "context_length_exceeded"),
            f.expired("c"),
            f.cancelled("d"),
            f.http_error("e", 429, "rate_limit_exceeded", "requests"),
        ],
        status="completed",
    )
    report, rows = run(inputs, [batch])
    assert [r["status"] for r in rows] == ["succeeded", "failed", "expired", "cancelled", "failed", "missing"]
    assert report.counts == {"succeeded": 1, "failed": 2, "expired": 1, "cancelled": 1, "missing": 1}
    assert sum(report.counts.values()) == report.total == 6
    assert rows[1]["response"]["error"]["code"] == "context_length_exceeded"
    assert rows[1]["error"]["status_code"] == 400 and rows[1]["error"]["retryable"] is False
    assert rows[4]["error"]["retryable"] is True
    assert rows[5]["response"] is None and rows[5]["error"]["code"] == "missing"
    assert report.missing_sample == ["f"]
    assert report.retryable == 2 and report.retryable_sample == ["c", "e"]


@pytest.mark.parametrize(
    ("batch_status", "status", "retryable"),
    [
        ("expired", "expired", True),
        ("cancelled", "cancelled", False),
        ("completed", "missing", False),
        (None, "missing", False),
    ],
)
def test_batch_status_hint_for_absent_requests(batch_status, status, retryable) -> None:
    report, rows = run(
        [f.request("a"), f.request("b")], [BatchResults("b1", [f.ok("a")], status=batch_status)]
    )
    assert rows[1]["status"] == status
    assert rows[1]["error"]["retryable"] is retryable
    assert rows[1]["batch_id"] == "b1"
    assert report.counts[status] == 1


def test_cancelled_by_our_deadline_is_retryable() -> None:
    report, rows = run(
        [f.request("a"), f.request("b")],
        [BatchResults("b1", error_lines=[f.cancelled("a")], status="cancelled", retry_cancelled=True)],
    )
    assert [r["status"] for r in rows] == ["cancelled", "cancelled"]
    assert report.retryable == 2


def test_failed_batch_takes_its_error_code_and_token_limit_is_retryable() -> None:
    summary = {
        "id": "b1",
        "status": "failed",
        "errors": [
            {
                "code": "token_limit_exceeded",
                "message": "Enqueued token limit reached",
                "param": None,
                "line": None,
            }
        ],
    }
    report, rows = run([f.request("a")], [BatchResults.from_summary(summary)])
    assert rows[0]["status"] == "failed"
    assert rows[0]["error"]["code"] == "token_limit_exceeded" and rows[0]["error"]["retryable"] is True
    assert "Enqueued token limit" in rows[0]["error"]["message"]
    summary = {
        "id": "b1",
        "status": "failed",
        "errors": [{"code": "invalid_json_line", "message": "bad", "line": 2}],
    }
    _, rows = run([f.request("a")], [BatchResults.from_summary(summary)])
    assert rows[0]["error"]["code"] == "invalid_json_line" and rows[0]["error"]["retryable"] is False


def test_shards_attribute_absent_requests_to_their_own_batch() -> None:
    shards = [InputShard([f.request("a"), f.request("b")], "b1"), InputShard([f.request("c")], "b2")]
    batches = [BatchResults("b2", status="expired"), BatchResults("b1", [f.ok("a")], status="completed")]
    report, rows = run(shards, batches)
    assert [(r["custom_id"], r["status"], r["batch_id"]) for r in rows] == [
        ("a", "succeeded", "b1"),
        ("b", "missing", "b1"),
        ("c", "expired", "b2"),
    ]
    assert [b["batch_id"] for b in report.batches] == ["b2", "b1"]


def test_plain_inputs_with_several_batches_cannot_guess_the_batch() -> None:
    batches = [BatchResults("b1", status="expired"), BatchResults("b2", status="expired")]
    _, rows = run([f.request("a")], batches)
    assert rows[0]["status"] == "missing" and rows[0]["batch_id"] is None


def test_unknown_custom_ids_are_counted_not_joined() -> None:
    batch = BatchResults("b1", [f.ok("a"), f.ok("zz-1"), f.ok("zz-2")], [f.expired("zz-3")])
    report, rows = run([f.request("a")], [batch], sample_size=2)
    assert len(rows) == 1
    assert report.unknown == 3 and report.unknown_sample == ["zz-1", "zz-2"]
    report.check()  # unknown ids alone do not fail reconciliation


def test_duplicates_invalid_lines_and_blank_lines_are_reported() -> None:
    inputs = [f.request("a"), b"\n", f.request("b"), f.request("a")]
    outputs = [f.ok("a"), b"", b"{not json", f.dumps({"no": "custom_id"}), f.ok("b")]
    errors = [f.http_error("a", 500, None, "server_error")]  # same round: the success stays
    report, rows = run(inputs, [BatchResults("b1", outputs, errors)])
    assert [r["status"] for r in rows] == ["succeeded", "succeeded", "succeeded"]
    assert report.total == 3 and report.duplicate_inputs == 1 and report.duplicate_inputs_sample == ["a"]
    assert report.duplicate_results == 1
    assert report.invalid_lines == 2
    assert report.invalid_sample[0].startswith("batch b1 output line 3:")
    assert report.batches == [
        {"batch_id": "b1", "round": 0, "status": None, "output_lines": 2, "error_lines": 1}
    ]


def test_within_a_round_a_better_status_wins_in_any_order() -> None:
    for lines in (
        [f.expired("a"), f.http_error("a", 400, "x")],
        [f.http_error("a", 400, "x"), f.expired("a")],
    ):
        _, rows = run([f.request("a")], [BatchResults("b1", error_lines=lines)])
        assert rows[0]["status"] == "failed"


def test_writer_may_be_a_callable_and_str_lines_are_accepted() -> None:
    chunks: list[bytes] = []
    report = join_results([f.request("a").decode()], [BatchResults("b1", [f.ok("a")])], chunks.append)
    assert report.succeeded == 1
    assert f.parse_jsonl(b"".join(chunks))[0]["status"] == "succeeded"


def test_output_is_valid_utf8_jsonl_with_non_ascii_text() -> None:
    _, rows = run(
        [f.request("a", content="héllo ✓ 日本")], [BatchResults("b1", [f.ok("a", f.chat_body("ça"))])]
    )
    assert rows[0]["request"]["messages"][0]["content"] == "héllo ✓ 日本"
    assert rows[0]["response"]["choices"][0]["message"]["content"] == "ça"


@pytest.mark.parametrize("bad", [b"{oops", b'{"method": "POST"}', b'{"custom_id": 7}'])
def test_input_that_is_not_a_request_fails_with_its_line(bad: bytes) -> None:
    with pytest.raises(BatchFileError, match=r"input shard 0 \(batch b1\) line 2"):
        run([InputShard([f.request("a"), bad], "b1")], [])


def test_index_is_a_temp_file_in_workdir_and_is_removed(tmp_path) -> None:
    seen: list[list[str]] = []

    def lines():
        seen.append(os.listdir(tmp_path))
        yield f.ok("a")

    run([f.request("a")], [BatchResults("b1", lines())], workdir=tmp_path)
    assert len(seen[0]) == 1 and seen[0][0].startswith("batch-join-")
    assert os.listdir(tmp_path) == []


def test_empty_input() -> None:
    report, rows = run([], [BatchResults("b1", [f.ok("a")])])
    assert rows == [] and report.total == 0 and report.unknown == 1
    report.check(min_success_ratio=1.0)


def test_retry_out_gets_original_lines_byte_for_byte() -> None:
    inputs = [f.request("a"), f.request("b"), f.request("c"), f.request("d").rstrip(b"\n")]
    batch = BatchResults(
        "b1",
        [f.ok("a")],
        [
            f.expired("b"),
            f.http_error("c", 400, "context_length_exceeded"),
            f.http_error("d", 503, None, "server_error"),
        ],
    )
    retry = io.BytesIO()
    report = join_results(inputs, [batch], io.BytesIO(), retry_out=retry)
    assert retry.getvalue() == inputs[1] + inputs[3] + b"\n"
    assert report.retryable == 2


def test_iter_retryable_lines_matches_retry_out() -> None:
    inputs = [f.request(str(i)) for i in range(10)]
    batch = BatchResults(
        "b1",
        [f.ok(str(i)) for i in range(0, 10, 2)],
        [f.expired(str(i)) for i in range(1, 10, 4)],
        status="expired",
    )
    out, retry = io.BytesIO(), io.BytesIO()
    join_results(inputs, [batch], out, retry_out=retry)
    again = b"".join(iter_retryable_lines(inputs, out.getvalue().splitlines(keepends=True)))
    assert again == retry.getvalue() == b"".join(inputs[1::2])


def test_iter_retryable_lines_refuses_results_of_another_input() -> None:
    out = io.BytesIO()
    join_results([f.request("a"), f.request("b")], [BatchResults("b1", status="expired")], out)
    results = out.getvalue().splitlines()
    with pytest.raises(ReconciliationError, match="custom_id 'a' but input request 1 is 'x'"):
        list(iter_retryable_lines([f.request("x"), f.request("b")], results))
    with pytest.raises(ReconciliationError, match="ends at line 1"):
        list(iter_retryable_lines([f.request("a"), f.request("b")], results[:1]))
    with pytest.raises(ReconciliationError, match="more lines"):
        list(iter_retryable_lines([f.request("a")], results))


def test_results_lines_are_compact_json_each_on_one_line() -> None:
    out = io.BytesIO()
    join_results([f.request("a")], [BatchResults("b1", [f.ok("a", f.chat_body("line1\nline2"))])], out)
    data = out.getvalue()
    assert data.count(b"\n") == 1 and data.endswith(b"\n")
    assert json.loads(data)["response"]["choices"][0]["message"]["content"] == "line1\nline2"


def test_within_a_round_the_first_of_equal_statuses_is_kept() -> None:
    lines = [f.http_error("a", 400, "first_code"), f.http_error("a", 400, "second_code")]
    report, rows = run([f.request("a")], [BatchResults("b1", error_lines=lines)])
    assert rows[0]["error"]["code"] == "first_code" and report.duplicate_results == 1


def test_results_jsonl_bytes_are_the_standard_librarys_whatever_the_parse_path() -> None:
    """The join reads and writes bodies with orjson where that is exact: small floats, wide
    integers, NaN and odd result lines must come out exactly as json.dumps writes them."""
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    bodies = {
        "small-floats": {"logprobs": [-1.2e-05, 3e-7, 0.00009, 1e16], "text": "state-of-the-art e-5"},
        "wide-int": {"seed": 2**70, "n": 1234567890123456789},
        "plain": {"content": "caf\u00e9 \u2028 \U0001f600"},
    }
    inputs = [
        json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}).encode()
        + b"\n"
        for cid, body in bodies.items()
    ]
    inputs.append(b'{"custom_id":"nan","method":"POST","url":"/v1/chat/completions","body":{"t":NaN}}\n')
    outputs = [f.ok(cid, body) for cid, body in bodies.items()]
    outputs.append(b'{"custom_id":"nan","response":{"status_code":"200","body":{"x":1e-9}},"error":null}\n')
    out = io.BytesIO()
    report = join_results(inputs, [BatchResults("b1", outputs, status="completed")], out)
    assert report.counts["succeeded"] == 4 and report.invalid_lines == 0
    lines = out.getvalue().splitlines()
    for line, (cid, body) in zip(lines, bodies.items(), strict=False):
        assert (
            line
            == (
                f'{{"custom_id":"{cid}","status":"succeeded","request":{dumps(body)},'
                f'"response":{dumps(body)},"error":null,"batch_id":"b1"}}'
            ).encode()
        )
    assert lines[3] == (
        b'{"custom_id":"nan","status":"succeeded","request":{"t":NaN},"response":{"x":1e-09},'
        b'"error":null,"batch_id":"b1"}'
    )


def test_blocks_keep_per_line_semantics_for_duplicates_across_block_edges() -> None:
    """Result lines and inputs go to the index in blocks; duplicates split across blocks,
    and inside one, count and resolve as if the lines were taken one at a time."""
    n = 1_300  # more than two blocks
    ids = [f"q-{i}" for i in range(n)]
    failed = [f.http_error(i, 500, "server_error", "server_error") for i in ids[::2]]
    outputs = [f.ok(i, f.chat_body(text=i)) for i in ids] + failed + [f.ok(ids[3], f.chat_body(text="again"))]
    report, rows = run([f.request(i, content=i) for i in ids + ids[:600]], [BatchResults("b1", outputs)])
    assert report.duplicate_results == len(failed) + 1
    assert report.duplicate_inputs == 600 and report.total == n + 600
    assert all(r["status"] == "succeeded" for r in rows)
    assert rows[3]["response"]["choices"][0]["message"]["content"] == "q-3"  # the first success is kept
