"""The docker stack cannot run here (no engine): check that what it names matches the code."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_batch_provider.emulator.server import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"


#: What a user's docker/.env holds (docker/.env.example says how to make one).
SAMPLE_ENV = {
    "AIRFLOW_JWT_SECRET": "0123456789abcdef" * 4,
    "EMULATOR_API_KEY": "sk-local-0123456789abcdef",
    "MINIO_ROOT_USER": "airflow",
    "MINIO_ROOT_PASSWORD": "fedcba9876543210",
}
REQUIRED = tuple(SAMPLE_ENV)
_VARIABLE = re.compile(r"\$\$|\$\{(\w+)(?:(:\?|:-)([^}]*))?\}")


class MissingVariable(Exception):
    pass


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose's interpolation of every string in ``value``: ``$$``, ``${V}``, ``${V:-default}``,
    ``${V:?error}`` (unset or empty is an error)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        found = env.get(name, "")
        if op == ":?" and not found:
            raise MissingVariable(f"{name}: {arg}")
        return found or (arg if op == ":-" else "")

    return _VARIABLE.sub(one, value)


def _raw() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yaml").read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return interpolate(_raw(), SAMPLE_ENV)


def test_every_secret_comes_from_dot_env_and_compose_refuses_to_start_without_it() -> None:
    text = (DOCKER / "docker-compose.yaml").read_text()
    for fixed in ("change-me", "minioadmin", "sk-emulator"):
        assert fixed not in text
    for name in REQUIRED:
        with pytest.raises(MissingVariable, match=rf"{name}: set {name} in docker/.env"):
            interpolate(_raw(), {k: v for k, v in SAMPLE_ENV.items() if k != name})
    example = dict(
        line.split("=", 1)
        for line in (DOCKER / ".env.example").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert set(REQUIRED) <= set(example)
    assert all(example[name] == "" for name in REQUIRED)  # no shared default secret to copy
    with pytest.raises(MissingVariable):
        interpolate(_raw(), example)
    assert "docker/.env" in (ROOT / ".gitignore").read_text().splitlines()
    env = _airflow_env(interpolate(_raw(), SAMPLE_ENV))
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == SAMPLE_ENV["AIRFLOW_JWT_SECRET"]


def test_ports_are_published_on_127_0_0_1_by_default() -> None:
    published = {
        name: service["ports"]
        for name, service in interpolate(_raw(), SAMPLE_ENV)["services"].items()
        if service.get("ports")
    }
    assert set(published) == {"emulator", "minio", "airflow-apiserver"}
    for ports in published.values():
        for port in ports:
            assert port.startswith("127.0.0.1:") and port.count(":") == 2, port
    opened = interpolate(_raw(), {**SAMPLE_ENV, "BIND_ADDRESS": "0.0.0.0"})
    assert opened["services"]["airflow-apiserver"]["ports"] == ["0.0.0.0:8080:8080"]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DOCKER / "Dockerfile").read_text()


def _airflow_env(compose: dict[str, Any]) -> dict[str, str]:
    return compose["x-airflow-common"]["environment"]


def test_image_tag_is_the_airflow_we_test(dockerfile: str) -> None:
    makefile = (ROOT / "Makefile").read_text()
    newest = re.search(r"^AIRFLOW_VERSION \?= (\S+)", makefile, re.M)
    image = re.search(r"AIRFLOW_IMAGE=apache/airflow:(\d+\.\d+\.\d+)-python(\d+\.\d+)", dockerfile)
    assert newest and image, "Makefile AIRFLOW_VERSION and Dockerfile AIRFLOW_IMAGE must both be set"
    assert image.group(1) == newest.group(1)
    assert image.group(2) in {"3.10", "3.11", "3.12", "3.13"}


def test_dockerfile_copies_paths_that_exist(dockerfile: str) -> None:
    for line in dockerfile.splitlines():
        if line.startswith("COPY"):
            sources = [p for p in shlex.split(line)[1:-1] if not p.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies missing path {source}"


def test_emulator_command_is_accepted_by_the_cli(compose: dict[str, Any]) -> None:
    command = compose["services"]["emulator"]["command"]
    assert command[:2] == ["airflow-batch", "emulator"]
    args = build_parser().parse_args(command[2:])
    published = compose["services"]["emulator"]["ports"][0]
    assert published.rsplit(":", 1)[1] == str(args.port)
    # The preset connection must point at that port, on the service name, under /v1, with its key.
    conn = json.loads(_airflow_env(compose)["AIRFLOW_CONN_OPENAI_DEFAULT"])
    assert conn["conn_type"] == "openai"
    assert conn["host"] == f"http://emulator:{args.port}/v1"
    assert args.api_keys == [conn["password"]] == [SAMPLE_ENV["EMULATOR_API_KEY"]]


def test_console_script_exists() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'airflow-batch = "airflow_batch_provider.cli:main"' in pyproject


def test_minio_connection_matches_minio_service(compose: dict[str, Any]) -> None:
    env = _airflow_env(compose)
    conn = json.loads(env["AIRFLOW_CONN_AWS_MINIO"])
    minio = compose["services"]["minio"]["environment"]
    assert conn["login"] == minio["MINIO_ROOT_USER"]
    assert conn["password"] == minio["MINIO_ROOT_PASSWORD"]
    assert conn["extra"]["endpoint_url"] == "http://minio:9000"
    assert env["BATCH_DEMO_STORAGE_CONN_ID"] == "aws_minio"
    bucket = env["BATCH_DEMO_DESTINATION"].removeprefix("s3://").strip("/")
    init = compose["services"]["minio-init"]
    assert f"local/{bucket}" in init["entrypoint"][-1]
    assert '"$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"' in init["entrypoint"][-1]
    assert init["environment"] == minio


def test_airflow_config_variables_exist(compose: dict[str, Any]) -> None:
    from tests.stack import topology

    for name in _airflow_env(compose):
        if not name.startswith("AIRFLOW__"):
            continue
        section, key = name.removeprefix("AIRFLOW__").lower().split("__", 1)
        if section == "celery":  # owned by the celery provider, which the image has and this venv lacks
            assert key in {"broker_url", "result_backend"}
            continue
        assert topology.is_airflow_option(name), f"{name} is not an Airflow option"


def test_airflow_services_run_real_airflow_commands(compose: dict[str, Any]) -> None:
    expected = {
        "airflow-apiserver": ["api-server"],
        "airflow-scheduler": ["scheduler"],
        "airflow-dag-processor": ["dag-processor"],
        "airflow-triggerer": ["triggerer"],
        "airflow-worker": ["celery", "worker"],
    }
    for service, command in expected.items():
        assert compose["services"][service]["command"] == command
    assert compose["services"]["airflow-apiserver"]["ports"] == ["127.0.0.1:8080:8080"]
    env = _airflow_env(compose)
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"].startswith("http://airflow-apiserver:8080/")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"


def test_examples_env_variables_are_read_by_the_examples(compose: dict[str, Any]) -> None:
    sources = "\n".join(p.read_text() for p in (ROOT / "dags_examples").rglob("*.py"))
    for name in ("BATCH_DEMO_DESTINATION", "BATCH_DEMO_STORAGE_CONN_ID"):
        assert name in _airflow_env(compose)
        assert name in sources, f"no example DAG reads {name}"
