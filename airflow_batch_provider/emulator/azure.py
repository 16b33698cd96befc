"""Azure OpenAI's data-plane form of the Files and Batches routes, under ``/openai``.

What an ``AzureOpenAI`` client sees differ from ``/v1``: every request needs an
``api-version`` query parameter (400 without one), the key comes in the ``api-key``
header (checked by :class:`~airflow_batch_provider.emulator.middleware.AuthMiddleware`),
and a batch endpoint may be spelled without ``/v1`` (``/chat/completions``), as Azure's
docs and batch objects spell it. The routes themselves are the ``/v1`` ones, mounted twice.
"""

from __future__ import annotations

from starlette.requests import Request

from airflow_batch_provider.emulator.errors import bad_request
from airflow_batch_provider.emulator.validation import BATCH_ENDPOINTS, UNVERSIONED_ENDPOINTS

PREFIX = "/openai"


def is_azure(request: Request) -> bool:
    """Whether ``request`` came in on an Azure route.

    :param request: the incoming request.
    """
    return request.url.path.startswith(PREFIX + "/")


def batch_endpoints(request: Request) -> tuple[str, ...]:
    """The ``endpoint`` values (and line ``url``\\ s) a batch created by ``request`` may use.

    :param request: the incoming request.
    """
    return (*BATCH_ENDPOINTS, *UNVERSIONED_ENDPOINTS) if is_azure(request) else BATCH_ENDPOINTS


async def require_api_version(request: Request) -> None:
    """Route dependency of the Azure routes: answer 400 without ``api-version``, as Azure does.

    :param request: the incoming request.
    :raises APIError: 400 ``MissingApiVersionParameter``.
    """
    if not request.query_params.get("api-version"):
        raise bad_request(
            "The api-version query parameter (?api-version=) is required for all requests. "
            "Pass api_version to the AzureOpenAI client (e.g. 2024-10-21).",
            param="api-version",
            code="MissingApiVersionParameter",
        )
