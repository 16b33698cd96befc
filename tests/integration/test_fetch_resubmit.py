"""Resubmission: expired and retryable requests go out again, deferred, idempotent; 400s never do."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from tests.integration._fetch_support import (
    REJECT,
    SERVER_ERROR,
    make_context,
    read_jsonl,
    request_lines,
    run_operator,
    submit_batch,
)


def _fetch_factory(batch_id: str, conn_id: str, dest: Path, **kwargs: Any) -> Any:
    def make() -> OpenAIBatchFetchOperator:
        return OpenAIBatchFetchOperator(
            task_id="fetch", batches=batch_id, destination=str(dest), conn_id=conn_id,
            resubmit=True, poll_interval=0.05, max_poll_interval=0.2, **kwargs,
        )  # fmt: skip

    return make


def _sent_custom_ids(hook: OpenAIBatchHook, batch_id: str) -> list[str]:
    batch = hook.get_batch(batch_id)
    return [json.loads(line)["custom_id"] for line in hook.iter_file_lines(batch.input_file_id)]


# 20 requests/s and a 0.4 s completion window: each batch runs ~8 requests, the rest expire.
@pytest.mark.emulator(requests_per_second=20, completion_window_seconds=0.4)
def test_expiry_with_resubmission_accounts_for_every_request(
    batch_emulator: Any, emulator_conn_id: str, tmp_path: Path
) -> None:
    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    n = 20
    # The first request runs before the window closes and is rejected (400): never resubmitted.
    lines = request_lines(n, special={0: REJECT})
    batch = submit_batch(hook, lines)
    # (the service counts expired requests as failed)
    assert batch.status == "expired" and 0 < batch.request_counts.completed < n - 1

    context = make_context()
    xcom = run_operator(_fetch_factory(batch.id, emulator_conn_id, tmp_path, max_resubmits=10), context)

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    rounds = manifest["rounds"]
    assert len(rounds) >= 2 and len(context["deferrals"]) == len(rounds) - 1
    assert manifest["counts"] == {"succeeded": n - 1, "failed": 1, "expired": 0, "cancelled": 0, "missing": 0}
    assert xcom["counts"] == manifest["counts"] and xcom["rounds"] == len(rounds)

    results = read_jsonl(tmp_path / "results.jsonl")
    assert [r["custom_id"] for r in results] == [f"q-{i:03d}" for i in range(n)]
    assert results[0]["status"] == "failed" and results[0]["error"]["code"] == "context_length_exceeded"
    assert all(r["status"] == "succeeded" for r in results[1:])
    # Round 0 answered some; every later round answered requests that had expired.
    assert {r["batch_id"] for r in results} <= set(manifest["batch_ids"])
    assert len({r["batch_id"] for r in results}) >= 2

    # Each round resent exactly the requests still retryable, byte for byte, never the 400.
    expected_pending = n - 1 - _succeeded_in(hook, batch.id)
    for rnd in rounds[1:]:
        (batch_id,) = rnd["batch_ids"]
        sent = _sent_custom_ids(hook, batch_id)
        assert "q-000" not in sent
        assert rnd["resubmitted"] == len(sent) == expected_pending
        original = {json.loads(x)["custom_id"]: x for x in lines}
        input_file = hook.get_batch(batch_id).input_file_id
        resent = list(hook.iter_file_lines(input_file))
        assert all(line == original[json.loads(line)["custom_id"]] for line in resent)
        expected_pending -= _succeeded_in(hook, batch_id)
        meta = rnd["batches"][0]["metadata"]
        assert meta["airflow_round"] == str(rnd["round"])
        assert meta["airflow_task_id"] == f"fetch.resubmit-{rnd['round']}"
    assert expected_pending == 0
    # Every round's files were landed.
    assert {row["batch_id"] for row in manifest["landed"]} == set(manifest["batch_ids"])


def _succeeded_in(hook: OpenAIBatchHook, batch_id: str) -> int:
    batch = hook.get_batch(batch_id)
    if not batch.output_file_id:
        return 0
    lines = hook.iter_file_lines(batch.output_file_id)
    return sum(1 for line in lines if json.loads(line)["response"]["status_code"] == 200)


def test_retryable_failures_go_out_until_max_resubmits(
    batch_emulator: Any, emulator_conn_id: str, tmp_path: Path
) -> None:
    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    lines = request_lines(4, special={1: SERVER_ERROR, 2: REJECT})  # 500 (retryable) and 400 (never)
    batch = submit_batch(hook, lines)
    created_before = batch_emulator.stats()["batches_created"]

    xcom = run_operator(_fetch_factory(batch.id, emulator_conn_id, tmp_path, max_resubmits=2), make_context())

    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [r["resubmitted"] for r in manifest["rounds"]] == [0, 1, 1]
    assert batch_emulator.stats()["batches_created"] == created_before + 2
    for rnd in manifest["rounds"][1:]:
        assert _sent_custom_ids(hook, rnd["batch_ids"][0]) == ["q-001"]
    assert xcom["counts"] == {"succeeded": 2, "failed": 2, "expired": 0, "cancelled": 0, "missing": 0}
    results = read_jsonl(tmp_path / "results.jsonl")
    assert results[1]["error"]["status_code"] == 500 and results[1]["error"]["retryable"] is True
    assert results[1]["batch_id"] == manifest["batch_ids"][-1]  # the latest attempt is what counts
    assert results[2]["error"]["retryable"] is False and results[2]["batch_id"] == batch.id


def test_a_retry_reattaches_to_the_resubmitted_batch(
    batch_emulator: Any, emulator_conn_id: str, tmp_path: Path
) -> None:
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    batch = submit_batch(hook, request_lines(3, special={0: SERVER_ERROR}))
    make = _fetch_factory(batch.id, emulator_conn_id, tmp_path, max_resubmits=1)

    # First try: resubmits, then (say) the worker dies while deferred.
    created = batch_emulator.stats()["batches_created"]
    first = make()
    try:
        first_result = first.execute(make_context())
    except TaskDeferred as deferred:
        first_result = deferred.kwargs["state"]["rounds"][-1]["batch_ids"]
    else:  # the resubmitted batch finished before we looked: execute went on to the end
        first_result = json.loads((tmp_path / "manifest.json").read_text())["rounds"][-1]["batch_ids"]
    assert batch_emulator.stats()["batches_created"] == created + 1

    # Second try of the same task instance: same identity, same requests -> same batch.
    xcom = run_operator(make, make_context())
    assert batch_emulator.stats()["batches_created"] == created + 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["rounds"][1]["batch_ids"] == first_result
    assert xcom["rounds"] == 2 and xcom["counts"]["failed"] == 1

    # Another run of the DAG is another identity: it resubmits on its own.
    run_operator(make, make_context(run_id="run_2"))
    assert batch_emulator.stats()["batches_created"] == created + 2
