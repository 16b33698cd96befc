"""Extra links: each batch's console page, and the landed manifest.

Airflow 3 renders an extra link from the XCom that the worker wrote under the
link's ``xcom_key`` (the task runner calls :meth:`get_link` when the task ends or
defers). So the operators first persist the URLs with :func:`persist_batch_links`
*before* deferring: the links then work during a wait of hours, in the UI and for
a fresh operator instance after resuming. A link that cannot be built returns
``""``, which the UI hides; it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import attrs
from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

#: XCom key of the list of batch ids (shard order), pushed before waiting.
BATCH_IDS_XCOM_KEY = "batch_ids"
#: XCom key of the list of console URLs (shard order, "" where unknown), pushed before waiting.
BATCH_LINKS_XCOM_KEY = "batch_links"
#: XCom key of the landed ``manifest.json`` URI, pushed by the fetch operator.
LANDED_MANIFEST_XCOM_KEY = "landed_manifest_uri"
#: XCom key of why a submit failed (validation problems, the service's error), for the UI.
FAILURE_XCOM_KEY = "batch_failure"
#: Problems kept in that XCom (the count is exact; the task log has them all).
MAX_FAILURE_PROBLEMS = 50
_MAX_FAILURE_TEXT = 4000
#: How many per-batch links an operator shows; the plugin's task tab lists every batch.
MAX_BATCH_LINKS = 8


def _safe(fn: Callable[[], str]) -> str:
    try:
        return fn() or ""
    except Exception as err:  # a broken link must never break the page or the task
        log.debug("Extra link unavailable: %s", err)
        return ""


@attrs.define()
class OpenAIBatchLink(BaseOperatorLink):
    """Console page of the ``index``-th batch (shard) of a task.

    :param index: 0-based shard index; the first link is named "OpenAI Batch",
        the next ones "OpenAI Batch 2", "OpenAI Batch 3", ...
    """

    index: int = 0

    @property
    def name(self) -> str:
        return "OpenAI Batch" if self.index == 0 else f"OpenAI Batch {self.index + 1}"

    @property
    def xcom_key(self) -> str:
        return f"_link_openai_batch_{self.index + 1}"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        def build() -> str:
            # The operator that just ran knows its URLs; a resumed one or the sensor reads XCom.
            links = getattr(operator, "_batch_link_urls", None)
            if links is None:
                links = XCom.get_value(ti_key=ti_key, key=BATCH_LINKS_XCOM_KEY)
            if isinstance(links, (list, tuple)) and 0 <= self.index < len(links):
                return _as_http_url(links[self.index])
            return ""

        return _safe(build)


@attrs.define()
class OpenAIBatchManifestLink(BaseOperatorLink):
    """The landed ``manifest.json`` of a fetch, as a browsable URL where the scheme has one."""

    name = "Batch manifest"

    @property
    def xcom_key(self) -> str:
        return "_link_openai_batch_manifest"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        def build() -> str:
            # The fetch that ran knows whether it landed ("" while it waits): asking XCom for a
            # manifest not written yet makes the task SDK log "XCom not found" on every wait.
            uri = getattr(operator, "_landed_manifest_uri", None)
            if uri is None:
                uri = XCom.get_value(ti_key=ti_key, key=LANDED_MANIFEST_XCOM_KEY)
            return storage_browser_url(uri) if uri else ""

        return _safe(build)


def batch_links(count: int = MAX_BATCH_LINKS) -> tuple[OpenAIBatchLink, ...]:
    """The per-batch links an operator declares in ``operator_extra_links``."""
    return tuple(OpenAIBatchLink(index=i) for i in range(count))


def console_urls(hook: Any, batch_ids: Iterable[str]) -> list[str]:
    """Console URL of each batch via ``hook.batch_console_url``; ``""`` where there is none."""

    def url(batch_id: str) -> str:
        return _safe(lambda: hook.batch_console_url(batch_id) or "")

    return [url(bid) for bid in batch_ids]


def persist_batch_links(context: Any, hook: Any, batch_ids: Iterable[str]) -> list[str]:
    """Push the batch ids and their console URLs to XCom; return the URLs.

    Called before deferring, so the links resolve while the task waits. Failures are
    logged, never raised: a missing link is no reason to lose a submitted batch.
    """
    ids = [str(b) for b in batch_ids]
    urls = console_urls(hook, ids)
    try:
        ti = context["ti"]
        ti.xcom_push(key=BATCH_IDS_XCOM_KEY, value=ids)
        ti.xcom_push(key=BATCH_LINKS_XCOM_KEY, value=urls)
    except Exception as err:
        log.warning("Could not persist the batch links (%s); the UI shows none for this try.", err)
    return urls


def persist_landed_manifest(context: Any, uri: str, operator: Any = None) -> None:
    """Push the landed manifest's URI for :class:`OpenAIBatchManifestLink` (used by fetch).

    :param operator: the fetch operator: it remembers the URI, so its link needs no XCom read.
    """
    if operator is not None:
        operator._landed_manifest_uri = str(uri)
    try:
        context["ti"].xcom_push(key=LANDED_MANIFEST_XCOM_KEY, value=str(uri))
    except Exception as err:
        log.warning("Could not persist the manifest link (%s).", err)


def _as_http_url(value: Any) -> str:
    text = str(value or "")
    return text if urlsplit(text).scheme in ("http", "https") else ""


def storage_browser_url(uri: Any) -> str:
    """Turn an object storage URI into a URL a browser opens; ``""`` when unknown.

    ``s3://b/k`` -> the AWS S3 console, ``gs://b/k`` -> the GCS console,
    ``http(s)``/``file`` URIs unchanged; other schemes are returned as they are
    (the UI shows them, a click may not open them).
    """
    text = str(uri or "").strip()
    if not text:
        return ""
    parts = urlsplit(text)
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if parts.scheme in ("s3", "s3a") and bucket:
        return f"https://s3.console.aws.amazon.com/s3/object/{quote(bucket)}?prefix={quote(key)}"
    if parts.scheme in ("gs", "gcs") and bucket:
        return f"https://console.cloud.google.com/storage/browser/_details/{quote(bucket)}/{quote(key)}"
    if parts.scheme == "" and text.startswith("/"):
        return f"file://{quote(text)}"
    return text


def failure_summary(err: BaseException) -> dict[str, Any]:
    """A small, bounded account of why a task failed: the error, and the validator's problems.

    :return: ``{"error", "message", "problem_count", "problems": [{"line", "code", "message",
        "custom_id"}], "source"}`` (at most :data:`MAX_FAILURE_PROBLEMS` problems).
    """
    report = getattr(err, "report", None)
    problems = list(getattr(report, "problems", None) or ())[:MAX_FAILURE_PROBLEMS]
    return {
        "error": type(err).__name__,
        "message": str(err)[:_MAX_FAILURE_TEXT],
        "problem_count": int(getattr(report, "problem_count", 0) or 0),
        "problems": [
            {
                "line": getattr(p, "line", None),
                "code": str(getattr(p, "code", "")),
                "message": str(getattr(p, "message", ""))[:500],
                "custom_id": getattr(p, "custom_id", None),
            }
            for p in problems
        ],
        "source": getattr(report, "source", None),
    }


def persist_failure(context: Any, err: BaseException) -> None:
    """Push :func:`failure_summary` so the task tab shows why, not "no batches yet"; never raises."""
    try:
        context["ti"].xcom_push(key=FAILURE_XCOM_KEY, value=failure_summary(err))
    except Exception as push_err:
        log.warning("Could not record why the task failed for the UI (%s).", push_err)
