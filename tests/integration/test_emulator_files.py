"""Files API of the emulator through the real ``openai`` SDK over HTTP."""

from __future__ import annotations

import httpx
import openai
import pytest
from openai.types import FileObject

from airflow_batch_provider.emulator.testing import running_emulator
from tests.integration.emulator_support import chat_lines, jsonl, upload


def test_upload_retrieve_list_content_delete(batch_emulator):
    client = batch_emulator.client()
    data = jsonl(chat_lines(3))
    created = client.files.create(file=("in.jsonl", data), purpose="batch")
    assert isinstance(created, FileObject)
    assert (created.bytes, created.filename, created.purpose, created.status) == (
        len(data),
        "in.jsonl",
        "batch",
        "processed",
    )
    assert created.id.startswith("file-")
    assert created.expires_at == created.created_at + 30 * 24 * 3600  # batch files default to 30 days

    assert client.files.retrieve(created.id) == created
    assert client.files.content(created.id).content == data
    with client.files.with_streaming_response.content(created.id) as response:
        assert b"".join(response.iter_bytes(7)) == data

    deleted = client.files.delete(created.id)
    assert (deleted.id, deleted.deleted) == (created.id, True)
    for call in (client.files.retrieve, client.files.content, client.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(created.id)


def test_list_filters_orders_and_pages(batch_emulator):
    client = batch_emulator.client()
    batch_ids = [upload(client, chat_lines(1), f"{i}.jsonl").id for i in range(3)]
    other = client.files.create(file=("notes.txt", b"hello"), purpose="user_data")
    assert other.expires_at is None

    newest_first = [f.id for f in client.files.list()]
    assert newest_first == [other.id, *batch_ids[::-1]]
    assert [f.id for f in client.files.list(order="asc", purpose="batch")] == batch_ids
    page = client.files.list(limit=2, order="asc")
    assert [f.id for f in page.data] == batch_ids[:2] and page.has_more
    assert [[f.id for f in p.data] for p in page.iter_pages()] == [batch_ids[:2], [batch_ids[2], other.id]]
    assert [f.id for f in client.files.list(limit=1, order="asc")] == [*batch_ids, other.id]  # auto-paging
    with pytest.raises(openai.BadRequestError) as err:
        client.files.list(limit=0)
    assert err.value.code == "integer_below_min_value"


def test_upload_rules(batch_emulator):
    client = batch_emulator.client()
    with pytest.raises(openai.BadRequestError, match="Must be .jsonl"):
        client.files.create(file=("in.csv", b"a,b\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("in.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    assert err.value.param == "purpose"

    made = client.files.create(
        file=("in.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert made.expires_at == made.created_at + 3600
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(
            file=("in.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 60}
        )
    assert err.value.param == "expires_after.seconds"

    response = httpx.post(
        f"{batch_emulator.base_url}/files",
        headers={"Authorization": f"Bearer {batch_emulator.api_key}"},
        data={"purpose": "batch"},
        files={"not_file": ("a.jsonl", b"x")},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "file"


def test_upload_form_fields_are_capped(batch_emulator):
    fields = {f"junk{i}": "x" * 60_000 for i in range(3000)}
    response = httpx.post(
        f"{batch_emulator.base_url}/files",
        headers={"Authorization": f"Bearer {batch_emulator.api_key}"},
        data={"purpose": "batch", **fields},
        files={"file": ("in.jsonl", b"{}\n")},
    )
    assert response.status_code == 400
    assert "Too many form fields: 3002; an upload takes at most 8" in response.json()["error"]["message"]
    assert list(batch_emulator.data_dir.joinpath("tmp").iterdir()) == []
    # Every field the Files API knows still fits.
    client = batch_emulator.client(max_retries=0)
    made = client.files.create(
        file=("in.jsonl", b"{}\n"), purpose="batch", expires_after={"anchor": "created_at", "seconds": 3600}
    )
    assert made.expires_at == made.created_at + 3600


def test_upload_size_cap():
    with running_emulator(max_upload_bytes=1000) as emulator:
        client = emulator.client(max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.files.create(file=("big.jsonl", b"x" * 5000), purpose="batch")
        assert err.value.status_code == 413
        assert err.value.code == "file_too_large"
        assert client.files.create(file=("ok.jsonl", b"x" * 1000), purpose="batch").bytes == 1000
        assert list(emulator.data_dir.joinpath("tmp").iterdir()) == []


def test_auth_request_ids_and_error_shape(batch_emulator):
    bad = openai.OpenAI(base_url=batch_emulator.base_url, api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as err:
        bad.files.list()
    assert err.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(err.value)
    assert err.value.request_id and err.value.request_id.startswith("req_")

    response = httpx.get(f"{batch_emulator.base_url}/files")
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"].startswith("req_")

    good = batch_emulator.client()
    raw = good.files.with_raw_response.list()
    assert raw.headers["x-request-id"].startswith("req_")
    stats = httpx.get(f"{batch_emulator.root_url}/_emulator/stats")
    assert stats.headers["x-request-id"]  # every response, emulator routes included

    missing = httpx.get(f"{batch_emulator.base_url}/nowhere", headers={"Authorization": "Bearer sk-emulator"})
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nowhere)"


def test_configured_keys_and_any_key():
    with running_emulator(api_keys=["k-one", "k-two"], api_key="k-one") as emulator:
        for key in ("k-one", "k-two"):
            openai.OpenAI(base_url=emulator.base_url, api_key=key).files.list()
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=emulator.base_url, api_key="sk-emulator", max_retries=0).files.list()
    with running_emulator(accept_any_key=True) as emulator:
        openai.OpenAI(base_url=emulator.base_url, api_key="anything").files.list()
