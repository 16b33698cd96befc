"""docker/docker-compose.yaml and the native stack of ``make stack-test`` follow one topology
(tests/stack/topology.py): a service or setting in one and not the other fails here."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from tests.stack import native, topology

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker" / "docker-compose.yaml").read_text())


@pytest.fixture
def native_stack(tmp_path: Path) -> Any:
    emulators = {name: SimpleNamespace(base_url=f"http://127.0.0.1:1/{name}") for name in native.EMULATORS}
    return native.airflow_stack(
        tmp_path,
        database_url="postgresql+psycopg2://airflow@127.0.0.1:5/airflow",
        broker_url="redis://127.0.0.1:6/0",
        s3_url="http://127.0.0.1:7",
        secret_key="sk-test",
        emulators=emulators,  # type: ignore[arg-type]
    )


def _settings(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("AIRFLOW__")}


def test_compose_runs_exactly_the_topology_services(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) - set(topology.INIT_JOBS) == {s.compose for s in topology.SERVICES.values()}
    for name, service in topology.SERVICES.items():
        spec = services[service.compose]
        replicas = (spec.get("deploy") or {}).get("replicas", 1)
        assert replicas == service.replicas, f"{service.compose}: {replicas} replicas, topology says {name}"
        if service.command:
            assert spec["command"] == list(service.command), service.compose


def test_compose_restarts_failed_airflow_services_as_the_native_supervisor_does(
    compose: dict[str, Any],
) -> None:
    assert compose["x-airflow-common"]["restart"] == topology.RESTART == "on-failure"
    for service in topology.SERVICES.values():
        if service.command:
            assert compose["services"][service.compose].get("restart", topology.RESTART) == topology.RESTART


def test_compose_sets_the_topology_settings(compose: dict[str, Any]) -> None:
    env = _settings(compose["x-airflow-common"]["environment"])
    expected = set(topology.SETTINGS) | topology.PER_DEPLOYMENT
    assert set(env) - expected == set(), "in compose, not in tests/stack/topology.py"
    assert expected - set(env) == set(), "in tests/stack/topology.py, not in compose"
    for key, value in topology.SETTINGS.items():
        assert str(env[key]) == value, key


def test_native_stack_runs_the_topology_services(native_stack: Any) -> None:
    assert set(native_stack.services) == set(topology.airflow_services())
    for name, argv in topology.airflow_services().items():
        assert native_stack.services[name][: len(argv)] == list(argv), name
    assert sum(name.startswith("triggerer") for name in native_stack.services) == 2
    assert native_stack.services["celery-worker"][:2] == ["celery", "worker"]


def test_native_services_run_no_log_server_listening_beyond_localhost(native_stack: Any) -> None:
    # Airflow's serve-logs binds every interface: the worker and the triggerers skip it.
    for name, argv in native_stack.services.items():
        if name.startswith("triggerer") or name == "celery-worker":
            assert "--skip-serve-logs" in argv, name
    non_airflow = {name for name, s in topology.SERVICES.items() if not s.command}
    assert non_airflow == {"postgres", "redis", "emulator", "s3"}  # started by tests/stack/native.py


def test_native_stack_sets_the_topology_settings(native_stack: Any) -> None:
    env = _settings(native_stack.env)
    for extra in native_stack.service_env.values():  # per process (each triggerer)
        env.update(_settings(extra))
    allowed = set(topology.SETTINGS) | topology.PER_DEPLOYMENT | set(topology.NATIVE_ONLY)
    assert set(env) - allowed == set(), "set natively, not in tests/stack/topology.py"
    assert (set(topology.SETTINGS) | topology.PER_DEPLOYMENT) - set(env) == set()
    assert set(topology.NATIVE_ONLY) - set(env) == set(), "NATIVE_ONLY names a setting nobody sets"
    for key, value in topology.SETTINGS.items():
        assert env[key] == value, key


def test_every_setting_is_an_airflow_option() -> None:
    for name in [*topology.SETTINGS, *topology.PER_DEPLOYMENT, *topology.NATIVE_ONLY]:
        if name.startswith("AIRFLOW__"):
            assert topology.is_airflow_option(name), f"{name} is not an Airflow option"
