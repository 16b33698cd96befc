"""Batch result lines: model, classification, and the streaming join to the inputs.

Pure: no Airflow, no HTTP; bytes in, bytes out. The fetch operator streams files
through it; everything here also runs alone in tests.

**Lines.** An output or error file line is a :class:`ResultLine`
(``{"id", "custom_id", "response": {"status_code", "request_id", "body"} | null,
"error": {"code", "message"} | null}``). :func:`classify` turns one into an
:class:`Outcome`: a :class:`ResultStatus` plus whether resubmitting could help:

==========================================  ===========  =========
line                                        status       retryable
==========================================  ===========  =========
response 2xx                                succeeded    -
response 429, 408, 409, 5xx                 failed       yes
response with code rate_limit_exceeded,     failed       yes
token_limit_exceeded, server_error, ...
response 400 (context_length_exceeded,      failed       never
invalid_request_error, insufficient_quota)
error ``batch_expired``                     expired      yes
error ``batch_cancelled``                   cancelled    only if the batch was cancelled by our
                                                         deadline (``retry_cancelled``)
any other error                             failed       if its code is retryable
==========================================  ===========  =========

**Join.** :func:`join_results` writes ``results.jsonl``: one line per input request,
in input order, whatever the order of the result files::

    {"custom_id", "status": "succeeded"|"failed"|"expired"|"cancelled"|"missing",
     "request": <input body>, "response": <response body> | null,
     "error": {"code", "message", "type", "param", "status_code", "retryable"} | null,
     "batch_id": <batch that produced the result, or that should have>}

Result lines are indexed on disk (stdlib ``sqlite3`` in a temporary file, response bodies
in a spool file beside it, both removed at the end), so memory stays flat for 50,000+
requests (about 45 MB peak RSS at 50,000 or 100,000 requests, ``tests/benchmarks/join_rss.py``);
only counters, bounded samples and one block of lines live in memory. The index needs
temporary disk about the size of the result files. Bodies are parsed and written with orjson
where that gives ``json``'s exact values and bytes (:mod:`airflow_batch_provider._json`).

**Rounds.** Resubmitted requests come back in later rounds: give every batch its
``round`` (0 = the original submission) and, for resubmission batches, the lines it
was sent (``request_lines``). A request's outcome is its latest attempt, except that
a success is never replaced (by a later failure nor by anything else); within one
round a better status wins (succeeded > failed > cancelled > expired). A request
missing from the files of the latest batch it was sent to takes that batch's status
(``expired``/``cancelled``/``failed``) when the batch ended so, else ``missing``.

**Resubmission.** Pass ``retry_out`` to :func:`join_results` to get the original
input lines (byte for byte) of every retryable request during the same pass, or
call :func:`iter_retryable_lines` later with the inputs and the landed
``results.jsonl``.

Typical use (the fetch operator)::

    report = join_results(
        [InputShard(hook.iter_file_lines(s["input_file_id"]), s["batch_id"]) for s in shards],
        [BatchResults.from_summary(b, hook.iter_file_lines(b["output_file_id"]), ...) for b in batches],
        results_file,            # binary file object, or any callable taking bytes
        retry_out=retry_file,    # optional
    )
    report.check(min_success_ratio=0.95)   # ReconciliationError with counts and custom_ids
    manifest["reconciliation"] = report.to_dict()
    manifest["cost"] = report.estimate_cost(model=manifest["model"])
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, BinaryIO

from pydantic import BaseModel, ConfigDict, ValidationError

from airflow_batch_provider import _json
from airflow_batch_provider.exceptions import BatchFileError, ReconciliationError
from airflow_batch_provider.pricing import Usage
from airflow_batch_provider.results.reconciliation import STATUSES, Reconciliation, ResultStatus
from airflow_batch_provider.waiting.transient import is_transient_status

__all__ = [
    "STATUSES",
    "BatchResults",
    "InputShard",
    "Outcome",
    "Reconciliation",
    "ResultError",
    "ResultLine",
    "ResultResponse",
    "ResultStatus",
    "classify",
    "is_retryable",
    "is_retryable_error",
    "iter_retryable_lines",
    "join_results",
]


#: Error codes/types worth another attempt.
RETRYABLE_CODES = frozenset(
    {
        "rate_limit_exceeded",
        "token_limit_exceeded",
        "tokens_exceeded",
        "server_error",
        "internal_error",
        "internal_server_error",
        "service_unavailable",
        "overloaded",
        "engine_overloaded",
        "timeout",
        "request_timeout",
        "batch_expired",
    }
)
#: Codes/types that fail the same way every time: never resubmitted, whatever the HTTP status.
NEVER_RETRY_CODES = frozenset(
    {
        "context_length_exceeded",
        "invalid_request_error",
        "invalid_prompt",
        "content_filter",
        "content_policy_violation",
        "model_not_found",
        "insufficient_quota",
        "invalid_api_key",
        "string_above_max_length",
        "invalid_image",
        "unsupported_value",
        "unsupported_parameter",
    }
)
#: Error codes of requests the service never ran.
EXPIRED_CODES = frozenset({"batch_expired", "request_expired"})
CANCELLED_CODES = frozenset({"batch_cancelled", "request_cancelled", "cancelled"})

# Within a round, a duplicate line replaces the kept one only when its status ranks higher.
_RANK = {"succeeded": 4, "failed": 3, "cancelled": 2, "expired": 1, "missing": 0}


# ----------------------------------------------------------------------------- line model


class ResultResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    status_code: int
    request_id: str | None = None
    body: Any = None


class ResultError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: str | None = None
    message: str | None = None


class ResultLine(BaseModel):
    """One line of a batch output or error file."""

    model_config = ConfigDict(extra="ignore")

    id: str | None = None
    custom_id: str
    response: ResultResponse | None = None
    error: ResultError | None = None

    @classmethod
    def parse(cls, raw: bytes | str) -> ResultLine:
        """Parse one JSONL line. :raises pydantic.ValidationError: not a result line."""
        return cls.model_validate_json(raw)


@dataclass(frozen=True)
class Outcome:
    """What a result line (or its absence) means for its request."""

    status: ResultStatus
    retryable: bool = False
    code: str | None = None
    message: str | None = None
    status_code: int | None = None
    type: str | None = None
    param: str | None = None

    def error_dict(self) -> dict[str, Any] | None:
        """The ``error`` object of a ``results.jsonl`` line (``None`` on success)."""
        if self.status is ResultStatus.SUCCEEDED:
            return None
        return {
            "code": self.code,
            "message": self.message,
            "type": self.type,
            "param": self.param,
            "status_code": self.status_code,
            "retryable": self.retryable,
        }


def is_retryable_error(status_code: int | None, *codes: str | None) -> bool:
    """Whether a failure with this HTTP status and error code(s)/type could succeed if resubmitted."""
    known = {c for c in codes if c}
    if known & NEVER_RETRY_CODES:
        return False
    if status_code is not None and is_transient_status(status_code):
        return True
    return bool(known & RETRYABLE_CODES)


def classify(line: ResultLine, *, retry_cancelled: bool = False) -> Outcome:
    """Classify one result line.

    :param line: The parsed output/error line.
    :param retry_cancelled: Count ``batch_cancelled`` requests as retryable (their batch
        was cancelled by our own deadline, not by a person).
    """
    error, response = line.error, line.response
    return _classify(
        error is not None,
        None if error is None else error.code,
        None if error is None else error.message,
        None if response is None else response.status_code,
        None if response is None else response.body,
        retry_cancelled,
    )


_SUCCESS: dict[int, Outcome] = {}  # one Outcome per 2xx code: most lines are successes


def _classify(
    has_error: bool,
    code: str | None,
    message: str | None,
    status_code: int | None,
    body: Any,
    retry_cancelled: bool,
) -> Outcome:
    """:func:`classify` on a line's fields (``status_code`` None: no response)."""
    if has_error:
        if code in EXPIRED_CODES:
            return Outcome(ResultStatus.EXPIRED, True, code, message)
        if code in CANCELLED_CODES:
            return Outcome(ResultStatus.CANCELLED, retry_cancelled, code, message)
        return Outcome(ResultStatus.FAILED, is_retryable_error(None, code), code, message)
    if status_code is None:
        return Outcome(
            ResultStatus.FAILED, False, "empty_result", "the result line has neither a response nor an error"
        )
    if 200 <= status_code < 300:
        outcome = _SUCCESS.get(status_code)
        if outcome is None:
            outcome = _SUCCESS[status_code] = Outcome(ResultStatus.SUCCEEDED, status_code=status_code)
        return outcome
    body = body if isinstance(body, Mapping) else {}
    err: Mapping[str, Any] = body["error"] if isinstance(body.get("error"), Mapping) else {}
    code = None if err.get("code") is None else str(err["code"])
    etype = None if err.get("type") is None else str(err["type"])
    return Outcome(
        ResultStatus.FAILED,
        is_retryable_error(status_code, code, etype),
        code or etype or f"http_{status_code}",
        err.get("message") or f"the request failed with HTTP {status_code}",
        status_code,
        etype,
        err.get("param"),
    )


