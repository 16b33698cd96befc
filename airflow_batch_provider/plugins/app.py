"""The plugin's FastAPI app, mounted by the api-server under :data:`PREFIX`.

Routes (all but ``/health`` and ``/static`` need an Airflow login, checked by
Airflow's own auth dependencies: the JWT cookie the UI holds, or a Bearer token):

- ``GET /ti?dag_id=&run_id=&task_id=&map_index=``: the task-instance tab (HTML);
  ``GET /api/ti``: the same data as JSON. Needs read access to the DAG's task
  instances and XComs.
- ``GET /batches?conn_id=&status=&dag_id=&after=&limit=``: recent batches of a connection
  (HTML); ``GET /api/batches``: as JSON. Needs read access to that connection, whose
  key the server uses on the user's behalf (the key itself is never shown). Rows are
  only those of DAGs the user may read (the batch's ``airflow_dag_id`` metadata);
  batches without it only for users who may read every DAG.

Batches are read live through ``OpenAIBatchHook.get_batch`` with the task's
connection, if the user may read that connection; otherwise, or when the read fails,
the page says why and shows what the task recorded last.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import openai
from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.resource_details import ConnectionDetails, DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, requires_access_dag
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_batch_provider.exceptions import BatchProviderError
from airflow_batch_provider.hooks.clients import redact, with_options
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.plugins import pages
from airflow_batch_provider.plugins.routes import PREFIX, TAB_ROUTE
from airflow_batch_provider.plugins.task_source import (
    DEFAULT_CONN_ID,
    TaskRefs,
    mapped_instances,
    merge_ids,
    openai_conn_ids,
    read_landed_manifest,
    read_task_refs,
)
from airflow_batch_provider.plugins.view_model import (
    META_DAG_ID,
    batch_view,
    browser_href,
    error_codes,
    estimate_view,
    failure_view,
    task_totals,
)
from airflow_batch_provider.waiting.status import BatchStatus, summarize_batch

#: Seconds a page waits for the service before showing what the task recorded.
LIVE_READ_TIMEOUT = 12.0
#: Batches of one task read live per page view; the rest show their recorded state.
MAX_LIVE_READS = 100
#: Batches looked at per page of the list when a filter hides some.
LIST_MAX_SCAN = 500
#: Batches asked for per request when a filter hides some.
LIST_CHUNK = 100
_ACTIVE_TI_STATES = {None, "scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule"}

# Live reads run here, so a page can stop waiting for a slow service (the SDK's own
# timeout is the connection's, up to 10 minutes).
_POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="openai-batch-ui")

app = FastAPI(
    title="OpenAI Batch monitor",
    description="Airflow UI views of OpenAI Batch API jobs (airflow-batch-provider).",
    docs_url=None,
    redoc_url=None,
    openapi_url=None,
)
app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")

_TI_ACCESS = [
    Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.TASK_INSTANCE)),
    Depends(requires_access_dag(method="GET", access_entity=DagAccessEntity.XCOM)),
]


class UIBatchHook(OpenAIBatchHook):
    """The hook with a web page's patience: one retry and short timeouts, whatever the connection says.

    A task may wait minutes for a flaky service; a person looking at a page should not.
    """

    def __init__(self, conn_id: str = OpenAIBatchHook.default_conn_name, **kwargs: Any) -> None:
        super().__init__(conn_id, **kwargs)
        self._ui_client: openai.OpenAI | None = None

    def get_conn(self) -> openai.OpenAI:
        if self._ui_client is None:
            self._ui_client = with_options(super().get_conn(), max_retries=1, timeout=10.0)
        return self._ui_client


def _session() -> Iterator[Any]:
    from airflow.utils.session import create_session

    with create_session(scoped=False) as session:
        yield session


def _may_read_connection(user: Any, conn_id: str | None) -> bool:
    return get_auth_manager().is_authorized_connection(
        method="GET", details=ConnectionDetails(conn_id=conn_id), user=user
    )


@dataclass(frozen=True)
class DagAccess:
    """The DAGs a user may read: ``every`` one, or those in ``dag_ids``."""

    every: bool
    dag_ids: frozenset[str]

    def may_see(self, metadata: Mapping[str, Any] | None) -> bool:
        """Whether a batch with this metadata may be shown (its DAG readable, or the user reads all)."""
        if self.every:
            return True
        dag_id = (metadata or {}).get(META_DAG_ID)
        return isinstance(dag_id, str) and dag_id in self.dag_ids


def dag_access(user: Any, session: Any) -> DagAccess:
    """The DAGs ``user`` may read, as the auth manager says.

    "Every DAG" needs both: access to DAGs in general (no details), and each DAG in the
    database authorized one by one (an auth manager scoping by team or DAG says yes to the
    former). Only then are batches of no DAG, or of a DAG unknown here, shown.
    """
    from airflow.models.dag import DagModel
    from sqlalchemy import select

    manager = get_auth_manager()
    allowed = frozenset(manager.get_authorized_dag_ids(user=user, method="GET", session=session))
    every = manager.is_authorized_dag(method="GET", user=user) and allowed >= set(
        session.scalars(select(DagModel.dag_id))
    )
    return DagAccess(every=every, dag_ids=allowed)


def _connection(user: GetUserDep, conn_id: Annotated[str, Query(max_length=250)] = DEFAULT_CONN_ID) -> str:
    """The requested connection, if the user may read it (its key is used on their behalf)."""
    conn_id = conn_id.strip() or DEFAULT_CONN_ID
    if not _may_read_connection(user, conn_id):
        raise HTTPException(403, f"Listing batches of connection {conn_id!r} needs read access to it")
    return conn_id


def _map_index(map_index: str = "-1") -> int:
    """``map_index`` from the tab's URL; ``-1`` when the UI left ``{MAP_INDEX}`` unreplaced."""
    try:
        return int(map_index)
    except ValueError:
        return -1


