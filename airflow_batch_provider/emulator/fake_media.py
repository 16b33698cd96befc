"""The fake model's image and video endpoints, in the shapes of OpenAI's OpenAPI spec.

- ``/v1/images/generations`` and ``/v1/images/edits`` answer an ``ImagesResponse``:
  ``created``, ``data`` (one ``Image`` per ``n``), and for the GPT image models
  ``b64_json`` images, ``background``, ``output_format``, ``quality``, ``size`` and a
  token ``usage`` (``input_tokens_details.{text_tokens, image_tokens}``,
  ``output_tokens_details``); ``dall-e-2``/``dall-e-3`` answer ``url`` images (or
  ``b64_json`` with ``response_format``), no usage, and ``revised_prompt`` for dall-e-3.
- ``/v1/videos`` answers a ``Video`` job (``object: "video"``), ``completed`` at 100%.

The image is one fixed 1x1 PNG and the url is derived from the prompt, so the same
request gives the same content. The failure directives of :mod:`.fake_model`
(``[[emulator:server_error]]``, ``[[emulator:context_length_exceeded]]``) work in prompts.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

from airflow_batch_provider.emulator import ids

#: A 1x1 transparent PNG: what every fake image holds.
PIXEL_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
#: Output tokens of one GPT image by quality (1024x1024, as OpenAI's image pricing counts them).
IMAGE_OUTPUT_TOKENS = {"low": 272, "medium": 1056, "high": 4160}
#: Input tokens the fake model bills for one input image of an edit.
IMAGE_INPUT_TOKENS = 194
_IMAGE_SIZES = ("auto", "256x256", "512x512", "1024x1024", "1536x1024", "1024x1536", "1792x1024", "1024x1792")


def _gpt_image(model: str) -> bool:
    return model.startswith(("gpt-image", "chatgpt-image"))


def _prompt(body: dict[str, Any], fail: Callable[[str, str, str], Exception]) -> str:
    """The request's ``prompt``, which image and video requests require."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise fail("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    return prompt


def _images(
    body: dict[str, Any],
    default_model: str,
    input_images: int,
    fail: Callable[[str, str, str], Exception],
    check: Callable[[str, int], None],
    count_tokens: Callable[[str], int],
) -> tuple[dict[str, Any], int, int]:
    """The ``ImagesResponse`` body and its ``(input, output)`` tokens."""
    prompt = _prompt(body, fail)
    model = body.get("model") or default_model
    n = body.get("n", 1)
    if n is None:
        n = 1
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10:
        raise fail("Invalid value for 'n': expected an integer from 1 to 10.", "n", "invalid_value")
    size = body.get("size") or "auto"
    if size not in _IMAGE_SIZES:
        raise fail(f"Invalid value for 'size': {size!r}.", "size", "invalid_value")
    text_tokens = count_tokens(prompt)
    check(prompt, text_tokens)
    digest = hashlib.sha256(f"{model}\n{prompt}".encode()).hexdigest()[:24]
    created = int(time.time())
    result: dict[str, Any] = {"created": created}
    if _gpt_image(str(model)):
        quality = str(body.get("quality")) if body.get("quality") in IMAGE_OUTPUT_TOKENS else "medium"
        image_tokens = IMAGE_INPUT_TOKENS * input_images
        output = IMAGE_OUTPUT_TOKENS[quality] * n
        result["data"] = [{"b64_json": PIXEL_PNG_B64} for _ in range(n)]
        result.update(
            background=body.get("background")
            if body.get("background") in ("transparent", "opaque")
            else "opaque",
            output_format=body.get("output_format") or "png",
            quality=quality,
            size="1024x1024" if size == "auto" else size,
            usage={
                "input_tokens": text_tokens + image_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": image_tokens},
                "output_tokens": output,
                "output_tokens_details": {"image_tokens": output, "text_tokens": 0},
                "total_tokens": text_tokens + image_tokens + output,
            },
        )
        return result, text_tokens + image_tokens, output
    data: list[dict[str, Any]] = []
    for i in range(n):
        image: dict[str, Any] = (
            {"b64_json": PIXEL_PNG_B64}
            if body.get("response_format") == "b64_json"
            else {"url": f"https://images.emulator.invalid/{digest}-{i}.png"}
        )
        if model == "dall-e-3":
            image["revised_prompt"] = prompt
        data.append(image)
    result["data"] = data
    return result, 0, 0


def image_generation(
    body: dict[str, Any],
    fail: Callable[[str, str, str], Exception],
    check: Callable[[str, int], None],
    count_tokens: Callable[[str], int],
) -> tuple[dict[str, Any], int, int]:
    """``POST /v1/images/generations`` (``CreateImageRequest``; model default ``dall-e-2``)."""
    return _images(body, "dall-e-2", 0, fail, check, count_tokens)


def image_edit(
    body: dict[str, Any],
    fail: Callable[[str, str, str], Exception],
    check: Callable[[str, int], None],
    count_tokens: Callable[[str], int],
) -> tuple[dict[str, Any], int, int]:
    """``POST /v1/images/edits``, JSON form (``EditImageBodyJsonParam``: ``images`` + ``prompt``)."""
    images = body.get("images")
    if images is None:
        raise fail("Missing required parameter: 'images'.", "images", "missing_required_parameter")
    valid = isinstance(images, list) and 1 <= len(images) <= 16
    if not valid or not all(
        isinstance(r, dict) and len({"image_url", "file_id"} & r.keys()) == 1 for r in images
    ):
        raise fail(
            "Invalid value for 'images': expected 1 to 16 objects, each with exactly one of "
            "'image_url' or 'file_id'.",
            "images",
            "invalid_value",
        )
    return _images(body, "gpt-image-1.5", len(images), fail, check, count_tokens)


VIDEO_SECONDS = ("4", "8", "12")
VIDEO_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024")


def video(
    body: dict[str, Any],
    fail: Callable[[str, str, str], Exception],
    check: Callable[[str, int], None],
    count_tokens: Callable[[str], int],
) -> tuple[dict[str, Any], int, int]:
    """``POST /v1/videos`` (``CreateVideoJsonBody``; model default ``sora-2``): a finished ``Video``."""
    prompt = _prompt(body, fail)
    seconds = body.get("seconds") or "4"
    if seconds not in VIDEO_SECONDS:
        raise fail(
            f"Invalid value for 'seconds': {seconds!r}. Supported values are: '4', '8', '12'.",
            "seconds",
            "invalid_value",
        )
    size = body.get("size") or "720x1280"
    if size not in VIDEO_SIZES:
        raise fail(f"Invalid value for 'size': {size!r}.", "size", "invalid_value")
    check(prompt, count_tokens(prompt))
    created = int(time.time())
    result = {
        "id": ids.prefixed("video_"),
        "object": "video",
        "model": body.get("model") or "sora-2",
        "status": "completed",
        "progress": 100,
        "created_at": created,
        "completed_at": created,
        "expires_at": created + 24 * 3600,
        "prompt": prompt,
        "size": size,
        "seconds": seconds,
        "remixed_from_video_id": None,
        "error": None,
    }
    return result, 0, 0
