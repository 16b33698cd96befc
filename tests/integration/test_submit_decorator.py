"""``@task.openai_batch`` in a real DAG against the emulator."""

from __future__ import annotations

from tests.integration import _dag_env

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env


def test_decorator_is_registered():
    from airflow.sdk import task

    from airflow_batch_provider.decorators.openai_batch import openai_batch_task

    # Found through the provider info's "task-decorators", as users reach it.
    assert task.openai_batch is openai_batch_task


def test_decorator_returns_manifest(dag_env):
    dag = dag_env.write_dag(
        "decorated",
        """
        from airflow.sdk import DAG, task
        from airflow_batch_provider.batch_file import ChatTemplate

        with DAG("decorated", schedule=None) as dag:
            @task.openai_batch(
                request_template=ChatTemplate.from_prompt("gpt-4o-mini", "Summarize: {text}"),
                custom_id_field="id",
                deferrable=True,
                poll_interval=0.1,
                max_poll_interval=0.5,
            )
            def questions(n: int) -> dict:
                # A dict annotation must not unroll the manifest into several XComs.
                return [{"id": f"doc-{i}", "text": f"document {i}"} for i in range(n)]

            @task
            def downstream(manifest: dict) -> int:
                assert manifest["batches"][0]["status"] == "completed"
                return manifest["batches"][0]["request_counts"]["completed"]

            downstream(questions(4))
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"questions": "success", "downstream": "success"}
    manifest = dag_env.xcom(dr, "questions")
    assert manifest["endpoint"] == "/v1/chat/completions"
    assert manifest["batch_ids"] and manifest["batches"][0]["request_counts"]["total"] == 4
    assert dag_env.xcom(dr, "downstream") == 4
    assert dag_env.emulator.stats()["batches_created"] == 1


def test_decorator_returning_request_lines(dag_env):
    dag = dag_env.write_dag(
        "decorated_lines",
        """
        from airflow.sdk import DAG, task

        with DAG("decorated_lines", schedule=None) as dag:
            @task.openai_batch(deferrable=True, poll_interval=0.1, max_poll_interval=0.5)
            def lines():
                return [
                    {
                        "custom_id": f"e-{i}",
                        "method": "POST",
                        "url": "/v1/embeddings",
                        "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
                    }
                    for i in range(3)
                ]

            lines()
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"lines": "success"}
    manifest = dag_env.xcom(dr, "lines")
    assert manifest["endpoint"] == "/v1/embeddings"
    assert manifest["model"] == "text-embedding-3-small"
