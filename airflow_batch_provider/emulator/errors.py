"""OpenAI-shaped API errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from typing import Any


class APIError(Exception):
    """An error answered to the client with an OpenAI-shaped JSON body.

    :param status: HTTP status code.
    :param message: human-readable message.
    :param type: OpenAI error type, e.g. ``invalid_request_error``.
    :param param: the request parameter at fault, if any.
    :param code: machine-readable code, if any.
    :param headers: extra response headers (e.g. ``retry-after``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """Return the JSON body the real service sends for this error."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Build an OpenAI error body.

    :param message: human-readable message.
    :param type: OpenAI error type.
    :param param: parameter at fault.
    :param code: machine-readable code.
    """
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 ``invalid_request_error``.

    :param message: what is wrong and what to do.
    :param param: parameter at fault.
    :param code: machine-readable code.
    """
    return APIError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None) -> APIError:
    """A 404 ``invalid_request_error``.

    :param message: which object was not found.
    :param param: parameter at fault.
    """
    return APIError(404, message, param=param)
