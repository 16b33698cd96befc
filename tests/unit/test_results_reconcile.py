"""Reconciliation report: check(), usage from every endpoint shape, cost, to_dict()."""

from __future__ import annotations

import io
import json

import pytest

from airflow_batch_provider.exceptions import ReconciliationError
from airflow_batch_provider.results import BatchResults, Reconciliation, join_results
from tests.unit import _results_factory as f


def join(inputs, batches, **kwargs) -> Reconciliation:
    return join_results(inputs, batches, io.BytesIO(), **kwargs)


def test_missing_fails_with_counts_and_custom_ids() -> None:
    report = join(
        [f.request(i) for i in ("q-1", "q-2", "q-3")],
        [BatchResults("b1", [f.ok("q-1"), f.ok("stray")], status="completed")],
    )
    with pytest.raises(ReconciliationError) as exc:
        report.check()
    msg = str(exc.value)
    assert "2 of 3 requests have no result line" in msg
    assert "q-2, q-3" in msg and "stray" in msg
    assert "succeeded=1 failed=0 expired=0 cancelled=0 missing=2 (total 3)" in msg


def test_missing_sample_is_bounded_and_marked() -> None:
    report = join([f.request(f"q-{i}") for i in range(50)], [], sample_size=3)
    assert report.missing == 50 and report.missing_sample == ["q-0", "q-1", "q-2"]
    with pytest.raises(ReconciliationError, match=r"q-0, q-1, q-2, \.\.\."):
        report.check()


def test_too_few_succeeded_fails_with_counts_and_ids() -> None:
    inputs = [f.request(i) for i in "abcd"]
    batch = BatchResults(
        "b1",
        [f.ok("a"), f.ok("b")],
        [f.http_error("c", 400, "context_length_exceeded"), f.expired("d")],
        status="expired",
    )
    report = join(inputs, [batch])
    report.check(min_success_ratio=0.5)
    with pytest.raises(ReconciliationError) as exc:
        report.check(min_success_ratio=0.75)
    msg = str(exc.value)
    assert "only 2 of 4 requests succeeded (50.0%), below min_success_ratio 75.0%" in msg
    assert "c (failed: context_length_exceeded), d (expired: batch_expired)" in msg
    assert "succeeded=2 failed=1 expired=1" in msg and "retryable=1" in msg
    assert "missing" not in msg.split("Counts:")[0]


def test_check_without_ratio_passes_when_all_accounted_even_if_failed() -> None:
    report = join([f.request("a")], [BatchResults("b1", error_lines=[f.http_error("a", 400, "x")])])
    report.check()
    with pytest.raises(ReconciliationError):
        report.check(min_success_ratio=0.01)


@pytest.mark.parametrize("ratio", [-0.1, 1.5])
def test_check_rejects_a_ratio_out_of_range(ratio: float) -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        Reconciliation().check(ratio)


RESPONSES_BODY = {
    "object": "response",
    "model": "gpt-5-mini-2025-08-07",
    "usage": {
        "input_tokens": 100,
        "input_tokens_details": {"cached_tokens": 40},
        "output_tokens": 30,
        "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 130,
    },
}
EMBEDDINGS_BODY = {
    "object": "list",
    "model": "text-embedding-3-small",
    "data": [{"embedding": [0.1]}],
    "usage": {"prompt_tokens": 8, "total_tokens": 8},
}
COMPLETIONS_BODY = {
    "object": "text_completion",
    "model": "gpt-4o-mini",
    "choices": [{"text": "x"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
}
MODERATION_BODY = {"id": "modr-1", "model": "omni-moderation-latest", "results": [{"flagged": False}]}


def test_usage_is_summed_over_every_endpoint_shape_and_by_model() -> None:
    chat = f.chat_body(prompt=50, completion=10, cached=10, reasoning=4)
    bodies = {
        "a": chat,
        "b": RESPONSES_BODY,
        "c": EMBEDDINGS_BODY,
        "d": COMPLETIONS_BODY,
        "e": MODERATION_BODY,
    }
    report = join(
        [f.request(k) for k in bodies], [BatchResults("b1", [f.ok(k, v) for k, v in bodies.items()])]
    )
    assert report.usage.to_dict() == {
        "responses": 4,
        "input_tokens": 163,
        "cached_tokens": 50,
        "output_tokens": 47,
        "reasoning_tokens": 24,
        "total_tokens": 210,
    }
    assert set(report.usage_by_model) == {
        "gpt-4o-mini-2024-07-18",
        "gpt-5-mini-2025-08-07",
        "text-embedding-3-small",
        "gpt-4o-mini",
    }
    assert report.usage_by_model["gpt-5-mini-2025-08-07"].cached_tokens == 40


def test_usage_counts_every_billed_response_including_replaced_rounds() -> None:
    batches = [
        BatchResults("b0", [f.ok("a", f.chat_body(prompt=10, completion=1))]),
        BatchResults("b1", [f.ok("a", f.chat_body(prompt=10, completion=1))], round=1),
    ]
    report = join([f.request("a")], batches)
    assert report.usage.input_tokens == 20 and report.usage.responses == 2


def test_report_estimate_cost_prices_each_model() -> None:
    body = f.chat_body(model="gpt-4o-mini-2024-07-18", prompt=1_000_000, completion=1_000_000, cached=0)
    report = join(
        [f.request("a"), f.request("b")], [BatchResults("b1", [f.ok("a", body), f.ok("b", EMBEDDINGS_BODY)])]
    )
    cost = report.estimate_cost()
    assert cost["by_model"]["gpt-4o-mini-2024-07-18"]["usd"] == pytest.approx(0.075 + 0.30)
    assert cost["usd"] == pytest.approx(0.375 + 8 * 0.01 / 1_000_000)
    assert cost["note"] is None


def test_report_estimate_cost_unknown_model_gives_none_with_note() -> None:
    body = f.chat_body(model="my-local-llama")
    report = join([f.request("a")], [BatchResults("b1", [f.ok("a", body)])])
    cost = report.estimate_cost()
    assert cost["usd"] is None and "my-local-llama" in cost["note"]
    priced = report.estimate_cost(prices={"my-local-llama": {"input": 1.0, "output": 2.0}})
    assert priced["usd"] == pytest.approx((10 * 1.0 + 5 * 2.0) / 1_000_000)


def test_body_without_model_is_priced_with_the_given_model() -> None:
    body = {"usage": {"prompt_tokens": 1_000_000, "total_tokens": 1_000_000}}
    report = join([f.request("a")], [BatchResults("b1", [f.ok("a", body)])])
    assert report.estimate_cost()["usd"] is None
    assert report.estimate_cost(model="text-embedding-3-large")["usd"] == pytest.approx(0.065)


def test_to_dict_is_json_safe_and_complete() -> None:
    report = join(
        [f.request("a"), f.request("b")],
        [BatchResults("b1", [f.ok("a")], [f.expired("b")], status="expired")],
    )
    data = json.loads(json.dumps(report.to_dict()))
    assert data["total"] == 2 and data["counts"]["expired"] == 1
    assert data["retryable"] == {"count": 1, "sample": ["b"]}
    assert data["missing"] == {"count": 0, "sample": []}
    assert data["usage"]["input_tokens"] == 10
    assert data["batches"][0] == {
        "batch_id": "b1",
        "round": 0,
        "status": "expired",
        "output_lines": 1,
        "error_lines": 1,
    }
    assert data["success_ratio"] == 0.5
