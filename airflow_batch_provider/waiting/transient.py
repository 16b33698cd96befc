"""Which failures are worth another attempt, and how long the service asked us to wait.

Pure: no Airflow, no HTTP library (errors are read by their attributes, as the ``openai``
SDK sets them). One list for the hook's retries, the waits (trigger, synchronous wait,
sensor) and the result lines worth resubmitting.

Retry-After is honoured up to :data:`MAX_RETRY_AFTER` (60 s), the ceiling the ``openai``
SDK applies to its own retries: a longer request is capped there, and the wait's backoff
(up to ``max_poll_interval``) applies on top of it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any

__all__ = [
    "MAX_RETRY_AFTER",
    "TRANSIENT_STATUSES",
    "error_chain",
    "is_transient_status",
    "retry_after",
    "status_of",
]

#: HTTP statuses that may succeed when asked again, besides every 5xx: 408 (timeout),
#: 409 (conflict, e.g. a lock), 429 (rate limit; not ``insufficient_quota``).
TRANSIENT_STATUSES = frozenset({408, 409, 429})
#: Longest Retry-After honoured, seconds.
MAX_RETRY_AFTER = 60.0
#: A 429 with this code will not pass by waiting: the account has no quota left.
NO_QUOTA_CODE = "insufficient_quota"


def is_transient_status(status: int, code: str | None = None) -> bool:
    """Whether an answer with this HTTP status (and error code) may succeed if asked again."""
    if status == 429 and code == NO_QUOTA_CODE:
        return False
    return status in TRANSIENT_STATUSES or status >= 500


def error_chain(exc: BaseException, limit: int = 5) -> list[BaseException]:
    """The exception and its causes (the hook raises its own errors ``from None``: the context is kept)."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < limit:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def status_of(exc: BaseException) -> int | None:
    """The first HTTP status in the exception's chain, if any."""
    return next((s for e in error_chain(exc) if isinstance(s := getattr(e, "status_code", None), int)), None)


def _seconds(headers: Mapping[str, Any]) -> float | None:
    with contextlib.suppress(TypeError, ValueError):
        if headers.get("retry-after-ms"):
            return float(headers["retry-after-ms"]) / 1000
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        with contextlib.suppress(TypeError, ValueError, IndexError):
            return parsedate_to_datetime(value).timestamp() - time.time()
    return None


def retry_after(exc: BaseException) -> float | None:
    """Seconds the service asked to wait (``retry-after-ms``, else ``retry-after`` in seconds
    or as an HTTP date), between 0 and :data:`MAX_RETRY_AFTER`; ``None`` when it did not say."""
    for e in error_chain(exc):
        headers = getattr(getattr(e, "response", None), "headers", None)
        if not headers:
            continue
        seconds = _seconds(headers)
        if seconds is not None:
            return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    return None