def is_retryable(result: Mapping[str, Any]) -> bool:
    """Whether a parsed ``results.jsonl`` line should be resubmitted."""
    error = result.get("error")
    return result.get("status") != "succeeded" and isinstance(error, Mapping) and bool(error.get("retryable"))


# ----------------------------------------------------------------------------- inputs and batches


@dataclass
class InputShard:
    """Input request lines (one shard, in order) and the batch they were submitted as."""

    lines: Iterable[bytes]
    batch_id: str | None = None


@dataclass
class BatchResults:
    """One batch's result files and what is known about how it ended.

    :param batch_id: The batch id.
    :param output_lines: Lines of its output file (any order; empty when it has none).
    :param error_lines: Lines of its error file.
    :param status: Its terminal status; ``expired``/``cancelled``/``failed`` give the
        requests absent from its files that status instead of ``missing``.
    :param round: 0 for the original submission, 1, 2, ... for resubmissions.
    :param request_lines: The input lines this batch was sent (needed for resubmission
        rounds, so a request absent from them is judged by this batch, not an older one).
    :param errors: Batch-level errors (``summarize_batch()["errors"]``) of a failed batch.
    :param retry_cancelled: The batch was cancelled by our deadline: its cancelled
        requests are retryable.
    """

    batch_id: str
    output_lines: Iterable[bytes] = ()
    error_lines: Iterable[bytes] = ()
    status: str | None = None
    round: int = 0
    request_lines: Iterable[bytes] | None = None
    errors: Sequence[Mapping[str, Any]] = ()
    retry_cancelled: bool = False

    @classmethod
    def from_summary(
        cls,
        summary: Mapping[str, Any],
        output_lines: Iterable[bytes] = (),
        error_lines: Iterable[bytes] = (),
        **kwargs: Any,
    ) -> BatchResults:
        """Build from a ``summarize_batch`` dict (id, status, errors) and the file lines."""
        return cls(
            batch_id=summary["id"],
            output_lines=output_lines,
            error_lines=error_lines,
            status=summary.get("status"),
            errors=summary.get("errors") or (),
            **kwargs,
        )

    def absent_outcome(self) -> Outcome:
        """The outcome of a request sent to this batch that has no line in its files."""
        if self.status == "expired":
            return Outcome(
                ResultStatus.EXPIRED,
                True,
                "batch_expired",
                f"batch {self.batch_id} expired before this request ran",
            )
        if self.status == "cancelled":
            return Outcome(
                ResultStatus.CANCELLED,
                self.retry_cancelled,
                "batch_cancelled",
                f"batch {self.batch_id} was cancelled before this request ran",
            )
        if self.status == "failed":
            first = self.errors[0] if self.errors else {}
            code = first.get("code") or "batch_failed"
            return Outcome(
                ResultStatus.FAILED,
                is_retryable_error(None, code),
                code,
                f"batch {self.batch_id} failed: {first.get('message') or 'no requests ran'}",
            )
        return Outcome(
            ResultStatus.MISSING,
            False,
            "missing",
            f"no line for this request in the output or error file of batch {self.batch_id} "
            f"(status {self.status or 'unknown'})",
        )


