"""A server's answer never becomes a path, and a download never exceeds its declared size.

The emulator does the real work; :mod:`tests.integration._hostile_server` sits between it
and the provider (real HTTP, real ``openai`` SDK) and rewrites one answer the way a
compromised or broken OpenAI-compatible server would. Every test checks both that the
task fails with an error naming the server and the bad value, and what it left on disk.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.exceptions import BatchProviderError, TransferError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger
from tests.integration._fetch_support import make_context, request_lines, run_operator, submit_batch
from tests.integration._hostile_server import HostileServer, hostile_server


@pytest.fixture
def hostile(
    batch_emulator: Any, openai_connection: Callable[..., str]
) -> Iterator[tuple[HostileServer, str]]:
    """The hostile server in front of the emulator, and an ``openai`` connection to it."""
    with hostile_server(batch_emulator.base_url) as server:
        conn_id = openai_connection(
            "openai_hostile", host=server.base_url, password=batch_emulator.api_key, extra={"max_retries": 0}
        )
        yield server, conn_id


@pytest.fixture
def completed(emulator_conn_id: str) -> Any:
    """A completed batch of 3 requests, made directly on the emulator."""
    return submit_batch(OpenAIBatchHook(conn_id=emulator_conn_id), request_lines(3))


def _files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _fetch(conn_id: str, batches: Any, destination: Path) -> dict[str, Any]:
    def make() -> OpenAIBatchFetchOperator:
        return OpenAIBatchFetchOperator(
            task_id="fetch", batches=batches, destination=str(destination), conn_id=conn_id
        )

    return run_operator(make, make_context())


def _manifest(batch: Any, conn_id: str) -> dict[str, Any]:
    """A submit manifest for ``batch``, as the fetch's ``batches`` argument takes it."""
    return {
        "conn_id": conn_id,
        "batch_ids": [batch.id],
        "input_file_ids": [batch.input_file_id],
        "shards": [
            {"index": 0, "batch_id": batch.id, "input_file_id": batch.input_file_id, "start_line": 1,
             "line_count": 3, "byte_count": 1},
        ],
        "endpoint": "/v1/chat/completions",
    }  # fmt: skip


@pytest.mark.parametrize("bad", ["../../x", "ABSOLUTE", "batch_ok/../../x", "batch ok\n", "b" * 129])
def test_fetch_refuses_a_batch_id_the_server_made_up(
    hostile: tuple[HostileServer, str], completed: Any, tmp_path: Path, bad: str
) -> None:
    server, conn_id = hostile
    sandbox = tmp_path / "sandbox"
    destination = sandbox / "a" / "b" / "dest"
    if bad == "ABSOLUTE":  # an absolute id would drop the destination entirely
        bad = str(sandbox / "elsewhere")
    rule = server.rewrite_json("GET", rf"/v1/batches/{completed.id}", lambda b: {**b, "id": bad})

    with pytest.raises(BatchProviderError) as caught:
        _fetch(conn_id, _manifest(completed, conn_id), destination)

    message = str(caught.value)
    assert rule.hits >= 1
    assert server.base_url in message  # names the server
    assert ascii(bad)[:60] in message  # and the bad value, escaped and cut short
    assert len(message) < 1000 and "\n" not in message
    assert "not a valid id" in message
    assert not sandbox.exists() or _files(sandbox) == []  # nothing written, anywhere


def test_fetch_of_a_bare_id_list_answered_with_another_id_fails_clearly(
    hostile: tuple[HostileServer, str], completed: Any, tmp_path: Path
) -> None:
    """Before: ``KeyError`` deep in the fetch. Now: the same clear error as any bad answer."""
    server, conn_id = hostile
    server.rewrite_json("GET", rf"/v1/batches/{completed.id}", lambda b: {**b, "id": "batch_someone_else"})

    with pytest.raises(BatchProviderError, match=r"not the '.*' asked for") as caught:
        _fetch(conn_id, [completed.id], tmp_path / "dest")

    assert server.base_url in str(caught.value) and "'batch_someone_else'" in str(caught.value)
    assert not (tmp_path / "dest").exists() or _files(tmp_path / "dest") == []


