"""The fetch's input forms and its manifest (pure)."""

from __future__ import annotations

import json

import pytest

from airflow_batch_provider.results import manifest as fm

SUBMIT = {
    "conn_id": "openai_x",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-4o-mini",
    "fingerprint": "f" * 16,
    "identity": {"dag_id": "d", "task_id": "submit", "run_id": "r", "map_index": -1},
    "input_uri": "file:///in.jsonl",
    "batch_ids": ["batch_2", "batch_1"],
    "input_file_ids": ["file-2", "file-1"],
    "shards": [
        {
            "index": 1,
            "start_line": 4,
            "line_count": 2,
            "byte_count": 9,
            "batch_id": "batch_2",
            "input_file_id": "file-2",
        },
        {
            "index": 0,
            "start_line": 1,
            "line_count": 3,
            "byte_count": 9,
            "batch_id": "batch_1",
            "input_file_id": "file-1",
        },
    ],
    "batches": [],
}


def test_normalize_a_submit_manifest_orders_shards() -> None:
    source = fm.normalize_batches(SUBMIT)
    assert source["batch_ids"] == ["batch_1", "batch_2"]
    assert [s["input_file_id"] for s in source["shards"]] == ["file-1", "file-2"]
    assert source["shards"][1]["start_line"] == 4
    assert (source["endpoint"], source["model"], source["conn_id"]) == (
        "/v1/chat/completions",
        "gpt-4o-mini",
        "openai_x",
    )


@pytest.mark.parametrize(
    "value",
    ["batch_1", ["batch_1"], '["batch_1"]', "['batch_1']", json.dumps({"batch_ids": ["batch_1"]})],
)
def test_normalize_ids_and_rendered_text(value: object) -> None:
    source = fm.normalize_batches(value)
    assert source["batch_ids"] == ["batch_1"]
    assert source["shards"][0]["input_file_id"] is None


def test_normalize_a_rendered_python_dict() -> None:
    assert fm.normalize_batches(str(SUBMIT))["batch_ids"] == ["batch_1", "batch_2"]


@pytest.mark.parametrize("value", [[], "", {"batch_ids": []}, 42, ["a", "a"], [1, 2], "{not: valid"])
def test_normalize_rejects_what_names_no_batch(value: object) -> None:
    with pytest.raises(ValueError):
        fm.normalize_batches(value)


def test_aggregate_timings() -> None:
    summaries = [
        {"timings": {"created_at": 10, "in_progress_at": 12, "completed_at": 30}},
        {"timings": {"created_at": 8, "in_progress_at": 15, "expired_at": 40}},
    ]
    assert fm.aggregate_timings(summaries) == {"created_at": 8, "in_progress_at": 12, "completed_at": 40}


def test_build_manifest_and_small_form() -> None:
    rounds = [
        {"round": 0, "batch_ids": ["batch_1"], "batches": [{"id": "batch_1", "timings": {"created_at": 5}}]},
        {"round": 1, "batch_ids": ["batch_r"], "resubmitted": 2, "fingerprint": "a" * 16, "batches": []},
    ]
    landed = [
        fm.landed_entry(
            "batch_1",
            "output",
            "file-o",
            {"uri": "s3://conn@b/out/batch_1/output.jsonl", "bytes": 3, "sha256": "x", "lines": 1},
            skipped=False,
        )
    ]
    report = {
        "total": 4,
        "counts": {"succeeded": 3, "failed": 1, "expired": 0, "cancelled": 0, "missing": 0},
        "retryable": {"count": 0, "sample": []},
        "usage": {"responses": 3, "input_tokens": 30, "cached_tokens": 10, "output_tokens": 5},
    }
    manifest = fm.build_fetch_manifest(
        source=fm.normalize_batches(SUBMIT),
        identity={"dag_id": "d", "task_id": "fetch", "run_id": "r", "map_index": -1, "try_number": 1},
        destination="s3://conn@b/out/",
        rounds=rounds,
        landed=landed,
        report=report,
        cost={"usd": 0.5},
        results={"uri": "s3://conn@b/out/results.jsonl", "bytes": 1, "sha256": "y", "lines": 4},
        input_uri="file:///in.jsonl",
        joined_from="input_uri",
        started_at=100.0,
        finished_at=101.0,
        status="complete",
    )
    assert manifest["manifest_uri"] == "s3://b/out/manifest.json"
    assert manifest["results_uri"] == "s3://b/out/results.jsonl"
    assert manifest["landed"][0]["uri"] == "s3://b/out/batch_1/output.jsonl"
    assert manifest["batch_ids"] == ["batch_1", "batch_r"]
    assert manifest["rounds"][1]["resubmitted"] == 2
    assert manifest["usage"]["cached_tokens"] == 10 and manifest["usage"]["reasoning_tokens"] == 0
    assert manifest["input"] == {
        "uri": "file:///in.jsonl",
        "joined_from": "input_uri",
        "fingerprint": "f" * 16,
        "file_ids": ["file-1", "file-2"],
        "requests": 4,
    }
    assert manifest["timings"]["created_at"] == 5 and manifest["timings"]["fetch_finished_at"] == 101.0
    json.dumps(manifest)
    small = fm.small_form(manifest)
    assert small["cost_usd"] == 0.5 and small["rounds"] == 2 and small["total"] == 4
    assert len(json.dumps(small)) < 1000
    assert fm.previous_checksums(manifest) == {"s3://b/out/batch_1/output.jsonl": (3, "x")}
