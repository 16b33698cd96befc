"""Object ids shaped like the real service's, and clock helpers."""

from __future__ import annotations

import random
import secrets
import string
import time

_ALNUM = string.ascii_letters + string.digits
# Ids of result lines and responses are made by the ten thousand: a seeded PRNG is far
# cheaper than the OS entropy pool, and they need to be unique, not secret.
_fast = random.Random()


def _hex(bits: int) -> str:
    return f"{_fast.getrandbits(bits):0{bits // 4}x}"


def file_id() -> str:
    """A new file id, ``file-`` and 22 alphanumerics."""
    return "file-" + "".join(secrets.choice(_ALNUM) for _ in range(22))


def batch_id() -> str:
    """A new batch id, ``batch_`` and 32 hex digits."""
    return "batch_" + secrets.token_hex(16)


def request_id() -> str:
    """A new request id (``x-request-id`` header and result lines), ``req_`` and 32 hex digits."""
    return "req_" + _hex(128)


def batch_request_id() -> str:
    """A new id of one line of a batch result file."""
    return "batch_req_" + _hex(128)


def prefixed(prefix: str) -> str:
    """A new id with the given prefix, e.g. ``chatcmpl-``.

    :param prefix: the id prefix.
    """
    return prefix + _hex(96)


def now() -> int:
    """Unix time in whole seconds, as every timestamp of the API."""
    return int(time.time())
