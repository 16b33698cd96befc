"""The triggerer's raw keep-alive GET (hooks/lean_http.py): same wire form and outcome as the SDK,
over real sockets; TLS from the SDK's context, proxies left to httpx, HTTP/1.1 framing."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import ssl
from pathlib import Path

import pytest

from airflow_batch_provider.exceptions import BatchProviderError
from airflow_batch_provider.hooks import clients
from airflow_batch_provider.hooks.lean_http import RawGetPool
from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from tests.loop_calls import blocking_calls_on_this_thread
from tests.unit.hook_http import Reply, ScriptedServer, batch_json

KEY = "sk-lean-test-secret-0123456789"


async def _lean(hook: OpenAIBatchHook) -> clients.LeanGet:
    lean = await clients.lean_getter(await hook.get_async_conn())
    assert lean is not None
    return lean


async def test_polls_reuse_one_connection_and_send_the_sdks_request(openai_connection):
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_1", status="in_progress"))) as server:
        openai_connection("openai_raw", host=f"{server.url}/v1", password=KEY, extra={"project": "p-1"})
        hook = OpenAIBatchHook("openai_raw")
        model = await hook.aget_batch("batch_1")  # the SDK's own request, to compare with
        with blocking_calls_on_this_thread() as seen:
            raws = [await hook.aget_batch_json("batch_1") for _ in range(5)]
            page = await hook.alist_batches_json(limit=100, after="batch_0")
        lean = await _lean(hook)
    assert lean._raw is not None and lean._raw.opened == 1  # keep-alive: one connection for six GETs
    assert seen.calls == []
    sdk, *polls = server.requests
    assert len(polls) == 6
    for poll in polls[:5]:
        assert (poll.method, poll.path, poll.query) == (sdk.method, sdk.path, sdk.query)
        for name in ("authorization", "openai-project", "user-agent", "x-stainless-lang", "host"):
            assert poll.headers.get(name) == sdk.headers.get(name), name
    assert polls[5].query == {"limit": ["100"], "after": ["batch_0"]}
    assert raws == [model.model_dump(exclude_unset=True)] * 5
    assert isinstance(page, dict)


async def test_azure_polls_keep_the_api_version_and_key_header(openai_connection):
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_1"))) as server:
        extra = {"azure_endpoint": server.url, "api_version": "2024-10-21"}
        openai_connection("openai_raw_az", host=server.url, password=KEY, extra=extra)
        hook = OpenAIBatchHook("openai_raw_az")
        await hook.aget_batch("batch_1")
        await hook.aget_batch_json("batch_1")
        assert (await _lean(hook))._raw is not None
    sdk, lean = server.requests
    assert (
        (lean.path, lean.query)
        == (sdk.path, sdk.query)
        == ("/openai/batches/batch_1", {"api-version": ["2024-10-21"]})
    )
    assert lean.headers["api-key"] == sdk.headers["api-key"] == KEY


async def test_a_proxy_from_the_environment_is_used(openai_connection, monkeypatch):
    """The raw path would connect straight to the service: with a proxy configured, httpx sends."""
    with (
        ScriptedServer(lambda r: Reply(200, batch_json("batch_1", status="in_progress"))) as direct,
        ScriptedServer(lambda r: Reply(200, batch_json("batch_1", status="completed"))) as proxy,
    ):
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        openai_connection("openai_raw_proxy", host=f"{direct.url}/v1", password=KEY)
        hook = OpenAIBatchHook("openai_raw_proxy")
        raw = await hook.aget_batch_json("batch_1")
        assert (await _lean(hook))._raw is None
    assert raw["status"] == "completed"
    assert direct.requests == [] and len(proxy.requests) == 1


def _self_signed(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


async def test_https_uses_the_sdks_tls_settings(openai_connection, monkeypatch, tmp_path):
    cert, key = _self_signed(tmp_path)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with ScriptedServer(lambda r: Reply(200, batch_json("batch_1", status="in_progress")), tls=tls) as server:
        # Not trusted: the raw path refuses the certificate as the SDK does (no silent downgrade).
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        openai_connection("openai_tls_bad", host=f"{server.url}/v1", password=KEY, extra={"max_retries": 0})
        untrusted = OpenAIBatchHook("openai_tls_bad")
        with pytest.raises(BatchProviderError):
            await untrusted.aget_batch_json("batch_1")
        assert server.requests == []
        # Trusted through the environment's CA bundle (read by the SDK's transport).
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        openai_connection("openai_tls", host=f"{server.url}/v1", password=KEY, extra={"max_retries": 0})
        hook = OpenAIBatchHook("openai_tls")
        raws = [await hook.aget_batch_json("batch_1") for _ in range(3)]
        lean = await _lean(hook)
    assert lean._raw is not None and lean._raw.opened == 1
    assert [r["status"] for r in raws] == ["in_progress"] * 3
    assert len(server.requests) == 3  # every poll went through the raw path, none fell back


# --- the HTTP/1.1 framing, against a server that writes exact bytes ---


class _RawServer:
    """Answers each request on a connection with the next scripted bytes; None closes it."""

    def __init__(self, script: list[bytes | None]) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.script:
                self.requests.append(await reader.readuntil(b"\r\n\r\n"))
                answer = self.script.pop(0)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> RawGetPool:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return RawGetPool("http", "127.0.0.1", port, None, f"Host: 127.0.0.1:{port}\r\n".encode(), 5.0, 5.0)

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()


def _answer(body: bytes, *headers: str) -> bytes:
    return ("HTTP/1.1 200 OK\r\n" + "".join(h + "\r\n" for h in headers) + "\r\n").encode() + body


async def test_chunked_and_gzip_answers_are_decoded():
    packed = gzip.compress(b'{"id": "batch_1"}')
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (packed[:7], packed[7:])) + b"0\r\n\r\n"
    server = _RawServer(
        [
            _answer(chunked, "Transfer-Encoding: chunked", "Content-Encoding: gzip"),
            _answer(b'{"id": "batch_2"}', "Content-Length: 17"),
        ]
    )
    async with server as pool:
        first = await pool.get("/v1/batches/batch_1")
        second = await pool.get("/v1/batches/batch_2")
    assert (first.status, first.body, second.body) == (200, b'{"id": "batch_1"}', b'{"id": "batch_2"}')
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /v1/batches/batch_1 HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_a_keep_alive_connection_the_server_dropped_is_replaced():
    server = _RawServer([_answer(b"{}", "Content-Length: 2"), None, _answer(b"[]", "Content-Length: 2")])
    async with server as pool:
        assert (await pool.get("/a")).body == b"{}"
        assert (await pool.get("/b")).body == b"[]"  # the idle one was closed: sent again on a new one
    assert server.connections == 2 and pool.opened == 2


async def test_an_answer_cut_short_raises_and_the_connection_is_not_reused():
    server = _RawServer([_answer(b'{"id": "ba', "Content-Length: 17"), None])
    async with server as pool:
        with pytest.raises(OSError):  # IncompleteReadError is an EOFError; reported as a reset
            await pool.get("/a")
        assert not pool._idle


async def test_connection_close_is_honoured():
    server = _RawServer([_answer(b"{}", "Content-Length: 2", "Connection: close")])
    async with server as pool:
        await pool.get("/a")
        assert not pool._idle