def _missing_no_batch() -> Outcome:
    return Outcome(
        ResultStatus.MISSING,
        False,
        "missing",
        "no line for this request in any output or error file, and its batch is unknown",
    )


# ----------------------------------------------------------------------------- join

_MAX_MODELS = 50  # usage_by_model keys come from bodies: cap them, a bug must not grow memory


def _sink(out: BinaryIO | Callable[[bytes], object]) -> Callable[[bytes], object]:
    write = getattr(out, "write", None)
    return write if callable(write) else out  # type: ignore[return-value]


class _Buffered:
    """Coalesce small writes: object-storage writers pay per call."""

    def __init__(self, out: BinaryIO | Callable[[bytes], object], limit: int = 1 << 20) -> None:
        self._write, self._limit = _sink(out), limit
        self._parts: list[bytes] = []
        self._size = 0

    def __call__(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size >= self._limit:
            self.flush()

    def flush(self) -> None:
        if self._parts:
            self._write(b"".join(self._parts))
            self._parts, self._size = [], 0


_dumps = _json.dumps_text  # json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _shards(inputs: Iterable[bytes] | Iterable[InputShard]) -> Iterator[InputShard]:
    items = iter(inputs)
    first = next(items, None)
    if first is None:
        return
    if isinstance(first, (bytes, bytearray, memoryview, str)):
        yield InputShard(chain([first], items))  # type: ignore[list-item, arg-type]
        return
    yield first  # type: ignore[misc]
    yield from items  # type: ignore[misc]


def _iter_requests(
    inputs: Iterable[bytes] | Iterable[InputShard],
) -> Iterator[tuple[str, Any, bytes, str | None, bool]]:
    """Yield ``(custom_id, body, raw line, shard batch_id, fast)`` for every non-blank input line
    (``fast``: the body may be written with ``_json.dumps``)."""
    for index, shard in enumerate(_shards(inputs)):
        for number, raw in enumerate(shard.lines, 1):
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            if not raw or raw.isspace():  # blank (strip() would copy every line)
                continue
            try:
                data, fast = _json.loads(raw)
                custom_id = data["custom_id"]
                if not isinstance(custom_id, str):
                    raise TypeError("custom_id is not a string")
            except (ValueError, KeyError, TypeError) as exc:
                raise BatchFileError(
                    f"input shard {index} (batch {shard.batch_id}) line {number}: not a request line "
                    f"({exc}); results can only be joined to the validated input the batches ran"
                ) from exc
            yield custom_id, data.get("body"), raw, shard.batch_id, fast


class _Index:
    """custom_id -> kept outcome, on disk. One connection, one transaction, small page cache.

    Response bodies (the bulk) go to an append-only spool file beside it; the index keeps
    their offset and size: large rows cost SQLite several times a plain write and read.
    """

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8000", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(
            "CREATE TABLE results(custom_id TEXT PRIMARY KEY, success INT, round INT, rank INT,"
            " status TEXT, retryable INT, code TEXT, batch_id TEXT, response_at INT, response_size INT,"
            " error BLOB);"
            "CREATE TABLE sent(custom_id TEXT PRIMARY KEY, round INT, batch_id TEXT);"
            "CREATE TABLE inputs(custom_id TEXT PRIMARY KEY);"
            "BEGIN;"
        )
        self.has_sent = False  # no resubmission rounds: no lookups in ``sent``
        self.spool = open(path + ".spool", "w+b")  # noqa: SIM115 (closed in close())
        self.spooled = 0

    def put(self, data: bytes) -> int:
        """Append ``data`` to the spool; return its offset."""
        at = self.spooled
        self.spool.write(data)
        self.spooled += len(data)
        return at

    def get(self, at: int, size: int) -> bytes:
        """Bytes ``put`` returned ``at`` for (call :meth:`flush` after the last ``put``)."""
        return os.pread(self.spool.fileno(), size, at)

    def flush(self) -> None:
        self.spool.flush()

    def close(self) -> None:
        self.db.close()
        self.spool.close()


