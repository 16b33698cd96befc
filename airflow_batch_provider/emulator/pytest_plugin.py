"""Pytest plugin with the ``batch_emulator`` fixture.

Enable it in a ``conftest.py``::

    pytest_plugins = ["airflow_batch_provider.emulator.pytest_plugin"]

and use it::

    def test_my_batch(batch_emulator):
        client = batch_emulator.client()           # openai.OpenAI pointed at the emulator
        ...

    @pytest.mark.emulator(requests_per_second=20, completion_window_seconds=2)
    def test_slow_batch(batch_emulator): ...

The fixture is function-scoped: a fresh server (instant profile, its own data dir)
per test. The ``emulator`` marker passes options to
:func:`airflow_batch_provider.emulator.testing.running_emulator`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_batch_provider.emulator.testing import EmulatorHandle, running_emulator


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``emulator`` marker."""
    config.addinivalue_line(
        "markers", "emulator(**options): options for the batch_emulator fixture (see running_emulator)"
    )


@pytest.fixture
def batch_emulator(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[EmulatorHandle]:
    """A running emulator (instant profile) for one test; see :class:`EmulatorHandle`."""
    marker = request.node.get_closest_marker("emulator")
    options = {"profile": "instant", "data_dir": tmp_path / "emulator", **(marker.kwargs if marker else {})}
    with running_emulator(**options) as handle:
        yield handle
