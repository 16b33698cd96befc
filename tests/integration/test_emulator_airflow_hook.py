"""The official Airflow OpenAI provider's ``OpenAIHook`` runs a batch against the emulator, unchanged."""

from __future__ import annotations

import json

import pytest

from tests.integration.emulator_support import chat_lines, jsonl

pytest.importorskip("airflow.providers.openai")


@pytest.fixture
def conn_id(batch_emulator, monkeypatch) -> str:
    monkeypatch.setenv(
        "AIRFLOW_CONN_EMULATOR_OFFICIAL",
        json.dumps(
            {"conn_type": "openai", "password": batch_emulator.api_key, "host": batch_emulator.base_url}
        ),
    )
    return "emulator_official"


def test_official_hook_runs_a_batch(conn_id, tmp_path, batch_emulator):
    from airflow.providers.openai.hooks.openai import OpenAIHook

    path = tmp_path / "requests.jsonl"
    path.write_bytes(jsonl(chat_lines(12)))
    hook = OpenAIHook(conn_id=conn_id)
    assert hook.test_connection() == (True, "Connection established!")  # GET /v1/models
    uploaded = hook.upload_file(str(path), purpose="batch")
    assert hook.get_file(uploaded.id).bytes == path.stat().st_size
    batch = hook.create_batch(
        file_id=uploaded.id, endpoint="/v1/chat/completions", metadata={"via": "airflow"}
    )
    hook.wait_for_batch(batch.id, wait_seconds=0.05, timeout=20)
    done = hook.get_batch(batch.id)
    assert done.status == "completed" and done.request_counts.completed == 12
    lines = hook.conn.files.content(done.output_file_id).text.splitlines()
    assert len(lines) == 12
    assert {f.id for f in hook.get_files()} >= {uploaded.id, done.output_file_id}
    assert hook.delete_file(uploaded.id).deleted
    assert batch_emulator.stats()["batches_created"] == 1


async def test_official_hook_async_client(conn_id, batch_emulator):
    from airflow.providers.openai.hooks.openai import OpenAIHook

    client = await OpenAIHook(conn_id=conn_id).aget_conn()
    uploaded = await client.files.create(file=("in.jsonl", jsonl(chat_lines(2))), purpose="batch")
    batch = await client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert (await client.batches.retrieve(batch.id)).id == batch.id
    await client.close()
