"""The estimate where teams read it: the fetch's source and manifest (estimate vs actual) and lineage."""

from __future__ import annotations

import pytest

from airflow_batch_provider import lineage
from airflow_batch_provider.results import manifest as fm

ESTIMATE = {
    "requests": 10,
    "input_tokens": 1000,
    "output_tokens_bound": 2000,
    "cost_low_usd": 0.000075,
    "cost_high_usd": 0.000675,
    "exact": True,
    "tokenizer": "o200k_base",
    "model": "gpt-4o-mini",
    "prices": {"gpt-4o-mini": {"matched": "gpt-4o-mini", "per_1m": {"input": 0.075}, "source": "built-in"}},
    "price_source": "built-in",
    "max_cost_usd": 1.0,
    "shards": [{"index": 0, "requests": 10}],  # not carried into the fetch's state
    "largest_requests": [{"line": 1, "custom_id": "a"}],
}


def test_the_submit_estimate_travels_to_the_fetch_as_a_headline():
    source = fm.normalize_batches({"batch_ids": ["b1"], "estimate": ESTIMATE})
    assert source["estimate"]["input_tokens"] == 1000 and source["estimate"]["max_cost_usd"] == 1.0
    assert "shards" not in source["estimate"] and "largest_requests" not in source["estimate"]
    assert fm.normalize_batches("b1")["estimate"] is None


def test_estimate_vs_actual_adds_resubmission_rounds():
    source = fm.normalize_batches({"batch_ids": ["b1"], "estimate": ESTIMATE})
    second = {**ESTIMATE, "requests": 2, "input_tokens": 200, "cost_low_usd": 0.000015, "cost_high_usd": 0.1}
    rounds = [{"round": 0}, {"round": 1, "estimate": fm.round_estimate(second)}]
    usage = {"input_tokens": 1320, "output_tokens": 600}
    compared = fm.estimate_vs_actual(source, rounds, usage, {"usd": 0.0003})
    assert compared["estimated"]["requests"] == 12 and compared["estimated"]["input_tokens"] == 1200
    assert compared["estimated"]["output_tokens_bound"] == 4000
    assert compared["estimated"]["cost_high_usd"] == pytest.approx(0.100675)
    assert compared["actual"] == {"input_tokens": 1320, "output_tokens": 600, "cost_usd": 0.0003}
    assert compared["input_tokens_ratio"] == 1.1 and compared["output_tokens_share_of_bound"] == 0.15
    assert compared["cost_within_range"] is True
    assert len(compared["rounds"]) == 2
    assert fm.estimate_vs_actual(fm.normalize_batches("b1"), rounds, usage, None) is None


def test_the_fetch_manifest_has_the_comparison_and_each_rounds_estimate():
    source = fm.normalize_batches({"batch_ids": ["b1"], "estimate": ESTIMATE})
    manifest = fm.build_fetch_manifest(
        source=source, identity={}, destination="/tmp/out", rounds=[{"round": 0, "batch_ids": ["b1"]}],
        landed=[], report={"usage": {"input_tokens": 900, "output_tokens": 10}}, cost={"usd": 0.00007},
        results=None, input_uri=None, joined_from=None, started_at=0.0, finished_at=1.0, status="complete",
    )  # fmt: skip
    assert manifest["estimate"]["input_tokens_ratio"] == 0.9
    assert manifest["estimate"]["cost_within_range"] is False  # below the input-only low bound
    assert manifest["rounds"][0]["estimate"]["input_tokens"] == 1000


def test_lineage_run_facet_carries_the_estimate():
    from openlineage.client.serde import Serde

    submit = lineage.submit_lineage({"batch_ids": ["b1"], "model": "gpt-4o-mini", "estimate": ESTIMATE})
    facet = Serde.to_dict(submit.run_facets[lineage.RUN_FACET_NAME])
    assert facet["costEstimate"]["input_tokens"] == 1000 and facet["costEstimate"]["max_cost_usd"] == 1.0
    assert "largest_requests" not in facet["costEstimate"]  # custom ids stay out of lineage

    source = fm.normalize_batches({"batch_ids": ["b1"], "estimate": ESTIMATE})
    compared = fm.estimate_vs_actual(source, [{"round": 0}], {"input_tokens": 1100}, {"usd": 0.0001})
    fetch = lineage.fetch_lineage({"batch_ids": ["b1"], "estimate": compared, "usage": {}, "counts": {}})
    facet = Serde.to_dict(fetch.run_facets[lineage.RUN_FACET_NAME])
    assert facet["costEstimate"]["estimated"]["cost_high_usd"] == 0.000675
    assert facet["costEstimate"]["actual"]["input_tokens"] == 1100
    assert facet["costEstimate"]["input_tokens_ratio"] == 1.1
