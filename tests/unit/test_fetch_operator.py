"""The fetch operator's own checks: arguments, trigger events, resuming without state."""

from __future__ import annotations

import pytest

from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchProviderError,
    BatchServiceError,
    BatchTimeoutError,
)
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator, _event_summaries


def _summary(batch_id: str, status: str = "completed") -> dict:
    return {"id": batch_id, "status": status, "request_counts": {"total": 1, "completed": 1, "failed": 0}}


def test_templated_fields() -> None:
    assert set(OpenAIBatchFetchOperator.template_fields) == {
        "batches",
        "destination",
        "conn_id",
        "input_uri",
        "max_cost_usd",
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_success_ratio": 1.5}, "min_success_ratio"),
        ({"max_resubmits": -1}, "max_resubmits"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": 10, "max_poll_interval": 5}, "poll_interval"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OpenAIBatchFetchOperator(task_id="f", batches="b", destination="/tmp/x", **kwargs)


def test_event_summaries_keep_the_waited_order_and_accept_failed_batches() -> None:
    event = {"status": "success", "batches": [_summary("b2", "expired"), _summary("b1", "failed")]}
    assert [s["id"] for s in _event_summaries(event, ["b1", "b2"])] == ["b1", "b2"]


@pytest.mark.parametrize(
    ("event", "error", "match"),
    [
        (None, BatchProviderError, "without a valid trigger event"),
        ({"status": "error", "reason": "timeout", "message": "budget"}, BatchTimeoutError, "budget"),
        ({"status": "error", "reason": "auth", "message": "401"}, BatchAuthError, "401"),
        ({"status": "error", "reason": "polling_error", "message": "5xx"}, BatchServiceError, "5xx"),
        ({"status": "weird", "batches": []}, BatchProviderError, "Unexpected trigger event"),
        ({"status": "success", "batches": [_summary("other")]}, BatchProviderError, "covers batches"),
        (
            {"status": "success", "batches": [_summary("b1", "in_progress")]},
            BatchProviderError,
            "in_progress",
        ),
    ],
)
def test_event_summaries_refuse_what_is_not_a_clean_end(event: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        _event_summaries(event, ["b1"])  # type: ignore[arg-type]


def test_resuming_without_state_says_what_to_do() -> None:
    op = OpenAIBatchFetchOperator(task_id="f", batches="b", destination="/tmp/x")
    with pytest.raises(BatchProviderError, match="clear the task"):
        op.execute_complete({}, event={"status": "success", "batches": []}, state=None)  # type: ignore[arg-type]


def test_no_lineage_before_a_fetch_finished() -> None:
    op = OpenAIBatchFetchOperator(task_id="f", batches="b", destination="/tmp/x")
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == [] and lineage.outputs == [] and lineage.run_facets == {}
