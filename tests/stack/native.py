"""The production topology (:mod:`tests.stack.topology`), started natively for ``make stack-test``.

PostgreSQL, Redis and moto's S3 server (:mod:`tests.stack.services`), the emulators,
and the Airflow services of the topology (api-server, scheduler, dag-processor, two
triggerers, one Celery worker) through :class:`tests.system.airflow_stack.AirflowStack`,
the class the SQLite system tests use. Everything binds to 127.0.0.1 on free ports and
runs as a child process group of the test process.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_batch_provider.emulator.testing import EmulatorHandle, running_emulator
from tests.stack import topology
from tests.stack.services import Daemon, Postgres, moto_s3, redis
from tests.system.airflow_stack import AirflowStack, RunRecord, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "dags_examples"
EXAMPLE_DAGS = ("nightly_eval", "embedding_refresh", "embedding_search", "classify_dataset")
BUCKET = "batch-results"

#: name -> emulator options. ``main`` serves the examples (batches validate for 8 s: the
#: examples have no retries, see apache/airflow#72716 in tests/system/README.md); ``drill``
#: keeps batches validating for 30 s, so that a fan-out is held by the triggerers at once.
EMULATORS: dict[str, dict[str, Any]] = {
    "main": {"profile": "fast", "requests_per_second": 50, "validation_delay": 8},
    "drill": {"profile": "fast", "requests_per_second": 200, "validation_delay": 30},
    # The failover drill kills a triggerer while it holds several batches: they stay validating
    # long enough for that however slowly a loaded machine starts the tasks.
    "failover": {"profile": "fast", "requests_per_second": 200, "validation_delay": 120},
    # The capacity drill's batches never leave ``validating``: its triggers wait throughout.
    "capacity": {"profile": "fast", "validation_delay": 86400},
}
CONNECTIONS = {
    "openai_default": "main",
    "openai_drill": "drill",
    "openai_failover": "failover",
    "openai_capacity": "capacity",
}
#: The hostname each triggerer's job records (tests.stack.hostname): names its process.
TRIGGERER_HOSTS = ("127.0.0.1", "localhost")

#: Values the native harness sets for its own purposes (see ``topology.NATIVE_ONLY``).
NATIVE_SETTINGS = {
    # Executor slots (queued + running; a deferred task holds none): the worker's eight and as
    # many waiting in Redis. More only queues tasks in Redis, where a loaded machine leaves them
    # past task_queued_timeout (then Airflow requeues and finally fails them), while tasks
    # resuming from the triggerer wait behind them.
    "AIRFLOW__CORE__PARALLELISM": "16",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY": "8",
    # A killed worker's task is retried after this; a starved supervisor must not cross it.
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "60",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
    # Every DAG file is in place when the stack starts: parse each at start, then every 10 min
    # (Airflow's 30 s re-parses six files 12 times a minute, a sixth of a core here).
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
    # Eight task processes and the drills share one api-server worker on two busy cores.
    "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "60",
    # Importing a DAG file takes 30 s and more when two cores run ten task processes.
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "300",
    "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "300",
    # The watchdog sleeps 100 ms and logs when the loop took longer than this: a stall > 100 ms.
    "AIRFLOW__TRIGGERER__BLOCKED_MAIN_THREAD_WARNING_THRESHOLD": "0.2",
    # The base harness turns schedules off; here Airflow's default, as in compose: the
    # example DAGs run on their schedules, embedding_search on embedding_refresh's Asset.
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
}


def dags_folder(root: Path) -> Path:
    """The example DAGs, the system drill DAG and the stack's DAGs, linked."""
    folder = root / "dags"
    folder.mkdir()
    for path in EXAMPLES.glob("*.py"):
        (folder / path.name).symlink_to(path)
    (folder / "_lib").symlink_to(EXAMPLES / "_lib", target_is_directory=True)
    (folder / "system_batch_drill.py").symlink_to(
        REPO / "tests" / "system" / "dags" / "system_batch_drill.py"
    )
    for path in (Path(__file__).parent / "dags").glob("*.py"):
        (folder / path.name).symlink_to(path)
    (folder / ".airflowignore").write_text("_lib/\n")
    return folder