#: Lines per round trip to the index: a few queries per block instead of several per line.
_BLOCK = 500


def _quick_result(raw: bytes) -> tuple[str, bool, str | None, str | None, int | None, Any] | None:
    """``(custom_id, has_error, code, message, status_code, body)`` of a plainly shaped result line
    read by orjson, or ``None`` to let :meth:`ResultLine.parse` judge it (same result, several
    times the cost; NaN and the like, which pydantic refuses, go there too)."""
    try:
        obj, fast = _json.loads(raw)
    except ValueError:
        return None
    if not fast or type(obj) is not dict:
        return None
    custom_id, ident, response, error = (
        obj.get("custom_id"),
        obj.get("id"),
        obj.get("response"),
        obj.get("error"),
    )
    if type(custom_id) is not str or (ident is not None and type(ident) is not str):
        return None
    code = message = status_code = body = None
    if error is not None:
        if type(error) is not dict:
            return None
        code, message = error.get("code"), error.get("message")
        if (code is not None and type(code) is not str) or (message is not None and type(message) is not str):
            return None
    if response is not None:
        if type(response) is not dict:
            return None
        status_code, request_id, body = (
            response.get("status_code"),
            response.get("request_id"),
            response.get("body"),
        )
        if type(status_code) is not int or (request_id is not None and type(request_id) is not str):
            return None
    return custom_id, error is not None, code, message, status_code, body


