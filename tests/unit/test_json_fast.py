"""airflow_batch_provider._json: orjson where it gives json's exact values and bytes, json elsewhere.

The join writes results.jsonl with these; the bytes must be those the standard library writes
(``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``), whatever orjson's version.
"""

from __future__ import annotations

import json
import math
import random

import pytest

from airflow_batch_provider import _json

STDLIB = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _floats() -> list[float]:
    rng = random.Random(5)
    values = [0.0, -0.0, 1.0, 100.0, 0.1, 1e-4, 1e-5, 9.9e-5, 5e-324, 1e15, 1e16, 1e22, 1.5e300]
    for _ in range(20_000):
        value = rng.random() * 10 ** rng.randint(-30, 30) * rng.choice((1, -1))
        values.append(round(value, rng.randint(0, 9)) if rng.random() < 0.3 else value)
    return values


def test_dumps_writes_the_standard_librarys_bytes_for_every_float_and_string() -> None:
    text = "".join(map(chr, range(0x3000))) + "\U0001f600\ufeff\u2028 e-5 0.00001 1e-05"
    values = [*_floats(), text, {"a": [1, 2.0, None, True, {"": {}}], "b": -(2**63)}, 2**64 - 1]
    for value in values:
        assert _json.dumps(value) == STDLIB(value).encode(), value
        assert _json.dumps(json.loads(STDLIB(value)), fast=False) == STDLIB(value).encode()


def test_dumps_falls_back_where_orjson_cannot_write_the_value() -> None:
    for value in (2**70, {"x": [-(2**65)]}):
        assert _json.dumps(value) == STDLIB(value).encode()
    # NaN only comes from json.loads (fast=False): json writes NaN, orjson would write null.
    assert _json.dumps([math.nan, math.inf], fast=False) == b"[NaN,Infinity]"


@pytest.mark.parametrize(
    ("raw", "fast"),
    [
        (b'{"a":"caf\\u00e9","b":[1,2.5e-7,null,true],"c":{"d":"\xc3\xa9"}}', True),
        (b'{"n":12345678901234567890123}', False),  # wider than 64 bits: orjson would give a float
        (b'{"n":1234567890123456789}', False),  # 19 digits: read by json to be sure
        (b'{"n":NaN,"i":-Infinity}', False),  # not JSON, accepted by json.loads
        (b'\xef\xbb\xbf{"bom":1}', False),  # a UTF-8 BOM
        ('{"utf16":1}'.encode("utf-16"), False),
        (b'{"s":"\\ud800"}', False),  # a lone surrogate
    ],
)
def test_loads_gives_json_loads_values(raw: bytes, fast: bool) -> None:
    value, was_fast = _json.loads(raw)
    expected = json.loads(raw)
    assert was_fast is fast
    assert STDLIB(value) == STDLIB(expected)
    if b"ud800" not in raw:  # a lone surrogate cannot be written as UTF-8, by either
        assert _json.dumps(value, was_fast) == STDLIB(expected).encode()


def test_loads_raises_what_json_raises() -> None:
    for raw in (b"{", b"[1,]", b'{"a":1} x', b"\xff"):
        with pytest.raises(ValueError):
            _json.loads(raw)