@pytest.mark.parametrize("field", ["output_file_id", "error_file_id"])
def test_fetch_refuses_a_result_file_id_with_a_separator(
    hostile: tuple[HostileServer, str], emulator_conn_id: str, tmp_path: Path, field: str
) -> None:
    server, conn_id = hostile
    lines = request_lines(3, special={1: "[[emulator:context_length_exceeded]]"})
    batch = submit_batch(OpenAIBatchHook(conn_id=emulator_conn_id), lines)
    assert batch.output_file_id and batch.error_file_id
    server.rewrite_json("GET", rf"/v1/batches/{batch.id}", lambda b: {**b, field: "file-x/../../../y"})

    with pytest.raises(BatchProviderError, match=re.escape(field)) as caught:
        _fetch(conn_id, [batch.id], tmp_path / "sandbox" / "dest")

    assert server.base_url in str(caught.value) and "'file-x/../../../y'" in str(caught.value)
    assert not (tmp_path / "sandbox").exists() or _files(tmp_path / "sandbox") == []


def test_list_pages_with_a_bad_id_fail_the_listing(
    hostile: tuple[HostileServer, str], completed: Any
) -> None:
    """The re-attach search (submit, resubmission) reads list pages: one bad item fails it."""
    server, conn_id = hostile
    server.rewrite_json(
        "GET",
        r"/v1/batches/?",
        lambda page: {**page, "data": [*page["data"], {**page["data"][0], "id": "../x"}]},
    )
    server.rewrite_json(
        "GET",
        r"/v1/files/?",
        lambda page: {**page, "data": [*page["data"], {**page["data"][0], "id": "/etc"}]},
    )
    hook = OpenAIBatchHook(conn_id=conn_id)

    with pytest.raises(BatchProviderError, match=r"GET /batches \(a list page\) with batch id '\.\./x'"):
        hook.find_batches({"airflow_identity": "x"})
    with pytest.raises(BatchProviderError, match=r"GET /files \(a list page\) with file id '/etc'"):
        list(hook.iter_files(purpose="batch"))


def test_trigger_fails_on_a_list_page_with_a_bad_id(
    hostile: tuple[HostileServer, str], emulator_conn_id: str
) -> None:
    """The triggerer's shared poller reads list pages for five or more ids: a bad item there
    ends the wait with an error naming the server, instead of being cached and served."""
    server, conn_id = hostile
    hook = OpenAIBatchHook(conn_id=emulator_conn_id)
    ids = [submit_batch(hook, request_lines(1, prefix=f"p{i}")).id for i in range(5)]
    rule = server.rewrite_json(
        "GET", r"/v1/batches/?", lambda page: {**page, "data": [{**page["data"][0], "id": "../../evil"}]}
    )
    trigger = OpenAIBatchTrigger(conn_id=conn_id, batch_ids=ids, poll_interval=0.05)

    async def first() -> dict[str, Any]:
        async for event in trigger.run():
            return event.payload
        raise AssertionError("no event")

    event = asyncio.run(asyncio.wait_for(first(), 60))

    assert rule.hits >= 1
    assert event["status"] == "error" and event["reason"] == "polling_error"
    assert server.base_url in event["message"] and "'../../evil'" in event["message"]


def test_a_download_longer_than_the_declared_size_is_refused(
    hostile: tuple[HostileServer, str], completed: Any, tmp_path: Path
) -> None:
    server, conn_id = hostile
    file_id = completed.output_file_id
    declared: list[int] = []

    def shrink(file: dict[str, Any]) -> dict[str, Any]:
        declared.append(file["bytes"] - 7)
        return {**file, "bytes": file["bytes"] - 7}

    server.rewrite_json("GET", rf"/v1/files/{file_id}", shrink)
    target = tmp_path / "out" / "output.jsonl"

    with pytest.raises(TransferError, match=r"sent more than the \d+ bytes it declared") as caught:
        OpenAIBatchHook(conn_id=conn_id).download_file(file_id, str(target))

    assert f"{declared[0]} bytes" in str(caught.value) and server.base_url in str(caught.value)
    assert not target.exists() and _files(tmp_path / "out") == []  # no file, no temporary left


def test_a_download_of_the_declared_size_lands(
    hostile: tuple[HostileServer, str], completed: Any, tmp_path: Path
):
    """The same path through the hostile server, unchanged answers: the file lands."""
    _, conn_id = hostile
    landed = OpenAIBatchHook(conn_id=conn_id).download_file(completed.output_file_id, tmp_path / "o.jsonl")
    assert landed.bytes == (tmp_path / "o.jsonl").stat().st_size > 0
