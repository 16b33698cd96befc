"""iter_lines and sharding: limits, determinism, never splitting a line."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_batch_provider.batch_file import (
    ShardInfo,
    ShardLimits,
    iter_lines,
    iter_shard_lines,
    plan_shards,
    validate_lines,
)
from airflow_batch_provider.exceptions import BatchFileError


def line(i: int, size: int = 0) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x" * size}]}
    return (
        json.dumps({"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body})
        + "\n"
    ).encode()


def embedding_line(i: int, inputs: int) -> bytes:
    data = {
        "custom_id": f"e-{i}",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": [f"text {i}.{k}" for k in range(inputs)]},
    }
    return (json.dumps(data) + "\n").encode()


def shard_bytes(lines: list[bytes], shard: ShardInfo) -> bytes:
    return b"".join(iter_shard_lines(iter(lines), shard))


# --- iter_lines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 64, 1 << 20])
def test_iter_lines_gives_back_the_file_at_any_chunk_size(chunk_size: int) -> None:
    data = b"".join(line(i, size=i * 13) for i in range(20)) + b"last line without newline"
    lines = list(iter_lines(io.BytesIO(data), chunk_size))
    assert b"".join(lines) == data
    assert lines == data.splitlines(keepends=True)


def test_iter_lines_keeps_blank_lines_and_handles_edges() -> None:
    assert list(iter_lines(io.BytesIO(b""))) == []
    assert list(iter_lines(io.BytesIO(b"\n\na\n"), 1)) == [b"\n", b"\n", b"a\n"]
    assert list(iter_lines(io.BytesIO(b"a\r\nb"), 3)) == [b"a\r\n", b"b"]


def test_iter_lines_reads_a_line_longer_than_many_chunks() -> None:
    big = b"z" * 100_000 + b"\n"
    assert list(iter_lines(io.BytesIO(big + b"a\n"), 1000)) == [big, b"a\n"]


def test_iter_lines_is_lazy() -> None:
    class Reader:
        reads = 0

        def read(self, size: int) -> bytes:
            self.reads += 1
            return b"a\n" * 10

    reader = Reader()
    first = next(iter_lines(reader, 20))
    assert first == b"a\n" and reader.reads == 1


def test_iter_lines_rejects_text_files() -> None:
    with pytest.raises(TypeError, match="binary"):
        list(iter_lines(io.StringIO("a\n")))


# --- limits ----------------------------------------------------------------------------------------


def test_shard_limits_default_to_the_service_and_must_be_positive() -> None:
    assert ShardLimits() == ShardLimits(
        max_requests=50_000, max_bytes=200 * 1024 * 1024, max_embedding_inputs=50_000
    )
    for bad in ({"max_requests": 0}, {"max_bytes": -1}, {"max_embedding_inputs": 1.5}):
        with pytest.raises(ValueError, match="positive integer"):
            ShardLimits(**bad)


def test_small_file_is_one_shard_with_its_own_hash() -> None:
    lines = [line(i) for i in range(5)]
    (shard,) = plan_shards(lines)
    data = b"".join(lines)
    assert shard == ShardInfo(0, 1, 5, len(data), 0, hashlib.sha256(data).hexdigest())
    assert shard_bytes(lines, shard) == data


def test_default_request_limit_splits_at_50000() -> None:
    lines = [line(i) for i in range(50_001)]
    shards = plan_shards(lines)
    assert [(s.start_line, s.line_count) for s in shards] == [(1, 50_000), (50_001, 1)]


def test_request_limit() -> None:
    lines = [line(i) for i in range(10)]
    shards = plan_shards(lines, ShardLimits(max_requests=3))
    assert [(s.index, s.start_line, s.line_count) for s in shards] == [
        (0, 1, 3),
        (1, 4, 3),
        (2, 7, 3),
        (3, 10, 1),
    ]


def test_byte_limit_is_filled_exactly() -> None:
    lines = [line(i) for i in range(4)]  # same length
    limit = 2 * len(lines[0])
    shards = plan_shards(lines, ShardLimits(max_bytes=limit))
    assert [(s.line_count, s.byte_count) for s in shards] == [(2, limit), (2, limit)]
    assert [s.line_count for s in plan_shards(lines, ShardLimits(max_bytes=limit - 1))] == [1, 1, 1, 1]


def test_byte_limit_is_never_exceeded_and_shards_are_greedy() -> None:
    lines = [line(i, size=(i * 37) % 200) for i in range(40)]
    limit = 2 * max(map(len, lines))
    shards = plan_shards(lines, ShardLimits(max_bytes=limit))
    for shard in shards:
        assert shard.byte_count <= limit
        assert len(shard_bytes(lines, shard)) == shard.byte_count
    for before, after in zip(shards, shards[1:], strict=False):  # the next line did not fit
        assert before.byte_count + len(lines[after.start_line - 1]) > limit


def test_embedding_input_limit() -> None:
    lines = [embedding_line(i, 3) for i in range(5)]
    shards = plan_shards(lines, ShardLimits(max_embedding_inputs=7))
    assert [(s.line_count, s.embedding_inputs) for s in shards] == [(2, 6), (2, 6), (1, 3)]


def test_chat_lines_mentioning_embeddings_count_no_inputs() -> None:
    raw = line(0).replace(b'"content": ""', b'"content": "/v1/embeddings embeddings"')
    assert b"/v1/embeddings" in raw
    assert plan_shards([raw], ShardLimits(max_embedding_inputs=1))[0].embedding_inputs == 0


def test_a_line_over_the_byte_limit_alone_cannot_be_sharded() -> None:
    lines = [line(0), line(1, size=500)]
    with pytest.raises(BatchFileError, match="line 2 alone"):
        plan_shards(lines, ShardLimits(max_bytes=300))


def test_a_line_over_the_embedding_limit_alone_cannot_be_sharded() -> None:
    with pytest.raises(BatchFileError, match="line 1 alone"):
        plan_shards([embedding_line(0, 5)], ShardLimits(max_embedding_inputs=4))


# --- no split, determinism, consistency --------------------------------------------------------------


def test_shards_never_split_a_line_and_cover_every_line_in_order() -> None:
    lines = [line(i, size=(i * 53) % 300) for i in range(100)]
    shards = plan_shards(lines, ShardLimits(max_requests=9, max_bytes=2_000))
    rebuilt: list[bytes] = []
    for shard in shards:
        got = list(iter_shard_lines(iter(lines), shard))
        assert got == lines[shard.start_line - 1 : shard.start_line - 1 + shard.line_count]
        rebuilt.extend(got)
    assert rebuilt == lines
    assert [s.index for s in shards] == list(range(len(shards)))


def test_planning_is_deterministic_across_runs_and_chunk_sizes(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(line(i, size=i % 97) for i in range(500)))
    limits = ShardLimits(max_requests=120, max_bytes=20_000)
    plans = []
    for chunk_size in (1 << 20, 4096, 333):
        with path.open("rb") as fileobj:
            plans.append(plan_shards(iter_lines(fileobj, chunk_size), limits))
    assert plans[0] == plans[1] == plans[2] and len(plans[0]) > 2


def test_blank_lines_belong_to_no_shard_and_line_numbers_are_the_files() -> None:
    lines = [line(0), b"\n", line(1), line(2)]
    shards = plan_shards(lines, ShardLimits(max_requests=1))
    assert [(s.start_line, s.line_count) for s in shards] == [(1, 1), (3, 1), (4, 1)]
    assert shard_bytes(lines, shards[1]) == line(1)


def test_last_line_without_newline_gets_one_in_its_shard() -> None:
    lines = [line(0), line(1).rstrip(b"\n")]
    (shard,) = plan_shards(lines)
    data = shard_bytes(lines, shard)
    assert data == line(0) + line(1) and shard.byte_count == len(data)
    assert shard.sha256 == hashlib.sha256(data).hexdigest()


def test_every_shard_of_a_sharded_file_validates_under_the_limits() -> None:
    lines = [embedding_line(i, 1 + i % 4) for i in range(60)]
    limits = ShardLimits(max_requests=25, max_bytes=4_000, max_embedding_inputs=40)
    report = validate_lines(lines, limits=ShardLimits(10**9, 10**12, 10**9))
    assert report.ok
    for shard in plan_shards(lines, limits):
        assert validate_lines(iter_shard_lines(iter(lines), shard), limits=limits).ok


def test_iter_shard_lines_stops_reading_after_its_shard() -> None:
    lines = [line(i) for i in range(10)]
    first = plan_shards(lines, ShardLimits(max_requests=4))[0]

    def source() -> Iterator[bytes]:
        yield from lines[:4]
        raise AssertionError("read past the shard")

    assert list(iter_shard_lines(source(), first)) == lines[:4]


def test_iter_shard_lines_detects_a_changed_input() -> None:
    lines = [line(i) for i in range(6)]
    shard = plan_shards(lines, ShardLimits(max_requests=3))[1]
    changed = lines[:4] + [line(99)] + lines[5:]
    consumed: list[Any] = []
    with pytest.raises(BatchFileError, match="changed since"):
        for raw in iter_shard_lines(iter(changed), shard):
            consumed.append(raw)
    assert len(consumed) < shard.line_count  # the consumer never sees a complete shard
    with pytest.raises(BatchFileError):
        list(iter_shard_lines(iter(lines[:4]), shard))  # too short
    assert len(list(iter_shard_lines(iter(changed), shard, verify=False))) == 3


def test_shard_info_to_dict() -> None:
    (shard,) = plan_shards([line(0)])
    assert shard.to_dict() == {
        "index": 0,
        "start_line": 1,
        "line_count": 1,
        "byte_count": len(line(0)),
        "embedding_inputs": 0,
        "sha256": hashlib.sha256(line(0)).hexdigest(),
    }
