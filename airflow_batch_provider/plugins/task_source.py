"""Where a task instance's batches are recorded: its XComs, rendered fields and landed manifest.

Runs in the api-server, against Airflow's database. Which XComs hold what:

- ``batch_ids`` (and ``batch_links``): pushed by the submit operator and the sensor
  *before* waiting, so a running task already shows its batches;
- ``return_value``: the submit manifest (``conn_id``, ``batch_ids``, ``shards``,
  ``batches``: the last summaries) or the fetch summary (``manifest_uri``, ``results_uri``,
  ``batch_ids``, ``counts``);
- ``landed_manifest_uri``: the fetch's ``manifest.json``;
- ``batch_failure``: why a submit failed (validation problems, the service's error).

The task's connection is the submit manifest's ``conn_id``, else the rendered
``conn_id`` template field (known while the task still waits), else the landed
manifest's, else ``openai_default``.

XComs can be written by users through Airflow's API, so nothing read from them is trusted
to choose what the server reads: a landed manifest is read only under the task's rendered
``destination`` (written by the task run itself), and the app reads batches live only
through a connection the viewing user may read.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_batch_provider.links import (
    BATCH_IDS_XCOM_KEY,
    BATCH_LINKS_XCOM_KEY,
    FAILURE_XCOM_KEY,
    LANDED_MANIFEST_XCOM_KEY,
)

RETURN_VALUE = "return_value"
XCOM_KEYS = (
    RETURN_VALUE,
    BATCH_IDS_XCOM_KEY,
    BATCH_LINKS_XCOM_KEY,
    LANDED_MANIFEST_XCOM_KEY,
    FAILURE_XCOM_KEY,
)
DEFAULT_CONN_ID = "openai_default"
#: A landed manifest larger than this is not read by the UI (it lists files, not results).
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
MANIFEST_NAME = "manifest.json"


@dataclass
class TaskRefs:
    """What the database says about a task instance's batches."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str | None
    operator: str | None
    try_number: int | None
    batch_ids: list[str] = field(default_factory=list)
    conn_id: str | None = None
    console_urls: dict[str, str] = field(default_factory=dict)
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    shards: dict[str, dict[str, Any]] = field(default_factory=dict)
    fetch: dict[str, Any] | None = None
    manifest_uri: str | None = None
    destination: str | None = None
    failure: dict[str, Any] | None = None
    estimate: dict[str, Any] | None = None  # the submit manifest's pre-submit estimate


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() and value.strip() != "None" else None


