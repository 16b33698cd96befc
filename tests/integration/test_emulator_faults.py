"""Injected faults, handled by the SDK's own retries (Retry-After included)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from airflow_batch_provider.emulator.testing import running_emulator
from tests.integration.emulator_support import chat_lines, run_batch, start_batch, upload


def test_429_retry_after_is_honoured_by_the_sdk(batch_emulator):
    client = batch_emulator.client(max_retries=3)
    batch = start_batch(client, chat_lines(2))
    batch_emulator.set_faults("batches.retrieve", error_429=1.0, retry_after=1.0, max_faults=2)
    started = time.monotonic()
    raw = client.batches.with_raw_response.retrieve(batch.id)
    elapsed = time.monotonic() - started
    assert raw.parse().id == batch.id
    assert raw.retries_taken == 2
    # Two waits of the announced 1 s; the SDK's own backoff would wait at most 0.5 + 1 s. A lower
    # bound only: load can make it longer, never shorter.
    assert elapsed >= 2.0
    faults = httpx.get(f"{batch_emulator.root_url}/_emulator/faults").json()
    assert faults["routes"]["batches.retrieve"]["injected"] == 2
    assert batch_emulator.stats()["faults_injected"] == 2


def test_429_body_and_headers_without_retries(batch_emulator):
    batch_emulator.set_faults("files.list", error_429=1.0, retry_after=1.5)
    client = batch_emulator.client(max_retries=0)
    with pytest.raises(openai.RateLimitError) as err:
        client.files.list()
    assert err.value.code == "rate_limit_exceeded"
    headers = err.value.response.headers
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("2", "1500")
    assert headers["x-request-id"]
    batch_emulator.clear_faults()
    client.files.list()


@pytest.mark.parametrize(
    ("kind", "error"), [("error_500", openai.InternalServerError), ("error_503", openai.InternalServerError)]
)
def test_server_errors_are_retried(batch_emulator, kind, error):
    batch_emulator.set_faults("*", **{kind: 1.0, "max_faults": 1})
    client = batch_emulator.client(max_retries=2)
    raw = client.files.with_raw_response.list()
    assert raw.retries_taken == 1
    batch_emulator.set_faults("*", **{kind: 1.0})
    with pytest.raises(error):
        batch_emulator.client(max_retries=0).files.list()


def test_uploads_survive_faults(batch_emulator):
    batch_emulator.set_faults("files.create", error_503=1.0, max_faults=1)
    client = batch_emulator.client(max_retries=2)
    uploaded = client.files.with_raw_response.create(file=("in.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert uploaded.retries_taken == 1
    assert client.files.content(uploaded.parse().id).content == b'{"a": 1}\n'
    assert batch_emulator.stats()["files_uploaded"] == 1


def test_cut_off_download_is_retried(batch_emulator):
    client = batch_emulator.client(max_retries=2)
    batch, _, _ = run_batch(client, chat_lines(30))
    expected = client.files.content(batch.output_file_id).content
    batch_emulator.set_faults("files.content", cut_off=1.0, max_faults=1)
    raw = client.files.with_raw_response.content(batch.output_file_id)
    assert raw.retries_taken == 1 and raw.content == expected
    batch_emulator.set_faults("files.content", cut_off=1.0)
    with pytest.raises(openai.APIConnectionError):
        batch_emulator.client(max_retries=0).files.content(batch.output_file_id)
    # A plain HTTP client sees the truncation too: half the body, then the connection drops.
    with httpx.stream(
        "GET",
        f"{batch_emulator.base_url}/files/{batch.output_file_id}/content",
        headers={"Authorization": f"Bearer {batch_emulator.api_key}"},
    ) as streamed:
        received = bytearray()
        with pytest.raises(httpx.RemoteProtocolError):
            for chunk in streamed.iter_raw():
                received += chunk
    assert 0 < len(received) <= len(expected) // 2


def test_latency_is_added(batch_emulator):
    client = batch_emulator.client()
    batch_emulator.set_faults("files.list", latency=0.3)
    started = time.monotonic()
    client.files.list()
    assert time.monotonic() - started >= 0.3
    # Other routes are unaffected: with an hour of latency on files.list, an upload bounded at
    # 30 s (a margin no load crosses) still succeeds.
    batch_emulator.set_faults("files.list", latency=3600)
    upload(client.with_options(timeout=30, max_retries=0), chat_lines(1))


def test_a_batch_runs_through_random_faults():
    faults = {"seed": 3, "routes": {"*": {"error_500": 0.2, "error_429": 0.2, "retry_after": 0.01}}}
    with running_emulator(faults=faults) as emulator:
        client = emulator.client(max_retries=8)
        batch, output, errors = run_batch(client, chat_lines(10))
        assert batch.status == "completed" and len(output) == 10 and errors == []
        assert emulator.stats()["faults_injected"] > 0


def test_faults_api_validates_input(batch_emulator):
    response = httpx.post(
        f"{batch_emulator.root_url}/_emulator/faults",
        json={"routes": {"nope": {}}},
        headers=batch_emulator.control_headers(),
    )
    assert response.status_code == 400 and "unknown routes" in response.json()["error"]["message"]


def test_control_routes_need_the_key_and_a_json_body(batch_emulator):
    url = f"{batch_emulator.root_url}/_emulator/faults"
    rule = {"routes": {"*": {"error_500": 1.0}}}
    key = batch_emulator.control_headers()

    assert httpx.post(url, json=rule).status_code == 401
    assert httpx.post(url, json=rule, headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
    # What a cross-site HTML form can send: refused even with the key.
    form = httpx.post(url, data={"routes": "x"}, headers=key)
    assert form.status_code == 415 and "application/json" in form.json()["error"]["message"]
    plain = httpx.post(url, content=json.dumps(rule), headers={**key, "Content-Type": "text/plain"})
    assert plain.status_code == 415
    assert httpx.get(url).json()["routes"] == {}  # nothing changed; reading needs no key

    assert httpx.post(url, json=rule, headers=key).status_code == 200
    assert httpx.get(url).json()["routes"] != {}
    assert httpx.get(f"{batch_emulator.root_url}/_emulator/stats").status_code == 200
