"""One shared, coalescing batch poller per (connection, event loop).

Every deferred task of a deployment shares the triggerer's event loop, so the
cost of a poll is paid by everyone. Each HTTP request through the SDK costs
about a millisecond of CPU; ten thousand waits polling every few seconds would
saturate the loop and the service's rate limit. Triggers therefore ask this
poller for a batch's state, and the poller:

- answers from a short-lived cache when another request saw the batch recently
  enough (``max_age``: the caller decides how stale it accepts);
- joins concurrent requests for the same id (one request in flight per id);
- serves many ids with one ``GET /v1/batches?after=<cursor>&limit=100`` page:
  list order (newest first) never changes for existing batches, so once a page
  has shown which batch precedes which, a known predecessor is a cursor that
  returns that batch and its 99 neighbours;
- discovers that order by walking pages from the head and from cursors spread
  over the unknown ids, in parallel lanes, within a page budget (a page that
  still finds several watched ids, on an account busy with others' batches,
  does not count against it);
- falls back to ``retrieve`` (the hook's ``aget_batch``) for anything a page did
  not show, and for small sets; that call is also the authority on errors (a
  batch missing from a page is not "not found" until retrieve says 404);
- bounds requests in flight, and runs CPU-heavy steps (building a request,
  parsing a page, waking waiters) a few per loop iteration, so that no burst of
  responses stalls the loop.

Every batch a page lists is checked (:mod:`airflow_batch_provider.ids`) before
any of it is used (others' batches only serve as cursors: their id is checked);
a page with an unsafe id fails the ids it should have shown.
Requests go through the hook's lean JSON path (``aget_batch_json``,
``alist_batches_json``: the SDK's own request, without its model layer). The
connection is read again after :data:`SETTINGS_MAX_AGE` and when the service
refuses the credentials, so a rotated key is picked up without a restart.

A page refused with 401/403/429 hands that error to the ids it should have
shown (a retrieve each would only multiply the load); a 5xx or network error
falls back to retrieve. A service without the list endpoint (or rejecting a
cursor) turns paging off for that poller: one retrieve per id, as usual.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import random
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import Any

from airflow_batch_provider.exceptions import BatchAuthError, UnsafeIdError
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.ids import is_valid_id

log = logging.getLogger(__name__)

PAGE_SIZE = 100
MIN_PAGED = 5  # fewer unknown ids than this: retrieve them one by one
MAX_LANES = 16
MAX_WALKS = 4  # discovery walks a flush waits for while they keep finding its ids
MAX_WALK_FAILURES = 3  # pages a walk may fail (5xx, network) and try again
MAX_IN_FLIGHT = 32
#: Watched ids a discovery page must find to be free of the walk's budget (a shared account lists
#: mostly others' batches; a page that still finds this many costs less than their retrieves).
FOUND_TO_WALK_ON = 5
COALESCE_DELAY = 0.01  # seconds to gather concurrent requests into one flush
WAKE_CHUNK = 25  # waiters woken per loop iteration
REDISCOVER = 300.0  # seconds before ids a discovery missed may send another walk looking for them
PAGE_ERROR_TTL = 30.0  # seconds a refused (401/403/429) page answers for the ids it should have shown
SETTINGS_MAX_AGE = 300.0  # seconds the connection's settings are used before it is read again
AUTH_RELOAD_INTERVAL = 5.0  # shortest time between re-reads caused by refused credentials
_HEAD = object()  # "no predecessor": the batch was first in the list

_registry: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, BatchPoller]] = (
    weakref.WeakKeyDictionary()
)


def get_poller(conn_id: str) -> BatchPoller:
    """Return the poller of ``conn_id`` for the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    pollers = _registry.setdefault(loop, {})
    poller = pollers.get(conn_id)
    if poller is None:
        poller = pollers[conn_id] = BatchPoller(conn_id)
    return poller


def _release(poller: BatchPoller) -> None:
    try:
        pollers = _registry.get(asyncio.get_running_loop(), {})
    except RuntimeError:
        return
    if pollers.get(poller.conn_id) is poller:
        del pollers[poller.conn_id]


