"""Turn an Airflow ``openai`` connection into SDK clients, and share async clients per event loop.

Kept apart from the hook so that the rules (which extras mean what, which client
class, what may be shown) read in one place. Nothing here logs or returns a secret:
``ClientSettings`` keeps the constructor kwargs out of its repr, and the registry
keys clients by a salted digest of the connection, never by its fields.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import openai

from airflow_batch_provider.exceptions import BatchAuthError, BatchProviderError
from airflow_batch_provider.hooks.lean_http import RawGetPool, raw_pool_for
from airflow_batch_provider.storage import public_uri

log = logging.getLogger(__name__)

#: Retries the SDK makes on 408/409/429/5xx/connection errors (its own default is 2:
#: too few for a job that waits hours and costs money to resubmit).
DEFAULT_MAX_RETRIES = 5
OPENAI_API_HOST = "api.openai.com"
_AZURE_KEYS = ("azure_endpoint", "api_version", "azure_deployment")
# Per-process salt: registry keys and fingerprints cannot be turned back into a key.
_SALT = os.urandom(16)


@dataclass(frozen=True)
class ClientSettings:
    """Everything needed to build a client for one connection.

    :param conn_id: the Airflow connection id.
    :param azure: build ``AzureOpenAI`` / ``AsyncAzureOpenAI``.
    :param base_url: where requests go (the Azure endpoint for Azure), for messages and links.
    :param kwargs: the client constructor's kwargs, secrets included: never shown.
    :param fingerprint: salted digest of the connection's fields; changes when any does.
    :param max_retries: retries of transient errors.
    :param console_url: the ``console_url`` extra (a template with ``{batch_id}``), if set.
    :param unused_secrets: secret fields of the connection the client does not use (a password
        left in place while an Entra ID token is used): still scrubbed from text.
    """

    conn_id: str
    azure: bool
    base_url: str | None
    kwargs: Mapping[str, Any] = field(repr=False)
    fingerprint: str = ""
    max_retries: int = DEFAULT_MAX_RETRIES
    console_url: str | None = None
    unused_secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secret strings to scrub from any text shown to a user (an Azure key of 32 hex
        characters or an Entra ID token has no shape to find it by: only this list catches it)."""
        found: list[str] = []
        values = [self.kwargs.get(n) for n in ("api_key", "azure_ad_token", "admin_api_key")]
        for value in [*values, *self.unused_secrets]:
            if isinstance(value, str) and len(value) >= 4 and value not in found:
                found.append(value)
        return tuple(found)

    def build_sync(self) -> openai.OpenAI:
        cls = openai.AzureOpenAI if self.azure else openai.OpenAI
        return self._construct(cls)

    def build_async(self) -> openai.AsyncOpenAI:
        cls = openai.AsyncAzureOpenAI if self.azure else openai.AsyncOpenAI
        return self._construct(cls)

    def _construct(self, cls: Any) -> Any:
        try:
            return cls(**self.kwargs)
        except openai.OpenAIError as err:
            # The SDK's message here is about missing credentials; say which field to fill.
            raise BatchAuthError(
                f"Connection {self.conn_id!r} cannot build an {cls.__name__} client: "
                f"{redact(str(err), self.secrets)} Put the API key in the connection's password "
                "(API Key) field."
            ) from None
        except (TypeError, ValueError) as err:
            raise BatchProviderError(
                f"Connection {self.conn_id!r} has client settings {cls.__name__} rejects: "
                f"{redact(str(err), self.secrets)} Check the extras openai_client_kwargs, "
                "azure_endpoint, api_version and azure_deployment."
            ) from None


