"""The UI tab's cost estimate: the submit manifest's estimate beside the usage the batches reported."""

from __future__ import annotations

from airflow_batch_provider.plugins import pages
from airflow_batch_provider.plugins.task_source import TaskRefs, refs_from_xcoms
from airflow_batch_provider.plugins.view_model import estimate_view

ESTIMATE = {
    "input_tokens": 1234,
    "output_tokens_bound": 5000,
    "cost_low_usd": 0.0001,
    "cost_high_usd": 0.0016,
    "tokenizer": "o200k_base",
    "exact": True,
    "max_cost_usd": 2.5,
}


def _refs() -> TaskRefs:
    return TaskRefs("d", "r", "t", -1, state="success", operator="X", try_number=1)


def test_the_submit_manifest_estimate_is_read_from_xcom():
    refs = refs_from_xcoms(_refs(), {"return_value": {"batch_ids": ["b1"], "estimate": ESTIMATE}})
    assert refs.estimate == ESTIMATE
    assert refs_from_xcoms(_refs(), {"return_value": {"batch_ids": ["b1"]}}).estimate is None


def test_estimate_beside_actual_usage_and_cost():
    total = {"usage": {"responses": 3, "input_tokens": 1200, "output_tokens": 300}, "cost_usd": 0.0002}
    view = estimate_view(ESTIMATE, total)
    assert view == {
        **ESTIMATE,
        "actual_input_tokens": 1200,
        "actual_output_tokens": 300,
        "actual_cost_usd": 0.0002,
    }
    waiting = estimate_view(ESTIMATE, {"usage": {"responses": 0}, "cost_usd": None})
    assert waiting["actual_input_tokens"] is None and waiting["actual_cost_usd"] is None
    assert estimate_view(None, total) is None


def test_the_tab_shows_the_estimate_and_the_budget():
    view = estimate_view(
        {**ESTIMATE, "tokenizer": "<b>x</b>"}, {"usage": {"responses": 1, "input_tokens": 1200}}
    )
    html = pages.estimate_section(view)
    assert "Cost estimate" in html and "1,234 estimated" in html and "1,200 actual" in html
    assert "bound 5,000" in html and "$2.50 (max_cost_usd)" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html and "<b>x</b>" not in html
    no_guard = pages.estimate_section(estimate_view({**ESTIMATE, "max_cost_usd": None}, {"usage": {}}))
    assert "no guard" in no_guard and "not yet" in no_guard
