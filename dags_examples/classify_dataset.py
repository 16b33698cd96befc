"""Classify a CSV of support tickets into labels with JSON-schema structured outputs.

    CSV rows -> requests.jsonl in object storage (streamed)
      -> submit (split into batches of at most `max_requests_per_batch`)
      -> fetch: ONE merged results.jsonl for all batches -> labels.csv + summary.json

Trigger it with a lower ``max_requests_per_batch`` (e.g. 400) to see one file run as
several batches; the service's own limit is 50,000 requests per batch.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from _lib import classification, storage
from airflow.sdk import Param, dag, task

from airflow_batch_provider.batch_file import ChatTemplate, build_request_lines
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
from airflow_batch_provider.storage import write_atomically

MODEL = "gpt-4o-mini"
TICKETS_CSV = storage.DATA_DIR / "tickets.csv"
TEMPLATE = ChatTemplate(
    MODEL,
    messages=[
        {"role": "system", "content": classification.SYSTEM_PROMPT},
        {"role": "user", "content": "Ticket via {channel} about {product}: {text}"},
    ],
    # Structured outputs: the answer must match this JSON schema.
    body={"response_format": classification.RESPONSE_FORMAT, "temperature": 0},
)


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={
        "max_requests_per_batch": Param(50_000, type="integer", minimum=1, maximum=50_000),
        "limit": Param(None, type=["null", "integer"], description="Only the first N rows"),
    },
    # Retrying is safe: submit and fetch re-attach to their batches, never paying twice.
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    render_template_as_native_obj=True,  # "{{ params.max_requests_per_batch }}" renders as an int
    user_defined_filters={"slug": storage.slug},
    tags=["openai-batch", "example"],
    doc_md=__doc__,
)
def classify_dataset():
    @task
    def write_requests(params: dict | None = None, run_id: str | None = None) -> str:
        """Stream the CSV rows into a request file: memory does not grow with the CSV."""
        limit = (params or {}).get("limit")
        folder = storage.destination("classify_dataset", storage.slug(str(run_id)))
        target = storage.path(f"{folder}/requests.jsonl")
        with TICKETS_CSV.open(encoding="utf-8", newline="") as csv_file:
            rows = classification.read_rows(csv_file)
            if limit is not None:
                rows = (row for i, row in enumerate(rows) if i < limit)
            lines = build_request_lines(rows, TEMPLATE, custom_id_field="ticket_id")
            landed = write_atomically(target, lines)
        print(f"wrote {landed.lines} requests ({landed.bytes} bytes) to {landed.uri}")
        return str(target)  # keeps the storage connection (s3://conn_id@bucket/...)

    submit = OpenAIBatchSubmitOperator(
        task_id="classify",
        input_path=write_requests(),
        shard_limits={"max_requests": "{{ params.max_requests_per_batch }}"},
        deferrable=True,
        poll_interval=storage.poll_interval(),
    )
    fetch = OpenAIBatchFetchOperator(
        task_id="fetch_labels",
        batches=submit.output,  # every shard's batch: joined into one results.jsonl
        destination=storage.destination("classify_dataset", "{{ run_id | slug }}"),
        destination_conn_id=storage.storage_conn_id(),
        poll_interval=storage.poll_interval(),
    )

    @task
    def summarize(fetched: dict) -> dict:
        rows = classification.labelled_rows(storage.iter_jsonl(fetched["results_uri"]))
        text, counts = classification.to_csv(rows)
        folder = fetched["destination"].rstrip("/")
        storage.write_text(f"{folder}/labels.csv", text)
        summary = {
            "rows": sum(counts.values()),
            "labels": dict(sorted(counts.items())),
            "batches": len(fetched["batch_ids"]),
            "cost_usd": fetched.get("cost_usd"),
        }
        storage.write_text(f"{folder}/summary.json", json.dumps(summary, indent=2))
        return summary

    summarize(fetch.output)


classify_dataset()
