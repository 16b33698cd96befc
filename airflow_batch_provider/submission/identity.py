"""Identity, fingerprint and re-attach planning for the submit operator.

Pure: no Airflow, no HTTP. The operator hands in what it read from the service
(batches found by identity, uploaded files) and gets back a :class:`SubmitPlan`
that says, per shard, whether to re-attach to a batch, create a batch from an
upload left behind by a crashed attempt, or upload and create; plus what to
cancel and delete. Never paying twice is decided here, so it is tested here.

Naming on the service side (what makes re-attaching possible without any
Airflow state, which a retry clears):

- every batch carries ``airflow_identity`` (the task instance, never the try),
  ``airflow_fingerprint`` (``v<scheme>:<fingerprint>`` of the input) and ``airflow_shard``
  (``"i/n"``, 1-based);
- every upload is named ``airflow-<identity>-<fingerprint>-<i>of<n>.jsonl``.

The scheme is versioned (:data:`IDENTITY_SCHEME`) and its values are pinned by tests: a change
that moves them would make the first retry after an upgrade pay for a second batch. A retry
that spans an upgrade still matches the batches of the previous scheme
(:func:`legacy_fingerprints`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from airflow_batch_provider.payloads import SubmitManifest, SubmitShard
from airflow_batch_provider.waiting.status import BatchStatus

META_IDENTITY = "airflow_identity"
META_FINGERPRINT = "airflow_fingerprint"
META_SHARD = "airflow_shard"
META_DAG_ID = "airflow_dag_id"
META_TASK_ID = "airflow_task_id"
META_RUN_ID = "airflow_run_id"
RESERVED_METADATA_KEYS = (META_IDENTITY, META_FINGERPRINT, META_SHARD, META_DAG_ID, META_TASK_ID, META_RUN_ID)

#: Service limits on batch metadata.
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512

#: Batches in these states are re-attached to on a retry: still running, or already paid for.
#: ``failed`` (nothing ran, nothing billed) and ``cancelling``/``cancelled`` (stopped on purpose,
#: e.g. a clear with cancel_on_kill) are replaced by a new batch instead.
REATTACH_STATUSES = frozenset(
    {
        BatchStatus.VALIDATING.value,
        BatchStatus.IN_PROGRESS.value,
        BatchStatus.FINALIZING.value,
        BatchStatus.COMPLETED.value,
        BatchStatus.EXPIRED.value,
    }
)
# Which of several re-attachable batches of one shard wins (lower is better).
_PREFERENCE = {"completed": 0, "finalizing": 1, "in_progress": 2, "validating": 3, "expired": 4}

#: Version of the identity and fingerprint scheme, written into each batch's
#: ``airflow_fingerprint`` (``"v2:<hex>"``). 1 (a bare hex value): the fingerprint hashed the
#: endpoint as the user spelled it (``chat/completions`` and ``/v1/chat/completions`` differed).
#: 2: the canonical ``/v1`` endpoint.
IDENTITY_SCHEME = 2

_FINGERPRINT_META_RE = re.compile(r"^(?:v(?P<scheme>\d+):)?(?P<fp>[0-9a-f]{16})$")

_FILENAME_RE = re.compile(
    r"^airflow-(?P<identity>[0-9a-f]{16})-(?P<fp>[0-9a-f]{16})-(?P<i>\d+)of(?P<n>\d+)\.jsonl$"
)


def _sha16(payload: Any) -> str:
    raw = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(raw).hexdigest()[:16]


@dataclass(frozen=True)
class Identity:
    """A task instance as the service sees it: same on every try, different per mapped index."""

    dag_id: str
    task_id: str
    run_id: str
    map_index: int = -1

    @property
    def key(self) -> str:
        """16 hex chars of sha256 over (dag_id, task_id, run_id, map_index)."""
        return identity_key(self.dag_id, self.task_id, self.run_id, self.map_index)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dag_id": self.dag_id,
            "task_id": self.task_id,
            "run_id": self.run_id,
            "map_index": self.map_index,
        }


def task_identity(ti: Any, *, part: str | None = None) -> Identity:
    """The identity of a task instance (``context["ti"]``).

    :param part: Names a part of the task with batches of its own, e.g. ``"resubmit-1"``
        for the fetch's first resubmission round (``<task_id>.<part>``).
    """
    map_index = getattr(ti, "map_index", None)
    task_id = ti.task_id if part is None else f"{ti.task_id}.{part}"
    return Identity(ti.dag_id, task_id, ti.run_id, -1 if map_index is None else map_index)


def identity_key(dag_id: str, task_id: str, run_id: str, map_index: int | None = -1) -> str:
    """Return the identity key of a task instance (never includes the try number).

    :param map_index: ``None`` and ``-1`` both mean "not mapped".
    """
    return _sha16([dag_id, task_id, run_id, -1 if map_index is None else int(map_index)])


def _limits_tuple(limits: Any) -> list[int]:
    if limits is None:
        return []
    if isinstance(limits, Mapping):
        return [int(limits[k]) for k in ("max_requests", "max_bytes", "max_embedding_inputs")]
    return [int(limits.max_requests), int(limits.max_bytes), int(limits.max_embedding_inputs)]


def input_fingerprint(content_sha256: str, endpoint: str, limits: Any = None) -> str:
    """Return the 16-hex fingerprint of an input: its bytes, endpoint and shard limits.

    Shard limits are part of it because they decide which requests land in which batch.

    :param content_sha256: sha256 hex digest of the whole input file.
    :param endpoint: The batch endpoint, e.g. ``/v1/chat/completions``.
    :param limits: A ``ShardLimits`` (or a mapping with the same keys).
    """
    return _sha16({"sha256": content_sha256, "endpoint": endpoint, "limits": _limits_tuple(limits)})


def legacy_fingerprints(content_sha256: str, endpoint_as_given: str | None, limits: Any = None) -> list[str]:
    """Fingerprints scheme 1 gave this input: a retry after an upgrade re-attaches to them.

    :param endpoint_as_given: The endpoint as the task spelled it (operator argument, template or
        the lines' url), before normalisation; scheme 1 hashed that spelling.
    """
    if not endpoint_as_given:
        return []
    return [input_fingerprint(content_sha256, endpoint_as_given, limits)]


def fingerprint_metadata(fingerprint: str) -> str:
    """The ``airflow_fingerprint`` metadata value: the fingerprint with its scheme version."""
    return f"v{IDENTITY_SCHEME}:{fingerprint}"


def parse_fingerprint_metadata(value: str | None) -> tuple[int, str] | None:
    """Inverse of :func:`fingerprint_metadata`: ``(scheme, fingerprint)``; a bare value is scheme 1."""
    match = _FINGERPRINT_META_RE.match(value or "")
    if not match:
        return None
    return int(match.group("scheme") or 1), match.group("fp")


def fingerprint_matches(value: str | None, fingerprint: str, legacy: Iterable[str] = ()) -> bool:
    """Whether a batch's ``airflow_fingerprint`` names this input, in this scheme or scheme 1."""
    parsed = parse_fingerprint_metadata(value)
    if parsed is None:
        return False
    scheme, found = parsed
    if scheme == IDENTITY_SCHEME:
        return found == fingerprint
    return scheme == 1 and (found == fingerprint or found in set(legacy))


def shard_label(index: int, count: int) -> str:
    """``"i/n"`` with a 1-based ``i`` for a 0-based shard ``index``."""
    return f"{index + 1}/{count}"


def parse_shard_label(label: str | None) -> tuple[int, int] | None:
    """Inverse of :func:`shard_label`: ``(index, count)`` with a 0-based index, or ``None``."""
    match = re.fullmatch(r"(\d+)/(\d+)", label or "")
    if not match:
        return None
    i, n = int(match.group(1)), int(match.group(2))
    return (i - 1, n) if 1 <= i <= n else None


def upload_filename(identity: str, fingerprint: str, index: int, count: int) -> str:
    """Name of the upload of shard ``index`` (0-based): found again after a crash."""
    return f"airflow-{identity}-{fingerprint}-{index + 1}of{count}.jsonl"


def parse_upload_filename(name: str | None) -> dict[str, Any] | None:
    """Return ``{"identity", "fingerprint", "index" (0-based), "count"}`` or ``None``."""
    match = _FILENAME_RE.match(name or "")
    if not match:
        return None
    i, n = int(match.group("i")), int(match.group("n"))
    if not 1 <= i <= n:
        return None
    return {"identity": match.group("identity"), "fingerprint": match.group("fp"), "index": i - 1, "count": n}


def batch_metadata(
    identity: Identity,
    fingerprint: str,
    shard_index: int,
    shard_count: int,
    user_metadata: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Build the metadata of one shard's batch: the user's pairs plus the identity.

    :raises ValueError: a user key clashes with a reserved ``airflow_*`` key, a key or
        value is too long, or there are more than 16 pairs in all.
    """
    user = {str(k): "" if v is None else str(v) for k, v in (user_metadata or {}).items()}
    clash = sorted(set(user) & set(RESERVED_METADATA_KEYS))
    if clash:
        raise ValueError(f"metadata keys {clash} are reserved for the operator's identity; rename them.")
    for key, value in user.items():
        if not key or len(key) > MAX_METADATA_KEY:
            raise ValueError(f"metadata key {key[:80]!r} must be 1..{MAX_METADATA_KEY} characters.")
        if len(value) > MAX_METADATA_VALUE:
            raise ValueError(
                f"metadata value of {key!r} is {len(value)} characters; "
                f"the service allows {MAX_METADATA_VALUE}."
            )
    room = MAX_METADATA_PAIRS - len(RESERVED_METADATA_KEYS)
    if len(user) > room:
        raise ValueError(
            f"metadata has {len(user)} pairs; the service allows {MAX_METADATA_PAIRS} per batch and the "
            f"operator uses {len(RESERVED_METADATA_KEYS)} for its identity, so pass at most {room}."
        )
    return {
        **user,
        META_IDENTITY: identity.key,
        META_FINGERPRINT: fingerprint_metadata(fingerprint),
        META_SHARD: shard_label(shard_index, shard_count),
        META_DAG_ID: identity.dag_id[:MAX_METADATA_VALUE],
        META_TASK_ID: identity.task_id[:MAX_METADATA_VALUE],
        META_RUN_ID: identity.run_id[:MAX_METADATA_VALUE],
    }


def _get(obj: Any, name: str, default: Any = None) -> Any:
    """Read a field of an SDK object or of its dict form."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _metadata(batch: Any) -> Mapping[str, str]:
    return _get(batch, "metadata") or {}


@dataclass(frozen=True)
class ShardAction:
    """What to do for one shard.

    ``batch`` set: re-attach to it. Otherwise create a batch from ``file_id`` when set
    (an upload a crashed attempt left), else upload the shard and create.
    """

    index: int
    batch: Any = None
    file_id: str | None = None

    @property
    def needs_batch(self) -> bool:
        return self.batch is None


@dataclass
class SubmitPlan:
    """The decisions of one execute: per shard actions, and what to clean up."""

    identity: str
    fingerprint: str
    actions: list[ShardAction]
    #: Live batches of this identity made from another input (cancel when the input changed).
    stale_batches: list[Any] = field(default_factory=list)
    #: Extra live batches for a shard that already has one (a retried create): cancel them.
    duplicate_batches: list[Any] = field(default_factory=list)
    #: Failed or cancelled batches of this input that get replaced (for the log).
    replaced_batches: list[Any] = field(default_factory=list)
    #: Fingerprints of other inputs seen for this identity: the input changed.
    previous_fingerprints: list[str] = field(default_factory=list)
    #: Uploads of this identity that nothing references or will reference: delete them.
    orphan_file_ids: list[str] = field(default_factory=list)

    @property
    def reattached(self) -> list[Any]:
        return [a.batch for a in self.actions if a.batch is not None]

    @property
    def input_changed(self) -> bool:
        return bool(self.previous_fingerprints)

    @property
    def to_create(self) -> list[ShardAction]:
        return [a for a in self.actions if a.needs_batch]


def _rank(batch: Any) -> tuple[int, float, str]:
    return (
        _PREFERENCE.get(str(_get(batch, "status")), 9),
        float(_get(batch, "created_at") or 0),
        str(_get(batch, "id")),
    )


def plan_submission(
    *,
    identity: str,
    fingerprint: str,
    shard_sizes: Sequence[int],
    batches: Iterable[Any],
    files: Iterable[Any] = (),
    legacy: Sequence[str] = (),
) -> SubmitPlan:
    """Decide, per shard, between re-attach, create-from-upload and upload-and-create.

    :param identity: The task instance's identity key.
    :param fingerprint: This attempt's input fingerprint.
    :param shard_sizes: Byte count of each planned shard, in order (an upload is reused
        only when its size matches, a cheap guard against a truncated upload).
    :param batches: Batches whose metadata carries this identity (``hook.find_batches``).
    :param files: Uploaded files (``hook.iter_files(purpose="batch")``); only those named
        for this identity are considered.
    :param legacy: Fingerprints an earlier scheme gave this input (:func:`legacy_fingerprints`):
        batches and uploads carrying them are this input too.
    """
    count = len(shard_sizes)
    found = [b for b in batches if _metadata(b).get(META_IDENTITY) == identity]
    plan = SubmitPlan(identity=identity, fingerprint=fingerprint, actions=[])

    per_shard: dict[int, list[Any]] = {}
    previous: list[str] = []
    for batch in found:
        meta = _metadata(batch)
        parsed = parse_shard_label(meta.get(META_SHARD))
        same_input = (
            fingerprint_matches(meta.get(META_FINGERPRINT), fingerprint, legacy)
            and parsed is not None
            and parsed[1] == count
        )
        status = str(_get(batch, "status"))
        if not same_input:
            value = meta.get(META_FINGERPRINT)
            parsed_fp = parse_fingerprint_metadata(value)
            fp = parsed_fp[1] if parsed_fp else str(value)
            if fp not in previous and not fingerprint_matches(value, fingerprint, legacy):
                previous.append(fp)
            if not BatchStatus.is_terminal(status) and status != BatchStatus.CANCELLING.value:
                plan.stale_batches.append(batch)
            continue
        assert parsed is not None
        if status in REATTACH_STATUSES:
            per_shard.setdefault(parsed[0], []).append(batch)
        else:
            plan.replaced_batches.append(batch)
    plan.previous_fingerprints = previous

    referenced = {str(_get(b, "input_file_id")) for b in found}
    # Uploads named for this identity: reuse the newest complete one per shard, delete the rest
    # unless a batch reads it (fetch joins results to inputs through the batch's input file).
    uploads: dict[int, list[Any]] = {}
    ours = []
    for f in files:
        parsed_name = parse_upload_filename(_get(f, "filename"))
        if parsed_name is None or parsed_name["identity"] != identity:
            continue
        ours.append(f)
        if parsed_name["fingerprint"] not in {fingerprint, *legacy} or parsed_name["count"] != count:
            continue
        index = parsed_name["index"]
        usable = _get(f, "status") not in ("error", "deleted") and _get(f, "bytes") == shard_sizes[index]
        if usable:
            uploads.setdefault(index, []).append(f)

    kept: set[str] = set()
    for index in range(count):
        candidates = sorted(per_shard.get(index, []), key=_rank)
        if candidates:
            chosen = candidates[0]
            plan.actions.append(ShardAction(index=index, batch=chosen))
            plan.duplicate_batches.extend(
                b for b in candidates[1:] if not BatchStatus.is_terminal(str(_get(b, "status")))
            )
            continue
        files_for_shard = sorted(uploads.get(index, []), key=lambda f: -float(_get(f, "created_at") or 0))
        file_id = str(_get(files_for_shard[0], "id")) if files_for_shard else None
        if file_id:
            kept.add(file_id)
        plan.actions.append(ShardAction(index=index, file_id=file_id))

    plan.orphan_file_ids = [
        str(_get(f, "id"))
        for f in ours
        if str(_get(f, "id")) not in kept and str(_get(f, "id")) not in referenced
    ]
    return plan


def build_submit_manifest(
    *,
    conn_id: str,
    endpoint: str,
    model: str | None,
    fingerprint: str,
    identity: Identity,
    input_uri: str | None,
    shards: Sequence[Any],
    batches: Sequence[Any],
    input_conn_id: str | None = None,
) -> SubmitManifest:
    """Build the submit manifest (the operator's XCom return value): ids and sizes, no requests.

    :param input_uri: The input file, as it may be recorded (``storage.public_uri``: no query,
        no user info).
    :param shards: ``ShardInfo`` objects (or dicts), in shard order.
    :param batches: The batch of each shard, in the same order (SDK ``Batch`` or dict).
    :param input_conn_id: The storage connection of ``input_uri``, when it has one.
    """
    if len(shards) != len(batches):
        raise ValueError(f"{len(shards)} shards but {len(batches)} batches")
    rows: list[SubmitShard] = []
    for shard, batch in zip(shards, batches, strict=True):
        rows.append(
            {
                "index": int(_get(shard, "index")),
                "start_line": int(_get(shard, "start_line")),
                "line_count": int(_get(shard, "line_count")),
                "byte_count": int(_get(shard, "byte_count")),
                "batch_id": str(_get(batch, "id")),
                "input_file_id": str(_get(batch, "input_file_id")),
            }
        )
    return {
        "conn_id": conn_id,
        "endpoint": endpoint,
        "model": model,
        "fingerprint": fingerprint,
        "identity": identity.to_dict(),
        "input_uri": input_uri,
        "input_conn_id": input_conn_id,
        "batch_ids": [r["batch_id"] for r in rows],
        "input_file_ids": [r["input_file_id"] for r in rows],
        "shards": rows,
        "batches": [],
    }


def deadline_from(batches: Iterable[Any], timeout: float | None, *, now: float) -> float | None:
    """Wall-clock deadline (epoch seconds) of a wait: the first batch's creation plus ``timeout``.

    Derived from the service's ``created_at`` so that every retry and every triggerer
    restart computes the same deadline without any state of ours.

    :param now: Fallback start when no batch says when it was created.
    """
    if timeout is None:
        return None
    created = [float(c) for c in (_get(b, "created_at") for b in batches) if c]
    return (min(created) if created else now) + float(timeout)


#: Slack for the clocks of Airflow and of the service when bounding a re-attach search.
REATTACH_CLOCK_SLACK = 3600.0


def reattach_horizon(*moments: datetime | None) -> float | None:
    """Epoch seconds before which no batch of this DAG run can have been created.

    The earliest of ``moments`` (the run's ``run_after``, which the scheduler waits for,
    and its ``start_date``) less :data:`REATTACH_CLOCK_SLACK`; ``None`` when none is known,
    which means "search everything". A clear resets ``start_date`` but never ``run_after``,
    so batches of earlier tries stay inside the horizon.
    """
    known = [m.timestamp() for m in moments if m is not None]
    return min(known) - REATTACH_CLOCK_SLACK if known else None


def run_horizon(context: Mapping[str, Any]) -> float | None:
    """:func:`reattach_horizon` of the task's DAG run (``None`` outside a DAG run)."""
    dag_run = context.get("dag_run")
    return reattach_horizon(getattr(dag_run, "run_after", None), getattr(dag_run, "start_date", None))
