"""Start a real emulator server for tests: :func:`running_emulator` and :class:`EmulatorHandle`.

Example::

    from airflow_batch_provider.emulator.testing import running_emulator

    with running_emulator(profile="instant") as emulator:
        client = openai.OpenAI(base_url=emulator.base_url, api_key=emulator.api_key)
        ...

The server runs in a thread of the calling process (``mode="thread"``, fast to
start) or in a child process (``mode="subprocess"``, which ``restart(kill=True)``
can kill mid-batch). Either way clients talk to it over real HTTP.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from airflow_batch_provider.emulator.config import DEFAULT_API_KEY
from airflow_batch_provider.emulator.server import bind_socket, build_parser, make_server, settings_from_args

_PREFIX = "Emulator listening on "


def options_to_argv(options: dict[str, Any]) -> list[str]:
    """Turn keyword options into CLI arguments (``requests_per_second=5`` -> ``--requests-per-second 5``).

    :param options: option names as in the CLI, with underscores; ``api_keys`` is a list,
        ``faults`` a dict.
    :raises TypeError: for an option the CLI does not have.
    """
    known = {action.dest for action in build_parser()._actions}
    argv: list[str] = []
    for key, value in options.items():
        if key not in known:
            raise TypeError(f"unknown emulator option {key!r}; known: {', '.join(sorted(known - {'help'}))}")
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if key == "api_keys":
            for api_key in [value] if isinstance(value, str) else value:
                argv += ["--api-key", api_key]
        elif key == "faults":
            argv += [flag, json.dumps(value)]
        elif value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


class EmulatorHandle:
    """A running emulator server.

    :param argv: CLI arguments (without ``--host``, ``--port``, ``--data-dir``).
    :param data_dir: the state directory.
    :param host: interface.
    :param port: port (0 = a free one; kept across restarts).
    :param api_key: the key clients should use.
    :param mode: ``thread`` or ``subprocess``.
    :param startup_timeout: seconds to wait for the server (a bound for failure only: generous,
        so a loaded CI machine does not cross it).
    """

    def __init__(
        self,
        argv: list[str],
        *,
        data_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        mode: str = "thread",
        startup_timeout: float = 120.0,
    ) -> None:
        if mode not in ("thread", "subprocess"):
            raise ValueError("mode must be 'thread' or 'subprocess'")
        self.argv = argv
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self.api_key = api_key
        self.mode = mode
        self.startup_timeout = startup_timeout
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._sock: Any = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def root_url(self) -> str:
        """``http://HOST:PORT`` (the emulator's own pages live under ``/_emulator``)."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL, ``http://HOST:PORT/v1``."""
        return f"{self.root_url}/v1"

    # Lifecycle ------------------------------------------------------------------------------

    def start(self) -> EmulatorHandle:
        """Start the server and wait until it answers."""
        full = [*self.argv, "--host", self.host, "--port", str(self.port), "--data-dir", str(self.data_dir)]
        if self.mode == "thread":
            self._start_thread(full)
        else:
            self._start_process(full)
        self._wait_healthy()
        return self

    def _start_thread(self, argv: list[str]) -> None:
        args = build_parser().parse_args(argv)
        settings = settings_from_args(args, self.data_dir)
        self._sock = bind_socket(self.host, self.port)
        self.port = self._sock.getsockname()[1]
        self._server = make_server(settings, log_level=args.log_level, configure_logging=False)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="batch-emulator", daemon=True
        )
        self._thread.start()

    def _start_process(self, argv: list[str]) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = (self.data_dir / "server.log").open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "airflow_batch_provider.emulator", *argv],
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self._process.stdout is not None
        line = self._read_first_line(self._process.stdout)
        if not line.startswith(_PREFIX):
            raise RuntimeError(f"the emulator did not start: {line!r}; see {self.data_dir / 'server.log'}")
        self.port = int(line[len(_PREFIX) :].rsplit(":", 1)[1].split("/")[0])
        # Keep reading stdout so the child never blocks on a full pipe.
        threading.Thread(target=self._process.stdout.read, daemon=True).start()

    def _read_first_line(self, stream: IO[bytes]) -> str:
        result: list[bytes] = []
        reader = threading.Thread(target=lambda: result.append(stream.readline()), daemon=True)
        reader.start()
        reader.join(self.startup_timeout)
        return result[0].decode().strip() if result else ""

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                raise RuntimeError(f"the emulator exited; see {self.data_dir / 'server.log'}")
            if self._thread is not None and not self._thread.is_alive():
                raise RuntimeError("the emulator thread stopped during startup")
            try:
                if httpx.get(f"{self.root_url}/_emulator/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.02)
        raise TimeoutError(f"the emulator did not answer within {self.startup_timeout} s")

    def stop(self, *, kill: bool = False) -> None:
        """Stop the server (its data dir stays).

        :param kill: subprocess mode: SIGKILL, as a crash would (thread mode always stops cleanly).
        """
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(15)
            self._sock.close()
            self._server = self._thread = self._sock = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
                try:
                    self._process.wait(15)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def restart(self, *, kill: bool = False) -> EmulatorHandle:
        """Stop and start again on the same port and data dir; running batches resume.

        :param kill: subprocess mode: SIGKILL first, as a crash would.
        """
        self.stop(kill=kill)
        return self.start()

    # Helpers --------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """``GET /_emulator/stats``."""
        return dict(httpx.get(f"{self.root_url}/_emulator/stats", timeout=10).raise_for_status().json())

    def control_headers(self) -> dict[str, str]:
        """Headers of a request to a control route (``POST /_emulator/...``): the API key."""
        return {"Authorization": f"Bearer {self.api_key}"}

    def configure_faults(self, config: dict[str, Any]) -> dict[str, Any]:
        """``POST /_emulator/faults`` with a full configuration (``{}`` clears every fault).

        :param config: ``{"routes": {ROUTE: SPEC}, "seed": n}``.
        """
        response = httpx.post(
            f"{self.root_url}/_emulator/faults", json=config, headers=self.control_headers(), timeout=10
        )
        return dict(response.raise_for_status().json())

    def set_faults(self, route: str = "*", **spec: Any) -> dict[str, Any]:
        """Inject faults on one route (replacing all rules); no ``spec`` clears them.

        Example: ``set_faults("batches.retrieve", error_429=1.0, retry_after=0.2, max_faults=2)``.

        :param route: a route name such as ``files.content``, or ``*`` for every route.
        :param spec: ``error_500``, ``error_503``, ``error_429``, ``retry_after``, ``latency``,
            ``cut_off``, ``max_faults``.
        """
        return self.configure_faults({"routes": {route: spec}} if spec else {})

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self.configure_faults({})

    def client(self, **kwargs: Any) -> Any:
        """An ``openai.OpenAI`` client for this server.

        :param kwargs: more client arguments (``max_retries``, ``timeout``...).
        """
        import openai

        return openai.OpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def async_client(self, **kwargs: Any) -> Any:
        """An ``openai.AsyncOpenAI`` client for this server.

        :param kwargs: more client arguments.
        """
        import openai

        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key, **kwargs)

    def batch_page_url(self, batch_id: str) -> str:
        """The HTML page of a batch.

        :param batch_id: the batch.
        """
        return f"{self.root_url}/_emulator/batches/{batch_id}"

    def connection_env(self, conn_id: str = "openai_default") -> tuple[str, str]:
        """An Airflow connection to this server, as ``(AIRFLOW_CONN_<ID>, JSON)``.

        :param conn_id: the connection id.
        """
        value = json.dumps({"conn_type": "openai", "host": self.base_url, "password": self.api_key})
        return f"AIRFLOW_CONN_{conn_id.upper()}", value


