"""A real DAG run: submit -> fetch (deferred on the trigger), OpenLineage events written by the
openlineage provider's file transport, an Asset event, and the Asset-scheduled DAG run.

It runs in a child process with an Airflow home of its own, because the OpenLineage
listener reads its transport once per process. The downstream DAG run is created by the
scheduler's own code (``SchedulerJobRunner._create_dagruns_for_dags``, as the scheduler
loop calls it) and its task then runs as ``dag.test()`` runs tasks.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.integration._fetch_support import request_lines

DAG_FILE = """
import json
import pendulum
from airflow.sdk import DAG, Asset, task

from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

RESULTS = Asset(name="eval_results", uri="file://{out}/")

with DAG("nightly_eval", schedule=None, start_date=pendulum.datetime(2024, 1, 1)) as dag:
    submit = OpenAIBatchSubmitOperator(
        task_id="submit", input_path="{input}", conn_id="openai_emulator", deferrable=True,
        poll_interval=0.1, max_poll_interval=0.5,
    )
    fetch = OpenAIBatchFetchOperator(
        task_id="fetch", batches=submit.output, destination="{out}/{{{{ ds }}}}/",
        poll_interval=0.1, max_poll_interval=0.5, outlets=[RESULTS],
    )

with DAG("index_rebuild", schedule=[RESULTS], start_date=pendulum.datetime(2024, 1, 1)) as downstream:

    @task
    def rebuild(triggering_asset_events=None):
        seen = {{
            str(asset.uri): [e.extra for e in events] for asset, events in triggering_asset_events.items()
        }}
        with open("{seen}", "w") as fh:
            json.dump(seen, fh)
        return seen

    rebuild()
"""

RUNNER = """
import json, os, shutil, sys
from pathlib import Path

home = Path(os.environ["AIRFLOW_HOME"])
template = Path(sys.argv[1])
db = home / "airflow.db"
if template.exists():
    shutil.copyfile(template, db)
    from airflow.utils.db import upgradedb
else:
    from airflow.utils.db import initdb
    initdb()

from airflow.models.asset import AssetDagRunQueue, AssetEvent
from airflow.models.dagrun import DagRun
from airflow.models.xcom import XComModel
from airflow.utils.session import create_session
from sqlalchemy import select

