"""Injected faults for reliability tests, changeable at run time via ``POST /_emulator/faults``.

Configuration: ``{"routes": {ROUTE: SPEC, ...}, "seed": int | null}``, where ROUTE is
one of :data:`ROUTES` names or ``"*"`` (every ``/v1`` route without a rule of its
own) and SPEC has any of:

- ``error_500``, ``error_503``, ``error_429``: probabilities (0..1) of answering that status;
- ``retry_after``: seconds announced on 429 (``retry-after`` and ``retry-after-ms``), default 1;
- ``latency``: seconds added before the request is handled;
- ``cut_off``: probability that a content download stops halfway (``files.content``);
- ``max_faults``: stop injecting on this route after this many faults (deterministic tests).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import re
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_batch_provider.emulator.errors import bad_request, error_body
from airflow_batch_provider.emulator.stats import Stats

ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = tuple(
    (method, re.compile(pattern), name)
    for method, pattern, name in (
        ("POST", r"^/v1/files/?$", "files.create"),
        ("GET", r"^/v1/files/?$", "files.list"),
        ("GET", r"^/v1/files/[^/]+/content$", "files.content"),
        ("GET", r"^/v1/files/[^/]+$", "files.retrieve"),
        ("DELETE", r"^/v1/files/[^/]+$", "files.delete"),
        ("POST", r"^/v1/batches/?$", "batches.create"),
        ("GET", r"^/v1/batches/?$", "batches.list"),
        ("GET", r"^/v1/batches/[^/]+$", "batches.retrieve"),
        ("POST", r"^/v1/batches/[^/]+/cancel$", "batches.cancel"),
        (
            "POST",
            r"^/v1/(chat/completions|completions|responses|embeddings|moderations|images/(generations|edits)|videos)$",
            "inference",
        ),
    )
)
ROUTE_NAMES = frozenset(name for _, _, name in ROUTES) | {"*"}
_RATES = ("error_500", "error_503", "error_429", "cut_off")


def route_name(method: str, path: str) -> str | None:
    """The fault route name of a request, or None outside the API.

    :param method: HTTP method.
    :param path: URL path.
    """
    if path.startswith("/openai/"):  # Azure OpenAI's form of the same routes shares their rules
        path = "/v1/" + path[len("/openai/") :]
    for route_method, pattern, name in ROUTES:
        if method == route_method and pattern.match(path):
            return name
    return "other" if path.startswith("/v1/") else None


@dataclass
class FaultSpec:
    """The faults of one route (see the module docstring)."""

    error_500: float = 0.0
    error_503: float = 0.0
    error_429: float = 0.0
    retry_after: float = 1.0
    latency: float = 0.0
    cut_off: float = 0.0
    max_faults: int | None = None
    injected: int = field(default=0)

    @classmethod
    def parse(cls, route: str, data: Any) -> FaultSpec:
        """Validate one route's spec.

        :param route: the route name (for messages).
        :param data: the JSON object.
        :raises APIError: 400 for unknown keys or out-of-range values.
        """
        if not isinstance(data, dict):
            raise bad_request(f"faults for {route!r} must be an object", param=f"routes.{route}")
        known = {"error_500", "error_503", "error_429", "retry_after", "latency", "cut_off", "max_faults"}
        unknown = set(data) - known
        if unknown:
            raise bad_request(f"unknown fault keys {sorted(unknown)}; use {sorted(known)}", param=route)
        spec = cls(**data)
        for rate in _RATES:
            value = getattr(spec, rate)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise bad_request(f"{route}.{rate} must be a probability from 0 to 1", param=rate)
        if spec.error_500 + spec.error_503 + spec.error_429 > 1:
            raise bad_request(f"{route}: error_500 + error_503 + error_429 must not exceed 1", param=route)
        if spec.retry_after < 0 or spec.latency < 0:
            raise bad_request(f"{route}: retry_after and latency must be >= 0", param=route)
        return spec

    def public(self) -> dict[str, Any]:
        """The spec as JSON, with how many faults it injected."""
        return dict(self.__dict__)


@dataclass
class Decision:
    """What to do to one request."""

    latency: float = 0.0
    status: int | None = None
    retry_after: float = 0.0
    cut_off: bool = False


class Faults:
    """The current fault rules and their dice.

    :param stats: counters (``faults_injected``).
    :param config: initial configuration.
    :param seed: seed of the dice.
    """

    def __init__(self, stats: Stats, config: dict[str, Any] | None = None, seed: int | None = None) -> None:
        self.stats = stats
        self.rules: dict[str, FaultSpec] = {}
        self._random = random.Random(seed)
        if config:
            self.configure(config)

    def configure(self, data: Any) -> dict[str, Any]:
        """Replace the rules (``{}`` clears them).

        :param data: ``{"routes": {...}, "seed": n}``, or a bare spec meaning route ``"*"``.
        :raises APIError: 400 for an invalid configuration.
        """
        if not isinstance(data, dict):
            raise bad_request("fault configuration must be a JSON object")
        data = dict(data)
        seed = data.pop("seed", None)
        routes = data.pop("routes", None)
        if routes is None:
            routes = {"*": data} if data else {}
        elif data:
            raise bad_request(f"unexpected keys beside 'routes': {sorted(data)}")
        unknown = set(routes) - ROUTE_NAMES
        if unknown:
            raise bad_request(f"unknown routes {sorted(unknown)}; use {sorted(ROUTE_NAMES)}", param="routes")
        self.rules = {route: FaultSpec.parse(route, spec) for route, spec in routes.items()}
        if seed is not None:
            self._random.seed(seed)
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The rules as JSON."""
        return {"routes": {route: spec.public() for route, spec in self.rules.items()}}

    def decide(self, route: str) -> Decision:
        """Roll the dice for one request.

        :param route: the request's route name.
        """
        spec = self.rules.get(route) or self.rules.get("*")
        if spec is None:
            return Decision()
        decision = Decision(latency=spec.latency)
        if spec.max_faults is not None and spec.injected >= spec.max_faults:
            return decision
        roll = self._random.random()
        for status, rate in ((500, spec.error_500), (503, spec.error_503), (429, spec.error_429)):
            if roll < rate:
                decision.status, decision.retry_after = status, spec.retry_after
                break
            roll -= rate
        else:
            if route == "files.content" and spec.cut_off and self._random.random() < spec.cut_off:
                decision.cut_off = True
        if decision.status or decision.cut_off:
            spec.injected += 1
            self.stats.faults_injected += 1
        return decision