class Supervisor:
    """Starts again an Airflow service that exited with a non-zero status, as compose's
    ``restart: on-failure`` (topology.RESTART) does. A service a drill kills (by a signal) stays down."""

    def __init__(self, airflow: AirflowStack) -> None:
        self.airflow = airflow
        #: (time, service, exit status) of every restart
        self.restarts: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="supervisor", daemon=True)

    def start(self) -> Supervisor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            for name, process in list(self.airflow.processes.items()):
                code = process.poll()
                if code is not None and code > 0 and not self._stop.is_set():
                    self.restarts.append((time.time(), name, code))
                    with contextlib.suppress(Exception):
                        self.airflow.start_service(name)


@dataclass
class NativeStack:
    """A running native stack (see the module docstring)."""

    root: Path
    postgres: Postgres
    redis: Daemon
    s3: Daemon
    s3_url: str
    emulators: dict[str, EmulatorHandle]
    airflow: AirflowStack
    supervisor: Supervisor
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def triggerers(self) -> list[str]:
        return [name for name in self.airflow.services if name.startswith("triggerer")]

    def restart_postgres(self, downtime: float = 5.0) -> None:
        """Fast shutdown (clients are cut off), ``downtime`` seconds down, start again."""
        self.postgres.stop(fast=True)
        time.sleep(downtime)
        self.postgres.start()

    def healthy(self) -> bool:
        """The api-server reports the database, scheduler, triggerer and dag-processor healthy."""
        data = self.airflow.api("GET", "/monitor/health")
        parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
        return all((data.get(p) or {}).get("status") == "healthy" for p in parts)

    def wait_for_run(self, dag_id: str, run_id: str, *, timeout: float, interval: float = 5.0) -> RunRecord:
        """Wait for a run to end, polling only its state; then read its task instances once.

        Polling every task instance of a hundred-task run (as :meth:`AirflowStack.wait_for_run`
        does for its timeline) would keep the one api-server worker busy that the tasks need.
        """

        def ended() -> str | None:
            state = str(self.airflow.dag_run(dag_id, run_id)["state"])
            return state if state in ("success", "failed") else None

        try:
            state = wait_until(ended, timeout=timeout, interval=interval, message=f"run {dag_id}/{run_id}")
        except TimeoutError as err:
            counts: dict[tuple[str, str | None], int] = {}
            for ti in self.airflow.task_instances(dag_id, run_id):
                key = (ti["task_id"], ti["state"])
                counts[key] = counts.get(key, 0) + 1
            tail = self.airflow.service_log_tail("scheduler")
            raise TimeoutError(f"{err}; task states {counts}\nscheduler log tail:\n{tail}") from None
        return RunRecord(dag_id, run_id, state, self.airflow.task_instances(dag_id, run_id))

    def kill_worker(self) -> None:
        self.airflow.kill_service("celery-worker", signal.SIGKILL)

    def triggerer_jobs(self) -> dict[int, str]:
        """``{TriggererJob id: triggerer process name}`` of every job (a SIGKILLed one stays "running")."""
        rows = self.airflow.query("SELECT id, hostname FROM job WHERE job_type = 'TriggererJob'")
        return {int(job_id): self.triggerers[TRIGGERER_HOSTS.index(host)] for job_id, host in rows}

    def current_job(self, triggerer: str) -> int:
        """The job id of a triggerer process's latest start."""
        return max(job for job, name in self.triggerer_jobs().items() if name == triggerer)


