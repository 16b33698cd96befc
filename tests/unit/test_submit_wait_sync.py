"""The submit operator's synchronous wait (``deferrable=False``) against a scripted HTTP server:
it polls again after transient failures only; a 400 or a bug fails at once."""

from __future__ import annotations

import pytest

from airflow_batch_provider.exceptions import BatchProviderError, BatchServiceError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook, is_transient_error
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
from airflow_batch_provider.waiting.status import BatchStatus
from tests.unit.hook_http import Reply, ScriptedServer, batch_json, error


@pytest.fixture
def hook_for(openai_connection):
    def make(server: ScriptedServer) -> OpenAIBatchHook:
        conn_id = openai_connection(
            "openai_wait", host=f"{server.url}/v1", password="sk-wait-test", extra={"max_retries": 0}
        )
        return OpenAIBatchHook(conn_id)

    return make


def _operator(**kwargs) -> OpenAIBatchSubmitOperator:
    kwargs.setdefault("max_transient_errors", 3)
    return OpenAIBatchSubmitOperator(
        task_id="submit",
        requests=[],
        deferrable=False,
        poll_interval=0.01,
        max_poll_interval=0.01,
        conn_id="openai_wait",
        **kwargs,
    )


def test_a_400_while_waiting_fails_at_once(hook_for):
    reply = error(400, "Invalid batch id.", code="invalid_value")
    with ScriptedServer(lambda r: reply) as server:
        with pytest.raises(BatchProviderError, match="Invalid batch id") as info:
            _operator()._wait_sync(hook_for(server), ["batch_1"], None)
    assert not isinstance(info.value, BatchServiceError)
    assert len(server.calls("GET", "/batches/batch_1")) == 1  # not polled again


def test_a_programming_error_while_waiting_is_raised_not_retried(hook_for, monkeypatch):
    calls = []

    def broken(batch):
        calls.append(batch)
        raise TypeError("summarize_batch got something unexpected")

    monkeypatch.setattr("airflow_batch_provider.operators.submit.summarize_batch", broken)
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_1", "in_progress"))) as server:
        with pytest.raises(TypeError, match="unexpected"):
            _operator()._wait_sync(hook_for(server), ["batch_1"], None)
    assert len(calls) == 1


def test_transient_failures_are_tolerated_up_to_the_cap(hook_for):
    answers = iter([error(503, "busy"), error(429, "slow down"), error(500, "oops")])

    def route(request):
        return next(answers, Reply(200, batch_json("batch_1", "completed")))

    with ScriptedServer(route) as server:
        event = _operator()._wait_sync(hook_for(server), ["batch_1"], None)
    assert event["status"] == "success" and event["batches"][0]["status"] == BatchStatus.COMPLETED
    assert len(server.calls("GET", "/batches/batch_1")) == 4

    with ScriptedServer(lambda r: error(503, "down")) as server:
        event = _operator(max_transient_errors=2)._wait_sync(hook_for(server), ["batch_1"], None)
    assert event["status"] == "error" and event["reason"] == "polling_error"
    assert len(server.calls("GET", "/batches/batch_1")) == 3


def test_insufficient_quota_is_not_transient(hook_for):
    with ScriptedServer(lambda r: error(429, "You exceeded your quota", code="insufficient_quota")) as server:
        with pytest.raises(BatchServiceError, match="no quota left") as info:
            hook_for(server).get_batch("batch_1")
    assert not is_transient_error(info.value)
    assert not is_transient_error(ValueError("bug"))


def test_the_synchronous_wait_honours_retry_after_as_the_trigger_does(hook_for, monkeypatch):
    """One wait policy: a 429's Retry-After holds the next poll back in the worker too."""
    import time
    from types import SimpleNamespace

    from airflow_batch_provider.operators import submit

    slept: list[float] = []
    monkeypatch.setattr(submit, "time", SimpleNamespace(time=time.time, sleep=slept.append))
    answers = iter([error(429, "slow down", **{"retry-after-ms": "400"})])

    def route(request):
        return next(answers, Reply(200, batch_json("batch_1", "completed")))

    with ScriptedServer(route) as server:
        event = _operator()._wait_sync(hook_for(server), ["batch_1"], None)
    assert event["status"] == "success"
    assert len(slept) == 1 and slept[0] >= 0.4 * 0.9  # Retry-After (jitter +-10 %), not poll_interval=0.01