def _nonce() -> str:
    return secrets.token_urlsafe(16)


def _html(body: str, nonce: str, status_code: int = 200) -> HTMLResponse:
    """HTML with a CSP that allows only this page's own script (escaping is the first line of defence)."""
    csp = (
        f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'self'; base-uri 'none'; form-action 'self'; object-src 'none'"
    )
    headers = {
        "Content-Security-Policy": csp,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
    }
    return HTMLResponse(body, status_code=status_code, headers=headers)


@app.exception_handler(StarletteHTTPException)
async def _errors_as_pages(request: Request, exc: StarletteHTTPException) -> Response:
    """401/403/404 of an HTML route as a short page in the UI's frame; JSON for ``/api``."""
    path, root = request.scope.get("path", ""), request.scope.get("root_path", "")
    if path.removeprefix(root).startswith("/api/"):
        return await http_exception_handler(request, exc)
    nonce = _nonce()
    response = _html(pages.error_page(exc.status_code, str(exc.detail), nonce=nonce), nonce, exc.status_code)
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


def _message(err: BaseException, hook: OpenAIBatchHook | None = None) -> str:
    """What went wrong, fit for a page: the hook's own messages, or the error with secrets scrubbed."""
    if isinstance(err, BatchProviderError):
        return str(err)
    known: tuple[str, ...] = ()
    try:
        known = hook.settings.secrets if hook is not None else ()
    except Exception:  # the connection itself may be what failed; redact() still scrubs key shapes
        known = ()
    if isinstance(err, openai.APIStatusError):
        return redact(f"the service answered {err.status_code}: {err.message}", known)
    if isinstance(err, openai.APIConnectionError):
        return redact(f"could not reach the service ({err})", known)
    return redact(f"{type(err).__name__}: {err}", known)


# ---- the task-instance tab ----------------------------------------------------------------


def _read_live(hook: OpenAIBatchHook, batch_ids: list[str]) -> dict[str, Any]:
    """``{batch_id: Batch | error message}``, waiting at most :data:`LIVE_READ_TIMEOUT` in all."""
    futures: dict[str, Future[Any]] = {bid: _POOL.submit(hook.get_batch, bid) for bid in batch_ids}
    wait(futures.values(), timeout=LIVE_READ_TIMEOUT)
    out: dict[str, Any] = {}
    for bid, future in futures.items():
        if not future.done():
            future.cancel()
            out[bid] = f"no answer within {LIVE_READ_TIMEOUT:.0f}s"
        elif future.exception() is not None:
            out[bid] = _message(future.exception(), hook)  # type: ignore[arg-type]
        else:
            out[bid] = future.result()
    return out


def _console_url(hook: OpenAIBatchHook | None, refs: TaskRefs, batch_id: str) -> str | None:
    if refs.console_urls.get(batch_id):
        return refs.console_urls[batch_id]
    if hook is None:
        return None
    try:
        return hook.batch_console_url(batch_id)
    except Exception:  # a broken link never breaks the page
        return None


