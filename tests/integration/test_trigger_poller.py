"""The shared poller behind OpenAIBatchTrigger, at a few hundred triggers, over real HTTP.

Uses the benchmark's Batch server (``tests/benchmarks/trigger_scale.py``, its own
process): unlike the emulator it rejects an unknown list cursor with 404, as a strict
service may, and it can switch the list endpoint off.
"""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger
from airflow_batch_provider.triggers.poller import get_poller

pytestmark = pytest.mark.timeout(60)

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "trigger_scale.py"


def _bench_module() -> Any:
    spec = importlib.util.spec_from_file_location("trigger_scale_bench", _BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Any, str]]:
    bench = _bench_module()
    proc, base_url = bench.start_server(0.0)
    try:
        yield bench, base_url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def strict(server, openai_connection) -> tuple[Any, str, str]:
    bench, base_url = server
    bench._http(base_url, "POST", "/_bench/listing", {"enabled": True})
    conn_id = openai_connection(
        "strict_service", host=base_url, password=bench.API_KEY, extra={"max_retries": 0}
    )
    return bench, base_url, conn_id


async def _run_all(triggers: list[OpenAIBatchTrigger]) -> list[dict[str, Any]]:
    async def one(trigger: OpenAIBatchTrigger) -> dict[str, Any]:
        events = [e.payload async for e in trigger.run()]
        assert len(events) == 1
        return events[0]

    return await asyncio.gather(*(one(t) for t in triggers))


async def test_hundreds_of_triggers_share_list_pages_and_a_typo_fails_alone(strict):
    bench, base_url, conn_id = strict
    ids = bench._http(base_url, "POST", "/_bench/create", {"n": 300, "complete_after": 0.6})["ids"]
    bench._http(base_url, "POST", "/_bench/reset_stats", {})
    poller = get_poller(conn_id)  # the instance the triggers below share

    events = await _run_all(
        [OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[b], poll_interval=0.2) for b in ids]
        + [OpenAIBatchTrigger(conn_id=conn_id, batch_ids=["batch_typo", ids[0]], poll_interval=0.2)]
    )

    assert [e["status"] for e in events[:-1]] == ["success"] * 300
    assert (events[-1]["status"], events[-1]["reason"]) == ("error", "not_found")
    assert "batch_typo" in events[-1]["message"]
    assert poller.paging  # a rejected guess of a cursor is not "listing does not work"
    seen = bench._http(base_url, "GET", "/_bench/stats")
    # 301 triggers polling several times each: polled one by one that is at least one request per
    # trigger; shared pages make it a few dozen (about 60 here). How many rounds run depends on
    # the machine's load, so the bound is the per-trigger floor, which load cannot bring us near.
    assert seen["list"] + seen["retrieve"] < len(events), (seen, dict(poller.stats))
    assert seen["retrieve"] <= 10, (seen, dict(poller.stats))


async def test_on_a_busy_shared_account_discovery_walks_past_others_batches(strict):
    """Five batches of other users around each of ours: the list is six times longer than our
    ids alone would need, and a walk that still finds ours goes on instead of retrieving them."""
    bench, base_url, conn_id = strict
    created = bench._http(
        base_url, "POST", "/_bench/create", {"n": 300, "complete_after": 0.6, "unrelated": bench.UNRELATED}
    )
    bench._http(base_url, "POST", "/_bench/reset_stats", {})
    poller = get_poller(conn_id)

    events = await _run_all(
        [OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[b], poll_interval=0.2) for b in created["ids"]]
    )

    assert [e["status"] for e in events] == ["success"] * 300
    seen = bench._http(base_url, "GET", "/_bench/stats")
    # The walk's budget is never spent; a few flushes of fewer than MIN_PAGED new ids are
    # retrieved one by one, how many depending on the machine's load.
    assert not poller.stats["discovery_budget_spent"], dict(poller.stats)
    # Far fewer retrieves than triggers (a loaded machine lets some batches be polled alone).
    assert seen["retrieve"] <= len(events) // 4, (seen, dict(poller.stats))
    assert seen["list"] + seen["retrieve"] < len(events), (seen, dict(poller.stats))


