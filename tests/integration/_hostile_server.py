"""A hostile Batch API server for trust-boundary tests: the emulator behind a rewriting proxy.

Real HTTP on 127.0.0.1: every request goes on to the emulator unchanged, and a test
rewrites chosen answers on their way back (a batch id of ``../../x``, a file size
smaller than the body, a list page with a bad item), as a compromised or buggy
OpenAI-compatible server would send them. Everything else is the emulator's real work.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

_HOP_BY_HOP = {"connection", "content-length", "content-encoding", "transfer-encoding", "keep-alive"}


@dataclass
class _Rule:
    method: str
    path: re.Pattern[str]
    rewrite: Callable[[Any], Any]
    json: bool
    hits: int = 0


@dataclass
class HostileServer:
    """Forwards to ``upstream`` (the emulator's base URL, ``.../v1``); answers rewritten by rules."""

    upstream: str
    rules: list[_Rule] = field(default_factory=list)
    base_url: str = ""

    def rewrite_json(self, method: str, path: str, rewrite: Callable[[Any], Any]) -> _Rule:
        """Pass the JSON answer of ``method`` on paths matching ``path`` (a regex, whole path
        without the query) through ``rewrite``, which returns the body to send instead."""
        rule = _Rule(method, re.compile(path), rewrite, json=True)
        self.rules.append(rule)
        return rule

    def rewrite_bytes(self, method: str, path: str, rewrite: Callable[[bytes], bytes]) -> _Rule:
        """Same for a raw body (a file's content)."""
        rule = _Rule(method, re.compile(path), rewrite, json=False)
        self.rules.append(rule)
        return rule

    def _answer(self, method: str, path: str, status: int, body: bytes) -> bytes:
        for rule in self.rules:
            if rule.method == method and rule.path.fullmatch(path.split("?", 1)[0]) and status < 300:
                rule.hits += 1
                if rule.json:
                    body = json.dumps(rule.rewrite(json.loads(body))).encode()
                else:
                    body = rule.rewrite(body)
        return body


@contextmanager
def hostile_server(upstream: str) -> Iterator[HostileServer]:
    """Run a :class:`HostileServer` in a thread; ``base_url`` is its ``/v1`` base."""
    target = urlsplit(upstream)
    server_state = HostileServer(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            payload = self.rfile.read(length) if length else None
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "accept-encoding", "connection")
            }
            upstream_conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
            try:
                upstream_conn.request(self.command, self.path, body=payload, headers=headers)
                response = upstream_conn.getresponse()
                body = response.read()
                status, reason, answer_headers = response.status, response.reason, response.getheaders()
            finally:
                upstream_conn.close()
            body = server_state._answer(self.command, self.path, status, body)
            self.send_response(status, reason)
            for key, value in answer_headers:
                if key.lower() not in _HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_DELETE = _forward  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, name="hostile-server", daemon=True)
    thread.start()
    server_state.base_url = f"http://127.0.0.1:{httpd.server_address[1]}{target.path}"
    try:
        yield server_state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