def _marks(count: int) -> str:
    return ",".join("?" * count)


def _ingest(index: _Index, batch: BatchResults, report: Reconciliation) -> dict[str, Any]:
    seen: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "round": batch.round,
        "status": batch.status,
        "output_lines": 0,
        "error_lines": 0,
    }
    pending: list[tuple[str, tuple[bool, int, int], Outcome, Any, bool]] = []
    by_model = report.usage_by_model
    for kind, lines in (("output", batch.output_lines), ("error", batch.error_lines)):
        counted = f"{kind}_lines"
        for number, raw in enumerate(lines or (), 1):
            if not raw or raw.isspace():
                continue
            fields = _quick_result(raw) if isinstance(raw, bytes) else None
            fast = fields is not None
            if fields is None:
                try:
                    line = ResultLine.parse(raw)
                except ValidationError as exc:
                    report.invalid_lines += 1
                    reason = exc.errors()[0]["msg"] if exc.errors() else str(exc)
                    where = f"batch {batch.batch_id} {kind} line {number}"
                    report.keep_sample(report.invalid_sample, f"{where}: {reason}")
                    continue
                response, error = line.response, line.error
                fields = (
                    line.custom_id,
                    error is not None,
                    None if error is None else error.code,
                    None if error is None else error.message,
                    None if response is None else response.status_code,
                    None if response is None else response.body,
                )
            custom_id, has_error, code, message, status_code, body = fields
            seen[counted] += 1
            report.result_lines += 1
            outcome = _classify(has_error, code, message, status_code, body, batch.retry_cancelled)
            if isinstance(body, Mapping):
                usage = Usage.from_body(body)  # tokens, images or video seconds, per endpoint
                if usage.responses:
                    report.usage.add(usage)
                    model = str(body.get("model") or "")
                    tally = by_model.get(model)
                    if tally is None:
                        if len(by_model) >= _MAX_MODELS:
                            model = "other"
                        tally = by_model.setdefault(model, Usage())
                    tally.add(usage)
            success = outcome.status is ResultStatus.SUCCEEDED
            pending.append(
                (custom_id, (success, batch.round, _RANK[outcome.status.value]), outcome, body, fast)
            )
            if len(pending) >= _BLOCK:
                _keep_best(index, batch, pending, report)
                pending = []
    _keep_best(index, batch, pending, report)
    sent: list[tuple[str, int, str]] = []
    for number, raw in enumerate(batch.request_lines or (), 1):
        if not raw or raw.isspace():
            continue
        try:
            custom_id = json.loads(raw)["custom_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BatchFileError(
                f"request line {number} of batch {batch.batch_id} has no custom_id "
                f"({exc!r}): pass the input lines that batch was created from"
            ) from exc
        if isinstance(custom_id, str):
            sent.append((custom_id, batch.round, batch.batch_id))
            if len(sent) >= _BLOCK:
                _record_sent(index, sent)
                sent = []
    _record_sent(index, sent)
    return seen


