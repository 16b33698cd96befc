"""Service-side validation of a batch input file, as the real service does it while ``validating``.

An independent implementation (it does not use the provider's own ``batch_file``
module): the emulator plays the service, so it must catch what the client missed.
Each problem becomes an ``errors.data`` entry ``{code, message, param, line}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_batch_provider.emulator.config import Limits

BATCH_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
#: Endpoints whose requests may omit ``model``: the API applies a documented default.
_MODEL_OPTIONAL = frozenset({"/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos"})
#: Azure OpenAI's spelling of each endpoint (``/chat/completions``), accepted on its ``/openai`` routes.
UNVERSIONED_ENDPOINTS = {e.removeprefix("/v1"): e for e in BATCH_ENDPOINTS}
_REQUIRED = ("custom_id", "method", "url", "body")


def canonical_endpoint(endpoint: str) -> str:
    """The ``/v1`` form of an endpoint in either spelling (unknown ones unchanged).

    :param endpoint: e.g. ``/chat/completions`` or ``/v1/chat/completions``.
    """
    return UNVERSIONED_ENDPOINTS.get(endpoint, endpoint)


@dataclass
class ValidationResult:
    """What validating one input file found.

    :param errors: reported problems (at most ``Limits.max_reported_errors``).
    :param error_count: every problem found, reported or not.
    :param request_count: request lines.
    :param byte_count: file size.
    :param model: the one model of the file (None if none was valid).
    :param embedding_inputs: total embedding inputs (``/v1/embeddings``).
    """

    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0
    request_count: int = 0
    byte_count: int = 0
    model: str | None = None
    embedding_inputs: int = 0

    @property
    def ok(self) -> bool:
        """True when the batch may run."""
        return self.error_count == 0


def count_embedding_inputs(value: Any) -> int:
    """How many embedding inputs one ``input`` value holds.

    A string or a token array is one input; a list of strings or token arrays is one each.

    :param value: the request body's ``input``.
    """
    if isinstance(value, list) and value and not all(isinstance(v, int) for v in value):
        return len(value)
    return 1


class InputValidator:
    """Validate request lines one at a time, keeping only what the checks need.

    :param endpoint: the batch's endpoint as created; every line's ``url`` must equal this
        string (Azure OpenAI too compares the spelling).
    :param limits: the service limits.
    """

    def __init__(self, endpoint: str, limits: Limits) -> None:
        self.endpoint = endpoint
        self.canonical = canonical_endpoint(endpoint)  # what the per-endpoint rules look at
        self.limits = limits
        self.result = ValidationResult()
        self._first_line: dict[str, int] = {}
        self._model_line = 0

    def _error(self, code: str, message: str, *, line: int | None, param: str | None = None) -> None:
        self.result.error_count += 1
        if len(self.result.errors) < self.limits.max_reported_errors:
            self.result.errors.append({"code": code, "message": message, "param": param, "line": line})

    def add_line(self, number: int, raw: bytes) -> None:
        """Check one physical line of the file.

        :param number: 1-based line number.
        :param raw: the line's bytes.
        """
        if not raw.strip():
            return  # blank lines (e.g. a trailing newline) carry no request
        self.result.request_count += 1
        try:
            line = json.loads(raw)
        except ValueError:
            self._error("invalid_json_line", "This line is not parseable as valid JSON.", line=number)
            return
        if not isinstance(line, dict):
            self._error("invalid_type", "This line must be a JSON object, a request.", line=number)
            return
        missing = [key for key in _REQUIRED if key not in line or line[key] in (None, "")]
        for key in missing:
            self._error(
                "missing_required_parameter",
                f"Missing required parameter '{key}'. Each line needs custom_id, method, url and body.",
                line=number,
                param=key,
            )
        self._check_custom_id(number, line.get("custom_id"))
        method = line.get("method")
        if "method" not in missing and method != "POST":
            self._error(
                "invalid_method",
                f"Invalid method {method!r}: batch requests use 'POST'.",
                line=number,
                param="method",
            )
        url = line.get("url")
        if "url" not in missing and url != self.endpoint:
            self._error(
                "mismatched_url",
                f"The url {url!r} does not match the batch endpoint {self.endpoint!r}. "
                "Every line of a batch must target the batch's endpoint.",
                line=number,
                param="url",
            )
        if "body" not in missing:
            self._check_body(number, line["body"])

    def _check_custom_id(self, number: int, custom_id: Any) -> None:
        if custom_id in (None, ""):
            return
        if not isinstance(custom_id, str):
            self._error("invalid_type", "custom_id must be a string.", line=number, param="custom_id")
            return
        first = self._first_line.get(custom_id)
        if first is not None:
            self._error(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is already used on line {first}; "
                "each request needs a unique custom_id.",
                line=number,
                param="custom_id",
            )
        elif len(self._first_line) <= self.limits.max_requests:  # bound memory on oversized files
            self._first_line[custom_id] = number

    def _check_body(self, number: int, body: Any) -> None:
        if not isinstance(body, dict):
            self._error("invalid_type", "body must be a JSON object.", line=number, param="body")
            return
        model = body.get("model")
        if model is None and self.canonical in _MODEL_OPTIONAL:
            pass  # e.g. moderations default to omni-moderation-latest, videos to sora-2
        elif not isinstance(model, str) or not model:
            self._error(
                "missing_required_parameter",
                "Missing required parameter 'body.model'.",
                line=number,
                param="body.model",
            )
        elif self.result.model is None:
            self.result.model, self._model_line = model, number
        elif model != self.result.model:
            self._error(
                "mismatched_model",
                f"The model {model!r} differs from {self.result.model!r} used on line {self._model_line}; "
                "a batch may use only one model.",
                line=number,
                param="body.model",
            )
        if self.canonical == "/v1/embeddings" and "input" in body:
            self.result.embedding_inputs += count_embedding_inputs(body["input"])

    def finish(self, byte_count: int) -> ValidationResult:
        """Apply the whole-file checks and return the result.

        :param byte_count: the file's size.
        """
        result, limits = self.result, self.limits
        result.byte_count = byte_count
        if result.request_count == 0:
            self._error("empty_file", "The input file contains no requests.", line=None)
        if result.request_count > limits.max_requests:
            self._error(
                "too_many_requests",
                f"The input file has {result.request_count} requests; a batch allows at most "
                f"{limits.max_requests}. Split it into several batches.",
                line=None,
            )
        if self.canonical == "/v1/embeddings" and result.embedding_inputs > limits.max_embedding_inputs:
            self._error(
                "too_many_embedding_inputs",
                f"The input file has {result.embedding_inputs} embedding inputs; an embeddings batch "
                f"allows at most {limits.max_embedding_inputs}. Split it into several batches.",
                line=None,
            )
        return result


def validate_lines(lines: Iterable[bytes], endpoint: str, limits: Limits) -> ValidationResult:
    """Validate the lines of an input file.

    :param lines: the file's lines, as bytes.
    :param endpoint: the batch's endpoint.
    :param limits: the service limits.
    """
    validator = InputValidator(endpoint, limits)
    size = 0
    for number, raw in enumerate(lines, start=1):
        size += len(raw)
        validator.add_line(number, raw)
    return validator.finish(size)


def validate_file(path: Path, endpoint: str, limits: Limits) -> ValidationResult:
    """Validate an input file on disk, streaming it.

    An oversized file is rejected from its size alone, without reading it.

    :param path: the input file.
    :param endpoint: the batch's endpoint.
    :param limits: the service limits.
    """
    size = path.stat().st_size
    if size > limits.max_batch_bytes:
        return ValidationResult(
            errors=[
                {
                    "code": "file_too_large",
                    "message": f"The input file is {size} bytes; a batch input may be at most "
                    f"{limits.max_batch_bytes} bytes. Split it into several batches.",
                    "param": None,
                    "line": None,
                }
            ],
            error_count=1,
            byte_count=size,
        )
    with path.open("rb") as fh:
        return validate_lines(fh, endpoint, limits)
