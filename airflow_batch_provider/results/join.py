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

Result lines are indexed on disk (stdlib ``sqlite3`` in a temporary file, removed at
the end), so memory stays flat for 50,000+ requests (about 45 MB peak RSS at 50,000 or
100,000 requests, ``tests/benchmarks/join_rss.py``); only counters and bounded samples
live in memory. The index needs temporary disk about the size of the result files.

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
    if line.error is not None:
        code, message = line.error.code, line.error.message
        if code in EXPIRED_CODES:
            return Outcome(ResultStatus.EXPIRED, True, code, message)
        if code in CANCELLED_CODES:
            return Outcome(ResultStatus.CANCELLED, retry_cancelled, code, message)
        return Outcome(ResultStatus.FAILED, is_retryable_error(None, code), code, message)
    response = line.response
    if response is None:
        return Outcome(
            ResultStatus.FAILED, False, "empty_result", "the result line has neither a response nor an error"
        )
    if 200 <= response.status_code < 300:
        return Outcome(ResultStatus.SUCCEEDED, status_code=response.status_code)
    body: Mapping[str, Any] = response.body if isinstance(response.body, Mapping) else {}
    err: Mapping[str, Any] = body["error"] if isinstance(body.get("error"), Mapping) else {}
    code = None if err.get("code") is None else str(err["code"])
    etype = None if err.get("type") is None else str(err["type"])
    return Outcome(
        ResultStatus.FAILED,
        is_retryable_error(response.status_code, code, etype),
        code or etype or f"http_{response.status_code}",
        err.get("message") or f"the request failed with HTTP {response.status_code}",
        response.status_code,
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


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


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
) -> Iterator[tuple[str, Any, bytes, str | None]]:
    """Yield ``(custom_id, body, raw line, shard batch_id)`` for every non-blank input line."""
    for index, shard in enumerate(_shards(inputs)):
        for number, raw in enumerate(shard.lines, 1):
            raw = raw.encode() if isinstance(raw, str) else bytes(raw)
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                custom_id = data["custom_id"]
                if not isinstance(custom_id, str):
                    raise TypeError("custom_id is not a string")
            except (ValueError, KeyError, TypeError) as exc:
                raise BatchFileError(
                    f"input shard {index} (batch {shard.batch_id}) line {number}: not a request line "
                    f"({exc}); results can only be joined to the validated input the batches ran"
                ) from exc
            yield custom_id, data.get("body"), raw, shard.batch_id


