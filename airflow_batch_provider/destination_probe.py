"""Check, before a batch is paid for, that its results can land.

The submit operator calls :func:`check_fetch_destinations` before it uploads anything:
it finds the :class:`~airflow_batch_provider.operators.fetch.OpenAIBatchFetchOperator`
tasks downstream of it whose ``batches`` come from its output (``batches=submit.output``),
renders their ``destination`` with this run's context, and probes each one with
:func:`check_destination`: a write and a delete, where the fetch would write. A
destination that cannot be written (a path under a regular file, a ``gs://`` URL without
the Google provider, a bucket that does not exist, a storage connection that is missing or
of the wrong type) then fails the submit, not the fetch after the batch has run.

What cannot be known at submit time is not guessed: a destination whose template fails
to render then (it reads XComs or ``ti`` fields of the fetch's own run) is skipped with a
warning, and a mapped fetch task or one whose ``batches`` is not an XComArg of the submit is
not found. Those are checked, as before, only when the fetch runs.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from airflow_batch_provider.exceptions import DestinationError
from airflow_batch_provider.storage import as_object_storage_path, conn_id_of, public_text, public_uri

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

log = logging.getLogger(__name__)

_AMAZON = "apache-airflow-providers-amazon[s3fs]"
_GOOGLE = "apache-airflow-providers-google"
_AZURE = "apache-airflow-providers-microsoft-azure"
#: URL scheme -> the pip requirement that gives Airflow's object storage a filesystem for it.
PROVIDER_FOR_SCHEME: dict[str, str] = {
    "s3": _AMAZON,
    "s3a": _AMAZON,
    "s3n": _AMAZON,
    "gs": _GOOGLE,
    "gcs": _GOOGLE,
    "abfs": _AZURE,
    "abfss": _AZURE,
    "adl": _AZURE,
}
#: Azure Blob Storage spellings Airflow's object storage does not read: say which one it does.
_AZURE_OTHER_SPELLINGS = ("wasb", "wasbs", "az", "azure")
#: URL scheme -> connection types its filesystem reads (only where a wrong one is certain to fail).
_CONN_TYPES: dict[str, tuple[str, ...]] = {
    "s3": ("aws",),
    "s3a": ("aws",),
    "s3n": ("aws",),
    "gs": ("google_cloud_platform",),
    "gcs": ("google_cloud_platform",),
}
_LOCAL = ("", "file", "local")
_PROBE_PREFIX = ".airflow-batch-probe-"


@dataclass(frozen=True)
class FetchDestination:
    """The destination a downstream fetch task will write to, as rendered at submit time."""

    task_id: str
    destination: Any
    conn_id: str | None


def check_fetch_destinations(submit: Any, context: Mapping[str, Any]) -> list[str]:
    """Probe the destination of every fetch task fed by ``submit``; raise on the first unwritable one.

    :param submit: the submit operator (or ``@task.openai_batch`` task) being executed.
    :param context: its execution context; fetch templates are rendered with it.
    :return: the public URIs checked (for the log and for tests).
    :raises DestinationError: a destination cannot be written; nothing was uploaded.
    """
    checked = []
    for found in find_fetch_destinations(submit, context):
        where = f"fetch task {found.task_id!r}"
        check_destination(found.destination, conn_id=found.conn_id, where=where)
        uri = public_uri(str(found.destination)) or str(found.destination)
        log.info("Destination of %s is writable: %s", where, uri)
        checked.append(uri)
    return checked


def find_fetch_destinations(submit: Any, context: Mapping[str, Any]) -> Iterator[FetchDestination]:
    """The rendered destinations of the fetch tasks downstream of ``submit`` that take its output."""
    from airflow.sdk.definitions.xcom_arg import XComArg

    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator

    if not submit.has_dag():  # run on its own (tests): no fetch task to find
        return
    for task in sorted(submit.get_flat_relatives(upstream=False), key=lambda t: t.task_id):
        if not isinstance(task, OpenAIBatchFetchOperator):
            continue  # a mapped fetch (a MappedOperator) is checked when it runs
        refs = XComArg.iter_xcom_references(task.batches)
        if not any(op.task_id == submit.task_id for op, _key in refs):
            continue
        try:
            destination = task.render_template(task.destination, _context_of(task, context))
        except Exception as err:
            log.warning(
                "The destination of fetch task %r cannot be rendered before the batch runs (%s: %s), "
                "so it is not checked now: that task fails only when it writes.",
                task.task_id,
                type(err).__name__,
                public_text(str(err)),
            )
            continue
        yield FetchDestination(task.task_id, destination, task.destination_conn_id)


def _context_of(task: Any, context: Mapping[str, Any]) -> Context:
    """The submit's context as the fetch task would see it: its own ``task`` and task-level params.

    Run-level values (``ds``, ``dag_run``, ``params`` from the DAG and the run's conf, macros,
    ``var``, ``conn``) are the same for both tasks; ``ti`` stays the submit's.
    """
    params = dict(context.get("params") or {})
    own, dag_params = _values(getattr(task, "params", None)), _values(getattr(task.dag, "params", None))
    for key, value in own.items():
        if key not in dag_params or dag_params[key] != value:  # set on the fetch task itself
            params[key] = value
    return cast("Context", {**context, "task": task, "params": params})


def _values(params: Any) -> dict[str, Any]:
    """Resolved values of a ``ParamsDict`` (its ``items()`` yields ``Param`` objects)."""
    values = {}
    for key in params or ():
        with contextlib.suppress(Exception):  # a param without a default has no value yet
            values[key] = params[key]
    return values


def check_destination(destination: Any, *, conn_id: str | None = None, where: str = "destination") -> None:
    """Raise unless ``destination`` (a directory) can be written: write a probe there and delete it.

    Local paths: the destination, or its nearest existing parent, must be a directory in
    which a file can be created (nothing is created for the missing directories). Object
    stores: the scheme must have a filesystem installed, the connection must exist (and be
    of the right type for ``s3://`` and ``gs://``), and an empty probe object is written
    under the destination and deleted.

    :param destination: a URL, local path or ``ObjectStoragePath``.
    :param conn_id: storage connection when the URL does not name one (``destination_conn_id``).
    :param where: who writes there, for the message (``fetch task 'fetch'``).
    :raises DestinationError: it cannot be written; the message says why and what to do.
    """
    text = str(destination)
    shown = public_uri(text) or text
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    try:
        path = _path(destination, conn_id)
    except ValueError as err:  # a scheme no installed filesystem knows
        raise DestinationError(_no_filesystem(shown, scheme, where, err)) from None
    if (path.protocol or "") in _LOCAL:
        _check_local(path.path, shown, where)
        return
    from airflow.sdk.io.fs import has_fs

    if not has_fs(path.protocol):  # before the connection: installing comes first
        raise DestinationError(_no_filesystem(shown, scheme, where, None))
    conn = conn_id_of(path)
    if conn:
        _check_connection(conn, scheme, shown, where)
    try:
        fs = path.fs
    except (ValueError, ImportError) as err:
        raise DestinationError(_no_filesystem(shown, scheme, where, err)) from None
    _probe_remote(fs, path, shown, where)


def _path(destination: Any, conn_id: str | None) -> ObjectStoragePath:
    # The fetch's own rule (OpenAIBatchFetchOperator._destination_text): destination_conn_id
    # applies to a URL that names no connection.
    if conn_id and isinstance(destination, str) and "://" in destination:
        from airflow.sdk import ObjectStoragePath

        return ObjectStoragePath(destination, conn_id=conn_id)
    return as_object_storage_path(destination)


def _no_filesystem(shown: str, scheme: str, where: str, err: BaseException | None) -> str:
    head = f"The destination {shown} of {where} cannot be written: "
    why = f" ({public_text(str(err))})" if err is not None else ""
    if scheme in _AZURE_OTHER_SPELLINGS:
        return (
            f"{head}Airflow's object storage has no {scheme}:// filesystem{why}. Write Azure Blob "
            f"Storage as abfs://<container>/<path> with an Azure Data Lake (adls) connection naming the "
            f"account, after `pip install {_AZURE}`. Nothing was uploaded."
        )
    package = PROVIDER_FOR_SCHEME.get(scheme)
    if package:
        return (
            f"{head}no filesystem for {scheme}:// is installed{why}. Install it with "
            f"`pip install '{package}'` on every worker, or choose another destination. "
            "Nothing was uploaded."
        )
    known = ", ".join(sorted({"file", *PROVIDER_FOR_SCHEME}))
    return (
        f"{head}no filesystem for {scheme}:// is installed{why}. Install the Airflow provider that "
        f"registers that scheme, or use one of {known} (with its provider). Nothing was uploaded."
    )


def _check_local(directory: str, shown: str, where: str) -> None:
    head = f"The destination {shown} of {where} cannot be written: "
    existing = os.path.abspath(directory)
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        raise DestinationError(
            f"{head}{existing} is a file, not a directory, so no directory can be made there. "
            "Choose a destination that is (or can be made as) a directory. Nothing was uploaded."
        )
    try:
        fd, name = tempfile.mkstemp(prefix=_PROBE_PREFIX, dir=existing)
    except OSError as err:
        raise DestinationError(
            f"{head}creating a file in {existing} failed ({type(err).__name__}: {err.strerror or err}). "
            "Give the worker's user write access there or choose another destination. Nothing was uploaded."
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def _check_connection(conn_id: str, scheme: str, shown: str, where: str) -> None:
    from airflow.sdk import BaseHook

    head = f"The destination {shown} of {where} cannot be written: "
    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as err:
        raise DestinationError(
            f"{head}its storage connection {conn_id!r} is not defined ({type(err).__name__}). Define it "
            "(Admin > Connections, or an AIRFLOW_CONN_ variable) or fix destination_conn_id. "
            "Nothing was uploaded."
        ) from None
    expected = _CONN_TYPES.get(scheme)
    if expected and conn.conn_type not in expected:
        raise DestinationError(
            f"{head}its storage connection {conn_id!r} is of type {conn.conn_type!r}, and {scheme}:// "
            f"needs a {' or '.join(repr(t) for t in expected)} connection. Fix destination_conn_id "
            "(the OpenAI connection is conn_id, not the storage's). Nothing was uploaded."
        )


def _probe_remote(fs: Any, path: ObjectStoragePath, shown: str, where: str) -> None:
    probe = f"{path.path.rstrip('/')}/{_PROBE_PREFIX}{uuid.uuid4().hex[:12]}"
    try:
        with fs.open(probe, "wb") as out:
            out.write(b"")
    except Exception as err:
        reason = public_text(str(err)).replace(probe, path.path) or type(err).__name__
        raise DestinationError(
            f"The destination {shown} of {where} cannot be written: writing a test object there failed "
            f"({type(err).__name__}: {reason}). Check that the bucket or container exists, and the "
            "storage connection's credentials, endpoint and permissions. Nothing was uploaded."
        ) from None
    try:
        fs.rm(probe)
    except Exception as err:  # writable all the same; the empty object only needs removing
        log.warning(
            "The destination check wrote an empty object under %s and could not delete it (%s); "
            "delete it by hand.",
            shown,
            public_text(str(err)),
        )
