"""Builders of batch input, output and error lines for the results tests."""

from __future__ import annotations

import json
from typing import Any


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode() + b"\n"


def request(custom_id: str, content: str = "hi", model: str = "gpt-4o-mini") -> bytes:
    return dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content}]},
        }
    )


def chat_body(
    text: str = "ok",
    model: str = "gpt-4o-mini-2024-07-18",
    prompt: int = 10,
    completion: int = 5,
    cached: int = 0,
    reasoning: int = 0,
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        },
    }


def ok(custom_id: str, body: dict[str, Any] | None = None, status_code: int = 200) -> bytes:
    return dumps(
        {
            "id": f"batch_req_{custom_id}",
            "custom_id": custom_id,
            "response": {
                "status_code": status_code,
                "request_id": f"req_{custom_id}",
                "body": body if body is not None else chat_body(),
            },
            "error": None,
        }
    )


def http_error(
    custom_id: str,
    status_code: int,
    code: str | None,
    etype: str = "invalid_request_error",
    message: str = "rejected",
) -> bytes:
    return ok(
        custom_id, {"error": {"message": message, "type": etype, "param": None, "code": code}}, status_code
    )


def error(custom_id: str, code: str | None, message: str = "not run") -> bytes:
    return dumps(
        {
            "id": f"batch_req_{custom_id}",
            "custom_id": custom_id,
            "response": None,
            "error": {"code": code, "message": message},
        }
    )


def expired(custom_id: str) -> bytes:
    return error(
        custom_id, "batch_expired", "This request could not be executed before the completion window expired."
    )


def cancelled(custom_id: str) -> bytes:
    return error(custom_id, "batch_cancelled", "This request was cancelled.")


def parse_jsonl(data: bytes) -> list[dict[str, Any]]:
    return [json.loads(line) for line in data.splitlines() if line.strip()]
