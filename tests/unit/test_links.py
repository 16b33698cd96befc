"""Extra links: names, keys, XCom reads, and never raising."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_batch_provider import links
from airflow_batch_provider.links import (
    BATCH_IDS_XCOM_KEY,
    BATCH_LINKS_XCOM_KEY,
    LANDED_MANIFEST_XCOM_KEY,
    OpenAIBatchLink,
    OpenAIBatchManifestLink,
    batch_links,
    persist_batch_links,
    storage_browser_url,
)

TI_KEY = SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)


@pytest.fixture
def xcom(monkeypatch):
    """XCom values as the worker would read them (no task runtime in a unit test)."""
    store: dict[str, object] = {}

    def get_value(*, ti_key, key):
        if key not in store:
            return None
        value = store[key]
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(links.XCom, "get_value", staticmethod(get_value))
    return store


class FakeTI:
    def __init__(self, fail=False):
        self.pushed: dict[str, object] = {}
        self.fail = fail

    def xcom_push(self, key, value):
        if self.fail:
            raise RuntimeError("no xcom")
        self.pushed[key] = value


class FakeHook:
    def batch_console_url(self, batch_id):
        if batch_id == "broken":
            raise RuntimeError("boom")
        if batch_id == "none":
            return None
        return f"http://127.0.0.1:1/_emulator/batches/{batch_id}"


def test_names_and_keys_are_distinct():
    declared = batch_links()
    assert len(declared) == links.MAX_BATCH_LINKS
    assert declared[0].name == "OpenAI Batch"
    assert declared[1].name == "OpenAI Batch 2"
    assert len({link.name for link in declared}) == len(declared)
    assert (
        len({link.xcom_key for link in declared} | {OpenAIBatchManifestLink().xcom_key}) == len(declared) + 1
    )


def test_console_url_from_xcom(xcom):
    xcom[BATCH_LINKS_XCOM_KEY] = ["https://platform.openai.com/batches/b1", "http://x/_emulator/batches/b2"]
    assert OpenAIBatchLink(0).get_link(None, ti_key=TI_KEY) == "https://platform.openai.com/batches/b1"
    assert OpenAIBatchLink(1).get_link(None, ti_key=TI_KEY) == "http://x/_emulator/batches/b2"
    assert OpenAIBatchLink(2).get_link(None, ti_key=TI_KEY) == ""


@pytest.mark.parametrize(
    "value", [None, "not-a-list", {"a": 1}, [None], ["javascript:alert(1)"], RuntimeError("db")]
)
def test_broken_links_are_empty_never_raise(xcom, value):
    xcom[BATCH_LINKS_XCOM_KEY] = value
    assert OpenAIBatchLink(0).get_link(None, ti_key=TI_KEY) == ""


def test_without_task_runtime_returns_empty():
    # No supervisor to ask: XCom.get_value raises inside, the link says "".
    assert OpenAIBatchLink(0).get_link(None, ti_key=TI_KEY) == ""
    assert OpenAIBatchManifestLink().get_link(None, ti_key=TI_KEY) == ""


def test_persist_batch_links_pushes_ids_and_urls():
    ti = FakeTI()
    urls = persist_batch_links({"ti": ti}, FakeHook(), ["b1", "broken", "none"])
    assert urls == ["http://127.0.0.1:1/_emulator/batches/b1", "", ""]
    assert ti.pushed == {BATCH_IDS_XCOM_KEY: ["b1", "broken", "none"], BATCH_LINKS_XCOM_KEY: urls}


def test_persist_batch_links_survives_xcom_failure():
    assert persist_batch_links({"ti": FakeTI(fail=True)}, FakeHook(), ["b1"]) == [
        "http://127.0.0.1:1/_emulator/batches/b1"
    ]


def test_manifest_link(xcom):
    xcom[LANDED_MANIFEST_XCOM_KEY] = "s3://bucket/runs/1/manifest.json"
    url = OpenAIBatchManifestLink().get_link(None, ti_key=TI_KEY)
    assert url == "https://s3.console.aws.amazon.com/s3/object/bucket?prefix=runs/1/manifest.json"


def test_manifest_link_of_a_fetch_still_waiting_reads_no_xcom(monkeypatch):
    # The task SDK logs "[error] XCom not found" for a missing key: a waiting fetch asks nothing.
    reads: list[str] = []

    def get_value(*, ti_key, key):
        reads.append(key)

    monkeypatch.setattr(links.XCom, "get_value", staticmethod(get_value))
    waiting = SimpleNamespace(_landed_manifest_uri="")
    assert OpenAIBatchManifestLink().get_link(waiting, ti_key=TI_KEY) == ""
    assert reads == []
    landed = SimpleNamespace(_landed_manifest_uri="s3://bucket/runs/1/manifest.json")
    assert OpenAIBatchManifestLink().get_link(landed, ti_key=TI_KEY).startswith("https://s3.console")


def test_persist_landed_manifest_tells_the_operator():
    operator, ti = SimpleNamespace(_landed_manifest_uri=""), FakeTI()
    links.persist_landed_manifest({"ti": ti}, "s3://b/manifest.json", operator)
    assert operator._landed_manifest_uri == "s3://b/manifest.json"
    assert ti.pushed == {LANDED_MANIFEST_XCOM_KEY: "s3://b/manifest.json"}


@pytest.mark.parametrize(
    ("uri", "url"),
    [
        (
            "gs://b/k/manifest.json",
            "https://console.cloud.google.com/storage/browser/_details/b/k/manifest.json",
        ),
        ("/data/out/manifest.json", "file:///data/out/manifest.json"),
        ("file:///data/out/manifest.json", "file:///data/out/manifest.json"),
        ("https://host/m.json", "https://host/m.json"),
        ("", ""),
        (None, ""),
    ],
)
def test_storage_browser_url(uri, url):
    assert storage_browser_url(uri) == url
