"""A minimal JSON instance of a JSON Schema, for structured-output requests to the fake model."""

from __future__ import annotations

import zlib
from typing import Any


def sample_json(schema: dict[str, Any], text: str) -> Any:
    """Return a value that validates against ``schema``, chosen deterministically from ``text``.

    Enums pick a value from a hash of the text, so a classification batch gets
    varied but repeatable labels; strings echo the text.

    :param schema: a JSON Schema (objects, arrays, enums, ``$ref`` to ``$defs``, ``anyOf``).
    :param text: the request's text.
    """
    return _sample(schema, schema, text, 0)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    for part in ref.lstrip("#/").split("/"):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _sample(schema: Any, root: dict[str, Any], text: str, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 16:
        return None
    if "$ref" in schema:
        return _sample(_resolve(schema["$ref"], root), root, text, depth + 1)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        options = schema["enum"]
        return options[zlib.crc32(text.encode()) % len(options)]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return _sample(schema[key][0], root, text, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {name: _sample(sub, root, text, depth + 1) for name, sub in props.items()}
    if kind == "array":
        count = max(1, int(schema.get("minItems", 1)))
        return [_sample(schema.get("items", {}), root, text, depth + 1) for _ in range(count)]
    if kind == "string":
        return text
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return False
    return None
