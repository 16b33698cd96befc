"""Build batch request lines from records (dicts or rows) and a request template.

Pure: no Airflow, no HTTP. Re-exported by :mod:`airflow_batch_provider.batch_file`.

Placeholders are ``{field}`` (or ``{field.sub}`` for nested mappings) inside template
strings; ``{{field}}`` writes a literal ``{field}``. Any other brace is left alone, so a
prompt may contain JSON examples. A missing field raises :class:`BatchFileError` naming
the record index, the field and where the template uses it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from airflow_batch_provider.batch_file.lines import RequestLine
from airflow_batch_provider.exceptions import BatchFileError

__all__ = ["ChatTemplate", "EmbeddingTemplate", "ImageTemplate", "ResponsesTemplate", "build_request_lines"]

_PLACEHOLDER = re.compile(r"\{\{([A-Za-z_][\w.]*)\}\}|\{([A-Za-z_][\w.]*)\}")
_MISSING = object()


def _lookup(record: Mapping[str, Any], name: str) -> Any:
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _field(record: Mapping[str, Any], name: str, index: int, where: str) -> Any:
    value = _lookup(record, name)
    if value is _MISSING or value is None:
        state = "missing" if value is _MISSING else "null"
        keys = ", ".join(map(str, list(record)[:20])) or "no fields"
        raise BatchFileError(
            f"record {index}: field {name!r} is {state} (the template uses it in {where}); "
            f"the record has: {keys}. Add the field or fix the template"
        )
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (Mapping, list, tuple)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _fill(value: Any, record: Mapping[str, Any], index: int, where: str) -> Any:
    """Fill placeholders in every string of ``value`` (recursively in lists and dicts)."""
    if isinstance(value, str):

        def replace(match: re.Match[str]) -> str:
            if match.group(1) is not None:
                return "{" + match.group(1) + "}"
            return _as_text(_field(record, match.group(2), index, where))

        return _PLACEHOLDER.sub(replace, value)
    if isinstance(value, list):
        return [_fill(item, record, index, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        return {key: _fill(item, record, index, f"{where}.{key}") for key, item in value.items()}
    return value


def _placeholders(value: Any) -> set[str]:
    if isinstance(value, str):
        return {m.group(2) for m in _PLACEHOLDER.finditer(value) if m.group(2)}
    if isinstance(value, list):
        return set().union(*map(_placeholders, value)) if value else set()
    if isinstance(value, dict):
        return set().union(*map(_placeholders, value.values())) if value else set()
    return set()


def _check_body(model: str, body: Mapping[str, Any], reserved: set[str]) -> None:
    if not isinstance(model, str) or not model:
        raise ValueError("model must be a non-empty string")
    clash = reserved.intersection(body)
    if clash:
        raise ValueError(f"body must not set {sorted(clash)}: use the template's own arguments")


@dataclass(frozen=True)
class ChatTemplate:
    """A ``/v1/chat/completions`` request.

    :param model: the model (one per batch).
    :param messages: chat messages; placeholders are filled in every string (content
        parts included).
    :param body: other fixed parameters (``temperature``, ``response_format``, ...),
        copied as they are.
    """

    model: str
    messages: list[dict[str, Any]]
    body: dict[str, Any] = field(default_factory=dict)
    endpoint: ClassVar[str] = "/v1/chat/completions"

    def __post_init__(self) -> None:
        _check_body(self.model, self.body, {"model", "messages"})
        if not self.messages or not all(isinstance(m, dict) and m.get("role") for m in self.messages):
            raise ValueError("messages must be a non-empty list of {'role': ..., 'content': ...} dicts")

    @classmethod
    def from_prompt(cls, model: str, prompt: str, *, system: str | None = None, **body: Any) -> ChatTemplate:
        """A user prompt (and optional system message) as a template."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}
        ]
        return cls(model, messages, body)

    @property
    def fields(self) -> set[str]:
        return _placeholders(self.messages)

    def render(self, record: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
        return {"model": self.model, "messages": _fill(self.messages, record, index, "messages"), **self.body}


@dataclass(frozen=True)
class EmbeddingTemplate:
    """A ``/v1/embeddings`` request whose ``input`` is the record's ``input_field``
    (a string, a list of strings or a list of token ids), taken as it is."""

    model: str
    input_field: str
    dimensions: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    endpoint: ClassVar[str] = "/v1/embeddings"

    def __post_init__(self) -> None:
        _check_body(self.model, self.body, {"model", "input", "dimensions"})
        if not self.input_field:
            raise ValueError("input_field must name a record field")

    @property
    def fields(self) -> set[str]:
        return {self.input_field}

    def render(self, record: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
        value = _field(record, self.input_field, index, "input")
        if isinstance(value, tuple):
            value = list(value)
        if not (isinstance(value, str) or isinstance(value, list)) or not value:
            raise BatchFileError(
                f"record {index}: field {self.input_field!r} is {_as_text(value)[:40]!r}: an embeddings "
                "input must be a non-empty string or list"
            )
        body: dict[str, Any] = {"model": self.model, "input": value}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        return {**body, **self.body}


@dataclass(frozen=True)
class ResponsesTemplate:
    """A ``/v1/responses`` request; placeholders are filled in ``input`` (a string or a
    list of input items) and ``instructions``."""

    model: str
    input: str | list[Any]
    instructions: str | None = None
    body: dict[str, Any] = field(default_factory=dict)
    endpoint: ClassVar[str] = "/v1/responses"

    def __post_init__(self) -> None:
        _check_body(self.model, self.body, {"model", "input", "instructions"})
        if not self.input:
            raise ValueError("input must be a non-empty string or list")

    @property
    def fields(self) -> set[str]:
        return _placeholders([self.input, self.instructions])

    def render(self, record: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "input": _fill(self.input, record, index, "input")}
        if self.instructions is not None:
            body["instructions"] = _fill(self.instructions, record, index, "instructions")
        return {**body, **self.body}


@dataclass(frozen=True)
class ImageTemplate:
    """A ``/v1/images/generations`` request; placeholders are filled in ``prompt``.

    :param model: the image model (one per batch), e.g. ``gpt-image-1`` or ``dall-e-3``.
    :param prompt: the image description.
    :param body: other fixed parameters (``size``, ``quality``, ``n``, ``output_format``, ...).
    """

    model: str
    prompt: str
    body: dict[str, Any] = field(default_factory=dict)
    endpoint: ClassVar[str] = "/v1/images/generations"

    def __post_init__(self) -> None:
        _check_body(self.model, self.body, {"model", "prompt"})
        if not isinstance(self.prompt, str) or not self.prompt:
            raise ValueError("prompt must be a non-empty string")

    @property
    def fields(self) -> set[str]:
        return _placeholders(self.prompt)

    def render(self, record: Mapping[str, Any], index: int = 0) -> dict[str, Any]:
        return {"model": self.model, "prompt": _fill(self.prompt, record, index, "prompt"), **self.body}


# No template for /v1/completions (legacy: ChatTemplate or ResponsesTemplate replace it),
# /v1/moderations (its input is the record as it is: build the body directly), image edits
# (each line names its own input images by url or file id: build the body directly) and
# /v1/videos (the openai SDK marks it deprecated: the Videos API shut down on 2026-09-24).
Template = ChatTemplate | EmbeddingTemplate | ResponsesTemplate | ImageTemplate


def _as_mapping(record: Any, columns: Sequence[str] | None, index: int) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    if hasattr(record, "_asdict"):  # namedtuple
        return dict(record._asdict())
    if hasattr(record, "keys"):  # sqlite3.Row, SQLAlchemy RowMapping
        return {key: record[key] for key in record.keys()}
    if isinstance(record, Sequence) and not isinstance(record, (str, bytes)):
        if columns is None:
            raise BatchFileError(f"record {index} is a row: pass columns=[...] to name its fields")
        if len(record) != len(columns):
            raise BatchFileError(
                f"record {index} has {len(record)} values for {len(columns)} columns {list(columns)}"
            )
        return dict(zip(columns, record, strict=True))
    raise BatchFileError(
        f"record {index} is a {type(record).__name__}: use a dict or a row with columns=[...]"
    )


def _content_id(url: str, body: Mapping[str, Any]) -> str:
    canonical = json.dumps(
        [url, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str
    )
    return "req-" + hashlib.sha256(canonical.encode()).hexdigest()[:16]


def build_request_lines(
    records: Iterable[Any],
    template: Template,
    custom_id_field: str | None = None,
    *,
    columns: Sequence[str] | None = None,
) -> Iterator[bytes]:
    """Render each record into a request line (compact JSON ending in ``b"\\n"``).

    custom_id is the record's ``custom_id_field`` (a string or an integer) or, without
    one, ``req-`` + 16 hex of the sha256 of the request (url and body); identical
    requests get ``-2``, ``-3``... in record order. Either way the same records give the
    same ids.

    :param records: dicts (any mapping), namedtuples, ``sqlite3.Row``-like rows, or
        sequences named by ``columns``.
    :param template: a :class:`ChatTemplate`, :class:`EmbeddingTemplate`, :class:`ResponsesTemplate`
        or :class:`ImageTemplate`.
    :param custom_id_field: the field holding each record's unique id.
    :param columns: field names of sequence rows.
    :raises BatchFileError: naming the record index for a missing field, a bad id or a
        duplicate id.
    """
    seen: dict[str, int] = {}
    for index, record in enumerate(records):
        mapping = _as_mapping(record, columns, index)
        body = template.render(mapping, index)
        if custom_id_field is not None:
            value = _field(mapping, custom_id_field, index, "custom_id_field")
            if isinstance(value, bool) or not isinstance(value, (str, int)) or value == "":
                raise BatchFileError(
                    f"record {index}: custom_id field {custom_id_field!r} is {value!r}: "
                    "use a non-empty string or integer"
                )
            custom_id = str(value)
            if custom_id in seen:
                raise BatchFileError(
                    f"record {index}: custom_id {custom_id!r} repeats record {seen[custom_id]}: "
                    "ids must be unique"
                )
        else:
            base = custom_id = _content_id(template.endpoint, body)
            suffix = 1
            while custom_id in seen:
                suffix += 1
                custom_id = f"{base}-{suffix}"
        seen[custom_id] = index
        try:
            line = RequestLine(custom_id=custom_id, url=template.endpoint, body=body).to_json_bytes()
        except (ValueError, TypeError) as error:  # pydantic ValidationError, NaN, unserializable value
            raise BatchFileError(f"record {index}: cannot build a request line: {error}") from error
        yield line
