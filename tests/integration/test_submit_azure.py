"""Submit and fetch on an Azure OpenAI connection (the emulator's ``/openai`` routes, the real
``AzureOpenAI`` clients), with input lines spelled as Azure's docs spell them: ``/chat/completions``.
On a plain ``openai`` connection the same file fails before anything is uploaded."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import openai
import pytest

from airflow_batch_provider.exceptions import BatchFileError
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from tests.integration import _dag_env
from tests.integration._dag_env import chat_lines
from tests.integration._fetch_support import make_context, run_operator

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env

API_VERSION = "2024-10-21"


def azure_lines(n: int) -> str:
    return chat_lines(n).replace('"/v1/chat/completions"', '"/chat/completions"')


@pytest.fixture
def azure_conn(dag_env, monkeypatch: pytest.MonkeyPatch) -> str:
    """An Azure-style ``openai`` connection (the extras select ``AzureOpenAI``) to the emulator."""
    extra = {"azure_endpoint": dag_env.emulator.root_url, "api_version": API_VERSION, "max_retries": 8}
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_AZURE",
        json.dumps({"conn_type": "openai", "password": dag_env.emulator.api_key, "extra": extra}),
    )
    return "openai_azure"


def azure_client(emulator) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emulator.root_url, api_key=emulator.api_key, api_version=API_VERSION
    )


def _dag(
    dag_id: str, input_path: str, out: Path, conn_id: str, submit_extra: str = "", fetch_extra: str = ""
):
    return f"""
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
        submit = OpenAIBatchSubmitOperator(
            task_id="submit", input_path={input_path!r}, conn_id={conn_id!r}, deferrable=True,
            poll_interval=0.1, max_poll_interval=0.3, timeout=60, {submit_extra}
        )
        fetch = OpenAIBatchFetchOperator(
            task_id="fetch", batches=submit.output, destination={str(out)!r},
            poll_interval=0.1, max_poll_interval=0.3, {fetch_extra}
        )
    """


def test_submit_and_fetch_run_a_chat_completions_batch_on_azure(dag_env, azure_conn):
    src = dag_env.data / "azure.jsonl"
    src.write_text(azure_lines(4))
    out = dag_env.data / "out"
    dag = dag_env.write_dag(
        "azure_e2e", _dag("azure_e2e", str(src), out, azure_conn, "endpoint='/chat/completions',")
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    manifest = dag_env.xcom(dr, "submit")
    # The manifest names the canonical endpoint; the service got the lines' own spelling.
    assert manifest["endpoint"] == "/v1/chat/completions" and manifest["conn_id"] == azure_conn
    [batch_id] = manifest["batch_ids"]
    batch = azure_client(dag_env.emulator).batches.retrieve(batch_id)
    assert batch.status == "completed" and batch.endpoint == "/chat/completions"
    assert batch.request_counts is not None and batch.request_counts.completed == 4

    results = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert [r["custom_id"] for r in results] == [f"q-{i}" for i in range(4)]
    assert all(r["status"] == "succeeded" for r in results)
    assert results[0]["response"]["object"] == "chat.completion"
    stats = dag_env.emulator.stats()
    assert stats["files_uploaded"] == 1 and stats["batches_created"] == 1


def test_the_v1_spelling_declared_for_azure_lines_is_the_same_identity(dag_env, azure_conn):
    """``endpoint='/v1/chat/completions'`` with ``/chat/completions`` lines: same fingerprint as the
    unversioned declaration, and the batch still goes out spelled as the lines are."""
    src = dag_env.data / "azure.jsonl"
    src.write_text(azure_lines(2))
    fingerprints = []
    for dag_id, declared in (("azure_v1", "/v1/chat/completions"), ("azure_bare", "/chat/completions")):
        body = _dag(dag_id, str(src), dag_env.data / dag_id, azure_conn, f"endpoint={declared!r},")
        dr = dag_env.run(dag_env.write_dag(dag_id, body))
        assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
        manifest = dag_env.xcom(dr, "submit")
        assert manifest["endpoint"] == "/v1/chat/completions"
        batch = azure_client(dag_env.emulator).batches.retrieve(manifest["batch_ids"][0])
        assert batch.endpoint == "/chat/completions" and batch.status == "completed"
        fingerprints.append(manifest["fingerprint"])
    assert fingerprints[0] == fingerprints[1]


# 20 requests/s and a 0.4 s window: each batch answers a few requests, the rest expire and
# the fetch operator resubmits them, from the original lines, to Azure again. The fetch runs as
# worker + triggerer run it (``run_operator``): dag.test() does not hand a resumed fetch its kwargs.
@pytest.mark.emulator(requests_per_second=20, completion_window_seconds=0.4)
def test_fetch_resubmits_expired_azure_requests_with_the_lines_spelling(dag_env, azure_conn):
    n = 16
    src = dag_env.data / "azure.jsonl"
    src.write_text(azure_lines(n))
    body = _dag("azure_resubmit", str(src), dag_env.data / "unused", azure_conn, "fail_on_expired=False,")
    dag = dag_env.write_dag("azure_resubmit", body)
    dr = dag_env.run(dag.partial_subset(task_ids=["submit"], include_downstream=False))
    submitted = dag_env.xcom(dr, "submit")
    assert submitted["batches"][0]["status"] == "expired", "the window was meant to expire the first batch"

    out = dag_env.data / "out"

    def make() -> OpenAIBatchFetchOperator:
        return OpenAIBatchFetchOperator(
            task_id="fetch", batches=submitted, destination=str(out), resubmit=True, max_resubmits=10,
            poll_interval=0.05, max_poll_interval=0.2,
        )  # fmt: skip

    run_operator(make, make_context())

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"] == {"succeeded": n, "failed": 0, "expired": 0, "cancelled": 0, "missing": 0}
    rounds = manifest["rounds"]
    assert len(rounds) >= 2
    client = azure_client(dag_env.emulator)
    for rnd in rounds[1:]:
        for batch_id in rnd["batch_ids"]:
            batch = client.batches.retrieve(batch_id)
            assert batch.endpoint == "/chat/completions" and batch.status in ("completed", "expired")
            sent = client.files.content(batch.input_file_id).text.splitlines()
            assert sent and all(json.loads(x)["url"] == "/chat/completions" for x in sent)


def test_unversioned_urls_on_a_plain_openai_connection_fail_before_any_upload(dag_env):
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    src = dag_env.data / "azure.jsonl"
    src.write_text(azure_lines(3))
    op = OpenAIBatchSubmitOperator(task_id="submit", input_path=str(src))  # openai_default: plain
    ti = SimpleNamespace(dag_id="d", task_id="submit", run_id="r", map_index=-1)

    with pytest.raises(BatchFileError) as err:
        op.execute({"ti": ti})

    message = str(err.value)
    assert "nothing was uploaded" in message
    assert 'lines 1-3: url is "/chat/completions", Azure OpenAI\'s unversioned spelling: ' in message
    assert 'use "/v1/chat/completions"' in message
    assert err.value.report.problem_count == 3
    stats = dag_env.emulator.stats()
    assert stats["files_uploaded"] == 0 and stats["batches_created"] == 0

    # The same through a DAG run: the task fails, the service saw nothing.
    body = _dag("plain_unversioned", str(src), dag_env.data / "out", "openai_default")
    dr = dag_env.run(dag_env.write_dag("plain_unversioned", body))
    assert dag_env.states(dr)["submit"] == "failed"
    assert dag_env.emulator.stats()["files_uploaded"] == 0
