"""A small keep-alive HTTP/1.1 ``GET`` client over asyncio streams: the triggerer's hot request.

A retrieve through httpx costs about a millisecond and a half of CPU in its layers (URL
model, h11 state machine, anyio, connection-pool bookkeeping, a liveness probe per
reuse); a triggerer polling ten thousand batches spends most of its loop there. This
sends the request the SDK built once (:class:`~airflow_batch_provider.hooks.clients.LeanGet`
keeps its headers: auth, ``api-version``, SDK headers) as prebuilt bytes over pooled
connections and reads the answer with two buffered reads.

Used only where it behaves like the SDK's own transport (:func:`raw_pool_for`): the
client's default transport (no proxy, from the environment or given, no mounts, no
Unix socket, local address or socket options, no event hooks or auth of its own),
with its TLS context (CA bundle, client certificate, ``verify``) reused as it is.
Anything else keeps the httpx path. Every answer but a 200 goes back to the SDK, which
retries or raises as it always does.

Nothing here blocks the event loop: name resolution runs in the loop's executor
(``asyncio.open_connection``) and TLS is asyncio's non-blocking SSL transport.
"""

from __future__ import annotations

import asyncio
import collections
import sys
import zlib
from typing import Any

#: Connections kept per pool (requests beyond it wait for one: a bounded burst).
MAX_CONNECTIONS = 64
#: Seconds an idle connection is kept (servers drop idle keep-alive connections after 5-60 s).
KEEPALIVE_EXPIRY = 4.0
_READ_LIMIT = 1 << 20  # longest header block accepted (asyncio's StreamReader limit)


class RawResponse:
    """Status, headers (lower-case names) and decoded body of one answer."""

    __slots__ = ("body", "headers", "status")

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        try:
            self.writer.close()
        except Exception:  # a transport already gone
            pass


class _Stale(Exception):
    """A reused keep-alive connection was closed by the server before answering."""


class RawGetPool:
    """Keep-alive connections to one origin; ``get`` sends prebuilt headers.

    :param scheme: ``http`` or ``https``.
    :param host: host name (or IP) to connect to and to check the certificate against.
    :param port: TCP port.
    :param ssl_context: the TLS context for ``https`` (the SDK transport's own).
    :param header_block: every request header line (``Name: value\\r\\n``), ``Host`` included.
    :param connect_timeout: seconds to open a connection (TLS included).
    :param read_timeout: seconds for a whole exchange once connected.
    :param max_connections: connections open at most; further requests wait for one.
    """

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        ssl_context: Any,
        header_block: bytes,
        connect_timeout: float | None,
        read_timeout: float | None,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.host = host
        self.port = port
        self._ssl = ssl_context if scheme == "https" else None
        self._headers = header_block
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: collections.deque[_Conn] = collections.deque()
        self._slots = asyncio.Semaphore(max_connections)
        self._closed = False
        self.opened = 0  # connections opened (for tests and diagnostics)

    async def get(self, target: str) -> RawResponse:
        """``GET target`` (origin-form: path and query) and return the answer.

        :raises OSError: connection refused, reset, or closed mid-answer.
        :raises TimeoutError: connect or read timeout.
        :raises ValueError: an answer that is not HTTP/1.x.
        """
        if self._closed:
            raise ConnectionError("the client has been closed")
        head = b"GET " + target.encode("ascii") + b" HTTP/1.1\r\n" + self._headers + b"\r\n"
        async with self._slots:
            while self._idle:
                conn = self._idle.pop()  # the most recently used: the likeliest still open
                if asyncio.get_running_loop().time() - conn.idle_since > KEEPALIVE_EXPIRY:
                    conn.close()
                    continue
                try:
                    return await self._exchange(conn, head)
                except _Stale:
                    continue  # the server closed it while idle: a GET is safe to send again
            conn = await self._connect()
            try:
                return await self._exchange(conn, head)
            except _Stale:
                raise ConnectionResetError("the server closed the connection without answering") from None

    async def _connect(self) -> _Conn:
        coro = asyncio.open_connection(
            self.host,
            self.port,
            ssl=self._ssl,
            server_hostname=self.host if self._ssl is not None else None,
            limit=_READ_LIMIT,
        )
        reader, writer = await _within(self._connect_timeout, coro)
        self.opened += 1
        return _Conn(reader, writer)

    async def _exchange(self, conn: _Conn, head: bytes) -> RawResponse:
        done = False
        try:
            conn.writer.write(head)
            response, keep = await _within(self._read_timeout, self._read(conn.reader))
            done = True
        except asyncio.IncompleteReadError:
            raise ConnectionResetError("the server closed the connection mid-answer") from None
        except asyncio.LimitOverrunError:
            raise ValueError("an answer's header block is too long") from None
        finally:
            if not done:  # failed or cancelled mid-answer: the connection's state is unknown
                conn.close()
        if keep and not self._closed:
            conn.idle_since = asyncio.get_running_loop().time()
            self._idle.append(conn)
        else:
            conn.close()
        return response

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> tuple[RawResponse, bool]:
        try:
            block = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as err:
            if not err.partial:
                raise _Stale() from None
            raise ConnectionResetError("the server closed the connection mid-answer") from None
        except ConnectionResetError:
            raise _Stale() from None
        lines = block.decode("latin-1").split("\r\n")
        status_line = lines[0]
        if not status_line.startswith("HTTP/1.") or len(status_line) < 12:
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:40]!r}")
        status = int(status_line[9:12])
        headers: list[tuple[str, str]] = []
        length = -1
        chunked = False
        keep = status_line[5:8] == "1.1"
        encoding = ""
        for line in lines[1:]:
            if not line:
                continue
            name, _, value = line.partition(":")
            name = name.strip().lower()
            value = value.strip()
            headers.append((name, value))
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value.lower()
            elif name == "connection":
                keep = "close" not in value.lower() and (keep or "keep-alive" in value.lower())
            elif name == "content-encoding":
                encoding = value.lower()
        if 100 <= status < 200 or status in (204, 304):
            if 100 <= status < 200:  # an interim answer: the real one follows
                return await RawGetPool._read(reader)
            body = b""
        elif chunked:
            parts = []
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while (await reader.readuntil(b"\r\n")) != b"\r\n":
                        pass  # trailers
                    break
                parts.append((await reader.readexactly(size + 2))[:-2])
            body = b"".join(parts)
        elif length >= 0:
            body = await reader.readexactly(length)
        else:
            body = await reader.read()  # until the server closes
            keep = False
        if encoding in ("gzip", "x-gzip"):
            body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            try:
                body = zlib.decompress(body)
            except zlib.error:
                body = zlib.decompress(body, -zlib.MAX_WBITS)
        elif encoding not in ("", "identity"):
            raise ValueError(f"unsupported content-encoding {encoding!r}")
        return RawResponse(status, headers, body), keep

    def close(self) -> None:
        """Close every idle connection; requests after this raise."""
        self._closed = True
        while self._idle:
            self._idle.pop().close()


