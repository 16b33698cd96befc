"""What OpenAIBatchHook sends and how it takes each answer, against a scripted local HTTP server.

The emulator covers behaviour end to end (tests/integration); here the server answers
exactly what a case needs: a 401 that echoes the key, a create that fails after it
succeeded, a body cut at a chosen byte.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import pytest

from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchNotFoundError,
    BatchProviderError,
    BatchServiceError,
    TransferError,
)
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from tests.unit.hook_http import Reply, Request, ScriptedServer, batch_json, error, file_json

KEY = "sk-http-test-secret-abcdefghijkl"


@pytest.fixture
def hook_for(openai_connection):
    def make(server: ScriptedServer, **extra) -> OpenAIBatchHook:
        extra.setdefault("max_retries", 2)
        conn_id = openai_connection("openai_http", host=f"{server.url}/v1", password=KEY, extra=extra)
        return OpenAIBatchHook(conn_id)

    return make


def test_headers_and_paths_sent_to_an_openai_compatible_server(hook_for):
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_7"))) as server:
        hook = hook_for(server, organization="org-1", project="proj_2")
        assert hook.get_batch("batch_7").id == "batch_7"
    (request,) = server.requests
    assert (request.method, request.path) == ("GET", "/v1/batches/batch_7")
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["openai-organization"] == "org-1"
    assert request.headers["openai-project"] == "proj_2"


def test_azure_sends_api_key_header_and_api_version_on_openai_paths(openai_connection):
    def route(request: Request) -> Reply:
        if request.path.endswith("/files"):
            return Reply(200, file_json("file-az", 3))
        if request.method == "GET" and request.path.endswith("/batches"):
            return Reply(200, {"object": "list", "data": [], "has_more": False})
        return Reply(200, batch_json("batch_az"))

    with ScriptedServer(route) as server:
        conn_id = openai_connection(
            "openai_azure_http",
            password=KEY,
            extra={
                "azure_endpoint": server.url,
                "api_version": "2025-03-01-preview",
                "azure_deployment": "gpt-4o-batch",
            },
        )
        hook = OpenAIBatchHook(conn_id)
        hook.upload_file([b'{"a": 1}'], filename="in.jsonl")
        hook.create_batch("file-az", "/v1/chat/completions")
        hook.get_batch("batch_az")
        assert hook.test_connection()[0]  # create and the Test button use the client's copies
    upload, create, get, listing = server.requests
    # Files and Batches are not deployment-scoped on Azure: /openai/<resource>, never /deployments/
    # (openai before 3.14.1 lost that routing in with_options(): hooks/clients.with_options).
    assert [r.path for r in (upload, create, get, listing)] == [
        "/openai/files",
        "/openai/batches",
        "/openai/batches/batch_az",
        "/openai/batches",
    ]
    for request in server.requests:
        assert request.query["api-version"] == ["2025-03-01-preview"]
        assert request.headers["api-key"] == KEY
        assert "authorization" not in request.headers
    assert json.loads(create.body)["endpoint"] == "/v1/chat/completions"
    assert b'filename="in.jsonl"' in upload.body and b'{"a": 1}\n' in upload.body


def test_401_becomes_batch_auth_error_without_the_key(hook_for):
    reply = error(401, f"Incorrect API key provided: {KEY}.", code="invalid_api_key")
    with ScriptedServer(lambda r: reply) as server:
        hook = hook_for(server)
        with pytest.raises(BatchAuthError) as info:
            hook.get_batch("batch_1")
    message = str(info.value)
    assert KEY not in message and "API Key" in message and "openai_http" in message
    assert len(server.requests) == 1  # never retried


def test_403_points_at_permissions(hook_for):
    with ScriptedServer(lambda r: error(403, "You are not allowed")) as server:
        with pytest.raises(BatchAuthError, match="organization"):
            hook_for(server).cancel_batch("batch_1")


def test_404_becomes_not_found(hook_for):
    with ScriptedServer(lambda r: error(404, "No batch found with id 'batch_x'.")) as server:
        with pytest.raises(BatchNotFoundError, match="batch_x"):
            hook_for(server).get_batch("batch_x")


def test_404_from_a_host_without_v1_says_to_add_v1(openai_connection):
    with ScriptedServer(lambda r: error(404, "Not Found")) as server:
        conn_id = openai_connection("openai_no_v1", host=server.url, password=KEY, extra={"max_retries": 0})
        with pytest.raises(BatchNotFoundError) as info:
            OpenAIBatchHook(conn_id).get_batch("batch_x")
    message = str(info.value)
    assert f"set the host of connection 'openai_no_v1' to {server.url}/v1" in message
    assert "organization" not in message


async def test_a_missing_connection_names_the_variable_to_set(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_OPENAI_NOWHERE", raising=False)
    with pytest.raises(Exception, match=r"AIRFLOW_CONN_OPENAI_NOWHERE='\{\"conn_type\": \"openai\"") as sync:
        OpenAIBatchHook("openai_nowhere").get_conn()
    assert type(sync.value).__name__ == "AirflowNotFoundException"  # callers catching it still do
    with pytest.raises(Exception, match="AIRFLOW_CONN_OPENAI_NOWHERE"):
        await OpenAIBatchHook("openai_nowhere").get_async_conn()


def test_400_is_not_retried_and_says_what_to_fix(hook_for):
    with ScriptedServer(lambda r: error(400, "completion_window must be 24h")) as server:
        with pytest.raises(BatchProviderError, match="completion_window must be 24h") as info:
            hook_for(server).create_batch("file-1", "/v1/chat/completions", completion_window="1h")
    assert type(info.value) is BatchProviderError
    assert "not retried" in str(info.value)
    assert len(server.calls("POST", "/batches")) == 1


def test_429_honours_retry_after(hook_for):
    replies = iter([error(429, "slow down", **{"Retry-After": "1"}), Reply(200, batch_json())])
    with ScriptedServer(lambda r: next(replies)) as server:
        started = time.monotonic()
        hook_for(server).get_batch("batch_1")
        elapsed = time.monotonic() - started
    assert len(server.requests) == 2
    assert elapsed >= 0.9
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"


def test_5xx_retried_then_service_error(hook_for):
    with ScriptedServer(lambda r: error(503, "overloaded", **{"retry-after-ms": "10"})) as server:
        with pytest.raises(BatchServiceError, match="after 2 retries"):
            hook_for(server, max_retries=2).get_batch("batch_1")
    assert len(server.requests) == 3


def test_insufficient_quota_is_not_retried(hook_for):
    with ScriptedServer(lambda r: error(429, "You exceeded your quota", code="insufficient_quota")) as server:
        with pytest.raises(BatchServiceError, match="quota"):
            hook_for(server, max_retries=0).get_batch("batch_1")


def test_unreachable_host_is_a_service_error(openai_connection):
    conn_id = openai_connection(
        "openai_down", host="http://127.0.0.1:9/v1", password=KEY, extra={"max_retries": 0}
    )
    with pytest.raises(BatchServiceError, match="could not connect") as info:
        OpenAIBatchHook(conn_id).get_batch("batch_1")
    assert KEY not in str(info.value)


def test_create_that_failed_after_creating_is_not_repeated(hook_for):
    created: list[dict] = []

    def route(request: Request) -> Reply:
        if request.method == "POST":
            body = json.loads(request.body)
            created.append(batch_json(f"batch_{len(created)}", created_at=int(time.time()), **body))
            return error(502, "bad gateway", **{"retry-after-ms": "10"})  # ...but it was created
        return Reply(200, {"object": "list", "data": created[::-1], "has_more": False})

    with ScriptedServer(route) as server:
        batch = hook_for(server).create_batch(
            "file-in", "/v1/chat/completions", metadata={"airflow_identity": "abc"}
        )
    assert batch.id == "batch_0"
    assert len(created) == 1
    assert batch.metadata == {"airflow_identity": "abc"}


def test_create_rate_limited_is_retried_without_a_lookup(hook_for):
    replies = iter([error(429, "slow", **{"retry-after-ms": "10"}), Reply(200, batch_json("batch_ok"))])
    with ScriptedServer(lambda r: next(replies)) as server:
        assert hook_for(server).create_batch("file-in", "/v1/embeddings").id == "batch_ok"
    assert [r.method for r in server.requests] == ["POST", "POST"]


def test_cancel_of_a_finished_batch_returns_it(hook_for):
    def route(request: Request) -> Reply:
        return Reply(200, batch_json("batch_1", status="completed"))

    with ScriptedServer(route) as server:
        assert hook_for(server).cancel_batch("batch_1").status == "completed"
    assert not server.calls("POST", "/cancel")


def test_cancel_refused_because_it_just_finished(hook_for):
    states = iter(["in_progress", "completed"])

    def route(request: Request) -> Reply:
        if request.method == "POST":
            return error(400, "Cannot cancel a batch with status completed")
        return Reply(200, batch_json("batch_1", status=next(states)))

    with ScriptedServer(route) as server:
        assert hook_for(server).cancel_batch("batch_1").status == "completed"


def test_iter_batches_follows_pages_and_find_batches_filters(hook_for):
    batches = [batch_json(f"batch_{i}", metadata={"k": "v" if i % 2 else "w", "i": str(i)}) for i in range(5)]

    def route(request: Request) -> Reply:
        after = request.query.get("after", [None])[0]
        start = 0 if after is None else [b["id"] for b in batches].index(after) + 1
        page = batches[start : start + 2]
        return Reply(200, {"object": "list", "data": page, "has_more": start + 2 < len(batches)})

    with ScriptedServer(route) as server:
        hook = hook_for(server)
        assert [b.id for b in hook.iter_batches()] == [b["id"] for b in batches]
        assert [b.id for b in hook.find_batches({"k": "v"})] == ["batch_1", "batch_3"]
        assert hook.find_batches({"k": "v", "i": "3"})[0].id == "batch_3"
        assert hook.find_batches({"k": "nope"}) == []
    assert len(server.calls("GET", "/batches")) == 12  # 4 listings of 3 pages


def _paged_route(items: list[dict[str, Any]], size: int):
    def route(request: Request) -> Reply:
        after = request.query.get("after", [None])[0]
        start = 0 if after is None else [b["id"] for b in items].index(after) + 1
        page = items[start : start + size]
        return Reply(200, {"object": "list", "data": page, "has_more": start + size < len(items)})

    return route


def test_find_batches_stops_at_the_first_page_older_than_the_horizon(hook_for):
    # Newest first, 10 s apart: pages [1000,990] [980,970] [960,950] [940,930].
    batches = [batch_json(f"batch_{i}", created_at=1000 - 10 * i, metadata={"k": "v"}) for i in range(8)]
    with ScriptedServer(_paged_route(batches, 2)) as server:
        hook = hook_for(server)
        found = hook.find_batches({"k": "v"}, created_after=975)
    # Page 2 ends older than the horizon: nothing newer can follow, page 3 is never asked for.
    assert [b.id for b in found] == ["batch_0", "batch_1", "batch_2", "batch_3"]
    assert len(server.calls("GET", "/batches")) == 2


def test_find_batches_reads_every_page_when_the_server_is_not_newest_first(hook_for):
    batches = [batch_json(f"batch_{i}", created_at=1000 + 10 * i, metadata={"k": "v"}) for i in range(6)]
    with ScriptedServer(_paged_route(batches, 2)) as server:
        found = hook_for(server).find_batches({"k": "v"}, created_after=2000)
    assert len(found) == 6 and len(server.calls("GET", "/batches")) == 3


def test_iter_files_stops_at_the_horizon(hook_for):
    files = [{**file_json(f"file-{i}"), "created_at": 1000 - 10 * i} for i in range(6)]
    with ScriptedServer(_paged_route(files, 2)) as server:
        hook = hook_for(server)
        assert [f.id for f in hook.iter_files(purpose="batch", created_after=995)] == ["file-0", "file-1"]
        assert len(server.calls("GET", "/files")) == 1
        assert len(list(hook.iter_files(purpose="batch"))) == 6


def test_test_connection_reports_without_the_key(hook_for):
    with ScriptedServer(lambda r: Reply(200, {"object": "list", "data": [], "has_more": False})) as server:
        ok, message = hook_for(server).test_connection()
    assert ok and server.url in message
    with ScriptedServer(lambda r: error(401, f"Incorrect API key provided: {KEY}")) as server:
        ok, message = hook_for(server).test_connection()
    assert not ok and KEY not in message and "401" in message


# --- content: streamed, resumed after a cut, landed atomically ---

CONTENT = b"".join(b'{"custom_id": "r-%05d", "response": {"status_code": 200}}\n' % i for i in range(4000))


def content_server(
    *, cuts: int, honour_range: bool, content: bytes = CONTENT, block: int = 1
) -> ScriptedServer:
    """Serves ``content``, cutting the first ``cuts`` responses a third of the way in; with
    ``honour_range`` a ``Range`` gets a 206 starting at the asked offset rounded down to ``block``."""
    state = {"cuts": cuts}

    def route(request: Request) -> Reply:
        if not request.path.endswith("/content"):
            return Reply(200, file_json("file-out", len(content), "batch_output"))
        start = 0
        range_header = request.headers.get("range")
        if range_header and honour_range:
            start = int(range_header.removeprefix("bytes=").rstrip("-"))
            start -= start % block
        body = content[start:]
        status = 206 if start else 200
        headers = {"Content-Range": f"bytes {start}-{len(content) - 1}/{len(content)}"} if start else {}
        if state["cuts"] > 0:
            state["cuts"] -= 1
            return Reply(status, body, headers, cut_after=len(body) // 3)
        return Reply(status, body, headers)

    return ScriptedServer(route)


@pytest.mark.parametrize(("honour_range", "block"), [(True, 1), (True, 4096), (False, 1)])
def test_download_resumes_after_cuts(hook_for, tmp_path, honour_range, block):
    with content_server(cuts=2, honour_range=honour_range, block=block) as server:
        landed = hook_for(server).download_file("file-out", tmp_path / "out" / "output.jsonl")
    target = tmp_path / "out" / "output.jsonl"
    assert target.read_bytes() == CONTENT
    assert landed.bytes == len(CONTENT) and landed.lines == 4000
    assert landed.sha256 == hashlib.sha256(CONTENT).hexdigest()
    assert landed.uri.endswith("out/output.jsonl")
    ranges = [r.headers.get("range") for r in server.calls("GET", "/content")]
    assert ranges[0] is None and all(r and r.startswith("bytes=") for r in ranges[1:]) and len(ranges) == 3
    assert sorted(p.name for p in target.parent.iterdir()) == ["output.jsonl"]


def test_download_cut_too_often_leaves_nothing(hook_for, tmp_path):
    target = tmp_path / "output.jsonl"
    target.write_bytes(b"previous version\n")
    with content_server(cuts=100, honour_range=True) as server:
        with pytest.raises(TransferError, match="cut"):
            hook_for(server, max_retries=2).download_file("file-out", target)
    assert target.read_bytes() == b"previous version\n"  # untouched: no partial object
    assert [p.name for p in tmp_path.iterdir()] == ["output.jsonl"]


def test_iter_file_lines_streams_whole_lines_across_cuts(hook_for):
    content = CONTENT + b'{"last": "no newline"}'
    with content_server(cuts=1, honour_range=True, content=content) as server:
        lines = list(hook_for(server).iter_file_lines("file-out"))
    assert len(lines) == 4001 and b"".join(lines) == content
    assert all(line.endswith(b"\n") for line in lines[:-1])


def test_upload_streams_paths_and_iterables(hook_for, tmp_path):
    source = tmp_path / "input.jsonl"
    source.write_bytes(CONTENT)
    with ScriptedServer(lambda r: Reply(200, file_json("file-up", len(CONTENT)))) as server:
        hook = hook_for(server)
        assert hook.upload_file(source).id == "file-up"
        hook.upload_file(str(source), filename="renamed.jsonl")
        hook.upload_file(iter([b'{"x": 1}\n', b'{"x": 2}']))
    by_path, by_str, by_lines = server.requests
    assert b'filename="input.jsonl"' in by_path.body and CONTENT in by_path.body
    assert b'name="purpose"\r\n\r\nbatch' in by_path.body
    assert b'filename="renamed.jsonl"' in by_str.body
    assert b'{"x": 1}\n{"x": 2}\n' in by_lines.body


def test_upload_rejects_what_it_cannot_stream(hook_for):
    with ScriptedServer(lambda r: Reply(200, file_json())) as server:
        with pytest.raises(BatchProviderError, match="iterable of bytes"):
            hook_for(server).upload_file(12345)


def test_delete_is_idempotent(hook_for):
    replies = iter([Reply(200, {"id": "file-1", "object": "file", "deleted": True}), error(404, "gone")])
    with ScriptedServer(lambda r: next(replies)) as server:
        hook = hook_for(server)
        hook.delete_file("file-1")
        hook.delete_file("file-1")
    assert [r.method for r in server.requests] == ["DELETE", "DELETE"]
