"""The example DAGs (``dags_examples/``) under real Airflow processes, triggered through the REST API.

The three are triggered at once and share the single executor slot: each batch task
defers (its trigger runs in the triggerer, writing the ``.trigger.<job id>.log`` beside
the task's log), the runs succeed and their files land. ``classify_dataset`` runs as
three batches (``max_requests_per_batch=100`` over 300 tickets), joined into one file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.system.airflow_stack import AirflowStack
from tests.system.conftest import EXAMPLE_RUNS as EXAMPLES

pytestmark = pytest.mark.timeout(420)

# ``example_runs`` (tests/system/conftest.py): the three triggered at once, once per session.


def _uri_path(uri: str) -> Path:
    assert uri.startswith("file://"), uri
    return Path(uri.removeprefix("file://"))


@pytest.mark.parametrize("dag_id", list(EXAMPLES))
def test_example_dag_succeeds_with_its_batch_task_deferred_in_the_triggerer(
    stack: AirflowStack, example_runs: dict[str, Any], dag_id: str
) -> None:
    record = example_runs["records"][dag_id]
    _conf, batch_task, fetch_task, expected = EXAMPLES[dag_id]
    assert record.state == "success", [(t["task_id"], t["state"]) for t in record.task_instances]

    files = stack.task_log_files(dag_id, record.run_id, batch_task)
    worker = "\n".join(p.read_text(errors="replace") for p in files if ".trigger." not in p.name)
    assert "Pausing task as DEFERRED" in worker, worker[-3000:]
    trigger_logs = {int(m.group(1)): p for p in files if (m := re.search(r"\.trigger\.(\d+)\.log$", p.name))}
    assert trigger_logs, [p.name for p in files]
    assert set(trigger_logs) <= example_runs["triggerer_jobs"]  # written by a TriggererJob
    assert any("requests done" in p.read_text(errors="replace") for p in trigger_logs.values())

    fetched = stack.xcom(dag_id, record.run_id, fetch_task)
    assert fetched["total"] == expected, fetched
    results = _uri_path(fetched["results_uri"])
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert len(lines) == expected
    assert {line["status"] for line in lines} == {"succeeded"}


def test_classify_dataset_ran_as_three_batches_joined_into_one_file(
    stack: AirflowStack, example_runs: dict[str, Any]
) -> None:
    record = example_runs["records"]["classify_dataset"]
    fetched = stack.xcom("classify_dataset", record.run_id, "fetch_labels")
    assert len(fetched["batch_ids"]) == 3, fetched
    folder = _uri_path(fetched["destination"])
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rows"] == 300 and summary["batches"] == 3
    assert (folder / "labels.csv").read_text().count("\n") == 301  # header + one row per ticket


def test_nightly_eval_report_and_embedding_vectors_landed(
    stack: AirflowStack, example_runs: dict[str, Any]
) -> None:
    record = example_runs["records"]["nightly_eval"]
    report = stack.xcom("nightly_eval", record.run_id, "score_and_report")
    assert _uri_path(report["report"]).read_text().startswith("#")
    published = stack.xcom(
        "embedding_refresh", example_runs["records"]["embedding_refresh"].run_id, "publish"
    )
    assert published["vectors"] == 12 and published["embedded"] == 12, published
    events = stack.api("GET", "/assets/events", params={"source_dag_id": "embedding_refresh"})["asset_events"]
    assert any(e["source_run_id"] == example_runs["records"]["embedding_refresh"].run_id for e in events)
