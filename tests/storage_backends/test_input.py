"""The submit operator reads its JSONL input from GCS and Azure Blob Storage emulators."""

from __future__ import annotations

from typing import Any

from airflow.sdk import ObjectStoragePath

from airflow_batch_provider.lineage import submit_lineage
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
from tests.integration._fetch_support import request_lines
from tests.integration.test_submit_resume import FakeTI
from tests.storage_backends.conftest import Store


def _submit(input_path: Any, conn_id: str) -> dict[str, Any]:
    op = OpenAIBatchSubmitOperator(
        task_id="submit", input_path=input_path, conn_id=conn_id, wait_for_completion=False
    )
    op._lineage_manifest = manifest = op.execute({"ti": FakeTI()})
    return manifest


def test_submit_reads_the_input_from_the_store(
    store: Store, emulator_conn_id: str, batch_emulator: Any
) -> None:
    lines = request_lines(5)
    store.put("inputs/eval.jsonl", b"".join(lines))

    manifest = _submit(store.url("inputs/eval.jsonl"), emulator_conn_id)

    assert manifest["input_uri"] == store.public("inputs/eval.jsonl")  # recorded without the connection
    assert manifest["shards"][0]["line_count"] == 5
    [file_id] = manifest["input_file_ids"]
    assert b"".join(batch_emulator.client().files.content(file_id).iter_bytes()) == b"".join(lines)
    # The storage connection is kept apart (the fetch reads the input again through it), not in the URI.
    assert manifest["input_conn_id"] == store.conn_id

    # Lineage: the input dataset is the object, named as Airflow's Assets name it.
    [dataset] = submit_lineage(manifest).inputs
    assert (dataset.namespace, dataset.name) == (f"{store.scheme}://{store.bucket}", "inputs/eval.jsonl")


def test_submit_reads_an_object_storage_path_with_conn_id(
    store: Store, emulator_conn_id: str, batch_emulator: Any
) -> None:
    store.put("in/two.jsonl", b"".join(request_lines(2)))
    path = ObjectStoragePath(store.public("in/two.jsonl"), conn_id=store.conn_id)

    manifest = _submit(path, emulator_conn_id)

    assert manifest["input_uri"] == store.public("in/two.jsonl")
    assert manifest["shards"][0]["line_count"] == 2
    assert batch_emulator.stats()["files_uploaded"] == 1