@contextmanager
def running_emulator(
    *,
    data_dir: str | os.PathLike[str] | None = None,
    profile: str = "instant",
    mode: str = "thread",
    host: str = "127.0.0.1",
    port: int = 0,
    api_key: str = DEFAULT_API_KEY,
    startup_timeout: float = 120.0,
    **options: Any,
) -> Iterator[EmulatorHandle]:
    """Run an emulator for the duration of a ``with`` block.

    :param data_dir: state directory (default: a temporary one, removed afterwards).
    :param profile: ``instant`` (default), ``fast`` or ``realistic``.
    :param mode: ``thread`` (default) or ``subprocess``.
    :param host: interface.
    :param port: port (0 = a free one).
    :param api_key: the key clients use; accepted unless ``api_keys`` says otherwise.
    :param startup_timeout: seconds to wait for the server (a bound for failure only: generous,
        so a loaded CI machine does not cross it).
    :param options: any CLI option with underscores, e.g. ``requests_per_second=20``,
        ``completion_window_seconds=2``, ``faults={...}``, ``backend="upstream"``,
        ``upstream_url=...``, ``api_keys=[...]``, ``accept_any_key=True``, ``max_requests=10``.
    """
    options.setdefault("api_keys", [api_key])
    argv = ["--profile", profile, *options_to_argv(options)]
    temporary = data_dir is None
    directory = Path(tempfile.mkdtemp(prefix="batch-emulator-")) if temporary else Path(str(data_dir))
    handle = EmulatorHandle(
        argv,
        data_dir=directory,
        host=host,
        port=port,
        api_key=api_key,
        mode=mode,
        startup_timeout=startup_timeout,
    )
    try:
        yield handle.start()
    finally:
        handle.stop()
        if temporary:
            shutil.rmtree(directory, ignore_errors=True)
