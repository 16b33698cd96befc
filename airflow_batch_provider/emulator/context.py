"""Shared per-server state and small request helpers used by the routes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from airflow_batch_provider.emulator.backends import Backend
from airflow_batch_provider.emulator.config import Settings
from airflow_batch_provider.emulator.engine import Engine
from airflow_batch_provider.emulator.errors import bad_request
from airflow_batch_provider.emulator.faults import Faults
from airflow_batch_provider.emulator.stats import Stats
from airflow_batch_provider.emulator.store import Store


@dataclass
class Emulator:
    """Everything one server holds; ``engine`` and ``backend`` exist while it runs.

    :param settings: the settings.
    :param store: files and batches.
    :param stats: counters.
    :param faults: fault rules.
    """

    settings: Settings
    store: Store
    stats: Stats
    faults: Faults
    engine: Engine | None = None
    backend: Backend | None = None

    @property
    def running_engine(self) -> Engine:
        """The engine (present once the server has started)."""
        if self.engine is None:
            raise RuntimeError("the emulator has not started")
        return self.engine


def emulator(request: Request) -> Emulator:
    """The emulator serving ``request``.

    :param request: the incoming request.
    """
    return request.app.state.emulator  # type: ignore[no-any-return]


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object body.

    :param request: the incoming request.
    :raises APIError: 400 if the body is not a JSON object.
    """
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using "
            "your HTTP library correctly. The OpenAI API expects a JSON payload.)"
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within bounds.

    :param request: the incoming request.
    :param name: parameter name.
    :param default: value when absent.
    :param low: smallest allowed.
    :param high: largest allowed.
    :raises APIError: 400 when not an integer or out of bounds.
    """
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise bad_request(
            f"Invalid '{name}': expected an integer, but got {raw!r} instead.",
            param=name,
            code="invalid_type",
        ) from None
    if value < low:
        raise bad_request(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            param=name,
            code="integer_below_min_value",
        )
    if value > high:
        raise bad_request(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, but got {value} "
            "instead.",
            param=name,
            code="integer_above_max_value",
        )
    return value


def list_page(data: list[dict[str, Any]], has_more: bool) -> JSONResponse:
    """A cursor page: ``{object: list, data, first_id, last_id, has_more}``.

    :param data: the page's objects.
    :param has_more: whether more follow.
    """
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
            "has_more": has_more,
        }
    )
