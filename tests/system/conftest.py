"""Fixtures of the system tests: emulators (subprocesses), a real Airflow stack, the baseline run.

Everything is session-scoped and started once (about a minute on two cores): four
emulators that accept only a distinctive API key (the secrets drill greps for it at
the end), and one Airflow deployment whose ``openai_*`` connections point at them:

- ``openai_default``  -> ``main``: the example DAGs. Batches stay ``validating`` for 8 s:
  a trigger that fires within seconds of the deferral can make Airflow 3.3 fail the
  resumed task (apache/airflow#72716), and the examples have no retries;
- ``openai_drill``    -> ``drill``: fast (20 requests/s), for most drills (their tasks retry);
- ``openai_slow``     -> ``slow``: 2 requests/s, so a 40-request batch runs ~20 s: long enough
  to watch the deferred task, run another task in the only executor slot, kill the
  triggerer or restart the emulator while it waits;
- ``openai_expiring`` -> ``expiring``: a 3-second completion window at 8 requests/s, so a
  40-request batch expires about half done;
- ``openai_azure`` and ``openai_entra`` -> ``drill`` through its Azure OpenAI routes, with an
  Azure-shaped key (32 hex characters) and an Entra ID token (a JWT): secrets the redactor
  cannot find by an ``sk-`` shape (the secrets drill runs one batch through each).

The baseline is the fault-free run of the drill DAG; every drill lands the same input
and must land the same results.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.emulator.testing import EmulatorHandle, running_emulator
from tests.system import drills
from tests.system.airflow_stack import AirflowStack, RunRecord, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "dags_examples"
EXAMPLE_DAGS = ("nightly_eval", "embedding_refresh", "classify_dataset")
SYSTEM_DAGS = (drills.DRILL_DAG, drills.SIDECAR_DAG)

EMULATORS: dict[str, dict[str, Any]] = {
    "main": {"profile": "fast", "requests_per_second": 20, "validation_delay": 8},
    "drill": {"profile": "fast", "requests_per_second": 20},
    "slow": {"profile": "fast", "requests_per_second": 2},
    "expiring": {"profile": "fast", "requests_per_second": 8, "completion_window_seconds": 3},
}
#: The example DAGs' runs: dag_id -> (conf, the batch task, the fetch task, requests in results.jsonl).
EXAMPLE_RUNS: dict[str, tuple[dict[str, Any], str, str, int]] = {
    "nightly_eval": ({}, "ask_model", "fetch_results", 120),
    "classify_dataset": ({"max_requests_per_batch": 100, "limit": 300}, "classify", "fetch_labels", 300),
    "embedding_refresh": ({}, "embed", "fetch_vectors", 12),
}
CONNECTIONS = {
    "openai_default": "main",
    "openai_drill": "drill",
    "openai_slow": "slow",
    "openai_expiring": "expiring",
    "openai_azure": "drill",
    "openai_entra": "drill",
}
AZURE_API_VERSION = "2024-10-21"


@pytest.fixture(scope="session")
def secret_key() -> str:
    """The API key of every connection: distinctive, so a leak anywhere is found by grep."""
    return f"sk-SECRET-DRILL-{uuid.uuid4().hex}"


@pytest.fixture(scope="session")
def azure_key() -> str:
    """An Azure OpenAI key: 32 hex characters, nothing to recognise it by."""
    return secrets.token_hex(16)


@pytest.fixture(scope="session")
def entra_token() -> str:
    """An Entra ID access token's shape: a JWT (header.payload.signature, base64url)."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    header = part({"typ": "JWT", "alg": "RS256"})
    payload = part({"aud": "https://cognitiveservices.azure.com", "oid": str(uuid.uuid4())})
    return f"{header}.{payload}.{secrets.token_urlsafe(48)}"