sys.path.insert(0, os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
import eval_dags

out = {}
dr = eval_dags.dag.test()
out["upstream"] = str(dr.state)
with create_session() as s:
    out["xcom"] = s.scalar(select(XComModel.value).where(XComModel.dag_id == "nightly_eval",
                          XComModel.task_id == "fetch", XComModel.key == "return_value"))
    out["asset_events"] = [e.extra for e in s.scalars(select(AssetEvent))]
    out["queued_for"] = [q.target_dag_id for q in s.scalars(select(AssetDagRunQueue))]

# What the scheduler loop does next: create the asset-triggered run.
from airflow.jobs.job import Job
from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
from airflow.utils.sqlalchemy import prohibit_commit
runner = SchedulerJobRunner(job=Job())
with create_session() as session:
    with prohibit_commit(session) as guard:
        runner._create_dagruns_for_dags(guard, session)
        guard.commit()

# ...and then run its task, as dag.test() runs tasks.
from airflow.models.dagbag import DBDagBag
from airflow.sdk.definitions.dag import _run_task
from airflow.utils.state import DagRunState, TaskInstanceState
with create_session() as session:
    run = session.scalars(select(DagRun).where(DagRun.dag_id == "index_rebuild")).one()
    out["downstream_run_type"] = str(run.run_type)
    out["consumed"] = [e.extra for e in run.consumed_asset_events]
    run.dag = DBDagBag().get_dag_for_run(run, session=session)
    run.state = DagRunState.RUNNING
    session.commit()
    for _ in range(20):
        if run.state != DagRunState.RUNNING:
            break
        session.expire_all()
        schedulable, _ = run.update_state(session=session)
        for ti in schedulable:
            ti.try_number += 1
            ti.state = TaskInstanceState.SCHEDULED
        session.commit()
        for ti in run.get_task_instances(session=session):
            if ti.state == TaskInstanceState.SCHEDULED:
                _run_task(ti=ti, task=eval_dags.downstream.task_dict[ti.task_id])
    out["downstream"] = str(run.state)
print("RESULT " + json.dumps(out, default=str))
"""


@pytest.mark.slow
def test_dag_run_emits_lineage_and_an_asset_event_that_runs_the_downstream_dag(
    batch_emulator: Any, tmp_path: Path
) -> None:
    import airflow

    home, dags, out, ol = tmp_path / "home", tmp_path / "dags", tmp_path / "out", tmp_path / "ol"
    for d in (home, dags, out, ol):
        d.mkdir()
    input_path = tmp_path / "input.jsonl"
    input_path.write_bytes(b"".join(request_lines(5)))
    seen_path = tmp_path / "seen.json"
    (dags / "eval_dags.py").write_text(
        textwrap.dedent(DAG_FILE).format(out=out, input=input_path, seen=seen_path)
    )
    conn_var, conn_value = batch_emulator.connection_env("openai_emulator")
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")},
        conn_var: conn_value,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(ol / "events")}),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "batch_tests",
    }
    template = Path(f"/tmp/airflow-batch-provider-test-{airflow.__version__}.db")
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER, str(template)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, (proc.stdout[-4000:], proc.stderr[-4000:])
    result = json.loads(lines[-1][len("RESULT ") :])

    # The DAG ran, the fetch landed under the templated destination.
    assert result["upstream"] == "success", proc.stdout[-4000:]
    xcom = json.loads(result["xcom"]) if isinstance(result["xcom"], str) else result["xcom"]
    manifest_path = Path(xcom["manifest_uri"].removeprefix("file://"))
    manifest = json.loads(manifest_path.read_text())
    assert manifest_path.parent.parent == out and xcom["counts"]["succeeded"] == 5
    assert manifest["input"]["uri"] == f"file://{input_path}"

    # The Asset event carries counts, usage and the manifest URI; the downstream DAG ran on it.
    (extra,) = result["asset_events"]
    assert extra["manifest_uri"] == xcom["manifest_uri"] and extra["counts"]["succeeded"] == 5
    assert extra["usage"]["input_tokens"] == manifest["usage"]["input_tokens"] > 0
    assert result["queued_for"] == ["index_rebuild"]
    assert result["downstream_run_type"].endswith("asset_triggered")
    assert result["consumed"] == [extra] and result["downstream"] == "success"
    seen = json.loads(seen_path.read_text())
    assert list(seen.values()) == [[extra]] and list(seen)[0].rstrip("/") == f"file://{out}"

    # OpenLineage: the fetch's COMPLETE event names the input and every landed file.
    events = [json.loads(p.read_text()) for p in sorted(ol.iterdir())]
    assert events, "no OpenLineage event was written"
    complete = {e["job"]["name"]: e for e in events if e["eventType"] == "COMPLETE"}
    fetch_event = complete["nightly_eval.fetch"]
    assert [(d["namespace"], d["name"]) for d in fetch_event["inputs"]] == [("file", str(input_path))]
    outputs = {(d["namespace"], d["name"]) for d in fetch_event["outputs"]}
    run_dir = manifest_path.parent
    batch_id = manifest["batch_ids"][0]
    assert {
        ("file", str(run_dir / batch_id / "output.jsonl")),
        ("file", str(run_dir / "results.jsonl")),
        ("file", str(run_dir / "manifest.json")),
    } <= outputs
    facet = fetch_event["run"]["facets"]["openaiBatch"]
    assert facet["batchIds"] == manifest["batch_ids"] and facet["endpoint"] == "/v1/chat/completions"
    assert facet["counts"]["succeeded"] == 5 and facet["usage"]["input_tokens"] > 0
    assert facet["estimatedCost"]["usd"] == manifest["cost"]["usd"]
    stats = next(d for d in fetch_event["outputs"] if d["name"].endswith("results.jsonl"))["outputFacets"]
    assert stats["outputStatistics"]["rowCount"] == 5

    # The submit's COMPLETE event: the input JSONL in, the batches in its run facet.
    submit_event = complete["nightly_eval.submit"]
    assert [(d["namespace"], d["name"]) for d in submit_event["inputs"]] == [("file", str(input_path))]
    assert submit_event["run"]["facets"]["openaiBatch"]["batchIds"] == manifest["batch_ids"]

    # Never a secret: the emulator's API key appears in no event.
    text = "".join(p.read_text() for p in ol.iterdir())
    assert batch_emulator.api_key not in text
