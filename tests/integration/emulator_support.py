"""Helpers for the emulator's integration tests (real HTTP, real ``openai`` SDK)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import openai
from openai.types import Batch, FileObject

TERMINAL = ("completed", "failed", "expired", "cancelled")


def request_line(custom_id: str, body: dict[str, Any], url: str = "/v1/chat/completions") -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def chat_lines(n: int, *, prefix: str = "q", model: str = "gpt-4o-mini") -> list[dict[str, Any]]:
    return [
        request_line(
            f"{prefix}-{i}", {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}
        )
        for i in range(n)
    ]


def jsonl(lines: list[Any]) -> bytes:
    return b"".join(
        (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n" for line in lines
    )


def upload(client: openai.OpenAI, lines: list[Any], name: str = "input.jsonl") -> FileObject:
    return client.files.create(file=(name, jsonl(lines)), purpose="batch")


def start_batch(
    client: openai.OpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions", **kwargs: Any
) -> Batch:
    uploaded = upload(client, lines)
    return client.batches.create(
        input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h", **kwargs
    )  # type: ignore[arg-type]


def wait_batch(
    client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 60.0
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status} after {timeout} s"
        time.sleep(0.02)


async def await_batch(
    client: openai.AsyncOpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 60.0
) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = await client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status} after {timeout} s"
        await asyncio.sleep(0.02)


def read_results(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def run_batch(client: openai.OpenAI, lines: list[Any], endpoint: str = "/v1/chat/completions", **kwargs: Any):
    """Upload, create, wait; return (batch, output lines, error lines)."""
    batch = wait_batch(client, start_batch(client, lines, endpoint, **kwargs).id)
    return batch, read_results(client, batch.output_file_id), read_results(client, batch.error_file_id)
