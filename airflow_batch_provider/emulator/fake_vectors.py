"""Deterministic embeddings and moderations for the fake model.

Embeddings are unit vectors derived from a hash of model and input; a shorter
``dimensions`` is a prefix of the model's full vector, re-normalized, as with the
real ``text-embedding-3`` models.
"""

from __future__ import annotations

import base64
import hashlib
import math
import secrets
import struct
import zlib
from array import array
from collections.abc import Callable
from typing import Any

DEFAULT_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}
FIXED_DIMENSIONS = {"text-embedding-ada-002"}  # reject ``dimensions`` like the real model
MAX_INPUTS_PER_REQUEST = 2048

MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
_TRIGGERS = {
    "violence": ("kill", "murder", "attack", "[[emulator:flag]]"),
    "hate": ("hate",),
    "harassment": ("idiot", "stupid"),
    "self-harm": ("suicide",),
    "illicit": ("steal", "smuggle"),
}


def unit_vector(model: str, text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector for ``text``.

    :param model: model name (different models give different vectors).
    :param text: the input.
    :param dimensions: vector length.
    """
    full = DEFAULT_DIMENSIONS.get(model, max(dimensions, 1536))
    raw = array("h")
    raw.frombytes(hashlib.shake_256(f"{model}\0{text}".encode()).digest(full * 2)[: dimensions * 2])
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [round(v / norm, 8) for v in raw]


def _inputs(value: Any) -> list[tuple[str, int | None]]:
    """The inputs of a request as (text, token count if given as tokens)."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif isinstance(value, list) and value and all(isinstance(v, int) for v in value):
        items = [value]
    elif isinstance(value, list) and value:
        items = value
    else:
        raise ValueError("input: 'input' must be a non-empty string or array.")
    if len(items) > MAX_INPUTS_PER_REQUEST:
        raise ValueError(f"input: at most {MAX_INPUTS_PER_REQUEST} inputs per request, got {len(items)}.")
    out: list[tuple[str, int | None]] = []
    for item in items:
        if isinstance(item, str) and item:
            out.append((item, None))
        elif isinstance(item, list) and item and all(isinstance(v, int) for v in item):
            out.append((" ".join(map(str, item)), len(item)))
        else:
            raise ValueError("input: each input must be a non-empty string or an array of token ids.")
    return out


def embedding_response(
    body: dict[str, Any], count_tokens: Callable[[str], int]
) -> tuple[dict[str, Any], int]:
    """Build a ``CreateEmbeddingResponse`` body.

    :param body: the request body (``model``, ``input``, ``dimensions``, ``encoding_format``).
    :param count_tokens: token counter for text inputs.
    :return: the body and its prompt tokens.
    :raises ValueError: ``"param: message"`` for an invalid request.
    """
    model = str(body["model"])
    default = DEFAULT_DIMENSIONS.get(model, 1536)
    dimensions = body.get("dimensions")
    if dimensions is None:
        dimensions = default
    elif model in FIXED_DIMENSIONS:
        raise ValueError(f"dimensions: This model ({model}) does not support specifying dimensions.")
    elif not isinstance(dimensions, int) or isinstance(dimensions, bool) or not 1 <= dimensions <= default:
        raise ValueError(f"dimensions: 'dimensions' must be an integer from 1 to {default} for {model}.")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise ValueError("encoding_format: 'encoding_format' must be 'float' or 'base64'.")
    data, tokens = [], 0
    for index, (text, token_count) in enumerate(_inputs(body.get("input"))):
        tokens += token_count if token_count is not None else count_tokens(text)
        vector: Any = unit_vector(model, text, dimensions)
        if encoding == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    result = {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return result, tokens


def _moderation_texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, list):  # multimodal parts: one result for all of them
        return [" ".join(str(p.get("text", "")) for p in value if isinstance(p, dict))]
    return [str(value)]


def _moderation_result(text: str) -> dict[str, Any]:
    lowered = text.lower()
    flagged_roots = {root for root, words in _TRIGGERS.items() if any(w in lowered for w in words)}
    categories, scores = {}, {}
    for name in MODERATION_CATEGORIES:
        hit = name.split("/")[0] in flagged_roots and "/" not in name
        categories[name] = hit
        jitter = (zlib.crc32(f"{name}\0{text}".encode()) % 1000) / 100_000
        scores[name] = round(0.9 + jitter if hit else jitter, 6)
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": {name: ["text"] for name in MODERATION_CATEGORIES},
    }


def moderation_response(body: dict[str, Any]) -> dict[str, Any]:
    """Build a ``ModerationCreateResponse`` body; texts with trigger words are flagged.

    :param body: the request body (``input``, optional ``model``).
    """
    return {
        "id": "modr-" + secrets.token_hex(12),
        "model": body.get("model") or "omni-moderation-latest",
        "results": [_moderation_result(t) for t in _moderation_texts(body["input"])],
    }