def _record_sent(index: _Index, rows: list[tuple[str, int, str]]) -> None:
    if rows:
        index.has_sent = True
        index.db.executemany(
            "INSERT INTO sent VALUES (?,?,?) ON CONFLICT(custom_id) DO UPDATE SET "
            "round=excluded.round, batch_id=excluded.batch_id WHERE excluded.round > sent.round",
            rows,
        )


def _keep_best(
    index: _Index,
    batch: BatchResults,
    pending: list[tuple[str, tuple[bool, int, int], Outcome, Any, bool]],
    report: Reconciliation,
) -> None:
    """Write a block of result lines to the index, each replacing the kept one only when better,
    judged line by line in file order, as if one at a time."""
    if not pending:
        return
    db = index.db
    ids = list({p[0]: None for p in pending})
    kept: dict[str, tuple[Any, ...]] = {}
    for at in range(0, len(ids), _BLOCK):
        part = ids[at : at + _BLOCK]
        for row in db.execute(
            f"SELECT custom_id, success, round, rank FROM results WHERE custom_id IN ({_marks(len(part))})",
            part,
        ):
            kept[row[0]] = row[1:]
    best: dict[str, tuple[tuple[bool, int, int], Outcome, Any, bool]] = {}
    for custom_id, new_key, outcome, body, fast in pending:
        old = kept.get(custom_id)
        if old is not None and old[1] == batch.round:
            report.duplicate_results += 1
        if old is not None and new_key <= tuple(old):
            continue
        kept[custom_id] = new_key
        best.pop(custom_id, None)  # re-inserted last: the index's row order is replacement order
        best[custom_id] = (new_key, outcome, body, fast)
    rows = []  # response and error stored as the JSON bytes results.jsonl embeds
    for custom_id, (key, outcome, body, fast) in best.items():
        error = outcome.error_dict()
        response = None if body is None else _json.dumps(body, fast)
        rows.append(
            (
                custom_id,
                key[0],
                key[1],
                key[2],
                outcome.status.value,
                outcome.retryable,
                outcome.code,
                batch.batch_id,
                None if response is None else index.put(response),
                None if response is None else len(response),
                None if error is None else _json.dumps(error),
            )
        )
    db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?,?)", rows)


