"""Real local emulators of Google Cloud Storage and Azure Blob Storage, reached as users reach them.

- GCS: gcp-storage-emulator (PyPI) in its own process, through the Google provider's ``gs://``
  filesystem (gcsfs) and a ``google_cloud_platform`` connection (anonymous credentials, ``gcs.endpoint``).
- Azure: Azurite (npm, ``make test-storage`` installs it into ``.azurite/``) in its own process,
  through the Microsoft Azure provider's ``abfs://``/``abfss://`` filesystem (adlfs) and a ``wasb``
  connection holding Azurite's well-known development connection string.

Each emulator binds 127.0.0.1 on a free port, keeps its data in a temp dir and is stopped at the end.
Without the tool a test skips locally and fails under ``CI=true``, where a skip would hide that it
never ran. Every test gets a fresh bucket or container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import _free_port, _set_connection

ROOT = Path(__file__).resolve().parents[2]

# gcsfs >= 2026.9 defaults to ExtendedGcsFileSystem, which first asks each bucket's layout over
# gRPC (storage control API); no emulator speaks it, and every call would wait 60 s for it. Off,
# gcsfs is the GCSFileSystem that Extended falls back to for a standard (flat) bucket.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

#: Azurite's documented development account (public; the same in every Azurite).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


def _missing(what: str) -> None:
    if _in_ci():
        pytest.fail(f"{what} and CI=true: the storage suites must run in CI (make test-storage installs it).")
    pytest.skip(f"{what}: run `make test-storage`")


def _wait_http(url: str, process: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{name} did not answer at {url} within 60 s: {log.read_text()[-2000:]}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@dataclass
class Store:
    """A fresh bucket/container and how the tests look at it apart from the code under test."""

    scheme: str
    bucket: str
    conn_id: str
    fs: Any  # the provider's own filesystem for it

    def url(self, key: str = "") -> str:
        """``scheme://conn_id@bucket/key``: the connection named in the URL, as users write it."""
        return f"{self.scheme}://{self.conn_id}@{self.bucket}/{key}"

    def public(self, key: str = "") -> str:
        """The same location as recorded: no connection id."""
        return f"{self.scheme}://{self.bucket}/{key}"

    def keys(self) -> list[str]:
        self.fs.invalidate_cache()
        return sorted(p.split("/", 1)[1] for p in self.fs.find(self.bucket))

    def read(self, key: str) -> bytes:
        self.fs.invalidate_cache()
        return self.fs.cat_file(f"{self.bucket}/{key}")

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.bucket}/{key}", data)


@pytest.fixture(scope="session")
def gcs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """gcp-storage-emulator (with ``objects.move``, see gcs_emulator.py); yields its endpoint."""
    try:
        import gcp_storage_emulator  # noqa: F401
        import gcsfs  # noqa: F401
        from airflow.providers.google.cloud.fs import gcs  # noqa: F401
    except ImportError as err:
        _missing(f"{err.name} is not installed")
    data, log = tmp_path_factory.mktemp("gcs-data"), tmp_path_factory.mktemp("gcs-log") / "emulator.log"
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.storage_backends.gcs_emulator",
             "--port", str(port), "--data-dir", str(data)],
            cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/", process, "gcp-storage-emulator", log)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


@pytest.fixture
def gcs_store(gcs_server: str, monkeypatch: pytest.MonkeyPatch) -> Store:
    """A fresh bucket; connection ``gcp_test`` (google_cloud_platform) points at the emulator."""
    conn_id = _set_connection(
        monkeypatch, "gcp_test", conn_type="google_cloud_platform",
        extra={"is_anonymous": True, "project": "test-project", "gcs.endpoint": gcs_server},
    )  # fmt: skip
    from airflow.providers.google.cloud.fs.gcs import get_fs

    fs = get_fs(conn_id)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return Store("gs", bucket, conn_id, fs)


def _azurite_binary() -> str | None:
    found = os.environ.get("AZURITE_BLOB") or str(
        ROOT / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
    )
    return found if os.access(found, os.X_OK) else shutil.which("azurite-blob")


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Azurite's blob service; yields its connection string (the public development account)."""
    try:
        import adlfs  # noqa: F401
        from airflow.providers.microsoft.azure.fs import adls  # noqa: F401
    except ImportError as err:
        _missing(f"{err.name} is not installed")
    binary = _azurite_binary()
    if binary is None:
        _missing("Azurite (azurite-blob) is not installed")
    data, log = (
        tmp_path_factory.mktemp("azurite-data"),
        tmp_path_factory.mktemp("azurite-log") / "azurite.log",
    )
    port = _free_port()
    with log.open("wb") as out:
        process = subprocess.Popen(
            [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--location", str(data),
             "--silent", "--skipApiVersionCheck", "--disableTelemetry"],
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    try:
        _wait_http(f"{endpoint}?comp=list", process, "Azurite", log)
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"BlobEndpoint={endpoint};"
        )
    finally:
        _stop(process)


def _azure_store(azurite: str, monkeypatch: pytest.MonkeyPatch, scheme: str) -> Store:
    """A fresh container; connection ``wasb_test`` (wasb) holds Azurite's connection string."""
    conn_id = _set_connection(
        monkeypatch, "wasb_test", conn_type="wasb", extra={"connection_string": azurite}
    )
    from airflow.providers.microsoft.azure.fs.adls import get_fs

    fs = get_fs(conn_id)
    container = f"test-{uuid.uuid4().hex[:12]}"
    fs.mkdir(container)
    return Store(scheme, container, conn_id, fs)


@pytest.fixture(params=["gs", "abfs", "abfss"])
def store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Store:
    """Each store in turn: GCS, then Azure Blob Storage as ``abfs://`` and ``abfss://``."""
    if request.param == "gs":
        return request.getfixturevalue("gcs_store")
    return _azure_store(request.getfixturevalue("azurite"), monkeypatch, request.param)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Printed after the results, even with -q: the versions the suites ran with, in the CI log.
    terminalreporter.write_line(_versions())


def _versions() -> str:
    from importlib.metadata import PackageNotFoundError, version

    names = ("apache-airflow", "apache-airflow-providers-google", "gcsfs", "gcp-storage-emulator",
             "apache-airflow-providers-microsoft-azure", "adlfs", "openai")  # fmt: skip
    found = []
    for name in names:
        try:
            found.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} missing")
    binary = _azurite_binary()
    azurite = "missing"
    if binary:
        azurite = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    return f"storage backends: {', '.join(found)}, azurite {azurite}"
