"""The budget guard (``max_cost_usd``) in real DAGs against the emulator, and the estimate it leaves
in the submit manifest, the fetch manifest (beside the actual usage) and the fetch's resubmission rounds."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import tiktoken

from airflow_batch_provider.exceptions import BudgetExceededError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
from tests.integration import _dag_env
from tests.integration._dag_env import chat_lines
from tests.integration._fetch_support import REJECT, make_context, request_lines, run_operator, submit_batch

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env


def _expected_input_tokens(text: str) -> int:
    """Direct tiktoken, the cookbook's way: 3 per message + role + content, 3 to prime the reply."""
    enc = tiktoken.get_encoding("o200k_base")
    total = 0
    for line in text.splitlines():
        [message] = json.loads(line)["body"]["messages"]
        total += 3 + len(enc.encode(message["role"])) + len(enc.encode(message["content"])) + 3
    return total


def _budget_dag(dag_id: str, input_path: str, budget: str, out: str) -> str:
    return f"""
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    params = {{"budget": {budget!r}}}
    with DAG({dag_id!r}, schedule=None, params=params, default_args={{"retries": 0}}) as dag:
        submit = OpenAIBatchSubmitOperator(
            task_id="submit", input_path={input_path!r}, deferrable=True, poll_interval=0.1,
            max_poll_interval=0.5, timeout=60, max_cost_usd="{{{{ params.budget }}}}",
        )
        fetch = OpenAIBatchFetchOperator(
            task_id="fetch", batches=submit.output, destination={out!r}, poll_interval=0.1,
            max_poll_interval=0.5,
        )
    """


def test_a_budget_below_the_estimate_fails_before_the_service_sees_an_upload(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(5))  # no max_tokens: bounded by gpt-4o-mini's 16,384 output tokens each
    dag = dag_env.write_dag(
        "budget_low", _budget_dag("budget_low", str(src), "0.01", str(dag_env.data / "out"))
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "failed", "fetch": "upstream_failed"}
    stats = dag_env.emulator.stats()
    assert stats["files_uploaded"] == 0 and stats["batches_created"] == 0


def test_the_guard_message_gives_estimate_budget_and_contributors(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(5))
    op = OpenAIBatchSubmitOperator(task_id="submit", input_path=str(src), max_cost_usd="0.01")
    ti = SimpleNamespace(dag_id="d", task_id="submit", run_id="r", map_index=-1)

    with pytest.raises(BudgetExceededError) as err:
        op.execute({"ti": ti})

    text = str(err.value)
    tokens = _expected_input_tokens(chat_lines(5))
    assert "max_cost_usd=0.01 USD" in text and "nothing was uploaded" in text
    assert f"model gpt-4o-mini: 5 requests, {tokens:,} input tokens, output bound 81,920 tokens" in text
    assert "max_completion_tokens" in text  # the fix
    assert dag_env.emulator.stats()["files_uploaded"] == 0


def test_a_budget_above_the_estimate_runs_and_the_fetch_manifest_compares(dag_env):
    text = chat_lines(4)
    src = dag_env.data / "in.jsonl"
    src.write_text(text)
    out = dag_env.data / "out"
    dag = dag_env.write_dag("budget_high", _budget_dag("budget_high", str(src), "5", str(out)))

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    estimate = dag_env.xcom(dr, "submit")["estimate"]
    tokens = _expected_input_tokens(text)
    assert estimate["input_tokens"] == tokens and estimate["exact"] is True
    assert estimate["tokenizer"] == "o200k_base" and estimate["max_cost_usd"] == 5.0
    assert estimate["output_tokens_bound"] == 4 * 16_384
    assert estimate["prices"]["gpt-4o-mini"]["per_1m"] == {
        "input": 0.075,
        "cached_input": 0.0375,
        "output": 0.3,
    }
    assert estimate["cost_low_usd"] == round(tokens * 0.075 / 1e6, 6)
    assert [s["requests"] for s in estimate["shards"]] == [4]

    manifest = json.loads((out / "manifest.json").read_text())
    compared = manifest["estimate"]
    assert compared["estimated"]["input_tokens"] == tokens
    assert compared["estimated"]["cost_high_usd"] == estimate["cost_high_usd"]
    assert compared["actual"]["input_tokens"] == manifest["usage"]["input_tokens"] > 0
    assert compared["actual"]["cost_usd"] == manifest["cost"]["usd"]
    assert compared["input_tokens_ratio"] == round(manifest["usage"]["input_tokens"] / tokens, 4)
    assert compared["cost_within_range"] in (True, False)
    assert manifest["rounds"][0]["estimate"]["input_tokens"] == tokens


def test_the_decorator_takes_the_budget(dag_env):
    dag = dag_env.write_dag(
        "decorated_budget",
        """
        from airflow.sdk import DAG, task
        from airflow_batch_provider.batch_file import ChatTemplate

        with DAG("decorated_budget", schedule=None, default_args={"retries": 0}) as dag:
            @task.openai_batch(
                request_template=ChatTemplate.from_prompt("gpt-4o-mini", "Summarize: {text}"),
                custom_id_field="id",
                max_cost_usd=0.0001,
            )
            def questions() -> list:
                return [{"id": f"doc-{i}", "text": f"document {i}"} for i in range(3)]

            questions()
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"questions": "failed"}
    assert dag_env.emulator.stats()["files_uploaded"] == 0


@pytest.mark.emulator(requests_per_second=20, completion_window_seconds=0.4)
def test_a_resubmission_round_over_budget_uploads_nothing(
    batch_emulator: Any, emulator_conn_id: str, tmp_path: Path
) -> None:
    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    batch = submit_batch(hook, request_lines(20, special={0: REJECT}))
    assert batch.status == "expired"
    uploads = batch_emulator.stats()["files_uploaded"]

    def make() -> OpenAIBatchFetchOperator:
        return OpenAIBatchFetchOperator(
            task_id="fetch", batches=batch.id, destination=str(tmp_path), conn_id=emulator_conn_id,
            resubmit=True, poll_interval=0.05, max_poll_interval=0.2, max_cost_usd=0.0,
        )  # fmt: skip

    with pytest.raises(BudgetExceededError, match="resubmission round 1 .* exceeds max_cost_usd=0 USD"):
        run_operator(make, make_context())
    assert batch_emulator.stats()["files_uploaded"] == uploads
    assert batch_emulator.stats()["batches_created"] == 1
