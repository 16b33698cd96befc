"""Batch input files: the request-line model, a streaming validator and sharding.

Pure: no Airflow, no HTTP. Every function takes lines as ``bytes`` (normally from
:func:`iter_lines`) so a 200 MB file is read once, line by line, and memory does not
grow with its size: :func:`validate_file` stops buffering a line past
:data:`MAX_LINE_BYTES` (``line_too_long``), and the custom_ids kept to find duplicates
move to a temporary on-disk index (stdlib ``sqlite3``, as the results join does) past
:data:`MAX_IDS_IN_MEMORY` ids.

Rules the validator applies; each problem has a stable ``code`` (message templates in
:data:`PROBLEM_MESSAGES`):

- ``invalid_utf8``: the line is not UTF-8.
- ``invalid_json_line``: not JSON, NaN/Infinity (rejected although ``json.loads``
  accepts them), data after the object, or nested too deeply to parse.
- ``line_too_long``: longer than :data:`MAX_LINE_BYTES` (or the batch byte limit, if
  lower); the line is counted and hashed but never parsed nor kept whole in memory.
- ``blank_line``: an empty or whitespace-only line. A file may end with one newline;
  a blank line anywhere else (the end included) is an error, because the service
  parses every line as a request.
- ``not_an_object``: JSON, but not an object.
- ``missing_custom_id``, ``empty_custom_id``, ``invalid_custom_id`` (not a string).
- ``duplicate_custom_id``: the message names both lines.
- ``invalid_method``: ``method`` is not ``"POST"``.
- ``invalid_url``: ``url`` is not in :data:`BATCH_ENDPOINTS` (nor, with
  ``allow_unversioned_urls``, in :data:`UNVERSIONED_ENDPOINTS`, Azure OpenAI's spelling);
  ``url_mismatch``: its endpoint differs from the declared one or, without one, from the
  first line's, or it spells the same endpoint another way (one batch, one url string).
- ``missing_body``, ``invalid_body`` (not an object).
- ``missing_model`` (absent, null or empty; only for the endpoints that require a model,
  :data:`~airflow_batch_provider.batch_file.bodies.MODEL_REQUIRED`), ``invalid_model`` (not a
  string), ``model_mismatch`` (a second model in the file).
- ``missing_parameter``, ``invalid_parameter``: the body lacks what its endpoint requires
  (chat ``messages``, embeddings/moderations/responses ``input``, completions ``prompt``,
  images ``prompt``, image edits ``images``, videos ``prompt``...): the rules of
  :mod:`airflow_batch_provider.batch_file.bodies`, one problem per line at most.
- File level (``line`` is ``None``): ``empty_file``, ``too_many_requests``,
  ``file_too_large``, ``too_many_embedding_inputs`` (a string input counts one, a
  list its items, a list of token ids one).

Unknown top-level keys are allowed (the service's behaviour is not documented).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from airflow_batch_provider.batch_file.bodies import BODY_CHECKS, DEFAULT_MODELS, MODEL_REQUIRED
from airflow_batch_provider.exceptions import BatchFileError

__all__ = [
    "BATCH_ENDPOINTS",
    "EMBEDDINGS_ENDPOINT",
    "MAX_BYTES",
    "MAX_EMBEDDING_INPUTS",
    "MAX_IDS_IN_MEMORY",
    "MAX_LINE_BYTES",
    "MAX_REQUESTS",
    "Problem",
    "RequestLine",
    "ShardInfo",
    "ShardLimits",
    "PROBLEM_MESSAGES",
    "UNVERSIONED_ENDPOINTS",
    "ValidationReport",
    "count_embedding_inputs",
    "iter_lines",
    "iter_shard_lines",
    "normalize_endpoint",
    "plan_shards",
    "plural",
    "validate_file",
    "validate_lines",
]

#: Endpoints a batch may target (the ``openai`` SDK's ``BatchCreateParams.endpoint``).
BATCH_ENDPOINTS: frozenset[str] = frozenset(
    {
        "/v1/responses",
        "/v1/chat/completions",
        "/v1/embeddings",
        "/v1/completions",
        "/v1/moderations",
        "/v1/images/generations",
        "/v1/images/edits",
        "/v1/videos",
    }
)
EMBEDDINGS_ENDPOINT = "/v1/embeddings"
#: Azure OpenAI's unversioned spelling of each batch endpoint (``/chat/completions``), mapped
#: to the canonical one. Azure's docs and batch objects use it; OpenAI rejects it.
UNVERSIONED_ENDPOINTS: dict[str, str] = {e.removeprefix("/v1"): e for e in sorted(BATCH_ENDPOINTS)}
# Line url -> canonical endpoint, without and with the unversioned spelling.
_URLS: dict[str, str] = {e: e for e in BATCH_ENDPOINTS}
_URLS_UNVERSIONED: dict[str, str] = {**_URLS, **UNVERSIONED_ENDPOINTS}
_EMBEDDINGS_URLS = (EMBEDDINGS_ENDPOINT, EMBEDDINGS_ENDPOINT.removeprefix("/v1"))
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1024 * 1024
MAX_EMBEDDING_INPUTS = 50_000
#: Longest request line the validator parses. Larger lines are reported (``line_too_long``)
#: without being held in memory: parsing one costs about twice its size. OpenAI documents
#: at most 50 MB of images per request; send larger inputs as file ids or URLs.
MAX_LINE_BYTES = 48 * 1024 * 1024
#: custom_ids the duplicate check keeps in memory before moving them to a temporary file.
MAX_IDS_IN_MEMORY = 100_000

_ENDPOINT_LIST = ", ".join(sorted(BATCH_ENDPOINTS))


def normalize_endpoint(endpoint: str) -> str:
    """Return the canonical form of ``endpoint`` (``chat/completions`` -> ``/v1/chat/completions``).

    :raises ValueError: if it is not a batch endpoint.
    """
    path = "/" + endpoint.strip().strip("/")
    if not path.startswith("/v1/"):
        path = "/v1" + path
    if path not in BATCH_ENDPOINTS:
        raise ValueError(f"{endpoint!r} is not a batch endpoint; use one of {_ENDPOINT_LIST}")
    return path


def _invalid_url(url: Any, allow_unversioned_urls: bool) -> dict[str, str]:
    """The ``reason`` and ``fix`` of an ``invalid_url`` problem (the hint names the Azure case)."""
    canonical = UNVERSIONED_ENDPOINTS.get(url) if type(url) is str else None
    if canonical is not None and not allow_unversioned_urls:
        return {
            "reason": "Azure OpenAI's unversioned spelling",
            "fix": f'use "{canonical}" (or validate for Azure OpenAI: an Azure connection, '
            "allow_unversioned_urls=True, airflow-batch validate --azure)",
        }
    also = " (or the same without /v1, as Azure OpenAI spells them)" if allow_unversioned_urls else ""
    return {"reason": "not a batch endpoint", "fix": f"use one of {_ENDPOINT_LIST}{also}"}


def count_embedding_inputs(value: Any) -> int:
    """Inputs in an embeddings ``body.input``: a string is one, a list of token ids is one,
    any other list counts its items."""
    if isinstance(value, list):
        if value and type(value[0]) is int:
            return 1
        return len(value)
    return 1


class RequestLine(BaseModel):
    """One line of a batch input file (the validator applies the same rules, faster)."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)

    custom_id: str = Field(min_length=1, description="Unique within the file; joins results to requests.")
    method: Literal["POST"] = "POST"
    url: str = Field(
        description="One of BATCH_ENDPOINTS (or, validated with the context "
        '``{"allow_unversioned_urls": True}``, UNVERSIONED_ENDPOINTS), the same on every line.'
    )
    body: dict[str, Any] = Field(description="The endpoint's parameters, `model` included.")

    @field_validator("url")
    @classmethod
    def _known_endpoint(cls, value: str, info: ValidationInfo) -> str:
        allow = bool((info.context or {}).get("allow_unversioned_urls"))
        if value not in (_URLS_UNVERSIONED if allow else _URLS):
            problem = _invalid_url(value, allow)
            raise ValueError(f"url {value!r} is {problem['reason']}: {problem['fix']}")
        return value

    @model_validator(mode="after")
    def _valid_body(self) -> RequestLine:
        model = self.body.get("model")
        required = model is not None or self.endpoint in MODEL_REQUIRED
        if required and (not isinstance(model, str) or not model):
            raise ValueError('body needs a non-empty string "model"')
        fault = BODY_CHECKS[self.endpoint](self.body)
        if fault is not None:
            raise ValueError(PROBLEM_MESSAGES[fault[0]].format(**fault[1]))
        return self

    @property
    def model(self) -> str:
        """The body's model, else the endpoint's documented default."""
        return str(self.body.get("model") or DEFAULT_MODELS[self.endpoint])

    @property
    def endpoint(self) -> str:
        """The canonical endpoint of ``url`` (``/chat/completions`` -> ``/v1/chat/completions``)."""
        return _URLS_UNVERSIONED[self.url]

    @classmethod
    def from_json_line(cls, raw: bytes | str, *, allow_unversioned_urls: bool = False) -> RequestLine:
        """Parse one line strictly (UTF-8, no NaN: ``model_validate_json`` would accept NaN).

        :param allow_unversioned_urls: accept Azure OpenAI's ``url`` spelling (``/chat/completions``).
        :raises ValueError: ``pydantic.ValidationError``, ``UnicodeDecodeError`` or a JSON error.
        """
        data = _DECODE(raw.decode() if isinstance(raw, bytes) else raw)
        return cls.model_validate(data, context={"allow_unversioned_urls": allow_unversioned_urls})

    def to_json_bytes(self) -> bytes:
        """The line as compact UTF-8 JSON ending in ``b"\\n"`` (NaN rejected)."""
        data = {"custom_id": self.custom_id, "method": self.method, "url": self.url, "body": self.body}
        data.update(self.model_extra or {})
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode() + b"\n"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a batch file; ``line`` is 1-based, ``None`` for the whole file."""

    line: int | None
    code: str
    message: str
    custom_id: str | None = None

    def format(self) -> str:
        where = "file" if self.line is None else f"line {self.line}"
        text = f"{where}: {self.message}"
        if self.custom_id is not None and "custom_id" not in self.code:
            text += f" (custom_id {_quote(self.custom_id)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ValidationReport:
    """What the validator found. ``problems`` keeps at most ``max_problems`` line problems
    plus every file-level one; ``problem_count`` is always the total. ``endpoint`` is the
    canonical endpoint (``/v1/chat/completions``), ``url`` the string the lines spell it
    with (``/chat/completions`` in an Azure OpenAI file): create the batch with ``url``."""

    source: str | None = None
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0
    request_count: int = 0
    byte_count: int = 0
    endpoint: str | None = None
    url: str | None = None
    model: str | None = None
    embedding_inputs: int = 0
    sha256: str = ""

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    @property
    def truncated(self) -> bool:
        return self.problem_count > len(self.problems)

    def summary(self) -> str:
        name = self.source or "<lines>"
        size = f"{plural(self.request_count, 'request')}, {plural(self.byte_count, 'byte')}"
        if self.ok:
            spelled = f" (spelled {self.url})" if self.url and self.url != self.endpoint else ""
            return f"{name}: valid: {size}, endpoint {self.endpoint}{spelled}, model {self.model}"
        shown = f" (showing {len(self.problems)})" if self.truncated else ""
        return f"{name}: invalid: {plural(self.problem_count, 'problem')}{shown} in {size}"

    def format(self) -> str:
        """Human-readable lines, then the summary. The same problem on several lines is one
        line of text (``lines 1-200: ...``); :meth:`to_dict` keeps one entry per problem."""
        return "\n".join([*_group(self.problems), self.summary()])

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(ok=self.ok, truncated=self.truncated)
        return data

    def raise_for_problems(self) -> None:
        """:raises BatchFileError: with the formatted report when the file is invalid."""
        if not self.ok:
            raise BatchFileError(self.format(), report=self)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 request``, ``2 requests``, ``1,000 bytes``; ``many``: the plural if not ``word + "s"``."""
    return f"{count:,} {word if count == 1 else many or word + 's'}"