@pytest.fixture(scope="session")
def system_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("system")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def emulators(
    system_root: Path, secret_key: str, azure_key: str, entra_token: str
) -> Iterator[dict[str, EmulatorHandle]]:
    # A SIGTERM (CI timeout, `timeout`) unwinds like Ctrl-C: the fixtures' teardown ends
    # every process this session started.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as stack:
        stack.callback(signal.signal, signal.SIGTERM, previous)
        handles = {
            name: stack.enter_context(
                running_emulator(
                    mode="subprocess",
                    data_dir=system_root / "emulators" / name,
                    api_key=secret_key,  # the only key they accept (drill: the Azure ones too)
                    api_keys=[secret_key, azure_key, entra_token] if name == "drill" else [secret_key],
                    startup_timeout=60,
                    **options,
                )
            )
            for name, options in EMULATORS.items()
        }
        yield handles


def _dags_folder(root: Path) -> Path:
    """The example DAGs (with their ``_lib`` and data) and the system DAGs, linked, not copied."""
    folder = root / "dags"
    folder.mkdir()
    for dag_id in EXAMPLE_DAGS:
        (folder / f"{dag_id}.py").symlink_to(EXAMPLES / f"{dag_id}.py")
    (folder / "_lib").symlink_to(EXAMPLES / "_lib", target_is_directory=True)
    for path in (Path(__file__).parent / "dags").glob("*.py"):
        (folder / path.name).symlink_to(path)
    (folder / ".airflowignore").write_text("_lib/\n")
    return folder


@pytest.fixture(scope="session")
def stack(
    system_root: Path,
    emulators: dict[str, EmulatorHandle],
    secret_key: str,
    azure_key: str,
    entra_token: str,
) -> Iterator[AirflowStack]:
    """Airflow 3 (api-server, scheduler, dag-processor, triggerer; LocalExecutor with ONE slot)."""
    connections: dict[str, dict[str, Any]] = {
        conn_id: {"conn_type": "openai", "host": emulators[name].base_url, "password": secret_key}
        for conn_id, name in CONNECTIONS.items()
    }
    azure = {"azure_endpoint": emulators["drill"].root_url, "api_version": AZURE_API_VERSION}
    connections["openai_azure"] = {"conn_type": "openai", "password": azure_key, "extra": azure}
    connections["openai_entra"] = {"conn_type": "openai", "extra": {**azure, "azure_ad_token": entra_token}}
    lineage = system_root / "openlineage"
    lineage.mkdir()
    airflow = AirflowStack(
        system_root,
        dags_folder=_dags_folder(system_root),
        connections=connections,
        env={
            "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
                {"type": "file", "log_file_path": str(lineage / "events.jsonl"), "append": True}
            ),
            "AIRFLOW__OPENLINEAGE__NAMESPACE": "system-test",
            "BATCH_DEMO_DESTINATION": (system_root / "landed" / "examples").as_uri(),
            "BATCH_DEMO_POLL_INTERVAL": "1",
        },
        parallelism=1,
    )
    try:
        airflow.start(timeout=240)
        airflow.wait_for_dags([*EXAMPLE_DAGS, *SYSTEM_DAGS], timeout=180)
        yield airflow
    finally:
        airflow.stop()


@pytest.fixture(scope="session")
def example_runs(stack: AirflowStack) -> dict[str, Any]:
    """The example DAGs, triggered at once (session-scoped: tests of any file may need them)."""
    run_ids = {dag_id: stack.trigger(dag_id, conf) for dag_id, (conf, *_rest) in EXAMPLE_RUNS.items()}
    records = {dag_id: stack.wait_for_run(dag_id, run_id, timeout=300) for dag_id, run_id in run_ids.items()}
    jobs = stack.api("GET", "/jobs", params={"job_type": "TriggererJob", "limit": 100})["jobs"]
    return {"records": records, "triggerer_jobs": {job["id"] for job in jobs}}


@pytest.fixture(scope="session")
def drill_input(system_root: Path) -> Path:
    return drills.write_input(system_root / "inputs" / "drill.jsonl")


