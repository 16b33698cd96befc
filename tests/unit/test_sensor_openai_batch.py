"""OpenAIBatchSensor without a server: inputs, defaults and the outcome of a trigger event."""

from __future__ import annotations

import importlib
import json
from typing import Any

import pytest

from airflow_batch_provider.exceptions import BatchAuthError, BatchFailedError, BatchProviderError
from airflow_batch_provider.sensors.openai_batch import OpenAIBatchSensor

MANIFEST = {
    "conn_id": "openai_team",
    "endpoint": "/v1/chat/completions",
    "fingerprint": "f" * 16,
    "batch_ids": ["batch_1", "batch_2"],
    "input_file_ids": ["file-1", "file-2"],
    "shards": [
        {"index": 0, "start_line": 1, "line_count": 5, "batch_id": "batch_1", "input_file_id": "file-1"},
        {"index": 1, "start_line": 6, "line_count": 5, "batch_id": "batch_2", "input_file_id": "file-2"},
    ],
    "batches": [],
}


def summary(bid: str, status: str = "completed", completed: int = 5, failed: int = 0, **extra: Any) -> dict:
    return {
        "id": bid,
        "status": status,
        "request_counts": {"total": completed + failed, "completed": completed, "failed": failed},
        "errors": [],
        "metadata": {},
        **extra,
    }


@pytest.mark.parametrize(
    ("value", "ids", "conn_id"),
    [
        ("batch_1", ["batch_1"], "openai_default"),
        (["batch_1", "batch_2"], ["batch_1", "batch_2"], "openai_default"),
        ('["batch_1", "batch_2"]', ["batch_1", "batch_2"], "openai_default"),  # a rendered template
        (MANIFEST, ["batch_1", "batch_2"], "openai_team"),
        (json.dumps(MANIFEST), ["batch_1", "batch_2"], "openai_team"),
    ],
)
def test_accepts_ids_lists_and_the_submit_manifest(value, ids, conn_id):
    source = OpenAIBatchSensor(task_id="s", batch_ids=value)._source()
    assert source["batch_ids"] == ids
    assert source["conn_id"] == conn_id


def test_an_explicit_connection_wins_over_the_manifest():
    assert OpenAIBatchSensor(task_id="s", batch_ids=MANIFEST, conn_id="mine")._source()["conn_id"] == "mine"


@pytest.mark.parametrize("value", [[], "", {"batch_ids": []}, 42])
def test_nothing_to_wait_for_is_refused(value):
    with pytest.raises(ValueError):
        OpenAIBatchSensor(task_id="s", batch_ids=value)._source()


def test_templated_fields():
    assert set(OpenAIBatchSensor.template_fields) == {"batch_ids", "conn_id"}


@pytest.mark.parametrize(("env", "expected"), [("True", True), ("False", False)])
def test_deferrable_defaults_to_the_operators_setting(monkeypatch, env, expected):
    from airflow_batch_provider.sensors import openai_batch

    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", env)
    module = importlib.reload(openai_batch)  # the default is read when the class is defined
    try:
        assert module.OpenAIBatchSensor(task_id="s", batch_ids="b").deferrable is expected
    finally:
        monkeypatch.delenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE")
        importlib.reload(openai_batch)


# --- execute_complete: what the task does with the trigger's event ---------------------------


def test_success_returns_the_manifest_with_the_summaries():
    event = {"status": "success", "batches": [summary("batch_1"), summary("batch_2", completed=4, failed=1)]}
    out = OpenAIBatchSensor(task_id="s", batch_ids=MANIFEST).execute_complete({}, event)
    assert out["batches"] == event["batches"]
    assert out["shards"] == MANIFEST["shards"] and out["fingerprint"] == MANIFEST["fingerprint"]
    assert out["conn_id"] == "openai_team"


def test_success_for_plain_ids_returns_ids_connection_and_summaries():
    event = {"status": "success", "batches": [summary("b")]}
    out = OpenAIBatchSensor(task_id="s", batch_ids="b").execute_complete({}, event)
    assert out == {"conn_id": "openai_default", "batch_ids": ["b"], "batches": event["batches"]}


def test_timeout_is_a_sensor_timeout_so_soft_fail_applies():
    try:
        from airflow.sdk.exceptions import AirflowSensorTimeout
    except ImportError:  # Airflow < 3.2
        from airflow.exceptions import AirflowSensorTimeout

    event = {"status": "error", "reason": "timeout", "message": "Deadline passed", "batches": []}
    with pytest.raises(AirflowSensorTimeout, match="Deadline passed"):
        OpenAIBatchSensor(task_id="s", batch_ids="b").execute_complete({}, event)


