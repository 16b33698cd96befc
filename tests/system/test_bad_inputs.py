"""Bad-input drill: every malformed input of the corpus fails in the submit operator, before
anything is uploaded, with a message that names the line (or record) and the fix.

In process, for speed: one DAG with a submit task per case, run by ``dag.test()`` (real
task contexts, a real Airflow DB) against an emulator; each task's failure callback
records the exception the task failed with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.integration import _dag_env
from tests.system.bad_inputs import BadInput, corpus, write_files

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env

pytestmark = pytest.mark.timeout(240)

DAG_FILE = """
from pathlib import Path

from airflow.sdk import DAG

from tests.system.test_bad_inputs import corpus_tasks

with DAG("bad_inputs_drill", schedule=None, default_args={{"retries": 0}}) as dag:
    corpus_tasks(Path({folder!r}), Path({failures!r}))
"""


def _record_failure(failures: Path):
    def callback(context: Any) -> None:
        error = context.get("exception")
        with failures.open("a", encoding="utf-8") as out:
            out.write(
                json.dumps(
                    {"task_id": context["ti"].task_id, "type": type(error).__name__, "message": str(error)}
                )
                + "\n"
            )

    return callback


def corpus_tasks(folder: Path, failures: Path) -> None:
    """One submit task per case (called from the DAG file)."""
    from airflow_batch_provider.batch_file import ChatTemplate
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    cases = corpus()
    paths = write_files(folder, cases)
    for case in cases:
        kwargs: dict[str, Any] = dict(case.operator)
        if case.name in paths:
            kwargs["input_path"] = str(paths[case.name])
        else:
            kwargs["requests"] = case.requests
            if case.template == "chat":
                kwargs["request_template"] = ChatTemplate.from_prompt("gpt-4o-mini", "{question}")
        OpenAIBatchSubmitOperator(
            task_id=case.name,
            deferrable=True,
            poll_interval=1,
            on_failure_callback=_record_failure(failures),
            **kwargs,
        )


def test_every_malformed_input_fails_naming_the_line_and_the_fix_and_nothing_is_uploaded(
    dag_env: Any, tmp_path: Path
) -> None:
    cases = corpus()
    assert len(cases) >= 30
    failures = tmp_path / "failures.jsonl"
    before = dag_env.emulator.stats()
    dag = dag_env.write_dag(
        "bad_inputs_drill", DAG_FILE.format(folder=str(tmp_path / "inputs"), failures=str(failures))
    )
    dag_run = dag_env.run(dag)
    after = dag_env.emulator.stats()

    states = dag_env.states(dag_run)
    assert set(states) == {c.name for c in cases}
    assert {s for s in states.values()} == {"failed"}, {k: v for k, v in states.items() if v != "failed"}
    recorded = {}
    for line in failures.read_text().splitlines():
        item = json.loads(line)
        recorded[item["task_id"]] = item
    problems = [_problem(case, recorded.get(case.name)) for case in cases]
    problems = [p for p in problems if p]
    assert not problems, "\n\n".join(problems)
    # Validation comes first: nothing reached the service.
    for counter in ("files_uploaded", "bytes_uploaded", "batches_created"):
        assert after[counter] == before[counter], (counter, before, after)


def _problem(case: BadInput, failure: dict[str, Any] | None) -> str | None:
    """Why a case's failure message falls short, or None."""
    if failure is None:
        return f"{case.name}: no failure recorded"
    message = failure["message"]
    missing = []
    if failure["type"] != "BatchFileError":
        missing.append(f"a BatchFileError (got {failure['type']})")
    if f"{case.where}:" not in message and f"{case.where} " not in message:
        missing.append(f"the location {case.where!r}")
    if case.fix not in message:
        missing.append(f"the fix {case.fix!r}")
    if case.requests is None and "nothing was uploaded" not in message:
        missing.append("that nothing was uploaded")
    return f"{case.name}: message lacks {', '.join(missing)}:\n{message}" if missing else None
