"""Azure OpenAI's data-plane form of the emulator (``/openai``), through the real ``AzureOpenAI`` client."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from airflow_batch_provider.emulator.faults import route_name
from tests.integration.emulator_support import (
    chat_lines,
    request_line,
    run_batch,
    start_batch,
    upload,
    wait_batch,
)

API_VERSION = "2024-10-21"


def azure_client(emulator: Any, **kwargs: Any) -> openai.AzureOpenAI:
    kwargs.setdefault("api_key", emulator.api_key)
    return openai.AzureOpenAI(
        azure_endpoint=emulator.root_url, api_version=API_VERSION, max_retries=0, **kwargs
    )


def unversioned(lines: list[dict[str, Any]], url: str = "/chat/completions") -> list[dict[str, Any]]:
    return [{**line, "url": url} for line in lines]


def test_azure_client_runs_a_batch_spelled_without_v1(batch_emulator):
    client = azure_client(batch_emulator)
    lines = unversioned(chat_lines(5))

    batch, output, errors = run_batch(client, lines, endpoint="/chat/completions")

    assert batch.status == "completed" and batch.endpoint == "/chat/completions"
    assert batch.request_counts is not None and batch.request_counts.completed == 5
    assert errors == []
    assert sorted(r["custom_id"] for r in output) == [f"q-{i}" for i in range(5)]
    for result in output:
        assert result["response"]["status_code"] == 200
        ChatCompletion.model_validate(result["response"]["body"])  # a real chat completion body
    # The same objects through the Azure routes: retrieve, list, the input's bytes.
    assert client.batches.retrieve(batch.id).endpoint == "/chat/completions"
    assert batch.id in [b.id for b in client.batches.list(limit=10)]
    assert client.files.retrieve(batch.input_file_id).purpose == "batch"
    assert b'"url": "/chat/completions"' in client.files.content(batch.input_file_id).content
    stats = batch_emulator.stats()
    assert stats["files_uploaded"] == 1 and stats["batches_created"] == 1


def test_azure_accepts_the_v1_spelling_too_and_counts_unversioned_embedding_inputs(batch_emulator):
    client = azure_client(batch_emulator)
    batch, output, _ = run_batch(client, chat_lines(2), endpoint="/v1/chat/completions")
    assert batch.status == "completed" and batch.endpoint == "/v1/chat/completions" and len(output) == 2

    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    lines = [request_line(f"e-{i}", body, url="/embeddings") for i in range(2)]
    batch, output, _ = run_batch(client, lines, endpoint="/embeddings")
    assert batch.status == "completed" and len(output) == 2
    assert len(output[0]["response"]["body"]["data"]) == 3


@pytest.mark.emulator(max_embedding_inputs=5)
def test_the_embedding_input_limit_applies_to_the_unversioned_spelling(batch_emulator):
    client = azure_client(batch_emulator)
    body = {"model": "text-embedding-3-small", "input": ["a", "b", "c"]}
    lines = [request_line(f"e-{i}", body, url="/embeddings") for i in range(2)]
    batch = wait_batch(client, start_batch(client, lines, endpoint="/embeddings").id)
    assert batch.status == "failed" and batch.errors is not None
    assert [e.code for e in batch.errors.data or []] == ["too_many_embedding_inputs"]


def test_lines_must_spell_the_endpoint_as_the_batch_does(batch_emulator):
    client = azure_client(batch_emulator)
    batch = wait_batch(client, start_batch(client, chat_lines(2), endpoint="/chat/completions").id)
    assert batch.status == "failed" and batch.errors is not None
    assert sorted((e.code, e.line) for e in batch.errors.data or []) == [
        ("mismatched_url", i) for i in (1, 2)
    ]


def test_v1_routes_stay_openais_and_reject_the_unversioned_spelling(batch_emulator):
    client = batch_emulator.client(max_retries=0)
    uploaded = upload(client, unversioned(chat_lines(2)))
    with pytest.raises(openai.BadRequestError) as info:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/chat/completions",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert info.value.code == "invalid_value" and "/chat/completions" in info.value.message
    # Lines spelled the Azure way fail a /v1 batch: the url must be the batch's endpoint.
    batch = wait_batch(client, client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id)  # fmt: skip
    assert batch.status == "failed" and batch.errors is not None
    assert {e.code for e in batch.errors.data or []} == {"mismatched_url"}


def test_cancel_on_the_azure_route(batch_emulator):
    client = azure_client(batch_emulator)
    created = start_batch(client, unversioned(chat_lines(3)), endpoint="/chat/completions")
    try:
        cancelled = client.batches.cancel(created.id)
    except openai.BadRequestError as err:  # on a loaded machine the 3-line batch may finish first
        assert "completed" in err.message, err.message
    else:
        assert cancelled.status in ("cancelling", "cancelled", "completed")
    assert wait_batch(client, created.id).status in ("cancelled", "completed")


def test_a_missing_api_version_is_a_400(batch_emulator):
    headers = {"api-key": batch_emulator.api_key}
    for method, path in (("GET", "/openai/files"), ("GET", "/openai/batches"), ("POST", "/openai/batches")):
        response = httpx.request(method, batch_emulator.root_url + path, headers=headers, json={})
        assert response.status_code == 400, (method, path)
        error = response.json()["error"]
        assert error["code"] == "MissingApiVersionParameter" and "api-version" in error["message"]
    ok = httpx.get(
        f"{batch_emulator.root_url}/openai/batches", params={"api-version": API_VERSION}, headers=headers
    )
    assert ok.status_code == 200 and ok.json()["object"] == "list"


def test_azure_routes_authenticate_with_the_api_key_header(batch_emulator):
    with pytest.raises(openai.AuthenticationError) as info:
        azure_client(batch_emulator, api_key="wrong-key").batches.list()
    assert "api-key header" in info.value.message and "wrong-key" not in info.value.message
    url = f"{batch_emulator.root_url}/openai/files?api-version={API_VERSION}"
    assert httpx.get(url).status_code == 401
    # An Entra ID token arrives as Bearer; the emulator takes its own keys there too.
    assert httpx.get(url, headers={"Authorization": f"Bearer {batch_emulator.api_key}"}).status_code == 200
    # api-key is Azure's header only: /v1 still wants Bearer.
    v1 = httpx.get(f"{batch_emulator.base_url}/files", headers={"api-key": batch_emulator.api_key})
    assert v1.status_code == 401


def test_faults_apply_to_the_azure_routes(batch_emulator):
    assert route_name("GET", "/openai/batches/batch_1") == "batches.retrieve"
    assert route_name("POST", "/openai/files") == "files.create"
    client = azure_client(batch_emulator)
    batch_emulator.set_faults("batches.list", error_503=1.0, max_faults=1)
    with pytest.raises(openai.InternalServerError):
        client.batches.list()
    assert client.batches.list().data == []
