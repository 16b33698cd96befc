"""Under real Airflow processes: the submit task waits deferred, holds no worker slot, its
trigger runs in the triggerer process, the run succeeds and every result lands."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest

from tests.system import drills
from tests.system.conftest import DrillRun


def _ts(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


pytestmark = pytest.mark.timeout(420)


def test_run_succeeds_and_every_request_lands(baseline: DrillRun) -> None:
    assert baseline.record.state == "success", baseline.record.task_instances
    counts = drills.status_counts(baseline.destination)
    assert sum(counts.values()) == drills.REQUESTS
    assert counts == {"succeeded": drills.REQUESTS - len(drills.REJECTED), "failed": len(drills.REJECTED)}
    manifest = drills.read_manifest(baseline.destination)
    [batch_id] = manifest["batch_ids"]
    assert (baseline.destination / batch_id / "output.jsonl").is_file()
    assert (baseline.destination / batch_id / "errors.jsonl").is_file()
    assert baseline.delta("batches_created") == 1
    assert baseline.delta("files_uploaded") == 1


def test_submit_was_deferred_and_its_trigger_ran_in_the_triggerer(baseline: DrillRun) -> None:
    stack_states = baseline.record.states_of("submit")
    assert "deferred" in stack_states, stack_states
    assert baseline.record.ti("submit")["try_number"] == 1  # resumed, not retried
    seen = baseline.observed["deferred"]
    assert seen, "the submit task was never observed deferred"
    trigger = seen[-1]["trigger"]
    assert trigger["classpath"] == "airflow_batch_provider.triggers.openai_batch.OpenAIBatchTrigger"
    triggerer_id = trigger["triggerer_id"]
    assert triggerer_id, f"trigger not assigned to a triggerer: {trigger}"
    jobs = {job["id"]: job for job in baseline.observed["jobs"]}
    assert jobs[triggerer_id]["job_type"] == "TriggererJob", jobs
    assert jobs[triggerer_id]["state"] == "running"


def test_trigger_log_is_written_by_the_triggerer_job(baseline: DrillRun, stack: Any) -> None:
    triggerer_id = baseline.observed["deferred"][-1]["trigger"]["triggerer_id"]
    files = stack.task_log_files(drills.DRILL_DAG, baseline.run_id, "submit")
    trigger_logs = [p for p in files if re.search(rf"\.trigger\.{triggerer_id}\.log$", p.name)]
    assert trigger_logs, [p.name for p in files]
    text = trigger_logs[0].read_text(errors="replace")
    assert "requests done" in text, text[-3000:]  # the trigger's progress lines
    worker_log = "\n".join(p.read_text(errors="replace") for p in files if ".trigger." not in p.name)
    assert "created batch" in worker_log


def test_deferred_task_held_no_worker_slot(baseline: DrillRun, stack: Any) -> None:
    """One executor slot (parallelism 1): the sidecar DAG ran to success while the submit task was
    deferred and its batch still running, which a task holding the slot would have prevented."""
    sidecar = baseline.observed.get("sidecar")
    assert sidecar is not None, "the sidecar DAG was never triggered"
    assert sidecar.state == "success"
    side_ti = sidecar.ti("sidecar")
    batch = baseline.emulator.client().batches.retrieve(
        drills.read_manifest(baseline.destination)["batch_ids"][0]
    )
    assert batch.completed_at is not None
    assert _ts(side_ti["end_date"]) < batch.completed_at, (side_ti["end_date"], batch.completed_at)
    assert _ts(side_ti["start_date"]) > batch.created_at
    assert stack.env["AIRFLOW__CORE__PARALLELISM"] == "1"
