"""What each batch endpoint's request ``body`` must hold, checked before upload.

Pure: no Airflow, no HTTP. The rules are the ``required`` lists of the endpoints' request
schemas in OpenAI's OpenAPI spec (openai/openai-openapi ``openapi.yaml``), for the JSON
form of each request, since a batch line is JSON:

- ``/v1/chat/completions``: ``model``, ``messages`` (a non-empty array of messages);
- ``/v1/embeddings``: ``model``, ``input`` (not an empty string or array);
- ``/v1/completions``: ``model``, ``prompt``;
- ``/v1/responses``: ``input`` (or a ``prompt`` template reference); ``model`` too, as
  the provider always required it (a batch runs one model);
- ``/v1/moderations``: ``input`` (``model`` defaults to ``omni-moderation-latest``);
- ``/v1/images/generations``: ``prompt`` (``model`` defaults to ``dall-e-2``);
- ``/v1/images/edits``: ``images`` (1 to 16 ``{"image_url"}`` or ``{"file_id"}``
  references) and ``prompt``: the JSON body ``EditImageBodyJsonParam``; the multipart
  form's ``image`` file field cannot travel in a JSON line;
- ``/v1/videos``: ``prompt``; ``seconds``, when set, one of ``"4"``, ``"8"``, ``"12"``
  (a string) and ``size`` one of the four sizes (``CreateVideoJsonBody``).

Each check returns ``None`` or ``(code, fields)`` for one of the validator's problem
messages (``missing_parameter`` / ``invalid_parameter``): a line gets its first problem only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

__all__ = ["BODY_CHECKS", "DEFAULT_MODELS", "MODEL_REQUIRED", "check_body"]

#: Endpoints whose body must name ``model`` (the others have a documented default).
MODEL_REQUIRED: frozenset[str] = frozenset(
    {"/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses"}
)
#: The model the API uses when a body names none (the spec's ``default``).
DEFAULT_MODELS: dict[str, str] = {
    "/v1/moderations": "omni-moderation-latest",
    "/v1/images/generations": "dall-e-2",
    "/v1/images/edits": "gpt-image-1.5",
    "/v1/videos": "sora-2",
}
VIDEO_SECONDS = ("4", "8", "12")
VIDEO_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")

Fault = tuple[str, dict[str, str]] | None


def _missing(param: str, endpoint: str, fix: str) -> Fault:
    return "missing_parameter", {"param": param, "endpoint": endpoint, "fix": fix}


def _quote(value: Any, limit: int = 60) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except RecursionError:
        return "a deeply nested value"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _invalid(param: str, value: Any, fix: str) -> Fault:
    return "invalid_parameter", {"param": param, "value": _quote(value), "fix": fix}


def _text(body: dict[str, Any], param: str, endpoint: str, what: str) -> Fault:
    """A required non-empty string."""
    value = body.get(param)
    if type(value) is str and value:
        return None
    if value is None:
        return _missing(param, endpoint, f"add {what} as a non-empty string")
    return _invalid(param, value, f"write {what} as a non-empty string")


def _chat(body: dict[str, Any]) -> Fault:
    messages = body.get("messages")
    fix = 'a non-empty list like [{"role": "user", "content": "..."}]'
    if messages is None:
        return _missing("messages", "/v1/chat/completions", f"add {fix}")
    if type(messages) is not list or not messages:
        return _invalid("messages", messages, f"use {fix}")
    for message in messages:
        if type(message) is not dict or "role" not in message:
            return _invalid("messages", message, 'every message is an object with "role" and "content"')
    return None


def _input(endpoint: str, what: str) -> Callable[[dict[str, Any]], Fault]:
    def check(body: dict[str, Any]) -> Fault:
        value = body.get("input")
        if value is None:
            return _missing("input", endpoint, f"add {what}")
        if value == "" or value == [] or type(value) not in (str, list):
            return _invalid("input", value, f"use {what}")
        return None

    return check


def _responses(body: dict[str, Any]) -> Fault:
    if body.get("input") is None and body.get("prompt") is None:
        return _missing("input", "/v1/responses", 'add the text or input items to answer ("input": "...")')
    return None


def _completions(body: dict[str, Any]) -> Fault:
    if body.get("prompt") is None:
        return _missing("prompt", "/v1/completions", "add the text to complete (a string or list of strings)")
    return None


def _image_generation(body: dict[str, Any]) -> Fault:
    return _text(body, "prompt", "/v1/images/generations", "the image description")


def _image_edit(body: dict[str, Any]) -> Fault:
    images = body.get("images")
    refs = '[{"image_url": "https://..." or "data:image/png;base64,..."} or {"file_id": "file-..."}]'
    if images is None:
        if "image" in body:
            return _invalid(
                "image",
                body["image"],
                f'"image" is the multipart upload field; a batch line is JSON: use "images": {refs}',
            )
        return _missing("images", "/v1/images/edits", f'add "images": {refs}')
    if type(images) is not list or not 1 <= len(images) <= 16:
        return _invalid("images", images, f"use a list of 1 to 16 references, {refs}")
    for ref in images:
        if type(ref) is not dict or len({"image_url", "file_id"} & ref.keys()) != 1:
            return _invalid("images", ref, 'each reference holds exactly one of "image_url" or "file_id"')
    return _text(body, "prompt", "/v1/images/edits", "the edit to make")


def _video(body: dict[str, Any]) -> Fault:
    fault = _text(body, "prompt", "/v1/videos", "the video description")
    if fault is not None:
        return fault
    seconds = body.get("seconds")
    if seconds is not None and seconds not in VIDEO_SECONDS:
        return _invalid("seconds", seconds, 'use one of the strings "4", "8" or "12"')
    size = body.get("size")
    if size is not None and size not in VIDEO_SIZES:
        return _invalid("size", size, f"use one of {', '.join(VIDEO_SIZES)}")
    return None


#: Canonical endpoint -> its body check.
BODY_CHECKS: dict[str, Callable[[dict[str, Any]], Fault]] = {
    "/v1/chat/completions": _chat,
    "/v1/embeddings": _input("/v1/embeddings", "the text(s) to embed: a string, a list of strings or tokens"),
    "/v1/completions": _completions,
    "/v1/responses": _responses,
    "/v1/moderations": _input("/v1/moderations", "the text(s) to classify: a string or a list"),
    "/v1/images/generations": _image_generation,
    "/v1/images/edits": _image_edit,
    "/v1/videos": _video,
}


def check_body(endpoint: str, body: dict[str, Any]) -> Fault:
    """The first problem of ``body`` for the canonical ``endpoint`` (``None``: none found)."""
    check = BODY_CHECKS.get(endpoint)
    return None if check is None else check(body)
