"""Nightly eval: ask a model every question of an eval set in one batch, score the answers.

    load the eval set -> @task.openai_batch (submit, wait in the triggerer)
      -> fetch results to <destination>/nightly_eval/<run>/ -> score + report

The report lands beside the results: ``report.md`` (accuracy per category, exact
match and contains), ``accuracy.svg`` (per category, and across past runs) and
``scores.json`` (read back by later runs for the history).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from _lib import evaluation, report, storage
from airflow.sdk import Asset, dag, task

from airflow_batch_provider.batch_file import ChatTemplate
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator

MODEL = "gpt-4o-mini"
EVAL_SET = storage.DATA_DIR / "eval_set.jsonl"
RESULTS_ROOT = storage.destination("nightly_eval")  # one folder per run below it
SYSTEM = "You are a precise assistant. Answer with the answer only, no explanation."


def load_eval_set() -> list[dict]:
    return evaluation.parse_jsonl(EVAL_SET.read_text(encoding="utf-8").splitlines())


@dag(
    schedule="@daily",
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    # Retrying is safe: submit and fetch re-attach to their batches, never paying twice.
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30)},
    user_defined_filters={"slug": storage.slug},  # run ids contain ':' and '+'
    tags=["openai-batch", "example"],
    doc_md=__doc__,
)
def nightly_eval():
    # The function returns the records; the template turns each into a chat request and
    # the task submits them as one batch, then waits (deferred: no worker slot is held).
    @task.openai_batch(
        request_template=ChatTemplate.from_prompt(MODEL, "{question}", system=SYSTEM, temperature=0),
        custom_id_field="id",  # results come back keyed by the eval item id
        deferrable=True,
        poll_interval=storage.poll_interval(),
    )
    def ask_model() -> list[dict]:
        return load_eval_set()

    fetch = OpenAIBatchFetchOperator(
        task_id="fetch_results",
        batches=ask_model(),
        destination=storage.destination("nightly_eval", "{{ run_id | slug }}"),
        destination_conn_id=storage.storage_conn_id(),
        poll_interval=storage.poll_interval(),
        outlets=[Asset("nightly_eval_results")],
    )

    @task
    def score_and_report(fetched: dict, run_id: str | None = None) -> dict:
        results = {line["custom_id"]: line for line in storage.iter_jsonl(fetched["results_uri"])}
        scores = evaluation.score(load_eval_set(), results)
        doc = {
            "run_id": run_id,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "model": fetched.get("model"),
            **scores.to_dict(),
        }
        history = report.history_rows(storage.read_all(RESULTS_ROOT, "scores.json"), doc)

        folder = fetched["destination"].rstrip("/")
        storage.write_text(f"{folder}/scores.json", json.dumps(doc, indent=2))
        storage.write_text(f"{folder}/accuracy.svg", report.chart(doc, history))
        text = report.markdown(
            run_id=str(run_id),
            model=doc["model"],
            scores=doc,
            history=history,
            fetch=fetched,
            items=scores.items,
        )
        storage.write_text(f"{folder}/report.md", text)
        return {"report": f"{folder}/report.md", "overall": doc["overall"]}

    score_and_report(fetch.output)


nightly_eval()
