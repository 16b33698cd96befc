"""ASGI middleware: ``x-request-id`` on every response, and auth for ``/v1`` (Bearer),
Azure OpenAI's ``/openai`` (``api-key`` header, or Bearer as an Entra ID token is sent) and
the emulator's control routes (``/_emulator/*`` other than GET: Bearer, like ``/v1``)."""

from __future__ import annotations

import hmac
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from airflow_batch_provider.emulator import ids
from airflow_batch_provider.emulator.errors import error_body

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header "
    "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_BAD_KEY = (
    "Incorrect API key provided. The emulator accepts the keys given with --api-key (default 'sk-emulator')."
)
# Azure's wording, plus where the emulator's keys come from.
_AZURE_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid "
    "key in the api-key header; the emulator accepts the keys given with --api-key (default 'sk-emulator')."
)


class RequestIdMiddleware:
    """Add ``x-request-id`` and ``openai-processing-ms`` to every HTTP response, errors included.

    :param app: the wrapped application.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ids.request_id().encode()
        started = time.monotonic()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = str(int((time.monotonic() - started) * 1000)).encode()
                headers = list(message.get("headers", []))
                headers += [(b"x-request-id", request_id), (b"openai-processing-ms", elapsed)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


#: Methods of ``/_emulator/*`` that read only (pages, stats, health): no key needed.
_READ_METHODS = ("GET", "HEAD")


class AuthMiddleware:
    """Answer 401 to ``/v1`` requests without an accepted Bearer key, to ``/openai``
    requests with neither an accepted ``api-key`` header nor an accepted Bearer key, and
    to ``/_emulator/*`` requests that change state (faults...) without an accepted Bearer key.

    :param app: the wrapped application.
    :param keys: accepted keys.
    :param accept_any: accept any non-empty key.
    """

    def __init__(self, app: ASGIApp, keys: tuple[str, ...], accept_any: bool = False) -> None:
        self.app = app
        self.keys = tuple(k.encode() for k in keys)
        self.accept_any = accept_any

    def _accepted(self, key: bytes) -> bool:
        if self.accept_any:
            return bool(key)
        return any(hmac.compare_digest(key, accepted) for accepted in self.keys)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"] if scope["type"] == "http" else ""
        azure = path.startswith("/openai/")
        control = path.startswith("/_emulator/") and scope.get("method") not in _READ_METHODS
        if not (azure or control or path.startswith("/v1")):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        scheme, _, key = headers.get(b"authorization", b"").partition(b" ")
        bearer = key.strip() if scheme.lower() == b"bearer" else b""
        api_key = headers.get(b"api-key", b"").strip() if azure else b""
        if (bearer and self._accepted(bearer)) or (api_key and self._accepted(api_key)):
            await self.app(scope, receive, send)
            return
        code: str | None = "401"
        message = _AZURE_DENIED
        if not azure:
            message, code = (_BAD_KEY, "invalid_api_key") if key.strip() else (_NO_KEY, None)
        body = json.dumps(error_body(message, code=code)).encode()
        while (await receive()).get("more_body"):  # drain an upload so the client reads the 401
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
