"""Reading a running batch's input in chunks and appending its result lines.

Blocking file work, run in worker threads by the engine. A batch's progress is a
checkpoint ``{offset, line, out_bytes, err_bytes}``: after a restart the partial
result files are cut back to the checkpoint and reading resumes at ``offset``,
so every request lands in exactly one result line.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_batch_provider.emulator import ids
from airflow_batch_provider.emulator.fake_model import Outcome

EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@dataclass
class PendingRequest:
    """One request line read from the input.

    :param custom_id: the request's custom_id.
    :param url: the endpoint.
    :param body: the request body.
    """

    custom_id: str
    url: str
    body: Any


def read_chunk(path: Path, offset: int, max_requests: int) -> tuple[list[PendingRequest], int, int]:
    """Read up to ``max_requests`` request lines from ``offset``.

    :param path: the batch's input.
    :param offset: byte offset to start at.
    :param max_requests: most requests to read.
    :return: the requests, the new offset and the physical lines consumed.
    """
    requests: list[PendingRequest] = []
    consumed = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        while len(requests) < max_requests:
            raw = fh.readline()
            if not raw:
                break
            consumed += 1
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
                requests.append(PendingRequest(str(line["custom_id"]), line["url"], line["body"]))
            except (ValueError, KeyError, TypeError):
                continue  # validation rejected such files already; a resumed file is the same file
        return requests, fh.tell(), consumed


def result_line(custom_id: str, outcome: Outcome | None) -> bytes:
    """One line of an output or error file.

    :param custom_id: the request's custom_id.
    :param outcome: the executed request, or None for a request that expired.
    """
    if outcome is None:
        line: dict[str, Any] = {
            "id": ids.batch_request_id(),
            "custom_id": custom_id,
            "response": None,
            "error": EXPIRED_ERROR,
        }
    else:
        line = {
            "id": ids.batch_request_id(),
            "custom_id": custom_id,
            "response": {
                "status_code": outcome.status_code,
                "request_id": ids.request_id(),
                "body": outcome.body,
            },
            "error": None,
        }
    return json.dumps(line, separators=(",", ":")).encode() + b"\n"


def shuffled(
    pairs: list[tuple[PendingRequest, Outcome | None]],
) -> list[tuple[PendingRequest, Outcome | None]]:
    """Results in a deterministic order that is not the input order, as the real service's are.

    :param pairs: requests and their outcomes, in input order.
    """
    return sorted(pairs, key=lambda pair: zlib.crc32(pair[0].custom_id.encode()))


def append_results(
    output: Path, error: Path, pairs: list[tuple[PendingRequest, Outcome | None]]
) -> tuple[int, int]:
    """Append result lines: 2xx outcomes to ``output``, the rest to ``error``.

    :param output: the partial output file.
    :param error: the partial error file.
    :param pairs: requests and their outcomes (None = expired).
    :return: the new sizes of both files.
    """
    ok: list[bytes] = []
    bad: list[bytes] = []
    for request, outcome in shuffled(pairs):
        succeeded = outcome is not None and 200 <= outcome.status_code < 300
        (ok if succeeded else bad).append(result_line(request.custom_id, outcome))
    sizes = []
    for path, lines in ((output, ok), (error, bad)):
        with path.open("ab") as fh:
            fh.writelines(lines)
            sizes.append(fh.tell())
    return sizes[0], sizes[1]


def cut_back(path: Path, size: int) -> None:
    """Truncate a partial result file to its checkpointed size (work done after it is redone).

    :param path: the partial file.
    :param size: the checkpointed size.
    """
    if path.exists() and path.stat().st_size != size:
        with path.open("r+b") as fh:
            fh.truncate(size)
    elif not path.exists():
        path.touch()