class BatchPoller:
    """Fetch batch states for many triggers with as few requests as possible.

    :param conn_id: Airflow connection id; the client is the hook's shared ``AsyncOpenAI``.
    """

    def __init__(self, conn_id: str) -> None:
        self.conn_id = conn_id
        self._hook: OpenAIBatchHook | None = None
        self._hook_at = 0.0  # when the connection was read
        self._generation = 0  # bumped whenever a re-read found different settings
        self._reloading: asyncio.Task[bool] | None = None
        self._auth_reload_at = -1e9
        self._watched: Counter[str] = Counter()
        self._cache: dict[str, tuple[float, dict[str, Any]]] = {}
        # id -> one future per waiting caller (own futures: a cancelled trigger cancels only its
        # own, with no shield and its callbacks per wait; GC time grows with such objects)
        self._inflight: dict[str, list[asyncio.Future[dict[str, Any]]]] = {}
        self._pending: set[str] = set()
        self._flush_scheduled = False
        self._pred: dict[str, Any] = {}  # id -> id listed just before it, or _HEAD
        self._succ: dict[str, str] = {}
        self._unseen: set[str] = set()  # watched ids no page has shown yet
        self._unfindable: dict[str, float] = {}  # id -> when a discovery last missed it
        self._discovery: asyncio.Task[int] | None = None
        self._covering: dict[str, asyncio.Task[Any]] = {}  # id -> page in flight that will show it
        self._page_error: tuple[float, BaseException] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sem = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._gate = asyncio.Lock()
        self.paging = True
        self.stats: Counter[str] = Counter()

    # -- registration ------------------------------------------------------------------------

    def watch(self, batch_ids: Iterable[str]) -> None:
        """Declare interest in ids (lets pages cache them and discovery look for them)."""
        for bid in batch_ids:
            self._watched[bid] += 1
            if bid not in self._pred and bid not in self._unfindable:
                self._unseen.add(bid)

    def unwatch(self, batch_ids: Iterable[str]) -> None:
        """Drop interest; forgets cached state and, when nobody watches, the poller itself."""
        for bid in batch_ids:
            self._watched[bid] -= 1
            if self._watched[bid] <= 0:
                del self._watched[bid]
                self._cache.pop(bid, None)
                self._unseen.discard(bid)
                self._unfindable.pop(bid, None)
        if not self._watched:
            _release(self)
        elif len(self._pred) > 4 * len(self._watched) + 10_000:
            self._pred = {k: v for k, v in self._pred.items() if k in self._watched}
            self._succ = {k: v for k, v in self._succ.items() if k in self._watched}

    # -- the one entry point -----------------------------------------------------------------

    async def get(self, batch_id: str, max_age: float = 0.0) -> dict[str, Any]:
        """Return the batch as a dict, observed at most ``max_age`` seconds ago.

        :raises Exception: whatever retrieving this id raised (SDK or hook errors).
        """
        hit = self._cache.get(batch_id)
        if hit is not None and time.monotonic() - hit[0] <= max_age:
            self.stats["cache_hits"] += 1
            return hit[1]
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        waiters = self._inflight.get(batch_id)
        if waiters is not None:
            waiters.append(fut)  # a request for this id is on its way: join it
        else:
            self._inflight[batch_id] = [fut]
            self._pending.add(batch_id)
            if not self._flush_scheduled:
                self._flush_scheduled = True
                loop.call_later(COALESCE_DELAY, self._start_flush)
        return await fut

    # -- flushing ----------------------------------------------------------------------------

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        targets, self._pending = self._pending, set()
        if targets:
            self._spawn(self._flush(targets))

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _flush(self, targets: set[str]) -> None:
        try:
            steps: list[Awaitable[Any]] = []
            if self.paging:
                known = [t for t in targets if t in self._pred]
                now = time.monotonic()
                unknown = [
                    t
                    for t in targets
                    if t not in self._pred and now - self._unfindable.get(t, -1e9) > REDISCOVER
                ]
                if len(known) >= 2:
                    steps.append(self._exact_pages(known))
                if len(unknown) >= MIN_PAGED:
                    steps.append(self._find(unknown))
                if steps:
                    await asyncio.gather(*steps, return_exceptions=True)
            left = [t for t in targets if t in self._inflight]
            error = self._page_error
            if left and error is not None and time.monotonic() - error[0] < PAGE_ERROR_TTL:
                for t in left:
                    self._fail(t, error[1])
                return
            await asyncio.gather(*(self._retrieve(t) for t in left))
        except BaseException as exc:  # never leave a waiter hanging
            for t in targets:
                self._fail(t, exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            if not isinstance(exc, Exception):
                raise

    async def _retrieve(self, batch_id: str) -> None:
        try:
            async with self._sem:
                await self._turn()
                if batch_id not in self._inflight:
                    return  # a page answered it while this waited for its turn
                self.stats["retrieves"] += 1
                raw = await self._authed(lambda hook: hook.aget_batch_json(batch_id))
        except Exception as exc:
            self._fail(batch_id, exc)
            return
        self._store(raw, resolve=True)

    def _fail(self, batch_id: str, exc: BaseException) -> None:
        for fut in self._inflight.pop(batch_id, ()):
            if not fut.done():  # a cancelled waiter's future is done
                fut.set_exception(exc)

    def _store(self, raw: dict[str, Any], *, resolve: bool) -> None:
        """Cache a batch seen in a response (if watched); resolve its waiter if asked."""
        if raw["id"] in self._watched:
            self._cache[raw["id"]] = (time.monotonic(), raw)
        if resolve:
            self._resolve(raw)

    def _resolve(self, raw: dict[str, Any]) -> int:
        """Hand a batch to whoever waits for it; how many did."""
        woken = 0
        for fut in self._inflight.pop(raw["id"], ()):
            if not fut.done():
                fut.set_result(raw)
                woken += 1
        return woken

    async def _turn(self) -> None:
        """Wait for a loop iteration of our own before a CPU-heavy step (building a request
        through the SDK, parsing a page): such steps then run one per iteration instead of
        dozens back to back when responses arrive together, which would stall the loop."""
        async with self._gate:
            await asyncio.sleep(0)

    # -- paging ------------------------------------------------------------------------------

    async def _page(self, cursor: Any) -> tuple[list[dict[str, Any]], bool, int, int] | None:
        """Fetch one list page after ``cursor`` (``_HEAD``: the first page).

        A cursor no page has shown yet (a discovery's guess) that the service rejects is just
        a bad guess; a rejected head page or known cursor means listing does not work here.

        :return: the batches, whether more follow, how many no page had shown before, how many
            of them are watched; None if the page could not be had.
        """
        if not self.paging:
            return None
        try:
            after = None if cursor is _HEAD else cursor
            async with self._sem:
                self.stats["pages"] += 1
                await self._turn()
                body = await self._authed(
                    lambda hook: hook.alist_batches_json(limit=PAGE_SIZE, after=after, translate=False)
                )
            await self._turn()
            data = body["data"]
            more = bool(body.get("has_more"))
            hook = await self._get_hook()
            watched, waiting = self._watched, self._inflight
            for item in data:  # a page with an unsafe id answers nobody
                bid = item.get("id") if isinstance(item, dict) else None
                # Others' batches are only cursors here: their id is checked; ours entirely.
                if not is_valid_id(bid) or bid in watched or bid in waiting:
                    hook.check_batch_answer(item, "GET /batches (a list page)")
        except UnsafeIdError as exc:
            # Every waiter this page should have answered gets the error: the server is not
            # to be trusted with these ids, and retrieving them one by one would not change that.
            self._page_error = (time.monotonic(), exc)
            return None
        except Exception as exc:
            status = getattr(exc, "status_code", None)
            if status in (400, 404) and cursor is not _HEAD and cursor not in self._pred:
                self._unfindable[cursor] = time.monotonic()
                self._unseen.discard(cursor)
                return None
            if status in (400, 404, 405, 501) or isinstance(exc, (KeyError, TypeError, ValueError)):
                if self.paging:
                    log.warning(
                        "Listing batches on connection %r is not usable (%s); polling each batch "
                        "individually from now on.",
                        self.conn_id,
                        status or type(exc).__name__,
                    )
                self.paging = False
            elif status in (401, 403, 429):
                # Refused or rate limited: the waiters get this error rather than a retrieve
                # each, which would multiply the load on a service already refusing it.
                self._page_error = (time.monotonic(), exc)
            return None  # 5xx or network: the waiters are retrieved one by one
        self._page_error = None
        prev = cursor
        fresh = found = 0
        for item in data:
            bid = item["id"]
            fresh += bid not in self._pred
            found += bid in self._unseen
            self._pred[bid] = prev
            if prev is not _HEAD:
                self._succ[prev] = bid
            prev = bid
            self._unseen.discard(bid)
            self._store(item, resolve=False)
        # Wake waiters a few at a time: a page can answer a hundred triggers, and waking
        # them all in one loop iteration would be a stall of its own.
        woken = 0
        for item in data:
            n = self._resolve(item)
            if n:
                woken += n
                if woken >= WAKE_CHUNK:
                    woken = 0
                    await asyncio.sleep(0)
        self.stats["watched_found_by_pages"] += found
        return data, more, fresh, found

    async def _exact_pages(self, known: list[str]) -> None:
        """Refresh ids whose predecessor is known with as few cursor pages as possible.

        A page already on its way that will show an id serves it: no second page is planned.
        """
        waits = {self._covering[t] for t in known if t in self._covering}
        wanted = {t for t in known if t not in self._covering}
        planned: set[str] = set()
        for t in known:
            if t not in wanted or t in planned:
                continue
            start = t  # walk back to the first wanted id of this run
            for _ in range(PAGE_SIZE - 1):
                p = self._pred.get(start)
                if p is _HEAD or p not in wanted or p in planned:
                    break
                start = p
            shown: list[str] = []  # what the page will show, as far as we know the order
            x: str | None = start
            while x is not None and len(shown) < PAGE_SIZE:
                shown.append(x)
                x = self._succ.get(x)
            planned.update(shown)
            task = self._spawn(self._page(self._pred[start]))
            for bid in shown:
                self._covering[bid] = task
            task.add_done_callback(functools.partial(self._uncover, ids=shown))
            waits.add(task)
            self.stats["exact_pages_planned"] += 1
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits), return_exceptions=True)

    def _uncover(self, task: asyncio.Future[Any], ids: list[str]) -> None:
        for bid in ids:
            if self._covering.get(bid) is task:
                del self._covering[bid]

    async def _find(self, unknown: list[str]) -> None:
        """Wait for discovery walks (shared by every flush) until ``unknown`` ids have been shown,
        or a walk finds nothing more; whatever is left is then retrieved."""
        for _ in range(MAX_WALKS):
            if self._discovery is None or self._discovery.done():
                self._discovery = self._spawn(self._discover())
            found = await asyncio.shield(self._discovery)
            left = [t for t in unknown if t in self._inflight]
            if not found or len(left) < MIN_PAGED:
                return

    async def _discover(self) -> int:
        """Walk the list in parallel lanes until every watched id has been seen (or budget).

        :return: how many of the ids unseen at the start it found.
        """
        unseen_at_start = len(self._unseen)
        if not unseen_at_start:
            return 0
        lanes = max(1, min(MAX_LANES, math.ceil(unseen_at_start / PAGE_SIZE / 4)))
        budget = [2 * math.ceil(unseen_at_start / PAGE_SIZE) + 2 * lanes]
        failures = [0]
        busy: set[Any] = set()

        async def lane(cursor: Any) -> None:
            while budget[0] > 0 and self._unseen and self.paging:
                budget[0] -= 1
                busy.add(cursor)
                result = await self._page(cursor)
                busy.discard(cursor)
                if result is None:
                    if self._page_error is not None or not self.paging:
                        return  # refused or unsupported: stop walking
                    if cursor is _HEAD or cursor not in self._unfindable:
                        failures[0] += 1
                        if failures[0] > MAX_WALK_FAILURES:
                            return
                        continue  # a 5xx or a network error: try that page again
                    # else: a guessed cursor the service does not know; guess again
                else:
                    data, more, fresh, found = result
                    if found >= FOUND_TO_WALK_ON:
                        budget[0] += 1  # a page that finds this many is cheaper than their retrieves
                    # Walk on while this stretch is new and nobody has shown what follows it
                    # (two lanes side by side would otherwise fetch everything twice).
                    if more and data and fresh and data[-1]["id"] not in self._succ:
                        cursor = data[-1]["id"]
                        continue
                candidates = [u for u in self._unseen if u not in busy]
                if not candidates:
                    return
                cursor = random.choice(candidates)  # jump to an id nobody has shown yet
                self.stats["discovery_jumps"] += 1
            if budget[0] <= 0:
                self.stats["discovery_budget_spent"] += 1

        starts: list[Any] = [_HEAD]
        pool = list(self._unseen)
        starts += random.sample(pool, min(lanes - 1, len(pool)))
        self.stats["discoveries"] += 1
        await asyncio.gather(*(lane(c) for c in starts))
        missed = set(pool) & self._unseen
        found = len(pool) - len(missed)
        if not found and not failures[0]:
            # Listed nowhere the walk could reach (older than it went, or not listed at all):
            # retrieved one by one for a while rather than sending every flush on a new walk.
            now = time.monotonic()
            for bid in missed:
                self._unfindable[bid] = now
                self._unseen.discard(bid)
        return found

    # -- the connection -----------------------------------------------------------------------

    async def _get_hook(self) -> OpenAIBatchHook:
        """The hook with the connection as read at most :data:`SETTINGS_MAX_AGE` ago."""
        if self._hook is None or time.monotonic() - self._hook_at > SETTINGS_MAX_AGE:
            await self._reload()
        assert self._hook is not None
        return self._hook

    async def _authed(self, call: Any) -> Any:
        """``await call(hook)``; when the service refuses the credentials, read the connection
        again (at most every :data:`AUTH_RELOAD_INTERVAL`) and, if it changed (a rotated key),
        try once more with it."""
        hook = await self._get_hook()
        generation = self._generation
        try:
            return await call(hook)
        except Exception as exc:
            if not (isinstance(exc, BatchAuthError) or getattr(exc, "status_code", None) in (401, 403)):
                raise
            if generation == self._generation:  # nobody has re-read the connection since
                now = time.monotonic()
                if now - self._auth_reload_at < AUTH_RELOAD_INTERVAL and not self._reloading_now():
                    raise
                self._auth_reload_at = now
                if not await self._reload():
                    raise
            self.stats["auth_retries"] += 1
            return await call(await self._get_hook())

    def _reloading_now(self) -> bool:
        return self._reloading is not None and not self._reloading.done()

    async def _reload(self) -> bool:
        """Read the connection again (one read at a time, shared); True if its settings changed."""
        if not self._reloading_now():
            self._reloading = self._spawn(self._load())
        assert self._reloading is not None
        return await asyncio.shield(self._reloading)

    async def _load(self) -> bool:
        hook = OpenAIBatchHook(conn_id=self.conn_id)
        await hook.get_async_conn()  # reads the connection; the client is shared per settings
        old = self._hook
        changed = old is not None and _fingerprint(old) != _fingerprint(hook)
        self._hook, self._hook_at = hook, time.monotonic()
        if changed:
            self._generation += 1
            self._page_error = None  # a refusal seen with the old settings says nothing now
            self.stats["settings_changed"] += 1
            log.info("Connection %r changed; polling with its new settings.", self.conn_id)
        return changed


def _fingerprint(hook: OpenAIBatchHook) -> str | None:
    settings = hook._async_settings
    return settings.fingerprint if settings is not None else None
