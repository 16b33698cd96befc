"""A DAG whose results cannot land fails before any batch is created.

Real DAGs (``dag.test()``) against the emulator over HTTP; S3 on the moto server. After a
failing submit the emulator's ``/_emulator/stats`` (read with the API key) must show that
nothing was uploaded and no batch was created.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_batch_provider.links import FAILURE_XCOM_KEY
from tests.integration import _dag_env
from tests.integration._dag_env import chat_lines

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env


def _stats(emulator: Any) -> dict[str, Any]:
    response = httpx.get(
        f"{emulator.root_url}/_emulator/stats", headers=emulator.control_headers(), timeout=10
    )
    return dict(response.raise_for_status().json())


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def _nothing_paid(emulator: Any) -> None:
    stats = _stats(emulator)
    assert (stats["files_uploaded"], stats["batches_created"]) == (0, 0), stats


def _dag(
    dag_id: str,
    input_path: Path,
    destination: str,
    *,
    fetch_args: str = "",
    submit_args: str = "",
    root: str = "unused",
) -> str:
    return f"""
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    with DAG({dag_id!r}, schedule=None, params={{"root": {root!r}}}, default_args={{"retries": 0}}) as dag:
        submit = OpenAIBatchSubmitOperator(
            task_id="submit", input_path={str(input_path)!r}, deferrable=True, poll_interval=0.1,
            max_poll_interval=0.5, {submit_args}
        )
        fetch = OpenAIBatchFetchOperator(
            task_id="fetch", batches=submit.output, destination={destination!r}, poll_interval=0.1,
            max_poll_interval=0.5, {fetch_args}
        )
    """


def _run_failing(dag_env: Any, dag_id: str, destination: str, *, when: Any = None, **kwargs: Any) -> str:
    """Run a submit -> fetch DAG that must fail at submit; return the submit's error message."""
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(3))
    dag = dag_env.write_dag(dag_id, _dag(dag_id, src, destination, **kwargs))

    dr = dag_env.run(dag, when=when)

    assert dag_env.states(dr) == {"submit": "failed", "fetch": "upstream_failed"}
    _nothing_paid(dag_env.emulator)
    failure = dag_env.xcom(dr, "submit", FAILURE_XCOM_KEY)
    assert failure["error"] == "DestinationError", failure
    return failure["message"]


def test_a_destination_under_a_regular_file_fails_the_submit(dag_env):
    blocker = dag_env.data / "results.txt"
    blocker.write_text("a file, not a directory\n")

    message = _run_failing(dag_env, "under_file", str(blocker / "evals"))

    assert f"{blocker} is a file, not a directory" in message
    assert "fetch task 'fetch'" in message and "Nothing was uploaded" in message


@pytest.mark.parametrize(
    ("url", "package", "module"),
    [
        ("gs://results-bucket/evals/", "apache-airflow-providers-google", "airflow.providers.google"),
        ("abfs://results/evals/", "apache-airflow-providers-microsoft-azure", "airflow.providers.microsoft"),
        ("wasb://results@account/evals/", "apache-airflow-providers-microsoft-azure", None),
    ],
)
def test_a_scheme_without_its_provider_names_the_package_to_install(dag_env, url, package, module):
    if module is not None:  # the point is its absence: this venv must not have it
        assert not _installed(module), f"{module} is installed here; this test needs a venv without it"

    message = _run_failing(dag_env, "no_provider", url)

    assert package in message and "Nothing was uploaded" in message


def test_the_decorator_checks_the_fetch_destination(dag_env):
    blocker = dag_env.data / "results.txt"
    blocker.write_text("x\n")
    dag = dag_env.write_dag(
        "decorated_dest",
        f"""
        from airflow.sdk import DAG, task
        from airflow_batch_provider.batch_file import ChatTemplate
        from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator

        with DAG("decorated_dest", schedule=None, default_args={{"retries": 0}}) as dag:
            @task.openai_batch(
                request_template=ChatTemplate.from_prompt("gpt-4o-mini", "Summarize: {{text}}"),
                custom_id_field="id", deferrable=True, poll_interval=0.1, max_poll_interval=0.5,
            )
            def questions() -> list:
                return [{{"id": f"doc-{{i}}", "text": f"document {{i}}"}} for i in range(3)]

            OpenAIBatchFetchOperator(
                task_id="fetch", batches=questions(), destination={str(blocker / "out")!r},
            )
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"questions": "failed", "fetch": "upstream_failed"}
    _nothing_paid(dag_env.emulator)
    assert dag_env.xcom(dr, "questions", FAILURE_XCOM_KEY)["error"] == "DestinationError"


def test_a_templated_destination_is_rendered_with_the_run_before_the_check(dag_env):
    blocker = dag_env.data / "2026-01-02"
    blocker.write_text("x\n")  # the rendered {{ ds }} directory is a file
    root = str(dag_env.data)

    message = _run_failing(
        dag_env,
        "templated_dest",
        "{{ params.root }}/{{ ds }}/evals",
        fetch_args=f"params={{'root': {root!r}}}",  # a task-level param of the fetch
        when=_dag_env.FIXED_DATE,  # ds = 2026-01-02
    )

    assert f"{blocker} is a file" in message
    assert "{{" not in message


def test_a_writable_destination_runs_and_the_probe_leaves_nothing_behind(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(3))
    out = dag_env.data / "results"
    out.mkdir()
    dag = dag_env.write_dag(
        "writable_dest", _dag("writable_dest", src, "{{ params.root }}/{{ ds }}", root=str(out))
    )

    dr = dag_env.run(dag, when=_dag_env.FIXED_DATE)

    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    landed = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert landed[0] == "2026-01-02" and not [p for p in landed if "probe" in p or p.startswith(".")]
    assert _stats(dag_env.emulator)["batches_created"] == 1


def test_a_destination_known_only_after_the_submit_is_checked_by_the_fetch(dag_env):
    """A template that reads an XCom of a later task cannot render at submit time: the submit
    warns and goes on, and the fetch lands where the XCom says."""
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(2))
    out = dag_env.data / "later"
    dag = dag_env.write_dag(
        "later_dest",
        f"""
        from airflow.sdk import DAG, task
        from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
        from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

        with DAG("later_dest", schedule=None, default_args={{"retries": 0}}) as dag:
            submit = OpenAIBatchSubmitOperator(
                task_id="submit", input_path={str(src)!r}, deferrable=True, poll_interval=0.1,
                max_poll_interval=0.5,
            )

            @task
            def prepare() -> dict:
                return {{"dir": {str(out)!r}}}

            fetch = OpenAIBatchFetchOperator(
                task_id="fetch", batches=submit.output,
                destination="{{{{ ti.xcom_pull(task_ids='prepare')['dir'] }}}}",
                poll_interval=0.1, max_poll_interval=0.5,
            )
            submit >> prepare() >> fetch
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success", "prepare": "success", "fetch": "success"}
    assert (out / "manifest.json").is_file()


def test_check_destination_false_opts_out(dag_env):
    blocker = dag_env.data / "results.txt"
    blocker.write_text("x\n")
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(2))
    dag = dag_env.write_dag(
        "opt_out",
        _dag("opt_out", src, str(blocker / "out"), submit_args="check_destination=False"),
    )

    dr = dag_env.run(dag)

    # The old behaviour, chosen: the batch runs and is paid for, and only the fetch fails.
    assert dag_env.states(dr) == {"submit": "success", "fetch": "failed"}
    assert _stats(dag_env.emulator)["batches_created"] == 1