def _ranges(lines: list[int], limit: int = 8) -> str:
    """``lines 1-200, 305`` (at most ``limit`` ranges, then a count)."""
    spans: list[list[int]] = []
    for n in lines:
        if spans and n <= spans[-1][1] + 1:
            spans[-1][1] = max(spans[-1][1], n)
        else:
            spans.append([n, n])
    text = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans[:limit])
    if len(spans) > limit:
        text += f", ... ({len(lines):,} lines in all)"
    return ("line " if len(lines) == 1 else "lines ") + text


def _group(problems: list[Problem]) -> list[str]:
    """One text line per distinct (code, message), naming every line it occurs on."""
    groups: dict[tuple[str, str], list[Problem]] = {}
    for problem in problems:
        if problem.line is not None:
            groups.setdefault((problem.code, problem.message), []).append(problem)
    out: list[str] = []
    for (code, message), members in groups.items():
        if len(members) == 1:
            out.append(members[0].format())
            continue
        text = f"{_ranges(sorted({p.line for p in members if p.line is not None}))}: {message}"
        ids = [p.custom_id for p in members if p.custom_id is not None]
        if ids and "custom_id" not in code:
            more = f" and {len(ids) - 1:,} more" if len(ids) > 1 else ""
            text += f" (custom_id {_quote(ids[0])}{more})"
        out.append(text)
    return out + [p.format() for p in problems if p.line is None]


