"""OpenAIBatchSubmitOperator: validate, shard, submit idempotently, wait, return a manifest.

Thin by design: the decisions (identity, fingerprint, metadata, re-attach plan,
manifest) live in :mod:`airflow_batch_provider.submission.identity`, the completion
semantics in :mod:`airflow_batch_provider.waiting.outcome`, the file rules in
:mod:`airflow_batch_provider.batch_file`. This module wires them to the hook.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow.sdk import BaseOperator

from airflow_batch_provider._compat import conf
from airflow_batch_provider.batch_file.estimate import check_budget, estimate_file, parse_budget
from airflow_batch_provider.batch_file.lines import MAX_LINE_BYTES, ShardLimits, plural
from airflow_batch_provider.batch_file.templates import build_request_lines
from airflow_batch_provider.destination_probe import check_fetch_destinations
from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchFileError,
    BatchNotFoundError,
    BatchProviderError,
    BatchTimeoutError,
)
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook, is_transient_error
from airflow_batch_provider.lineage import submit_lineage
from airflow_batch_provider.links import batch_links, persist_batch_links, persist_failure
from airflow_batch_provider.payloads import BatchSummary, SubmitManifest, WaitEvent
from airflow_batch_provider.submission.identity import (
    batch_metadata,
    build_submit_manifest,
    deadline_from,
    run_horizon,
    task_identity,
)
from airflow_batch_provider.submission.service import (
    INPUT_CHANGE_POLICIES,
    cancel_batches,
    prepare_input,
    submit_shards,
)
from airflow_batch_provider.submit_checks import check_submit_arguments, open_input, record_without_template
from airflow_batch_provider.waiting.outcome import resolve_event, totals
from airflow_batch_provider.waiting.policy import WaitPolicy
from airflow_batch_provider.waiting.status import BatchStatus, summarize_batch
from airflow_batch_provider.waiting.transient import retry_after

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_batch_provider.batch_file import (
        ChatTemplate,
        EmbeddingTemplate,
        ImageTemplate,
        ResponsesTemplate,
    )

    RequestTemplate = ChatTemplate | EmbeddingTemplate | ResponsesTemplate | ImageTemplate

#: XCom key of the manifest while waiting (the return value carries it once done).
MANIFEST_XCOM_KEY = "submit_manifest"


class OpenAIBatchSubmitOperator(BaseOperator):
    """Submit a JSONL batch (or records rendered by a template) to the OpenAI Batch API.

    Validates the whole input before anything is uploaded, splits it into shards that
    fit the service's per-batch limits, creates one batch per shard and waits for all
    of them (deferred by default). Idempotent per task instance: a retry or a clear
    re-attaches to the batches already created for the same input, also after a crash
    between upload and create or between create and XCom push; a changed input creates
    new batches and says so. Returns a small manifest (ids, sizes, fingerprint), never
    requests or results: give it to ``OpenAIBatchFetchOperator``.

    :param input_path: JSONL file of request lines: a local path, a URL such as
        ``s3://bucket/key`` or an ``ObjectStoragePath`` (templated).
    :param requests: Instead of ``input_path``: records (e.g. from XCom) rendered by
        ``request_template``, or ready request lines (dicts, or JSON str/bytes) when no
        template is given (templated, so an XComArg works).
    :param request_template: A ``ChatTemplate``, ``EmbeddingTemplate``, ``ResponsesTemplate`` or
        ``ImageTemplate``.
    :param custom_id_field: Record field holding each request's custom_id (default: a
        content hash).
    :param endpoint: Batch endpoint, e.g. ``/v1/chat/completions`` (either spelling on
        Azure OpenAI); default: the template's, else the file's own ``url`` (templated). The
        batch is created with the lines' spelling; the manifest names the ``/v1`` form.
    :param conn_id: The ``openai`` connection (templated).
    :param metadata: Extra batch metadata, at most 10 pairs (templated); merged with the
        Airflow identity keys.
    :param completion_window: Only ``"24h"`` exists today.
    :param output_expires_after: Seconds after creation when the service may delete the
        result files (3600..2592000); default: the service's 30 days.
    :param shard_limits: Per-batch limits (``ShardLimits`` or a dict of its fields, templated);
        default: the service's (50,000 requests, 200 MB, 50,000 embedding inputs).
    :param wait_for_completion: Wait until every batch is terminal (default). When
        False, return the manifest right after submitting.
    :param deferrable: Wait in the triggerer, freeing the worker (default:
        ``[operators] default_deferrable``; recommended: True).
    :param poll_interval: Seconds between status checks at first.
    :param max_poll_interval: Polling backs off up to this while nothing changes.
    :param timeout: Wall-clock budget in seconds (or a timedelta) from the creation of
        the first batch; retries and triggerer restarts keep it. ``None``: no budget
        (the service's completion window still ends every batch).
    :param cancel_on_kill: Cancel the batches when the task is killed (the trigger does
        it when deferred, Airflow 3.3+). Default False, so a clear re-attaches instead.
    :param cancel_on_timeout: Cancel the batches still running when ``timeout`` ends.
    :param fail_on_expired: Fail when a batch expired (partial results stay fetchable).
    :param fail_on_cancelled: Fail when a batch was cancelled (same).
    :param on_input_change: When batches of this task instance exist for another input:
        ``"cancel_and_resubmit"`` (default: cancel the ones still running, create new
        ones), ``"resubmit"`` (leave them running) or ``"fail"``.
    :param max_transient_errors: Consecutive polling errors tolerated while waiting.
    :param max_cost_usd: Budget in USD (templated): when the estimated cost's upper bound
        (exact input tokens, output bound, batch prices) exceeds it, fail before anything is
        uploaded. ``None`` (default): no guard. The estimate is logged and in the manifest either way.
    :param default_output_tokens: Output bound of a request that sets no ``max_tokens`` /
        ``max_completion_tokens`` / ``max_output_tokens`` (default: the model's maximum output).
    :param prices: Price overrides for the estimate, ``{"model-prefix": {"input",
        "cached_input", "output"}}`` in USD per 1M tokens at the batch rate.
    :param check_destination: Before uploading, write and delete a probe object at the
        ``destination`` of each ``OpenAIBatchFetchOperator`` fed by this task's output, and fail
        if it cannot be written (default True; see :mod:`airflow_batch_provider.destination_probe`).
    """

    template_fields: Sequence[str] = (
        "input_path",
        "requests",
        "endpoint",
        "conn_id",
        "metadata",
        "shard_limits",
        "max_cost_usd",
    )
    template_fields_renderers = {"metadata": "json"}
    ui_color = "#d5f5e3"
    operator_extra_links = batch_links()

    def __init__(
        self,
        *,
        input_path: str | ObjectStoragePath | None = None,
        requests: Any = None,
        request_template: RequestTemplate | None = None,
        custom_id_field: str | None = None,
        endpoint: str | None = None,
        conn_id: str = OpenAIBatchHook.default_conn_name,
        metadata: Mapping[str, Any] | None = None,
        completion_window: str = "24h",
        output_expires_after: int | None = None,
        shard_limits: ShardLimits | Mapping[str, int] | None = None,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        timeout: float | timedelta | None = None,
        cancel_on_kill: bool = False,
        cancel_on_timeout: bool = True,
        fail_on_expired: bool = True,
        fail_on_cancelled: bool = True,
        on_input_change: Literal["cancel_and_resubmit", "resubmit", "fail"] = "cancel_and_resubmit",
        max_transient_errors: int = 10,
        max_cost_usd: float | str | None = None,
        default_output_tokens: int | None = None,
        prices: Mapping[str, Mapping[str, float]] | None = None,
        check_destination: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_submit_arguments(
            input_path=input_path,
            requests=requests,
            request_template=request_template,
            custom_id_field=custom_id_field,
            endpoint=endpoint,
        )
        if on_input_change not in INPUT_CHANGE_POLICIES:
            raise ValueError(
                f"on_input_change must be one of {INPUT_CHANGE_POLICIES}, got {on_input_change!r}"
            )
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ValueError("poll_interval must be > 0 and max_poll_interval >= poll_interval")
        self.input_path = input_path
        self.requests = requests
        self.request_template = request_template
        self.custom_id_field = custom_id_field
        self.endpoint = endpoint
        self.conn_id = conn_id
        self.metadata = metadata
        self.completion_window = completion_window
        self.output_expires_after = output_expires_after
        self.shard_limits = shard_limits
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.timeout = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        self.cancel_on_kill = cancel_on_kill
        self.cancel_on_timeout = cancel_on_timeout
        self.fail_on_expired = fail_on_expired
        self.fail_on_cancelled = fail_on_cancelled
        self.on_input_change = on_input_change
        self.max_transient_errors = max_transient_errors
        self.max_cost_usd = max_cost_usd
        if default_output_tokens is not None and (
            type(default_output_tokens) is not int or default_output_tokens < 0
        ):
            raise ValueError(
                f"default_output_tokens must be a non-negative integer, got {default_output_tokens!r}"
            )
        self.default_output_tokens = default_output_tokens
        self.prices = prices
        self.check_destination = check_destination
        self._live_batch_ids: list[str] = []
        # Console URLs of this execute, read by the extra links in the same process;
        # None (a resumed instance) makes them read the XCom instead.
        self._batch_link_urls: list[str] | None = None

    # ---- execute ----------------------------------------------------------------------

    @property
    def hook(self) -> OpenAIBatchHook:
        return OpenAIBatchHook(conn_id=self.conn_id)

    def _limits(self) -> ShardLimits:
        if isinstance(self.shard_limits, ShardLimits):
            return self.shard_limits
        # Templated limits ("{{ params.max_requests }}") render as strings unless the DAG
        # renders native objects: accept digit strings, ShardLimits rejects anything else.
        fields = {
            name: int(value) if isinstance(value, str) and value.strip().isdigit() else value
            for name, value in dict(self.shard_limits or {}).items()
        }
        return ShardLimits(**fields)

    def execute(self, context: Context) -> SubmitManifest:
        try:
            return self._execute(context)
        except BatchProviderError as err:
            persist_failure(context, err)  # the task tab shows why (problems, the service's error)
            raise

    def _execute(self, context: Context) -> SubmitManifest:
        ti = context["ti"]
        identity = task_identity(ti)
        limits = self._limits()
        self._batch_link_urls = []  # nothing submitted yet: no link, and no XCom lookup for one
        # Fail on bad metadata or a bad budget before reading or uploading anything.
        batch_metadata(identity, "0" * 16, 0, 1, self.metadata)
        budget = parse_budget(self.max_cost_usd)
        if self.check_destination:  # results that cannot land must not be paid for
            check_fetch_destinations(self, context)

        hook = self.hook
        with self._input() as (path, input_uri, input_conn_id, default_endpoint):
            prepared = prepare_input(
                path,
                endpoint=self.endpoint or default_endpoint,
                limits=limits,
                # Azure OpenAI also takes its unversioned urls (/chat/completions); OpenAI does not.
                allow_unversioned_urls=hook.settings.azure,
                invalid=lambda report: (
                    f"The batch input is invalid, so nothing was uploaded or created "
                    f"({plural(report.problem_count, 'problem')}); fix these lines:\n{report.format()}"
                ),
                # A line must fit one shard; longer ones are reported, never held whole in memory.
                max_line_bytes=min(MAX_LINE_BYTES, limits.max_bytes),
                source=input_uri or "requests",  # never the name of the records' temp file
            )
            report, shards, fingerprint = prepared.report, prepared.shards, prepared.fingerprint
            self.log.info(
                "Input %s: %s, %s, model %s -> %s; identity %s, fingerprint %s",
                input_uri or "(records)",
                plural(report.request_count, "request"),
                plural(report.byte_count, "byte"),
                report.model,
                plural(len(shards), "shard"),
                identity.key,
                fingerprint,
            )
            estimate = estimate_file(
                path, default_output_tokens=self.default_output_tokens, prices=self.prices, shards=shards
            )
            self.log.info("Estimate: %s", estimate.summary())
            check_budget(estimate, budget)  # before any upload: a failed guard costs nothing
            batches = submit_shards(
                hook,
                path,
                prepared,
                identity,
                horizon=run_horizon(context),
                metadata=self.metadata,
                on_input_change=self.on_input_change,
                completion_window=self.completion_window,
                output_expires_after=self.output_expires_after,
                log=self.log,
            )

        manifest = build_submit_manifest(
            conn_id=self.conn_id,
            endpoint=prepared.endpoint,
            model=report.model,
            fingerprint=fingerprint,
            identity=identity,
            input_uri=input_uri,
            input_conn_id=input_conn_id,
            shards=shards,
            batches=batches,
        )
        manifest["estimate"] = {**estimate.to_dict(), "max_cost_usd": budget}
        # Persist links before waiting: the UI shows them during a wait of hours.
        self._batch_link_urls = persist_batch_links(context, hook, manifest["batch_ids"])
        summaries = [summarize_batch(b) for b in batches]
        if not self.wait_for_completion:
            manifest["batches"] = summaries
            self._lineage_manifest = manifest
            return manifest
        if all(BatchStatus.is_terminal(s["status"]) for s in summaries):
            self.log.info("Every batch is already terminal: no wait.")
            return self._complete(manifest, {"status": "success", "batches": summaries})

        deadline = deadline_from(batches, self.timeout, now=time.time())
        if self.deferrable:
            # Also in XCom (kept across a deferral, cleared on retry): resuming needs it even
            # where next_kwargs come back with the event only (dag.test() in Airflow 3.3).
            ti.xcom_push(key=MANIFEST_XCOM_KEY, value=manifest)
            from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger

            self.defer(
                trigger=OpenAIBatchTrigger(
                    conn_id=self.conn_id,
                    batch_ids=manifest["batch_ids"],
                    poll_interval=self.poll_interval,
                    max_poll_interval=self.max_poll_interval,
                    deadline=deadline,
                    max_transient_errors=self.max_transient_errors,
                    cancel_on_kill=self.cancel_on_kill,
                ),
                method_name="execute_complete",
                # Everything execute_complete needs travels here, not on self.
                kwargs={"manifest": manifest},
                # A safety net behind the trigger's own deadline, which fires first.
                timeout=None
                if deadline is None
                else timedelta(seconds=max(deadline - time.time(), 0) + self.max_poll_interval + 120),
            )
        self._live_batch_ids = list(manifest["batch_ids"])
        event = self._wait_sync(hook, manifest["batch_ids"], deadline)
        return self._complete(manifest, event)

    def execute_complete(
        self, context: Context, event: WaitEvent | None = None, manifest: SubmitManifest | None = None
    ) -> SubmitManifest:
        """Resume after the trigger fired.

        A fresh operator instance: everything comes from the method kwargs, or from the
        manifest XCom pushed before deferring, never from attributes set in ``execute``.
        """
        try:
            if manifest is None:
                ti = context["ti"]
                manifest = ti.xcom_pull(task_ids=ti.task_id, key=MANIFEST_XCOM_KEY, map_indexes=ti.map_index)
            if not manifest:
                raise BatchProviderError(
                    "The task resumed without its manifest (neither in the resume kwargs nor in XCom "
                    f"{MANIFEST_XCOM_KEY!r}); clear the task: it re-attaches to its batches."
                )
            return self._complete(manifest, event)
        except BatchProviderError as err:
            persist_failure(context, err)
            raise

    def on_kill(self) -> None:
        """Cancel the batches of a synchronous wait when asked to (a deferred wait: the trigger does)."""
        if not (self.cancel_on_kill and self._live_batch_ids):
            return
        self._cancel(self.hook, self._live_batch_ids, reason="the task was killed (cancel_on_kill=True)")

    # ---- input --------------------------------------------------------------------------

    @contextmanager
    def _input(self) -> Iterator[tuple[Any, str | None, str | None, str | None]]:
        """Yield ``(path, input_uri, its storage connection, endpoint implied by the template)``;
        records go to a temp file.

        ``input_uri`` is what may be logged and recorded (``storage.public_uri``): without the
        query a presigned URL carries its signature in, nor user info.
        """
        template_endpoint = getattr(self.request_template, "endpoint", None)
        if self.input_path is not None:
            from airflow_batch_provider.storage import conn_id_of, uri_of

            path = open_input(self.input_path)
            yield path, uri_of(path), conn_id_of(path), template_endpoint
            return
        from pathlib import Path

        fd, name = tempfile.mkstemp(prefix="openai-batch-", suffix=".jsonl")
        try:
            with os.fdopen(fd, "wb") as out:
                for line in self._request_lines():
                    out.write(line)
            yield Path(name), None, None, template_endpoint
        finally:
            os.unlink(name)

    def _request_lines(self) -> Iterable[bytes]:
        records = self.requests
        if records is None or isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Iterable):
            raise BatchFileError(
                f"requests must be a list of records or request lines, got {type(records).__name__}; "
                "a decorated function must return the whole list."
            )
        if self.request_template is not None:
            return build_request_lines(records, self.request_template, self.custom_id_field)
        return (_as_line(r, i) for i, r in enumerate(records))

    def _cancel(self, hook: OpenAIBatchHook, batch_ids: Iterable[str], *, reason: str) -> None:
        cancel_batches(hook, batch_ids, reason=reason, log=self.log)

    # ---- wait and complete ------------------------------------------------------------

    def _wait_sync(
        self, hook: OpenAIBatchHook, batch_ids: Sequence[str], deadline: float | None
    ) -> WaitEvent:
        """Poll in the worker until every batch is terminal; return an event shaped like the trigger's.

        The trigger's :class:`~airflow_batch_provider.waiting.policy.WaitPolicy` decides the delays.
        """
        latest: dict[str, BatchSummary] = {}
        policy = WaitPolicy(
            self.poll_interval,
            self.max_poll_interval,
            max_transient_errors=self.max_transient_errors,
            deadline=deadline,
        )
        seen = None
        while True:
            failure: BaseException | None = None
            try:
                for batch_id in batch_ids:
                    if batch_id not in latest or not BatchStatus.is_terminal(latest[batch_id]["status"]):
                        latest[batch_id] = summarize_batch(hook.get_batch(batch_id))
            except BatchAuthError as err:
                return _error_event("auth", str(err), latest)
            except BatchNotFoundError as err:
                return _error_event("not_found", str(err), latest)
            except Exception as err:
                if not is_transient_error(err):  # a 400 or a bug: polling again will not fix it
                    raise
                failure = err
            delay: float | None = None
            if failure is not None:
                # Transient: the hook already retried with backoff; tolerate a few more rounds.
                delay = policy.after_transient_error(retry_after(failure))
                self.log.warning(
                    "Polling failed (%d/%d): %s", policy.failed_rounds, self.max_transient_errors, failure
                )
                if delay is None:
                    return _error_event("polling_error", f"polling kept failing: {failure}", latest)
            summaries = [latest[b] for b in batch_ids if b in latest]
            if len(summaries) == len(batch_ids) and all(
                BatchStatus.is_terminal(s["status"]) for s in summaries
            ):
                return {"status": "success", "batches": summaries}
            if delay is None:  # answered
                progress = (sorted((s["id"], s["status"]) for s in summaries), totals(summaries))
                changed = progress != seen
                if changed:
                    seen = progress
                    counts = progress[1]
                    self.log.info(
                        "Waiting for %s: %s; %d completed, %d failed of %d requests",
                        plural(len(batch_ids), "batch", "batches"),
                        ", ".join(f"{b}={s}" for b, s in progress[0]),
                        counts["completed"],
                        counts["failed"],
                        counts["total"],
                    )
                delay = policy.after_poll(changed=changed)
            now = time.time()
            if policy.expired(now):
                return _error_event(
                    "timeout",
                    f"the wall-clock budget of {self.timeout}s ended before every batch finished",
                    latest,
                )
            time.sleep(policy.sleep_for(policy.jittered(delay), now))

    def _complete(self, manifest: SubmitManifest, event: Mapping[str, Any] | None) -> SubmitManifest:
        try:
            summaries = resolve_event(
                event,
                batch_ids=manifest["batch_ids"],
                fail_on_expired=self.fail_on_expired,
                fail_on_cancelled=self.fail_on_cancelled,
                shards=manifest.get("shards"),
            )
        except BatchTimeoutError as err:
            summaries = getattr(err, "batches", None) or [{"id": i} for i in manifest["batch_ids"]]
            live = [b for b in summaries if not BatchStatus.is_terminal(str(b.get("status")))]
            where = ", ".join(f"{b['id']} ({b.get('status', 'unknown')})" for b in live) or "none"
            head = (
                f"The wall-clock budget of {self.timeout}s (counted from the first batch's creation) "
                f"ended before every batch finished; unfinished: {where}."
            )
            if self.cancel_on_timeout and live:
                self._cancel(self.hook, [b["id"] for b in live], reason="the timeout budget ended")
                raise BatchTimeoutError(
                    f"{head} They were cancelled (cancel_on_timeout=True); their partial results stay "
                    "fetchable. Raise timeout and clear the task to submit again."
                ) from err
            raise BatchTimeoutError(
                f"{head} They keep running and billing (cancel_on_timeout=False). A retry re-attaches "
                "to them with the same budget: raise timeout, then clear the task to wait longer."
            ) from err
        finally:
            self._live_batch_ids = []
        manifest = cast(SubmitManifest, {**manifest, "batches": summaries})
        counts = totals(summaries)
        self.log.info(
            "Done: %s; %d of %d requests completed, %d failed.",
            plural(len(summaries), "batch", "batches"),
            counts["completed"],
            counts["total"],
            counts["failed"],
        )
        self._lineage_manifest = manifest
        return manifest

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The input JSONL as input dataset and a run facet (batch ids, endpoint, model, counts)."""
        from airflow.providers.openlineage.extractors import OperatorLineage

        manifest = getattr(self, "_lineage_manifest", None)
        return submit_lineage(manifest) if manifest else OperatorLineage()


def _error_event(reason: str, message: str, latest: Mapping[str, BatchSummary]) -> WaitEvent:
    return {"status": "error", "reason": reason, "message": message, "batches": list(latest.values())}


def _as_line(record: Any, index: int) -> bytes:
    """A ready request line from a dict, str or bytes (validated later with the whole file)."""
    if isinstance(record, bytes):
        raw = record
    elif isinstance(record, str):
        raw = record.encode()
    elif isinstance(record, Mapping):
        if message := record_without_template(record, index):
            raise BatchFileError(message)
        try:
            raw = json.dumps(record, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as err:
            raise BatchFileError(f"request {index} cannot be written as JSON: {err}") from err
    else:
        raise BatchFileError(
            f"request {index} is a {type(record).__name__}: without request_template each request must "
            "be a request line (dict with custom_id, method, url, body, or its JSON text)."
        )
    raw = raw.rstrip(b"\r\n")
    if b"\n" in raw:
        raise BatchFileError(f"request {index} spans several lines; a request line is one line of JSON.")
    return raw + b"\n"
