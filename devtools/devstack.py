"""``make airflow`` / ``make stop``: a full local Airflow with the emulator and the example DAGs.

    python -m devtools.devstack start [--port 8080] [--profile realistic]
    python -m devtools.devstack stop
    python -m devtools.devstack status

``start`` runs, in the background and detached from the terminal: the emulator (fake
model), then ``airflow api-server``, ``scheduler``, ``dag-processor`` and ``triggerer``
(LocalExecutor, sqlite, Airflow home ``.demo/stack``), with ``dags_examples/`` as the
DAGs folder, unpaused, and ``openai_default`` pointing at the emulator. Each process
writes ``.demo/<name>.pid`` and ``.demo/stack/logs/<name>.log``. Results land under
``demo-output/airflow/``. ``stop`` ends exactly those processes (their process groups,
by the recorded ids).

Everything listens on 127.0.0.1 only: the api-server makes every user admin without a
login, so it must not be reachable from the network. The emulator gets ``--host``, the
api-server ``--host`` and ``[api] host``, the scheduler's health check its host setting, and
the scheduler and triggerer skip their log servers (Airflow binds those to every interface;
the api-server reads the task logs from the shared log folder instead).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

AIRFLOW_SERVICES = ("api-server", "scheduler", "dag-processor", "triggerer")
#: The only interface any process of the local stack listens on.
HOST = "127.0.0.1"
ALL_SERVICES = ("emulator", *AIRFLOW_SERVICES)
_PREFIX = "Emulator listening on "


class Stack:
    """Paths and environment of the local stack rooted at ``root`` (the repository).

    :param root: the repository root (has ``dags_examples/``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.demo = root / ".demo"
        self.home = self.demo / "stack"
        self.logs = self.home / "logs"
        self.results = root / "demo-output" / "airflow"

    def pid_file(self, name: str) -> Path:
        return self.demo / f"{name}.pid"

    def pid(self, name: str) -> int | None:
        """The recorded pid of ``name`` if that process is still alive."""
        try:
            pid = int(self.pid_file(name).read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return None if _is_zombie(pid) else pid

    def _secret(self, name: str, make: str) -> str:
        path = self.home / name
        if not path.exists():
            path.write_text(make)
        return path.read_text().strip()

    def environment(self, port: int, emulator_url: str, api_key: str) -> dict[str, str]:
        """Environment of every Airflow process."""
        from cryptography.fernet import Fernet

        env = dict(os.environ)
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.root / "dags_examples"),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",  # the examples start right away
                "AIRFLOW__CORE__FERNET_KEY": self._secret("fernet.key", Fernet.generate_key().decode()),
                "AIRFLOW__CORE__AUTH_MANAGER": (
                    "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
                ),
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # local only: no login
                "AIRFLOW__API__HOST": HOST,
                "AIRFLOW__API__PORT": str(port),
                "AIRFLOW__API__BASE_URL": f"http://{HOST}:{port}",
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{port}/execution/",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": HOST,
                "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt.secret", secrets.token_urlsafe(32)),
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.logs / "tasks"),
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
                "AIRFLOW_CONN_OPENAI_DEFAULT": json.dumps(
                    {"conn_type": "openai", "host": emulator_url, "password": api_key}
                ),
                "BATCH_DEMO_DESTINATION": self.results.as_uri(),
                "BATCH_DEMO_POLL_INTERVAL": "5",
            }
        )
        env.pop("BATCH_DEMO_STORAGE_CONN_ID", None)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` detached (own session, so it outlives ``make``), log to a file, record its pid."""
        log = (self.logs / f"{name}.log").open("ab")
        process = subprocess.Popen(
            argv,
            env=env,
            cwd=self.root,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid_file(name).write_text(str(process.pid))
        return process


def _is_zombie(pid: int) -> bool:
    """True for a process that exited but was not reaped yet (Linux; elsewhere always False)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def _airflow(*args: str) -> list[str]:
    return [sys.executable, "-m", "airflow", *args]


def service_argv(name: str, port: int) -> list[str]:
    """The command of one Airflow service, listening on :data:`HOST` only (or not at all).

    :param name: one of :data:`AIRFLOW_SERVICES`.
    :param port: the api-server's port.
    """
    if name == "api-server":
        return _airflow(name, "--host", HOST, "--port", str(port))
    if name in ("scheduler", "triggerer"):
        return _airflow(name, "--skip-serve-logs")  # its log server would listen on 0.0.0.0
    return _airflow(name)


def _start_emulator(stack: Stack, profile: str, port: int) -> str:
    """Start the emulator; return its base URL (read from its log's first line)."""
    log = stack.logs / "emulator.log"
    log.write_text("")
    argv = [
        sys.executable,
        "-m",
        "airflow_batch_provider.emulator",
        "--host",
        HOST,
        "--port",
        str(port),
        "--data-dir",
        str(stack.home / "emulator"),
        "--profile",
        profile,
    ]
    process = stack.spawn("emulator", argv)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for line in log.read_text(errors="replace").splitlines():
            if line.startswith(_PREFIX):
                return line[len(_PREFIX) :].strip()
        if process.poll() is not None:
            raise SystemExit(f"The emulator exited ({process.returncode}); see {log}")
        time.sleep(0.2)
    raise SystemExit(f"The emulator did not start within 60 s; see {log}")


def _wait_for_ui(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://{HOST}:{port}/api/v2/monitor/health", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(1)
    return False


def start(stack: Stack, *, port: int, profile: str, emulator_port: int) -> int:
    """Start every service that is not running yet."""
    running = {name: stack.pid(name) for name in ALL_SERVICES}
    if all(running.values()):
        print(f"Already running (pids {running}); UI at http://{HOST}:{port}. `make stop` ends it.")
        return 0
    if any(running.values()):
        stop(stack)  # a half-started stack: start clean
    stack.logs.mkdir(parents=True, exist_ok=True)
    stack.results.mkdir(parents=True, exist_ok=True)

    emulator_url = _start_emulator(stack, profile, emulator_port)
    print(f"Emulator ({profile} profile, fake model): {emulator_url}", flush=True)
    env = stack.environment(port, emulator_url, "sk-emulator")

    import airflow

    stamp = stack.home / f".migrated-{airflow.__version__}"
    if not stamp.exists():
        print("Migrating the Airflow database (once) ...", flush=True)
        with (stack.logs / "db-migrate.log").open("ab") as log:
            subprocess.run(
                _airflow("db", "migrate"),
                env=env,
                cwd=stack.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                check=True,
            )
        stamp.touch()

    for name in AIRFLOW_SERVICES:
        stack.spawn(name, service_argv(name, port), env)
    print(f"Started {', '.join(AIRFLOW_SERVICES)}; waiting for the UI ...", flush=True)
    if not _wait_for_ui(port, 180):
        print(f"The API server is not answering yet; see {stack.logs / 'api-server.log'}")
        return 1
    print(
        "\n".join(
            [
                "",
                f"Airflow UI: http://{HOST}:{port}  (on 127.0.0.1 only: every user is admin, no login)",
                f"Emulator batches: {emulator_url.removesuffix('/v1')}/_emulator/batches",
                "DAGs: dags_examples/ (unpaused: nightly_eval and embedding_refresh start now; "
                "trigger classify_dataset with max_requests_per_batch=400 to see several batches)",
                f"Results: {stack.results.relative_to(stack.root)}/   "
                f"Logs: {stack.logs.relative_to(stack.root)}/   "
                f"Pids: {stack.demo.relative_to(stack.root)}/*.pid",
                "Stop: make stop",
            ]
        )
    )
    return 0


def stop(stack: Stack, *, grace: float = 20.0) -> int:
    """SIGTERM each recorded process group, then SIGKILL what is left after ``grace`` seconds."""
    pids = {name: stack.pid(name) for name in reversed(ALL_SERVICES)}
    live = {name: pid for name, pid in pids.items() if pid}
    for pid in live.values():
        try:
            os.killpg(pid, signal.SIGTERM)  # its own session: the group is it and its children
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while live and time.monotonic() < deadline:
        live = {name: pid for name, pid in live.items() if stack.pid(name)}
        time.sleep(0.3)
    for pid in live.values():
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for name in ALL_SERVICES:
        stack.pid_file(name).unlink(missing_ok=True)
    ended = [name for name, pid in pids.items() if pid]
    print(f"Stopped {', '.join(ended)}." if ended else "Nothing was running.")
    return 0


def status(stack: Stack) -> int:
    """Print each service and whether it runs; exit 0 if all do."""
    pids = {name: stack.pid(name) for name in ALL_SERVICES}
    for name, pid in pids.items():
        print(f"{name:14} {'running, pid ' + str(pid) if pid else 'stopped'}")
    return 0 if all(pids.values()) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.devstack",
        description="A local Airflow with the emulator and the example DAGs.",
    )
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=int(os.environ.get("AIRFLOW_PORT", "8080")))
    parser.add_argument("--emulator-port", type=int, default=0, help="default: a free port")
    parser.add_argument(
        "--profile",
        default=os.environ.get("EMULATOR_PROFILE", "realistic"),
        choices=["instant", "fast", "realistic"],
        help="emulator timing (default realistic: batches take a little while to watch)",
    )
    args = parser.parse_args(argv)
    from devtools.demo import find_root

    stack = Stack(find_root())
    if args.command == "start":
        return start(stack, port=args.port, profile=args.profile, emulator_port=args.emulator_port)
    if args.command == "stop":
        return stop(stack)
    return status(stack)


if __name__ == "__main__":
    sys.exit(main())
