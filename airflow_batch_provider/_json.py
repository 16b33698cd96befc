"""JSON at orjson's speed, with the standard library's exact results.

The join parses and re-writes every request and response body; with ``json`` alone that is
most of its time. orjson is several times faster, but differs in a few corners. Each
function here uses orjson where its result is provably the same and falls back to ``json``
elsewhere, so the values read and the bytes written are those of ``json.loads`` and
``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` (tests/unit/test_json_fast.py):

- reading: orjson refuses what ``json`` accepts beyond the RFC (``NaN``, a BOM, UTF-16,
  lone surrogates) and reads integers wider than 64 bits as floats; such lines (any run of
  19 digits, even inside a string) are read by ``json``;
- writing: orjson writes floats below 1e-4 in another form (``0.00001`` for ``1e-05``); a
  result containing such a float (or text that looks like one) is written by ``json``.
  Values read by ``json`` (they may hold NaN, which orjson writes as ``null``) are always
  written by ``json``.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

#: ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` without building an encoder per call.
dumps_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# Plain substring searches (memchr speed): a regex like [0-9]{19} costs more than the parse.
_TO_NINE = bytes.maketrans(b"012345678", b"999999999")
_NINETEEN = b"9" * 19


def _wide_int(raw: bytes) -> bool:
    """Whether ``raw`` has a run of 19 digits (an integer orjson may read as a float)."""
    return _NINETEEN in raw.translate(_TO_NINE)


def _small_float(out: bytes) -> bool:
    """Whether orjson's ``out`` may hold a float below 1e-4 (``0.0000..`` or ``<digit>e-``),
    which Python writes otherwise."""
    if b"0.0000" in out:
        return True
    at = out.find(b"e-")
    while at > 0:
        if 48 <= out[at - 1] <= 57:  # a digit
            return True
        at = out.find(b"e-", at + 2)
    return False


def loads(raw: bytes) -> tuple[Any, bool]:
    """``(json.loads(raw), fast)``; ``fast`` says orjson read it (see :func:`dumps`).

    :raises ValueError: what ``json.loads`` raises for ``raw``.
    """
    if not _wide_int(raw):
        try:
            return orjson.loads(raw), True
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw), False


def dumps(value: Any, fast: bool = True) -> bytes:
    """``dumps_text(value).encode()``; ``fast=False`` for values not read by orjson."""
    if fast:
        try:
            out = orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError: an integer wider than 64 bits, a lone surrogate
            pass
        else:
            if not _small_float(out):
                return out
    return dumps_text(value).encode()
