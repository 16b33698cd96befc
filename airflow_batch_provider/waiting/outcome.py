"""Completion semantics shared by the submit operator and the sensor.

Pure: no Airflow, no HTTP. Given the trigger event (or, in poke mode, the batch
summaries), decide whether the task succeeds, or raise the exception that says
what went wrong, where, and what to do. One function for every waiting mode, so
deferrable, poke and reschedule cannot drift apart.

A trigger event has the shape documented in ``triggers/openai_batch.py``::

    {"status": "success", "batches": [summarize_batch(b), ...]}
    {"status": "error", "reason": "timeout" | "polling_error" | "auth" | "not_found",
     "message": str, "batches": [...]}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_batch_provider.batch_file.lines import plural
from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchFailedError,
    BatchNotFoundError,
    BatchProviderError,
    BatchServiceError,
    BatchTimeoutError,
)
from airflow_batch_provider.waiting.status import BatchStatus

REASON_TIMEOUT = "timeout"
REASON_POLLING_ERROR = "polling_error"
REASON_AUTH = "auth"
REASON_NOT_FOUND = "not_found"

#: Error reasons a trigger event may carry, and the exception each one raises.
ERROR_REASONS: dict[str, type[BatchProviderError]] = {
    REASON_TIMEOUT: BatchTimeoutError,
    REASON_POLLING_ERROR: BatchServiceError,
    REASON_AUTH: BatchAuthError,
    REASON_NOT_FOUND: BatchNotFoundError,
}

#: How many service errors are quoted per batch in a message (all are in ``exc.batches``).
_MAX_QUOTED_ERRORS = 20


def resolve_event(
    event: Mapping[str, Any] | None,
    *,
    batch_ids: Sequence[str] | None = None,
    fail_on_expired: bool = True,
    fail_on_cancelled: bool = True,
    shards: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Decide the outcome of a trigger event; return the batch summaries on success.

    :param event: The payload the trigger yielded (``event`` in ``execute_complete``).
        ``None``, a non-mapping, or an unknown status or reason fails loudly.
    :param batch_ids: The ids the task waited for; when given, the event must cover
        exactly these (an event about other batches is a bug, not a success).
    :param fail_on_expired: Fail when a batch ended ``expired`` (its partial results
        stay fetchable either way).
    :param fail_on_cancelled: Fail when a batch ended ``cancelled`` (same).
    :param shards: The submit manifest's ``shards``; when given, service line numbers
        are also translated to lines of the original input.
    :raises BatchTimeoutError: reason ``timeout``.
    :raises BatchServiceError: reason ``polling_error``.
    :raises BatchAuthError: reason ``auth``.
    :raises BatchNotFoundError: reason ``not_found``.
    :raises BatchFailedError: a batch failed, every request of a completed batch failed,
        or a batch expired / was cancelled and the flags say to fail.
    :raises BatchProviderError: the event is absent, malformed or unknown.
    :return: The batch summaries of the event, in the event's order.
    """
    if event is None:
        raise BatchProviderError(
            "The task resumed without a trigger event, so the batch outcome is unknown. "
            "This happens when the trigger was removed or timed out at the Airflow level "
            "(check the task's execution_timeout / the triggerer logs); clear the task to "
            "re-attach to its batches."
        )
    if not isinstance(event, Mapping):
        raise BatchProviderError(f"Unexpected trigger event of type {type(event).__name__}: {event!r:.200}")
    status = event.get("status")
    batches = event.get("batches")
    if batches is None:
        batches = []
    if not isinstance(batches, list) or not all(isinstance(b, Mapping) for b in batches):
        raise BatchProviderError(f"Trigger event has malformed 'batches': {batches!r:.200}")

    if status == "error":
        reason = event.get("reason")
        message = str(event.get("message") or "no message")
        exc_type = ERROR_REASONS.get(str(reason))
        if exc_type is None:
            raise BatchProviderError(f"Trigger reported an unknown error reason {reason!r}: {message}")
        exc = exc_type(message)
        exc.batches = [dict(b) for b in batches]  # type: ignore[attr-defined]
        exc.reason = reason  # type: ignore[attr-defined]
        raise exc
    if status != "success":
        raise BatchProviderError(
            f"Unknown trigger event status {status!r} (expected 'success' or 'error'): {event!r:.300}"
        )
    if batch_ids is not None:
        got = [str(b.get("id")) for b in batches]
        if sorted(got) != sorted(batch_ids):
            raise BatchProviderError(
                f"Trigger event covers batches {got} but the task waited for {list(batch_ids)}; "
                "refusing to treat it as success. Clear the task to wait again."
            )
    elif not batches:
        raise BatchProviderError("Trigger event reported success for no batches at all.")
    return check_batches(
        batches,
        fail_on_expired=fail_on_expired,
        fail_on_cancelled=fail_on_cancelled,
        shards=shards,
    )