def join_results(
    inputs: Iterable[bytes] | Iterable[InputShard],
    batches: Iterable[BatchResults],
    out: BinaryIO | Callable[[bytes], object],
    *,
    retry_out: BinaryIO | Callable[[bytes], object] | None = None,
    workdir: str | os.PathLike[str] | None = None,
    sample_size: int = 20,
) -> Reconciliation:
    """Join result files to their input requests and write ``results.jsonl``.

    :param inputs: The input request lines in order: plain lines, or :class:`InputShard`
        items (one per shard, in shard order) so absent requests are judged by their batch.
        A shard without ``batch_id`` is judged by the only round-0 batch, if there is one.
    :param batches: Every batch of every round with its result lines (any order); read
        once, before the inputs.
    :param out: Where ``results.jsonl`` goes: a binary file object or a callable taking bytes
        (not closed here).
    :param retry_out: Optional; receives the original input line of every retryable request.
    :param workdir: Directory for the temporary index (default: the system temp dir).
    :param sample_size: How many custom_ids each sample of the report keeps.
    :return: The :class:`Reconciliation`; call :meth:`Reconciliation.check` to enforce it.
    :raises BatchFileError: an input line is not a request line.
    """
    report = Reconciliation(sample_size=sample_size)
    write, retry = _Buffered(out), (_Buffered(retry_out) if retry_out is not None else None)
    with tempfile.TemporaryDirectory(prefix="batch-join-", dir=workdir) as tmp:
        index = _Index(os.path.join(tmp, "index.sqlite"))
        try:
            by_id: dict[str, BatchResults] = {}
            for batch in batches:
                report.batches.append(_ingest(index, batch, report))
                by_id[batch.batch_id] = batch
                report.rounds = max(report.rounds, batch.round + 1)
            first_round = [b for b in by_id.values() if b.round == 0]
            default = first_round[0] if len(first_round) == 1 else None
            _write_joined(index, inputs, by_id, default, report, write, retry)
            _count_unknown(index, report)
        finally:
            index.close()
    write.flush()
    if retry is not None:
        retry.flush()
    if sum(report.counts.values()) != report.total:  # the promise the whole module exists for
        raise ReconciliationError(f"internal error: statuses {report.counts} do not sum to {report.total}")
    return report


def _write_joined(
    index: _Index,
    inputs: Iterable[bytes] | Iterable[InputShard],
    by_id: Mapping[str, BatchResults],
    default: BatchResults | None,
    report: Reconciliation,
    write: _Buffered,
    retry: _Buffered | None,
) -> None:
    index.flush()
    block: list[tuple[str, Any, bytes, str | None, bool]] = []
    for request in _iter_requests(inputs):
        block.append(request)
        if len(block) >= _BLOCK:
            _write_block(index, block, by_id, default, report, write, retry)
            block = []
    _write_block(index, block, by_id, default, report, write, retry)


