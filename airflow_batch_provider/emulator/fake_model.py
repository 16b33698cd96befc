"""The deterministic built-in model behind the ``fake`` backend.

Answers are derived from the request (an echo of the last user text), token
usage is counted from the text, and the same request always gets the same
content. Bodies have the shape of the real endpoints' responses, so the SDK's
``ChatCompletion``, ``Completion``, ``Response``, ``CreateEmbeddingResponse``,
``ModerationCreateResponse``, ``ImagesResponse`` and ``Video`` parse them (images and
videos: :mod:`.fake_media`).

Directives in a request's text (messages, input, prompt: every endpoint) trigger failures
on purpose: ``[[emulator:context_length_exceeded]]`` (400) and ``[[emulator:server_error]]`` (500).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Any

from airflow_batch_provider.emulator import fake_media, ids
from airflow_batch_provider.emulator.errors import error_body
from airflow_batch_provider.emulator.fake_vectors import embedding_response, moderation_response
from airflow_batch_provider.emulator.structured import sample_json

_TOKEN_RE = re.compile(r"\w+|[^\w\s]")
_CONTEXT_LIMIT = 128_000


@dataclass
class Outcome:
    """The result of executing one request.

    :param status_code: HTTP status the endpoint answered.
    :param body: the response body (an OpenAI error body when not 2xx).
    :param input_tokens: prompt tokens billed.
    :param output_tokens: completion tokens billed.
    """

    status_code: int
    body: dict[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0


class RequestError(Exception):
    """A request the model rejects; becomes a non-2xx ``Outcome``.

    :param status: HTTP status.
    :param message: what is wrong.
    :param param: the parameter at fault.
    :param code: machine-readable code.
    :param type: OpenAI error type.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        param: str | None = None,
        code: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.outcome = Outcome(status, error_body(message, type=type, param=param, code=code))


def count_tokens(text: str) -> int:
    """Approximate token count: words and punctuation marks.

    :param text: any text.
    """
    return len(_TOKEN_RE.findall(text))


def _missing(param: str) -> RequestError:
    return RequestError(
        f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter"
    )