async def _within(seconds: float | None, awaitable: Any) -> Any:
    if seconds is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def raw_pool_for(http: Any, template: Any) -> RawGetPool | None:
    """A :class:`RawGetPool` sending ``template``'s headers where ``http`` (the SDK's httpx
    client) would send it plainly, or None where only httpx can (proxies, custom transports,
    hooks).

    :param http: the SDK client's ``httpx.AsyncClient`` (``httpx`` or ``httpx2``).
    :param template: a request the SDK built for ``GET /batches``.
    """
    url = template.url
    if url.scheme not in ("http", "https") or not url.host:
        return None
    if getattr(http, "_auth", None) is not None:
        return None
    hooks = getattr(http, "_event_hooks", None)
    if not isinstance(hooks, dict):
        return None
    for hook in (h for group in hooks.values() for h in group):
        # The Azure client's own hook only acts on redirects, which the raw path never follows.
        if not getattr(hook, "__name__", "").endswith("strip_azure_api_key_on_redirect"):
            return None  # a hook of the user's: only httpx calls it
    transport = http._transport_for_url(url)
    if transport is not getattr(http, "_transport", None) or type(transport).__name__ != "AsyncHTTPTransport":
        return None  # a proxy (environment or given) or a transport of the user's own
    pool: Any = getattr(transport, "_pool", None)
    if pool is None or type(pool).__name__ != "AsyncConnectionPool":
        return None
    if any(getattr(pool, n, None) for n in ("_uds", "_local_address", "_socket_options", "_proxy")):
        return None
    if url.scheme == "https" and getattr(pool, "_ssl_context", None) is None:
        return None
    lines = []
    for name, value in template.headers.raw:
        low = name.lower()
        if low in (b"content-length", b"transfer-encoding"):
            continue
        if low == b"accept-encoding":
            value = b"gzip, deflate"  # the ones decoded here
        lines.append(name + b": " + value + b"\r\n")
    if not any(line[:5].lower() == b"host:" for line in lines):
        return None
    timeout = template.extensions.get("timeout") or {}
    port = url.port or (443 if url.scheme == "https" else 80)
    return RawGetPool(
        url.scheme,
        url.host,
        port,
        pool._ssl_context,
        b"".join(lines),
        connect_timeout=timeout.get("connect"),
        read_timeout=timeout.get("read"),
    )
