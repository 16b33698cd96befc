"""The async side: one AsyncOpenAI per (connection, event loop), shared, closed with the loop."""

from __future__ import annotations

import asyncio
import gc
import time

import pytest

from airflow_batch_provider.exceptions import BatchAuthError
from airflow_batch_provider.hooks import clients
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook, close_async_clients
from tests.loop_calls import blocking_calls_on_this_thread
from tests.unit.hook_http import Reply, Request, ScriptedServer, batch_json, error

KEY = "sk-async-test-secret-0123456789"


@pytest.fixture
def conn(openai_connection):
    def make(conn_id: str, url: str = "http://127.0.0.1:9", **extra) -> str:
        return openai_connection(conn_id, host=f"{url}/v1", password=KEY, extra=extra)

    return make


async def test_hooks_of_one_connection_share_one_client(conn):
    conn("openai_a")
    conn("openai_b")
    first = await OpenAIBatchHook("openai_a").get_async_conn()
    assert await OpenAIBatchHook("openai_a").get_async_conn() is first
    other = await OpenAIBatchHook("openai_b").get_async_conn()
    assert other is not first
    assert clients.async_client_count() == 2


async def test_registry_keys_hold_no_secret(conn):
    conn("openai_k")
    await OpenAIBatchHook("openai_k").get_async_conn()
    holder = clients._LOOPS[id(asyncio.get_running_loop())]
    for conn_id, digest in holder.clients:
        assert KEY not in conn_id and KEY not in digest
    assert KEY not in repr(holder.clients)


def test_each_loop_has_its_own_client_closed_with_the_loop(conn):
    conn("openai_loop")

    async def grab():
        return await OpenAIBatchHook("openai_loop").get_async_conn()

    first = asyncio.run(grab())
    second = asyncio.run(grab())
    assert first is not second
    assert first.is_closed() and second.is_closed()


def test_the_loop_alone_keeps_its_clients_alive(conn):
    conn("openai_alive")

    async def main():
        first = await OpenAIBatchHook("openai_alive").get_async_conn()
        await asyncio.sleep(0.01)  # the keeper task starts waiting
        gc.collect()
        return first, await OpenAIBatchHook("openai_alive").get_async_conn()

    first, again = asyncio.run(main())
    assert first is again


def test_nothing_is_left_once_the_loop_is_gone(conn):
    conn("openai_gone")

    async def grab():
        await OpenAIBatchHook("openai_gone").get_async_conn()
        return id(asyncio.get_running_loop())

    loop_id = asyncio.run(grab())
    gc.collect()
    assert loop_id not in clients._LOOPS


async def test_close_async_clients_closes_and_the_next_call_rebuilds(conn):
    conn("openai_close")
    client = await OpenAIBatchHook("openai_close").get_async_conn()
    assert await close_async_clients() == 1
    assert client.is_closed()
    fresh = await OpenAIBatchHook("openai_close").get_async_conn()
    assert fresh is not client and not fresh.is_closed()


async def test_a_changed_key_gets_a_new_client(conn, openai_connection):
    conn("openai_rot")
    old = await OpenAIBatchHook("openai_rot").get_async_conn()
    openai_connection("openai_rot", host="http://127.0.0.1:9/v1", password=KEY + "-rotated")
    new = await OpenAIBatchHook("openai_rot").get_async_conn()
    assert new is not old and new.api_key.endswith("-rotated")


async def test_aget_and_acancel_do_not_block_the_loop(conn):
    def route(request: Request) -> Reply:
        time.sleep(0.3)  # a slow service (on the server's thread)
        if request.path.endswith("/cancel"):
            return Reply(200, batch_json("batch_1", status="cancelling"))
        return Reply(200, batch_json("batch_1", status="in_progress"))

    with ScriptedServer(route) as server:
        conn("openai_slow", server.url)
        hook = OpenAIBatchHook("openai_slow")
        with blocking_calls_on_this_thread() as seen:
            batches = await asyncio.gather(*(hook.aget_batch("batch_1") for _ in range(5)))
            cancelled = await hook.acancel_batch("batch_1")
    assert {b.status for b in batches} == {"in_progress"}
    assert cancelled.status == "cancelling"
    assert seen.calls == []  # the loop's thread never waited on the slow service


async def test_the_detector_sees_the_sync_client_block_the_loop(conn):
    """The check above can fail: the synchronous call, made on the loop's thread, is recorded."""
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_1", status="in_progress"))) as server:
        conn("openai_sync", server.url)
        with blocking_calls_on_this_thread() as seen:
            OpenAIBatchHook("openai_sync").get_batch("batch_1")
    assert seen.calls


async def test_async_errors_are_translated_without_the_key(conn):
    with ScriptedServer(lambda r: error(401, f"Incorrect API key provided: {KEY}")) as server:
        conn("openai_a401", server.url)
        with pytest.raises(BatchAuthError) as info:
            await OpenAIBatchHook("openai_a401").aget_batch("batch_1")
    assert KEY not in str(info.value)


@pytest.mark.parametrize("azure", [False, True], ids=["openai", "azure"])
async def test_the_lean_poll_sends_what_the_sdk_sends_and_returns_the_same_batch(openai_connection, azure):
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_1", status="in_progress"))) as server:
        extra = {"azure_endpoint": server.url, "api_version": "2024-10-21"} if azure else {}
        host = server.url if azure else f"{server.url}/v1"
        openai_connection("openai_lean", host=host, password=KEY, extra={**extra, "organization": "org-x"})
        hook = OpenAIBatchHook("openai_lean")
        model = await hook.aget_batch("batch_1")
        raw = await hook.aget_batch_json("batch_1")
        page = await hook.alist_batches_json(limit=100, after="batch_0")
        assert await clients.lean_getter(await hook.get_async_conn()) is not None  # not the SDK path
    sdk, lean, listed = server.requests
    assert (lean.method, lean.path, lean.query) == (sdk.method, sdk.path, sdk.query)
    for name in ("authorization", "api-key", "openai-organization", "user-agent"):
        assert lean.headers.get(name) == sdk.headers.get(name), name
    assert raw == model.model_dump(exclude_unset=True)
    assert listed.path == sdk.path.removesuffix("/batch_1")
    assert listed.query == {**sdk.query, "limit": ["100"], "after": ["batch_0"]}
    assert isinstance(page, dict)


async def test_the_lean_poll_keeps_the_sdks_errors_and_retries(conn):
    replies = iter([error(503, "busy"), Reply(200, batch_json("batch_1", status="completed"))])
    with ScriptedServer(lambda r: next(replies)) as server:
        conn("openai_lean_retry", server.url, max_retries=1)
        raw = await OpenAIBatchHook("openai_lean_retry").aget_batch_json("batch_1")
    assert raw["status"] == "completed"
    assert len(server.requests) == 2  # one lean attempt, one SDK retry: max_retries honoured

    with ScriptedServer(lambda r: error(401, f"Incorrect API key provided: {KEY}")) as server:
        conn("openai_lean_401", server.url, max_retries=3)
        with pytest.raises(BatchAuthError) as info:
            await OpenAIBatchHook("openai_lean_401").aget_batch_json("batch_1")
    assert KEY not in str(info.value)
    assert len(server.requests) == 1  # a 401 is not retried, as with the SDK
