"""``make airflow`` / ``make stop`` plumbing: processes are recorded by pid and stopped by it.

The full stack (four Airflow services) is too slow for the test suite; these tests run
the same spawn/status/stop code on stand-in processes (each with a child, as the
api-server and scheduler have) and check nothing is left behind.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from devtools import devstack

CHILD = (
    "import subprocess, sys, time; "
    "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not devstack._is_zombie(pid)  # exited, not yet reaped by its parent: gone


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, IndexError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_spawn_status_and_stop_end_each_process_group(tmp_path: Path, capsys) -> None:
    stack = devstack.Stack(tmp_path)
    stack.logs.mkdir(parents=True)
    stack.demo.mkdir(exist_ok=True)
    for name in devstack.ALL_SERVICES:
        stack.spawn(name, [sys.executable, "-c", CHILD])
    pids = {name: stack.pid(name) for name in devstack.ALL_SERVICES}
    assert all(pids.values())
    assert {p.name for p in stack.demo.glob("*.pid")} == {f"{n}.pid" for n in devstack.ALL_SERVICES}
    deadline = time.monotonic() + 10
    while not all(_children(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    children = [c for pid in pids.values() for c in _children(pid)]
    assert len(children) == len(pids)
    assert devstack.status(stack) == 0

    assert devstack.stop(stack, grace=10) == 0
    assert "Stopped" in capsys.readouterr().out
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in [*pids.values(), *children]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in [*pids.values(), *children] if _alive(p)]
    assert not list(stack.demo.glob("*.pid"))
    assert devstack.status(stack) == 1
    assert devstack.stop(stack) == 0
    assert "Nothing was running" in capsys.readouterr().out


def test_stale_pid_file_is_not_a_running_service(tmp_path: Path) -> None:
    stack = devstack.Stack(tmp_path)
    stack.demo.mkdir()
    stack.pid_file("scheduler").write_text("999999999")
    assert stack.pid("scheduler") is None
    stack.pid_file("triggerer").write_text("garbage")
    assert stack.pid("triggerer") is None


def test_every_process_listens_on_127_0_0_1_only(tmp_path: Path) -> None:
    """Airflow's own CLI parser and configuration read what ``make airflow`` runs: the api-server
    on 127.0.0.1, the scheduler's health check on 127.0.0.1, no log servers (they bind 0.0.0.0)."""
    import subprocess

    from airflow.cli.cli_parser import get_parser

    parser = get_parser()
    for name in devstack.AIRFLOW_SERVICES:
        argv = devstack.service_argv(name, 8080)
        assert argv[:3] == [sys.executable, "-m", "airflow"]
        args = parser.parse_args(argv[3:])
        if name == "api-server":
            assert args.host == "127.0.0.1" and args.port == 8080
        if name in ("scheduler", "triggerer"):
            assert args.skip_serve_logs is True

    stack = devstack.Stack(tmp_path)
    stack.home.mkdir(parents=True)
    env = stack.environment(8080, "http://127.0.0.1:1/v1", "sk-emulator")
    script = (
        "from airflow.configuration import conf; "
        "print(conf.get('api', 'host'), conf.get('scheduler', 'scheduler_health_check_server_host'), "
        "conf.get('api', 'base_url'), conf.get('core', 'execution_api_server_url'))"
    )
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == [
        "127.0.0.1",
        "127.0.0.1",
        "http://127.0.0.1:8080",
        "http://127.0.0.1:8080/execution/",
    ]
