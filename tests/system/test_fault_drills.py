"""Fault drills under real Airflow processes (issue 8).

Each drill runs the drill DAG on the same 40-request input as the fault-free baseline,
breaks something while it runs, and asserts the same three things:

- every request is accounted for: ``results.jsonl`` has one line per input request;
- nothing was paid twice: the emulator holds one batch per (task identity, input
  fingerprint, shard) of the run, and its counters show one upload and one batch;
- the landed results are identical to the fault-free run's (ids and timestamps aside).
"""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.system import drills
from tests.system.airflow_stack import AirflowStack, wait_until
from tests.system.conftest import DrillRun, DrillRunner, wait_for_deferred

pytestmark = pytest.mark.timeout(300)

_LANDED = re.compile(r"^(results\.jsonl|manifest\.json|batch_[0-9a-f]+/(output|errors)\.jsonl)$")


def assert_like_baseline(run: DrillRun, baseline: DrillRun, *, created: int | None = 1) -> None:
    """The three promises of every drill (see the module docstring)."""
    assert run.record.state == "success", [(t["task_id"], t["state"]) for t in run.record.task_instances]
    counts = drills.status_counts(run.destination)
    assert sum(counts.values()) == drills.REQUESTS, counts
    assert drills.canonical_results(run.destination) == drills.canonical_results(baseline.destination)
    batches = drills.batches_of_run(run.emulator, run.run_id)
    assert batches, "no batch of this run on the emulator"
    per_input = drills.batches_per_input(batches)
    assert set(per_input.values()) == {1}, f"a second batch for the same input: {per_input}"
    if created is not None:
        assert run.delta("batches_created") == created, (run.stats_before, run.stats_after)
        assert run.delta("files_uploaded") == created, (run.stats_before, run.stats_after)
    stray = [
        p
        for p in drills.landed_files(run.destination)
        if not _LANDED.match(p.relative_to(run.destination).as_posix())
    ]
    assert not stray, f"unexpected (partial or temporary) files landed: {stray}"


def _submit_log(stack: AirflowStack, run_id: str) -> str:
    return stack.task_log_text(drills.DRILL_DAG, run_id, "submit")


def test_task_process_killed_right_after_create_batch_retry_reattaches(
    stack: AirflowStack, drill_runner: DrillRunner, baseline: DrillRun, system_root: Path
) -> None:
    marker = system_root / "kill-marker"
    run = drill_runner.run("killed_task", kill_marker=str(marker))
    assert marker.exists(), "the kill point never fired"
    killed_batch = marker.read_text().strip()
    assert_like_baseline(run, baseline)
    submit = run.record.ti("submit")
    assert submit["try_number"] >= 2, submit  # try 1 died by SIGKILL
    manifest = drills.read_manifest(run.destination)
    assert manifest["batch_ids"] == [killed_batch]
    logs = {
        p.name: p.read_text(errors="replace")
        for p in stack.task_log_files(drills.DRILL_DAG, run.run_id, "submit")
        if ".trigger." not in p.name
    }
    first = logs["attempt=1.log"]
    assert "uploaded 40 requests" in first, first[-2000:]
    assert "created batch" not in first, first[-2000:]  # it died inside create_batch
    later = "\n".join(text for name, text in logs.items() if name != "attempt=1.log")
    assert f"re-attached to batch {killed_batch}" in logs["attempt=2.log"], logs["attempt=2.log"][-3000:]
    assert "uploaded 40 requests" not in later and "created batch" not in later


