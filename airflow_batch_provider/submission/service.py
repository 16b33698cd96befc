"""Submit shards: the one place outside the hook that creates batches.

Used by ``OpenAIBatchSubmitOperator`` and by ``OpenAIBatchFetchOperator``'s resubmission
rounds, so both pay once by the same rules:

1. :func:`prepare_input` validates the whole input (nothing is uploaded when one line is
   wrong), plans its shards and computes its fingerprint.
2. :func:`submit_shards` finds the batches and uploads this task instance left on the
   service, plans per shard (:func:`~airflow_batch_provider.submission.identity.plan_submission`:
   re-attach, create from an upload, or upload and create), cancels what must not keep
   running, creates the missing batches and deletes the uploads nothing uses.

Cancelling is guarded: a batch that cannot be cancelled (it finished meanwhile, or the
service refused) is logged and the submission goes on, as on a timeout or a kill.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_batch_provider.batch_file.lines import (
    MAX_LINE_BYTES,
    ShardInfo,
    ShardLimits,
    ValidationReport,
    iter_lines,
    iter_shard_lines,
    plan_shards,
    validate_file,
)
from airflow_batch_provider.exceptions import BatchFileError, BatchIdentityConflictError
from airflow_batch_provider.submission.identity import (
    META_FINGERPRINT,
    META_IDENTITY,
    Identity,
    batch_metadata,
    fingerprint_matches,
    input_fingerprint,
    legacy_fingerprints,
    plan_submission,
    shard_label,
    upload_filename,
)

__all__ = [
    "INPUT_CHANGE_POLICIES",
    "NO_FILE_LIMIT",
    "InputChangePolicy",
    "PreparedInput",
    "cancel_batches",
    "prepare_input",
    "submit_shards",
]

#: Validation limits of a whole input: it is not rejected for filling more than one batch,
#: it gets sharded.
NO_FILE_LIMIT = ShardLimits(max_requests=2**62, max_bytes=2**62, max_embedding_inputs=2**62)

InputChangePolicy = Literal["cancel_and_resubmit", "resubmit", "fail"]
INPUT_CHANGE_POLICIES: tuple[InputChangePolicy, ...] = ("cancel_and_resubmit", "resubmit", "fail")

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedInput:
    """A validated input, its shards and its fingerprint."""

    report: ValidationReport
    #: The canonical (``/v1``) endpoint: the identity's (fingerprint, manifest).
    endpoint: str
    #: The endpoint as the lines spell it: batches are created with it (Azure OpenAI compares strings).
    line_url: str
    limits: ShardLimits
    shards: list[ShardInfo]
    fingerprint: str
    #: Fingerprints an earlier identity scheme gave this input (a retry spanning an upgrade).
    legacy: list[str]


def prepare_input(
    path: Any,
    *,
    endpoint: str | None,
    limits: ShardLimits,
    allow_unversioned_urls: bool,
    invalid: Callable[[ValidationReport], str],
    max_line_bytes: int = MAX_LINE_BYTES,
    source: str | None = None,
) -> PreparedInput:
    """Validate ``path`` whole, plan its shards and fingerprint it.

    :param path: The input JSONL (anything with ``open("rb")``: a ``Path`` or ``ObjectStoragePath``).
    :param endpoint: The endpoint the task declares (any spelling), or ``None``: the lines' own.
    :param limits: Per-batch limits the shards must fit.
    :param allow_unversioned_urls: Accept Azure OpenAI's unversioned urls too.
    :param invalid: Builds the error message of an invalid input from its report.
    :param max_line_bytes: Longest line accepted (a line must fit one shard).
    :param source: How reports name the input (its URI, or "requests"), instead of ``path``.
    :raises BatchFileError: the input is invalid; nothing was uploaded.
    """
    report = validate_file(
        path,
        endpoint=endpoint,
        limits=NO_FILE_LIMIT,
        allow_unversioned_urls=allow_unversioned_urls,
        max_line_bytes=max_line_bytes,
    )
    if source is not None:
        report.source = source
    if not report.ok:
        raise BatchFileError(invalid(report), report=report)
    canonical, line_url = report.endpoint, report.url
    assert canonical and line_url, "a valid report always knows its endpoint"
    with path.open("rb") as fileobj:
        shards = plan_shards(iter_lines(fileobj), limits)
    return PreparedInput(
        report=report,
        endpoint=canonical,
        line_url=line_url,
        limits=limits,
        shards=shards,
        fingerprint=input_fingerprint(report.sha256, canonical, limits),
        # Scheme 1 hashed the endpoint as the task spelled it.
        legacy=legacy_fingerprints(report.sha256, endpoint or canonical, limits),
    )


def cancel_batches(hook: Any, batch_ids: Iterable[str], *, reason: str, log: Any = _log) -> None:
    """Cancel each batch; one that cannot be cancelled is logged, not raised."""
    for batch_id in batch_ids:
        try:
            hook.cancel_batch(batch_id)
            log.warning("Cancelled batch %s: %s.", batch_id, reason)
        except Exception as err:
            log.warning("Could not cancel batch %s (%s): %s", batch_id, reason, err)


def submit_shards(
    hook: Any,
    path: Any,
    prepared: PreparedInput,
    identity: Identity,
    *,
    horizon: float | None,
    metadata: Mapping[str, Any] | None = None,
    on_input_change: InputChangePolicy = "cancel_and_resubmit",
    completion_window: str = "24h",
    output_expires_after: int | None = None,
    log: Any = _log,
) -> list[Any]:
    """Give every shard of ``prepared`` a batch, paying once; return them in shard order.

    :param hook: An ``OpenAIBatchHook``.
    :param path: The input :func:`prepare_input` read.
    :param identity: The task instance (a resubmission round is an identity of its own).
    :param horizon: Epoch seconds before which nothing of this DAG run was created
        (:func:`~airflow_batch_provider.submission.identity.run_horizon`).
    :param metadata: The user's batch metadata (the identity keys are added).
    :param on_input_change: When live batches of this identity exist for another input:
        cancel them, leave them, or fail (only when a batch would be created).
    :param completion_window: The batches' completion window.
    :param output_expires_after: Seconds after creation when the service may delete the results.
    :param log: Where to log (the task's logger).
    """
    shards, fingerprint, legacy = prepared.shards, prepared.fingerprint, prepared.legacy
    sizes = [s.byte_count for s in shards]
    # Nothing of this run predates the horizon: the listing stops there, not at the
    # account's first batch.
    found = hook.find_batches({META_IDENTITY: identity.key}, created_after=horizon)
    plan = plan_submission(
        identity=identity.key, fingerprint=fingerprint, shard_sizes=sizes, batches=found, legacy=legacy
    )
    if plan.to_create:  # only then are uploads worth listing
        files = list(hook.iter_files(purpose="batch", created_after=horizon))
        plan = plan_submission(
            identity=identity.key,
            fingerprint=fingerprint,
            shard_sizes=sizes,
            batches=found,
            files=files,
            legacy=legacy,
        )

    if plan.input_changed and plan.to_create:
        old = [
            b.id
            for b in found
            if b.metadata and not fingerprint_matches(b.metadata.get(META_FINGERPRINT), fingerprint, legacy)
        ]
        message = (
            f"The input changed since this task instance created batches {old} "
            f"(fingerprints {plan.previous_fingerprints}, now {fingerprint})"
        )
        if on_input_change == "fail":
            raise BatchIdentityConflictError(
                f"{message}; on_input_change='fail'. Cancel or keep them, then set "
                "on_input_change='resubmit' (or restore the input) and clear the task."
            )
        log.warning("%s: creating new batches for the new input.", message)
    if on_input_change == "cancel_and_resubmit" and plan.stale_batches:
        cancel_batches(hook, [b.id for b in plan.stale_batches], reason="their input was replaced", log=log)
    if plan.duplicate_batches:
        cancel_batches(
            hook, [b.id for b in plan.duplicate_batches], reason="duplicates of a shard's batch", log=log
        )
    for batch in plan.replaced_batches:
        log.warning(
            "Batch %s of this input ended %s: creating a new one for its shard.", batch.id, batch.status
        )

    result: list[Any] = []
    for action in plan.actions:
        shard = shards[action.index]
        label = shard_label(action.index, len(shards))
        if action.batch is not None:
            log.info(
                "Shard %s: re-attached to batch %s (%s) from an earlier try, nothing uploaded.",
                label,
                action.batch.id,
                action.batch.status,
            )
            result.append(action.batch)
            continue
        file_id = action.file_id
        if file_id:
            log.info("Shard %s: reusing upload %s left by an earlier try.", label, file_id)
        else:
            name = upload_filename(identity.key, fingerprint, action.index, len(shards))
            with path.open("rb") as fileobj:
                uploaded = hook.upload_file(iter_shard_lines(iter_lines(fileobj), shard), filename=name)
            file_id = uploaded.id
            log.info("Shard %s: uploaded %d requests as %s (%s).", label, shard.line_count, file_id, name)
        batch = hook.create_batch(
            file_id,
            prepared.line_url,
            completion_window=completion_window,
            metadata=batch_metadata(identity, fingerprint, action.index, len(shards), metadata),
            output_expires_after=None
            if output_expires_after is None
            else {"anchor": "created_at", "seconds": int(output_expires_after)},
        )
        log.info("Shard %s: created batch %s from %s.", label, batch.id, file_id)
        result.append(batch)

    for file_id in plan.orphan_file_ids:
        try:
            hook.delete_file(file_id)
            log.info("Deleted upload %s that no batch uses (left by an earlier try).", file_id)
        except Exception as err:
            log.warning("Could not delete orphaned upload %s: %s", file_id, err)
    return result
