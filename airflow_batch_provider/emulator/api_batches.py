"""Batches API: ``/v1/batches`` (and Azure OpenAI's ``/openai/batches``, see :mod:`.azure`)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_batch_provider.emulator import azure, ids
from airflow_batch_provider.emulator.context import emulator, int_query, json_body, list_page
from airflow_batch_provider.emulator.errors import APIError, bad_request, not_found

# Mounted under /v1 and /openai by the app.
router = APIRouter(prefix="/batches")

MAX_METADATA_PAIRS, MAX_KEY, MAX_VALUE = 16, 64, 512
MIN_TTL, MAX_TTL = 3600, 30 * 24 * 3600


def _required(body: dict[str, Any], name: str) -> Any:
    if body.get(name) in (None, ""):
        raise bad_request(
            f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter"
        )
    return body[name]


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise bad_request("Invalid 'metadata': expected an object.", param="metadata", code="invalid_type")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(
            f"Invalid 'metadata': too many properties. Expected an object with at most {MAX_METADATA_PAIRS} "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > MAX_KEY:
            raise bad_request(
                f"Invalid 'metadata': key {key[:20]!r}... is {len(key)} characters; keys may have at most "
                f"{MAX_KEY}.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str) or len(value) > MAX_VALUE:
            raise bad_request(
                f"Invalid 'metadata.{key}': values must be strings of at most {MAX_VALUE} characters.",
                param=f"metadata.{key}",
                code="string_above_max_length" if isinstance(value, str) else "invalid_type",
            )
    return metadata


def _check_output_expiry(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise bad_request(
            'Invalid \'output_expires_after\': expected {"anchor": "created_at", "seconds": N}.',
            param="output_expires_after",
            code="invalid_value",
        )
    seconds = value.get("seconds")
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not MIN_TTL <= seconds <= MAX_TTL:
        raise bad_request(
            f"Invalid 'output_expires_after.seconds': expected an integer from {MIN_TTL} to {MAX_TTL}.",
            param="output_expires_after.seconds",
            code="invalid_value",
        )
    return seconds


@router.post("")
async def create_batch(request: Request) -> Response:
    """Create a batch from an uploaded ``batch`` file; it starts ``validating``."""
    emu = emulator(request)
    body = await json_body(request)
    input_file_id = _required(body, "input_file_id")
    endpoint = _required(body, "endpoint")
    window = _required(body, "completion_window")
    supported = azure.batch_endpoints(request)
    if endpoint not in supported:
        raise bad_request(
            f"Invalid value for 'endpoint': {endpoint!r}. Supported values are: {', '.join(supported)}.",
            param="endpoint",
            code="invalid_value",
        )
    if window != "24h":
        raise bad_request(
            f"Invalid value for 'completion_window': {window!r}. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    metadata = _check_metadata(body.get("metadata"))
    output_ttl = _check_output_expiry(body.get("output_expires_after"))
    try:
        input_file = emu.store.get_file(str(input_file_id))
    except APIError:
        raise not_found(f"No such File object: {input_file_id}", param="input_file_id") from None
    if input_file["purpose"] != "batch":
        raise bad_request(
            f"The input file {input_file_id} has purpose '{input_file['purpose']}'; batch inputs must be "
            "uploaded with purpose 'batch'.",
            param="input_file_id",
            code="invalid_value",
        )
    window_seconds = emu.settings.profile.completion_window_seconds
    created = ids.now()
    obj: dict[str, Any] = {
        "id": ids.batch_id(),
        "object": "batch",
        "endpoint": endpoint,
        "model": None,
        "errors": None,
        "input_file_id": input_file_id,
        "completion_window": window,
        "status": "validating",
        "output_file_id": None,
        "error_file_id": None,
        "created_at": created,
        "in_progress_at": None,
        "expires_at": created + max(1, round(window_seconds)),
        "finalizing_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "cancelling_at": None,
        "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0},
        "usage": {
            "input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 0,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 0,
        },
        "metadata": metadata,
    }
    state = {"deadline": time.time() + window_seconds, "output_ttl": output_ttl}
    record = emu.store.add_batch(obj, state)
    emu.store.link_input(record.id, input_file_id)  # the batch keeps its input even if the file is deleted
    response = JSONResponse(obj)  # rendered now, before the engine moves the batch on
    emu.running_engine.submit(record.id)
    emu.stats.batches_created += 1
    return response


@router.get("")
async def list_batches(request: Request) -> Response:
    """List batches, newest first (``after``, ``limit`` 1..100, default 20)."""
    data, has_more = emulator(request).store.list_batches(
        after=request.query_params.get("after"), limit=int_query(request, "limit", 20, 1, 100)
    )
    return list_page(data, has_more)


@router.get("/{batch_id}")
async def retrieve_batch(request: Request, batch_id: str) -> Response:
    """One batch."""
    return JSONResponse(emulator(request).store.get_batch(batch_id).object)


@router.post("/{batch_id}/cancel")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    """Cancel a batch: ``cancelling`` now, ``cancelled`` once partial results are written."""
    return JSONResponse(emulator(request).running_engine.cancel(batch_id))