def test_failed_batch_names_the_input_line_of_its_shard():
    errors = [
        {"code": "invalid_json_line", "message": "This line is not parseable.", "line": 2, "param": None}
    ]
    event = {
        "status": "success",
        "batches": [summary("batch_1"), summary("batch_2", status="failed", completed=0, errors=errors)],
    }
    with pytest.raises(BatchFailedError, match=r"line 2 \(input line 7\): \[invalid_json_line\]"):
        OpenAIBatchSensor(task_id="s", batch_ids=MANIFEST).execute_complete({}, event)


@pytest.mark.parametrize(
    ("event", "exc"),
    [
        (None, BatchProviderError),
        ({"status": "error", "reason": "auth", "message": "refused", "batches": []}, BatchAuthError),
        ({"status": "success", "batches": [summary("other")]}, BatchProviderError),
    ],
)
def test_absent_error_or_foreign_events_fail(event, exc):
    with pytest.raises(exc):
        OpenAIBatchSensor(task_id="s", batch_ids="b").execute_complete({}, event)


@pytest.mark.parametrize(
    ("flag", "status"), [("fail_on_expired", "expired"), ("fail_on_cancelled", "cancelled")]
)
def test_partial_outcomes_follow_the_flags(flag, status):
    event = {"status": "success", "batches": [summary("b", status=status, completed=2)]}
    with pytest.raises(BatchFailedError):
        OpenAIBatchSensor(task_id="s", batch_ids="b").execute_complete({}, event)
    out = OpenAIBatchSensor(task_id="s", batch_ids="b", **{flag: False}).execute_complete({}, event)
    assert out["batches"][0]["status"] == status


# --- failed pokes in reschedule mode ---------------------------------------------------------


def _resched_sensor(**kwargs: Any) -> OpenAIBatchSensor:
    return OpenAIBatchSensor(
        task_id="wait",
        batch_ids=["batch_1"],
        conn_id="openai_poke",
        mode="reschedule",
        deferrable=False,
        poke_interval=0.01,
        **kwargs,
    )


@pytest.fixture
def poke_server(openai_connection):
    from tests.unit.hook_http import ScriptedServer

    def make(route):
        server = ScriptedServer(route)
        openai_connection(
            "openai_poke", host=f"{server.url}/v1", password="sk-poke", extra={"max_retries": 0}
        )
        return server

    return make


def test_without_a_task_state_store_failed_pokes_are_retried_in_the_same_run(poke_server) -> None:
    """Airflow < 3.3 has no task state store: the run of failures stays in one worker run."""
    from types import SimpleNamespace

    from tests.unit.hook_http import Reply, batch_json, error

    answers = iter([error(503, "busy"), error(503, "busy")])
    context = {"ti": SimpleNamespace(try_number=1), "task_reschedule_count": 0}
    with poke_server(lambda r: next(answers, Reply(200, batch_json("batch_1", "in_progress")))) as server:
        assert _resched_sensor(max_transient_errors=2).poke(context) is False  # type: ignore[arg-type]
    assert len(server.calls("GET", "/batches/batch_1")) == 3

    with poke_server(lambda r: error(503, "down")) as server:
        with pytest.raises(BatchProviderError, match="503"):
            _resched_sensor(max_transient_errors=2).poke(context)  # type: ignore[arg-type]
    assert len(server.calls("GET", "/batches/batch_1")) == 3


def test_a_failed_poke_retried_in_the_same_run_honours_retry_after(poke_server, monkeypatch) -> None:
    """The wait policy of the trigger: Retry-After holds the next read back, not poke_interval."""
    import time
    from types import SimpleNamespace

    from airflow_batch_provider.sensors import openai_batch as sensor_module
    from tests.unit.hook_http import Reply, batch_json, error

    slept: list[float] = []
    monkeypatch.setattr(sensor_module, "time", SimpleNamespace(time=time.time, sleep=slept.append))
    answers = iter([error(429, "slow down", **{"retry-after-ms": "400"})])
    context = {"ti": SimpleNamespace(try_number=1), "task_reschedule_count": 0}
    with poke_server(lambda r: next(answers, Reply(200, batch_json("batch_1", "in_progress")))):
        assert _resched_sensor(max_transient_errors=2).poke(context) is False  # type: ignore[arg-type]
    assert len(slept) == 1 and slept[0] >= 0.4 * 0.9  # Retry-After (jitter +-10 %), not poke_interval=0.01


def test_no_quota_left_fails_the_poke_at_once(poke_server) -> None:
    from types import SimpleNamespace

    from tests.unit.hook_http import error

    context = {"ti": SimpleNamespace(try_number=1), "task_reschedule_count": 0}
    with poke_server(lambda r: error(429, "You exceeded your quota", code="insufficient_quota")) as server:
        with pytest.raises(BatchProviderError, match="no quota left"):
            _resched_sensor(max_transient_errors=5).poke(context)  # type: ignore[arg-type]
    assert len(server.calls("GET", "/batches/batch_1")) == 1