def check_batches(
    batches: Iterable[Mapping[str, Any]],
    *,
    fail_on_expired: bool = True,
    fail_on_cancelled: bool = True,
    shards: Sequence[Mapping[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Apply the completion semantics to terminal batch summaries.

    Used by :func:`resolve_event` and by the sensor in poke/reschedule mode.
    Every batch is judged before raising, so one message covers every shard.

    :param batches: Summaries from :func:`~airflow_batch_provider.waiting.status.summarize_batch`.
    :param fail_on_expired: Fail when a batch ended ``expired``.
    :param fail_on_cancelled: Fail when a batch ended ``cancelled``.
    :param shards: The submit manifest's ``shards`` to translate line numbers.
    :raises BatchFailedError: see :func:`resolve_event`.
    :raises BatchProviderError: a batch is not terminal.
    :return: The summaries, as plain dicts.
    """
    summaries = [dict(b) for b in batches]
    start_lines = {
        str(s.get("batch_id")): int(s["start_line"]) for s in shards or () if s.get("start_line") is not None
    }
    problems: list[str] = []
    for b in summaries:
        status = b.get("status")
        bid = b.get("id")
        counts = b.get("request_counts") or {}
        total, done, failed = (int(counts.get(k) or 0) for k in ("total", "completed", "failed"))
        if not isinstance(status, str) or not BatchStatus.is_terminal(status):
            raise BatchProviderError(
                f"Batch {bid} is {status!r}, not terminal, yet its wait ended; this is a bug in the "
                "waiting code. Clear the task to wait again."
            )
        if status == BatchStatus.FAILED.value:
            problems.append(_describe_failed(b, start_lines.get(str(bid))))
        elif status == BatchStatus.COMPLETED.value and total > 0 and failed >= total:
            problems.append(
                f"Batch {bid}{_shard(b)} completed but every request failed ({failed}/{total} failed, "
                f"{done} succeeded); read the error file {b.get('error_file_id')} for the per-request "
                "errors (e.g. model name, max_tokens, context length) and fix the requests."
            )
        elif status == BatchStatus.EXPIRED.value and fail_on_expired:
            problems.append(
                f"Batch {bid}{_shard(b)} expired before its completion window ended "
                f"({done} succeeded, {failed} failed of {total}); partial results stay in output file "
                f"{b.get('output_file_id')}. Set fail_on_expired=False to accept partial results."
            )
        elif status == BatchStatus.CANCELLED.value and fail_on_cancelled:
            problems.append(
                f"Batch {bid}{_shard(b)} was cancelled ({done} succeeded, {failed} failed of {total}); "
                f"partial results stay in output file {b.get('output_file_id')}. "
                "Set fail_on_cancelled=False to accept partial results."
            )
    if problems:
        exc = BatchFailedError("\n".join(problems))
        exc.batches = summaries  # type: ignore[attr-defined]
        raise exc
    return summaries


def totals(batches: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Sum ``request_counts`` over batches: ``{"total", "completed", "failed"}``."""
    out = {"total": 0, "completed": 0, "failed": 0}
    for b in batches:
        counts = b.get("request_counts") or {}
        for k in out:
            out[k] += int(counts.get(k) or 0)
    return out


def _shard(batch: Mapping[str, Any]) -> str:
    shard = (batch.get("metadata") or {}).get("airflow_shard")
    return f" (shard {shard})" if shard else ""


def _describe_failed(batch: Mapping[str, Any], start_line: int | None) -> str:
    errors = list(batch.get("errors") or [])
    head = (
        f"Batch {batch.get('id')}{_shard(batch)} failed"
        + (
            f" with {plural(len(errors), 'error')} from the service"
            if errors
            else " and the service gave no reason"
        )
        + f" (input file {batch.get('input_file_id')}):"
    )
    lines = [head]
    for e in errors[:_MAX_QUOTED_ERRORS]:
        where = ""
        if e.get("line") is not None:
            where = f"line {e['line']}"
            if start_line is not None:
                where += f" (input line {start_line + int(e['line']) - 1})"
            where += ": "
        param = f" (param {e['param']})" if e.get("param") else ""
        lines.append(f"  {where}[{e.get('code') or 'error'}] {e.get('message') or ''}{param}")
    if len(errors) > _MAX_QUOTED_ERRORS:
        lines.append(f"  ... and {len(errors) - _MAX_QUOTED_ERRORS} more")
    lines.append("  Fix the input (see the lines above) and run the task again.")
    return "\n".join(lines)