def _write_block(
    index: _Index,
    block: list[tuple[str, Any, bytes, str | None, bool]],
    by_id: Mapping[str, BatchResults],
    default: BatchResults | None,
    report: Reconciliation,
    write: _Buffered,
    retry: _Buffered | None,
) -> None:
    """Join a block of input requests (in order): three index queries for the whole block."""
    if not block:
        return
    db = index.db
    ids = list({request[0]: None for request in block})
    marks = _marks(len(ids))
    known = {r[0] for r in db.execute(f"SELECT custom_id FROM inputs WHERE custom_id IN ({marks})", ids)}
    db.executemany("INSERT INTO inputs VALUES (?)", [(i,) for i in ids if i not in known])
    rows = {
        r[0]: r[1:]
        for r in db.execute(
            "SELECT custom_id, success, round, status, retryable, code, batch_id, response_at, response_size,"
            " error "
            f"FROM results WHERE custom_id IN ({marks})",
            ids,
        )
    }
    sent: dict[str, tuple[Any, ...]] = {}
    if index.has_sent:
        sent = {
            r[0]: r[1:]
            for r in db.execute(
                f"SELECT custom_id, round, batch_id FROM sent WHERE custom_id IN ({marks})", ids
            )
        }
    quoted: dict[str | None, bytes] = {}  # a few batch ids, each quoted once
    for custom_id, body, raw, shard_batch, fast in block:
        report.total += 1
        if custom_id in known:
            report.duplicate_inputs += 1
            report.keep_sample(report.duplicate_inputs_sample, custom_id)
        else:
            known.add(custom_id)
        row = rows.get(custom_id)
        sent_row = sent.get(custom_id)
        if sent_row is not None:
            latest_round, latest = sent_row[0], by_id.get(sent_row[1])
        else:
            latest_round, latest = 0, by_id.get(shard_batch) if shard_batch else default
        if row is not None and (row[0] or row[1] >= latest_round):
            status, retryable, code, batch_id, response_at, response_size, error = row[2:]
            response = None if response_at is None else index.get(response_at, response_size)
        else:  # absent from the files of the latest batch it was sent to
            outcome = latest.absent_outcome() if latest is not None else _missing_no_batch()
            status, retryable, code = outcome.status.value, outcome.retryable, outcome.code
            batch_id = latest.batch_id if latest is not None else shard_batch
            response, error = None, _json.dumps(outcome.error_dict())
        report.counts[status] += 1
        if status != "succeeded":
            if status == "missing":
                report.keep_sample(report.missing_sample, custom_id)
            report.keep_sample(
                report.unsuccessful_sample, {"custom_id": custom_id, "status": status, "code": code}
            )
            if retryable:
                report.retryable += 1
                report.keep_sample(report.retryable_sample, custom_id)
                if retry is not None:
                    retry(raw.rstrip(b"\r\n") + b"\n")
        batch_json = quoted.get(batch_id)
        if batch_json is None:
            batch_json = quoted[batch_id] = _json.dumps(batch_id)
        write(
            b"".join(
                (
                    b'{"custom_id":',
                    _json.dumps(custom_id),
                    b',"status":"',
                    status.encode(),
                    b'","request":',
                    _json.dumps(body, fast),
                    b',"response":',
                    response or b"null",
                    b',"error":',
                    error or b"null",
                    b',"batch_id":',
                    batch_json,
                    b"}\n",
                )
            )
        )


def _count_unknown(index: _Index, report: Reconciliation) -> None:
    query = "FROM results WHERE custom_id NOT IN (SELECT custom_id FROM inputs)"
    report.unknown = index.db.execute(f"SELECT count(*) {query}").fetchone()[0]
    report.unknown_sample = [
        r[0]
        for r in index.db.execute(f"SELECT custom_id {query} ORDER BY rowid LIMIT ?", (report.sample_size,))
    ]


def iter_retryable_lines(
    inputs: Iterable[bytes] | Iterable[InputShard], results_lines: Iterable[bytes]
) -> Iterator[bytes]:
    """Yield the original input line of every retryable request, reading ``results.jsonl``.

    Both are read in lockstep (``results.jsonl`` is in input order), so memory stays flat.

    :param inputs: The same inputs :func:`join_results` was given.
    :param results_lines: The lines of the ``results.jsonl`` it wrote.
    :raises ReconciliationError: the two do not line up (another input, or a truncated file).
    """
    results = (r for r in results_lines if r.strip())
    for number, (custom_id, _body, raw, _batch, _fast) in enumerate(_iter_requests(inputs), 1):
        line = next(results, None)
        if line is None:
            raise ReconciliationError(
                f"results.jsonl ends at line {number - 1} but the input has more requests "
                f"(next custom_id {custom_id!r}): re-run the join to rewrite results.jsonl"
            )
        result = json.loads(line)
        if result.get("custom_id") != custom_id:
            raise ReconciliationError(
                f"results.jsonl line {number} is custom_id {result.get('custom_id')!r} but input request "
                f"{number} is {custom_id!r}: these results were not joined from this input"
            )
        if is_retryable(result):
            yield raw.rstrip(b"\r\n") + b"\n"
    if next(results, None) is not None:
        raise ReconciliationError(
            "results.jsonl has more lines than the input has requests: "
            "these results were not joined from this input"
        )
