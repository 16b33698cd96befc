"""The payloads that cross a boundary (XCom, trigger events, resume kwargs, ``manifest.json``).

Typed so that mypy checks every key their producers write and their consumers read. They
stay plain JSON-safe dicts on the wire: Airflow serializes them, users read them.

- :class:`BatchSummary`: one batch, as ``waiting.status.summarize_batch`` makes it.
- :class:`WaitEvent`: how a wait ends: the event ``OpenAIBatchTrigger`` yields, also what the
  synchronous wait returns.
- :class:`SubmitManifest`: the submit operator's return value.
- :class:`FetchState`: the fetch operator's state across deferrals.
- :class:`FetchManifest`: the fetch's ``manifest.json``.
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired from evaluated annotations.
from typing import Any, Literal

from typing_extensions import NotRequired, TypedDict

__all__ = [
    "BatchSummary",
    "FetchManifest",
    "FetchRound",
    "FetchState",
    "RequestCounts",
    "SubmitManifest",
    "SubmitShard",
    "WaitEvent",
]


class RequestCounts(TypedDict):
    total: int
    completed: int
    failed: int


class BatchSummary(TypedDict):
    """One batch: status, counts, result files, usage, validation errors, timings; nothing secret."""

    id: str
    status: str
    endpoint: str | None
    model: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_counts: RequestCounts
    usage: Any
    errors: list[dict[str, Any]]
    timings: dict[str, Any]
    metadata: dict[str, str]


class WaitEvent(TypedDict):
    """``{"status": "success", "batches"}`` or ``{"status": "error", "reason", "message", "batches"}``."""

    status: Literal["success", "error"]
    batches: list[BatchSummary]
    reason: NotRequired[str]
    message: NotRequired[str]


class SubmitShard(TypedDict):
    index: int
    start_line: int
    line_count: int
    byte_count: int
    batch_id: str
    input_file_id: str


class SubmitManifest(TypedDict):
    """Ids and sizes of a submit, never requests: what the fetch operator and the sensor take."""

    conn_id: str
    endpoint: str
    model: str | None
    fingerprint: str
    identity: dict[str, Any]
    input_uri: str | None
    input_conn_id: str | None
    batch_ids: list[str]
    input_file_ids: list[str]
    shards: list[SubmitShard]
    batches: list[BatchSummary]
    estimate: NotRequired[dict[str, Any]]


class FetchRound(TypedDict):
    """One round of a fetch: round 0 the submitted batches, then each resubmission."""

    round: int
    batch_ids: list[str]
    resubmitted: int
    batches: NotRequired[list[BatchSummary]]
    fingerprint: NotRequired[str]
    estimate: NotRequired[dict[str, Any] | None]
    summaries: NotRequired[list[BatchSummary]]


class FetchState(TypedDict):
    """What the fetch carries across deferrals (resume kwargs and XCom): ids, sizes, checksums."""

    conn_id: str
    source: dict[str, Any]
    destination: str
    input_uri: str | None
    input_conn_id: str | None
    rounds: list[FetchRound]
    landed: list[dict[str, Any]]
    started_at: float


class FetchManifest(TypedDict):
    """``manifest.json``: counts, usage, cost, timings and the landed files of a fetch."""

    version: int
    status: str
    error: str | None
    endpoint: str | None
    model: str | None
    conn_id: str | None
    identity: dict[str, Any]
    submit_identity: Any
    input: dict[str, Any]
    destination: str
    manifest_uri: str
    results_uri: str | None
    batch_ids: list[str]
    rounds: list[dict[str, Any]]
    counts: dict[str, int]
    total: int | None
    retryable: int | None
    usage: dict[str, int] | None
    cost: dict[str, Any] | None
    estimate: dict[str, Any] | None
    timings: dict[str, Any]
    landed: list[dict[str, Any]]
    results: dict[str, Any] | None
    reconciliation: dict[str, Any] | None