def _text_of(content: Any) -> str:
    """The text of a message ``content``: a string or a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(part.get("text", "")) for part in content if isinstance(part, dict) and "text" in part
        )
    return ""


def _check_directives(text: str, prompt_tokens: int, param: str = "messages") -> None:
    if "[[emulator:server_error]]" in text:
        raise RequestError(
            "The server had an error while processing your request. Sorry about that!",
            status=500,
            type="server_error",
        )
    if "[[emulator:context_length_exceeded]]" in text or prompt_tokens > _CONTEXT_LIMIT:
        raise RequestError(
            f"This model's maximum context length is {_CONTEXT_LIMIT} tokens. However, your messages "
            f"resulted in {max(prompt_tokens, _CONTEXT_LIMIT + 1)} tokens. Please reduce the length "
            "of the messages.",
            param=param,
            code="context_length_exceeded",
        )


def _answer(text: str, limit: Any, response_format: Any = None) -> tuple[str, str]:
    """The reply to ``text`` and its finish reason, honouring a token limit and a response format."""
    if isinstance(response_format, dict):
        kind = response_format.get("type")
        if kind == "json_object":
            return json.dumps({"echo": text}), "stop"
        if kind == "json_schema":
            schema = (response_format.get("json_schema") or response_format).get("schema") or {}
            return json.dumps(sample_json(schema, text)), "stop"
    reply = f"echo: {text}"
    if isinstance(limit, int) and limit > 0:
        tokens = _TOKEN_RE.findall(reply)
        if len(tokens) > limit:
            return " ".join(tokens[:limit]), "length"
    return reply, "stop"


def _positive_int(body: dict[str, Any], key: str, default: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise RequestError(
            f"Invalid value for '{key}': expected an integer >= 1.", param=key, code="invalid_value"
        )
    return value


def chat_completion(body: dict[str, Any]) -> Outcome:
    """``POST /v1/chat/completions``.

    :param body: the request body.
    """
    model = body.get("model")
    if not model:
        raise _missing("model")
    messages = body.get("messages")
    if not messages:
        raise _missing("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise RequestError(
            "Invalid type for 'messages': expected an array of objects with 'role' and 'content'.",
            param="messages",
            code="invalid_type",
        )
    texts = [_text_of(m.get("content")) for m in messages]
    prompt_tokens = sum(count_tokens(t) + 4 for t in texts) + 3
    _check_directives(" ".join(texts), prompt_tokens)
    user_texts = [t for m, t in zip(messages, texts, strict=True) if m.get("role") == "user"]
    question = user_texts[-1] if user_texts else texts[-1]
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    reply, finish = _answer(question, limit, body.get("response_format"))
    n = _positive_int(body, "n", 1)
    completion_tokens = count_tokens(reply) * n
    choice: dict[str, Any] = {
        "message": {"role": "assistant", "content": reply, "refusal": None, "annotations": []},
        "logprobs": None,
        "finish_reason": finish,
    }
    response = {
        "id": ids.prefixed("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, **choice} for i in range(n)],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": 0,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }
    return Outcome(200, response, prompt_tokens, completion_tokens)


def completion(body: dict[str, Any]) -> Outcome:
    """``POST /v1/completions`` (legacy text completions).

    :param body: the request body.
    """
    model = body.get("model")
    if not model:
        raise _missing("model")
    prompt = body.get("prompt")
    if prompt is None or prompt == "":
        raise _missing("prompt")
    prompts = prompt if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt) else [prompt]
    prompts = [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompts]
    prompt_tokens = sum(count_tokens(p) for p in prompts)
    _check_directives(" ".join(prompts), prompt_tokens)
    n = _positive_int(body, "n", 1)
    choices: list[dict[str, Any]] = []
    completion_tokens = 0
    for p in prompts:
        reply, finish = _answer(p, body.get("max_tokens", 16))
        completion_tokens += count_tokens(reply) * n
        for _ in range(n):
            choices.append({"text": reply, "index": len(choices), "logprobs": None, "finish_reason": finish})
    response = {
        "id": ids.prefixed("cmpl-"),
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "system_fingerprint": "fp_emulator",
    }
    return Outcome(200, response, prompt_tokens, completion_tokens)


def _responses_input_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    texts = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict) and item.get("role", "user") == "user":
            texts.append(_text_of(item.get("content")))
    return texts


def response(body: dict[str, Any]) -> Outcome:
    """``POST /v1/responses``.

    :param body: the request body.
    """
    model = body.get("model")
    if not model:
        raise _missing("model")
    if body.get("input") in (None, "", []):
        raise _missing("input")
    texts = _responses_input_texts(body["input"])
    instructions = body.get("instructions") if isinstance(body.get("instructions"), str) else ""
    input_tokens = sum(count_tokens(t) for t in texts) + count_tokens(instructions or "")
    _check_directives(" ".join(texts), input_tokens)
    text_format = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    reply, finish = _answer(texts[-1] if texts else "", body.get("max_output_tokens"), text_format)
    output_tokens = count_tokens(reply)
    created = int(time.time())
    result = {
        "id": ids.prefixed("resp_"),
        "object": "response",
        "created_at": created,
        "completed_at": created,
        "status": "completed" if finish == "stop" else "incomplete",
        "error": None,
        "incomplete_details": None if finish == "stop" else {"reason": "max_output_tokens"},
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": model,
        "output": [
            {
                "type": "message",
                "id": ids.prefixed("msg_"),
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": reply, "annotations": [], "logprobs": []}],
            }
        ],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": text_format or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools", []),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }
    return Outcome(200, result, input_tokens, output_tokens)


def embedding(body: dict[str, Any]) -> Outcome:
    """``POST /v1/embeddings``.

    :param body: the request body.
    """
    if not body.get("model"):
        raise _missing("model")
    _check_directives(_input_text(body.get("input")), 0, "input")
    try:
        result, tokens = embedding_response(body, count_tokens)
    except ValueError as exc:
        param, _, message = str(exc).partition(": ")
        raise RequestError(message, param=param, code="invalid_value") from None
    return Outcome(200, result, tokens, 0)


def moderation(body: dict[str, Any]) -> Outcome:
    """``POST /v1/moderations``.

    :param body: the request body.
    """
    if body.get("input") in (None, "", []):
        raise _missing("input")
    _check_directives(_input_text(body["input"]), 0, "input")
    return Outcome(200, moderation_response(body), 0, 0)


def _input_text(value: Any) -> str:
    """The text of an embeddings or moderations ``input`` (directives are looked for in it)."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return " ".join(
            v if isinstance(v, str) else _text_of([v]) for v in value if isinstance(v, (str, dict))
        )
    return ""


def _fail(message: str, param: str, code: str) -> RequestError:
    return RequestError(message, param=param, code=code)


def _media(handler: Any) -> Any:
    """An image or video handler of :mod:`.fake_media` as a fake-model endpoint."""

    def run(body: dict[str, Any]) -> Outcome:
        def check(text: str, tokens: int) -> None:
            _check_directives(text, tokens, "prompt")

        result, input_tokens, output_tokens = handler(body, _fail, check, count_tokens)
        return Outcome(200, result, input_tokens, output_tokens)

    run.__doc__ = handler.__doc__
    return run


HANDLERS = {
    "/v1/chat/completions": chat_completion,
    "/v1/completions": completion,
    "/v1/responses": response,
    "/v1/embeddings": embedding,
    "/v1/moderations": moderation,
    "/v1/images/generations": _media(fake_media.image_generation),
    "/v1/images/edits": _media(fake_media.image_edit),
    "/v1/videos": _media(fake_media.video),
}


def execute(url: str, body: Any) -> Outcome:
    """Execute one request with the fake model; a rejected request gives an error ``Outcome``.

    :param url: the endpoint, e.g. ``/v1/chat/completions``.
    :param body: the request body.
    """
    handler = HANDLERS.get(url)
    if handler is None:
        return Outcome(404, error_body(f"Invalid URL (POST {url})", code="unknown_url"))
    if not isinstance(body, dict):
        return Outcome(400, error_body("The request body must be a JSON object.", code="invalid_type"))
    try:
        return handler(body)
    except RequestError as exc:
        return exc.outcome
