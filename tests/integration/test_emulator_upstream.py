"""The ``upstream`` backend: requests forwarded to an OpenAI-compatible server, bounded concurrency."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from airflow_batch_provider.emulator.server import bind_socket
from airflow_batch_provider.emulator.testing import running_emulator
from tests.integration.emulator_support import chat_lines, request_line, run_batch


class FakeUpstream:
    """A small OpenAI-compatible chat server that records what it receives."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.max_in_flight = 0
        self.models: list[str] = []
        self.auth: set[str] = set()
        self.flaky_calls = 0
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    async def chat(self, request: Request) -> JSONResponse:
        body: dict[str, Any] = await request.json()
        self.models.append(body["model"])
        self.auth.add(request.headers.get("authorization", ""))
        text = body["messages"][-1]["content"]
        if text == "bad":
            return JSONResponse(
                {"error": {"message": "no", "type": "invalid_request_error", "param": None, "code": None}},
                status_code=400,
            )
        if text == "flaky":
            self.flaky_calls += 1
            if self.flaky_calls == 1:
                return JSONResponse({"error": {"message": "busy", "type": "server_error"}}, status_code=503)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(0.05)
        self.in_flight -= 1
        return JSONResponse(
            {
                "id": "chatcmpl-up",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text.upper()},
                        "finish_reason": "stop",
                        "logprobs": None,
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )


@contextmanager
def serving(app: Any) -> Iterator[str]:
    sock = bind_socket("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the upstream server did not start"
        threading.Event().wait(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_upstream_forwards_with_bounded_concurrency(monkeypatch):
    upstream = FakeUpstream()
    monkeypatch.setenv("EMULATOR_UPSTREAM_API_KEY", "sk-upstream")
    with (
        serving(upstream.app) as upstream_url,
        running_emulator(
            backend="upstream", upstream_url=upstream_url, upstream_concurrency=3, upstream_model="llama3"
        ) as emulator,
    ):
        client = emulator.client()
        lines = chat_lines(20)
        lines.append(
            request_line("bad", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "bad"}]})
        )
        lines.append(
            request_line(
                "flaky", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "flaky"}]}
            )
        )
        batch, output, errors = run_batch(client, lines)
    assert batch.status == "completed"
    assert (batch.request_counts.completed, batch.request_counts.failed) == (21, 1)
    assert 2 <= upstream.max_in_flight <= 3
    assert set(upstream.models) == {"llama3"}
    assert upstream.auth == {"Bearer sk-upstream"}
    assert upstream.flaky_calls == 2  # a transient upstream error is retried
    answers = {
        line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"] for line in output
    }
    assert answers["q-7"] == "QUESTION 7" and answers["flaky"] == "FLAKY"
    assert errors[0]["custom_id"] == "bad" and errors[0]["response"]["status_code"] == 400
    assert batch.usage.input_tokens == 21 * 3 and batch.usage.output_tokens == 21 * 2


def test_another_emulator_as_upstream():
    with (
        running_emulator() as model_server,
        running_emulator(
            backend="upstream", upstream_url=model_server.base_url, upstream_api_key=model_server.api_key
        ) as emulator,
    ):
        batch, output, errors = run_batch(emulator.client(), chat_lines(5))
    assert batch.status == "completed" and errors == []
    assert sorted(line["response"]["body"]["choices"][0]["message"]["content"] for line in output) == [
        f"echo: question {i}" for i in range(5)
    ]


def test_unreachable_upstream_reports_failed_requests():
    with running_emulator(backend="upstream", upstream_url="http://127.0.0.1:9/v1") as emulator:
        batch, output, errors = run_batch(emulator.client(), chat_lines(2))
    assert batch.status == "completed" and output == []
    assert [e["response"]["status_code"] for e in errors] == [502, 502]
    assert errors[0]["response"]["body"]["error"]["type"] == "server_error"
