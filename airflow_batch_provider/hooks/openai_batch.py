"""OpenAIBatchHook: the one door to the Files and Batches APIs, sync and async.

Reads the standard ``openai`` connection (see ``clients.settings_from_connection``).
Transient failures are retried by the SDK (``max_retries`` extra, honouring
Retry-After); what is left is turned into this package's errors, with the fix in
the message and no secret in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import random
import re
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import openai
from airflow.sdk import BaseHook, ObjectStoragePath

from airflow_batch_provider._compat import connection_has_async_extras
from airflow_batch_provider.exceptions import (
    BatchAuthError,
    BatchNotFoundError,
    BatchProviderError,
    BatchServiceError,
    TransferError,
    UnsafeIdError,
)
from airflow_batch_provider.hooks.clients import (
    OPENAI_API_HOST,
    ClientSettings,
    LeanGetUnavailable,
    close_async_clients,
    lean_getter,
    redact,
    settings_from_connection,
    shared_async_client,
    with_options,
)
from airflow_batch_provider.ids import check_server_batch, check_server_id, check_user_id
from airflow_batch_provider.storage import (
    LandedFile,
    as_object_storage_path,
    public_text,
    public_uri,
    write_atomically,
)
from airflow_batch_provider.waiting.status import BatchStatus
from airflow_batch_provider.waiting.transient import is_transient_status, retry_after

if TYPE_CHECKING:
    from openai.types import Batch, FileObject

__all__ = ["OpenAIBatchHook", "close_async_clients"]

_CONTENT_RANGE = re.compile(r"\s*bytes\s+(\d+)-")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Errors a response body stream raises when the connection is cut (whichever httpx the SDK uses)."""
    errors: list[type[BaseException]] = [ConnectionError, openai.APIConnectionError]
    for name in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            module = __import__(name)
            errors.append(module.TransportError)
    return tuple(errors)


_CUT = _transport_errors()


class _Truncated(Exception):
    """The body ended before the file's size was reached."""


_RESUMABLE: tuple[type[BaseException], ...] = (_Truncated, *_CUT)


def _until_older_than(
    first_page: Any, created_after: float | None, check: Callable[[Any], Any]
) -> Iterator[Any]:
    """The items of every page, stopping after a page whose items are all older than ``created_after``.

    The service lists newest first, so nothing newer follows such a page. The order is
    checked, not assumed: once a server lists an item newer than the one before it, every
    page is read. ``check`` sees every item of a page before any of them is yielded.
    """
    newest_first, previous = True, float("inf")
    for page in first_page.iter_pages():
        items = page.data
        for item in items:
            check(item)
        for item in items:
            newest_first = newest_first and item.created_at <= previous
            previous = item.created_at
            yield item
        if created_after is not None and newest_first and items and previous < created_after:
            return


def _server_message(err: openai.APIStatusError) -> str:
    body = err.body
    if isinstance(body, Mapping):
        message = body.get("message") or body.get("detail")
        if message:
            return str(message)
    return err.message


def _is_transient(err: BaseException) -> bool:
    if isinstance(err, openai.APIConnectionError):
        return True
    if isinstance(err, openai.APIStatusError):
        return is_transient_status(err.status_code, err.code)
    return False


def is_transient_error(err: BaseException) -> bool:
    """Whether a failed call may succeed if simply made again: a network error, 408, 409, 429
    (not ``insufficient_quota``) or 5xx, raised by the SDK or by this hook once its own
    retries ran out (a :class:`BatchServiceError` caused by one). Anything else (a 400, a
    programming error) is not: waiting longer will not fix it."""
    if isinstance(err, BatchServiceError):
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    return isinstance(err, openai.OpenAIError) and _is_transient(err)


def _retry_delay(err: BaseException, attempt: int) -> float:
    """Seconds before the next attempt: the server's Retry-After if it gave one, else backoff."""
    asked = retry_after(err)
    if asked is not None:
        return asked
    return min(0.5 * 2**attempt, 8.0) * (1 - 0.25 * random.random())