def test_triggerer_killed_and_restarted_mid_wait_keeps_the_deadline(
    stack: AirflowStack, drill_runner: DrillRunner, baseline: DrillRun
) -> None:
    run_id, destination, before = drill_runner.start("triggerer_restart", conn_id="openai_slow")
    ti = wait_for_deferred(stack, run_id)
    trigger_id, old_triggerer = ti["trigger"]["id"], ti["trigger"]["triggerer_id"]
    [row] = [r for r in stack.triggers() if r["id"] == trigger_id]
    deadline = row["kwargs"]["deadline"]
    emulator = drill_runner.emulators["slow"]
    [batch_id] = row["kwargs"]["batch_ids"]

    def polled_by_old_triggerer() -> bool:  # the trigger runs there: it has logged progress
        logs = [
            p
            for p in stack.task_log_files(drills.DRILL_DAG, run_id, "submit")
            if p.name.endswith(f".trigger.{old_triggerer}.log")
        ]
        return any("requests done" in p.read_text(errors="replace") for p in logs)

    wait_until(polled_by_old_triggerer, timeout=60, interval=0.3, message="the trigger to poll once")

    stack.kill_service("triggerer", signal.SIGKILL)
    status = emulator.client().batches.retrieve(batch_id).status
    assert status in ("validating", "in_progress"), f"batch already {status}: not mid-wait"
    time.sleep(2)
    stack.start_service("triggerer")

    def moved() -> bool:
        rows = [r for r in stack.triggers() if r["id"] == trigger_id]
        if rows:
            return bool(rows[0]["triggerer_id"]) and rows[0]["triggerer_id"] != old_triggerer
        return stack.task_instance(drills.DRILL_DAG, run_id, "submit")["state"] != "deferred"

    wait_until(moved, timeout=90, interval=0.3, message="the trigger to move to the new triggerer")
    record = stack.wait_for_run(drills.DRILL_DAG, run_id, timeout=150)
    run = DrillRun(record, destination, "openai_slow", emulator, before, emulator.stats())

    assert_like_baseline(run, baseline)
    assert record.ti("submit")["try_number"] == 1, "the task was retried instead of resumed"
    # The deadline is absolute (the batch's creation + timeout) and survived the restart.
    created_at = emulator.client().batches.retrieve(batch_id).created_at
    assert deadline == pytest.approx(created_at + 900, abs=2)
    # Earlier runs' triggers may have had the same id (SQLite reuses ids): match by batch.
    samples = [r for r in stack.trigger_samples.values() if r["kwargs"]["batch_ids"] == [batch_id]]
    assert {s["kwargs"]["deadline"] for s in samples} == {deadline}, samples
    owners = {r["triggerer_id"] for r in samples}
    # The trigger logged from the old triggerer job, then from the new one.
    names = [p.name for p in stack.task_log_files(drills.DRILL_DAG, run_id, "submit")]
    assert f"attempt=1.log.trigger.{old_triggerer}.log" in names, names
    new_logs = [n for n in names if ".trigger." in n and not n.endswith(f".trigger.{old_triggerer}.log")]
    assert new_logs, (names, owners)
    stack.wait_healthy(timeout=60)


def test_emulator_restarted_mid_batch(
    stack: AirflowStack, drill_runner: DrillRunner, baseline: DrillRun
) -> None:
    emulator = drill_runner.emulators["slow"]
    run_id, destination, before = drill_runner.start("emulator_restart", conn_id="openai_slow")
    ti = wait_for_deferred(stack, run_id)
    [batch_id] = next(r for r in stack.triggers() if r["id"] == ti["trigger"]["id"])["kwargs"]["batch_ids"]
    client = emulator.client()

    def executing() -> Any:
        batch = client.batches.retrieve(batch_id)
        return batch if batch.status == "in_progress" and batch.request_counts.completed >= 4 else None

    at_kill = wait_until(executing, timeout=60, interval=0.3, message="the batch to be half-way")
    emulator.restart(kill=True)  # SIGKILL: no graceful checkpoint, as a crash
    record = stack.wait_for_run(drills.DRILL_DAG, run_id, timeout=150)
    after = emulator.stats()  # counters restart from zero with the process
    run = DrillRun(record, destination, "openai_slow", emulator, before, after)

    assert_like_baseline(run, baseline, created=None)
    assert after["batches_created"] == 0 and after["files_uploaded"] == 0, after
    assert at_kill.request_counts.completed < drills.REQUESTS
    final = client.batches.retrieve(batch_id)
    assert final.status == "completed" and final.request_counts.total == drills.REQUESTS
    assert record.ti("submit")["try_number"] == 1


