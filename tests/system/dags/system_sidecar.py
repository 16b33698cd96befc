"""System-test DAG: one short task. Run while another task is deferred with one executor slot,
it proves the deferred task holds no slot."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from airflow.sdk import dag, task


@dag(schedule=None, start_date=datetime(2025, 1, 1, tzinfo=timezone.utc), catchup=False, tags=["system-test"])
def system_sidecar():
    @task
    def sidecar() -> float:
        return time.time()

    sidecar()


system_sidecar()
