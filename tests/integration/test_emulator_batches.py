"""Batches API and lifecycle of the emulator through the real ``openai`` SDK (sync client)."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types import Batch, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from tests.integration.emulator_support import (
    chat_lines,
    read_results,
    request_line,
    run_batch,
    start_batch,
    upload,
    wait_batch,
)


def test_chat_batch_completes_with_counts_usage_and_timestamps(batch_emulator):
    client = batch_emulator.client()
    lines = chat_lines(40)
    lines.insert(5, request_line("no-messages", {"model": "gpt-4o-mini"}))
    created = start_batch(client, lines, metadata={"run": "nightly"})
    assert isinstance(created, Batch)
    assert created.status == "validating"
    assert created.id.startswith("batch_")
    assert created.expires_at == created.created_at + 24 * 3600
    assert created.request_counts is not None and created.request_counts.total == 0

    batch = wait_batch(client, created.id)
    assert batch.status == "completed"
    assert batch.model == "gpt-4o-mini"
    assert batch.metadata == {"run": "nightly"}
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (
        41,
        40,
        1,
    )
    for stamp in ("in_progress_at", "finalizing_at", "completed_at"):
        assert getattr(batch, stamp) >= batch.created_at
    assert batch.failed_at is None and batch.cancelled_at is None and batch.errors is None

    output = read_results(client, batch.output_file_id)
    errors = read_results(client, batch.error_file_id)
    assert len(output) == 40 and len(errors) == 1
    assert [line["custom_id"] for line in output] != [
        line["custom_id"] for line in lines if line["custom_id"] != "no-messages"
    ]  # not input order
    assert {line["custom_id"] for line in output} == {f"q-{i}" for i in range(40)}
    first = output[0]
    assert first["id"].startswith("batch_req_") and first["error"] is None
    assert first["response"]["status_code"] == 200 and first["response"]["request_id"].startswith("req_")
    completion = ChatCompletion.model_validate(first["response"]["body"])
    number = first["custom_id"].split("-")[1]
    assert completion.choices[0].message.content == f"echo: question {number}"

    assert errors[0]["custom_id"] == "no-messages"
    assert errors[0]["error"] is None
    assert errors[0]["response"]["status_code"] == 400
    assert errors[0]["response"]["body"]["error"]["param"] == "messages"

    usage = batch.usage
    assert usage is not None
    assert usage.input_tokens == sum(
        ChatCompletion.model_validate(o["response"]["body"]).usage.prompt_tokens for o in output
    )
    assert usage.output_tokens > 0 and usage.total_tokens == usage.input_tokens + usage.output_tokens

    files = {f.id: f for f in client.files.list(purpose="batch_output")}
    assert files[batch.output_file_id].filename == f"{batch.id}_output.jsonl"
    assert files[batch.error_file_id].filename == f"{batch.id}_error.jsonl"


def test_every_request_failing_still_completes_without_output_file(batch_emulator):
    client = batch_emulator.client()
    batch, output, errors = run_batch(client, [request_line(f"x{i}", {"model": "m"}) for i in range(3)])
    assert batch.status == "completed"
    assert batch.output_file_id is None and batch.error_file_id is not None
    assert batch.request_counts.failed == batch.request_counts.total == 3
    assert len(errors) == 3 and output == []


@pytest.mark.parametrize(
    ("endpoint", "body", "model_type"),
    [
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": ["a", "b"], "dimensions": 16},
            CreateEmbeddingResponse,
        ),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hello"}, Response),
        ("/v1/moderations", {"model": "omni-moderation-latest", "input": "hello"}, ModerationCreateResponse),
        ("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": "hello"}, None),
    ],
)
def test_other_endpoints(batch_emulator, endpoint, body, model_type):
    client = batch_emulator.client()
    lines = [request_line(f"r{i}", body, url=endpoint) for i in range(3)]
    batch, output, errors = run_batch(client, lines, endpoint=endpoint)
    assert batch.status == "completed" and batch.endpoint == endpoint and errors == []
    assert len(output) == 3
    if model_type is not None:
        model_type.model_validate(output[0]["response"]["body"])
    if endpoint == "/v1/embeddings":
        assert len(output[0]["response"]["body"]["data"][0]["embedding"]) == 16
        assert batch.usage.input_tokens == 6 and batch.usage.output_tokens == 0


def test_validation_failure_reports_lines(batch_emulator):
    client = batch_emulator.client()
    lines = chat_lines(3)
    lines[1] = b"{oops"
    lines.append(chat_lines(1)[0])  # duplicate custom_id q-0
    lines.append(
        request_line("other-model", {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    )
    lines.append(request_line("wrong-url", {"model": "gpt-4o-mini", "input": "x"}, url="/v1/embeddings"))
    batch = wait_batch(client, start_batch(client, lines).id)
    assert batch.status == "failed"
    assert batch.failed_at is not None and batch.in_progress_at is None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors is not None and batch.errors.object == "list"
    found = [(e.code, e.line, e.param) for e in batch.errors.data or []]
    assert found == [
        ("invalid_json_line", 2, None),
        ("duplicate_custom_id", 4, "custom_id"),
        ("mismatched_model", 5, "body.model"),
        ("mismatched_url", 6, "url"),
    ]
    assert batch.errors.data[0].message == "This line is not parseable as valid JSON."


def test_limits_fail_the_batch(batch_emulator):
    client = batch_emulator.client()
    empty = client.files.create(file=("empty.jsonl", b""), purpose="batch")
    batch = client.batches.create(
        input_file_id=empty.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_batch(client, batch.id)
    assert batch.status == "failed" and batch.errors.data[0].code == "empty_file"

    batch = wait_batch(client, start_batch(client, chat_lines(50_001)).id, timeout=30)
    assert batch.status == "failed"
    assert [(e.code, e.line) for e in batch.errors.data] == [("too_many_requests", None)]


@pytest.mark.emulator(max_batch_bytes=500, max_embedding_inputs=3)
def test_byte_and_embedding_limits(batch_emulator):
    client = batch_emulator.client()
    batch = wait_batch(client, start_batch(client, chat_lines(10)).id)
    assert [e.code for e in batch.errors.data] == ["file_too_large"]
    body = {"model": "text-embedding-3-small", "input": ["a", "b"]}
    lines = [request_line(f"e{i}", body, url="/v1/embeddings") for i in range(2)]
    batch = wait_batch(client, start_batch(client, lines, endpoint="/v1/embeddings").id)
    assert [e.code for e in batch.errors.data] == ["too_many_embedding_inputs"]


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"endpoint": "/v1/audio/speech"}, "endpoint"),
        ({"completion_window": "1h"}, "completion_window"),
        ({"metadata": {str(i): "v" for i in range(17)}}, "metadata"),
        ({"metadata": {"k" * 65: "v"}}, "metadata"),
        ({"metadata": {"k": "v" * 513}}, "metadata.k"),
        ({"output_expires_after": {"anchor": "created_at", "seconds": 10}}, "output_expires_after.seconds"),
    ],
)
def test_create_rejects_bad_parameters(batch_emulator, kwargs, param):
    client = batch_emulator.client()
    file_id = upload(client, chat_lines(1)).id
    arguments = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
        **kwargs,
    }
    with pytest.raises(openai.BadRequestError) as err:
        client.batches.create(**arguments)
    assert err.value.param == param


def test_create_needs_an_existing_batch_file(batch_emulator):
    client = batch_emulator.client()
    with pytest.raises(openai.NotFoundError):
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    other = client.files.create(file=("notes.jsonl", b"{}\n"), purpose="user_data")
    with pytest.raises(openai.BadRequestError, match="purpose 'batch'"):
        client.batches.create(
            input_file_id=other.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_unknown")
    with pytest.raises(openai.NotFoundError):
        client.batches.cancel("batch_unknown")


def test_metadata_and_output_expiry_are_kept(batch_emulator):
    client = batch_emulator.client()
    metadata = {f"k{i}": "v" * 512 for i in range(16)}
    batch, _, _ = run_batch(
        client,
        chat_lines(1),
        metadata=metadata,
        output_expires_after={"anchor": "created_at", "seconds": 7200},
    )
    assert batch.metadata == metadata
    output = client.files.retrieve(batch.output_file_id)
    assert output.purpose == "batch_output"
    assert output.expires_at == output.created_at + 7200


def test_deleting_the_input_does_not_break_a_batch(batch_emulator):
    client = batch_emulator.client()
    file_id = upload(client, chat_lines(5)).id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    client.files.delete(file_id)
    assert wait_batch(client, batch.id).request_counts.completed == 5


def test_list_batches_newest_first_with_cursor(batch_emulator):
    client = batch_emulator.client()
    file_id = upload(client, chat_lines(1)).id
    made = [
        client.batches.create(
            input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == made[::-1][:2] and page.has_more
    raw = json.loads(client.batches.with_raw_response.list(limit=2, after=made[3]).text)
    assert [b["id"] for b in raw["data"]] == [made[2], made[1]]
    assert (raw["first_id"], raw["last_id"], raw["has_more"]) == (made[2], made[1], True)
    assert [b.id for b in client.batches.list(limit=2)] == made[::-1]  # auto-paging across pages
    assert len(client.batches.list().data) == 5  # default limit 20
    for bad in (0, 101):
        with pytest.raises(openai.BadRequestError):
            client.batches.list(limit=bad)


@pytest.mark.emulator(requests_per_second=40)
def test_request_counts_advance_and_cancel_keeps_partial_results(batch_emulator):
    client = batch_emulator.client()
    batch = start_batch(client, chat_lines(200))
    running = wait_batch(client, batch.id, statuses=("in_progress",))
    seen = running.request_counts.completed
    while seen < 16:
        seen = client.batches.retrieve(batch.id).request_counts.completed
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = wait_batch(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at >= done.cancelling_at
    assert 16 <= done.request_counts.completed < 200
    output = read_results(client, done.output_file_id)
    assert len(output) == done.request_counts.completed
    assert done.error_file_id is None
    assert client.batches.cancel(batch.id).status == "cancelled"  # cancelling again is harmless
    stats = batch_emulator.stats()
    assert stats["batches_cancelled"] == 1 and stats["requests_executed"] == done.request_counts.completed


@pytest.mark.emulator(validation_delay=5)
def test_cancel_while_validating(batch_emulator):
    client = batch_emulator.client()
    batch = start_batch(client, chat_lines(3))
    client.batches.cancel(batch.id)
    done = wait_batch(client, batch.id)
    assert done.status == "cancelled"
    assert done.output_file_id is None and done.error_file_id is None and done.in_progress_at is None


def test_cancel_a_finished_batch_is_rejected(batch_emulator):
    client = batch_emulator.client()
    batch, _, _ = run_batch(client, chat_lines(1))
    with pytest.raises(openai.BadRequestError, match="completed"):
        client.batches.cancel(batch.id)


@pytest.mark.emulator(requests_per_second=20, completion_window_seconds=1)
def test_expiry_splits_finished_and_expired_requests(batch_emulator):
    client = batch_emulator.client()
    created = start_batch(client, chat_lines(100))
    assert created.expires_at == created.created_at + 1
    batch = wait_batch(client, created.id)
    assert batch.status == "expired" and batch.expired_at is not None
    counts = batch.request_counts
    assert 0 < counts.completed < 100 and counts.completed + counts.failed == counts.total == 100
    output = read_results(client, batch.output_file_id)
    expired = read_results(client, batch.error_file_id)
    assert len(output) == counts.completed and len(expired) == counts.failed
    assert {line["custom_id"] for line in output + expired} == {f"q-{i}" for i in range(100)}
    assert expired[0]["response"] is None
    assert expired[0]["error"] == {
        "code": "batch_expired",
        "message": "This request could not be executed before the completion window expired.",
    }
    assert batch_emulator.stats()["batches_expired"] == 1


def test_stats_and_pages(batch_emulator):
    client = batch_emulator.client()
    batch, _, _ = run_batch(client, chat_lines(4), metadata={"team": "<evals>"})
    stats = batch_emulator.stats()
    assert stats["files_uploaded"] == 1 and stats["batches_created"] == 1
    assert stats["requests_executed"] == 4 and stats["batches_by_status"] == {"completed": 1}
    import httpx

    page = httpx.get(batch_emulator.batch_page_url(batch.id))
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert batch.id in page.text and "completed" in page.text and "&lt;evals&gt;" in page.text
    listing = httpx.get(f"{batch_emulator.root_url}/_emulator/batches")
    assert f"batches/{batch.id}" in listing.text
    assert httpx.get(batch_emulator.batch_page_url("batch_nope")).status_code == 404


def test_synchronous_endpoints_answer_like_the_batch(batch_emulator):
    client = batch_emulator.client()
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "question 1"}]
    )
    assert completion.choices[0].message.content == "echo: question 1"
    embedding = client.embeddings.create(model="text-embedding-3-small", input="x", dimensions=4)
    assert len(embedding.data[0].embedding) == 4
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])
    assert "text-embedding-3-small" in [m.id for m in client.models.list()]
    assert client.models.retrieve("my-local-model").id == "my-local-model"