def _metadata_matches(batch: Batch, wanted: Mapping[str, str]) -> bool:
    have = batch.metadata or {}
    return all(have.get(key) == value for key, value in wanted.items())


def _bytes_to_skip(received: int, status: int, content_range: str | None) -> int:
    """How much of a resumed response repeats bytes already received (-1: it starts too late)."""
    if not received:
        return 0
    if status != 206:
        return received  # Range ignored: the whole file again
    match = _CONTENT_RANGE.match(content_range or "")
    start = int(match.group(1)) if match else received
    return received - start if start <= received else -1


def _is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "file") in ("file", "local")


def _declared_size(file: Any) -> int | None:
    """The file's ``bytes`` as the service declared it; ``None`` when it declared none."""
    size = getattr(file, "bytes", None)
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise TransferError(
            f"The service declared {size!r:.40} bytes for file {file.id}, which is not a size; "
            "nothing was downloaded."
        )
    return size


def _cancel_is_moot(batch: Batch) -> bool:
    return BatchStatus.is_terminal(batch.status) or batch.status == BatchStatus.CANCELLING.value


def _split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Whole lines (with their ``\\n``) from chunks cut anywhere; a last unterminated line too."""
    pending = bytearray()
    for chunk in chunks:
        pending += chunk
        start = 0
        while (end := pending.find(b"\n", start)) != -1:
            yield bytes(pending[start : end + 1])
            start = end + 1
        del pending[:start]
    if pending:
        yield bytes(pending)


def missing_connection_message(conn_id: str) -> str:
    """What to do when the connection is not defined: the variable to set, or where else to define it."""
    return (
        f"The connection {conn_id!r} is not defined. Define it, for example as the environment variable "
        f'AIRFLOW_CONN_{conn_id.upper()}=\'{{"conn_type": "openai", "password": "<API key>", '
        f'"host": "https://api.openai.com/v1"}}\' (set where the workers, triggerer and api-server run), '
        "or under Admin > Connections, or with `airflow connections add`."
    )


def _lacks_api_version(settings: ClientSettings) -> bool:
    """A custom OpenAI host whose path stops short of ``/v1`` (Azure's urls have none)."""
    if settings.azure or not settings.base_url:
        return False
    return not urlsplit(str(settings.base_url)).path.rstrip("/").endswith("/v1")


class OpenAIBatchHook(BaseHook):
    """Files and Batches of the OpenAI Batch API (or any compatible service, Azure included).

    :param conn_id: an ``openai`` connection: password = API key, host = base URL; extras
        ``openai_client_kwargs``, ``organization``, ``project``, ``max_retries``, ``timeout``,
        ``console_url``, and for Azure ``azure_endpoint``, ``api_version``, ``azure_deployment``.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "openai_default"
    conn_type = "openai"
    hook_name = "OpenAI"

    def __init__(self, conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._settings: ClientSettings | None = None
        self._async_settings: ClientSettings | None = None
        self._client: openai.OpenAI | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(conn_id={self.conn_id!r})"

    # --- clients ---

    @property
    def settings(self) -> ClientSettings:
        """The connection as read for the SDK (read once per hook)."""
        if self._settings is None:
            with self._connection_defined():
                conn = self.get_connection(self.conn_id)
            self._settings = settings_from_connection(conn, conn.extra_dejson)
        return self._settings

    @contextlib.contextmanager
    def _connection_defined(self) -> Iterator[None]:
        """Airflow's "conn_id isn't defined", with the variable to set (same exception type)."""
        try:
            yield
        except Exception as err:
            if not any(c.__name__ == "AirflowNotFoundException" for c in type(err).__mro__):
                raise
            raise type(err)(missing_connection_message(self.conn_id)) from None

    def get_conn(self) -> openai.OpenAI:
        """Return this hook's ``OpenAI`` (or ``AzureOpenAI``) client, built once."""
        if self._client is None:
            self._client = self.settings.build_sync()
        return self._client

    async def _aload_settings(self) -> ClientSettings:
        from airflow.sdk import Connection

        with self._connection_defined():
            if connection_has_async_extras(Connection):
                # Airflow >= 3.3.2: fetching and masking never block the loop.
                conn = await self.aget_connection(self.conn_id)
                extras = await conn.aextra_dejson()
            else:
                # Older Airflow masks secrets with a blocking call: keep it off the loop.
                conn = await asyncio.to_thread(self.get_connection, self.conn_id)
                extras = await asyncio.to_thread(lambda: conn.extra_dejson)
        return settings_from_connection(conn, extras)

    async def get_async_conn(self) -> openai.AsyncOpenAI:
        """Return the ``AsyncOpenAI`` client shared by every hook of this connection on the running loop.

        Do not close it: it is closed when the loop shuts down, or by ``close_async_clients()``.
        """
        if self._async_settings is None:
            self._async_settings = await self._aload_settings()
        return shared_async_client(self._async_settings)

    @property
    def max_retries(self) -> int:
        return self.settings.max_retries

    # --- errors ---

    def _fail(self, err: BaseException, action: str, settings: ClientSettings | None = None) -> NoReturn:
        raise self._translate(err, action, settings) from None

    def _translate(
        self, err: BaseException, action: str, settings: ClientSettings | None = None
    ) -> BatchProviderError:
        """Turn an SDK error into this package's error: what failed, why, and what to do."""
        settings = settings or self._settings or self._async_settings
        secrets = settings.secrets if settings else ()
        where = settings.base_url if settings else "the service"
        conn = self.conn_id
        if isinstance(err, BatchProviderError):
            return err
        if isinstance(err, openai.APIStatusError):
            status = err.status_code
            detail = redact(_server_message(err), secrets)
            request_id = f", request id {err.request_id}" if err.request_id else ""
            if status == 401:
                return BatchAuthError(
                    f"{action}: {where} refused the credentials of connection {conn!r} "
                    f"(401: {detail}{request_id}). Put a valid API key in the connection's "
                    "password (API Key) field."
                )
            if status == 403:
                return BatchAuthError(
                    f"{action}: the key of connection {conn!r} is not allowed to do this at {where} "
                    f"(403: {detail}{request_id}). Check the key's permissions and the connection's "
                    "'organization' and 'project' extras."
                )
            if status == 404:
                if settings is not None and _lacks_api_version(settings):
                    return BatchNotFoundError(
                        f"{action}: {where} answered 404 ({detail}{request_id}). The Batch API lives under "
                        f"/v1: set the host of connection {conn!r} to {str(where).rstrip('/')}/v1."
                    )
                return BatchNotFoundError(
                    f"{action}: not found at {where} (404: {detail}{request_id}). Check the id, and that "
                    f"connection {conn!r} points at the organization and project that created it."
                )
            if status == 429 and err.code == "insufficient_quota":
                return BatchServiceError(
                    f"{action}: the account behind connection {conn!r} has no quota left (429: {detail}). "
                    "Add credits or raise the limits, then retry the task."
                )
            if _is_transient(err):
                return BatchServiceError(
                    f"{action}: {where} kept failing after {self._retries(settings)} retries "
                    f"({status}: {detail}{request_id}). The service is down or rate limiting: "
                    "retry the task later, or raise the connection's 'max_retries' extra."
                )
            param = f" (param {err.param})" if getattr(err, "param", None) else ""
            return BatchProviderError(
                f"{action}: {where} rejected the request{param} ({status}: {detail}{request_id}). "
                "Fix the request: it is not retried."
            )
        if isinstance(err, openai.APIConnectionError):
            kind = "timed out" if isinstance(err, openai.APITimeoutError) else "could not connect"
            return BatchServiceError(
                f"{action}: {kind} to {where} after {self._retries(settings)} retries "
                f"({redact(str(err.__cause__ or err), secrets)}). Check the connection's host and the "
                "network, or retry the task later."
            )
        return BatchProviderError(f"{action}: {type(err).__name__}: {redact(str(err), secrets)}")

    @staticmethod
    def _retries(settings: ClientSettings | None) -> int:
        return settings.max_retries if settings else 0

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except openai.OpenAIError as err:
            self._fail(err, action)

    # --- what the server answered ---

    def server_name(self, settings: ClientSettings | None = None) -> str:
        """The server, named for errors: the connection's base URL without secrets."""
        settings = settings or self._settings or self._async_settings
        return (settings.base_url if settings else None) or "the service"

    @contextlib.contextmanager
    def _redacted(self, settings: ClientSettings | None = None) -> Iterator[None]:
        try:
            yield
        except UnsafeIdError as err:
            settings = settings or self._settings or self._async_settings
            raise UnsafeIdError(redact(str(err), settings.secrets if settings else ())) from None

    def check_batch_answer(
        self, batch: Any, request: str, asked: str | None = None, settings: ClientSettings | None = None
    ) -> Any:
        """Return ``batch`` (SDK ``Batch`` or dict) once its id and file ids are safe ids, and its id
        the one ``asked`` for (see :mod:`airflow_batch_provider.ids`).

        :raises UnsafeIdError: naming the server and the bad value.
        """
        with self._redacted(settings):
            return check_server_batch(batch, server=self.server_name(settings), request=request, asked=asked)

    def _check_file_answer(self, file: Any, request: str, asked: str | None = None) -> Any:
        with self._redacted():
            check_server_id(
                getattr(file, "id", None),
                kind="file id",
                server=self.server_name(),
                request=request,
                asked=asked,
            )
        return file

    @staticmethod
    def _asked(value: Any, kind: str) -> str:
        return check_user_id(value, kind=kind, argument="A call to OpenAIBatchHook")

    def test_connection(self) -> tuple[bool, str]:
        """Check the credentials by listing one batch (the UI's Test button)."""
        try:
            client = with_options(self.get_conn(), max_retries=1, timeout=20.0)
            with self._errors("Listing batches"):
                client.batches.list(limit=1)
        except Exception as err:
            settings = self._settings
            message = str(err) if isinstance(err, BatchProviderError) else str(self._translate(err, "Test"))
            return False, redact(message, settings.secrets if settings else ())
        return True, f"Connected: the Batch API at {self.settings.base_url} answered."

    # --- files ---

    @contextlib.contextmanager
    def _open_upload(self, source: Any, filename: str | None) -> Iterator[tuple[str, IO[bytes]]]:
        """Yield ``(filename, binary file)`` for ``source`` without reading it into memory."""
        if isinstance(source, (bytes, bytearray)):
            yield filename or "batch_input.jsonl", io.BytesIO(bytes(source))
        elif isinstance(source, (str, os.PathLike, ObjectStoragePath)):
            path = as_object_storage_path(source)
            # Never a URL's query as the name: a presigned URL's signature is there.
            name = filename or (path.name if _is_local(path) else re.split(r"[?#]", path.name)[0])
            name = name or "batch_input.jsonl"
            # A plain file for local paths (the SDK reads it in 64 KB pieces); else an
            # fsspec file with a bounded read-ahead.
            if _is_local(path):
                with open(path.path, "rb") as handle:
                    yield name, handle
            else:
                with path.fs.open(path.path, "rb", block_size=8 * 1024 * 1024) as handle:
                    yield name, handle
        elif hasattr(source, "read"):
            yield filename or getattr(source, "name", None) or "batch_input.jsonl", source
        elif isinstance(source, Iterable):
            # A generator cannot be re-read on retry, and its size is unknown: spool it to disk.
            with tempfile.TemporaryFile(prefix="openai-batch-upload-") as spool:
                for line in source:
                    data = line.encode() if isinstance(line, str) else bytes(line)
                    spool.write(data)
                    if data and not data.endswith(b"\n"):
                        spool.write(b"\n")
                spool.seek(0)
                yield filename or "batch_input.jsonl", spool
        else:
            raise BatchProviderError(
                f"Cannot upload a {type(source).__name__}: give a path, an ObjectStoragePath, "
                "a binary file or an iterable of bytes lines."
            )

    def upload_file(self, source: Any, *, filename: str | None = None) -> FileObject:
        """Upload a batch input file (purpose ``batch``), streaming it.

        :param source: a local path, a URL or ``ObjectStoragePath``, a binary file, or an
            iterable of ``bytes`` lines (a missing final ``\\n`` is added to each line).
        :param filename: the name the service shows; defaults to the source's name.
        """
        with self._open_upload(source, filename) as (name, handle):
            with self._errors(f"Uploading {name}"):
                uploaded = self.get_conn().files.create(file=(name, handle), purpose="batch")
        self._check_file_answer(uploaded, f"POST /files ({name})")
        self.log.info("Uploaded %s as file %s (%s bytes)", name, uploaded.id, uploaded.bytes)
        return uploaded

    def get_file(self, file_id: str) -> FileObject:
        self._asked(file_id, "file id")
        with self._errors(f"Reading file {file_id}"):
            file = self.get_conn().files.retrieve(file_id)
        return self._check_file_answer(file, f"GET /files/{file_id}", asked=file_id)

    def iter_files(
        self, purpose: str | None = None, *, created_after: float | None = None
    ) -> Iterator[FileObject]:
        """Every file (of ``purpose`` if given), newest first, across all pages.

        :param purpose: only files of this purpose.
        :param created_after: epoch seconds: stop after the first page whose files are all
            older (see :func:`_until_older_than`).
        """
        kwargs: dict[str, Any] = {"purpose": purpose} if purpose else {}
        with self._errors("Listing files"):
            yield from _until_older_than(
                self.get_conn().files.list(**kwargs),
                created_after,
                lambda f: self._check_file_answer(f, "GET /files (a list page)"),
            )

    def delete_file(self, file_id: str) -> None:
        """Delete a file; a file already gone counts as deleted."""
        self._asked(file_id, "file id")
        try:
            with self._errors(f"Deleting file {file_id}"):
                self.get_conn().files.delete(file_id)
        except BatchNotFoundError:
            self.log.info("File %s was already deleted", file_id)

    def _iter_content(self, file_id: str) -> Iterator[bytes]:
        """The file's bytes, resuming after a cut connection.

        Resumes with ``Range: bytes=N-``; a server that ignores it sends the whole file
        again and the first N bytes are skipped. The file's ``bytes`` field tells a
        complete body from one cut without an error, and a body longer than it is refused
        (as soon as it passes it: nothing more is read or written).
        """
        expected = _declared_size(self.get_file(file_id))
        client = self.get_conn()
        received = 0
        cuts = 0
        attempts = max(self.max_retries, 3)
        while True:
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                with self._errors(f"Downloading file {file_id}"):
                    with client.files.with_streaming_response.content(file_id, extra_headers=headers) as resp:
                        skip = _bytes_to_skip(received, resp.status_code, resp.headers.get("content-range"))
                        if skip < 0:
                            raise TransferError(
                                f"Downloading file {file_id}: asked to resume at byte {received}, the "
                                f"service answered {resp.headers.get('content-range')!r}. Retry the task."
                            )
                        # Chunks as they arrive (~64 KB): a cut loses nothing already received, and
                        # no chunk_size, whose re-chunking copies every byte (~60% more CPU here).
                        for chunk in resp.iter_bytes():
                            if skip:
                                if len(chunk) <= skip:
                                    skip -= len(chunk)
                                    continue
                                chunk, skip = chunk[skip:], 0
                            received += len(chunk)
                            if expected is not None and received > expected:
                                raise TransferError(
                                    f"Downloading file {file_id}: {self.server_name()} sent more than the "
                                    f"{expected} bytes it declared for the file (at least {received}), so "
                                    "nothing was landed. The file changed or the server is not behaving "
                                    "like the Batch API: retry the task, and report it if it persists."
                                )
                            yield chunk
                if expected and received < expected:
                    raise _Truncated(f"body ended at byte {received}")
                return
            except _RESUMABLE as err:
                cuts += 1
                if cuts > attempts:
                    raise TransferError(
                        f"Downloading file {file_id}: the connection was cut {cuts} times, last at byte "
                        f"{received} of {expected} ({type(err).__name__}). Retry the task later."
                    ) from None
                delay = 0.0 if cuts == 1 else min(0.5 * 2 ** (cuts - 2), 8.0)
                self.log.warning(
                    "Download of file %s cut at byte %d of %s (%s); resuming in %.1fs",
                    file_id,
                    received,
                    expected,
                    type(err).__name__,
                    delay,
                )
                time.sleep(delay)

    def iter_file_lines(self, file_id: str) -> Iterator[bytes]:
        """The file's lines (each with its ``\\n``), streamed; survives cut connections."""
        yield from _split_lines(self._iter_content(file_id))

    def download_file(self, file_id: str, destination: ObjectStoragePath | str) -> LandedFile:
        """Stream a file to ``destination`` atomically: complete there, or not there at all.

        :param file_id: the service's file id (an output or error file).
        :param destination: an ``ObjectStoragePath``, URL or local path.
        :return: the landed file's uri, bytes, sha256 and line count.
        """
        target = as_object_storage_path(destination)
        try:
            landed = write_atomically(target, self._iter_content(file_id))
        except BatchProviderError:
            raise
        except Exception as err:
            raise TransferError(
                f"Writing file {file_id} to {public_uri(str(target))} failed ({type(err).__name__}: "
                f"{public_text(str(err))}); nothing was "
                "left at that path. Check the destination's connection and permissions."
            ) from err
        self.log.info(
            "Landed file %s at %s (%d bytes, %d lines)", file_id, landed.uri, landed.bytes, landed.lines
        )
        return landed

    # --- batches ---

    def create_batch(
        self,
        input_file_id: str,
        endpoint: str,
        *,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        output_expires_after: Mapping[str, Any] | None = None,
    ) -> Batch:
        """Create a batch, never twice for one call.

        The SDK sends no idempotency key, so a create retried after a reset or a 5xx could
        make a second batch. Retries happen here instead: before asking again, recent
        batches are checked for one with this input file, endpoint and metadata.
        """
        self._asked(input_file_id, "file id")
        params: dict[str, Any] = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
        }
        if metadata:
            params["metadata"] = dict(metadata)
        if output_expires_after:
            params["output_expires_after"] = dict(output_expires_after)
        client = with_options(self.get_conn(), max_retries=0)
        started = time.time()
        attempt = 0
        check_first = False
        while True:
            try:
                if check_first:
                    found = self._find_created(client, params, since=started - 300)
                    if found is not None:
                        self._check_created(found, input_file_id)
                        self.log.warning("Batch %s was created by an attempt that seemed to fail", found.id)
                        return found
                    check_first = False
                batch = client.batches.create(**params)
                self._check_created(batch, input_file_id)
                self.log.info("Created batch %s from file %s (%s)", batch.id, input_file_id, endpoint)
                return batch
            except openai.OpenAIError as err:
                if not _is_transient(err) or attempt >= self.max_retries:
                    self._fail(err, f"Creating a batch from file {input_file_id}")
                # 408/409/429 were refused before any work; 5xx or a cut may have created it.
                if isinstance(err, openai.APIConnectionError) or (
                    isinstance(err, openai.APIStatusError) and err.status_code >= 500
                ):
                    check_first = True
                delay = _retry_delay(err, attempt)
                attempt += 1
                self.log.warning(
                    "Creating a batch failed (%s); attempt %d of %d in %.1fs",
                    type(err).__name__,
                    attempt + 1,
                    self.max_retries + 1,
                    delay,
                )
                time.sleep(delay)

    def _check_created(self, batch: Batch, input_file_id: str) -> None:
        self.check_batch_answer(batch, f"POST /batches (input file {input_file_id})")

    def _find_created(self, client: openai.OpenAI, params: Mapping[str, Any], since: float) -> Batch | None:
        for batch in client.batches.list(limit=100):
            self.check_batch_answer(batch, "GET /batches (a list page)")
            if batch.created_at < since:
                return None  # newest first: nothing older can be ours
            if (
                batch.input_file_id == params["input_file_id"]
                and batch.endpoint == params["endpoint"]
                and (batch.metadata or {}) == (params.get("metadata") or {})
            ):
                return batch
        return None

    def get_batch(self, batch_id: str) -> Batch:
        self._asked(batch_id, "batch id")
        with self._errors(f"Reading batch {batch_id}"):
            batch = self.get_conn().batches.retrieve(batch_id)
        return self.check_batch_answer(batch, f"GET /batches/{batch_id}", asked=batch_id)

    async def aget_batch(self, batch_id: str) -> Batch:
        self._asked(batch_id, "batch id")
        client = await self.get_async_conn()
        try:
            batch = await client.batches.retrieve(batch_id)
        except openai.OpenAIError as err:
            self._fail(err, f"Reading batch {batch_id}", self._async_settings)
        return self.check_batch_answer(
            batch, f"GET /batches/{batch_id}", asked=batch_id, settings=self._async_settings
        )

    async def aget_batch_json(self, batch_id: str) -> dict[str, Any]:
        """``aget_batch`` as the service's JSON object (the triggerer's hot request).

        Sent through the SDK client's HTTP client without the SDK's model layer where the
        credentials are static; errors, retries and other credentials go through the SDK,
        with the same outcome as ``aget_batch``.
        """
        self._asked(batch_id, "batch id")
        body = await self._aget_json(
            f"/{batch_id}", None, f"Reading batch {batch_id}", lambda c: c.batches.retrieve(batch_id)
        )
        return self.check_batch_answer(
            body, f"GET /batches/{batch_id}", asked=batch_id, settings=self._async_settings
        )

    async def alist_batches_json(
        self, *, limit: int, after: str | None = None, translate: bool = True
    ) -> dict[str, Any]:
        """One page of ``GET /batches`` (newest first) as the service's JSON object.

        :param translate: raise this package's errors (False: the SDK's, with their status code).
        """
        params: dict[str, Any] = {"limit": limit}
        if after is not None:
            params["after"] = after

        async def sdk(c: openai.AsyncOpenAI) -> Any:
            raw = await c.batches.with_raw_response.list(**params)
            return raw.http_response.json()

        return await self._aget_json("", params, "Listing batches", sdk, translate)

    async def _aget_json(
        self, path: str, params: Mapping[str, Any] | None, action: str, sdk: Any, translate: bool = True
    ) -> Any:
        client = await self.get_async_conn()
        lean = await lean_getter(client)
        try:
            if lean is not None:
                try:
                    body = await lean.get(path, params)
                    if isinstance(body, dict):
                        return body
                except LeanGetUnavailable as refused:
                    client = await self._after_lean_failure(client, refused)
            result = await sdk(client)
        except openai.OpenAIError as err:
            if not translate:
                raise
            self._fail(err, action, self._async_settings)
        return result if isinstance(result, dict) else result.model_dump()

    @staticmethod
    async def _after_lean_failure(client: Any, refused: LeanGetUnavailable) -> Any:
        """What the SDK would have done after this first attempt failed: raise its error, or
        wait as it waits and return the client that makes the remaining attempts."""
        retries = client.max_retries
        response = refused.response
        if response is not None and (retries <= 0 or not client._should_retry(response)):
            raise client._make_status_error_from_response(response)
        if response is None and refused.request is not None and retries <= 0:
            timeout = isinstance(refused.error, TimeoutError) or "Timeout" in type(refused.error).__name__
            cls = openai.APITimeoutError if timeout else openai.APIConnectionError
            raise cls(request=refused.request) from refused.error
        if response is None and refused.request is None:
            return client  # a body that was not JSON: the SDK's attempt says what it makes of it
        from openai._models import FinalRequestOptions

        options = FinalRequestOptions.construct(method="get", url="/batches")
        headers = response.headers if response is not None else None
        await asyncio.sleep(client._calculate_retry_timeout(retries, options, headers))
        return with_options(client, max_retries=retries - 1)

    def cancel_batch(self, batch_id: str) -> Batch:
        """Cancel a batch; one already finished or cancelling is returned as it is."""
        batch = self.get_batch(batch_id)
        if _cancel_is_moot(batch):
            return batch
        try:
            with self._errors(f"Cancelling batch {batch_id}"):
                cancelled = self.get_conn().batches.cancel(batch_id)
            return self.check_batch_answer(cancelled, f"POST /batches/{batch_id}/cancel", asked=batch_id)
        except (BatchAuthError, BatchNotFoundError, UnsafeIdError):
            raise
        except BatchProviderError:
            # It may have finished meanwhile (the service then refuses to cancel it).
            batch = self.get_batch(batch_id)
            if _cancel_is_moot(batch):
                return batch
            raise

    async def acancel_batch(self, batch_id: str) -> Batch:
        """Async ``cancel_batch``."""
        batch = await self.aget_batch(batch_id)
        if _cancel_is_moot(batch):
            return batch
        client = await self.get_async_conn()
        try:
            cancelled = await client.batches.cancel(batch_id)
        except openai.OpenAIError as err:
            error = self._translate(err, f"Cancelling batch {batch_id}", self._async_settings)
        else:
            return self.check_batch_answer(
                cancelled, f"POST /batches/{batch_id}/cancel", asked=batch_id, settings=self._async_settings
            )
        if not isinstance(error, (BatchAuthError, BatchNotFoundError)):
            batch = await self.aget_batch(batch_id)
            if _cancel_is_moot(batch):
                return batch
        raise error

    def iter_batches(self, *, created_after: float | None = None) -> Iterator[Batch]:
        """Every batch, newest first, across all pages.

        :param created_after: epoch seconds: stop after the first page whose batches are all
            older (see :func:`_until_older_than`).
        """
        with self._errors("Listing batches"):
            yield from _until_older_than(
                self.get_conn().batches.list(limit=100),
                created_after,
                lambda b: self.check_batch_answer(b, "GET /batches (a list page)"),
            )

    def find_batches(self, metadata: Mapping[str, str], *, created_after: float | None = None) -> list[Batch]:
        """Batches whose metadata holds every pair of ``metadata``, newest first.

        :param metadata: the pairs to match.
        :param created_after: epoch seconds before which no match can have been created (a
            re-attach passes its DAG run's start): the listing stops there instead of reading
            the account's whole history.
        """
        batches = self.iter_batches(created_after=created_after)
        return [batch for batch in batches if _metadata_matches(batch, metadata)]

    # --- links ---

    def batch_console_url(self, batch_id: str) -> str | None:
        """Where a person can see the batch.

        The ``console_url`` extra (a template with ``{batch_id}``) wins; else
        platform.openai.com for api.openai.com, none for Azure, and the emulator's page
        (``<base without /v1>/_emulator/batches/<id>``) for any other base URL.
        """
        settings = self.settings
        if settings.console_url is not None:
            return settings.console_url.replace("{batch_id}", batch_id)
        if settings.azure or not settings.base_url:
            return None
        parts = urlsplit(settings.base_url)
        if parts.hostname == OPENAI_API_HOST:
            return f"https://platform.openai.com/batches/{batch_id}"
        base = settings.base_url.rstrip("/")
        base = base[: -len("/v1")] if base.endswith("/v1") else base
        return f"{base}/_emulator/batches/{batch_id}"
