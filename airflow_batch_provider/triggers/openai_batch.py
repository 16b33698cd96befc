"""OpenAIBatchTrigger: wait in the triggerer until every batch of a submit is terminal.

Yields exactly one event::

    {"status": "success", "batches": [summarize_batch(b), ...]}
    {"status": "error", "reason": "timeout" | "polling_error" | "auth" | "not_found",
     "message": str, "batches": [...latest summaries...]}

and :func:`airflow_batch_provider.waiting.outcome.resolve_event` turns it into the
task's outcome. Native async on the hook's shared ``AsyncOpenAI`` (through the
coalescing :mod:`~airflow_batch_provider.triggers.poller`): nothing here blocks
the triggerer's event loop, which every deferred task of the deployment shares.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchNotFoundError,
    BatchProviderError,
    BatchServiceError,
)
from airflow_batch_provider.hooks.clients import redact
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.ids import check_user_id
from airflow_batch_provider.payloads import BatchSummary, WaitEvent
from airflow_batch_provider.triggers.poller import get_poller
from airflow_batch_provider.waiting.outcome import (
    REASON_AUTH,
    REASON_NOT_FOUND,
    REASON_POLLING_ERROR,
    REASON_TIMEOUT,
)
from airflow_batch_provider.waiting.policy import WaitPolicy
from airflow_batch_provider.waiting.status import BatchStatus, format_duration, summarize_batch
from airflow_batch_provider.waiting.transient import error_chain, is_transient_status, retry_after, status_of

#: Seconds a poll started before the deadline may run past it before the trigger times out.
DEADLINE_GRACE = 5.0
#: Longest spread of first polls, seconds (a restart resumes every trigger at once).
FIRST_POLL_SPREAD = 5.0
#: Seconds ``on_kill`` spends cancelling (the triggerer bounds it at ``[triggerer] on_kill_timeout``).
CANCEL_TIMEOUT = 25.0

_AUTH, _NOT_FOUND, _TRANSIENT, _FATAL = "auth", "not_found", "transient", "fatal"


class OpenAIBatchTrigger(BaseTrigger):
    """Poll OpenAI batches until every one is terminal, or the deadline passes.

    :param conn_id: Airflow ``openai`` connection id (only the id travels; no secret).
    :param batch_ids: The batches to wait for (all shards of one submit).
    :param poll_interval: Seconds between polls while batches make progress.
    :param max_poll_interval: Longest interval the backoff reaches while nothing changes.
    :param deadline: Absolute wall-clock deadline (epoch seconds, or an aware ``datetime``);
        absolute so that a triggerer restart neither resets nor loses it. ``None``: no deadline.
    :param max_transient_errors: Polling rounds in a row that may fail with 429, 5xx or
        network errors (each after the SDK's own retries) before the trigger gives up.
    :param cancel_on_kill: Cancel the unfinished batches when a user kills the deferred task
        (mark failed / clear / mark success). Airflow 3.3+ calls ``on_kill``; older
        versions never do. Triggerer restarts and redistribution never cancel.
    """

    def __init__(
        self,
        conn_id: str,
        batch_ids: Sequence[str] | str,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        deadline: float | datetime | None = None,
        max_transient_errors: int = 10,
        cancel_on_kill: bool = False,
    ) -> None:
        super().__init__()
        ids = [batch_ids] if isinstance(batch_ids, str) else list(batch_ids)
        ids = list(dict.fromkeys(b for b in ids if b))
        if not ids:
            raise ValueError("OpenAIBatchTrigger needs at least one batch id.")
        for bid in ids:
            check_user_id(bid, kind="batch id", argument="OpenAIBatchTrigger's batch_ids")
        if not poll_interval or float(poll_interval) <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}.")
        if isinstance(deadline, datetime):
            if deadline.tzinfo is None:
                raise ValueError("deadline must be timezone-aware (or epoch seconds).")
            deadline = deadline.timestamp()
        if int(max_transient_errors) < 0:
            raise ValueError(f"max_transient_errors must be >= 0, got {max_transient_errors!r}.")
        self.conn_id = conn_id
        self.batch_ids = ids
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.deadline = float(deadline) if deadline is not None else None
        self.max_transient_errors = int(max_transient_errors)
        self.cancel_on_kill = bool(cancel_on_kill)
        # The latest batch as the service returned it (shared with the poller's cache: no copy);
        # summaries are built once, for the event.
        self._latest: dict[str, dict[str, Any]] = {}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Return the class path and the kwargs that rebuild this trigger (no secret)."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "conn_id": self.conn_id,
                "batch_ids": list(self.batch_ids),
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "deadline": self.deadline,
                "max_transient_errors": self.max_transient_errors,
                "cancel_on_kill": self.cancel_on_kill,
            },
        )

    # -- the wait ------------------------------------------------------------------------------

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll every unfinished batch each round (concurrently) and yield one event."""
        poller = get_poller(self.conn_id)
        poller.watch(self.batch_ids)
        try:
            event = await self._wait(poller)
        finally:
            poller.unwatch(self.batch_ids)
        yield TriggerEvent(event)

    async def _wait(self, poller: Any) -> WaitEvent:
        progress = _Progress(self.batch_ids)
        active = list(self.batch_ids)
        policy = WaitPolicy(
            self.poll_interval,
            self.max_poll_interval,
            max_transient_errors=self.max_transient_errors,
            deadline=self.deadline,
        )
        # A triggerer (re)start resumes many triggers at once: spread their first polls over
        # the interval (the shared poller still serves them with shared list pages).
        spread = random.uniform(0, min(self.poll_interval, FIRST_POLL_SPREAD))
        await asyncio.sleep(policy.sleep_for(spread, time.time()))
        while True:
            max_age = min(policy.interval / 4, 30.0)  # another trigger's recent read is as good as ours
            try:
                # A poll hanging in the SDK's retries must not outlive the deadline by much.
                results = await _within(
                    policy.time_left(time.time(), DEADLINE_GRACE), _poll(poller, active, max_age)
                )
            except asyncio.TimeoutError:
                return self._error(REASON_TIMEOUT, self._timeout_message())
            transient: list[tuple[str, BaseException]] = []
            for bid, result in zip(active, results, strict=True):
                if not isinstance(result, BaseException):
                    self._latest[bid] = result
                    continue
                kind = _classify(result)
                if kind == _AUTH:
                    return self._error(REASON_AUTH, self._auth_message(bid, result))
                if kind == _NOT_FOUND:
                    return self._error(REASON_NOT_FOUND, self._not_found_message(bid, result))
                if kind == _FATAL:
                    return self._error(
                        REASON_POLLING_ERROR,
                        f"Polling batch {bid} on connection {self.conn_id!r} failed and retrying "
                        f"cannot help: {_describe(result)}. The batch keeps running; fix the cause, "
                        "then clear the task to wait again (no new batch is created).",
                    )
                transient.append((bid, result))
            active = [b for b in active if not _is_terminal(self._latest.get(b))]
            if not active:
                progress.update(self._latest, self.log)
                return {"status": "success", "batches": self._summaries()}
            # Checked after a poll, so a batch that ended just before the deadline still counts.
            if policy.expired(time.time()):
                return self._error(REASON_TIMEOUT, self._timeout_message())
            if transient:
                bid, last = transient[-1]
                next_delay = policy.after_transient_error(max((retry_after(e) or 0.0) for _, e in transient))
                if next_delay is None:
                    return self._error(
                        REASON_POLLING_ERROR,
                        f"Polling failed {policy.failed_rounds} rounds in a row on connection "
                        f"{self.conn_id!r} (max_transient_errors={self.max_transient_errors}); last error, "
                        f"batch {bid}: {_describe(last)}. The batches keep running on the service; clear "
                        "the task to wait again once the service answers (no new batch is created).",
                    )
                delay = next_delay
                self.log.warning(
                    "Polling %d batch(es) failed (%d/%d rounds in a row), next try in %.1fs: %s",
                    len(transient),
                    policy.failed_rounds,
                    self.max_transient_errors,
                    delay,
                    _describe(last),
                )
            else:
                delay = policy.after_poll(changed=progress.update(self._latest, self.log))
            await asyncio.sleep(policy.sleep_for(_aligned(policy.jittered(delay)), time.time()))

    # -- kill / cleanup ------------------------------------------------------------------------

    async def on_kill(self) -> None:
        """Cancel the unfinished batches if ``cancel_on_kill`` (Airflow 3.3+ calls this on user kill).

        Never raises: the triggerer only logs failures. Bounded by :data:`CANCEL_TIMEOUT`.
        """
        if not self.cancel_on_kill:
            self.log.info(
                "Task killed; batches %s keep running (cancel_on_kill=False).", ", ".join(self.batch_ids)
            )
            return
        hook = OpenAIBatchHook(conn_id=self.conn_id)
        targets = [b for b in self.batch_ids if not _is_terminal(self._latest.get(b))]
        try:
            results = await asyncio.wait_for(
                asyncio.gather(*(hook.acancel_batch(b) for b in targets), return_exceptions=True),
                CANCEL_TIMEOUT,
            )
        except asyncio.TimeoutError:
            self.log.warning("Cancelling batches %s timed out after %ss.", targets, CANCEL_TIMEOUT)
            return
        for bid, result in zip(targets, results, strict=True):
            if isinstance(result, BaseException):
                self.log.warning("Could not cancel batch %s: %s", bid, _describe(result))
            else:
                self.log.info("Cancel requested for batch %s (now %s).", bid, result.status)

    async def cleanup(self) -> None:
        """Release nothing and cancel nothing: cleanup also runs on triggerer restarts."""

    # -- events and messages -------------------------------------------------------------------

    def _summaries(self) -> list[BatchSummary]:
        return [summarize_batch(self._latest[b]) for b in self.batch_ids if b in self._latest]

    def _error(self, reason: str, message: str) -> WaitEvent:
        self.log.error("%s", message)
        return {"status": "error", "reason": reason, "message": message, "batches": self._summaries()}

    def _timeout_message(self) -> str:
        assert self.deadline is not None
        when = datetime.fromtimestamp(self.deadline, tz=timezone.utc).isoformat(timespec="seconds")
        pending = [b for b in self.batch_ids if not _is_terminal(self._latest.get(b))]
        states = ", ".join(f"{b} {_state(self._latest.get(b))}" for b in pending[:20])
        return (
            f"Deadline {when} passed with {len(pending)} of {len(self.batch_ids)} batch(es) unfinished: "
            f"{states}. They keep running (and billing) on the service: cancel them, or give the task "
            "a longer timeout and clear it to wait again (no new batch is created)."
        )

    def _auth_message(self, bid: str, exc: BaseException) -> str:
        return (
            f"Polling batch {bid}: the service refused connection {self.conn_id!r}: {_describe(exc)}. "
            "Fix the connection (API key in the password field; organization/project extras), then "
            "clear the task to wait again; the batch keeps running meanwhile."
        )

    def _not_found_message(self, bid: str, exc: BaseException) -> str:
        return (
            f"Batch {bid} was not found through connection {self.conn_id!r}: {_describe(exc)}. Check "
            "the batch id, and that the connection points at the service, organization and project "
            "that created it (host / base URL, Azure endpoint, project extra)."
        )


class _Progress:
    """Tracks counts between polls: says when they changed and logs status, percent, rate, ETA."""

    def __init__(self, batch_ids: list[str]) -> None:
        self.batch_ids = batch_ids
        self.key: tuple[Any, ...] | None = None
        self.first: tuple[float, int] | None = None

    def update(self, latest: dict[str, dict[str, Any]], log: Any) -> bool:
        batches = [latest[b] for b in self.batch_ids if b in latest]
        counts = [_counts(b) for b in batches]
        key = tuple((b["status"], c[1], c[2]) for b, c in zip(batches, counts, strict=True))
        if key == self.key:
            return False
        self.key = key
        total = sum(c[0] for c in counts)
        ok = sum(c[1] for c in counts)
        failed = sum(c[2] for c in counts)
        done, now = ok + failed, time.monotonic()
        if self.first is None:
            self.first = (now, done)
        rate = (done - self.first[1]) / (now - self.first[0]) if now > self.first[0] else 0.0
        if log.isEnabledFor(logging.INFO):
            statuses: dict[str, int] = {}
            for b in batches:
                statuses[b["status"]] = statuses.get(b["status"], 0) + 1
            status = " ".join(f"{k}={v}" for k, v in sorted(statuses.items()))
            if len(batches) == 1:
                status = f"{batches[0]['id']} {batches[0]['status']}"
            pct = f"{100 * done / total:.1f}%" if total else "-"
            if all(BatchStatus.is_terminal(b["status"]) for b in batches):
                # Done: a rate and an ETA of a finished batch say nothing ("0.0 req/s; ETA -").
                log.info("Batches %s: %d/%d requests done (%s), %d failed", status, done, total, pct, failed)
            else:
                eta = format_duration((total - done) / rate) if rate > 0 and total > done else "-"
                log.info(
                    "Batches %s: %d/%d requests done (%s), %d failed; %.1f req/s; ETA %s",
                    status,
                    done,
                    total,
                    pct,
                    failed,
                    rate,
                    eta,
                )
        return True


def _counts(batch: dict[str, Any]) -> tuple[int, int, int]:
    """``(total, completed, failed)`` of a batch as the service returned it."""
    c = batch.get("request_counts") or {}
    return int(c.get("total") or 0), int(c.get("completed") or 0), int(c.get("failed") or 0)


async def _poll(poller: Any, batch_ids: list[str], max_age: float) -> list[Any]:
    """Every batch at once; each result is the batch or the exception reading it raised."""
    if len(batch_ids) == 1:  # the common case, without a task per poll
        try:
            return [await poller.get(batch_ids[0], max_age)]
        except Exception as exc:
            return [exc]
    return await asyncio.gather(*(poller.get(b, max_age) for b in batch_ids), return_exceptions=True)


async def _within(seconds: float | None, coro: Any) -> Any:
    """Await ``coro``, raising ``asyncio.TimeoutError`` after ``seconds`` (None: no limit)."""
    if seconds is None:
        return await coro
    if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task
        async with asyncio.timeout(seconds):
            return await coro
    return await asyncio.wait_for(coro, seconds)


def _aligned(delay: float) -> float:
    """``delay`` stretched to the next tick of a wall-clock grid a tenth of it wide (at most 5 s).

    Triggers whose polls fall due close together then wake together, and the shared poller
    answers them with one request per hundred batches instead of one per trigger.
    """
    grid = min(max(delay / 10, 0.05), 5.0)
    wake = time.time() + delay
    return math.ceil(wake / grid) * grid - time.time()


_TERMINAL = frozenset(s.value for s in BatchStatus.terminal())


def _is_terminal(batch: dict[str, Any] | None) -> bool:
    return batch is not None and batch["status"] in _TERMINAL


def _state(batch: dict[str, Any] | None) -> str:
    if batch is None:
        return "(never read)"
    total, ok, failed = _counts(batch)
    return f"{batch['status']} {ok + failed}/{total}"


def _classify(exc: BaseException) -> str:
    if isinstance(exc, BatchAuthError):
        return _AUTH
    if isinstance(exc, BatchNotFoundError):
        return _NOT_FOUND
    if isinstance(exc, (BatchServiceError, asyncio.CancelledError, asyncio.TimeoutError, OSError)):
        return _TRANSIENT
    status = status_of(exc)
    if status in (401, 403):
        return _AUTH
    if status == 404:
        return _NOT_FOUND
    if status is not None:
        return _TRANSIENT if is_transient_status(status) else _FATAL
    if isinstance(exc, BatchProviderError):
        return _FATAL
    if isinstance(exc, RuntimeError) and "client has been closed" in str(exc):
        return _TRANSIENT  # the shared client was closed under us; the next poll builds a new one
    name = {type(e).__name__ for e in error_chain(exc)}
    if name & {"APIConnectionError", "APITimeoutError", "ConnectError", "ReadTimeout", "RemoteProtocolError"}:
        return _TRANSIENT
    return _FATAL


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if type(exc).__module__ == "builtins" else text)
