"""Landing on GCS and Azure Blob Storage emulators: atomic, resumable, checksummed, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from airflow.sdk import ObjectStoragePath

from airflow_batch_provider.exceptions import TransferError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.lineage import dataset_ids, fetch_lineage
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.storage import checksum_of, write_atomically
from tests.integration._fetch_support import REJECT, make_context, request_lines, run_operator, submit_batch
from tests.storage_backends.conftest import Store


def test_lands_whole_with_size_sha256_and_lines(store: Store) -> None:
    store.put("runs/out.jsonl", b"previous\n")
    chunks = [b'{"a": 1}\n{"b"', b": 2}\n", b'{"c": 3}']
    landed = write_atomically(store.url("runs/out.jsonl"), iter(chunks))

    data = b"".join(chunks)
    assert store.read("runs/out.jsonl") == data  # the previous version replaced
    assert landed.uri == store.public("runs/out.jsonl")  # no connection id in what is recorded
    assert (landed.bytes, landed.lines) == (len(data), 3)
    assert landed.sha256 == hashlib.sha256(data).hexdigest()
    assert store.keys() == ["runs/out.jsonl"]  # the temporary object is gone
    assert checksum_of(store.url("runs/out.jsonl")) == landed
    assert checksum_of(store.url("runs/missing.jsonl")) is None
    assert checksum_of(store.url("runs")) is None  # a "directory" is not a landed file


def test_a_failed_write_keeps_the_previous_version_and_leaves_no_temporary(store: Store) -> None:
    store.put("runs/out.jsonl", b"previous\n")

    def cut() -> Iterator[bytes]:
        yield b"new bytes " * 100_000  # ~1 MB: the writer has sent some of it
        raise ConnectionResetError("cut")

    with pytest.raises(ConnectionResetError):
        write_atomically(store.url("runs/out.jsonl"), cut())
    assert store.read("runs/out.jsonl") == b"previous\n"
    assert store.keys() == ["runs/out.jsonl"]


def test_download_resumes_after_cuts(store: Store, emulator_conn_id: str, batch_emulator: Any) -> None:
    hook = OpenAIBatchHook(emulator_conn_id)
    batch = submit_batch(hook, request_lines(200))
    expected = b"".join(hook.iter_file_lines(batch.output_file_id))

    batch_emulator.set_faults("files.content", cut_off=1.0, max_faults=2)
    landed = hook.download_file(
        batch.output_file_id, ObjectStoragePath(store.url(f"r1/{batch.id}/output.jsonl"))
    )

    assert batch_emulator.stats()["faults_injected"] == 2
    assert store.read(f"r1/{batch.id}/output.jsonl") == expected
    assert landed.sha256 == hashlib.sha256(expected).hexdigest() and landed.lines == 200
    assert store.keys() == [f"r1/{batch.id}/output.jsonl"]


def test_a_download_that_never_completes_leaves_nothing(
    store: Store, batch_emulator: Any, openai_connection: Any
) -> None:
    conn_id = openai_connection(
        "openai_fragile",
        host=batch_emulator.base_url,
        password=batch_emulator.api_key,
        extra={"max_retries": 1},
    )
    hook = OpenAIBatchHook(conn_id)
    batch = submit_batch(hook, request_lines(50))
    batch_emulator.set_faults("files.content", cut_off=1.0)
    with pytest.raises(TransferError):
        hook.download_file(batch.output_file_id, store.url("r2/output.jsonl"))
    assert store.keys() == []


def test_fetch_lands_results_manifest_and_lineage_and_a_rerun_skips(
    store: Store, emulator_conn_id: str
) -> None:
    hook = OpenAIBatchHook(emulator_conn_id)
    batch = submit_batch(hook, request_lines(6, special={2: REJECT}))
    prefix = "evals/2024-01-01"

    def fetch(destination: str, **kwargs: Any) -> dict[str, Any]:
        make = lambda: OpenAIBatchFetchOperator(  # noqa: E731
            task_id="fetch", batches=[batch.id], destination=destination, conn_id=emulator_conn_id, **kwargs
        )
        return run_operator(make, make_context())

    xcom = fetch(store.url(f"{prefix}/"))

    assert store.keys() == [
        f"{prefix}/{batch.id}/errors.jsonl", f"{prefix}/{batch.id}/output.jsonl",
        f"{prefix}/manifest.json", f"{prefix}/results.jsonl",
    ]  # fmt: skip
    manifest = json.loads(store.read(f"{prefix}/manifest.json"))
    for row in manifest["landed"]:
        body = store.read(row["uri"].removeprefix(store.public()))
        assert (hashlib.sha256(body).hexdigest(), len(body)) == (row["sha256"], row["bytes"])
    results = [json.loads(line) for line in store.read(f"{prefix}/results.jsonl").splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 2 + ["failed"] + ["succeeded"] * 3
    assert xcom["manifest_uri"] == store.public(f"{prefix}/manifest.json")
    assert store.conn_id not in json.dumps(manifest) + json.dumps(xcom)

    # Lineage names the store as Airflow's Assets do: namespace scheme://bucket, name = the key.
    lineage = fetch_lineage(manifest)
    named = {(d.namespace, d.name) for d in lineage.outputs}
    namespace = f"{store.scheme}://{store.bucket}"
    assert named == {
        (namespace, f"{prefix}/{batch.id}/output.jsonl"), (namespace, f"{prefix}/{batch.id}/errors.jsonl"),
        (namespace, f"{prefix}/results.jsonl"), (namespace, f"{prefix}/manifest.json"),
    }  # fmt: skip
    assert dataset_ids(ObjectStoragePath(store.url(f"{prefix}/results.jsonl"))) == (
        namespace, f"{prefix}/results.jsonl"
    )  # fmt: skip

    # The connection given apart from the URL; the intact files are not landed again.
    fetch(store.public(f"{prefix}/"), destination_conn_id=store.conn_id)
    manifest = json.loads(store.read(f"{prefix}/manifest.json"))
    assert all(row["skipped"] for row in manifest["landed"])
    assert len(store.keys()) == 4


def test_a_failed_write_to_gcs_stores_no_object_not_even_a_deleted_one(
    gcs_store: Store, gcs_server: str
) -> None:
    # GCS keeps a deleted object for the bucket's soft-delete retention (7 days by default), billed:
    # a half-written temporary object must be dropped before it is committed, not committed then deleted.
    def cut() -> Iterator[bytes]:
        yield b"partial " * 10_000
        raise ConnectionResetError("cut")

    with pytest.raises(ConnectionResetError):
        write_atomically(gcs_store.url("runs/out.jsonl"), cut())

    assert gcs_store.keys() == []
    listing = f"{gcs_server}/storage/v1/b/{gcs_store.bucket}/o?softDeleted=true"
    with urllib.request.urlopen(listing) as answer:
        assert json.load(answer).get("items", []) == []
