"""The boundary payloads are TypedDicts (payloads.py): producers are annotated with them, so
mypy checks their keys, and what they build at run time has exactly the declared keys."""

from __future__ import annotations

import inspect

from airflow_batch_provider import payloads
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
from airflow_batch_provider.results.manifest import build_fetch_manifest
from airflow_batch_provider.submission.identity import Identity, build_submit_manifest
from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger
from airflow_batch_provider.waiting.status import summarize_batch


def _keys(typed: type) -> tuple[set[str], set[str]]:
    return set(typed.__required_keys__), set(typed.__optional_keys__)  # type: ignore[attr-defined]


def test_producers_are_annotated_with_the_payload_types() -> None:
    def returns(func) -> object:
        func = inspect.unwrap(func)  # BaseOperator wraps execute
        name = func.__annotations__["return"]  # a string: the modules postpone annotations
        return func.__globals__[name]

    assert returns(summarize_batch) is payloads.BatchSummary
    assert returns(build_submit_manifest) is payloads.SubmitManifest
    assert returns(build_fetch_manifest) is payloads.FetchManifest
    assert returns(OpenAIBatchTrigger._wait) is payloads.WaitEvent
    assert returns(OpenAIBatchSubmitOperator._wait_sync) is payloads.WaitEvent
    assert returns(OpenAIBatchSubmitOperator.execute) is payloads.SubmitManifest
    assert returns(OpenAIBatchFetchOperator._resubmit) is payloads.FetchRound


def test_a_batch_summary_has_the_declared_keys() -> None:
    summary = summarize_batch({"id": "batch_1", "status": "completed", "request_counts": {"total": 1}})
    required, optional = _keys(payloads.BatchSummary)
    assert set(summary) == required and not optional
    assert set(summary["request_counts"]) == set(payloads.RequestCounts.__required_keys__)


def test_a_submit_manifest_has_the_declared_keys() -> None:
    shard = {"index": 0, "start_line": 1, "line_count": 2, "byte_count": 3}
    manifest = build_submit_manifest(
        conn_id="c",
        endpoint="/v1/chat/completions",
        model="m",
        fingerprint="f" * 16,
        identity=Identity("d", "t", "r"),
        input_uri=None,
        shards=[shard],
        batches=[{"id": "batch_1", "input_file_id": "file-1"}],
    )
    required, optional = _keys(payloads.SubmitManifest)
    assert set(manifest) == required and optional == {"estimate"}
    assert set(manifest["shards"][0]) == set(payloads.SubmitShard.__required_keys__)


def test_a_fetch_manifest_has_the_declared_keys() -> None:
    manifest = build_fetch_manifest(
        source={"batch_ids": ["batch_1"], "shards": []},
        identity={"dag_id": "d"},
        destination="file:///tmp/out",
        rounds=[{"round": 0, "batch_ids": ["batch_1"], "resubmitted": 0, "batches": []}],
        landed=[],
        report=None,
        cost=None,
        results=None,
        input_uri=None,
        joined_from=None,
        started_at=0.0,
        finished_at=1.0,
        status="complete",
    )
    required, optional = _keys(payloads.FetchManifest)
    assert set(manifest) == required and not optional
