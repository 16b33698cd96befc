"""Submit misconfiguration that can be seen when the DAG is parsed fails there: an import
error of the DAG file (as the dag processor reports it), with one message per mistake."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

HEADER = """
from airflow.sdk import DAG, task
from airflow_batch_provider.batch_file import ChatTemplate, EmbeddingTemplate
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

CHAT = ChatTemplate.from_prompt("gpt-4o-mini", "Classify: {text}")
"""


def _import_errors(tmp_path: Path, body: str) -> dict[str, str]:
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

    dags = tmp_path / "dags"
    dags.mkdir()
    (dags / "broken.py").write_text(HEADER + textwrap.dedent(body))
    return DagBag(dag_folder=str(dags)).import_errors


def _message(tmp_path: Path, body: str) -> str:
    errors = _import_errors(tmp_path, body)
    assert list(errors) == [str(tmp_path / "dags" / "broken.py")], errors
    return next(iter(errors.values())).strip().splitlines()[-1]


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (
            "requests=[{'text': 'a'}], request_template=CHAT, endpoint='/v1/embeddings'",
            "ValueError: endpoint='/v1/embeddings' disagrees with request_template, a ChatTemplate, "
            "which writes /v1/chat/completions requests. Remove endpoint (the template sets it) or use "
            "a template of /v1/embeddings.",
        ),
        (
            "requests=[{'id': 1, 'text': 'a'}]",
            "ValueError: requests[0] is a record (fields 'id', 'text'), not a request line, and no "
            "request_template was given.",
        ),
        (
            "requests=[{'text': 'a'}], custom_id_field='id'",
            "ValueError: custom_id_field='id' names a field of records, which need a request_template",
        ),
        ("", "ValueError: Give the batch's requests: input_path (a JSONL file of request lines) or requests"),
        (
            "input_path='in.jsonl', requests=[{'text': 'a'}], request_template=CHAT",
            "ValueError: Give input_path (a JSONL file) or requests (records or request lines), not both",
        ),
        (
            "input_path='in.jsonl', endpoint='/v1/chat'",
            "ValueError: endpoint: '/v1/chat' is not a batch endpoint",
        ),
    ],
    ids=[
        "endpoint-vs-template",
        "records-no-template",
        "custom-id-no-template",
        "neither",
        "both",
        "endpoint",
    ],
)
def test_a_misconfigured_submit_is_an_import_error_with_one_message(tmp_path, arguments, expected):
    message = _message(
        tmp_path,
        f"""
        with DAG("broken", schedule=None) as dag:
            OpenAIBatchSubmitOperator(task_id="submit", {arguments})
        """,
    )

    assert message.startswith(expected), message


def test_the_decorator_refuses_input_path(tmp_path):
    message = _message(
        tmp_path,
        """
        with DAG("broken", schedule=None) as dag:
            @task.openai_batch(request_template=CHAT, input_path="in.jsonl")
            def rows() -> list:
                return []

            rows()
        """,
    )

    assert message.startswith(
        "ValueError: @task.openai_batch takes its requests from the function's return value: remove "
        "input_path="
    ), message


def test_the_decorator_checks_the_endpoint_against_its_template(tmp_path):
    message = _message(
        tmp_path,
        """
        with DAG("broken", schedule=None) as dag:
            @task.openai_batch(request_template=EmbeddingTemplate(model="m", input_field="text"),
                               endpoint="/v1/responses")
            def rows() -> list:
                return []

            rows()
        """,
    )

    assert "disagrees with request_template, a EmbeddingTemplate, which writes /v1/embeddings" in message


def test_what_is_known_only_at_execute_is_left_to_execute(tmp_path):
    """Templated values and XComs are not judged at parse time; the Azure spelling is the same endpoint."""
    errors = _import_errors(
        tmp_path,
        """
        with DAG("fine", schedule=None) as dag:
            @task
            def rows() -> list:
                return [{"text": "a"}]

            OpenAIBatchSubmitOperator(task_id="a", requests=rows(), endpoint="{{ params.e }}")
            OpenAIBatchSubmitOperator(task_id="b", requests=[{"text": "a"}], request_template=CHAT,
                                      endpoint="/chat/completions")
            OpenAIBatchSubmitOperator(task_id="c", input_path="{{ params.path }}")
        """,
    )

    assert errors == {}
