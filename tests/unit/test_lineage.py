"""Lineage: dataset naming, the run facet, Asset event extras; no secret, no eager OpenLineage import."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors
from openlineage.client.serde import Serde

from airflow_batch_provider import lineage, storage

SUBMIT_MANIFEST = {
    "conn_id": "openai_default",
    "endpoint": "/v1/chat/completions",
    "model": "gpt-4o-mini",
    "fingerprint": "0123456789abcdef",
    "identity": {"dag_id": "d", "task_id": "submit", "run_id": "r", "map_index": -1},
    "input_uri": "s3://aws_conn@bucket/evals/in.jsonl",
    "batch_ids": ["batch_a", "batch_b"],
    "input_file_ids": ["file-1", "file-2"],
    "shards": [],
    "batches": [
        {
            "id": "batch_a",
            "status": "completed",
            "request_counts": {"total": 3, "completed": 2, "failed": 1},
            "usage": {
                "input_tokens": 1_000_000,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 1_000_000,
            },
        },
        {"id": "batch_b", "status": "completed", "request_counts": {"total": 2, "completed": 2, "failed": 0}},
    ],
}

FETCH_MANIFEST = {
    "endpoint": "/v1/embeddings",
    "model": "text-embedding-3-small",
    "batch_ids": ["batch_a", "batch_r1"],
    "rounds": [{"round": 0}, {"round": 1}],
    "input": {"uri": "file:///data/in.jsonl", "fingerprint": "fedcba9876543210"},
    "fingerprint": "fedcba9876543210",
    "counts": {"succeeded": 9, "failed": 1, "expired": 0, "cancelled": 0, "missing": 0},
    "usage": {"input_tokens": 90, "cached_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0},
    "cost": {
        "usd": 0.000001,
        "by_model": {"text-embedding-3-small": {"usd": 0.000001, "matched": "text-embedding-3-small"}},
        "note": None,
    },
    "manifest_uri": "s3://bucket/out/manifest.json",
    "results_uri": "s3://bucket/out/results.jsonl",
    "landed": [
        {
            "batch_id": "batch_a",
            "kind": "output",
            "uri": "s3://bucket/out/batch_a/output.jsonl",
            "bytes": 10,
            "lines": 2,
        },
        {
            "batch_id": "batch_a",
            "kind": "errors",
            "uri": "s3://bucket/out/batch_a/errors.jsonl",
            "bytes": 5,
            "lines": 1,
        },
    ],
    "results": {"uri": "s3://bucket/out/results.jsonl", "bytes": 40, "lines": 10, "sha256": "ab"},
}


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("file:///tmp/x/out.jsonl", ("file", "/tmp/x/out.jsonl")),
        ("/tmp/x/out.jsonl", ("file", "/tmp/x/out.jsonl")),
        ("s3://bucket/evals/2024-01-01/out.jsonl", ("s3://bucket", "evals/2024-01-01/out.jsonl")),
        ("s3://my_conn@bucket/evals/out.jsonl", ("s3://bucket", "evals/out.jsonl")),
        ("gs://bkt/a/b.jsonl", ("gs://bkt", "a/b.jsonl")),
    ],
)
def test_dataset_ids_follow_object_storage_path(location: str, expected: tuple[str, str]) -> None:
    assert lineage.dataset_ids(location) == expected


def test_dataset_ids_of_an_object_storage_path_with_conn_id() -> None:
    path = ObjectStoragePath("s3://bucket/evals/", conn_id="aws_x") / "b1" / "output.jsonl"
    assert lineage.dataset_ids(path) == ("s3://bucket", "evals/b1/output.jsonl")


def test_public_uri_strips_user_info() -> None:
    assert storage.public_uri("s3://user:pa55@bucket/k") == "s3://bucket/k"
    assert storage.public_uri("s3://conn@bucket/k") == "s3://bucket/k"
    assert storage.public_uri("file:///tmp/a") == "file:///tmp/a"
    assert storage.public_uri(None) is None


def test_submit_lineage_has_input_dataset_and_summed_run_facet() -> None:
    result = lineage.submit_lineage(SUBMIT_MANIFEST)
    assert [(d.namespace, d.name) for d in result.inputs] == [("s3://bucket", "evals/in.jsonl")]
    assert result.outputs == []
    facet = Serde.to_dict(result.run_facets[lineage.RUN_FACET_NAME])
    assert facet["batchIds"] == ["batch_a", "batch_b"]
    assert facet["endpoint"] == "/v1/chat/completions"
    assert facet["model"] == "gpt-4o-mini"
    assert facet["counts"] == {"total": 5, "completed": 4, "failed": 1}
    assert facet["usage"]["input_tokens"] == 1_000_000
    # gpt-4o-mini batch input: 0.075 USD per 1M tokens
    assert facet["estimatedCost"]["usd"] == pytest.approx(0.075)
    assert facet["inputFingerprint"] == "0123456789abcdef"
    assert facet["_schemaURL"].endswith("OpenAIBatchRunFacet.json")
    assert "aws_conn" not in json.dumps(Serde.to_dict(result.inputs[0]))


def test_submit_lineage_from_records_has_no_input_dataset() -> None:
    result = lineage.submit_lineage({**SUBMIT_MANIFEST, "input_uri": None, "batches": []})
    assert result.inputs == []
    facet = Serde.to_dict(result.run_facets[lineage.RUN_FACET_NAME])
    assert facet["counts"] == {}
    assert "estimatedCost" not in facet  # None is dropped by the serializer


def test_fetch_lineage_outputs_carry_statistics() -> None:
    result = lineage.fetch_lineage(FETCH_MANIFEST)
    assert [(d.namespace, d.name) for d in result.inputs] == [("file", "/data/in.jsonl")]
    outputs = {(d.namespace, d.name): d for d in result.outputs}
    assert set(outputs) == {
        ("s3://bucket", "out/batch_a/output.jsonl"),
        ("s3://bucket", "out/batch_a/errors.jsonl"),
        ("s3://bucket", "out/results.jsonl"),
        ("s3://bucket", "out/manifest.json"),
    }
    stats = Serde.to_dict(outputs[("s3://bucket", "out/results.jsonl")])["outputFacets"]["outputStatistics"]
    assert (stats["rowCount"], stats["size"]) == (10, 40)
    facet = Serde.to_dict(result.run_facets["openaiBatch"])
    assert facet["rounds"] == 2
    assert facet["counts"]["succeeded"] == 9
    assert facet["manifestUri"] == "s3://bucket/out/manifest.json"
    assert facet["estimatedCost"]["usd"] == 0.000001
    assert facet["estimatedCost"]["byModel"]["text-embedding-3-small"]["matched"] == "text-embedding-3-small"


def test_no_secret_reaches_the_facet() -> None:
    secret = "sk-very-secret-key"
    manifest = {
        **FETCH_MANIFEST,
        "api_key": secret,
        "password": secret,
        "conn": {"password": secret},
        "manifest_uri": f"s3://user:{secret}@bucket/out/manifest.json",
    }
    result = lineage.fetch_lineage(manifest)
    text = json.dumps(
        [Serde.to_dict(result.run_facets["openaiBatch"]), *(Serde.to_dict(d) for d in result.outputs)]
    )
    assert secret not in text


def test_asset_extra_and_events() -> None:
    extra = lineage.asset_extra(FETCH_MANIFEST)
    assert extra["counts"]["succeeded"] == 9
    assert extra["usage"]["input_tokens"] == 90
    assert extra["manifest_uri"] == "s3://bucket/out/manifest.json"
    assert extra["rounds"] == 2 and extra["cost_usd"] == 0.000001
    assert extra["batch_ids"] == ["batch_a", "batch_r1"]
    json.dumps(extra)  # an asset event extra must be JSON

    asset = Asset(name="embeddings", uri="s3://bucket/out/")
    events = OutletEventAccessors()
    events[asset].extra = {"kept": True}
    named = lineage.emit_asset_events({"outlet_events": events}, [asset, "not-an-asset"], extra)
    assert named == ["embeddings"]
    assert events[asset].extra["kept"] is True
    assert events[asset].extra["manifest_uri"] == "s3://bucket/out/manifest.json"
    assert lineage.emit_asset_events({}, [asset], extra) == []


def test_importing_lineage_does_not_import_openlineage() -> None:
    code = (
        "import sys, airflow_batch_provider.lineage, airflow_batch_provider.results.manifest;"
        "print(sorted(m for m in sys.modules if m.startswith('openlineage')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
