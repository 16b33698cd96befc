"""The id rule, the one landing-path builder and the one public-URI function."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.exceptions import UnsafeIdError
from airflow_batch_provider.ids import MAX_SHOWN, check_server_batch, check_user_id, is_valid_id, shown
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.results.manifest import normalize_batches
from airflow_batch_provider.sensors.openai_batch import OpenAIBatchSensor
from airflow_batch_provider.storage import landing_path, public_text, public_uri
from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger

BAD_IDS = [
    "../../x",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".",
    "",
    " batch_1",
    "batch_1\n",
    "b%2F",
    "é",
    "b" * 129,
]


@pytest.mark.parametrize("good", ["batch_69c1a2b3d4e5f60718293a4b5c6d7e8f", "file-AbC123xyz", "b", "b" * 128])
def test_real_ids_are_valid(good: str) -> None:
    assert is_valid_id(good) and check_user_id(good, kind="batch id", argument="x") == good


@pytest.mark.parametrize("bad", [*BAD_IDS, None, 12, ["batch_1"]])
def test_anything_else_is_not(bad: Any) -> None:
    assert not is_valid_id(bad)
    with pytest.raises(UnsafeIdError, match="The 'batches' argument names batch id .* not a valid id"):
        check_user_id(bad, kind="batch id", argument="The 'batches' argument")


def test_a_bad_value_is_shown_escaped_and_short() -> None:
    text = shown("x\n\u202e" + "y" * 500)
    assert "\n" not in text and "\u202e" not in text and "\\u202e" in text
    assert len(text) < MAX_SHOWN + 30 and "characters)" in text


def test_server_answers_must_carry_the_id_asked_for_and_safe_file_ids() -> None:
    good = {"id": "batch_1", "input_file_id": "file-1", "output_file_id": None, "error_file_id": "file-2"}
    assert check_server_batch(good, server="https://srv/v1", request="GET /batches/batch_1", asked="batch_1")
    with pytest.raises(
        UnsafeIdError, match=r"https://srv/v1 answered GET /batches/batch_1 with batch id 'b2', not"
    ):
        check_server_batch(
            {**good, "id": "b2"}, server="https://srv/v1", request="GET /batches/batch_1", asked="batch_1"
        )
    with pytest.raises(UnsafeIdError, match=r"output_file_id 'file-1/\.\./x', which is not a valid id"):
        check_server_batch({**good, "output_file_id": "file-1/../x"}, server="s", request="r")


@pytest.mark.parametrize(
    "batches",
    [
        "../../x",  # one id
        ["batch_ok", "/abs"],  # a list of ids
        '["batch_ok", "../x"]',  # a list rendered by a template (dag_run.conf)
        {"batch_ids": ["../x"]},  # a manifest
        {"batch_ids": ["batch_ok"], "shards": [{"batch_id": "batch_ok", "input_file_id": "../f"}]},
        {"batch_ids": ["batch_ok"], "input_file_ids": ["a/b"]},
    ],
)
def test_user_ids_are_checked_in_every_shape(batches: Any) -> None:
    with pytest.raises(UnsafeIdError, match="'batches' argument names"):
        normalize_batches(batches)


def test_sensor_and_trigger_check_their_ids(tmp_path: Path) -> None:
    sensor = OpenAIBatchSensor(task_id="s", batch_ids=["batch_ok", "../../x"], deferrable=True)
    with pytest.raises(UnsafeIdError, match="'batch_ids' argument names batch id '../../x'"):
        sensor._source()
    with pytest.raises(UnsafeIdError, match="OpenAIBatchTrigger's batch_ids names batch id '/tmp'"):
        OpenAIBatchTrigger(conn_id="c", batch_ids=["/tmp"])
    fetch = OpenAIBatchFetchOperator(task_id="f", batches="..", destination=str(tmp_path))
    with pytest.raises(UnsafeIdError):
        fetch.execute({})  # before any connection, request or path
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "/abs", "a\\b", "x\x00", "?q", "a#b", "n" * 256])
def test_landing_path_refuses_names_that_leave_the_destination(tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeIdError, match="Refusing to land"):
        landing_path(tmp_path / "dest", "batch_1", name)
    with pytest.raises(UnsafeIdError, match="Refusing to land"):
        landing_path(tmp_path / "dest", name)


def test_landing_path_joins_under_the_destination(tmp_path: Path) -> None:
    path = landing_path(f"file://{tmp_path}/dest/", "batch_1", "output.jsonl")
    assert path.path == f"{tmp_path}/dest/batch_1/output.jsonl"


def test_landing_path_on_an_object_store_keeps_bucket_and_connection() -> None:
    from airflow.sdk import ObjectStoragePath

    dest = ObjectStoragePath("s3://bucket/evals/2024/", conn_id="aws_x")
    path = landing_path(dest, "batch_1", "output.jsonl")
    assert public_uri(str(path)) == "s3://bucket/evals/2024/batch_1/output.jsonl"
    for name in ("..", "../other-bucket", "/other-bucket"):
        with pytest.raises(UnsafeIdError):
            landing_path(dest, name, "output.jsonl")


@pytest.mark.parametrize(
    ("uri", "public"),
    [
        (
            "https://bucket.s3.amazonaws.com/in.jsonl?X-Amz-Signature=abc&X-Amz-Credential=AK",
            "https://bucket.s3.amazonaws.com/in.jsonl",
        ),
        ("https://host/in.jsonl#sig=1", "https://host/in.jsonl"),
        ("https://host?sig=1", "https://host"),
        (
            "abfs://container@acct.dfs.core.windows.net/in.jsonl?sv=1&sig=2",
            "abfs://acct.dfs.core.windows.net/in.jsonl",
        ),
        ("s3://aws_conn@bucket/k@v?versionId=1", "s3://bucket/k@v"),
        ("https://user:p?ss#w@host/x", "https://host/x"),
        ("file:///tmp/a?b#c.jsonl", "file:///tmp/a?b#c.jsonl"),  # local: part of the file name
        ("/tmp/a?b", "/tmp/a?b"),
        (None, None),
    ],
)
def test_public_uri_drops_user_info_query_and_fragment(uri: str | None, public: str | None) -> None:
    assert public_uri(uri) == public


def test_public_text_cleans_every_url_in_a_message() -> None:
    text = "403 Forbidden for url 'https://h/in.jsonl?X-Amz-Signature=s3cr3t' (and s3://c@b/k?x=1)"
    assert public_text(text) == "403 Forbidden for url 'https://h/in.jsonl' (and s3://b/k)"
