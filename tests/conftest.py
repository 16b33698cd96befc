"""Shared test fixtures. Add yours; do not remove others' lines."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests import tiktoken_cache

pytest_plugins = ["airflow_batch_provider.emulator.pytest_plugin"]

os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

# tiktoken's encodings, seeded offline from a package that ships them (tests/tiktoken_cache.py):
# no test downloads one, and exact token counts work without internet. The processes a test
# starts (system test, subprocesses) inherit the variable.
os.environ.setdefault(
    "TIKTOKEN_CACHE_DIR", os.path.join(tempfile.gettempdir(), "airflow-batch-provider-tiktoken")
)
tiktoken_cache.seed(os.environ["TIKTOKEN_CACHE_DIR"])


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _set_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, **fields: Any) -> str:
    """Define an Airflow connection the way deployments do: an AIRFLOW_CONN_<ID> env var (JSON)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(fields))
    return conn_id


# --- openai connections (hook) ---


@pytest.fixture
def openai_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Factory: ``openai_connection("openai_x", host=..., password=..., extra={...})`` -> conn id."""

    def make(conn_id: str = "openai_default", **fields: Any) -> str:
        return _set_connection(monkeypatch, conn_id, conn_type="openai", **fields)

    return make


@pytest.fixture
def emulator_conn_id(batch_emulator: Any, openai_connection: Callable[..., str]) -> str:
    """An ``openai`` connection (``openai_emulator``) pointing at the running emulator."""
    return openai_connection(
        "openai_emulator",
        host=batch_emulator.base_url,
        password=batch_emulator.api_key,
        extra={"max_retries": 8},
    )


# --- S3 (moto in server mode) reached through ObjectStoragePath and an aws connection ---


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto) on a free port; yields its endpoint URL.

    moto is in the dev extra: without it the S3 tests skip locally, and fail in CI
    (``CI=true``), where a skip would hide that they never ran.
    """
    try:
        from moto.server import ThreadedMotoServer
    except ImportError:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            raise
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def aws_test_bucket(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; reach it as users do:
    ``ObjectStoragePath(f"s3://{bucket}/key", conn_id="aws_test")`` (connection ``AIRFLOW_CONN_AWS_TEST``
    with an ``endpoint_url`` extra). Returns the bucket name."""
    import uuid

    import boto3

    _set_connection(
        monkeypatch,
        "aws_test",
        conn_type="aws",
        login="testing",
        password="testing",
        extra={"endpoint_url": moto_server, "region_name": "us-east-1"},
    )
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    return bucket
