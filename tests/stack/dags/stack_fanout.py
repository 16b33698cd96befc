"""Stack-test DAG: ``n`` deferred submit tasks (mapped), each followed by its fetch.

The run's conf names a folder of input files (one small JSONL file per task, written by
the test) and a destination; map index ``i`` submits ``input-<i>.jsonl`` and lands its
results under ``<destination>/<i>/``. Every submit defers, so the two triggerers hold the
batches while they wait.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow.sdk import Param, dag, task

from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={
        "input_dir": Param("", type="string"),
        "conn_id": Param("openai_drill", type="string"),
        "destination": Param("", type="string"),
    },
    max_active_tasks=64,
    tags=["stack-test"],
)
def stack_fanout():
    @task(retries=3, retry_delay=timedelta(seconds=2))
    def inputs(params: dict | None = None) -> list[str]:
        return [str(p) for p in sorted(Path(params["input_dir"]).glob("input-*.jsonl"))]

    submit = OpenAIBatchSubmitOperator.partial(
        task_id="submit",
        conn_id="{{ params.conn_id }}",
        deferrable=True,
        poll_interval=1,
        max_poll_interval=3,
        timeout=1800,
        # A retry re-attaches (never pays twice); Airflow 3.3 can fail a task that resumes
        # quickly after deferring (apache/airflow#72716), and a drill kills its worker.
        retries=3,
        retry_delay=timedelta(seconds=2),
    ).expand(input_path=inputs())
    OpenAIBatchFetchOperator.partial(
        task_id="fetch",
        destination="{{ params.destination }}/{{ ti.map_index }}",
        poll_interval=1,
        max_poll_interval=3,
        retries=3,
        retry_delay=timedelta(seconds=2),
    ).expand(batches=submit.output)


stack_fanout()