@dataclass(frozen=True)
class ShardLimits:
    """Limits of one batch (defaults: the service's)."""

    max_requests: int = MAX_REQUESTS
    max_bytes: int = MAX_BYTES
    max_embedding_inputs: int = MAX_EMBEDDING_INPUTS

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ShardLimits.{name} must be a positive integer, got {value!r}")


@dataclass(frozen=True)
class ShardInfo:
    """A run of consecutive request lines that fits one batch.

    ``byte_count`` and ``sha256`` are those of the bytes :func:`iter_shard_lines` yields.
    """

    index: int
    start_line: int
    line_count: int
    byte_count: int
    embedding_inputs: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Readable(Protocol):
    def read(self, size: int = ..., /) -> bytes: ...


def iter_lines(fileobj: _Readable | IO[bytes], chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """Yield the lines of a binary file object, each with its ``b"\\n"`` (the last may lack it).

    Joining the lines gives back the file's bytes exactly. Reads ``chunk_size`` bytes at a
    time, so memory holds one chunk plus the longest line.
    """
    pending: list[bytes] = []  # pieces of a line that spans chunks
    while chunk := fileobj.read(chunk_size):
        if not isinstance(chunk, bytes):
            raise TypeError("iter_lines needs a file opened in binary mode ('rb')")
        if pending:
            newline = chunk.find(b"\n")
            if newline < 0:
                pending.append(chunk)
                continue
            pending.append(chunk[: newline + 1])
            yield b"".join(pending)
            pending.clear()
            chunk = chunk[newline + 1 :]
        parts = chunk.split(b"\n")
        last = parts.pop()
        for part in parts:
            yield part + b"\n"
        if last:
            pending.append(last)
    if pending:
        yield b"".join(pending)


class _Overlong:
    """A piece of a line longer than the cap: hashed and counted by the validator, never joined."""

    __slots__ = ("data", "last")

    def __init__(self, data: bytes | bytearray, last: bool) -> None:
        self.data, self.last = data, last


def _iter_capped_lines(
    fileobj: _Readable | IO[bytes], chunk_size: int, cap: int
) -> Iterator[bytes | bytearray | _Overlong]:
    """:func:`iter_lines`, except that a line spanning chunks is never buffered past ``cap``
    bytes: it comes as :class:`_Overlong` pieces (one chunk each) instead.

    A line spanning chunks is assembled in a ``bytearray`` (no join copy); the consumer may
    ``clear()`` it once read, so it is not kept alive while the next one is parsed.
    """
    buf: bytearray | None = None  # a line that spans chunks, while under the cap
    overlong = False  # discarding the rest of a line past the cap
    while chunk := fileobj.read(chunk_size):
        if not isinstance(chunk, bytes):
            raise TypeError("iter_lines needs a file opened in binary mode ('rb')")
        if buf is not None or overlong:
            newline = chunk.find(b"\n")
            end = len(chunk) if newline < 0 else newline + 1
            head, chunk = chunk[:end], chunk[end:]
            if not overlong and buf is not None and len(buf) + len(head) - (newline >= 0) > cap:
                yield _Overlong(buf, last=False)
                buf, overlong = None, True
            if overlong:
                yield _Overlong(head, last=newline >= 0)
                overlong = newline < 0
            else:
                assert buf is not None
                buf += head
                if newline >= 0:
                    yield buf
                    buf = None
            if newline < 0:
                continue
        parts = chunk.split(b"\n")
        last = parts.pop()
        for part in parts:
            yield part + b"\n"
        if last:
            buf = bytearray(last)
    if overlong:
        yield _Overlong(b"", last=True)
    elif buf is not None:
        yield buf


class _CustomIds:
    """custom_id -> first line, exact: in memory up to a bound, then in a temporary sqlite file.

    :meth:`add` returns the duplicates it can name now as ``(line, custom_id, first line)``;
    once ids live on disk, a repeat's first line is known only at the next :meth:`flush`.
    """

    def __init__(self, max_ids: int | None = None, max_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_ids = MAX_IDS_IN_MEMORY if max_ids is None else max_ids
        self.max_bytes = max_bytes
        self.first: dict[str, int] = {}  # ids since the last flush
        self.repeats: list[tuple[int, str]] = []  # repeats whose first line may be on disk
        self.size = 0
        self.db: sqlite3.Connection | None = None
        self.tmp: tempfile.TemporaryDirectory[str] | None = None

    def add(self, cid: str, line: int) -> list[tuple[int, str, int]]:
        first = self.first.setdefault(cid, line)
        self.size += len(cid) + 100  # the id and its dict entry, roughly
        found: list[tuple[int, str, int]] = []
        if first != line:
            if self.db is None:
                found.append((line, cid, first))
            else:
                self.repeats.append((line, cid))
        if len(self.first) + len(self.repeats) >= self.max_ids or self.size >= self.max_bytes:
            found += self.flush()
        return found

    def flush(self) -> list[tuple[int, str, int]]:
        """Move the ids in memory to disk; return the duplicates found against earlier ones."""
        if not self.first:
            return []
        if self.db is None:
            self.tmp = tempfile.TemporaryDirectory(prefix="batch-validate-")
            self.db = sqlite3.connect(os.path.join(self.tmp.name, "ids.sqlite"), isolation_level=None)
            for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8000", "temp_store=FILE"):
                self.db.execute(f"PRAGMA {pragma}")
            self.db.executescript(
                "CREATE TABLE ids(id BLOB PRIMARY KEY, line INT) WITHOUT ROWID;"
                "CREATE TABLE batch(id BLOB, line INT);"
            )
        db = self.db
        # Blobs: a custom_id may hold lone surrogates ("\\ud800"), which TEXT cannot bind.
        db.executemany(
            "INSERT INTO batch VALUES (?,?)",
            ((cid.encode("utf-8", "surrogatepass"), line) for cid, line in self.first.items()),
        )
        found = [
            (line, blob.decode("utf-8", "surrogatepass"), first)
            for line, blob, first in db.execute(
                "SELECT b.line, b.id, i.line FROM batch b JOIN ids i ON i.id = b.id"
            )
        ]
        db.execute("INSERT OR IGNORE INTO ids SELECT id, line FROM batch")
        db.execute("DELETE FROM batch")
        for line, cid in self.repeats:  # ids now holds every first line
            row = db.execute("SELECT line FROM ids WHERE id=?", (cid.encode("utf-8", "surrogatepass"),))
            found.append((line, cid, row.fetchone()[0]))
        self.first, self.repeats, self.size = {}, [], 0
        return found

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        if self.tmp is not None:
            self.tmp.cleanup()


class _NonFinite(ValueError):
    pass


def _reject_constant(name: str) -> float:
    raise _NonFinite(name)


# One decoder, reused: ``json.loads(s, parse_constant=...)`` would build a new one per call.
_DECODE = json.JSONDecoder(parse_constant=_reject_constant).decode


def _quote(value: object, limit: int = 80) -> str:
    """A value from a line as JSON, shortened; ``None`` (absent or null) as ``missing``."""
    if value is None:
        return "missing"
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except RecursionError:  # a value nested near the parser's own limit
        return f"a deeply nested {_kind(value)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(value), "number"
    )


def _json_problem(text: str, error: ValueError | RecursionError) -> str:
    if isinstance(error, RecursionError):
        return (
            "the JSON is nested too deeply to parse (thousands of levels of arrays or objects): "
            "a request line is a flat object with a body of a few levels"
        )
    if isinstance(error, _NonFinite):
        return (
            f"{error} is not valid JSON: write null or a number (json.dumps(..., allow_nan=False) catches it)"
        )
    if text.startswith("\ufeff"):
        return "the line starts with a byte order mark (BOM): save the file as UTF-8 without BOM"
    if isinstance(error, json.JSONDecodeError):
        # The text still ends in its newline, so an error at the end of the line would be
        # reported on "line 2, column 1": count columns within this line only.
        end = len(text.rstrip("\r\n"))
        column = min(error.pos, end) + 1
        truncated = error.pos >= end or error.msg.startswith("Unterminated string")
        if truncated and (error.msg.startswith("Unterminated string") or "control character" in error.msg):
            return (
                "unterminated string: the line ends inside a string (was it cut short?); "
                "close the string and the object, or escape newlines as \\n"
            )
        if truncated:
            return (
                f"the JSON object is not closed ({error.msg} at column {column}, the end of the line): "
                "was the line cut short? Close it: each line must be one complete JSON object"
            )
        if error.msg == "Extra data":
            return (
                f"unexpected data after the JSON object at column {column}: "
                "put exactly one JSON object on each line"
            )
        message = error.msg.removesuffix(" at")  # e.g. "Invalid control character at"
        return (
            f"not valid JSON ({message} at column {column}): each line must be one "
            "complete JSON object; check quotes, commas and escapes"
        )
    return f"not valid JSON ({error}): each line must be one complete JSON object"


#: Every problem code and its message template (``{...}`` filled per problem).
PROBLEM_MESSAGES: dict[str, str] = {
    "invalid_utf8": "byte 0x{byte:02x} at offset {offset} is not UTF-8: save the file as UTF-8",
    "invalid_json_line": "{detail}",
    "line_too_long": "the line is {size:,} bytes, more than the {limit:,}-byte limit for one request line: "
    "shorten it (send large inputs as file ids or URLs)",
    "blank_line": "blank line: remove it (every line must be a request)",
    "not_an_object": "the line is a JSON {kind}, not an object: write "
    '{{"custom_id": ..., "method": "POST", "url": ..., "body": {{...}}}}',
    "missing_custom_id": 'no "custom_id": add a unique string id to every line',
    "empty_custom_id": '"custom_id" is empty: use a non-empty unique string',
    "invalid_custom_id": '"custom_id" is {value}, not a string: quote it',
    "duplicate_custom_id": "duplicate custom_id {value} (first on line {first}): "
    "give every request its own custom_id",
    "invalid_method": 'method is {value}: use "POST"',
    "invalid_url": "url is {value}, {reason}: {fix}",
    "url_mismatch": "url {value} differs from {expected} ({origin}): one batch has one endpoint; "
    "use the same url on every line or split the file",
    "missing_body": 'no "body": add the endpoint\'s parameters as an object',
    "invalid_body": '"body" is a JSON {kind}: it must be an object',
    "missing_model": 'body has no "model": name the model on every line',
    "missing_parameter": 'body has no "{param}", which {endpoint} requires: {fix}',
    "invalid_parameter": 'body "{param}" is {value}: {fix}',
    "invalid_model": 'body "model" is {value}: it must be a string',
    "model_mismatch": "model {value} differs from {expected} (first on line {first}): "
    "a batch file holds one model; split it by model",
    "empty_file": "the file has no request: add at least one line",
    "too_many_requests": "{count:,} requests, more than {limit:,} per batch: "
    "split the file (plan_shards; the submit operator shards automatically)",
    "file_too_large": "{count:,} bytes, more than {limit:,} per batch: split the file (plan_shards)",
    "too_many_embedding_inputs": "{count:,} embedding inputs, more than {limit:,} per batch: "
    "split the file (plan_shards)",
}


def validate_lines(
    lines: Iterable[bytes],
    *,
    endpoint: str | None = None,
    source: str | None = None,
    limits: ShardLimits | None = None,
    max_problems: int | None = 100,
    allow_unversioned_urls: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ValidationReport:
    """Check a batch input stream against every rule of the module docstring.

    Items are lines as :func:`iter_lines` yields them; an item without a trailing newline
    counts (for ``byte_count`` and ``sha256``) as if one separated it from the next item.

    :param lines: the file's lines, as bytes.
    :param endpoint: the endpoint the batch will be created for, in either spelling; every
        ``url`` must name it.
    :param source: a name for the report (file path or URI).
    :param limits: per-batch limits (default: the service's); pass larger ones when the
        stream will be sharded with :func:`plan_shards`.
    :param max_problems: line problems kept in the report (``None``: all); the total is always counted.
    :param allow_unversioned_urls: also accept Azure OpenAI's spelling (``/chat/completions``,
        :data:`UNVERSIONED_ENDPOINTS`); every line must still use one identical url string.
    :param max_line_bytes: longest line parsed (the batch byte limit too, if lower); a longer one
        is ``line_too_long``.
    :raises ValueError: if ``endpoint`` is not a batch endpoint.
    """
    limits = limits or ShardLimits()
    if max_problems is not None and max_problems < 0:
        raise ValueError("max_problems must be >= 0 or None")
    urls = _URLS_UNVERSIONED if allow_unversioned_urls else _URLS
    # endpoint0: the canonical endpoint every line must name (declared, else the first
    # valid line's); url0: the exact string of the first line that named it.
    endpoint0 = normalize_endpoint(endpoint) if endpoint else None
    expected, origin = endpoint0, "the declared endpoint"
    url0: str | None = None
    url0_origin = ""
    kept: list[tuple[int, int, Problem]] = []  # (-line, -seq, problem): a max-heap when bounded
    seq = dropped = 0

    def add(line: int, code: str, custom_id: str | None = None, **fields: Any) -> None:
        # Duplicates found after a spill to disk arrive late: keep the first lines, not the first found.
        nonlocal seq, dropped
        seq += 1
        if max_problems is None:
            kept.append(
                (-line, -seq, Problem(line, code, PROBLEM_MESSAGES[code].format(**fields), custom_id))
            )
        elif len(kept) < max_problems:
            entry = (-line, -seq, Problem(line, code, PROBLEM_MESSAGES[code].format(**fields), custom_id))
            heapq.heappush(kept, entry)
        else:
            dropped += 1
            if kept and -line > kept[0][0]:
                entry = (-line, -seq, Problem(line, code, PROBLEM_MESSAGES[code].format(**fields), custom_id))
                heapq.heapreplace(kept, entry)

    def add_duplicates(found: list[tuple[int, str, int]]) -> None:
        for line, cid, first in found:
            add(line, "duplicate_custom_id", cid, value=_quote(cid), first=first)

    # Hot loop: one decode and one json parse per line, plain dict checks, locals only.
    digest = hashlib.sha256()
    update = digest.update
    ids = _CustomIds()
    decode = _DECODE
    body_checks, model_required = BODY_CHECKS, MODEL_REQUIRED
    cap = min(max_line_bytes, limits.max_bytes)
    model0: str | None = None
    model0_line = line_no = byte_count = requests = embedding_inputs = 0
    needs_newline = False
    empty_line = 0  # a b"" item: fine only as the very last one (a trailing newline)
    overlong = -1  # bytes so far of a line past the cap, while its pieces arrive
    try:
        for raw in lines:
            if type(raw) is _Overlong:
                if overlong < 0:  # its first piece: a new line
                    line_no += 1
                    overlong = 0
                    requests += 1
                    if needs_newline:
                        update(b"\n")
                        byte_count += 1
                        needs_newline = False
                    if empty_line:
                        add(empty_line, "blank_line")
                        empty_line = 0
                data = raw.data
                update(data)
                byte_count += len(data)
                overlong += len(data)
                if raw.last:
                    needs_newline = not data.endswith(b"\n")
                    size = overlong - (1 if data.endswith(b"\n") else 0)
                    add(line_no, "line_too_long", size=size, limit=cap)
                    overlong = -1
                continue
            line_no += 1
            if needs_newline:
                update(b"\n")
                byte_count += 1
            update(raw)
            size = len(raw)
            byte_count += size
            needs_newline = not raw.endswith(b"\n")
            if empty_line:
                add(empty_line, "blank_line")
                empty_line = 0
            if not raw:
                empty_line = line_no
                continue
            if size > cap and size - (not needs_newline) > cap:
                requests += 1
                add(line_no, "line_too_long", size=size - (not needs_newline), limit=cap)
                continue
            if raw.isspace():
                add(line_no, "blank_line")
                continue
            requests += 1
            try:
                text = raw.decode()
            except UnicodeDecodeError as error:
                add(line_no, "invalid_utf8", byte=raw[error.start], offset=error.start)
                continue
            if type(raw) is bytearray:  # a long line assembled for us: free it before parsing
                raw.clear()
            try:
                obj = decode(text)
            except (ValueError, RecursionError) as error:
                add(line_no, "invalid_json_line", detail=_json_problem(text, error))
                continue
            if type(obj) is not dict:
                add(line_no, "not_an_object", kind=_kind(obj))
                continue
            cid = obj.get("custom_id")
            if type(cid) is str and cid:
                if found := ids.add(cid, line_no):
                    add_duplicates(found)
            else:
                code = (
                    "missing_custom_id"
                    if cid is None
                    else "empty_custom_id"
                    if cid == ""
                    else "invalid_custom_id"
                )
                add(line_no, code, value=_quote(cid))
                cid = None
            method = obj.get("method")
            if method != "POST":
                add(line_no, "invalid_method", cid, value=_quote(method))
            url = obj.get("url")
            canonical = endpoint0
            if url != url0 or url is None:  # only a line unlike the first valid one costs more
                canonical = urls.get(url) if type(url) is str else None
                if canonical is None:
                    add(
                        line_no,
                        "invalid_url",
                        cid,
                        value=_quote(url),
                        **_invalid_url(url, allow_unversioned_urls),
                    )
                elif endpoint0 is not None and canonical != endpoint0:
                    add(line_no, "url_mismatch", cid, value=_quote(url), expected=expected, origin=origin)
                elif url0 is None:
                    url0, url0_origin, endpoint0 = url, f"line {line_no}", canonical
                    if expected is None:
                        expected, origin = url, url0_origin
                else:  # the same endpoint spelled another way: the service compares strings
                    add(line_no, "url_mismatch", cid, value=_quote(url), expected=url0, origin=url0_origin)
            body = obj.get("body")
            if type(body) is not dict:
                add(line_no, "missing_body" if body is None else "invalid_body", cid, kind=_kind(body))
                continue
            model = body.get("model")
            if model != model0 or model is None:
                if model is None or model == "":
                    if canonical is None or canonical in model_required:
                        add(line_no, "missing_model", cid)
                elif type(model) is not str:
                    add(line_no, "invalid_model", cid, value=_quote(model))
                elif model0 is None:
                    model0, model0_line = model, line_no
                else:
                    add(
                        line_no,
                        "model_mismatch",
                        cid,
                        value=_quote(model),
                        expected=_quote(model0),
                        first=model0_line,
                    )
            if canonical is not None and (fault := body_checks[canonical](body)) is not None:
                add(line_no, fault[0], cid, **fault[1])
            if canonical == EMBEDDINGS_ENDPOINT:
                embedding_inputs += count_embedding_inputs(body.get("input"))
        if ids.db is not None:  # ids went to disk: the last repeats are known only now
            add_duplicates(ids.flush())
        # A b"" item still pending here was the last one: a trailing newline, not a blank line.
    finally:
        ids.close()
    problems = [entry[2] for entry in sorted(kept, key=lambda e: (-e[0], -e[1]))]

    file_problems = [
        Problem(None, code, PROBLEM_MESSAGES[code].format(count=count, limit=limit))
        for code, count, limit in (
            ("empty_file", 1 - min(requests, 1), 0),
            ("too_many_requests", requests, limits.max_requests),
            ("file_too_large", byte_count, limits.max_bytes),
            ("too_many_embedding_inputs", embedding_inputs, limits.max_embedding_inputs),
        )
        if count > limit
    ]
    return ValidationReport(
        source=source,
        problems=problems + file_problems,
        problem_count=len(problems) + dropped + len(file_problems),
        request_count=requests,
        byte_count=byte_count,
        endpoint=endpoint0,
        url=url0,
        model=model0,
        embedding_inputs=embedding_inputs,
        sha256=digest.hexdigest(),
    )


def _open_binary(path: Any) -> IO[bytes]:
    if hasattr(path, "open"):  # pathlib.Path, ObjectStoragePath, UPath
        return path.open("rb")
    return open(os.fspath(path), "rb")


def validate_file(
    path: Any,
    *,
    endpoint: str | None = None,
    limits: ShardLimits | None = None,
    max_problems: int | None = 100,
    chunk_size: int = 1 << 20,
    allow_unversioned_urls: bool = False,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> ValidationReport:
    """Validate a file by streaming it; see :func:`validate_lines`.

    Memory stays flat whatever the file holds: a line longer than ``max_line_bytes`` (or
    the batch byte limit, if lower) is read on in chunks and reported, never held whole.

    :param path: a local path (str or ``os.PathLike``) or anything with ``.open("rb")``
        (``ObjectStoragePath``).
    :raises OSError: if the file cannot be read.
    """
    cap = min(max_line_bytes, (limits or ShardLimits()).max_bytes)
    with _open_binary(path) as fileobj:
        return validate_lines(
            _iter_capped_lines(fileobj, chunk_size, cap),  # type: ignore[arg-type]
            endpoint=endpoint,
            source=str(path),
            limits=limits,
            max_problems=max_problems,
            allow_unversioned_urls=allow_unversioned_urls,
            max_line_bytes=max_line_bytes,
        )


def _line_inputs(raw: bytes, line_no: int) -> int:
    if b"embeddings" not in raw:  # cheap filter: only embeddings lines need parsing
        return 0
    try:
        obj = json.loads(raw)
        if obj.get("url") not in _EMBEDDINGS_URLS:  # validated lines: either spelling
            return 0
        return count_embedding_inputs(obj["body"].get("input"))
    except (ValueError, AttributeError, KeyError, TypeError, RecursionError) as error:
        raise BatchFileError(
            f"line {line_no} is not a valid request line ({error}): validate the file first"
        ) from error


def plan_shards(lines: Iterable[bytes], limits: ShardLimits | None = None) -> list[ShardInfo]:
    """Split a valid stream into consecutive shards that each fit ``limits``.

    Greedy and deterministic: the same lines and limits give the same shards. A line is
    never split; blank lines belong to no shard.

    :raises BatchFileError: if one line alone exceeds the byte or embedding-input limit.
    """
    limits = limits or ShardLimits()
    shards: list[ShardInfo] = []
    start = count = size = inputs = 0
    digest = hashlib.sha256()

    def close() -> None:
        shards.append(ShardInfo(len(shards), start, count, size, inputs, digest.hexdigest()))

    for line_no, raw in enumerate(lines, 1):
        if not raw or raw.isspace():
            continue
        newline = b"" if raw.endswith(b"\n") else b"\n"
        length = len(raw) + len(newline)
        n_inputs = _line_inputs(raw, line_no)
        if length > limits.max_bytes or n_inputs > limits.max_embedding_inputs:
            raise BatchFileError(
                f"line {line_no} alone ({length:,} bytes, {n_inputs:,} embedding inputs) exceeds the shard "
                f"limits {limits}: shorten the request"
            )
        if count and (
            count + 1 > limits.max_requests
            or size + length > limits.max_bytes
            or inputs + n_inputs > limits.max_embedding_inputs
        ):
            close()
            count = size = inputs = 0
            digest = hashlib.sha256()
        if not count:
            start = line_no
        count += 1
        size += length
        inputs += n_inputs
        digest.update(raw)
        digest.update(newline)
    if count:
        close()
    return shards


def iter_shard_lines(lines: Iterable[bytes], shard: ShardInfo, *, verify: bool = True) -> Iterator[bytes]:
    """Yield the lines of ``shard`` from the same stream it was planned on, each ending in ``b"\\n"``.

    :param verify: check line count and sha256 against the plan; a mismatch (the input
        changed since planning) raises :class:`BatchFileError` before the last ``next()``
        returns, so an upload consuming this iterator fails instead of completing.
    """
    digest = hashlib.sha256()
    emitted = 0
    if shard.line_count:
        for line_no, raw in enumerate(lines, 1):
            if line_no < shard.start_line or not raw or raw.isspace():
                continue
            if not raw.endswith(b"\n"):
                raw += b"\n"
            if verify:
                digest.update(raw)
            emitted += 1
            if emitted == shard.line_count and verify and digest.hexdigest() != shard.sha256:
                break
            yield raw
            if emitted == shard.line_count:
                break
    if verify and (emitted != shard.line_count or digest.hexdigest() != shard.sha256):
        raise BatchFileError(
            f"shard {shard.index} (lines from {shard.start_line}) does not match its plan "
            f"({emitted} of {shard.line_count} lines, or other content): the input changed since "
            "plan_shards ran; plan again"
        )