def _apply_landed_manifest(refs: TaskRefs, manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Take batch ids, summaries and the connection from a fetch's ``manifest.json``.

    :return: its landed files.
    """
    ids = [str(b) for b in manifest.get("batch_ids") or () if b]
    refs.batch_ids = merge_ids(refs.batch_ids, ids)
    for round_ in manifest.get("rounds") or ():
        for summary in round_.get("batches") or () if isinstance(round_, Mapping) else ():
            if isinstance(summary, Mapping) and summary.get("id"):
                refs.summaries.setdefault(str(summary["id"]), dict(summary))
    if not refs.conn_id and isinstance(manifest.get("conn_id"), str):
        refs.conn_id = manifest["conn_id"]
    if refs.fetch is not None and not refs.fetch.get("results_uri"):
        refs.fetch["results_uri"] = (manifest.get("results") or {}).get("uri")
    if refs.fetch is not None:
        refs.fetch["error_codes"] = error_codes(manifest.get("reconciliation"))
    compared = manifest.get("estimate")
    if (
        refs.estimate is None
        and isinstance(compared, Mapping)
        and isinstance(compared.get("estimated"), Mapping)
    ):
        refs.estimate = dict(compared["estimated"])
    return [dict(row) for row in manifest.get("landed") or () if isinstance(row, Mapping)]


def task_view(
    dag_id: str, run_id: str, task_id: str, map_index: int, session: Any, *, user: Any
) -> dict[str, Any]:
    """The data of the task-instance tab (also the ``/api/ti`` answer).

    :param user: the viewing user: batches are read live only through a connection they may read.
    """
    refs = read_task_refs(session, dag_id, run_id, task_id, map_index)
    if refs is None and " " in run_id:
        # Airflow 3.1's UI puts the run id into the tab's URL without encoding it, so the
        # "+" of a manual run's "+00:00" arrives as a space (run ids allow no spaces).
        run_id = run_id.replace(" ", "+")
        refs = read_task_refs(session, dag_id, run_id, task_id, map_index)
    if refs is None:
        mapped = mapped_instances(session, dag_id, run_id, task_id) if map_index < 0 else 0
        if mapped:
            raise HTTPException(404, f"{task_id} is mapped: open one of its {mapped} mapped instances")
        raise HTTPException(404, f"No task instance {dag_id}.{task_id} (run {run_id}, map index {map_index})")
    session.close()  # no database connection held while the service answers
    notices: list[str] = []
    landed: list[dict[str, Any]] = []
    if refs.manifest_uri:
        try:
            landed = _apply_landed_manifest(refs, read_landed_manifest(refs.manifest_uri, refs.destination))
        except ValueError as err:
            notices.append(f"Landed files unknown: {err}.")
    conn_id = refs.conn_id or DEFAULT_CONN_ID
    now = time.time()
    views: list[dict[str, Any]] = []
    if refs.batch_ids:
        hook: OpenAIBatchHook | None = None
        live: dict[str, Any] = {}
        if not _may_read_connection(user, conn_id):
            # The connection comes from XCom, which users may write: never use a key the viewer may not.
            notices.append(
                f"Reading batches live needs read access to connection {conn_id!r}; "
                "showing the state the task recorded last."
            )
        else:
            hook = UIBatchHook(conn_id=conn_id)
            try:
                hook.get_conn()  # reads the connection once, before the reads share it
                live = _read_live(hook, refs.batch_ids[:MAX_LIVE_READS])
            except Exception as err:
                notices.append(f"Connection {conn_id!r} cannot be used here: {_message(err, hook)}")
            if len(refs.batch_ids) > MAX_LIVE_READS:
                notices.append(
                    f"Only the first {MAX_LIVE_READS} batches are read live; "
                    "the others show their last state."
                )
        for bid in refs.batch_ids:
            rows = [row for row in landed if row.get("batch_id") == bid]
            console, shard = _console_url(hook, refs, bid), refs.shards.get(bid)
            result = live.get(bid, "not read live")
            if not isinstance(result, str):
                views.append(batch_view(result, now=now, console_url=console, shard=shard, landed=rows))
            elif bid in refs.summaries:
                views.append(
                    batch_view(
                        refs.summaries[bid],
                        now=now,
                        console_url=console,
                        shard=shard,
                        landed=rows,
                        source="xcom",
                        read_error=result,
                    )
                )
            else:
                notices.append(f"Batch {bid}: {result}")
        if hook is not None:
            _close(hook)
    fetch = None
    if refs.fetch is not None:
        fetch = dict(refs.fetch)
        fetch["results_href"] = browser_href(fetch.get("results_uri"))
        fetch["manifest_href"] = browser_href(fetch.get("manifest_uri"))
    total = task_totals(views)
    active = refs.state in _ACTIVE_TI_STATES or not total["all_terminal"]
    return {
        "task_instance": {
            "dag_id": dag_id,
            "run_id": run_id,
            "task_id": task_id,
            "map_index": map_index,
            "state": refs.state,
            "operator": refs.operator,
            "try_number": refs.try_number,
        },
        "conn_id": conn_id,
        "batch_ids": refs.batch_ids,
        "batches": views,
        "totals": total,
        "estimate": estimate_view(refs.estimate, total),
        "fetch": fetch,
        "failure": failure_view(refs.failure),
        "notices": notices,
        "refresh": pages.REFRESH_SECONDS if active else 0,
        "generated_at": now,
    }


def _close(hook: OpenAIBatchHook) -> None:
    """Close the hook's HTTP connections (a hook lives for one page view)."""
    try:
        hook.get_conn().close()
    except Exception:  # never built (the connection failed): nothing to close
        pass


@app.get("/health", include_in_schema=False)
def health() -> dict[str, str]:
    """Liveness of the plugin app (no login needed, nothing in it)."""
    return {"status": "ok"}


@app.get("/api/ti", dependencies=_TI_ACCESS)
def task_instance_json(
    user: GetUserDep,
    session: Annotated[Any, Depends(_session)],
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: Annotated[int, Depends(_map_index)],
) -> JSONResponse:
    return JSONResponse(
        task_view(dag_id, run_id, task_id, map_index, session, user=user),
        headers={"Cache-Control": "no-store"},
    )


@app.get("/ti", dependencies=_TI_ACCESS, response_class=HTMLResponse)
def task_instance_page(
    user: GetUserDep,
    session: Annotated[Any, Depends(_session)],
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: Annotated[int, Depends(_map_index)],
) -> HTMLResponse:
    nonce = _nonce()
    return _html(
        pages.task_page(task_view(dag_id, run_id, task_id, map_index, session, user=user), nonce=nonce), nonce
    )


# ---- the Batches page ---------------------------------------------------------------------


def _status_matches(status: str, wanted: str) -> bool:
    if not wanted:
        return True
    if wanted == "active":
        return not BatchStatus.is_terminal(status)
    return status == wanted


def _dag_matches(batch: Any, dag_id: str) -> bool:
    return not dag_id or (getattr(batch, "metadata", None) or {}).get(META_DAG_ID) == dag_id


def list_view(
    conn_id: str,
    access: DagAccess,
    *,
    status: str = "",
    after: str | None = None,
    limit: int = 20,
    dag_id: str = "",
) -> dict[str, Any]:
    """One page of a connection's batches, newest first (also the ``/api/batches`` answer).

    Only batches ``access`` lets the user see are kept. Without a status filter, for a user
    who may read every DAG, this is one request of ``limit``; otherwise pages of 100 are
    read until ``limit`` batches match or :data:`LIST_MAX_SCAN` were looked at.
    ``next_after`` continues after the last batch looked at; when that batch is one the user
    may not see, it is sealed (:func:`seal_cursor`), so not even its id is shown.
    """
    view: dict[str, Any] = {
        "conn_id": conn_id,
        "status": status,
        "dag_id": dag_id,
        "after": after,
        "limit": limit,
        "batches": [],
        "has_more": False,
        "next_after": None,
        "scanned": 0,
        "error": None,
        "refresh": pages.REFRESH_SECONDS,
    }
    start = open_cursor(after)
    hook = UIBatchHook(conn_id=conn_id)
    now = time.time()
    try:
        client = hook.get_conn()
        cursor, more = start, True
        rows: list[Any] = []
        while more and len(rows) < limit and view["scanned"] < LIST_MAX_SCAN:
            kwargs: dict[str, Any] = {"limit": LIST_CHUNK if status or dag_id or not access.every else limit}
            if cursor:
                kwargs["after"] = cursor
            page = client.batches.list(**kwargs)
            data = list(page.data)
            more = bool(page.has_more)
            for index, batch in enumerate(data):
                view["scanned"] += 1
                cursor = batch.id
                if (
                    _status_matches(batch.status, status)
                    and _dag_matches(batch, dag_id)
                    and access.may_see(batch.metadata)
                ):
                    rows.append(batch)
                if len(rows) >= limit:
                    more = more or index < len(data) - 1
                    break
            if not data:
                more = False
        shown = access.every or any(b.id == cursor for b in rows)
        view["has_more"] = more
        view["next_after"] = (cursor if shown else seal_cursor(cursor)) if more and cursor else None
        view["batches"] = [
            batch_view(summarize_batch(b), now=now, console_url=_console_url_of(hook, b.id)) for b in rows
        ]
    except Exception as err:
        view["error"] = f"Could not list the batches of connection {conn_id!r}: {_message(err, hook)}"
    finally:
        _close(hook)
    return view


_SEALED = "c1."


def _cursor_key() -> Any:
    """A Fernet key derived from ``[api_auth] jwt_secret``, which every api-server worker shares."""
    import base64
    import hashlib

    from airflow.configuration import conf
    from cryptography.fernet import Fernet

    secret = conf.get("api_auth", "jwt_secret", fallback="") or ""
    digest = hashlib.sha256(b"openai-batch-ui-cursor:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal_cursor(batch_id: str) -> str:
    """A paging cursor that does not show the batch id it holds (a batch the user may not see)."""
    return _SEALED + _cursor_key().encrypt(batch_id.encode()).decode()


def open_cursor(after: str | None) -> str | None:
    """The batch id of an ``after`` parameter, sealed or not.

    :raises HTTPException: 400 for a sealed cursor this server did not make.
    """
    if not after or not after.startswith(_SEALED):
        return after
    from cryptography.fernet import InvalidToken

    try:
        return str(_cursor_key().decrypt(after[len(_SEALED) :].encode()).decode())
    except (InvalidToken, ValueError):
        raise HTTPException(400, "The 'after' cursor is not valid here; start from the first page") from None


def _console_url_of(hook: OpenAIBatchHook, batch_id: str) -> str | None:
    try:
        return hook.batch_console_url(batch_id)
    except Exception:
        return None


def _conn_choices(session: Any, user: Any) -> list[str]:
    return [c for c in openai_conn_ids(session) if _may_read_connection(user, c)]


StatusQuery = Annotated[str, Query(max_length=20, pattern=r"^[a-z_]*$")]
AfterQuery = Annotated[str | None, Query(max_length=300)]
LimitQuery = Annotated[int, Query(ge=1, le=100)]
DagQuery = Annotated[str, Query(max_length=250)]


@app.get("/api/batches")
def batches_json(
    conn_id: Annotated[str, Depends(_connection)],
    user: GetUserDep,
    session: Annotated[Any, Depends(_session)],
    status: StatusQuery = "",
    after: AfterQuery = None,
    limit: LimitQuery = 20,
    dag_id: DagQuery = "",
) -> JSONResponse:
    choices = _conn_choices(session, user)
    access = dag_access(user, session)
    session.close()
    view = list_view(conn_id, access, status=status, after=after, limit=limit, dag_id=dag_id.strip())
    view["conn_ids"] = choices
    return JSONResponse(view, headers={"Cache-Control": "no-store"})


@app.get("/batches", response_class=HTMLResponse)
def batches_page(
    request: Request,
    conn_id: Annotated[str, Depends(_connection)],
    user: GetUserDep,
    session: Annotated[Any, Depends(_session)],
    status: StatusQuery = "",
    after: AfterQuery = None,
    limit: LimitQuery = 20,
    dag_id: DagQuery = "",
) -> HTMLResponse:
    choices = _conn_choices(session, user)
    access = dag_access(user, session)
    session.close()
    view = list_view(conn_id, access, status=status, after=after, limit=limit, dag_id=dag_id.strip())
    view["conn_ids"] = choices
    root = request.scope.get("root_path", "")
    nonce = _nonce()
    body = pages.list_page(
        view,
        nonce=nonce,
        page_url=f"{root}/batches",
        airflow_base=root.removesuffix(PREFIX),
        tab_route=TAB_ROUTE,
    )
    return _html(body, nonce)