def test_a_fifth_of_api_calls_fail_with_500_or_429_and_downloads_are_cut(
    stack: AirflowStack, drill_runner: DrillRunner, baseline: DrillRun
) -> None:
    emulator = drill_runner.emulators["drill"]
    flaky = {"error_500": 0.1, "error_429": 0.1, "retry_after": 0.2}
    emulator.configure_faults({"routes": {"*": flaky, "files.content": {**flaky, "cut_off": 0.5}}, "seed": 8})
    try:
        run = drill_runner.run("api_faults", timeout=240)
        faults = emulator.stats()["faults_injected"]
    finally:
        emulator.clear_faults()
    assert run.delta("faults_injected") >= 5, (run.stats_before, run.stats_after)
    assert faults
    assert_like_baseline(run, baseline)


def test_download_cut_midway_leaves_nothing_partial_and_a_rerun_completes(
    stack: AirflowStack, drill_runner: DrillRunner, baseline: DrillRun
) -> None:
    """Every download stops halfway until the fetch task gives up; while it waits for its retry
    the destination holds nothing; then the service heals and the retry lands everything."""
    emulator = drill_runner.emulators["drill"]
    seen: dict[str, Any] = {}
    destination = drill_runner.root / "landed" / "download_cut"

    def heal_after_first_failure(tis: list[dict[str, Any]]) -> None:
        fetch = next(t for t in tis if t["task_id"] == "fetch")
        if fetch["state"] in ("up_for_retry", "failed") and "listing" not in seen:
            seen["listing"] = drills.landed_files(destination)
            seen["tree"] = drills.tree(destination)
            seen["state"] = fetch["state"]
            emulator.clear_faults()

    emulator.set_faults("files.content", cut_off=1.0)  # every download stops halfway
    try:
        run = drill_runner.run("download_cut", timeout=240, on_poll=heal_after_first_failure)
    finally:
        emulator.clear_faults()
    assert seen.get("state") == "up_for_retry", seen
    assert not seen["listing"], f"a cut download left files behind:\n{seen['tree']}"
    logs = {p.name: p for p in stack.task_log_files(drills.DRILL_DAG, run.run_id, "fetch")}
    first = logs["attempt=1.log"].read_text(errors="replace")
    assert "the connection was cut" in first, first[-3000:]
    assert run.record.ti("fetch")["try_number"] >= 2
    assert_like_baseline(run, baseline)
    # What landed is byte for byte what the service holds.
    [batch_id] = drills.read_manifest(run.destination)["batch_ids"]
    batch = emulator.client().batches.retrieve(batch_id)
    served = emulator.client().files.content(batch.output_file_id).content
    assert (run.destination / batch_id / "output.jsonl").read_bytes() == served


def test_batch_expiring_half_done_lands_partial_results_and_resubmits_the_rest(
    stack: AirflowStack, drill_runner: DrillRunner, baseline: DrillRun
) -> None:
    run = drill_runner.run("expired", conn_id="openai_expiring", timeout=240)
    assert_like_baseline(run, baseline, created=None)
    manifest = drills.read_manifest(run.destination)
    rounds = manifest["rounds"]
    assert len(rounds) >= 2, rounds
    client = run.emulator.client()
    [first_id] = rounds[0]["batch_ids"]
    first = client.batches.retrieve(first_id)
    assert first.status == "expired", first.status
    done = first.request_counts.completed
    assert 0 < done < drills.REQUESTS, first.request_counts
    # The partial results of the expired batch landed as they were.
    output = run.destination / first_id / "output.jsonl"
    assert output.is_file()
    assert sum(1 for _ in drills.iter_jsonl(output)) == done
    # Only what expired went out again: each later round is smaller than the one before.
    sent = [r.get("resubmitted") for r in rounds[1:]]
    assert all(isinstance(n, int) and 0 < n < drills.REQUESTS for n in sent), rounds
    created = run.delta("batches_created")
    assert created == len([b for r in rounds for b in r["batch_ids"]]), (created, rounds)
