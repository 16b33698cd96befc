"""Merging resubmission rounds in the join: the latest attempt wins, a success is never lost."""

from __future__ import annotations

import io
import random

import pytest

from airflow_batch_provider.exceptions import BatchFileError
from airflow_batch_provider.results import BatchResults, InputShard, iter_retryable_lines, join_results
from tests.unit import _results_factory as f


def run(inputs, batches):
    out = io.BytesIO()
    report = join_results(inputs, batches, out)
    return report, f.parse_jsonl(out.getvalue())


def test_later_round_replaces_expired_and_retryable_failures() -> None:
    inputs = [f.request(i) for i in "abcd"]
    round0 = BatchResults(
        "b0",
        [f.ok("a")],
        [
            f.expired("b"),
            f.http_error("c", 429, "rate_limit_exceeded"),
            f.http_error("d", 400, "context_length_exceeded"),
        ],
        status="expired",
    )
    retried = [f.request("b"), f.request("c")]
    round1 = BatchResults("b1", [f.ok("b"), f.ok("c")], round=1, request_lines=retried, status="completed")
    report, rows = run(inputs, [round0, round1])
    assert [(r["status"], r["batch_id"]) for r in rows] == [
        ("succeeded", "b0"),
        ("succeeded", "b1"),
        ("succeeded", "b1"),
        ("failed", "b0"),
    ]
    assert report.rounds == 2 and report.retryable == 0
    assert report.duplicate_results == 0


def test_rounds_merge_the_same_in_any_order() -> None:
    inputs = [f.request(i) for i in "abc"]
    batches = [
        BatchResults("b0", [f.ok("a")], [f.expired("b"), f.expired("c")], status="expired"),
        BatchResults(
            "b1",
            [f.ok("b")],
            [f.http_error("c", 500, None, "server_error")],
            round=1,
            request_lines=[f.request("b"), f.request("c")],
        ),
        BatchResults(
            "b2",
            error_lines=[f.http_error("c", 400, "context_length_exceeded")],
            round=2,
            request_lines=[f.request("c")],
        ),
    ]
    expected = [("a", "succeeded", "b0"), ("b", "succeeded", "b1"), ("c", "failed", "b2")]
    for seed in range(6):
        shuffled = batches[:]
        random.Random(seed).shuffle(shuffled)
        report, rows = run(inputs, shuffled)
        assert [(r["custom_id"], r["status"], r["batch_id"]) for r in rows] == expected
        assert rows[2]["error"]["code"] == "context_length_exceeded" and report.retryable == 0


def test_a_success_is_never_replaced_by_a_later_failure() -> None:
    batches = [
        BatchResults("b0", [f.ok("a", f.chat_body("first"))]),
        BatchResults("b1", error_lines=[f.expired("a")], round=1, request_lines=[f.request("a")]),
    ]
    _, rows = run([f.request("a")], batches)
    assert rows[0]["status"] == "succeeded" and rows[0]["batch_id"] == "b0"
    assert rows[0]["response"]["choices"][0]["message"]["content"] == "first"


def test_latest_attempt_wins_even_when_worse() -> None:
    batches = [
        BatchResults("b0", error_lines=[f.http_error("a", 429, "rate_limit_exceeded", "requests")]),
        BatchResults(
            "b1", error_lines=[f.expired("a")], round=1, request_lines=[f.request("a")], status="expired"
        ),
    ]
    report, rows = run([f.request("a")], batches)
    assert rows[0]["status"] == "expired" and rows[0]["batch_id"] == "b1"
    assert report.retryable == 1


def test_request_absent_from_its_resubmission_batch_is_judged_by_that_batch() -> None:
    inputs = [InputShard([f.request("a"), f.request("b")], "b0")]
    round0 = BatchResults("b0", [f.ok("a")], [f.expired("b")], status="expired")
    for status, expected in (("completed", "missing"), ("expired", "expired"), ("cancelled", "cancelled")):
        round1 = BatchResults("b1", round=1, request_lines=[f.request("b")], status=status)
        _, rows = run(inputs, [round0, round1])
        assert (rows[1]["status"], rows[1]["batch_id"]) == (expected, "b1"), status


def test_without_request_lines_a_round_only_adds_what_it_returned() -> None:
    round0 = BatchResults("b0", error_lines=[f.expired("a"), f.expired("b")], status="expired")
    round1 = BatchResults("b1", [f.ok("a")], round=1, status="completed")
    _, rows = run([InputShard([f.request("a"), f.request("b")], "b0")], [round0, round1])
    assert [r["status"] for r in rows] == ["succeeded", "expired"]


def test_resubmission_cycle_with_iter_retryable_lines() -> None:
    inputs = [f.request(str(i)) for i in range(20)]
    round0 = BatchResults(
        "b0",
        [f.ok(str(i)) for i in range(0, 20, 2)],
        [f.expired(str(i)) for i in range(1, 20, 2)],
        status="expired",
    )
    out = io.BytesIO()
    first = join_results(inputs, [round0], out)
    resubmit = list(iter_retryable_lines(inputs, out.getvalue().splitlines()))
    assert first.retryable == len(resubmit) == 10
    round1 = BatchResults(
        "b1",
        [f.ok(f.parse_jsonl(line)[0]["custom_id"]) for line in resubmit],
        round=1,
        request_lines=resubmit,
        status="completed",
    )
    final, rows = run(inputs, [round0, round1])
    assert final.counts["succeeded"] == 20 and final.rounds == 2
    assert {r["batch_id"] for r in rows[1::2]} == {"b1"}
    final.check(min_success_ratio=1.0)


def test_latest_sending_wins_in_any_order_for_absent_requests() -> None:
    batches = [
        BatchResults("b0", error_lines=[f.expired("a")], status="expired"),
        BatchResults(
            "b1",
            error_lines=[f.http_error("a", 500, None, "server_error")],
            round=1,
            request_lines=[f.request("a")],
            status="completed",
        ),
        BatchResults("b2", round=2, request_lines=[f.request("a")], status="cancelled"),
    ]
    for seed in range(6):
        shuffled = batches[:]
        random.Random(seed).shuffle(shuffled)
        _, rows = run([f.request("a")], shuffled)
        assert (rows[0]["status"], rows[0]["batch_id"]) == ("cancelled", "b2"), seed


def test_request_lines_without_custom_id_are_refused() -> None:
    bad = BatchResults("b1", round=1, request_lines=[f.request("a"), b'{"method": "POST"}'])
    with pytest.raises(BatchFileError, match="request line 2 of batch b1 has no custom_id"):
        run([f.request("a")], [bad])
