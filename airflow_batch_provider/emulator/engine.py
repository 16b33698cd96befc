"""The background executor: moves each batch through its lifecycle.

``validating`` -> ``failed`` | ``in_progress`` -> ``finalizing`` -> ``completed``;
``cancelling`` -> ``cancelled`` (partial results kept); ``expired`` once the
completion window passes (finished results in the output file, the rest in the
error file as ``batch_expired``). One asyncio task per live batch; file and CPU
work runs in worker threads so the server keeps answering polls. Progress is
checkpointed after every chunk, so a restarted server resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from airflow_batch_provider.emulator import ids, runner
from airflow_batch_provider.emulator.backends import Backend
from airflow_batch_provider.emulator.config import Settings
from airflow_batch_provider.emulator.errors import bad_request
from airflow_batch_provider.emulator.stats import Stats
from airflow_batch_provider.emulator.store import BatchRecord, Store
from airflow_batch_provider.emulator.validation import canonical_endpoint, validate_file

log = logging.getLogger(__name__)

TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
CANCELLABLE = frozenset({"validating", "in_progress"})
MAX_CHUNK = 1000
DEFAULT_OUTPUT_TTL = 30 * 24 * 3600


class Engine:
    """Runs every live batch of a store.

    :param store: the state.
    :param backend: executes requests.
    :param settings: profile and limits.
    :param stats: counters to update.
    """

    def __init__(self, store: Store, backend: Backend, settings: Settings, stats: Stats) -> None:
        self.store = store
        self.backend = backend
        self.settings = settings
        self.stats = stats
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._stopping = False
        self._stopped = asyncio.Event()

    # Control --------------------------------------------------------------------------------

    def start(self) -> None:
        """Resume every batch that was live when the server last stopped."""
        for record in self.store.batches(lambda r: r.object["status"] not in TERMINAL):
            log.info("resuming batch %s (%s)", record.id, record.object["status"])
            self.submit(record.id)

    def submit(self, batch_id: str) -> None:
        """Start driving a batch.

        :param batch_id: a stored, live batch.
        """
        self._wake[batch_id] = asyncio.Event()
        self._tasks[batch_id] = asyncio.create_task(self._drive(batch_id), name=f"batch {batch_id}")

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop every batch at its next checkpoint (then cancel what is still running).

        :param timeout: seconds to wait for checkpoints.
        """
        self._stopping = True
        self._stopped.set()
        for event in self._wake.values():
            event.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    def cancel(self, batch_id: str) -> dict[str, Any]:
        """Request cancellation; the batch turns ``cancelling`` now and ``cancelled`` soon.

        :param batch_id: the batch.
        :raises APIError: 404 unknown batch, 400 if it can no longer be cancelled.
        """
        record = self.store.get_batch(batch_id)
        batch = record.object
        if batch["status"] in CANCELLABLE:
            batch["status"] = "cancelling"
            batch["cancelling_at"] = ids.now()
            self.store.save_batch(record)
            self.stats.batches_cancelled += 1
            if batch_id in self._wake:
                self._wake[batch_id].set()
            else:
                self.submit(batch_id)
        elif batch["status"] not in ("cancelling", "cancelled"):
            raise bad_request(
                f"Cannot cancel a batch with status '{batch['status']}'.",
                param="batch_id",
                code="invalid_state",
            )
        return batch

    # Lifecycle ------------------------------------------------------------------------------

    async def _drive(self, batch_id: str) -> None:
        record = self.store.get_batch(batch_id)
        try:
            while not self._stopping:
                status = record.object["status"]
                if status == "validating":
                    await self._validate(record)
                elif status == "in_progress":
                    await self._execute(record)
                elif status in ("finalizing", "cancelling"):
                    await self._finish(record)
                else:
                    break
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug must not leave a batch hanging forever
            log.exception("batch %s failed inside the emulator", batch_id)
            self._fail(
                record, [{"code": "internal_error", "message": repr(exc), "param": None, "line": None}]
            )
        finally:
            self._tasks.pop(batch_id, None)
            self._wake.pop(batch_id, None)

    async def _pause(self, record: BatchRecord, seconds: float) -> None:
        """Sleep, but wake early for a cancel, a stop or the completion deadline."""
        seconds = min(seconds, record.state["deadline"] - time.time())
        if seconds > 0:
            try:
                await asyncio.wait_for(self._wake[record.id].wait(), seconds)
            except asyncio.TimeoutError:
                pass

    def _interrupted(self, record: BatchRecord) -> bool:
        """After a step: hand over to cancel, stop or expiry if one is due."""
        return self._stopping or record.object["status"] == "cancelling" or self._expired(record)

    def _expired(self, record: BatchRecord) -> bool:
        return record.object["status"] in CANCELLABLE and time.time() >= record.state["deadline"]

    async def _validate(self, record: BatchRecord) -> None:
        await self._pause(record, self.settings.profile.validation_delay)
        if self._interrupted(record):
            if self._expired(record):
                await self._expire(record)
            return
        batch = record.object
        path = self.store.work_path(record.id, "input")
        result = await asyncio.to_thread(validate_file, path, batch["endpoint"], self.settings.limits)
        if self._interrupted(record):
            return
        batch["model"] = result.model
        if not result.ok:
            self._fail(record, result.errors)
            return
        batch["status"] = "in_progress"
        batch["in_progress_at"] = ids.now()
        batch["request_counts"] = {"total": result.request_count, "completed": 0, "failed": 0}
        record.state.update(offset=0, line=0, out_bytes=0, err_bytes=0)
        self.store.save_batch(record)

    def _fail(self, record: BatchRecord, errors: list[dict[str, Any]]) -> None:
        batch = record.object
        batch["status"] = "failed"
        batch["failed_at"] = ids.now()
        batch["errors"] = {"object": "list", "data": errors}
        self.store.save_batch(record)
        self.store.clear_work(record.id)
        self.stats.batches_failed += 1

    def _chunk_size(self) -> int:
        rps = self.settings.profile.requests_per_second
        return MAX_CHUNK if rps <= 0 else max(1, min(MAX_CHUNK, int(rps / 5)))

    async def _execute(self, record: BatchRecord) -> None:
        batch, state = record.object, record.state
        paths = {kind: self.store.work_path(record.id, kind) for kind in ("input", "output", "error")}
        runner.cut_back(paths["output"], state["out_bytes"])
        runner.cut_back(paths["error"], state["err_bytes"])
        rps = self.settings.profile.requests_per_second
        started, done = time.monotonic(), 0
        while not self._interrupted(record):
            requests, offset, consumed = await asyncio.to_thread(
                runner.read_chunk, paths["input"], state["offset"], self._chunk_size()
            )
            if not consumed:
                batch["status"] = "finalizing"
                batch["finalizing_at"] = ids.now()
                self.store.save_batch(record)
                return
            # Backends know the /v1 form only; an Azure batch's lines may spell it /chat/completions.
            outcomes = await self.backend.execute([(canonical_endpoint(r.url), r.body) for r in requests])
            pairs: list[tuple[runner.PendingRequest, Any]] = list(zip(requests, outcomes, strict=True))
            out_bytes, err_bytes = await asyncio.to_thread(
                runner.append_results, paths["output"], paths["error"], pairs
            )
            self._count(record, outcomes)
            state.update(
                offset=offset, line=state["line"] + consumed, out_bytes=out_bytes, err_bytes=err_bytes
            )
            self.store.save_batch(record)
            done += len(requests)
            if rps > 0:
                await self._pause(record, started + done / rps - time.monotonic())
        if self._expired(record) and not self._stopping:
            await self._expire(record)

    def _count(self, record: BatchRecord, outcomes: list[Any]) -> None:
        counts = record.object["request_counts"]
        usage = record.object.setdefault("usage", _empty_usage())
        for outcome in outcomes:
            if 200 <= outcome.status_code < 300:
                counts["completed"] += 1
                usage["input_tokens"] += outcome.input_tokens
                usage["output_tokens"] += outcome.output_tokens
            else:
                counts["failed"] += 1
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
        succeeded = sum(1 for o in outcomes if 200 <= o.status_code < 300)
        self.stats.requests_executed += len(outcomes)
        self.stats.requests_succeeded += succeeded
        self.stats.requests_failed += len(outcomes) - succeeded

    async def _expire(self, record: BatchRecord) -> None:
        """Write every request not yet executed to the error file as ``batch_expired``."""
        batch, state = record.object, record.state
        state.setdefault("offset", 0)
        paths = {kind: self.store.work_path(record.id, kind) for kind in ("input", "output", "error")}
        runner.cut_back(paths["output"], state.get("out_bytes", 0))
        runner.cut_back(paths["error"], state.get("err_bytes", 0))
        counts = batch.setdefault("request_counts", {"total": 0, "completed": 0, "failed": 0})
        while True:
            requests, offset, consumed = await asyncio.to_thread(
                runner.read_chunk, paths["input"], state["offset"], MAX_CHUNK
            )
            if not consumed:
                break
            sizes = await asyncio.to_thread(
                runner.append_results, paths["output"], paths["error"], [(r, None) for r in requests]
            )
            state.update(offset=offset, out_bytes=sizes[0], err_bytes=sizes[1])
            counts["failed"] += len(requests)
        counts["total"] = max(counts["total"], counts["completed"] + counts["failed"])
        self._publish_results(record)
        batch["status"] = "expired"
        batch["expired_at"] = ids.now()
        self.store.save_batch(record)
        self.store.clear_work(record.id)
        self.stats.batches_expired += 1

    async def _finish(self, record: BatchRecord) -> None:
        """``finalizing`` -> ``completed`` and ``cancelling`` -> ``cancelled``."""
        batch = record.object
        try:  # a stop interrupts the delay; the next start finishes the batch
            await asyncio.wait_for(self._stopped.wait(), self.settings.profile.finalization_delay)
            return
        except asyncio.TimeoutError:
            pass
        self._publish_results(record)
        if batch["status"] == "finalizing":
            batch["status"], batch["completed_at"] = "completed", ids.now()
            self.stats.batches_completed += 1
        else:
            batch["status"], batch["cancelled_at"] = "cancelled", ids.now()
        self.store.save_batch(record)
        self.store.clear_work(record.id)

    def _publish_results(self, record: BatchRecord) -> None:
        """Turn the partial result files into ``batch_output`` files (idempotent across restarts)."""
        batch, state = record.object, record.state
        paths = {kind: self.store.work_path(record.id, kind) for kind in ("output", "error")}
        planned = state.get("result_files")
        if planned is None:
            for kind, path in paths.items():
                runner.cut_back(path, state.get(f"{kind[:3]}_bytes", 0))
            planned = {kind: ids.file_id() if path.stat().st_size else None for kind, path in paths.items()}
            state["result_files"] = planned
            self.store.save_batch(record)
        ttl = state.get("output_ttl") or DEFAULT_OUTPUT_TTL
        for kind, file_id in planned.items():
            if file_id and not self.store.has_file(file_id):
                self.store.add_file(
                    paths[kind],
                    filename=f"{record.id}_{kind}.jsonl",
                    purpose="batch_output",
                    expires_at=ids.now() + int(ttl),
                    file_id=file_id,
                )
        batch["output_file_id"] = planned["output"]
        batch["error_file_id"] = planned["error"]


def _empty_usage() -> dict[str, Any]:
    return {
        "input_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 0,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 0,
    }