async def test_without_a_list_endpoint_every_batch_is_retrieved(strict):
    bench, base_url, conn_id = strict
    ids = bench._http(base_url, "POST", "/_bench/create", {"n": 20, "complete_after": 0.3})["ids"]
    bench._http(base_url, "POST", "/_bench/listing", {"enabled": False})
    poller = get_poller(conn_id)

    events = await _run_all(
        [OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[b], poll_interval=0.1) for b in ids]
    )

    assert [e["status"] for e in events] == ["success"] * 20
    assert not poller.paging
    assert poller.stats["retrieves"] >= 20


@pytest.fixture
def keys(strict) -> Iterator[Any]:
    """Set the keys the server accepts (None: any); any again afterwards."""
    bench, base_url, _ = strict

    def accept(keys: list[str] | None) -> None:
        bench._http(base_url, "POST", "/_bench/keys", {"keys": keys})

    yield accept
    accept(None)


ROTATED = "sk-bench-rotated-not-a-secret"


async def _polled_with(bench: Any, base_url: str, key: str, times: int = 3) -> None:
    """Wait until the poller has sent a few requests with ``key`` (it holds those settings)."""
    while bench._http(base_url, "GET", "/_bench/requests_by_key").get(key, 0) < times:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def test_a_rotated_key_is_picked_up_on_the_services_refusal(strict, keys, openai_connection):
    bench, base_url, conn_id = strict
    keys([bench.API_KEY])
    [keeper] = bench._http(base_url, "POST", "/_bench/create", {"n": 1, "complete_after": 600})["ids"]
    [waited] = bench._http(base_url, "POST", "/_bench/create", {"n": 1, "complete_after": 8.0})["ids"]
    poller = get_poller(conn_id)
    # Another trigger keeps the shared poller (and the settings it read) alive throughout.
    keeping = asyncio.ensure_future(
        _run_all([OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[keeper], poll_interval=0.1)])
    )
    waiting = asyncio.ensure_future(
        _run_all([OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[waited], poll_interval=0.1)])
    )
    await _polled_with(bench, base_url, bench.API_KEY)
    assert not waiting.done()

    # Rotation: the connection gets the new key, then the service stops accepting the old one.
    openai_connection(conn_id, host=base_url, password=ROTATED, extra={"max_retries": 0})
    keys([ROTATED])
    [event] = await waiting

    assert event["status"] == "success", event
    assert bench._http(base_url, "GET", "/_bench/requests_by_key").get(ROTATED, 0) > 0
    assert poller.stats["settings_changed"] == 1
    assert not keeping.done()  # the poller was never released and rebuilt
    keeping.cancel()
    await asyncio.gather(keeping, return_exceptions=True)


async def test_the_connection_is_read_again_after_a_bounded_age(strict, keys, openai_connection, monkeypatch):
    from airflow_batch_provider.triggers import poller as poller_module

    bench, base_url, conn_id = strict
    keys([bench.API_KEY, ROTATED])  # both accepted: only the age can make the poller re-read
    monkeypatch.setattr(poller_module, "SETTINGS_MAX_AGE", 0.3)
    [keeper] = bench._http(base_url, "POST", "/_bench/create", {"n": 1, "complete_after": 600})["ids"]
    [waited] = bench._http(base_url, "POST", "/_bench/create", {"n": 1, "complete_after": 1.5})["ids"]
    keeping = asyncio.ensure_future(
        _run_all([OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[keeper], poll_interval=0.1)])
    )
    await _polled_with(bench, base_url, bench.API_KEY)
    openai_connection(conn_id, host=base_url, password=ROTATED, extra={"max_retries": 0})

    [event] = await _run_all([OpenAIBatchTrigger(conn_id=conn_id, batch_ids=[waited], poll_interval=0.1)])

    assert event["status"] == "success", event
    used = bench._http(base_url, "GET", "/_bench/requests_by_key")
    assert used.get(ROTATED, 0) > 0, used
    keeping.cancel()
    await asyncio.gather(keeping, return_exceptions=True)
