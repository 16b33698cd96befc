"""Embedding refresh, and a search DAG that runs whenever the vectors change.

``embedding_refresh`` (daily) embeds only the documents whose content changed since the
last run (sha256 of the text, kept beside each vector in ``vectors.jsonl``), then
rewrites ``vectors.jsonl`` and emits the ``help_centre_vectors`` Asset. When nothing
changed it submits nothing and emits nothing.

``embedding_search`` is scheduled on that Asset: it embeds a few saved queries (a
small batch), builds a nearest-neighbour index over the vectors and writes the top
matches of each query to ``answers.md``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from _lib import embeddings, storage
from _lib.nn_index import NearestNeighbourIndex
from airflow.sdk import Asset, Param, dag, task

try:
    from airflow.sdk.exceptions import AirflowSkipException
except ImportError:  # Airflow 3.1: only in airflow.exceptions
    from airflow.exceptions import AirflowSkipException

from airflow_batch_provider.batch_file import EmbeddingTemplate
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

MODEL = "text-embedding-3-small"
DIMENSIONS = 256  # shorter vectors: smaller files, faster search; same model family
TEMPLATE = EmbeddingTemplate(MODEL, input_field="text", dimensions=DIMENSIONS)
VECTORS_URL = storage.destination("embedding_refresh", "vectors.jsonl")
RUNS_URL = storage.destination("embedding_refresh", "runs")  # one folder of batch results per run
VECTORS = Asset(name="help_centre_vectors", uri=VECTORS_URL)
START = datetime(2025, 1, 1, tzinfo=timezone.utc)


# Retrying is safe: submit and fetch re-attach to their batches, never paying twice.
RETRY = {"retries": 1, "retry_delay": timedelta(seconds=30)}


@dag(
    schedule="@daily",
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=RETRY,
    user_defined_filters={"slug": storage.slug},
    tags=["openai-batch", "example"],
    doc_md=__doc__,
)
def embedding_refresh():
    @task
    def scan_documents() -> list[dict]:
        files = sorted(p for p in storage.documents_root().iterdir() if p.name.endswith((".md", ".txt")))
        return [{"doc_id": p.stem, "text": p.read_text()} for p in files]

    @task(multiple_outputs=True)
    def plan(documents: list[dict]) -> dict:
        previous = storage.iter_jsonl(VECTORS_URL)
        todo = embeddings.plan_refresh(documents, previous, model=MODEL, dimensions=DIMENSIONS)
        print(
            f"{len(todo.to_embed)} new or changed, {len(todo.unchanged)} unchanged, "
            f"{len(todo.removed)} removed"
        )
        return {"to_embed": todo.to_embed, "removed": todo.removed, "unchanged": todo.unchanged}

    # Skip the batch when no document changed; `publish` still runs (for removals).
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def anything_to_embed(to_embed: list[dict]) -> bool:
        return bool(to_embed)

    planned = plan(scan_documents())
    embed = OpenAIBatchSubmitOperator(
        task_id="embed",
        requests=planned["to_embed"],
        request_template=TEMPLATE,
        custom_id_field="doc_id",
        deferrable=True,
        poll_interval=storage.poll_interval(),
    )
    fetch = OpenAIBatchFetchOperator(
        task_id="fetch_vectors",
        batches=embed.output,
        destination=RUNS_URL + "/{{ run_id | slug }}",
        destination_conn_id=storage.storage_conn_id(),
        poll_interval=storage.poll_interval(),
    )

    # Emits the Asset event (its outlet) only when it succeeds, i.e. when vectors changed.
    @task(outlets=[VECTORS], trigger_rule="none_failed")
    def publish(planned: dict, run_id: str | None = None) -> dict:
        if not planned["to_embed"] and not planned["removed"]:
            raise AirflowSkipException("No document changed: the vectors are up to date.")
        # What fetch_vectors landed for this run (nothing if only removals).
        results = storage.iter_jsonl(f"{RUNS_URL}/{storage.slug(str(run_id))}/results.jsonl")
        new = embeddings.vectors_from_results(results)
        rows = embeddings.merge_vectors(
            storage.iter_jsonl(VECTORS_URL), planned, new, model=MODEL, dimensions=DIMENSIONS
        )
        storage.write_text(VECTORS_URL, "".join(json.dumps(r) + "\n" for r in rows))
        return {"vectors": len(rows), "embedded": len(new), "removed": len(planned["removed"])}

    anything_to_embed(planned["to_embed"]) >> embed
    fetch >> publish(planned)


DEFAULT_QUERIES = ["my lamp keeps flickering", "how do I get my money back", "connect the lamp to wifi"]


@dag(
    schedule=[VECTORS],
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=RETRY,
    user_defined_filters={"slug": storage.slug},
    tags=["openai-batch", "example"],
    params={"queries": Param(DEFAULT_QUERIES, type="array", description="Questions to search for")},
    doc_md=__doc__,
)
def embedding_search():
    @task
    def saved_queries(params: dict | None = None) -> list[dict]:
        return [{"query_id": f"q{i + 1}", "text": text} for i, text in enumerate((params or {})["queries"])]

    embed = OpenAIBatchSubmitOperator(
        task_id="embed_queries",
        requests=saved_queries(),
        request_template=TEMPLATE,  # same model and size as the documents
        custom_id_field="query_id",
        deferrable=True,
        poll_interval=storage.poll_interval(),
    )
    fetch = OpenAIBatchFetchOperator(
        task_id="fetch_queries",
        batches=embed.output,
        destination=storage.destination("embedding_search", "{{ run_id | slug }}"),
        destination_conn_id=storage.storage_conn_id(),
        poll_interval=storage.poll_interval(),
    )

    @task
    def answer(fetched: dict, params: dict | None = None) -> list[dict]:
        index = NearestNeighbourIndex((r["doc_id"], r["vector"]) for r in storage.iter_jsonl(VECTORS_URL))
        vectors = embeddings.vectors_from_results(storage.iter_jsonl(fetched["results_uri"]))
        texts = {f"q{i + 1}": t for i, t in enumerate((params or {})["queries"])}
        answers = [
            {"query_id": q, "query": texts.get(q), "matches": index.search(v, k=3)}
            for q, v in sorted(vectors.items())
        ]
        folder = fetched["destination"].rstrip("/")
        storage.write_text(f"{folder}/answers.json", json.dumps(answers, indent=2))
        lines = [f"# Search over {len(index)} documents", ""]
        for a in answers:
            hits = ", ".join(f"{doc} ({score:.3f})" for doc, score in a["matches"])
            lines.append(f"- **{a['query']}**: {hits}")
        storage.write_text(f"{folder}/answers.md", "\n".join(lines) + "\n")
        return answers

    answer(fetch.output)


embedding_refresh()
embedding_search()
