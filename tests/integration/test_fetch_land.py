"""Fetch lands result files, results.jsonl and manifest.json to file:// and s3:// (moto), idempotently."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.exceptions import BatchFileError, ReconciliationError, TransferError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from tests.integration._fetch_support import (
    REJECT,
    make_context,
    read_jsonl,
    request_lines,
    run_operator,
    sha256_file,
    submit_batch,
)

N = 6


@pytest.fixture
def completed(emulator_conn_id: str) -> dict[str, Any]:
    """One completed batch of 6 requests; request 2 is rejected by the model (400)."""
    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    lines = request_lines(N, special={2: REJECT})
    batch = submit_batch(hook, lines)
    assert batch.status == "completed" and batch.output_file_id and batch.error_file_id
    return {"hook": hook, "batch": batch, "lines": lines, "conn_id": emulator_conn_id}


def fetch(completed: dict[str, Any], destination: Any, **kwargs: Any) -> dict[str, Any]:
    def make() -> OpenAIBatchFetchOperator:
        return OpenAIBatchFetchOperator(
            task_id="fetch", batches=[completed["batch"].id], destination=destination,
            conn_id=completed["conn_id"], **kwargs,
        )  # fmt: skip

    return run_operator(make, make_context())


def test_lands_to_file_with_results_in_input_order(completed: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "out" / "2024-01-01"
    xcom = fetch(completed, f"file://{dest}/")
    batch = completed["batch"]

    output, errors = dest / batch.id / "output.jsonl", dest / batch.id / "errors.jsonl"
    assert {p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()} == {
        f"{batch.id}/output.jsonl",
        f"{batch.id}/errors.jsonl",
        "results.jsonl",
        "manifest.json",
    }
    # The landed files are the service's files, byte for byte.
    client = completed["hook"].get_conn()
    assert output.read_bytes() == client.files.content(batch.output_file_id).read()
    assert errors.read_bytes() == client.files.content(batch.error_file_id).read()

    results = read_jsonl(dest / "results.jsonl")
    assert [r["custom_id"] for r in results] == [f"q-{i:03d}" for i in range(N)]
    assert [r["status"] for r in results] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3
    assert results[2]["error"]["code"] == "context_length_exceeded"
    assert results[2]["error"]["retryable"] is False and results[2]["error"]["status_code"] == 400
    assert results[2]["response"]["error"]["code"] == "context_length_exceeded"  # the body as served
    assert results[0]["request"] == json.loads(completed["lines"][0])["body"]
    assert results[0]["response"]["choices"][0]["message"]["role"] == "assistant"
    assert all(r["batch_id"] == batch.id for r in results)

    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["counts"] == {"succeeded": 5, "failed": 1, "expired": 0, "cancelled": 0, "missing": 0}
    assert sum(manifest["counts"].values()) == manifest["total"] == N
    landed = {row["kind"]: row for row in manifest["landed"]}
    assert landed["output"]["sha256"] == sha256_file(output) and landed["output"]["lines"] == 5
    assert landed["errors"]["sha256"] == sha256_file(errors) and landed["errors"]["lines"] == 1
    assert landed["output"]["uri"] == f"file://{dest}/{batch.id}/output.jsonl"
    assert manifest["results"]["sha256"] == sha256_file(dest / "results.jsonl")
    expected_input = sum(json.loads(x)["response"]["body"]["usage"]["prompt_tokens"] for x in output.open())
    assert manifest["usage"]["input_tokens"] == expected_input > 0
    assert manifest["cost"]["usd"] > 0 and manifest["cost"]["by_model"]
    assert manifest["endpoint"] == "/v1/chat/completions" and manifest["model"].startswith("gpt-4o-mini")
    assert manifest["timings"]["created_at"] <= manifest["timings"]["completed_at"]
    assert manifest["identity"]["task_id"] == "fetch" and manifest["batch_ids"] == [batch.id]
    assert manifest["input"]["file_ids"] == [batch.input_file_id]
    assert manifest["input"]["uri"] is None and manifest["input"]["joined_from"] == "uploaded_files"
    assert manifest["rounds"][0]["batches"][0]["status"] == "completed"

    assert xcom["manifest_uri"] == f"file://{dest}/manifest.json"
    assert xcom["counts"]["succeeded"] == 5 and xcom["total"] == N and xcom["rounds"] == 1
    assert len(json.dumps(xcom)) < 2000


def test_persists_the_manifest_link(completed: dict[str, Any], tmp_path: Path) -> None:
    from airflow_batch_provider.links import LANDED_MANIFEST_XCOM_KEY
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator

    context = make_context()
    xcom = run_operator(
        lambda: OpenAIBatchFetchOperator(
            task_id="fetch", batches=[completed["batch"].id], destination=str(tmp_path),
            conn_id=completed["conn_id"],
        ),
        context,
    )  # fmt: skip
    assert context["ti"].pushed[LANDED_MANIFEST_XCOM_KEY] == xcom["manifest_uri"]
    assert any(link.name == "Batch manifest" for link in OpenAIBatchFetchOperator.operator_extra_links)


def test_rerun_lands_identical_files_and_skips_intact_ones(completed: dict[str, Any], tmp_path: Path) -> None:
    dest = tmp_path / "out"
    fetch(completed, str(dest))
    batch_dir = dest / completed["batch"].id
    before = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in batch_dir.iterdir()}
    results_before = sha256_file(dest / "results.jsonl")

    fetch(completed, str(dest))

    after = {p.name: (sha256_file(p), p.stat().st_mtime_ns) for p in batch_dir.iterdir()}
    assert after == before  # same bytes, not even rewritten
    assert sha256_file(dest / "results.jsonl") == results_before
    manifest = json.loads((dest / "manifest.json").read_text())
    assert [row["skipped"] for row in manifest["landed"]] == [True, True]

    # A landed file that no longer matches its recorded checksum is landed again.
    (batch_dir / "output.jsonl").write_bytes(b"tampered\n")
    fetch(completed, str(dest))
    assert sha256_file(batch_dir / "output.jsonl") == before["output.jsonl"][0]
    manifest = json.loads((dest / "manifest.json").read_text())
    assert {row["kind"]: row["skipped"] for row in manifest["landed"]} == {"output": False, "errors": True}


def test_lands_to_s3_on_a_moto_server(completed: dict[str, Any], aws_test_bucket: str) -> None:
    from airflow.sdk import ObjectStoragePath

    prefix = "evals/2024-01-01"
    destination = ObjectStoragePath(f"s3://{aws_test_bucket}/{prefix}/", conn_id="aws_test")
    xcom = fetch(completed, destination)
    batch = completed["batch"]

    s3 = _s3_client()
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=aws_test_bucket)["Contents"]}
    assert keys == {
        f"{prefix}/{batch.id}/output.jsonl",
        f"{prefix}/{batch.id}/errors.jsonl",
        f"{prefix}/results.jsonl",
        f"{prefix}/manifest.json",
    }
    manifest = json.loads(s3.get_object(Bucket=aws_test_bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    for row in manifest["landed"]:
        key = row["uri"].removeprefix(f"s3://{aws_test_bucket}/")
        body = s3.get_object(Bucket=aws_test_bucket, Key=key)["Body"].read()
        assert hashlib.sha256(body).hexdigest() == row["sha256"] and len(body) == row["bytes"]
    results = s3.get_object(Bucket=aws_test_bucket, Key=f"{prefix}/results.jsonl")["Body"].read().splitlines()
    assert [json.loads(r)["status"] for r in results].count("succeeded") == 5
    assert xcom["manifest_uri"] == f"s3://{aws_test_bucket}/{prefix}/manifest.json"
    assert "aws_test" not in json.dumps(manifest)  # the storage connection id stays out of URIs

    # The storage connection can also be given apart from the URL; a re-run skips intact files.
    fetch(completed, f"s3://{aws_test_bucket}/{prefix}/", destination_conn_id="aws_test")
    manifest = json.loads(s3.get_object(Bucket=aws_test_bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    assert all(row["skipped"] for row in manifest["landed"])


def test_missing_request_fails_the_task_and_the_manifest_says_so(
    completed: dict[str, Any], tmp_path: Path
) -> None:
    # The input the user points at has one request the batch never saw.
    input_path = tmp_path / "input.jsonl"
    input_path.write_bytes(b"".join(completed["lines"]) + request_lines(1, prefix="extra")[0])
    dest = tmp_path / "out"
    with pytest.raises(ReconciliationError, match=r"1 of 7 requests have no result line.*extra-000"):
        fetch(completed, str(dest), input_uri=f"file://{input_path}")
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "extra-000" in manifest["error"]
    assert manifest["counts"]["missing"] == 1 and manifest["total"] == 7
    assert manifest["input"]["uri"] == f"file://{input_path}"


def test_min_success_ratio(completed: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(ReconciliationError, match=r"only 5 of 6 requests succeeded"):
        fetch(completed, str(tmp_path / "a"), min_success_ratio=0.9)
    assert fetch(completed, str(tmp_path / "b"), min_success_ratio=0.8)["counts"]["succeeded"] == 5


def test_results_can_be_skipped(completed: dict[str, Any], tmp_path: Path) -> None:
    xcom = fetch(completed, str(tmp_path), write_results=False)
    assert not (tmp_path / "results.jsonl").exists() and xcom["results_uri"] is None
    assert xcom["counts"]["failed"] == 1  # the join still accounts for every request


@pytest.mark.parametrize("storage", ["file", "s3"])
def test_download_cut_midway_leaves_no_partial_object(
    completed: dict[str, Any],
    batch_emulator: Any,
    openai_connection: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    storage: str,
) -> None:
    # Few retries so that the cuts win quickly.
    conn_id = openai_connection(
        "openai_fragile",
        host=batch_emulator.base_url,
        password=batch_emulator.api_key,
        extra={"max_retries": 0},
    )
    completed = {**completed, "conn_id": conn_id}
    root = tmp_path / "landing"
    bucket = request.getfixturevalue("aws_test_bucket") if storage == "s3" else None
    destination = f"s3://aws_test@{bucket}/cut/" if bucket else str(root / "cut")

    def listing() -> list[str]:
        if bucket:
            return sorted(o["Key"] for o in _s3_client().list_objects_v2(Bucket=bucket).get("Contents", []))
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    batch_emulator.set_faults("files.content", cut_off=1.0)
    with pytest.raises(TransferError, match="cut"):
        fetch(completed, destination)
    assert listing() == []  # nothing at the final path, no temporary object left behind

    # One cut, then the download resumes: the landed file is complete and correct.
    batch_emulator.set_faults("files.content", cut_off=1.0, max_faults=1)
    fetch(completed, destination)
    names = listing()
    assert len(names) == 4 and not any("partial" in n for n in names)
    assert batch_emulator.stats()["faults_injected"] >= 2


def _s3_client() -> Any:
    import json as _json
    import os

    import boto3

    extra = _json.loads(os.environ["AIRFLOW_CONN_AWS_TEST"])["extra"]
    return boto3.client(
        "s3",
        endpoint_url=extra["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def test_joins_a_sharded_submit_manifest_with_its_input_uri(emulator_conn_id: str, tmp_path: Path) -> None:
    """Three shards of one input file (with a blank line): results come back in input order,
    each judged by its own shard's batch; a changed input file is refused, not mis-joined."""
    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    lines = request_lines(5, special={3: REJECT})
    input_path = tmp_path / "input.jsonl"
    input_path.write_bytes(lines[0] + lines[1] + b"\n" + b"".join(lines[2:]))  # physical line 3 is blank
    shard_rows = [(0, 1, [lines[0], lines[1]]), (1, 4, [lines[2], lines[3]]), (2, 6, [lines[4]])]
    shards, batch_ids = [], []
    for index, start, part in reversed(shard_rows):  # the manifest's order is the shard index, not the list's
        batch = submit_batch(hook, part)
        batch_ids.append(batch.id)
        shards.append(
            {"index": index, "start_line": start, "line_count": len(part), "byte_count": len(b"".join(part)),
             "batch_id": batch.id, "input_file_id": batch.input_file_id}
        )  # fmt: skip
    manifest = {
        "conn_id": emulator_conn_id, "endpoint": "/v1/chat/completions", "model": "gpt-4o-mini",
        "fingerprint": "0" * 16, "identity": None, "input_uri": f"file://{input_path}",
        "batch_ids": batch_ids, "input_file_ids": [s["input_file_id"] for s in shards], "shards": shards,
    }  # fmt: skip

    def make(dest: Path) -> Any:
        return lambda: OpenAIBatchFetchOperator(task_id="fetch", batches=manifest, destination=str(dest))

    xcom = run_operator(make(tmp_path / "out"), make_context())
    results = read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [r["custom_id"] for r in results] == [f"q-{i:03d}" for i in range(5)]
    by_index = {s["index"]: s["batch_id"] for s in shards}
    assert [r["batch_id"] for r in results] == [by_index[0]] * 2 + [by_index[1]] * 2 + [by_index[2]]
    assert [r["status"] for r in results].count("succeeded") == 4 and results[3]["status"] == "failed"
    stored = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert stored["input"]["uri"] == f"file://{input_path}" and stored["input"]["fingerprint"] == "0" * 16
    assert stored["input"]["joined_from"] == "input_uri"
    assert stored["conn_id"] == emulator_conn_id and xcom["total"] == 5  # the manifest's connection was used

    # The file changed since submit (a request removed): refuse instead of joining wrongly.
    input_path.write_bytes(lines[0] + b"\n" + b"".join(lines[2:]))
    with pytest.raises(BatchFileError, match="input_uri changed since the batches were submitted"):
        run_operator(make(tmp_path / "out2"), make_context())
