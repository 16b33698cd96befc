"""Helpers of the fetch integration tests: request lines, batches on the emulator, running the operator.

The operator runs as Airflow runs it: ``execute``; on ``TaskDeferred`` the trigger runs
(its real ``run()``, against the emulator over HTTP) and a *new* operator instance gets
``execute_complete(context, event=..., **kwargs)``, so nothing can survive on ``self``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.waiting.status import BatchStatus

ENDPOINT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"
REJECT = "[[emulator:context_length_exceeded]]"  # the fake model answers 400
SERVER_ERROR = "[[emulator:server_error]]"  # the fake model answers 500


def request_line(custom_id: str, text: str) -> bytes:
    body = {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line).encode() + b"\n"


def request_lines(n: int, *, prefix: str = "q", special: dict[int, str] | None = None) -> list[bytes]:
    """``n`` chat requests ``q-000``...; ``special`` puts a directive into some of them."""
    special = special or {}
    return [request_line(f"{prefix}-{i:03d}", f"question {i} {special.get(i, '')}".strip()) for i in range(n)]


def wait_terminal(hook: OpenAIBatchHook, batch_ids: Sequence[str], timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        batches = [hook.get_batch(b) for b in batch_ids]
        if all(BatchStatus.is_terminal(b.status) for b in batches):
            return batches
        if time.monotonic() > deadline:
            raise AssertionError(f"batches not terminal after {timeout}s: {[b.status for b in batches]}")
        time.sleep(0.05)


def submit_batch(hook: OpenAIBatchHook, lines: Sequence[bytes], *, wait: bool = True) -> Any:
    """Upload ``lines`` and create one batch; wait until it is terminal."""
    uploaded = hook.upload_file(list(lines), filename="input.jsonl")
    batch = hook.create_batch(uploaded.id, ENDPOINT)
    return wait_terminal(hook, [batch.id])[0] if wait else batch


def make_context(dag_id: str = "fetch_dag", task_id: str = "fetch", run_id: str = "run_1") -> dict[str, Any]:
    pushed: dict[str, Any] = {}
    ti = SimpleNamespace(
        dag_id=dag_id, task_id=task_id, run_id=run_id, map_index=-1, try_number=1, pushed=pushed,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )  # fmt: skip
    return {"ti": ti, "outlet_events": OutletEventAccessors()}


def first_event(trigger: Any, timeout: float = 60.0) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(run(), timeout))


def run_operator(make_op: Callable[[], Any], context: dict[str, Any], *, max_deferrals: int = 20) -> dict:
    """Run a (deferrable) operator to completion the way a worker + triggerer would."""
    try:
        from airflow.sdk.exceptions import TaskDeferred
    except ImportError:  # Airflow 3.1
        from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

    context["deferrals"] = []
    op = make_op()
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        pending = deferred
    for _ in range(max_deferrals):
        context["deferrals"].append(pending)
        # The trigger's kwargs must survive serialization (they are stored in the database).
        trigger = type(pending.trigger)(**pending.trigger.serialize()[1])
        event = first_event(trigger)
        op = make_op()  # a fresh instance: state travels in kwargs only
        kwargs = json.loads(json.dumps(pending.kwargs or {}))
        try:
            return getattr(op, pending.method_name)(context, event=event, **kwargs)
        except TaskDeferred as deferred:
            pending = deferred
    raise AssertionError(f"still deferred after {max_deferrals} rounds")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