def _host_url(conn: Any) -> str | None:
    host = (conn.host or "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    # A bare host name (URI-style connections): assume HTTPS.
    port = f":{conn.port}" if conn.port else ""
    return f"https://{host}{port}"


def _safe_url(url: str | None) -> str | None:
    """``url`` without user info, query or fragment (they may carry secrets)."""
    return public_uri(url) or None


def _fingerprint(conn: Any, extras: Mapping[str, Any]) -> str:
    fields = [conn.conn_type, conn.host, conn.login, conn.password, conn.schema, conn.port, extras]
    payload = json.dumps(fields, sort_keys=True, default=str).encode()
    return hashlib.blake2b(payload, key=_SALT, digest_size=8).hexdigest()


def _int_extra(extras: Mapping[str, Any], name: str, default: int, conn_id: str) -> int:
    value = extras.get(name, default)
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise BatchProviderError(
            f"Connection {conn_id!r}: extra {name!r} must be a whole number, got {value!r}."
        ) from None
    if number < 0:
        raise BatchProviderError(f"Connection {conn_id!r}: extra {name!r} must be >= 0, got {number}.")
    return number


def _workload_identity(conn_id: str, extras: Mapping[str, Any]) -> Any:
    # Same extras as the official provider; reuse its reader rather than copy it.
    try:
        from airflow.providers.openai.hooks.openai import OpenAIHook
    except ImportError:
        raise BatchProviderError(
            f"Connection {conn_id!r} uses auth_type 'workload_identity', which needs "
            "apache-airflow-providers-openai installed (pip install apache-airflow-providers-openai)."
        ) from None
    try:
        return OpenAIHook(conn_id=conn_id)._build_workload_identity(dict(extras))
    except ValueError as err:
        raise BatchProviderError(str(err)) from None


def settings_from_connection(conn: Any, extras: Mapping[str, Any]) -> ClientSettings:
    """Read an Airflow ``openai`` connection as the official provider does, plus our extras.

    - password: API key; host: base URL (any OpenAI-compatible server).
    - ``openai_client_kwargs``: passed to the client (``base_url``/``api_key`` in it win).
    - ``auth_type``: ``api_key`` (default) or ``workload_identity`` (official provider's keys).
    - ``organization``, ``project``, ``max_retries``, ``timeout`` (seconds), ``console_url``.
    - Azure OpenAI: ``azure_endpoint`` (defaults to host), ``api_version``, ``azure_deployment``,
      optionally ``azure_ad_token`` instead of the key.

    :param conn: an Airflow ``Connection``.
    :param extras: its deserialized extra.
    """
    conn_id = conn.conn_id
    raw_kwargs = extras.get("openai_client_kwargs") or {}
    if not isinstance(raw_kwargs, Mapping):
        raise BatchProviderError(
            f"Connection {conn_id!r}: extra 'openai_client_kwargs' must be a JSON object."
        )
    client_kwargs = dict(raw_kwargs)
    explicit_base_url = client_kwargs.pop("base_url", None)
    base_url = explicit_base_url or _host_url(conn)
    api_key = client_kwargs.pop("api_key", None) or conn.password or None
    max_retries = _int_extra(
        extras, "max_retries", client_kwargs.pop("max_retries", DEFAULT_MAX_RETRIES), conn_id
    )
    kwargs: dict[str, Any] = {"max_retries": max_retries}
    for name in ("organization", "project"):
        value = extras.get(name) or client_kwargs.pop(name, None)
        if value:
            kwargs[name] = value
    if extras.get("timeout") not in (None, ""):
        try:
            kwargs["timeout"] = float(extras["timeout"])
        except (TypeError, ValueError):
            raise BatchProviderError(
                f"Connection {conn_id!r}: extra 'timeout' must be a number of seconds, "
                f"got {extras['timeout']!r}."
            ) from None

    azure = extras.get("api_type") == "azure" or any(
        extras.get(k) or client_kwargs.get(k) for k in _AZURE_KEYS
    )
    auth_type = extras.get("auth_type", "api_key")
    if auth_type == "workload_identity":
        kwargs["workload_identity"] = _workload_identity(conn_id, extras)
    elif auth_type != "api_key":
        raise BatchProviderError(
            f"Connection {conn_id!r}: unsupported auth_type {auth_type!r}; "
            "use 'api_key' (default) or 'workload_identity'."
        )
    elif azure and extras.get("azure_ad_token"):
        kwargs["azure_ad_token"] = extras["azure_ad_token"]
    else:
        kwargs["api_key"] = api_key

    if azure:
        api_version = extras.get("api_version") or client_kwargs.pop("api_version", None)
        api_version = api_version or os.environ.get("OPENAI_API_VERSION")
        if not api_version:
            raise BatchProviderError(
                f"Connection {conn_id!r} is an Azure OpenAI connection without an API version: "
                "set the extra 'api_version' (e.g. \"2025-03-01-preview\")."
            )
        kwargs["api_version"] = api_version
        deployment = extras.get("azure_deployment") or client_kwargs.pop("azure_deployment", None)
        endpoint = extras.get("azure_endpoint") or client_kwargs.pop("azure_endpoint", None)
        if endpoint or not explicit_base_url:
            endpoint = endpoint or base_url
            if not endpoint:
                raise BatchProviderError(
                    f"Connection {conn_id!r} is an Azure OpenAI connection without an endpoint: "
                    "set the host or the extra 'azure_endpoint' (https://<resource>.openai.azure.com)."
                )
            kwargs["azure_endpoint"] = endpoint
            if deployment:
                kwargs["azure_deployment"] = deployment
            shown = endpoint
        else:
            # A full Azure base URL (``.../openai/deployments/<name>``) given as is.
            kwargs["base_url"] = explicit_base_url
            shown = explicit_base_url
    else:
        kwargs["base_url"] = base_url
        shown = base_url or os.environ.get("OPENAI_BASE_URL") or f"https://{OPENAI_API_HOST}/v1"
    kwargs.update(client_kwargs)

    console_url = extras.get("console_url")
    return ClientSettings(
        conn_id=conn_id,
        azure=bool(azure),
        base_url=_safe_url(shown),
        kwargs=kwargs,
        fingerprint=_fingerprint(conn, extras),
        max_retries=max_retries,
        console_url=console_url.strip() if isinstance(console_url, str) and console_url.strip() else None,
        unused_secrets=tuple(
            v for v in (conn.password, extras.get("azure_ad_token"), api_key) if isinstance(v, str) and v
        ),
    )


_TOKEN_RE = re.compile(r"\b(sk|sess|rk)-[A-Za-z0-9_\-*.]{4,}")
# A JWT (an Entra ID access token, say): base64url header "{"..." = "eyJ", then two more parts.
_JWT_RE = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*")
_BEARER_RE = re.compile(r"(?i)(bearer\s+|api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with known secrets and anything shaped like an API key replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    text = _TOKEN_RE.sub(lambda m: f"{m.group(1)}-***", text)
    text = _JWT_RE.sub("***", text)
    return _BEARER_RE.sub(lambda m: f"{m.group(1)}***", text)


# --- async clients: one per (connection settings, event loop), shared by every trigger ---


class _LoopClients:
    """The async clients of one event loop. Owned by the loop through its keeper task."""

    __slots__ = ("__weakref__", "clients", "keeper", "loop_ref")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop_ref = weakref.ref(loop)
        self.clients: dict[tuple[str, str], openai.AsyncOpenAI] = {}
        self.keeper: asyncio.Task[None] | None = None

    async def close_all(self) -> int:
        clients, self.clients = list(self.clients.values()), {}
        for client in clients:
            lean = _LEAN.get(client)
            if lean is not None:
                lean.close()
            try:
                await client.close()
            except Exception:  # one bad client must not keep the others open
                log.warning("Closing an AsyncOpenAI client failed", exc_info=True)
        return len(clients)


async def _keep(holder: _LoopClients) -> None:
    # Sleeping keeps this task (and so ``holder``) referenced by the loop's timer queue
    # only: once the loop is gone, so are its clients. ``asyncio.run`` and
    # ``asyncio.Runner`` cancel leftover tasks before closing the loop, which lands here
    # while the loop can still await the clients' close.
    try:
        while True:  # noqa: ASYNC110 - an Event would not be owned by the loop
            await asyncio.sleep(3600)
    finally:
        await holder.close_all()


# id(loop) -> holder; weak values, so a loop that is gone leaves nothing behind.
_LOOPS: weakref.WeakValueDictionary[int, _LoopClients] = weakref.WeakValueDictionary()
_LOOPS_LOCK = threading.Lock()


def _holder_for(loop: asyncio.AbstractEventLoop) -> _LoopClients:
    with _LOOPS_LOCK:
        holder = _LOOPS.get(id(loop))
        if holder is not None and holder.loop_ref() is loop and holder.keeper and not holder.keeper.done():
            return holder
        holder = _LoopClients(loop)
        holder.keeper = loop.create_task(_keep(holder), name="airflow-batch-provider: async client keeper")
        _LOOPS[id(loop)] = holder
        return holder


def shared_async_client(settings: ClientSettings) -> openai.AsyncOpenAI:
    """Return the running loop's client for ``settings``, building it on first use.

    Must be called from a coroutine (it needs the running loop).
    """
    loop = asyncio.get_running_loop()
    holder = _holder_for(loop)
    key = (settings.conn_id, settings.fingerprint)
    client = holder.clients.get(key)
    if client is None:
        client = settings.build_async()
        holder.clients[key] = client
        log.debug(
            "Built a shared AsyncOpenAI client for connection %s on loop %#x", settings.conn_id, id(loop)
        )
    return client


async def close_async_clients() -> int:
    """Close every shared async client of the running event loop; return how many.

    Optional: they are closed anyway when the loop shuts down through ``asyncio.run``.
    The next ``get_async_conn()`` on this loop builds fresh ones.
    """
    loop = asyncio.get_running_loop()
    with _LOOPS_LOCK:
        holder = _LOOPS.get(id(loop))
    if holder is None or holder.loop_ref() is not loop:
        return 0
    return await holder.close_all()


def async_client_count() -> int:
    """How many shared async clients the running loop holds (for tests and diagnostics)."""
    loop = asyncio.get_running_loop()
    with _LOOPS_LOCK:
        holder = _LOOPS.get(id(loop))
    return len(holder.clients) if holder is not None and holder.loop_ref() is loop else 0


# --- the lean GET: the triggerer's hot request, without the SDK's model layer ---


class LeanGetUnavailable(Exception):
    """The lean path cannot answer this request: ask the SDK (``response`` is the refusal, if any)."""

    def __init__(self, response: Any = None, request: Any = None, error: BaseException | None = None) -> None:
        super().__init__("lean GET unavailable")
        self.response = response
        self.request = request
        self.error = error


class LeanGet:
    """Send ``GET`` requests through an SDK client's own HTTP client, with the request the SDK
    builds (base URL, Azure endpoint and ``api-version``, auth and SDK headers, timeout), and
    return the parsed JSON: no pydantic model, no per-request options copy.

    Only for static credentials (an API key or a fixed Azure AD token): anything that
    refreshes per request (key or token providers, workload identity) keeps the SDK path.
    Success only: every other answer raises :class:`LeanGetUnavailable`, so that the
    caller lets the SDK do what it does with it (retry, raise its error).

    :param client: the SDK client; build with :func:`lean_getter`.
    """

    def __init__(self, client: Any, template: Any) -> None:
        self.client = client
        self._http = client._client
        self._request_cls = type(template)  # httpx's or httpx2's Request, as the SDK uses
        url = template.url
        prefix = str(url.copy_with(query=None))
        params = list(url.params.multi_items())
        headers = {k: v for k, v in template.headers.items() if k.lower() != "host"}
        extensions = dict(template.extensions)
        self._prefix = prefix  # the URL up to ``/batches``, Azure endpoint included
        self._params = params  # e.g. Azure's api-version
        self._headers = headers
        self._extensions = extensions
        # Where the SDK's transport would send it plainly: prebuilt bytes over our own pool.
        self._raw = raw_pool_for(self._http, template)
        self._raw_path = url.raw_path.split(b"?", 1)[0].decode("ascii")

    async def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """``GET <base>/batches<path>``; the JSON body of a 200.

        :raises LeanGetUnavailable: any other status, a transport error, or a body that is not JSON.
        """
        query = self._params + [(k, str(v)) for k, v in (params or {}).items()]
        if self._raw is not None:
            return await self._get_raw(self._raw, path, query)
        request = self._request_cls(
            "GET",
            self._prefix + path,
            params=query or None,
            headers=self._headers,
            extensions=self._extensions,
        )
        try:
            response = await self._http.send(request)
        except Exception as err:  # the SDK maps these to APIConnectionError / APITimeoutError
            raise LeanGetUnavailable(request=request, error=err) from None
        if response.status_code != 200:
            raise LeanGetUnavailable(response)
        try:
            return json.loads(response.content)
        except ValueError:
            raise LeanGetUnavailable() from None

    async def _get_raw(self, raw: RawGetPool, path: str, query: list[tuple[str, str]]) -> Any:
        target = quote(self._raw_path + path, safe="/%")
        if query:
            target += "?" + urlencode(query, quote_via=quote)
        try:
            answer = await raw.get(target)
        except Exception as err:  # refused, reset, timed out, not HTTP: the SDK tries as it does
            raise LeanGetUnavailable(request=self._request_for(target), error=err) from None
        if 300 <= answer.status < 400:
            raise LeanGetUnavailable()  # a redirect: the SDK's client follows it as configured
        if answer.status != 200:
            # The SDK decides what this answer means (retry, its error): give it an httpx response.
            request = self._request_for(target)
            response_cls = sys.modules[self._request_cls.__module__.split(".")[0]].Response
            raise LeanGetUnavailable(
                response_cls(answer.status, headers=answer.headers, content=answer.body, request=request)
            )
        try:
            return json.loads(answer.body)
        except ValueError:
            raise LeanGetUnavailable() from None

    def _request_for(self, target: str) -> Any:
        origin = self._prefix[: len(self._prefix) - len(self._raw_path)] if self._raw_path else self._prefix
        return self._request_cls("GET", origin + target, headers=self._headers, extensions=self._extensions)

    def close(self) -> None:
        """Close the connections of the raw path (the SDK client closes its own)."""
        if self._raw is not None:
            self._raw.close()


_LEAN: weakref.WeakKeyDictionary[Any, LeanGet | None] = weakref.WeakKeyDictionary()
_DYNAMIC_AUTH = (
    "_provider_runtime",
    "_workload_identity_auth",
    "_api_key_provider",
    "_azure_ad_token_provider",
)


async def lean_getter(client: Any) -> LeanGet | None:
    """The :class:`LeanGet` of ``client`` (built once), or None where only the SDK can send."""
    if client in _LEAN:
        return _LEAN[client]
    lean = None
    try:
        from openai._models import FinalRequestOptions

        static = all(getattr(client, name, None) is None for name in _DYNAMIC_AUTH)
        if static and client.custom_auth is None and callable(getattr(client._client, "send", None)):
            options = FinalRequestOptions.construct(method="get", url="/batches")
            options = await client._prepare_options(options)
            request = client._build_request(options)
            await client._prepare_request(request)
            lean = LeanGet(client, request)
    except Exception:  # an SDK whose internals moved: the SDK path still works
        log.debug("No lean GET for this client; polling through the SDK", exc_info=True)
        lean = None
    _LEAN[client] = lean
    return lean
