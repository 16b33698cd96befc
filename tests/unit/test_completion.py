"""Completion semantics: one decision for operator, sensor and every waiting mode."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchFailedError,
    BatchNotFoundError,
    BatchProviderError,
    BatchServiceError,
    BatchTimeoutError,
)
from airflow_batch_provider.waiting.outcome import check_batches, resolve_event, totals


def batch(
    bid: str = "batch_1",
    status: str = "completed",
    total: int = 3,
    completed: int = 3,
    failed: int = 0,
    errors: list[dict[str, Any]] | None = None,
    shard: str | None = None,
) -> dict[str, Any]:
    return {
        "id": bid,
        "status": status,
        "input_file_id": "file-in",
        "output_file_id": "file-out" if completed else None,
        "error_file_id": "file-err" if failed else None,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "errors": errors or [],
        "metadata": {"airflow_shard": shard} if shard else {},
    }


def success(*batches: dict[str, Any]) -> dict[str, Any]:
    return {"status": "success", "batches": list(batches)}


def test_completed_succeeds_and_returns_summaries():
    out = resolve_event(success(batch("a"), batch("b", completed=2, failed=1)), batch_ids=["b", "a"])
    assert [b["id"] for b in out] == ["a", "b"]
    assert totals(out) == {"total": 6, "completed": 5, "failed": 1}


@pytest.mark.parametrize("event", [None, "x", {}, {"status": "weird", "batches": []}, {"status": "success"}])
def test_absent_or_unknown_event_fails_loudly(event):
    with pytest.raises(BatchProviderError) as info:
        resolve_event(event)
    assert type(info.value) is BatchProviderError


def test_unknown_error_reason_fails_loudly():
    with pytest.raises(BatchProviderError, match="unknown error reason 'meteor'"):
        resolve_event({"status": "error", "reason": "meteor", "message": "m", "batches": []})


@pytest.mark.parametrize(
    ("reason", "exc_type"),
    [
        ("timeout", BatchTimeoutError),
        ("polling_error", BatchServiceError),
        ("auth", BatchAuthError),
        ("not_found", BatchNotFoundError),
    ],
)
def test_error_reasons_map_to_exceptions(reason, exc_type):
    event = {"status": "error", "reason": reason, "message": f"msg {reason}", "batches": [batch()]}
    with pytest.raises(exc_type, match=f"msg {reason}") as info:
        resolve_event(event)
    assert info.value.batches[0]["id"] == "batch_1"
    assert info.value.reason == reason


def test_event_for_other_batches_is_refused():
    with pytest.raises(BatchProviderError, match="waited for"):
        resolve_event(success(batch("a")), batch_ids=["a", "b"])


def test_non_terminal_batch_in_success_event_is_a_bug():
    with pytest.raises(BatchProviderError, match="not terminal"):
        resolve_event(success(batch(status="in_progress")))


def test_failed_batch_quotes_validation_errors_and_lines():
    errors = [
        {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "line": 3},
        {"code": "token_limit_exceeded", "message": "Enqueued token limit reached.", "line": None},
    ]
    b = batch("b2", status="failed", total=0, completed=0, errors=errors, shard="2/2")
    shards = [{"batch_id": "b1", "start_line": 1}, {"batch_id": "b2", "start_line": 101}]
    with pytest.raises(BatchFailedError) as info:
        resolve_event(success(b), shards=shards)
    msg = str(info.value)
    assert "Batch b2 (shard 2/2) failed with 2 errors" in msg
    assert "line 3 (input line 103): [invalid_json_line] This line is not parseable" in msg
    assert "[token_limit_exceeded] Enqueued token limit reached." in msg
    assert info.value.batches == [b]


def test_failed_batch_without_errors_still_fails():
    with pytest.raises(BatchFailedError, match="gave no reason"):
        check_batches([batch(status="failed", total=0, completed=0)])


def test_completed_with_every_request_failed_fails_with_counts():
    with pytest.raises(BatchFailedError, match=r"every request failed \(3/3 failed, 0 succeeded\)") as info:
        check_batches([batch(completed=0, failed=3)])
    assert "file-err" in str(info.value)


def test_completed_with_some_failures_succeeds():
    assert check_batches([batch(completed=1, failed=2)])[0]["status"] == "completed"


@pytest.mark.parametrize(
    ("status", "flag"), [("expired", "fail_on_expired"), ("cancelled", "fail_on_cancelled")]
)
def test_expired_and_cancelled_follow_their_flag(status, flag):
    b = batch(status=status, completed=1, failed=0)
    with pytest.raises(BatchFailedError, match=f"Set {flag}=False"):
        check_batches([b])
    assert check_batches([b], **{flag: False}) == [b]


def test_all_problems_reported_in_one_error():
    with pytest.raises(BatchFailedError) as info:
        check_batches(
            [
                batch("a", status="failed", total=0, completed=0),
                batch("b"),
                batch("c", status="expired", completed=1),
            ]
        )
    msg = str(info.value)
    assert "Batch a" in msg and "Batch c" in msg and "Batch b" not in msg
