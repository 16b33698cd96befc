"""Emulator-only routes (stats, faults, health) and the other OpenAI routes it serves:
``GET /v1/models`` (so connection tests pass) and the synchronous inference endpoints.

Reading ``/_emulator/*`` needs no key; changing state (``POST /_emulator/faults``) needs
the API key (``AuthMiddleware``) and a JSON body, so a web page cannot post a form to it."""

from __future__ import annotations

from collections import Counter
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from airflow_batch_provider.emulator.context import emulator, json_body
from airflow_batch_provider.emulator.errors import APIError, bad_request
from airflow_batch_provider.emulator.validation import BATCH_ENDPOINTS

router = APIRouter()


@router.get("/_emulator/health")
async def health() -> Response:
    """Liveness probe."""
    return JSONResponse({"status": "ok"})


@router.get("/_emulator/stats")
async def stats(request: Request) -> Response:
    """Counters since start, plus the stored batches by status."""
    emu = emulator(request)
    data = emu.stats.to_dict()
    statuses = Counter(r.object["status"] for r in emu.store.batches())
    data["batches_by_status"] = dict(statuses)
    data["files_stored"] = len(emu.store.list_files(purpose=None, after=None, limit=10**9, order="asc")[0])
    data["profile"] = emu.settings.profile.__dict__
    data["backend"] = emu.settings.backend
    return JSONResponse(data)


@router.get("/_emulator/faults")
async def get_faults(request: Request) -> Response:
    """The current fault rules and how many faults each injected."""
    return JSONResponse(emulator(request).faults.snapshot())


@router.post("/_emulator/faults")
async def set_faults(request: Request) -> Response:
    """Replace the fault rules (``{}`` clears them)."""
    emu = emulator(request)
    return JSONResponse(emu.faults.configure(await control_body(request)))


async def control_body(request: Request) -> dict[str, Any]:
    """The JSON object body of a control route; 415 for any other content type (form posts).

    :param request: the incoming request.
    """
    content_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type != "application/json":
        raise APIError(
            415,
            "Control routes take a JSON body (Content-Type: application/json), "
            f"not {content_type or 'none'}.",
            code="unsupported_media_type",
        )
    return await json_body(request)


MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1-mini",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "text-embedding-ada-002",
    "omni-moderation-latest",
)


def _model(name: str) -> dict[str, object]:
    return {"id": name, "object": "model", "created": 1_700_000_000, "owned_by": "emulator"}


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    """The models the fake backend knows (any name works in requests)."""
    upstream = emulator(request).settings.upstream
    names = [upstream.model] if upstream and upstream.model else list(MODELS)
    return JSONResponse({"object": "list", "data": [_model(n) for n in names]})


@router.get("/v1/models/{model:path}")
async def retrieve_model(model: str) -> Response:
    """Any model name exists: the fake backend answers for every model."""
    return JSONResponse(_model(model))


@router.post("/v1/{endpoint:path}")
async def inference(request: Request, endpoint: str) -> Response:
    """Synchronous ``/v1/chat/completions`` and friends, answered by the configured backend.

    Handy as an upstream for another emulator and to compare batch and direct results.
    """
    url = f"/v1/{endpoint}"
    if url not in BATCH_ENDPOINTS:
        raise APIError(404, f"Invalid URL (POST {url})", code="unknown_url")
    body = await json_body(request)
    if body.get("stream"):
        raise bad_request("The emulator does not stream responses; omit 'stream'.", param="stream")
    emu = emulator(request)
    assert emu.backend is not None
    (outcome,) = await emu.backend.execute([(url, body)])
    return JSONResponse(outcome.body, status_code=outcome.status_code)
