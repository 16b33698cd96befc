"""OpenAIBatchSensor: wait for existing OpenAI batches, in the triggerer or a worker.

The same completion semantics as the submit operator
(:mod:`airflow_batch_provider.waiting.outcome`) in all three modes: deferrable (the
:class:`~airflow_batch_provider.triggers.openai_batch.OpenAIBatchTrigger`), poke
and reschedule.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue

from airflow_batch_provider._compat import AirflowSensorTimeout, conf
from airflow_batch_provider.batch_file.lines import plural
from airflow_batch_provider.exceptions import BatchServiceError, BatchTimeoutError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook, is_transient_error
from airflow_batch_provider.payloads import BatchSummary, WaitEvent
from airflow_batch_provider.results.manifest import normalize_batches
from airflow_batch_provider.storage import public_uri
from airflow_batch_provider.triggers.openai_batch import DEADLINE_GRACE, OpenAIBatchTrigger
from airflow_batch_provider.waiting.outcome import check_batches, resolve_event, totals
from airflow_batch_provider.waiting.policy import WaitPolicy
from airflow_batch_provider.waiting.status import BatchStatus, summarize_batch
from airflow_batch_provider.waiting.transient import retry_after

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Task state store key of the failed pokes in a row (reschedule mode).
_TRANSIENT_ERRORS_KEY = "openai_batch_sensor.transient_errors"


class OpenAIBatchSensor(BaseSensorOperator):
    """Wait until every given OpenAI batch is terminal, then succeed or fail as the submit operator would.

    Succeeds when every batch ``completed`` with at least one request that did not fail;
    fails with the service's validation errors (and their lines) for a ``failed`` batch,
    with the counts when every request of a batch failed, and, as the flags say, for
    ``expired`` or ``cancelled`` batches (their partial results stay fetchable either way).
    A timeout raises ``AirflowSensorTimeout`` (so ``soft_fail`` applies); 401/403 and 404
    fail at once.

    Returns (XCom) the manifest it was given, or ``{"conn_id", "batch_ids"}``, with
    ``"batches"`` set to the batch summaries: the fetch operator takes it as it is.

    :param batch_ids: What to wait for (templated): the submit operator's manifest
        (``submit.output``), a batch id, a list of ids, or any of these as JSON.
    :param conn_id: The ``openai`` connection; default: the manifest's, else ``openai_default``.
    :param fail_on_expired: Fail when a batch expired (default True).
    :param fail_on_cancelled: Fail when a batch was cancelled (default True).
    :param deferrable: Wait in the triggerer (default: ``[operators] default_deferrable``).
        Otherwise ``mode`` (``poke`` or ``reschedule``) applies.
    :param poke_interval: Seconds between polls (the trigger's ``poll_interval``).
    :param max_poll_interval: Longest interval the deferred wait backs off to while nothing
        changes.
    :param max_transient_errors: Polls in a row that may fail with 429/5xx/network errors
        before the sensor fails, in every mode; in reschedule mode the count is kept across
        reschedules in the task state store (Airflow < 3.3, without one: a failed poke is
        retried in the same worker run, ``poke_interval`` apart).
    :param cancel_on_kill: Cancel the batches when a user kills the deferred task
        (Airflow 3.3+). The sensor does not own the batches: default False.
    :param timeout: Seconds to wait in all (``BaseSensorOperator``); the deferred wait
        turns it into the trigger's absolute deadline.
    """

    template_fields: Sequence[str] = ("batch_ids", "conn_id")
    template_fields_renderers = {"batch_ids": "json"}
    ui_color = "#e8f4ea"

    def __init__(
        self,
        *,
        batch_ids: Any,
        conn_id: str | None = None,
        fail_on_expired: bool = True,
        fail_on_cancelled: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poke_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        max_transient_errors: int = 10,
        cancel_on_kill: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(poke_interval=poke_interval, **kwargs)
        self.batch_ids = batch_ids
        self.conn_id = conn_id
        self.fail_on_expired = fail_on_expired
        self.fail_on_cancelled = fail_on_cancelled
        self.deferrable = deferrable
        self.max_poll_interval = max_poll_interval
        self.max_transient_errors = max_transient_errors
        self.cancel_on_kill = cancel_on_kill
        self._transient_errors = 0

    # -- what to wait for (read from the rendered fields every time: nothing set in
    #    execute() survives a deferral) ------------------------------------------------------

    def _source(self) -> dict[str, Any]:
        source = normalize_batches(self.batch_ids, argument="batch_ids")  # ids checked here
        value = self.batch_ids
        source["manifest"] = dict(value) if isinstance(value, Mapping) else None
        source["conn_id"] = self.conn_id or source.get("conn_id") or OpenAIBatchHook.default_conn_name
        return source

    def _result(self, source: dict[str, Any], summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        base = dict(source["manifest"] or {})
        if base.get("input_uri"):  # a manifest recorded before URIs lost their query
            base["input_uri"] = public_uri(base["input_uri"])
        base.update({"conn_id": source["conn_id"], "batch_ids": source["batch_ids"], "batches": summaries})
        t = totals(summaries)
        self.log.info(
            "%s done: %d/%d requests succeeded, %d failed.",
            plural(len(summaries), "batch", "batches"),
            t["completed"],
            t["total"],
            t["failed"],
        )
        return base

    def _check(self, source: dict[str, Any], summaries: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return check_batches(
            summaries,
            fail_on_expired=self.fail_on_expired,
            fail_on_cancelled=self.fail_on_cancelled,
            shards=source["shards"],
        )

    # -- deferrable ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)  # poke / reschedule, through poke()
        source = self._source()
        # Already finished (or a bad id / key): answer now, without a trip to the triggerer.
        summaries = self._read(source)
        if all(BatchStatus.is_terminal(s["status"]) for s in summaries):
            return self._result(source, self._check(source, summaries))
        self.defer(
            trigger=OpenAIBatchTrigger(
                conn_id=source["conn_id"],
                batch_ids=source["batch_ids"],
                poll_interval=self.poke_interval,
                max_poll_interval=self.max_poll_interval,
                deadline=time.time() + self.timeout,
                max_transient_errors=self.max_transient_errors,
                cancel_on_kill=self.cancel_on_kill,
            ),
            method_name="execute_complete",
            # A safety net behind the trigger's own deadline, which fires first.
            timeout=timedelta(seconds=self.timeout + DEADLINE_GRACE + 60),
        )

    def execute_complete(self, context: Context, event: WaitEvent | None = None) -> Any:
        """Resume after the trigger fired: apply the completion semantics to its event."""
        source = self._source()
        try:
            summaries = resolve_event(
                event,
                batch_ids=source["batch_ids"],
                fail_on_expired=self.fail_on_expired,
                fail_on_cancelled=self.fail_on_cancelled,
                shards=source["shards"],
            )
        except BatchTimeoutError as exc:
            raise AirflowSensorTimeout(str(exc)) from exc
        return self._result(source, summaries)

    # -- poke / reschedule -----------------------------------------------------------------------

    def poke(self, context: Context) -> bool | PokeReturnValue:
        source = self._source()
        while True:
            try:
                summaries = self._read(source)
                break
            except BatchServiceError as exc:
                if not is_transient_error(exc):  # e.g. no quota left: waiting will not fix it
                    raise
                # The hook already retried; more failed pokes in a row are tolerated up to the cap.
                policy = self._wait_policy(failed_rounds=self._count_transient_error(context) - 1)
                delay = policy.after_transient_error(retry_after(exc))
                self._transient_errors = policy.failed_rounds
                if delay is None:
                    raise
                self.log.warning(
                    "Reading the batches failed (%d/%d in a row), trying again next poke: %s",
                    self._transient_errors,
                    self.max_transient_errors,
                    exc,
                )
                if not (self.reschedule and context.get("task_state_store") is None):
                    return False
                # Reschedule mode without a task state store (Airflow < 3.3) cannot carry the
                # count to the next run: keep the streak in this run, waiting as the policy says.
                time.sleep(policy.jittered(delay))
        self._transient_errors = 0
        pending = [s for s in summaries if not BatchStatus.is_terminal(s["status"])]
        t = totals(summaries)
        self.log.info(
            "%d/%s finished; %d/%d requests done, %d failed%s",
            len(summaries) - len(pending),
            plural(len(summaries), "batch", "batches"),
            t["completed"] + t["failed"],
            t["total"],
            t["failed"],
            f"; waiting for {', '.join(s['id'] for s in pending)}" if pending else "",
        )
        if pending:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._result(source, self._check(source, summaries)))

    def _wait_policy(self, failed_rounds: int = 0) -> WaitPolicy:
        """The trigger's wait policy, for the pokes (their interval is Airflow's ``poke_interval``)."""
        return WaitPolicy(
            self.poke_interval,
            self.max_poll_interval,
            max_transient_errors=self.max_transient_errors,
            failed_rounds=failed_rounds,
        )

    def _count_transient_error(self, context: Context) -> int:
        """This failed poke's place in the current run of failures, counted across reschedules.

        In reschedule mode every poke is a fresh task run (XCom is cleared between them), so
        the count lives in the task state store (Airflow 3.3+), with the try and the
        reschedule it was made in: a failure in the very next reschedule of the same try
        continues the run; anything else (a poke that succeeded in between) starts anew.
        """
        store = context.get("task_state_store") if self.reschedule else None
        if store is None:
            return self._transient_errors + 1
        ti = context["ti"]
        reschedule = int(context.get("task_reschedule_count") or 0)
        previous: Any = store.get(_TRANSIENT_ERRORS_KEY)
        follows = isinstance(previous, dict) and (
            previous.get("try") == ti.try_number and previous.get("reschedule") == reschedule - 1
        )
        errors = int(previous.get("errors") or 0) + 1 if follows else 1
        store.set(_TRANSIENT_ERRORS_KEY, {"try": ti.try_number, "reschedule": reschedule, "errors": errors})
        return errors

    def _read(self, source: dict[str, Any]) -> list[BatchSummary]:
        hook = OpenAIBatchHook(conn_id=source["conn_id"])
        return [summarize_batch(hook.get_batch(bid)) for bid in source["batch_ids"]]
