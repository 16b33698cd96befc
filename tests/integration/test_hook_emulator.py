"""OpenAIBatchHook against the real emulator over HTTP, faults switched on."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import httpx
import pytest

from airflow_batch_provider.exceptions import BatchAuthError, BatchNotFoundError, TransferError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.storage import checksum_of

ENDPOINT = "/v1/chat/completions"


def request_lines(count: int, model: str = "gpt-4o-mini") -> list[bytes]:
    return [
        json.dumps(
            {
                "custom_id": f"q-{i}",
                "method": "POST",
                "url": ENDPOINT,
                "body": {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]},
            }
        ).encode()
        + b"\n"
        for i in range(count)
    ]


def wait_terminal(hook: OpenAIBatchHook, batch_id: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        batch = hook.get_batch(batch_id)
        if batch.status in ("completed", "failed", "expired", "cancelled"):
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.05)


def completed_batch(hook: OpenAIBatchHook, count: int = 30, **create):
    uploaded = hook.upload_file(iter(request_lines(count)), filename="input.jsonl")
    batch = hook.create_batch(uploaded.id, ENDPOINT, **create)
    return wait_terminal(hook, batch.id)


def test_round_trip_to_a_local_path(emulator_conn_id, batch_emulator, tmp_path):
    hook = OpenAIBatchHook(emulator_conn_id)
    assert hook.test_connection()[0]
    batch = completed_batch(hook, metadata={"airflow_identity": "abc123", "team": "evals"})
    assert batch.status == "completed" and batch.request_counts.completed == 30

    landed = hook.download_file(batch.output_file_id, str(tmp_path / "b" / "output.jsonl"))
    data = (tmp_path / "b" / "output.jsonl").read_bytes()
    assert landed.lines == 30 and landed.bytes == len(data)
    assert landed.sha256 == hashlib.sha256(data).hexdigest()
    assert checksum_of(tmp_path / "b" / "output.jsonl") == landed
    assert b"".join(hook.iter_file_lines(batch.output_file_id)) == data
    ids = {json.loads(line)["custom_id"] for line in hook.iter_file_lines(batch.output_file_id)}
    assert ids == {f"q-{i}" for i in range(30)}
    assert list(hook.iter_file_lines(batch.input_file_id)) == request_lines(30)

    assert [b.id for b in hook.find_batches({"airflow_identity": "abc123"})] == [batch.id]
    assert hook.find_batches({"airflow_identity": "other"}) == []
    assert batch.id in {b.id for b in hook.iter_batches()}
    assert hook.get_file(batch.output_file_id).purpose == "batch_output"
    assert batch.output_file_id in {f.id for f in hook.iter_files(purpose="batch_output")}

    url = hook.batch_console_url(batch.id)
    assert url == batch_emulator.batch_page_url(batch.id)
    assert httpx.get(url).status_code == 200

    with pytest.raises(BatchNotFoundError, match="file-nope"):
        hook.download_file("file-nope", tmp_path / "b" / "missing.jsonl")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["output.jsonl"]

    hook.delete_file(batch.input_file_id)
    hook.delete_file(batch.input_file_id)  # already gone: fine
    with pytest.raises(BatchNotFoundError):
        hook.get_file(batch.input_file_id)
    stats = batch_emulator.stats()
    assert (stats["files_uploaded"], stats["batches_created"]) == (1, 1)


def test_the_whole_flow_survives_transient_faults(emulator_conn_id, batch_emulator, tmp_path):
    faults = {"error_500": 0.2, "error_503": 0.1, "error_429": 0.2, "retry_after": 0.05, "max_faults": 6}
    batch_emulator.configure_faults({"routes": {"*": faults}, "seed": 7})
    hook = OpenAIBatchHook(emulator_conn_id)
    batch = completed_batch(hook, count=10)
    landed = hook.download_file(batch.output_file_id, tmp_path / "output.jsonl")
    assert landed.lines == 10
    stats = batch_emulator.stats()
    assert stats["faults_injected"] > 0
    assert stats["batches_created"] == 1  # a create retried after a fault made no duplicate
    assert stats["files_uploaded"] == 1


def test_download_cut_midway_resumes(emulator_conn_id, batch_emulator, tmp_path):
    hook = OpenAIBatchHook(emulator_conn_id)
    batch = completed_batch(hook, count=200)
    expected = b"".join(hook.iter_file_lines(batch.output_file_id))
    batch_emulator.set_faults("files.content", cut_off=1.0, max_faults=3)
    landed = hook.download_file(batch.output_file_id, tmp_path / "out" / "output.jsonl")
    assert (tmp_path / "out" / "output.jsonl").read_bytes() == expected
    assert landed.sha256 == hashlib.sha256(expected).hexdigest() and landed.lines == 200
    assert batch_emulator.stats()["faults_injected"] == 3
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["output.jsonl"]


def test_download_cut_every_time_leaves_nothing(
    emulator_conn_id, batch_emulator, tmp_path, openai_connection
):
    conn_id = openai_connection(
        "openai_emulator_few",
        host=batch_emulator.base_url,
        password=batch_emulator.api_key,
        extra={"max_retries": 2},
    )
    hook = OpenAIBatchHook(conn_id)
    batch = completed_batch(hook, count=50)
    batch_emulator.set_faults("files.content", cut_off=1.0)
    with pytest.raises(TransferError, match="cut"):
        hook.download_file(batch.output_file_id, tmp_path / "out" / "output.jsonl")
    assert list((tmp_path / "out").iterdir()) == []


def test_wrong_key_is_an_auth_error_without_the_key(batch_emulator, openai_connection):
    wrong = "sk-wrong-key-for-the-emulator-123456"
    conn_id = openai_connection("openai_wrong", host=batch_emulator.base_url, password=wrong)
    hook = OpenAIBatchHook(conn_id)
    with pytest.raises(BatchAuthError) as info:
        hook.upload_file([b"{}\n"])
    assert wrong not in str(info.value) and "API Key" in str(info.value)
    ok, message = hook.test_connection()
    assert not ok and wrong not in message
    assert batch_emulator.stats()["files_uploaded"] == 0


@pytest.mark.emulator(requests_per_second=5)
def test_cancel_a_running_batch(emulator_conn_id, batch_emulator):
    hook = OpenAIBatchHook(emulator_conn_id)
    uploaded = hook.upload_file(request_lines(100))
    batch = hook.create_batch(uploaded.id, ENDPOINT)
    cancelled = hook.cancel_batch(batch.id)
    assert cancelled.status in ("cancelling", "cancelled")
    final = wait_terminal(hook, batch.id)
    assert final.status == "cancelled"
    assert hook.cancel_batch(batch.id).status == "cancelled"  # again: returned as it is
    assert batch_emulator.stats()["batches_cancelled"] == 1


@pytest.mark.emulator(requests_per_second=5)
async def test_async_polling_shares_one_client(emulator_conn_id, batch_emulator):
    hook = OpenAIBatchHook(emulator_conn_id)
    uploaded = await asyncio.to_thread(hook.upload_file, request_lines(50))
    batches = [await asyncio.to_thread(hook.create_batch, uploaded.id, ENDPOINT) for _ in range(3)]
    batch_emulator.set_faults("batches.retrieve", error_429=0.3, retry_after=0.05)
    hooks = [OpenAIBatchHook(emulator_conn_id) for _ in batches]
    seen = await asyncio.gather(*(h.aget_batch(b.id) for h, b in zip(hooks, batches, strict=True)))
    assert [b.id for b in seen] == [b.id for b in batches]
    assert len({id(await h.get_async_conn()) for h in hooks}) == 1
    cancelled = await hooks[0].acancel_batch(batches[0].id)
    assert cancelled.status in ("cancelling", "cancelled")
