"""Files API: ``/v1/files`` (and Azure OpenAI's ``/openai/files``, see :mod:`.azure`)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from airflow_batch_provider.emulator import ids
from airflow_batch_provider.emulator.context import emulator, int_query, list_page
from airflow_batch_provider.emulator.errors import APIError, bad_request
from airflow_batch_provider.emulator.uploads import Upload, receive_upload

# Mounted under /v1 and /openai by the app.
router = APIRouter(prefix="/files")

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MIN_TTL, MAX_TTL = 3600, 30 * 24 * 3600


def _expires_at(upload: Upload, purpose: str) -> int | None:
    """``expires_at`` from ``expires_after[anchor]``/``[seconds]``; batch files default to 30 days."""
    anchor = upload.fields.get("expires_after[anchor]")
    seconds = upload.fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return ids.now() + MAX_TTL if purpose == "batch" else None
    if anchor != "created_at":
        raise bad_request(
            "Invalid 'expires_after[anchor]': the only supported anchor is 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    try:
        ttl = int(seconds or "")
    except ValueError:
        ttl = -1
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise bad_request(
            f"Invalid 'expires_after[seconds]': expected an integer from {MIN_TTL} to {MAX_TTL}.",
            param="expires_after.seconds",
            code="invalid_value",
        )
    return ids.now() + ttl


@router.post("")
async def create_file(request: Request) -> Response:
    """Upload a file (multipart ``file`` + ``purpose``), streamed to disk."""
    emu = emulator(request)
    limit = emu.settings.limits.max_upload_bytes
    tmp = emu.store.new_upload_path()
    try:
        upload = await receive_upload(request, tmp, limit)
        purpose = upload.fields.get("purpose")
        if upload.filename is None:
            raise bad_request(
                "Missing required parameter: 'file'.", param="file", code="missing_required_parameter"
            )
        if not purpose:
            raise bad_request(
                "Missing required parameter: 'purpose'.", param="purpose", code="missing_required_parameter"
            )
        if purpose not in PURPOSES:
            raise bad_request(
                f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'",
                param="purpose",
                code="invalid_value",
            )
        if upload.too_large:
            raise APIError(
                413,
                f"File is too large: {upload.size} bytes; the maximum is {limit} bytes. Use the Uploads API "
                "or split the file.",
                param="file",
                code="file_too_large",
            )
        if purpose == "batch" and not upload.filename.lower().endswith(".jsonl"):
            raise bad_request(
                "Invalid file format for Batch API. Must be .jsonl", param="file", code="invalid_file_format"
            )
        expires_at = _expires_at(upload, purpose)
        obj = emu.store.add_file(tmp, filename=upload.filename, purpose=purpose, expires_at=expires_at)
        emu.stats.files_uploaded += 1
        emu.stats.bytes_uploaded += obj["bytes"]
        return JSONResponse(obj)
    finally:
        tmp.unlink(missing_ok=True)


@router.get("")
async def list_files(request: Request) -> Response:
    """List files (``purpose``, ``after``, ``limit`` 1..10000, ``order`` asc|desc)."""
    order = request.query_params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("Invalid 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value")
    data, has_more = emulator(request).store.list_files(
        purpose=request.query_params.get("purpose"),
        after=request.query_params.get("after"),
        limit=int_query(request, "limit", 10_000, 1, 10_000),
        order=order,
    )
    return list_page(data, has_more)


@router.get("/{file_id}")
async def retrieve_file(request: Request, file_id: str) -> Response:
    """One file's metadata."""
    return JSONResponse(emulator(request).store.get_file(file_id))


@router.delete("/{file_id}")
async def delete_file(request: Request, file_id: str) -> Response:
    """Delete a file."""
    emulator(request).store.delete_file(file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


@router.get("/{file_id}/content")
async def file_content(request: Request, file_id: str) -> Response:
    """A file's bytes, streamed from disk."""
    store = emulator(request).store
    store.get_file(file_id)
    return FileResponse(store.file_path(file_id), media_type="application/octet-stream")