_MESSAGES = {
    500: ("The server had an error while processing your request. Sorry about that!", "server_error", None),
    503: ("The server is overloaded or not ready yet.", "server_error", None),
    429: ("Rate limit reached for requests. Please try again in {s}s.", "requests", "rate_limit_exceeded"),
}


class FaultMiddleware:
    """ASGI middleware applying :class:`Faults` to ``/v1`` requests.

    :param app: the wrapped application.
    :param faults: the rules.
    """

    def __init__(self, app: ASGIApp, faults: Faults) -> None:
        self.app = app
        self.faults = faults

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = route_name(scope["method"], scope["path"]) if scope["type"] == "http" else None
        if route is None or not self.faults.rules:
            await self.app(scope, receive, send)
            return
        decision = self.faults.decide(route)
        if decision.latency:
            await asyncio.sleep(decision.latency)
        if decision.status:
            await _drain(receive)
            await _send_error(send, decision.status, decision.retry_after)
        elif decision.cut_off:
            await self.app(scope, receive, _cutting(send))
        else:
            await self.app(scope, receive, send)


async def _drain(receive: Receive) -> None:
    """Read the request body, so a large upload gets its error answer rather than a reset."""
    while True:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return


async def _send_error(send: Send, status: int, retry_after: float) -> None:
    template, kind, code = _MESSAGES[status]
    body = json.dumps(error_body(template.format(s=retry_after), type=kind, code=code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 429:
        headers.append((b"retry-after", str(max(0, math.ceil(retry_after))).encode()))
        headers.append((b"retry-after-ms", str(int(retry_after * 1000)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _cutting(send: Send) -> Send:
    """Wrap ``send`` so the response body stops halfway and the connection drops."""
    state = {"length": 0, "sent": 0, "cut": False}

    async def wrapped(message: Message) -> None:
        if state["cut"]:
            return
        if message["type"] == "http.response.start":
            headers = dict(message.get("headers", []))
            state["length"] = int(headers.get(b"content-length", b"0") or 0)
            await send(message)
            return
        body = message.get("body", b"")
        half = max(1, state["length"] // 2) if state["length"] else max(1, len(body) // 2)
        if state["sent"] + len(body) >= half:
            state["cut"] = True
            # Half the body, then end the handler without completing the response:
            # the server closes the connection and the client sees a truncated body.
            await send(
                {"type": "http.response.body", "body": body[: half - state["sent"]], "more_body": True}
            )
            return
        state["sent"] += len(body)
        await send(message)

    return wrapped
