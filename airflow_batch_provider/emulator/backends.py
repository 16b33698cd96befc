"""Backends execute requests: ``fake`` (the built-in deterministic model) or ``upstream``.

``upstream`` forwards each request to an OpenAI-compatible server (vLLM, Ollama,
llama.cpp, ...) with bounded concurrency, which turns the emulator into a batch
service for local models.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from airflow_batch_provider.emulator import fake_model
from airflow_batch_provider.emulator.config import Settings, UpstreamSettings
from airflow_batch_provider.emulator.errors import error_body
from airflow_batch_provider.emulator.fake_model import Outcome

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

Request = tuple[str, Any]  # (endpoint url, body)


class Backend(Protocol):
    """Executes requests; results come back in request order."""

    async def execute(self, requests: list[Request]) -> list[Outcome]:
        """Execute requests.

        :param requests: ``(url, body)`` pairs.
        """

    async def aclose(self) -> None:
        """Release resources."""


class FakeBackend:
    """The deterministic built-in model; runs in a worker thread so the server stays responsive."""

    async def execute(self, requests: list[Request]) -> list[Outcome]:
        """Execute requests with :mod:`fake_model`.

        :param requests: ``(url, body)`` pairs.
        """
        if len(requests) == 1:
            return [fake_model.execute(*requests[0])]
        return await asyncio.to_thread(lambda: [fake_model.execute(u, b) for u, b in requests])

    async def aclose(self) -> None:
        """Nothing to release."""


def _usage_tokens(body: Any) -> tuple[int, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens", usage.get("input_tokens", 0)) or 0
    completion = usage.get("completion_tokens", usage.get("output_tokens", 0)) or 0
    return int(prompt), int(completion)


class UpstreamBackend:
    """Forward requests to an OpenAI-compatible base URL.

    Transient failures (connection errors, 429, 5xx) are retried a few times with
    backoff, as the real service retries internally; what still fails is reported
    in the error file like any failed request.

    :param settings: the upstream settings.
    :param retries: retries per request.
    :param backoff: first retry delay, seconds (doubles each time).
    """

    def __init__(self, settings: UpstreamSettings, *, retries: int = 2, backoff: float = 0.5) -> None:
        import httpx  # only here: importing httpx costs half a second of server start-up

        self._http_error = httpx.HTTPError
        self.settings = settings
        self.retries = retries
        self.backoff = backoff
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=settings.base_url.rstrip("/") + "/",
            headers=headers,
            timeout=settings.timeout,
            limits=httpx.Limits(max_connections=settings.concurrency),
        )
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def execute(self, requests: list[Request]) -> list[Outcome]:
        """Forward requests, at most ``concurrency`` at a time.

        :param requests: ``(url, body)`` pairs.
        """
        return list(await asyncio.gather(*(self._one(url, body) for url, body in requests)))

    async def _one(self, url: str, body: Any) -> Outcome:
        if self.settings.model and isinstance(body, dict):
            body = {**body, "model": self.settings.model}
        path = url.removeprefix("/v1/").lstrip("/")
        async with self._slots:
            for attempt in range(self.retries + 1):
                try:
                    response = await self._client.post(path, json=body)
                except self._http_error as exc:
                    outcome = Outcome(
                        502,
                        error_body(f"Upstream request failed: {type(exc).__name__}", type="server_error"),
                    )
                else:
                    outcome = self._outcome(response)
                if outcome.status_code != 429 and outcome.status_code < 500:
                    return outcome
                if attempt < self.retries:
                    await asyncio.sleep(self.backoff * 2**attempt)
            log.warning(
                "upstream %s failed after %d attempts: %s", path, self.retries + 1, outcome.status_code
            )
            return outcome

    @staticmethod
    def _outcome(response: httpx.Response) -> Outcome:
        try:
            body = response.json()
        except ValueError:
            body = error_body(
                f"Upstream answered {response.status_code} with a body that is not JSON.",
                type="server_error",
            )
        if not isinstance(body, dict):
            body = {"data": body}
        if response.is_success:
            return Outcome(response.status_code, body, *_usage_tokens(body))
        return Outcome(response.status_code, body)

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self._client.aclose()


def make_backend(settings: Settings) -> Backend:
    """The backend the settings ask for.

    :param settings: emulator settings.
    :raises ValueError: for ``upstream`` without an upstream URL, or an unknown backend.
    """
    if settings.backend == "fake":
        return FakeBackend()
    if settings.backend == "upstream":
        if settings.upstream is None:
            raise ValueError("the upstream backend needs --upstream-url")
        return UpstreamBackend(settings.upstream)
    raise ValueError(f"unknown backend {settings.backend!r}; choose fake or upstream")