class _Index:
    """custom_id -> kept outcome, on disk. One connection, one transaction, small page cache."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-8000", "temp_store=FILE"):
            self.db.execute(f"PRAGMA {pragma}")
        self.db.executescript(
            "CREATE TABLE results(custom_id TEXT PRIMARY KEY, success INT, round INT, rank INT,"
            " status TEXT, retryable INT, code TEXT, batch_id TEXT, response TEXT, error TEXT);"
            "CREATE TABLE sent(custom_id TEXT PRIMARY KEY, round INT, batch_id TEXT);"
            "CREATE TABLE inputs(custom_id TEXT PRIMARY KEY);"
            "BEGIN;"
        )

    def close(self) -> None:
        self.db.close()


def _ingest(index: _Index, batch: BatchResults, report: Reconciliation) -> dict[str, Any]:
    db = index.db
    seen: dict[str, Any] = {
        "batch_id": batch.batch_id,
        "round": batch.round,
        "status": batch.status,
        "output_lines": 0,
        "error_lines": 0,
    }
    for kind, lines in (("output", batch.output_lines), ("error", batch.error_lines)):
        for number, raw in enumerate(lines or (), 1):
            if not raw.strip():
                continue
            try:
                line = ResultLine.parse(raw)
            except ValidationError as exc:
                report.invalid_lines += 1
                reason = exc.errors()[0]["msg"] if exc.errors() else str(exc)
                where = f"batch {batch.batch_id} {kind} line {number}"
                report.keep_sample(report.invalid_sample, f"{where}: {reason}")
                continue
            seen[f"{kind}_lines"] += 1
            report.result_lines += 1
            outcome = classify(line, retry_cancelled=batch.retry_cancelled)
            body = line.response.body if line.response is not None else None
            usage = Usage.from_body(body)
            if usage.responses and isinstance(body, Mapping):
                report.usage.add(usage)
                model = str(body.get("model") or "")
                if model not in report.usage_by_model and len(report.usage_by_model) >= _MAX_MODELS:
                    model = "other"
                report.usage_by_model.setdefault(model, Usage()).add(usage)
            success = outcome.status is ResultStatus.SUCCEEDED
            new_key = (success, batch.round, _RANK[outcome.status.value])
            old = db.execute(
                "SELECT success, round, rank FROM results WHERE custom_id=?", (line.custom_id,)
            ).fetchone()
            if old is not None and old[1] == batch.round:
                report.duplicate_results += 1
            if old is not None and new_key <= tuple(old):
                continue
            error = outcome.error_dict()
            db.execute(
                "INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    line.custom_id,
                    success,
                    batch.round,
                    new_key[2],
                    outcome.status.value,
                    outcome.retryable,
                    outcome.code,
                    batch.batch_id,
                    None if body is None else _dumps(body),
                    None if error is None else _dumps(error),
                ),
            )
    for number, raw in enumerate(batch.request_lines or (), 1):
        if not raw.strip():
            continue
        try:
            custom_id = json.loads(raw)["custom_id"]
        except (ValueError, KeyError, TypeError) as exc:
            raise BatchFileError(
                f"request line {number} of batch {batch.batch_id} has no custom_id "
                f"({exc!r}): pass the input lines that batch was created from"
            ) from exc
        if isinstance(custom_id, str):
            db.execute(
                "INSERT INTO sent VALUES (?,?,?) ON CONFLICT(custom_id) DO UPDATE SET "
                "round=excluded.round, batch_id=excluded.batch_id WHERE excluded.round > sent.round",
                (custom_id, batch.round, batch.batch_id),
            )
    return seen


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
    db = index.db
    for custom_id, body, raw, shard_batch in _iter_requests(inputs):
        report.total += 1
        if db.execute("INSERT OR IGNORE INTO inputs VALUES (?)", (custom_id,)).rowcount == 0:
            report.duplicate_inputs += 1
            report.keep_sample(report.duplicate_inputs_sample, custom_id)
        row = db.execute(
            "SELECT success, round, status, retryable, code, batch_id, response, error "
            "FROM results WHERE custom_id=?",
            (custom_id,),
        ).fetchone()
        sent = db.execute("SELECT round, batch_id FROM sent WHERE custom_id=?", (custom_id,)).fetchone()
        if sent is not None:
            latest_round, latest = sent[0], by_id.get(sent[1])
        else:
            latest_round, latest = 0, by_id.get(shard_batch) if shard_batch else default
        if row is not None and (row[0] or row[1] >= latest_round):
            status, retryable, code, batch_id, response, error = row[2:]
        else:  # absent from the files of the latest batch it was sent to
            outcome = latest.absent_outcome() if latest is not None else _missing_no_batch()
            status, retryable, code = outcome.status.value, outcome.retryable, outcome.code
            batch_id = latest.batch_id if latest is not None else shard_batch
            response, error = None, _dumps(outcome.error_dict())
        report.counts[status] += 1
        if status == "missing":
            report.keep_sample(report.missing_sample, custom_id)
        if status != "succeeded":
            report.keep_sample(
                report.unsuccessful_sample, {"custom_id": custom_id, "status": status, "code": code}
            )
            if retryable:
                report.retryable += 1
                report.keep_sample(report.retryable_sample, custom_id)
                if retry is not None:
                    retry(raw.rstrip(b"\r\n") + b"\n")
        write(
            f'{{"custom_id":{_dumps(custom_id)},"status":"{status}","request":{_dumps(body)},'
            f'"response":{response or "null"},"error":{error or "null"},'
            f'"batch_id":{_dumps(batch_id)}}}\n'.encode()
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
    for number, (custom_id, _body, raw, _batch) in enumerate(_iter_requests(inputs), 1):
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
