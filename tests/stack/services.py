"""The non-Airflow services of the native stack: PostgreSQL, Redis and moto's S3 server.

Each runs as a child process in its own process group (never daemonized), so the stack
knows every pid it started: a drill can stop or SIGKILL one and start it again, and
:meth:`Daemon.stop`, ``atexit`` and a parent-death signal end them all.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.system.airflow_stack import _die_with_parent, free_port, wait_until

_live: list[Daemon] = []


class Daemon:
    """One long-running child process, logging to ``log``.

    :param user: run as this user (PostgreSQL refuses to run as root).
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log: Path,
        *,
        env: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> None:
        self.name, self.argv, self.log, self.env, self.user = name, list(argv), log, env, user
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running (pid {self.process.pid})")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=dict(self.env) if self.env is not None else None,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                user=self.user,
            )
        if self not in _live:
            _live.append(self)
        return self

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def check(self) -> None:
        """Raise, pointing at the log, if the process has exited."""
        if self.process is not None and self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.process.returncode}; see {self.log}")

    def stop(self, sig: int = signal.SIGTERM, *, grace: float = 20.0) -> None:
        """Send ``sig`` to the process group; SIGKILL it if the leader is still there after ``grace``."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):  # stragglers of the group
            os.killpg(self.process.pid, signal.SIGKILL)
        if self in _live:
            _live.remove(self)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _binary(name: str) -> str:
    """A PostgreSQL or Redis binary from PATH or the Debian package's directory."""
    found = shutil.which(name)
    if not found:
        for folder in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
            if (folder / name).exists():
                return str(folder / name)
        raise RuntimeError(
            f"{name} not found: install the Debian packages (apt-get install postgresql redis-server); "
            ".ci/run does this"
        )
    return found


class Postgres:
    """A throwaway PostgreSQL cluster on a free 127.0.0.1 port (trust auth, no fsync).

    Its data directory is a fresh temporary directory outside the test's basetemp (which is
    private to the test user); as root the server runs as the ``postgres`` user.
    """

    def __init__(self, log_dir: Path, *, database: str = "airflow", user: str = "airflow") -> None:
        self.port = free_port()
        self.database, self.user = database, user
        self.data = Path(tempfile.mkdtemp(prefix="stack-postgres-"))
        self.os_user = None
        if os.geteuid() == 0:
            self.os_user = "postgres" if _user_exists("postgres") else "nobody"
            uid = pwd.getpwnam(self.os_user)
            os.chown(self.data, uid.pw_uid, uid.pw_gid)
        self.log_dir = log_dir
        self.daemon = Daemon(
            "postgres",
            [
                _binary("postgres"),
                "-D",
                str(self.data / "cluster"),
                "-p",
                str(self.port),
                "-k",
                str(self.data),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ],
            log_dir / "postgres.log",
            user=self.os_user,
        )

    @property
    def url(self) -> str:
        """The SQLAlchemy URL Airflow uses."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{self.database}"

    def start(self) -> Postgres:
        cluster = self.data / "cluster"
        if not cluster.exists():
            with (self.log_dir / "initdb.log").open("ab") as log:
                subprocess.run(
                    [_binary("initdb"), "-D", str(cluster), "-U", self.user, "--auth=trust", "-E", "UTF8"],
                    check=True,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    user=self.os_user,
                    timeout=120,
                )
            self._run()
            self._create_database()
            return self
        return self._run()

    def _run(self) -> Postgres:
        self.daemon.start()
        wait_until(self._ready, timeout=60, interval=0.2, message="PostgreSQL to accept connections")
        return self

    def _ready(self) -> bool:
        self.daemon.check()
        import psycopg2

        try:
            with contextlib.closing(
                psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
            ):
                return True
        except psycopg2.OperationalError:
            return False

    def _create_database(self) -> None:
        import psycopg2

        with contextlib.closing(
            psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        ) as conn:
            conn.autocommit = True
            with conn.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{self.database}"')

    def stop(self, *, fast: bool = True) -> None:
        """Stop the server (SIGINT: PostgreSQL's fast shutdown, clients are disconnected)."""
        self.daemon.stop(signal.SIGINT if fast else signal.SIGTERM, grace=30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def redis(log_dir: Path) -> tuple[Daemon, str]:
    """redis-server on a free 127.0.0.1 port, nothing persisted; returns it and its URL."""
    port = free_port()
    daemon = Daemon(
        "redis",
        [
            _binary("redis-server"),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(log_dir),
        ],
        log_dir / "redis.log",
    ).start()
    wait_until(lambda: daemon.check() or _port_open(port), timeout=30, message="redis-server")
    return daemon, f"redis://127.0.0.1:{port}/0"


def moto_s3(log_dir: Path, bucket: str) -> tuple[Daemon, str]:
    """moto's S3 server on a free 127.0.0.1 port with ``bucket`` created; returns it and its URL."""
    port = free_port()
    daemon = Daemon(
        "moto",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        log_dir / "moto.log",
    ).start()
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: daemon.check() or _port_open(port), timeout=60, message="moto's S3 server")
    import boto3

    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="stack",
        aws_secret_access_key="stack",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return daemon, url


@atexit.register
def _stop_leftovers() -> None:
    """Last resort: a test process ending without fixture teardown still ends its services."""
    for daemon in list(_live):
        with contextlib.suppress(Exception):
            daemon.stop(signal.SIGKILL, grace=5)
