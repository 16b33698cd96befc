"""The emulator through ``openai.AsyncOpenAI``: the client the triggerer uses."""

from __future__ import annotations

import asyncio

import openai
import pytest
from openai.types import Batch, FileObject

from tests.integration.emulator_support import TERMINAL, await_batch, chat_lines, jsonl


async def test_async_lifecycle_files_and_batches(batch_emulator):
    client = batch_emulator.async_client()
    data = jsonl(
        chat_lines(20)
        + [
            {
                "custom_id": "bad",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini"},
            }
        ]
    )
    uploaded = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert isinstance(uploaded, FileObject)
    created = await client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"a": "b"},
    )
    assert isinstance(created, Batch) and created.status == "validating"

    batch = await await_batch(client, created.id)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (20, 1)
    output = (await client.files.content(batch.output_file_id)).text.splitlines()
    assert len(output) == 20
    async with client.files.with_streaming_response.content(batch.error_file_id) as response:
        errors = b"".join([chunk async for chunk in response.iter_bytes()])
    assert b'"custom_id":"bad"' in errors

    listed = [b.id async for b in client.batches.list(limit=1)]
    assert listed == [created.id]
    files = [f.id async for f in client.files.list(purpose="batch")]
    assert files == [uploaded.id]
    deleted = await client.files.delete(uploaded.id)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        await client.files.retrieve(uploaded.id)
    await client.close()


@pytest.mark.emulator(requests_per_second=50)
async def test_async_concurrent_batches_and_cancel(batch_emulator):
    client = batch_emulator.async_client()
    uploaded = await client.files.create(file=("in.jsonl", jsonl(chat_lines(100))), purpose="batch")
    batches = await asyncio.gather(
        *(
            client.batches.create(
                input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            for _ in range(3)
        )
    )
    await await_batch(client, batches[0].id, statuses=("in_progress",))
    cancelled = await client.batches.cancel(batches[0].id)
    assert cancelled.status == "cancelling"
    results = await asyncio.gather(*(await_batch(client, b.id, timeout=20) for b in batches))
    assert [b.status for b in results] == ["cancelled", "completed", "completed"]
    assert all(b.status in TERMINAL for b in results)
    assert results[0].request_counts.completed < 100
    await client.close()


async def test_async_errors_parse(batch_emulator):
    client = batch_emulator.async_client()
    with pytest.raises(openai.NotFoundError) as err:
        await client.batches.retrieve("batch_missing")
    assert err.value.request_id
    with pytest.raises(openai.BadRequestError):
        await client.batches.create(
            input_file_id="file-x",
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    bad = openai.AsyncOpenAI(base_url=batch_emulator.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.batches.list()
    await client.close()
    await bad.close()


@pytest.mark.emulator(requests_per_second=40, completion_window_seconds=1)
async def test_async_failure_expiry_faults_and_restart(batch_emulator):
    client = batch_emulator.async_client(max_retries=4)

    invalid = await client.files.create(file=("bad.jsonl", b"{nope\n"), purpose="batch")
    failed = await client.batches.create(
        input_file_id=invalid.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    failed = await await_batch(client, failed.id)
    assert failed.status == "failed"
    assert [(e.code, e.line) for e in failed.errors.data] == [("invalid_json_line", 1)]

    uploaded = await client.files.create(file=("in.jsonl", jsonl(chat_lines(80))), purpose="batch")
    created = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    await await_batch(client, created.id, statuses=("in_progress",))
    batch_emulator.restart()  # mid-batch: the batch resumes, then the 1 s window runs out
    expired = await await_batch(client, created.id)
    assert expired.status == "expired"
    assert expired.request_counts.completed + expired.request_counts.failed == 80
    lines = (await client.files.content(expired.error_file_id)).text.splitlines()
    assert len(lines) == expired.request_counts.failed and '"batch_expired"' in lines[0]

    batch_emulator.set_faults("batches.retrieve", error_429=1.0, retry_after=0.3, max_faults=1)
    started = asyncio.get_running_loop().time()
    raw = await client.batches.with_raw_response.retrieve(created.id)
    assert raw.retries_taken == 1 and asyncio.get_running_loop().time() - started >= 0.3
    await client.close()
