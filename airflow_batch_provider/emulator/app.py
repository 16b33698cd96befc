"""The ASGI application: routes, error handlers, middleware, and the engine's lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp

from airflow_batch_provider.emulator import api_batches, api_emulator, api_files, azure, pages
from airflow_batch_provider.emulator.backends import make_backend
from airflow_batch_provider.emulator.config import Settings
from airflow_batch_provider.emulator.context import Emulator
from airflow_batch_provider.emulator.engine import Engine
from airflow_batch_provider.emulator.errors import APIError, error_body
from airflow_batch_provider.emulator.faults import FaultMiddleware, Faults
from airflow_batch_provider.emulator.middleware import AuthMiddleware, RequestIdMiddleware
from airflow_batch_provider.emulator.stats import Stats
from airflow_batch_provider.emulator.store import Store

log = logging.getLogger(__name__)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):  # an unknown route, whatever the method, as the real service says
        return JSONResponse(error_body(f"Invalid URL ({request.method} {request.url.path})"), status_code=404)
    message = f"{exc.detail} ({request.method} {request.url.path})"
    return JSONResponse(error_body(message), status_code=exc.status_code)


async def _validation_error(request: Request, exc: Exception) -> Response:
    return JSONResponse(error_body(f"Invalid request: {exc}"), status_code=400)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    body = error_body(
        "The server had an error while processing your request. Sorry about that!", type="server_error"
    )
    return JSONResponse(body, status_code=500)


def create_fastapi(settings: Settings) -> FastAPI:
    """The FastAPI application of one emulator, without the outer request-id middleware.

    :param settings: the server settings.
    """
    stats = Stats()
    emu = Emulator(
        settings=settings,
        store=Store(settings.data_dir),
        stats=stats,
        faults=Faults(stats, settings.faults, settings.seed),
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        emu.backend = make_backend(settings)
        emu.engine = Engine(emu.store, emu.backend, settings, stats)
        emu.engine.start()
        try:
            yield
        finally:
            await emu.engine.stop()
            await emu.backend.aclose()

    app = FastAPI(
        title="OpenAI Batch API emulator",
        lifespan=lifespan,
        docs_url="/_emulator/docs",
        redoc_url=None,
        openapi_url="/_emulator/openapi.json",
    )
    app.state.emulator = emu
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
    azure_only = [Depends(azure.require_api_version)]
    for module in (api_files, api_batches):
        app.include_router(module.router, prefix="/v1")
        app.include_router(module.router, prefix=azure.PREFIX, dependencies=azure_only)
    for module in (pages, api_emulator):  # the catch-all POST /v1/... goes last
        app.include_router(module.router)
    app.add_middleware(FaultMiddleware, faults=emu.faults)
    app.add_middleware(AuthMiddleware, keys=settings.api_keys, accept_any=settings.accept_any_key)
    return app


def create_app(settings: Settings) -> ASGIApp:
    """The emulator's ASGI application (serve it with uvicorn).

    The request-id middleware wraps everything, so even unhandled errors carry ``x-request-id``.

    :param settings: the server settings.
    """
    return RequestIdMiddleware(create_fastapi(settings))
