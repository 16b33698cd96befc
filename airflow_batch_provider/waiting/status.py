"""The one batch status vocabulary shared by the hook, trigger, sensor and operators.

Pure: no Airflow, no HTTP. ``summarize_batch`` turns the SDK's ``Batch`` into the
small JSON-safe dict that travels in trigger events and XCom; ``format_duration`` writes
its timings (and every ETA) for people.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from airflow_batch_provider.payloads import BatchSummary


class BatchStatus(str, Enum):
    """Statuses of an OpenAI batch, as the service names them."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"

    @classmethod
    def terminal(cls) -> frozenset[BatchStatus]:
        """Statuses a batch never leaves."""
        return frozenset({cls.FAILED, cls.COMPLETED, cls.EXPIRED, cls.CANCELLED})

    @classmethod
    def is_terminal(cls, status: str) -> bool:
        return status in {s.value for s in cls.terminal()}


_TIMESTAMPS = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
    "expires_at",
)


def summarize_batch(batch: Any) -> BatchSummary:
    """Return the JSON-safe summary of a batch (an SDK ``Batch`` or its dict form).

    Carries status, request counts, result file ids, usage, validation errors
    and timings: everything an operator needs to decide, nothing secret.
    """
    data: dict[str, Any] = batch.model_dump() if hasattr(batch, "model_dump") else dict(batch)
    counts = data.get("request_counts") or {}
    errors = (data.get("errors") or {}).get("data") or []
    return {
        "id": data["id"],
        "status": data["status"],
        "endpoint": data.get("endpoint"),
        "model": data.get("model"),
        "input_file_id": data.get("input_file_id"),
        "output_file_id": data.get("output_file_id"),
        "error_file_id": data.get("error_file_id"),
        "request_counts": {
            "total": int(counts.get("total") or 0),
            "completed": int(counts.get("completed") or 0),
            "failed": int(counts.get("failed") or 0),
        },
        "usage": data.get("usage"),
        "errors": [{k: e.get(k) for k in ("code", "message", "param", "line")} for e in errors[:100]],
        "timings": {k: data.get(k) for k in _TIMESTAMPS if data.get(k) is not None},
        "metadata": dict(data.get("metadata") or {}),
    }


def format_duration(seconds: float | None) -> str:
    """``42`` -> ``"42s"``, ``75`` -> ``"1m 15s"``, ``7500`` -> ``"2h 5m"``, ``None`` -> ``""``."""
    if seconds is None:
        return ""
    total = int(round(max(seconds, 0.0)))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"