def airflow_environment(database_url: str, broker_url: str, *, s3_url: str, dags: Path) -> dict[str, str]:
    """What the native stack adds to :class:`AirflowStack`'s environment: the topology's settings,
    its per-deployment ones (addresses, secrets) and the harness's own."""
    env = dict(topology.SETTINGS)
    env.update(
        {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
            "AIRFLOW__CELERY__BROKER_URL": broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + database_url.replace("+psycopg2", ""),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        }
    )
    env.update(NATIVE_SETTINGS)
    env.update(
        {
            "AIRFLOW_CONN_AWS_S3": (
                '{"conn_type": "aws", "login": "stack", "password": "stack", '
                f'"extra": {{"endpoint_url": "{s3_url}", "region_name": "us-east-1"}}}}'
            ),
            "BATCH_DEMO_DESTINATION": f"s3://{BUCKET}/examples/",
            "BATCH_DEMO_STORAGE_CONN_ID": "aws_s3",
            "BATCH_DEMO_POLL_INTERVAL": "1",
            # The stack's DAGs import tests.stack and tests.system modules.
            "PYTHONPATH": str(REPO),
        }
    )
    return env


def airflow_stack(
    root: Path,
    *,
    database_url: str,
    broker_url: str,
    s3_url: str,
    secret_key: str,
    emulators: dict[str, EmulatorHandle],
) -> AirflowStack:
    """The Airflow services of the topology (not started)."""
    dags = dags_folder(root)
    connections = {
        conn_id: {"conn_type": "openai", "host": emulators[name].base_url, "password": secret_key}
        for conn_id, name in CONNECTIONS.items()
    }
    services = topology.airflow_services(native=True)
    # Each triggerer serves its logs on a port of its own (one host here, one container each in compose).
    triggerers = [name for name in services if name.startswith("triggerer")]
    service_env = {
        name: {
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.stack.hostname.hostname",
            "STACK_HOSTNAME": TRIGGERER_HOSTS[i],
        }
        for i, name in enumerate(triggerers)
    }
    # Task processes fork from the worker: it imports the provider once for all of them.
    service_env["celery-worker"] = {
        "AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "tests.stack.celery_preload.CONFIG",
    }
    return AirflowStack(
        root,
        dags_folder=dags,
        connections=connections,
        env=airflow_environment(database_url, broker_url, s3_url=s3_url, dags=dags),
        parallelism=int(NATIVE_SETTINGS["AIRFLOW__CORE__PARALLELISM"]),
        services=services,
        service_env=service_env,
        database_url=database_url,
        sample_triggers=False,  # the drills watch the trigger table themselves (tests.stack.watch)
    )


@contextlib.contextmanager
def running(root: Path) -> Iterator[NativeStack]:
    """Start the whole stack under ``root``; stop everything on exit, also on errors."""
    logs = root / "services"
    logs.mkdir(parents=True, exist_ok=True)
    secret_key = f"sk-STACK-{secrets.token_hex(8)}"
    timings: dict[str, float] = {}
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        postgres = Postgres(logs)
        stack.callback(postgres.remove)
        postgres.start()
        broker, broker_url = redis(logs)
        stack.callback(broker.stop)
        s3, s3_url = moto_s3(logs, BUCKET)
        stack.callback(s3.stop)
        emulators = {
            name: stack.enter_context(
                running_emulator(
                    mode="subprocess",
                    data_dir=root / "emulators" / name,
                    api_key=secret_key,
                    startup_timeout=60,
                    **options,
                )
            )
            for name, options in EMULATORS.items()
        }
        timings["backing services"] = time.monotonic() - started
        airflow = airflow_stack(
            root,
            database_url=postgres.url,
            broker_url=broker_url,
            s3_url=s3_url,
            secret_key=secret_key,
            emulators=emulators,
        )
        stack.callback(airflow.stop)
        airflow.start(timeout=600)
        supervisor = Supervisor(airflow).start()
        stack.callback(supervisor.stop)
        timings["airflow healthy"] = time.monotonic() - started
        yield NativeStack(root, postgres, broker, s3, s3_url, emulators, airflow, supervisor, timings)
