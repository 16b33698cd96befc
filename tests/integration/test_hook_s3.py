"""Landing files on S3 (a real moto server) through ObjectStoragePath and an aws connection."""

from __future__ import annotations

import hashlib

import boto3
import pytest
from airflow.sdk import ObjectStoragePath

from airflow_batch_provider.exceptions import TransferError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.storage import checksum_of
from tests.integration.test_hook_emulator import ENDPOINT, completed_batch, request_lines


@pytest.fixture
def s3(moto_server):
    return boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def keys(s3, bucket: str) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def test_download_to_s3_survives_cuts_and_lands_atomically(
    emulator_conn_id, batch_emulator, aws_test_bucket, s3
):
    hook = OpenAIBatchHook(emulator_conn_id)
    batch = completed_batch(hook, count=300)
    expected = b"".join(hook.iter_file_lines(batch.output_file_id))

    batch_emulator.set_faults("files.content", cut_off=1.0, max_faults=2)
    target = ObjectStoragePath(f"s3://{aws_test_bucket}/runs/r1/{batch.id}/output.jsonl", conn_id="aws_test")
    landed = hook.download_file(batch.output_file_id, target)

    body = s3.get_object(Bucket=aws_test_bucket, Key=f"runs/r1/{batch.id}/output.jsonl")["Body"].read()
    assert body == expected
    assert landed.uri == f"s3://{aws_test_bucket}/runs/r1/{batch.id}/output.jsonl"
    assert (landed.bytes, landed.lines) == (len(expected), 300)
    assert landed.sha256 == hashlib.sha256(expected).hexdigest()
    assert keys(s3, aws_test_bucket) == [f"runs/r1/{batch.id}/output.jsonl"]  # no temporary left
    assert checksum_of(target) == landed
    assert batch_emulator.stats()["faults_injected"] == 2


def test_a_download_that_never_completes_leaves_no_object(
    batch_emulator, aws_test_bucket, s3, openai_connection
):
    conn_id = openai_connection(
        "openai_emulator_s3",
        host=batch_emulator.base_url,
        password=batch_emulator.api_key,
        extra={"max_retries": 2},
    )
    hook = OpenAIBatchHook(conn_id)
    batch = completed_batch(hook, count=50)
    batch_emulator.set_faults("files.content", cut_off=1.0)
    with pytest.raises(TransferError):
        hook.download_file(batch.output_file_id, f"s3://aws_test@{aws_test_bucket}/runs/r2/output.jsonl")
    assert keys(s3, aws_test_bucket) == []


def test_upload_from_s3_streams_the_object(emulator_conn_id, batch_emulator, aws_test_bucket, s3):
    lines = request_lines(500)
    s3.put_object(Bucket=aws_test_bucket, Key="inputs/eval.jsonl", Body=b"".join(lines))
    hook = OpenAIBatchHook(emulator_conn_id)
    source = ObjectStoragePath(f"s3://{aws_test_bucket}/inputs/eval.jsonl", conn_id="aws_test")
    batch_emulator.set_faults("files.create", error_503=1.0, max_faults=1)  # the retry re-reads from 0

    uploaded = hook.upload_file(source)

    assert uploaded.filename == "eval.jsonl" and uploaded.bytes == len(b"".join(lines))
    assert list(hook.iter_file_lines(uploaded.id)) == lines
    batch = hook.create_batch(uploaded.id, ENDPOINT)
    assert batch.input_file_id == uploaded.id
    assert batch_emulator.stats()["files_uploaded"] == 1


def test_a_failed_write_to_a_versioned_bucket_leaves_no_version(aws_test_bucket, s3):
    # Committing the half-written temporary object and then deleting it would leave a noncurrent
    # version and a delete marker in a versioned bucket (kept and billed): it is never committed.
    from airflow_batch_provider.storage import write_atomically

    s3.put_bucket_versioning(Bucket=aws_test_bucket, VersioningConfiguration={"Status": "Enabled"})

    def cut():
        yield b"partial " * 10_000
        raise ConnectionResetError("cut")

    with pytest.raises(ConnectionResetError):
        write_atomically(f"s3://aws_test@{aws_test_bucket}/runs/out.jsonl", cut())
    versions = s3.list_object_versions(Bucket=aws_test_bucket)
    assert versions.get("Versions", []) == [] and versions.get("DeleteMarkers", []) == []
