"""A real Airflow 3 deployment for system tests: api-server, scheduler, dag-processor, triggerer.

One :class:`AirflowStack` is a temporary ``AIRFLOW_HOME`` (SQLite, LocalExecutor,
SimpleAuthManager with one known admin, a fixed JWT secret and Fernet key) whose four
services run as child processes, each in its own session (process group) so that a
drill can SIGKILL one of them and everything is reaped at the end. Tests talk to it
the way users do: the REST API (``/api/v2``, token from ``/auth/token``); they read
the database read-only for what the API hides (trigger kwargs, triggerer ids).

The services and the database are parameters: ``make stack-test`` (``tests/stack/``)
runs the same class on PostgreSQL with CeleryExecutor, one Celery worker and two
triggerers.

Nothing here knows about batches: connections and extra settings come from the caller.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "drill"
T = TypeVar("T")
#: Errors of a busy server or database that a poll simply tries again after.
_RETRYABLE: tuple[type[BaseException], ...] = (httpx.HTTPError, sqlite3.Error)
with contextlib.suppress(ImportError):  # only the Postgres stack (tests/stack) needs it
    import psycopg2

    _RETRYABLE = (*_RETRYABLE, psycopg2.Error)

_live_stacks: list[AirflowStack] = []


def free_port() -> int:
    """A TCP port free right now on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.5, message: str = "condition"
) -> T:
    """Poll ``predicate`` until it returns something truthy; return it.

    :raises TimeoutError: naming ``message`` when ``timeout`` seconds pass first.
    """
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except _RETRYABLE as err:  # a busy server or DB: try again
            last_error = err
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error!r})" if last_error else ""
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {message}{detail}")
        time.sleep(interval)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the test process dies (even by SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@dataclass
class TaskState:
    """One observed state of a task instance (from polling the REST API)."""

    at: float
    task_id: str
    map_index: int
    try_number: int
    state: str | None


@dataclass
class RunRecord:
    """What :meth:`AirflowStack.wait_for_run` saw of one DAG run."""

    dag_id: str
    run_id: str
    state: str
    task_instances: list[dict[str, Any]]
    timeline: list[TaskState] = field(default_factory=list)

    def states_of(self, task_id: str) -> list[str | None]:
        """The distinct states ``task_id`` went through, in order."""
        seen: list[str | None] = []
        for item in self.timeline:
            if item.task_id == task_id and (not seen or seen[-1] != item.state):
                seen.append(item.state)
        return seen

    def ti(self, task_id: str) -> dict[str, Any]:
        return next(t for t in self.task_instances if t["task_id"] == task_id)


class AirflowStack:
    """A temporary Airflow deployment; see the module docstring.

    :param root: empty directory for ``AIRFLOW_HOME`` and the service logs.
    :param dags_folder: the DAGs folder.
    :param connections: ``{conn_id: {conn_type, host, password, extra}}``, given as
        ``AIRFLOW_CONN_<ID>`` variables to every service (so also to tasks and triggers).
    :param env: more environment for every service (e.g. OpenLineage transport).
    :param parallelism: LocalExecutor slots (1 makes "a deferred task holds no slot" testable).
    :param services: ``{name: argv after "airflow"}`` of the services to run (default: the four
        of :data:`SERVICES`, one each); e.g. two triggerers and ``celery worker``.
    :param service_env: more environment for one service only (e.g. each triggerer's log port).
    :param database_url: SQLAlchemy URL of the metadata DB (default: SQLite in ``AIRFLOW_HOME``).
    :param sample_triggers: keep a copy of every trigger row in :attr:`trigger_samples` (a thread
        reading and decrypting the trigger table every 0.3 s).
    """

    def __init__(
        self,
        root: Path,
        *,
        dags_folder: Path,
        connections: Mapping[str, Mapping[str, Any]] | None = None,
        env: Mapping[str, str] | None = None,
        parallelism: int = 1,
        services: Mapping[str, Sequence[str]] | None = None,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        database_url: str | None = None,
        sample_triggers: bool = True,
    ) -> None:
        self.root = Path(root)
        self.home = self.root / "airflow_home"
        self.logs = self.home / "logs"
        self.service_logs = self.logs / "services"
        self.dags_folder = Path(dags_folder)
        self.db_path = self.home / "airflow.db"
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.services = {name: list(argv) for name, argv in (services or {n: [n] for n in SERVICES}).items()}
        self.service_env = {name: dict(env) for name, env in (service_env or {}).items()}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.password = secrets.token_urlsafe(16)
        from cryptography.fernet import Fernet

        self.fernet_key = Fernet.generate_key().decode()
        self.env = self._environment(connections or {}, env or {}, parallelism)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None
        self._client = httpx.Client(base_url=self.base_url, timeout=30)
        self._sampler: threading.Thread | None = None
        self._sampling = threading.Event()
        self.sample_triggers = sample_triggers
        #: every trigger row seen while the stack ran, by (trigger id, triggerer id, kwargs text):
        #: SQLite reuses the id of a deleted row, so the id alone does not name one trigger.
        self.trigger_samples: dict[tuple[int, int | None, str], dict[str, Any]] = {}

    # ---- configuration -----------------------------------------------------------------

    def _environment(
        self, connections: Mapping[str, Mapping[str, Any]], extra: Mapping[str, str], parallelism: int
    ) -> dict[str, str]:
        # Start from a clean slate: no AIRFLOW* setting of the test process leaks in.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
        passwords = self.home / "simple_auth_manager_passwords.json"
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(parallelism),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__FERNET_KEY": self.fernet_key,
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(16),
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__BASE_URL": self.base_url,
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
                # Only runs triggered through the API: no scheduled run competes for the slot.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
                # A killed triggerer's triggers move to a new one after seconds, not 30 s.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "6",
                "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
                "PYTHONUNBUFFERED": "1",
                # Bytecode in a cache of its own, not beside the sources: without it every
                # service and task process compiles Airflow from source again (the venv has
                # no .pyc and `make` sets PYTHONDONTWRITEBYTECODE), seconds of CPU each.
                "PYTHONDONTWRITEBYTECODE": "",
                "PYTHONPYCACHEPREFIX": str(Path(tempfile.gettempdir()) / "airflow-batch-provider-pycache"),
            }
        )
        for conn_id, fields in connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(dict(fields))
        env.update(extra)
        return env

    # ---- lifecycle ---------------------------------------------------------------------

    def start(self, *, timeout: float = 240.0) -> AirflowStack:
        """Migrate the database, start the services, wait until all report healthy."""
        self.service_logs.mkdir(parents=True, exist_ok=True)
        (self.home / "simple_auth_manager_passwords.json").write_text(json.dumps({USERNAME: self.password}))
        _live_stacks.append(self)
        started = time.monotonic()
        self._migrate(timeout)
        for name in self.services:
            self.start_service(name)
        remaining = timeout - (time.monotonic() - started)
        self.wait_healthy(timeout=max(remaining, 30.0))
        if self.sample_triggers:
            self._start_sampler()
        return self

    def _migrate(self, timeout: float) -> None:
        with (self.service_logs / "db-migrate.log").open("ab") as log:
            result = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
                check=False,
            )
        if result.returncode:
            raise RuntimeError(f"airflow db migrate failed; see {self.service_logs / 'db-migrate.log'}")

    def start_service(self, name: str) -> subprocess.Popen[bytes]:
        """Start (or start again) one service; its output is appended to ``logs/services/<name>.log``."""
        if name not in self.services:
            raise ValueError(f"unknown service {name!r}")
        current = self.processes.get(name)
        if current is not None and current.poll() is None:
            raise RuntimeError(f"{name} is already running (pid {current.pid})")
        with (self.service_logs / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "airflow", *self.services[name]],
                env={**self.env, **self.service_env.get(name, {})},
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: kill it and its children together
                preexec_fn=_die_with_parent,
            )
        self.processes[name] = process
        return process

    def kill_service(self, name: str, sig: int = signal.SIGKILL, *, wait: float = 30.0) -> None:
        """Send ``sig`` to the service's whole process group and wait for its leader to exit."""
        process = self.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)

    def stop(self, *, grace: float = 20.0) -> None:
        """SIGTERM every service's process group, SIGKILL what is left after ``grace`` seconds."""
        self._sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for process in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(max(0.1, deadline - time.monotonic()))
        for process in self.processes.values():
            # The group may outlive its leader (task workers): kill the group regardless.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        self._client.close()
        if self in _live_stacks:
            _live_stacks.remove(self)

    def wait_healthy(self, *, timeout: float = 120.0) -> dict[str, Any]:
        """Wait until the API answers and reports scheduler, triggerer and dag-processor healthy."""

        def healthy() -> dict[str, Any] | None:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode}; see {self.service_logs / (name + '.log')}"
                    )
            response = self._client.get("/api/v2/monitor/health", timeout=5)
            if response.status_code != 200:
                return None
            data = response.json()
            parts = ("metadatabase", "scheduler", "triggerer", "dag_processor")
            ok = all((data.get(p) or {}).get("status") == "healthy" for p in parts)
            return data if ok else None

        return wait_until(healthy, timeout=timeout, interval=1.0, message="a healthy Airflow")

    # ---- REST API ----------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the known admin user, from ``POST /auth/token``."""
        if self._token is None:
            response = self._client.post(
                "/auth/token", json={"username": USERNAME, "password": self.password}, timeout=30
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, expect: Iterable[int] = (200,), **kwargs: Any) -> Any:
        """Call ``/api/v2<path>`` with the token; return the JSON body.

        Retries once on 401 (token expired) and a few times on "Database error" 500s: SQLite
        answers "database is locked" when the scheduler writes at the same moment, and the
        api-server rolls that request back, so trying again is safe.
        """
        for attempt in range(1, 7):
            headers = {"Authorization": f"Bearer {self.token()}"}
            response = self._client.request(method, f"/api/v2{path}", headers=headers, **kwargs)
            if response.status_code == 401 and attempt == 1:
                self._token = None
                continue
            if response.status_code == 500 and "Database error" in response.text and attempt < 6:
                time.sleep(attempt)
                continue
            break
        if response.status_code not in tuple(expect):
            raise AssertionError(f"{method} /api/v2{path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def wait_for_dags(self, dag_ids: Iterable[str], *, timeout: float = 120.0) -> None:
        """Wait until the dag-processor has serialized every DAG, then unpause them."""
        pending = set(dag_ids)

        def parsed() -> bool:
            for dag_id in list(pending):
                data = self.api("GET", f"/dags/{dag_id}", expect=(200, 404))
                if data and data.get("dag_id") == dag_id:
                    pending.discard(dag_id)
            return not pending

        try:
            wait_until(parsed, timeout=timeout, interval=1.0, message=f"DAGs {sorted(pending)} to be parsed")
        except TimeoutError as err:
            errors = self.api("GET", "/importErrors")
            raise TimeoutError(f"{err}; import errors: {json.dumps(errors)[:3000]}") from None
        for dag_id in dag_ids:
            self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> str:
        """Create a manual DAG run now; return its run id."""
        data = self.api(
            "POST", f"/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": dict(conf or {})}
        )
        return str(data["dag_run_id"])

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run (the API pages them: at most 100 an answer)."""
        out: list[dict[str, Any]] = []
        while True:
            data = self.api(
                "GET",
                f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances",
                params={"limit": 100, "offset": len(out), "order_by": "id"},
            )
            page = list(data["task_instances"])
            out.extend(page)
            if not page or len(out) >= int(data["total_entries"]):
                return out

    def task_instance(self, dag_id: str, run_id: str, task_id: str) -> dict[str, Any]:
        return dict(self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"))

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        """An XCom value, deserialized (``None`` when absent)."""
        data = self.api(
            "GET",
            f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
            params={"deserialize": True, "stringify": False},
            expect=(200, 404),
        )
        return None if data is None or "value" not in data else data["value"]

    def xcom_entries(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every XCom of a run, values included."""
        data = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/~/xcomEntries")
        entries = []
        for entry in data["xcom_entries"]:
            value = self.xcom(dag_id, run_id, entry["task_id"], entry["key"])
            entries.append({**entry, "value": value})
        return entries

    def clear_task(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear task instances of a run (as the UI's Clear does), so the scheduler runs them again."""
        self.api(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={
                "dry_run": False,
                "dag_run_id": run_id,
                "task_ids": task_ids,
                "reset_dag_runs": True,
                "only_failed": False,
            },
        )

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        *,
        timeout: float,
        states: tuple[str, ...] = ("success", "failed"),
        on_poll: Callable[[list[dict[str, Any]]], None] | None = None,
        interval: float = 0.4,
    ) -> RunRecord:
        """Poll the run and its task instances until the run reaches one of ``states``.

        :param on_poll: called with the task instances on every poll (drills act from it).
        :raises TimeoutError: with the task states and the tail of the scheduler log.
        """
        timeline: list[TaskState] = []
        deadline = time.monotonic() + timeout
        tis: list[dict[str, Any]] = []
        while True:
            try:
                tis = self.task_instances(dag_id, run_id)
                now = time.time()
                for ti in tis:
                    timeline.append(
                        TaskState(now, ti["task_id"], ti["map_index"], ti["try_number"], ti["state"])
                    )
                if on_poll is not None:
                    on_poll(tis)
                run = self.dag_run(dag_id, run_id)
                if run["state"] in states:
                    tis = self.task_instances(dag_id, run_id)
                    return RunRecord(dag_id, run_id, run["state"], tis, timeline)
            except httpx.HTTPError:
                pass  # a busy API server: poll again
            if time.monotonic() >= deadline:
                summary = ", ".join(f"{t['task_id']}={t['state']}(try {t['try_number']})" for t in tis)
                raise TimeoutError(
                    f"run {dag_id}/{run_id} not in {states} after {timeout:.0f}s: {summary}\n"
                    f"scheduler log tail:\n{self.service_log_tail('scheduler')}"
                )
            time.sleep(interval)

    # ---- database (read-only) and logs -------------------------------------------------

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the metadata DB, retrying while SQLite is locked.

        ``params`` use ``?`` placeholders (SQLite's); on Postgres they become ``%s``.
        """
        if self.database_url.startswith("postgresql"):
            dsn = "postgresql://" + self.database_url.split("://", 1)[1]
            with contextlib.closing(psycopg2.connect(dsn, connect_timeout=10)) as conn:
                conn.set_session(readonly=True, autocommit=True)
                with conn.cursor() as cursor:
                    cursor.execute(sql.replace("?", "%s"), params)
                    return list(cursor.fetchall())
        for attempt in range(20):
            try:
                with contextlib.closing(
                    sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
                ) as conn:
                    return list(conn.execute(sql, params).fetchall())
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or attempt == 19:
                    raise
                time.sleep(0.2)
        return []

    def decrypt(self, token: str) -> str:
        """A Fernet-encrypted DB value (trigger kwargs) as text."""
        from cryptography.fernet import Fernet

        return Fernet(self.fernet_key.encode()).decrypt(token.encode()).decode()

    def triggers(self) -> list[dict[str, Any]]:
        """Rows of the ``trigger`` table with decrypted kwargs (parsed JSON)."""
        rows = self.query("SELECT id, classpath, kwargs, triggerer_id FROM trigger")
        out = []
        for trigger_id, classpath, kwargs, triggerer_id in rows:
            text = kwargs if kwargs.startswith("{") else self.decrypt(kwargs)
            out.append(
                {
                    "id": trigger_id,
                    "classpath": classpath,
                    "kwargs": json.loads(text),
                    "kwargs_text": text,
                    "triggerer_id": triggerer_id,
                }
            )
        return out

    def _start_sampler(self) -> None:
        """Keep a copy of every trigger row (they are deleted once they fire)."""

        def sample() -> None:
            while not self._sampling.wait(0.3):
                with contextlib.suppress(Exception):
                    for row in self.triggers():
                        self.trigger_samples[(row["id"], row["triggerer_id"], row["kwargs_text"])] = row

        self._sampler = threading.Thread(target=sample, name="trigger-sampler", daemon=True)
        self._sampler.start()

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        """Every log file of a task instance (each attempt, and the triggerer's ``.trigger.<job>.log``)."""
        folder = self.logs / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def task_log_text(self, dag_id: str, run_id: str, task_id: str) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.task_log_files(dag_id, run_id, task_id))

    def service_log_tail(self, name: str, lines: int = 40) -> str:
        path = self.service_logs / f"{name}.log"
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@atexit.register
def _stop_leftovers() -> None:
    """Last resort: a test process ending without fixture teardown still ends its stacks."""
    for stack in list(_live_stacks):
        with contextlib.suppress(Exception):
            stack.stop(grace=5)