def _ids(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        return []
    return [v for v in (_text(x) for x in value) if v]


def _items(value: Any) -> list[Any] | tuple[Any, ...]:
    """``value`` if it is a list, else nothing: any task may return ``{"batches": 3}``."""
    return value if isinstance(value, (list, tuple)) else ()


def merge_ids(*groups: Iterable[str]) -> list[str]:
    """Ids of every group, first occurrence first."""
    seen: dict[str, None] = {}
    for group in groups:
        for item in group:
            seen.setdefault(item, None)
    return list(seen)


def refs_from_xcoms(
    refs: TaskRefs, xcoms: Mapping[str, Any], rendered_conn_id: Any = None, rendered_destination: Any = None
) -> TaskRefs:
    """Fill ``refs`` from the task's XCom values (by key) and its rendered ``conn_id`` and ``destination``."""
    returned = xcoms.get(RETURN_VALUE)
    returned = returned if isinstance(returned, Mapping) else {}
    pushed = _ids(xcoms.get(BATCH_IDS_XCOM_KEY))
    refs.batch_ids = merge_ids(pushed, _ids(returned.get("batch_ids")))
    links = xcoms.get(BATCH_LINKS_XCOM_KEY)
    if isinstance(links, (list, tuple)):
        refs.console_urls = {bid: str(url) for bid, url in zip(pushed, links, strict=False) if url}
    for summary in _items(returned.get("batches")):
        if isinstance(summary, Mapping) and summary.get("id"):
            refs.summaries[str(summary["id"])] = dict(summary)
    for shard in _items(returned.get("shards")):
        if isinstance(shard, Mapping) and shard.get("batch_id"):
            refs.shards[str(shard["batch_id"])] = dict(shard)
    refs.conn_id = _text(returned.get("conn_id")) or _text(rendered_conn_id)
    if isinstance(returned.get("estimate"), Mapping):
        refs.estimate = dict(returned["estimate"])
    if "manifest_uri" in returned or "results_uri" in returned:
        refs.fetch = {
            k: returned.get(k) for k in ("manifest_uri", "results_uri", "destination", "counts", "total")
        }
    refs.manifest_uri = _text(xcoms.get(LANDED_MANIFEST_XCOM_KEY)) or _text(returned.get("manifest_uri"))
    refs.destination = _text(rendered_destination)
    failure = xcoms.get(FAILURE_XCOM_KEY)
    refs.failure = dict(failure) if isinstance(failure, Mapping) else None
    return refs


def read_task_refs(session: Any, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskRefs | None:
    """Read a task instance's batch references; ``None`` when there is no such task instance.

    :param session: an Airflow ORM session.
    """
    from airflow.models.renderedtifields import RenderedTaskInstanceFields as RTIF
    from airflow.models.taskinstance import TaskInstance as TI
    from airflow.models.xcom import XComModel
    from sqlalchemy import select

    row = session.execute(
        select(TI.state, TI.operator, TI.try_number).where(
            TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id, TI.map_index == map_index
        )
    ).first()
    if row is None:
        return None
    refs = TaskRefs(dag_id, run_id, task_id, map_index, state=row[0], operator=row[1], try_number=row[2])
    xcoms: dict[str, Any] = {}
    for xcom in session.execute(
        select(XComModel.key, XComModel.value).where(
            XComModel.dag_id == dag_id,
            XComModel.run_id == run_id,
            XComModel.task_id == task_id,
            XComModel.map_index == map_index,
            XComModel.key.in_(XCOM_KEYS),
        )
    ):
        xcoms[xcom.key] = XComModel.deserialize_value(xcom)
    rendered = session.scalar(
        select(RTIF.rendered_fields).where(
            RTIF.dag_id == dag_id, RTIF.run_id == run_id, RTIF.task_id == task_id, RTIF.map_index == map_index
        )
    )
    rendered = rendered if isinstance(rendered, Mapping) else {}
    return refs_from_xcoms(refs, xcoms, rendered.get("conn_id"), rendered.get("destination"))


def mapped_instances(session: Any, dag_id: str, run_id: str, task_id: str) -> int:
    """How many mapped instances a task has in a run (0: not mapped, or no such task)."""
    from airflow.models.taskinstance import TaskInstance as TI
    from sqlalchemy import func, select

    count = session.scalar(
        select(func.count()).where(
            TI.dag_id == dag_id, TI.run_id == run_id, TI.task_id == task_id, TI.map_index >= 0
        )
    )
    return int(count or 0)


def manifest_path(uri: str, destination: str | None) -> Any:
    """The ``ObjectStoragePath`` of a landed manifest, if ``uri`` lies under ``destination``.

    Both are compared as written (scheme, bucket or host, path), after dropping a storage
    connection given as user info; ``.`` and ``..`` segments are refused, not resolved. The
    path is built from ``destination``, so it keeps the destination's storage connection.

    :param uri: the manifest URI the task's XCom names.
    :param destination: the task's rendered ``destination``.
    :raises ValueError: with a message for the page, when ``uri`` is not read.
    """
    from airflow_batch_provider.storage import as_object_storage_path, public_uri

    if not uri.endswith("/" + MANIFEST_NAME):
        raise ValueError(f"{uri} is not a {MANIFEST_NAME}; not read")
    if not destination:
        raise ValueError("the task has no recorded destination, so no manifest is read")
    try:
        base = as_object_storage_path(destination)
        wanted = public_uri(str(as_object_storage_path(uri))) or ""
    except Exception as err:
        raise ValueError(f"{uri} is not a storage URL the server can read ({type(err).__name__})") from None
    prefix = (public_uri(str(base)) or "").rstrip("/") + "/"
    relative = wanted[len(prefix) :] if wanted.startswith(prefix) else ""
    if not relative or any(part in ("", ".", "..") for part in relative.split("/")):
        raise ValueError(f"{uri} is outside the task's destination {destination}; not read")
    return base / relative


def read_landed_manifest(
    uri: str, destination: str | None, *, max_bytes: int = MAX_MANIFEST_BYTES
) -> dict[str, Any]:
    """Read a fetch's ``manifest.json`` (only a file of that name, under ``destination``, at most
    ``max_bytes``).

    :param uri: the manifest URI the task's XCom names.
    :param destination: the task's rendered ``destination`` (see :func:`manifest_path`).
    :raises ValueError: with a message for the page, when it cannot be read.
    """
    path = manifest_path(uri, destination)
    try:
        with path.open("rb") as handle:
            data = handle.read(max_bytes + 1)
    except Exception as err:  # any storage error: the page still shows the batches
        raise ValueError(f"the landed manifest {uri} could not be read here ({type(err).__name__})") from None
    if len(data) > max_bytes:
        raise ValueError(f"the landed manifest {uri} is larger than {max_bytes} bytes; not read")
    try:
        manifest = json.loads(data)
    except ValueError:
        raise ValueError(f"the landed manifest {uri} is not JSON") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"the landed manifest {uri} is not a JSON object")
    return manifest


def _conn_type_of(value: str) -> str | None:
    """The ``conn_type`` of an ``AIRFLOW_CONN_*`` value (JSON or URI form)."""
    text = value.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError:
            return None
        return str(data.get("conn_type")) if isinstance(data, dict) else None
    scheme = text.split("://", 1)[0] if "://" in text else None
    return scheme.replace("-", "_") if scheme else None


def openai_conn_ids(session: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Ids of the ``openai`` connections defined in the database or as ``AIRFLOW_CONN_*`` variables.

    Only ids are read from the variables' values, never shown.
    """
    from airflow.models.connection import Connection
    from sqlalchemy import select

    ids = set(session.scalars(select(Connection.conn_id).where(Connection.conn_type == "openai")))
    for name, value in (os.environ if environ is None else environ).items():
        if name.startswith("AIRFLOW_CONN_") and _conn_type_of(value) == "openai":
            ids.add(name[len("AIRFLOW_CONN_") :].lower())
    return sorted(ids)
