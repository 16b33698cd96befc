"""System-test DAG: submit a JSONL file as a batch (deferred), then fetch and land the results.

Everything a drill varies comes from the run's conf (``params``): the input file, the
``openai`` connection (the drill's emulator), the destination folder, and
``kill_marker``: when set and that file does not exist yet, the submit task's process
SIGKILLs itself right after the service created its batch (before the task could record
anything), writing the batch id to the marker first. The retry must re-attach. With
``kill_hold`` the task instead waits there, for the test to kill its whole worker
(``make stack-test`` kills the Celery worker).
"""

from __future__ import annotations

import os
import signal
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from airflow.sdk import Param, dag

from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator


class _KillAfterCreateHook(OpenAIBatchHook):
    """The real hook; ``create_batch`` ends the process once the batch exists (first try only)."""

    def __init__(self, kill_marker: str | None, kill_hold: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kill_marker, self.kill_hold = kill_marker, kill_hold

    def create_batch(self, *args: Any, **kwargs: Any) -> Any:
        batch = super().create_batch(*args, **kwargs)
        if self.kill_marker and not os.path.exists(self.kill_marker):
            Path(self.kill_marker).write_text(batch.id)
            if self.kill_hold:  # the test kills the worker; never outlive it (or 5 minutes)
                parent, until = os.getppid(), time.monotonic() + 300
                while os.getppid() == parent and time.monotonic() < until:
                    time.sleep(0.5)
            os.kill(os.getpid(), signal.SIGKILL)  # as an OOM kill or a lost node would
        return batch


class DrillSubmitOperator(OpenAIBatchSubmitOperator):
    """The submit operator with a kill point after ``create_batch`` (see the module docstring)."""

    def execute(self, context: Any) -> Any:
        params = context["params"] or {}
        self._kill_marker = params.get("kill_marker") or None
        self._kill_hold = bool(params.get("kill_hold"))
        return super().execute(context)

    @property
    def hook(self) -> OpenAIBatchHook:
        return _KillAfterCreateHook(
            getattr(self, "_kill_marker", None), getattr(self, "_kill_hold", False), conn_id=self.conn_id
        )


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={
        "input_path": Param("", type="string"),
        "conn_id": Param("openai_drill", type="string"),
        "destination": Param("", type="string"),
        "kill_marker": Param(None, type=["null", "string"]),
        "kill_hold": Param(False, type="boolean"),
    },
    tags=["system-test"],
)
def system_batch_drill():
    submit = DrillSubmitOperator(
        task_id="submit",
        input_path="{{ params.input_path }}",
        conn_id="{{ params.conn_id }}",
        deferrable=True,
        poll_interval=1,
        max_poll_interval=2,
        timeout=900,  # the deadline every drill checks: created_at + 900 s
        fail_on_expired=False,  # an expired batch's partial results are fetched, the rest resubmitted
        # A retry must re-attach, never pay twice. Two, because Airflow 3.3 can fail a task that
        # resumes quickly after deferring (apache/airflow#72716): the drills survive it too.
        retries=2,
        retry_delay=timedelta(seconds=1),
    )
    OpenAIBatchFetchOperator(
        task_id="fetch",
        batches=submit.output,
        destination="{{ params.destination }}",
        resubmit=True,
        max_resubmits=4,
        poll_interval=1,
        max_poll_interval=2,
        retries=2,
        retry_delay=timedelta(seconds=5),  # the download drill looks at the destination meanwhile
    )


system_batch_drill()
