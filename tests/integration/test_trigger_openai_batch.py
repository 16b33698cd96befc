"""OpenAIBatchTrigger against the emulator: real HTTP, the real SDK, the hook's shared client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from types import SimpleNamespace
from typing import Any

import pytest
from packaging.version import Version

from airflow_batch_provider.exceptions import BatchFailedError
from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger
from airflow_batch_provider.triggers.poller import get_poller
from airflow_batch_provider.waiting.outcome import resolve_event
from tests.loop_calls import blocking_calls_on_this_thread

pytestmark = pytest.mark.timeout(60)


def _lines(n: int, text: str = "question", prefix: str = "q") -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": f"{prefix}-{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{text} {i}"}]},
            }
        )
        + "\n"
        for i in range(n)
    ).encode()


def create_batches(emulator: Any, n: int = 1, *, content: bytes | None = None, lines: int = 3) -> list[str]:
    """Upload and create ``n`` batches through the SDK; return their ids (oldest first)."""
    client = emulator.client()
    ids = []
    for i in range(n):
        data = content if content is not None else _lines(lines, prefix=f"s{i}")
        file = client.files.create(file=(f"in-{i}.jsonl", data), purpose="batch")
        batch = client.batches.create(
            input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        ids.append(batch.id)
    return ids


async def run_trigger(trigger: OpenAIBatchTrigger) -> dict[str, Any]:
    """Drain ``run()``: exactly one event, returned as its payload."""
    events = [event.payload async for event in trigger.run()]
    assert len(events) == 1, events
    return events[0]


@pytest.fixture
def conn(batch_emulator: Any, openai_connection: Callable[..., str]) -> Callable[..., str]:
    """Factory of connections to the emulator; ``max_retries=0`` lets faults reach the trigger."""

    def make(conn_id: str = "openai_trigger", *, password: str | None = None, max_retries: int = 0) -> str:
        return openai_connection(
            conn_id,
            host=batch_emulator.base_url,
            password=password or batch_emulator.api_key,
            extra={"max_retries": max_retries},
        )

    return make


# --- outcomes -------------------------------------------------------------------------------


async def test_waits_for_every_shard_and_reports_each(batch_emulator, conn):
    ids = create_batches(batch_emulator, 3)
    mixed = _lines(2) + _lines(1, text="[[emulator:context_length_exceeded]]", prefix="bad")
    ids += create_batches(batch_emulator, content=mixed)

    event = await run_trigger(OpenAIBatchTrigger(conn_id=conn(), batch_ids=ids, poll_interval=0.05))

    assert event["status"] == "success"
    assert [b["id"] for b in event["batches"]] == ids
    assert all(b["status"] == "completed" for b in event["batches"])
    assert event["batches"][-1]["request_counts"] == {"total": 3, "completed": 2, "failed": 1}
    assert event["batches"][-1]["output_file_id"] and event["batches"][-1]["error_file_id"]
    assert resolve_event(event, batch_ids=ids) == event["batches"]


async def test_completed_with_every_request_failed_is_a_failure_with_counts(batch_emulator, conn):
    [bid] = create_batches(batch_emulator, content=_lines(2, text="[[emulator:context_length_exceeded]]"))

    event = await run_trigger(OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid], poll_interval=0.05))

    assert event["status"] == "success"  # the trigger reports; the semantics decide
    assert event["batches"][0]["status"] == "completed"
    with pytest.raises(BatchFailedError, match=r"every request failed \(2/2 failed"):
        resolve_event(event, batch_ids=[bid])


async def test_failed_validation_reports_the_service_errors_with_lines(batch_emulator, conn):
    content = _lines(1) + b"{not json\n" + _lines(1, prefix="z")
    [bid] = create_batches(batch_emulator, content=content)

    event = await run_trigger(OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid], poll_interval=0.05))

    [summary] = event["batches"]
    assert summary["status"] == "failed"
    assert any(e["line"] == 2 for e in summary["errors"]), summary["errors"]
    with pytest.raises(BatchFailedError, match=r"line 2: \["):
        resolve_event(event, batch_ids=[bid])


async def test_not_found_fails_at_once_and_says_what_to_check(batch_emulator, conn):
    [bid] = create_batches(batch_emulator)

    # A second round would wait out the hour-long interval: the 30 s bound is a margin no load crosses.
    event = await asyncio.wait_for(
        run_trigger(
            OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid, "batch_does_not_exist"], poll_interval=3600)
        ),
        timeout=30,
    )

    assert (event["status"], event["reason"]) == ("error", "not_found")
    assert "batch_does_not_exist" in event["message"]
    assert "Check the batch id" in event["message"]


async def test_bad_key_fails_at_once_with_auth_and_no_key_in_the_message(batch_emulator, conn):
    [bid] = create_batches(batch_emulator)
    wrong = "sk-wrong-key-0123456789abcdef"

    event = await run_trigger(
        OpenAIBatchTrigger(conn_id=conn("bad_key", password=wrong), batch_ids=[bid], poll_interval=5)
    )

    assert (event["status"], event["reason"]) == ("error", "auth")
    assert "'bad_key'" in event["message"] and "password" in event["message"]
    assert wrong not in json.dumps(event) and "0123456789abcdef" not in json.dumps(event)


# --- time -----------------------------------------------------------------------------------


@pytest.mark.emulator(requests_per_second=2)
async def test_deadline_gives_a_timeout_event_with_the_latest_state(batch_emulator, conn):
    [bid] = create_batches(batch_emulator, lines=20)
    started = time.monotonic()

    event = await run_trigger(
        OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid], poll_interval=0.1, deadline=time.time() + 0.8)
    )

    assert time.monotonic() - started > 0.7  # the batch itself would take 10 s: the deadline ended it
    assert (event["status"], event["reason"]) == ("error", "timeout")
    assert event["batches"][0]["status"] in ("validating", "in_progress")
    assert bid in event["message"] and "keep running" in event["message"]


@pytest.mark.emulator(requests_per_second=10)
async def test_resumes_from_serialized_kwargs_after_a_restart_keeping_the_deadline(batch_emulator, conn):
    [bid] = create_batches(batch_emulator, lines=10)
    first = OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid], poll_interval=0.05, deadline=time.time() + 30)
    task = asyncio.ensure_future(run_trigger(first))
    await asyncio.sleep(0.3)
    task.cancel()  # the triggerer stops: no event, nothing cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await task

    classpath, kwargs = first.serialize()
    resumed = OpenAIBatchTrigger(**json.loads(json.dumps(kwargs)))
    assert resumed.deadline == first.deadline

    event = await run_trigger(resumed)
    assert event["status"] == "success"
    assert event["batches"][0]["request_counts"]["completed"] == 10
    assert batch_emulator.stats()["batches_cancelled"] == 0


@pytest.mark.emulator(requests_per_second=1)
async def test_a_restart_after_the_deadline_times_out_at_once(batch_emulator, conn):
    [bid] = create_batches(batch_emulator, lines=20)
    deadline = time.time() + 0.2
    first = OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid], poll_interval=3600, deadline=deadline)
    _, kwargs = first.serialize()
    await asyncio.sleep(0.3)  # the triggerer was down past the deadline

    # A reset deadline would sleep out the hour-long interval: 30 s is a margin no load crosses.
    event = await asyncio.wait_for(run_trigger(OpenAIBatchTrigger(**kwargs)), timeout=30)

    assert event["reason"] == "timeout"
    when = datetime.fromtimestamp(first.deadline, tz=timezone.utc).isoformat(timespec="seconds")
    assert when in event["message"]  # the original deadline, not one reset by the restart


# --- faults ---------------------------------------------------------------------------------


async def test_transient_faults_are_tolerated(batch_emulator, conn):
    ids = create_batches(batch_emulator, 6)
    batch_emulator.configure_faults({"routes": {"*": {"error_500": 0.3, "error_503": 0.2}}, "seed": 7})

    events = await asyncio.gather(
        run_trigger(
            OpenAIBatchTrigger(
                conn_id=conn(),
                batch_ids=ids,
                poll_interval=0.02,
                max_poll_interval=0.1,
                max_transient_errors=50,
            )
        ),
        *(
            run_trigger(
                OpenAIBatchTrigger(
                    conn_id=conn(),
                    batch_ids=[bid],
                    poll_interval=0.02,
                    max_poll_interval=0.1,
                    max_transient_errors=50,
                )
            )
            for bid in ids
        ),
    )

    assert [e["status"] for e in events] == ["success"] * 7
    assert batch_emulator.stats()["faults_injected"] > 0


async def test_rate_limit_retry_after_is_honoured(batch_emulator, conn):
    [bid] = create_batches(batch_emulator)
    batch_emulator.set_faults("batches.retrieve", error_429=1.0, retry_after=0.4, max_faults=2)
    started = time.monotonic()

    event = await run_trigger(OpenAIBatchTrigger(conn_id=conn(), batch_ids=[bid], poll_interval=0.01))

    assert event["status"] == "success"
    assert time.monotonic() - started >= 0.75  # two waits of Retry-After, not of poll_interval
    assert batch_emulator.stats()["faults_injected"] == 2


async def test_listing_down_falls_back_to_one_request_per_batch(batch_emulator, conn):
    ids = create_batches(batch_emulator, 8)
    batch_emulator.set_faults("batches.list", error_503=1.0)

    events = await asyncio.gather(
        *(run_trigger(OpenAIBatchTrigger(conn_id=conn(), batch_ids=[b], poll_interval=0.05)) for b in ids)
    )

    assert [e["status"] for e in events] == ["success"] * 8


async def test_persistent_errors_end_in_polling_error_after_the_cap(batch_emulator, conn):
    [bid] = create_batches(batch_emulator)
    batch_emulator.set_faults("*", error_503=1.0)

    event = await run_trigger(
        OpenAIBatchTrigger(
            conn_id=conn(),
            batch_ids=[bid],
            poll_interval=0.01,
            max_poll_interval=0.05,
            max_transient_errors=2,
        )
    )

    assert (event["status"], event["reason"]) == ("error", "polling_error")
    assert "3 rounds in a row" in event["message"] and "max_transient_errors=2" in event["message"]


# --- kill -----------------------------------------------------------------------------------


@pytest.mark.emulator(requests_per_second=2)
@pytest.mark.parametrize(
    ("cancel_on_kill", "user_action", "cancelled"),
    [(True, True, 1), (False, True, 0), (True, False, 0)],
    ids=["asked-and-killed", "not-asked", "triggerer-shutdown"],
)
async def test_on_kill_cancels_only_when_asked_and_killed_by_a_user(
    batch_emulator, conn, cancel_on_kill, user_action, cancelled
):
    """Driven by the real triggerer's ``run_trigger``: a user action calls on_kill, a shutdown
    (restart, redistribution) only cleans up, and cleanup never cancels."""
    import airflow
    from airflow.jobs import triggerer_job_runner as runner_module

    user_msg = user_cancel_message(runner_module, airflow.__version__)
    ids = create_batches(batch_emulator, 2, lines=20)
    trigger = OpenAIBatchTrigger(
        conn_id=conn(), batch_ids=ids, poll_interval=0.05, cancel_on_kill=cancel_on_kill
    )
    runner = runner_module.TriggerRunner()
    task = asyncio.ensure_future(runner.run_trigger(1, trigger))
    runner.triggers[1] = {"task": task, "name": "t", "events": 0, "is_watcher": False}
    await asyncio.sleep(0.5)

    task.cancel(user_msg if user_action else None)
    with contextlib.suppress(asyncio.CancelledError):
        await task

    assert batch_emulator.stats()["batches_cancelled"] == cancelled * len(ids)
    statuses = {b.status for b in map(batch_emulator.client().batches.retrieve, ids)}
    assert statuses <= ({"cancelling", "cancelled"} if cancelled else {"validating", "in_progress"})


def user_cancel_message(runner_module: Any, airflow_version: str) -> str:
    """The triggerer's private "a user killed it" cancel message; skip only on Airflow < 3.3.

    A private constant can vanish in any release: on 3.3+ its absence fails loudly (the on_kill
    path would go untested), instead of skipping as if this were an older Airflow.
    """
    if Version(airflow_version).release < (3, 3):
        pytest.skip(f"Airflow {airflow_version} never calls a trigger's on_kill (it came in 3.3)")
    message = getattr(runner_module, "_USER_ACTION_CANCEL_MSG", None)
    if not isinstance(message, str):
        pytest.fail(
            f"Airflow {airflow_version} has no airflow.jobs.triggerer_job_runner._USER_ACTION_CANCEL_MSG: "
            "find how this version tells a user's kill from a shutdown and update the on_kill tests."
        )
    return message


def test_a_missing_private_constant_fails_instead_of_skipping():
    with pytest.raises(pytest.fail.Exception, match="_USER_ACTION_CANCEL_MSG"):
        user_cancel_message(SimpleNamespace(), "3.3.2")
    with pytest.raises(pytest.skip.Exception, match="3.1.8"):
        user_cancel_message(SimpleNamespace(), "3.1.8")
    assert user_cancel_message(SimpleNamespace(_USER_ACTION_CANCEL_MSG="x"), "3.4.0.dev0") == "x"


# --- sharing and the event loop -------------------------------------------------------------


async def test_many_triggers_share_a_few_requests(batch_emulator, conn):
    ids = create_batches(batch_emulator, 40, lines=1)
    conn_id = conn()
    poller = get_poller(conn_id)
    poller.watch(["keep-alive"])  # hold this poller for the test, to read its counters after

    events = await asyncio.gather(
        *(run_trigger(OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[b], poll_interval=0.05)) for b in ids)
    )

    assert [e["status"] for e in events] == ["success"] * 40
    polls = poller.stats["pages"] + poller.stats["retrieves"]
    assert polls <= 10, dict(poller.stats)  # forty triggers, a handful of list pages
    poller.unwatch(["keep-alive"])


@pytest.mark.emulator(mode="subprocess", requests_per_second=40)
async def test_the_event_loop_is_never_blocked(batch_emulator, conn):
    """No blocking I/O on the loop's thread: counted calls, not timings, so load cannot flake it."""
    ids = create_batches(batch_emulator, 30, lines=8)
    batch_emulator.set_faults("*", latency=0.25)  # a sync call inside async would wait on this
    conn_id = conn(max_retries=2)

    with blocking_calls_on_this_thread() as seen:
        events = await asyncio.gather(
            *(
                run_trigger(OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[b], poll_interval=0.1))
                for b in ids
            ),
            run_trigger(OpenAIBatchTrigger(conn_id=conn_id, batch_ids=ids[:10], poll_interval=0.1)),
        )

    assert [e["status"] for e in events] == ["success"] * 31
    assert seen.calls == [], "blocking calls on the event loop's thread:\n" + "\n".join(seen.calls)


@pytest.mark.emulator(mode="subprocess")
async def test_the_blocking_call_detector_catches_a_blocking_call(batch_emulator, conn):
    """The check above can fail: the official provider's pattern (the sync SDK in async) trips it."""
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

    [bid] = create_batches(batch_emulator)
    hook = OpenAIBatchHook(conn_id=conn())

    async def blocking_poll() -> None:
        hook.get_batch(bid)  # deliberately blocking

    with blocking_calls_on_this_thread() as seen:
        await blocking_poll()
    assert any("recv" in call or "connect" in call for call in seen.calls), seen.calls
