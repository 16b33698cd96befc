"""The native production-topology stack, started once per ``make stack-test`` session."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from tests.stack import native, watch
from tests.stack.native import NativeStack

#: DAGs the drills trigger; the example DAGs are unpaused by their own drill (they have schedules).
DRILL_DAGS = ("stack_fanout", "system_batch_drill")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NativeStack]:
    # A SIGTERM (CI timeout, `timeout`) unwinds like Ctrl-C: teardown ends every process.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    with contextlib.ExitStack() as exits:
        exits.callback(signal.signal, signal.SIGTERM, previous)
        running = exits.enter_context(native.running(tmp_path_factory.mktemp("stack")))
        running.airflow.wait_for_dags(DRILL_DAGS, timeout=240)
        yield running


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if watch.REPORTS:
        terminalreporter.write_sep("=", "stack drills")
        terminalreporter.write_line(watch.table())
