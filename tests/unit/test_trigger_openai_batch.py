"""OpenAIBatchTrigger without a server: construction, serialization, error triage, pacing."""

from __future__ import annotations

import importlib
import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx2
import openai
import pytest

from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchNotFoundError,
    BatchProviderError,
    BatchServiceError,
)
from airflow_batch_provider.triggers import openai_batch
from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger
from airflow_batch_provider.waiting import transient


def import_string(path: str) -> Any:
    """What the triggerer does with the class path (``import_string``; its home moved in 3.2)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


KWARGS = [
    {"conn_id": "openai_default", "batch_ids": ["batch_a"]},
    {
        "conn_id": "c",
        "batch_ids": ["batch_a", "batch_b", "batch_c"],
        "poll_interval": 5,
        "max_poll_interval": 60,
        "deadline": 1_900_000_000.5,
        "max_transient_errors": 3,
        "cancel_on_kill": True,
    },
    {"conn_id": "c", "batch_ids": ("batch_a",), "poll_interval": 0.1, "max_poll_interval": 0.05},
]


@pytest.mark.parametrize("kwargs", KWARGS)
def test_serialize_round_trips(kwargs):
    classpath, data = OpenAIBatchTrigger(**kwargs).serialize()
    assert classpath == "airflow_batch_provider.triggers.openai_batch.OpenAIBatchTrigger"
    json.dumps(data)  # stored in the metadata DB as JSON
    rebuilt = import_string(classpath)(**data)
    assert rebuilt.serialize() == (classpath, data)
    assert data["batch_ids"] == list(kwargs["batch_ids"])
    assert data["max_poll_interval"] >= data["poll_interval"]


@pytest.mark.parametrize("kwargs", KWARGS)
def test_serialize_round_trips_through_airflow_serde(kwargs):
    # What the worker does with the kwargs (and dag.test undoes) on the way to the triggerer.
    try:
        from airflow.sdk.serde import deserialize, serialize
    except ImportError:  # Airflow < 3.2
        from airflow.serialization.serde import deserialize, serialize

    classpath, data = OpenAIBatchTrigger(**kwargs).serialize()
    assert OpenAIBatchTrigger(**deserialize(serialize(data))).serialize() == (classpath, data)


def test_serialized_kwargs_carry_no_secret(monkeypatch):
    secret = "sk-live-abcdefghijklmnop"
    monkeypatch.setenv(
        "AIRFLOW_CONN_SECRET_CONN",
        json.dumps({"conn_type": "openai", "host": "http://127.0.0.1:9/v1", "password": secret}),
    )
    _, data = OpenAIBatchTrigger(conn_id="secret_conn", batch_ids=["b"]).serialize()
    assert secret not in json.dumps(data)
    assert set(data) == {
        "conn_id",
        "batch_ids",
        "poll_interval",
        "max_poll_interval",
        "deadline",
        "max_transient_errors",
        "cancel_on_kill",
    }


def test_deadline_as_aware_datetime_becomes_epoch_seconds():
    when = datetime(2030, 1, 1, tzinfo=timezone.utc)
    assert OpenAIBatchTrigger(conn_id="c", batch_ids=["b"], deadline=when).deadline == when.timestamp()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_ids": []}, "at least one batch id"),
        ({"batch_ids": ["b"], "poll_interval": 0}, "poll_interval"),
        ({"batch_ids": ["b"], "deadline": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"batch_ids": ["b"], "max_transient_errors": -1}, "max_transient_errors"),
    ],
)
def test_invalid_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        OpenAIBatchTrigger(conn_id="c", **kwargs)


def test_duplicate_ids_are_polled_once_and_a_single_id_string_works():
    assert OpenAIBatchTrigger(conn_id="c", batch_ids=["a", "b", "a"]).batch_ids == ["a", "b"]
    assert OpenAIBatchTrigger(conn_id="c", batch_ids="a").batch_ids == ["a"]


def test_on_kill_and_cleanup_are_coroutines_on_every_airflow():
    import inspect

    assert inspect.iscoroutinefunction(OpenAIBatchTrigger.on_kill)
    assert inspect.iscoroutinefunction(OpenAIBatchTrigger.cleanup)


# --- error triage ---------------------------------------------------------------------------


def _status_error(status: int, headers: dict[str, str] | None = None, code: str | None = None) -> Exception:
    request = httpx2.Request("GET", "http://service/v1/batches/b")
    response = httpx2.Response(status, request=request, headers=headers or {})
    body = {"message": f"status {status}", "code": code}
    return openai.APIStatusError(f"status {status}", response=response, body=body)


def _translated(err: Exception, translated: Exception) -> Exception:
    """As the hook raises: its own error ``from None``, the SDK error kept as context."""
    try:
        try:
            raise err
        except Exception:
            raise translated from None
    except Exception as exc:
        return exc


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (BatchAuthError("401"), "auth"),
        (BatchNotFoundError("404"), "not_found"),
        (BatchServiceError("kept failing"), "transient"),
        (_status_error(401), "auth"),
        (_status_error(403), "auth"),
        (_status_error(404), "not_found"),
        (_status_error(429), "transient"),
        (_status_error(500), "transient"),
        (_status_error(503), "transient"),
        (_status_error(400), "fatal"),
        (_status_error(422), "fatal"),
        (openai.APIConnectionError(request=httpx2.Request("GET", "http://x")), "transient"),
        (ConnectionResetError(), "transient"),
        (RuntimeError("Cannot send a request, as the client has been closed."), "transient"),
        (RuntimeError("something else"), "fatal"),
        (BatchProviderError("rejected"), "fatal"),
        (KeyError("id"), "fatal"),
    ],
)
def test_errors_are_sorted_into_auth_not_found_transient_fatal(exc, kind):
    assert openai_batch._classify(exc) == kind


def test_hook_errors_keep_the_sdk_error_for_status_and_retry_after():
    err = _translated(_status_error(429, {"retry-after": "7"}), BatchServiceError("kept failing"))
    assert openai_batch._classify(err) == "transient"
    assert transient.retry_after(err) == 7.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "100000"}, transient.MAX_RETRY_AFTER),
        ({}, None),
    ],
)
def test_retry_after_headers(headers, expected):
    assert transient.retry_after(_status_error(429, headers)) == expected


def test_retry_after_as_http_date():
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    delay = transient.retry_after(
        _status_error(429, {"retry-after": when.strftime("%a, %d %b %Y %H:%M:%S GMT")})
    )
    assert delay is not None and 25 <= delay <= 31


def test_descriptions_hide_api_keys():
    text = openai_batch._describe(RuntimeError("Incorrect API key provided: sk-proj-abcdefghijkl1234"))
    assert "abcdefghijkl1234" not in text and "sk-***" in text


# --- pacing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.01, 0.3, 1.0, 7.5, 30.0, 300.0])
def test_aligned_delay_lands_on_a_shared_grid_not_earlier_and_not_much_later(delay):
    got = openai_batch._aligned(delay)
    grid = min(max(delay / 10, 0.05), 5.0)
    assert delay - 0.01 <= got <= delay + grid + 0.01
    wake = time.time() + got
    assert abs(wake / grid - round(wake / grid)) < 0.01


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def isEnabledFor(self, level: int) -> bool:  # noqa: N802 - the logging API
        return True

    def info(self, msg: str, *args: Any) -> None:
        self.lines.append(msg % args)


def _summary(bid: str, status: str, total: int, completed: int, failed: int = 0) -> dict[str, Any]:
    return {
        "id": bid,
        "status": status,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
    }


def test_progress_logs_only_when_counts_change_with_percent_rate_and_eta(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(openai_batch.time, "monotonic", lambda: clock[0])
    progress, log = openai_batch._Progress(["a", "b"]), _Log()
    latest = {"a": _summary("a", "in_progress", 100, 0), "b": _summary("b", "validating", 100, 0)}
    assert progress.update(latest, log)
    assert not progress.update(latest, log)  # nothing changed: no line, and the caller backs off
    clock[0] += 10
    latest = {"a": _summary("a", "in_progress", 100, 40, 10), "b": _summary("b", "completed", 100, 100)}
    assert progress.update(latest, log)
    assert len(log.lines) == 2
    assert log.lines[-1] == (
        "Batches completed=1 in_progress=1: 150/200 requests done (75.0%), 10 failed; 15.0 req/s; ETA 3s"
    )


def test_progress_names_a_single_batch():
    log = _Log()
    openai_batch._Progress(["a"]).update({"a": _summary("a", "in_progress", 0, 0)}, log)
    assert log.lines == ["Batches a in_progress: 0/0 requests done (-), 0 failed; 0.0 req/s; ETA -"]


def test_progress_of_finished_batches_has_no_rate_or_eta():
    log = _Log()
    done = {"a": _summary("a", "completed", 3, 3)}
    assert openai_batch._Progress(["a"]).update(done, log)
    assert log.lines == ["Batches a completed: 3/3 requests done (100.0%), 0 failed"]