@dataclass
class DrillRun:
    """One run of the drill DAG and where it landed."""

    record: RunRecord
    destination: Path
    conn_id: str
    emulator: EmulatorHandle
    stats_before: dict[str, Any]
    stats_after: dict[str, Any]
    observed: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.record.run_id

    def delta(self, counter: str) -> int:
        return int(self.stats_after[counter]) - int(self.stats_before[counter])


class DrillRunner:
    """Triggers the drill DAG through the REST API and waits for it."""

    def __init__(
        self, stack: AirflowStack, emulators: dict[str, EmulatorHandle], root: Path, input_path: Path
    ):
        self.stack, self.emulators, self.root, self.input_path = stack, emulators, root, input_path

    def start(
        self, name: str, *, conn_id: str = "openai_drill", **conf: Any
    ) -> tuple[str, Path, dict[str, Any]]:
        destination = self.root / "landed" / name
        emulator = self.emulators[CONNECTIONS[conn_id]]
        before = emulator.stats()
        run_id = self.stack.trigger(
            drills.DRILL_DAG,
            {"input_path": str(self.input_path), "conn_id": conn_id, "destination": str(destination), **conf},
        )
        return run_id, destination, before

    def run(
        self,
        name: str,
        *,
        conn_id: str = "openai_drill",
        timeout: float = 150,
        on_poll: Any = None,
        states: tuple[str, ...] = ("success", "failed"),
        **conf: Any,
    ) -> DrillRun:
        run_id, destination, before = self.start(name, conn_id=conn_id, **conf)
        record = self.stack.wait_for_run(
            drills.DRILL_DAG, run_id, timeout=timeout, on_poll=on_poll, states=states
        )
        emulator = self.emulators[CONNECTIONS[conn_id]]
        return DrillRun(record, destination, conn_id, emulator, before, emulator.stats())


@pytest.fixture(scope="session")
def drill_runner(
    stack: AirflowStack, emulators: dict[str, EmulatorHandle], system_root: Path, drill_input: Path
) -> DrillRunner:
    return DrillRunner(stack, emulators, system_root, drill_input)


@pytest.fixture(scope="session")
def baseline(stack: AirflowStack, drill_runner: DrillRunner) -> DrillRun:
    """The fault-free run (slow emulator, ~20 s batch). While its submit task is deferred, the
    sidecar DAG is triggered: with one executor slot it can only run if the deferral freed it."""
    observed: dict[str, Any] = {"deferred": [], "sidecar_run_id": None}

    def watch(tis: list[dict[str, Any]]) -> None:
        submit = next((t for t in tis if t["task_id"] == "submit"), None)
        if not submit or submit["state"] != "deferred":
            return
        observed["deferred"].append(
            {
                "at": time.time(),
                "trigger": submit.get("trigger"),
                "triggerer_job": submit.get("triggerer_job"),
            }
        )
        if observed["sidecar_run_id"] is None:
            observed["sidecar_run_id"] = stack.trigger(drills.SIDECAR_DAG)

    run = drill_runner.run("baseline", conn_id="openai_slow", on_poll=watch, timeout=180)
    run.observed = observed
    if observed["sidecar_run_id"]:
        observed["sidecar"] = stack.wait_for_run(drills.SIDECAR_DAG, observed["sidecar_run_id"], timeout=60)
    observed["jobs"] = stack.api("GET", "/jobs", params={"job_type": "TriggererJob", "limit": 100})["jobs"]
    return run


def wait_for_deferred(stack: AirflowStack, run_id: str, *, timeout: float = 90) -> dict[str, Any]:
    """Wait until the drill run's submit task is deferred with its trigger assigned to a triggerer."""

    def deferred() -> dict[str, Any] | None:
        ti = stack.task_instance(drills.DRILL_DAG, run_id, "submit")
        if ti["state"] == "deferred" and (ti.get("trigger") or {}).get("triggerer_id"):
            return ti
        if ti["state"] in ("failed", "success"):
            raise AssertionError(f"submit ended {ti['state']} before it was seen deferred")
        return None

    return wait_until(deferred, timeout=timeout, interval=0.3, message=f"submit of {run_id} deferred")
