"""State survives a restart (clean or killed); running batches resume without losing or repeating work."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from airflow_batch_provider.emulator.testing import running_emulator
from tests.integration.emulator_support import chat_lines, read_results, run_batch, start_batch, wait_batch


def resume_after_restart(emulator, *, kill: bool) -> None:
    client = emulator.client(max_retries=5)
    finished, _, _ = run_batch(client, chat_lines(3, prefix="done"))
    batch = start_batch(client, chat_lines(150), metadata={"k": "v"})
    deadline = time.monotonic() + 60
    while client.batches.retrieve(batch.id).request_counts.completed < 20:
        assert time.monotonic() < deadline, "the batch made no progress in 60 s"
        time.sleep(0.01)
    emulator.restart(kill=kill)

    during = client.batches.retrieve(batch.id)
    assert during.status in ("in_progress", "finalizing", "completed")
    assert during.request_counts.completed >= 20  # progress was checkpointed, not reset
    done = wait_batch(client, batch.id, timeout=20)
    assert done.status == "completed" and done.metadata == {"k": "v"}
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (
        150,
        150,
        0,
    )
    ids = Counter(line["custom_id"] for line in read_results(client, done.output_file_id))
    assert ids == Counter(f"q-{i}" for i in range(150))  # each request exactly once
    assert emulator.stats()["requests_executed"] < 150  # the new process only ran what was left

    assert client.batches.retrieve(finished.id) == finished  # finished state survives too
    assert len(read_results(client, finished.output_file_id)) == 3
    assert {b.id for b in client.batches.list()} == {batch.id, finished.id}


@pytest.mark.emulator(requests_per_second=100)
def test_clean_restart_resumes_running_batch(batch_emulator):
    resume_after_restart(batch_emulator, kill=False)


def test_killed_server_resumes_running_batch(tmp_path):
    with running_emulator(mode="subprocess", data_dir=tmp_path, requests_per_second=150) as emulator:
        port = emulator.port
        resume_after_restart(emulator, kill=True)
        assert emulator.port == port  # same base URL after the restart


# Delays longer than any restart on a loaded machine: the states below are still the same after it.
@pytest.mark.emulator(validation_delay=10, finalization_delay=10, requests_per_second=100)
def test_restart_during_validation_and_cancelling(batch_emulator):
    client = batch_emulator.client(max_retries=5)
    cancelled = start_batch(client, chat_lines(200, prefix="c"))
    wait_batch(client, cancelled.id, statuses=("in_progress",))
    validating = start_batch(client, chat_lines(10, prefix="v"))
    assert client.batches.cancel(cancelled.id).status == "cancelling"
    batch_emulator.restart()
    assert client.batches.retrieve(cancelled.id).status == "cancelling"
    assert client.batches.retrieve(validating.id).status == "validating"
    assert wait_batch(client, validating.id).status == "completed"
    done = wait_batch(client, cancelled.id)
    assert done.status == "cancelled"
    assert len(read_results(client, done.output_file_id)) == done.request_counts.completed
