"""The one rule for batch and file ids, wherever they come from.

Ids become paths (results land under ``<destination>/<batch id>/``) and parts of
request URLs. So every id is checked before it is used: those in the service's
answers (a batch, a file, every item of a list page) and those a user passes in
(the fetch's ``batches``, the sensor's ``batch_ids``, values from ``dag_run.conf``).

An id is 1 to :data:`MAX_ID_LENGTH` ASCII letters, digits, ``_`` or ``-``
(:data:`ID_PATTERN`): no dot, separator, ``%``, space or control character, so
nothing that can climb out of a directory, name an absolute path or reach another
URL, on any filesystem or object store. The ids OpenAI, Azure OpenAI and the
emulator hand out (``batch_<hex>``, ``file-<alnum>``) fit with room to spare. An
answer about one id must also carry that id.

Pure: no Airflow, no HTTP. Errors show a bad value escaped (:func:`shown`) and cut
to :data:`MAX_SHOWN` characters.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow_batch_provider.exceptions import UnsafeIdError

MAX_ID_LENGTH = 128
ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_ID_LENGTH}}}")
#: Characters of a bad value shown in an error (escaped first).
MAX_SHOWN = 80
#: The file ids a batch object carries besides its own id.
BATCH_FILE_FIELDS = ("input_file_id", "output_file_id", "error_file_id")
_RULE = f"1 to {MAX_ID_LENGTH} letters, digits, '_' or '-'"


def is_valid_id(value: object) -> bool:
    """Whether ``value`` is a string matching :data:`ID_PATTERN`."""
    return isinstance(value, str) and ID_PATTERN.fullmatch(value) is not None


def shown(value: object) -> str:
    """``value`` fit for an error message: ``ascii()``-escaped (no newline, control or
    look-alike character survives) and cut to :data:`MAX_SHOWN` characters."""
    text = ascii(value)
    if len(text) > MAX_SHOWN:
        text = f"{text[:MAX_SHOWN]}... ({len(text)} characters)"
    return text


def check_user_id(value: object, *, kind: str, argument: str) -> str:
    """Return ``value`` if it is a valid id, else raise naming the argument it came from.

    :param kind: what it is, e.g. ``"batch id"``.
    :param argument: where it was given, e.g. ``"the fetch's `batches` argument"``.
    :raises UnsafeIdError: not a valid id.
    """
    if is_valid_id(value):
        return str(value)
    raise UnsafeIdError(
        f"{argument} names {kind} {shown(value)}, which is not a valid id ({_RULE}). Pass the ids "
        "the service gave (e.g. the submit operator's output); nothing was requested or written."
    )


def check_server_id(value: object, *, kind: str, server: str, request: str, asked: str | None = None) -> str:
    """Return ``value`` (an id in a server's answer) if valid and, when given, equal to ``asked``.

    :param kind: what it is, e.g. ``"batch id"`` or ``"output_file_id"``.
    :param server: the server, named without secrets (the connection's base URL).
    :param request: what was asked, e.g. ``"GET /batches/batch_abc"``.
    :param asked: the id the request was about, when it was about one.
    :raises UnsafeIdError: the value is not a valid id, or another id than the one asked for.
    """
    if not is_valid_id(value):
        problem = f"which is not a valid id ({_RULE})"
    elif asked is not None and value != asked:
        problem = f"not the {shown(asked)} asked for"
    else:
        return str(value)
    raise UnsafeIdError(
        f"{server} answered {request} with {kind} {shown(value)}, {problem}. The server does not "
        "behave like the Batch API, so nothing was written or requested with that id. Check that "
        "the connection's host is the service you mean, and tell whoever runs that server."
    )


def check_server_batch(batch: Any, *, server: str, request: str, asked: str | None = None) -> Any:
    """Check a batch in a server's answer (an SDK ``Batch`` or its dict): its id, and its file ids
    where it has them. Returns ``batch`` unchanged.

    :raises UnsafeIdError: see :func:`check_server_id`.
    """
    check_server_id(_field(batch, "id"), kind="batch id", server=server, request=request, asked=asked)
    for name in BATCH_FILE_FIELDS:
        value = _field(batch, name)
        if value is not None:
            check_server_id(value, kind=name, server=server, request=request)
    return batch


def _field(obj: Any, name: str) -> Any:
    return obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