# --- S3 on the moto server -------------------------------------------------------------------


def test_a_bucket_that_does_not_exist_fails_the_submit(dag_env, aws_test_bucket):
    message = _run_failing(
        dag_env,
        "missing_bucket",
        f"s3://{aws_test_bucket}-missing/evals/",
        fetch_args="destination_conn_id='aws_test'",
    )

    assert f"s3://{aws_test_bucket}-missing/evals/" in message
    assert "bucket does not exist" in message
    assert ".airflow-batch-probe" not in message and "partial" not in message


@pytest.mark.parametrize(
    ("conn_id", "expected"),
    [("openai_default", "is of type 'openai'"), ("aws_nowhere", "'aws_nowhere' is not defined")],
)
def test_a_wrong_storage_connection_fails_the_submit(dag_env, aws_test_bucket, conn_id, expected):
    message = _run_failing(
        dag_env,
        "wrong_conn",
        f"s3://{aws_test_bucket}/evals/",
        fetch_args=f"destination_conn_id={conn_id!r}",
    )

    assert expected in message and "destination_conn_id" in message


def test_an_s3_destination_runs_and_no_probe_object_remains(dag_env, aws_test_bucket, moto_server):
    import boto3

    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(2))
    dag = dag_env.write_dag(
        "s3_dest",
        _dag("s3_dest", src, f"s3://aws_test@{aws_test_bucket}/evals"),
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=aws_test_bucket).get("Contents", [])]
    assert "evals/manifest.json" in keys
    assert not [k for k in keys if "probe" in k or "/." in k], keys


# --- input_path checks at execute, before upload ---------------------------------------------


def test_a_missing_input_path_is_a_provider_error_naming_the_parameter(dag_env):
    missing = dag_env.data / "nowhere" / "in.jsonl"
    dag = dag_env.write_dag("missing_input", _dag("missing_input", missing, str(dag_env.data / "out")))

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "failed", "fetch": "upstream_failed"}
    _nothing_paid(dag_env.emulator)
    failure = dag_env.xcom(dr, "submit", FAILURE_XCOM_KEY)
    assert failure["error"] == "BatchFileError"
    assert failure["message"].startswith(f"input_path file://{missing} does not exist")


def test_invalid_records_never_name_the_internal_temp_file(dag_env):
    dag = dag_env.write_dag(
        "records_temp_name",
        """
        from airflow.sdk import DAG, task

        with DAG("records_temp_name", schedule=None, default_args={"retries": 0}) as dag:
            @task.openai_batch()
            def lines() -> list:
                return [{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}]

            lines()
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"lines": "failed"}
    _nothing_paid(dag_env.emulator)
    failure = dag_env.xcom(dr, "lines", FAILURE_XCOM_KEY)
    text = json.dumps(failure)
    assert 'body has no \\"model\\"' in text
    assert "openai-batch-" not in text and ".jsonl" not in text
    assert failure["source"] == "requests"


def test_records_returned_without_a_template_say_so(dag_env):
    dag = dag_env.write_dag(
        "records_no_template",
        """
        from airflow.sdk import DAG, task

        with DAG("records_no_template", schedule=None, default_args={"retries": 0}) as dag:
            @task.openai_batch()
            def rows() -> list:
                return [{"id": 1, "text": "secret text"}]

            rows()
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"rows": "failed"}
    _nothing_paid(dag_env.emulator)
    message = dag_env.xcom(dr, "rows", FAILURE_XCOM_KEY)["message"]
    assert message.startswith("requests[0] is a record (fields 'id', 'text')")
    assert "request_template" in message and "secret text" not in message
