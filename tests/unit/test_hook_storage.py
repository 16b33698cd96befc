"""storage.py: atomic landing of streamed files, and their size/sha256/line count."""

from __future__ import annotations

import hashlib
import os

import pytest

from airflow_batch_provider import storage
from airflow_batch_provider.storage import (
    LandedFile,
    as_object_storage_path,
    checksum_of,
    conn_id_of,
    public_uri,
    write_atomically,
)


def test_lands_a_stream_and_describes_it(tmp_path):
    chunks = [b'{"a": 1}\n{"b"', b": 2}\n", b'{"c": 3}']
    landed = write_atomically(str(tmp_path / "deep" / "dir" / "out.jsonl"), iter(chunks))
    data = b"".join(chunks)
    assert (tmp_path / "deep" / "dir" / "out.jsonl").read_bytes() == data
    assert landed == LandedFile(
        uri=f"file://{tmp_path}/deep/dir/out.jsonl",
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        lines=3,
    )
    assert landed.to_dict()["lines"] == 3


@pytest.mark.parametrize(("data", "lines"), [(b"", 0), (b"\n", 1), (b"x", 1), (b"x\ny\n", 2)])
def test_line_count(tmp_path, data, lines):
    assert write_atomically(tmp_path / "f", [data]).lines == lines


def test_failure_midway_leaves_the_previous_file_and_no_temp(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")

    def broken():
        yield b"new partial"
        raise ConnectionResetError("cut")

    with pytest.raises(ConnectionResetError):
        write_atomically(target, broken())
    assert target.read_bytes() == b"old\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]


def test_replaces_an_existing_file(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    write_atomically(target, [b"new\n"])
    assert target.read_bytes() == b"new\n"


def test_copy_and_delete_where_there_is_no_rename(tmp_path, monkeypatch):
    # The object-store path (s3://, gs://, ...), run on the local filesystem with its rename removed.
    monkeypatch.setattr(storage, "_LOCAL_PROTOCOLS", set())
    (tmp_path / "run1").mkdir()
    dest = as_object_storage_path(tmp_path / "run1" / "out.jsonl")
    fs = dest.fs
    copied = []
    real_copy = fs.copy

    def no_rename(*args, **kwargs):
        raise NotImplementedError

    def spy_copy(src, dst, **kwargs):
        copied.append((src, dst))
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr(fs, "mv", no_rename)
    monkeypatch.setattr(fs, "copy", spy_copy)
    landed = write_atomically(dest, [b"a\n", b"b\n"])
    assert (tmp_path / "run1" / "out.jsonl").read_bytes() == b"a\nb\n"
    assert landed.lines == 2 and len(copied) == 1 and copied[0][1] == dest.path
    assert os.listdir(tmp_path / "run1") == ["out.jsonl"]


def test_local_landing_never_loads_fsspec(tmp_path, monkeypatch):
    # ObjectStoragePath.fs loads every provider's filesystem (~10 MB): local paths must not need it.
    from airflow.sdk import ObjectStoragePath

    def no_fs(self):
        raise AssertionError("ObjectStoragePath.fs used for a local path")

    monkeypatch.setattr(ObjectStoragePath, "fs", property(no_fs))
    dest = as_object_storage_path(f"file://{tmp_path}/a/out.jsonl")
    landed = write_atomically(dest, [b"x\n"])
    assert checksum_of(dest) == landed and checksum_of(tmp_path / "a" / "nope") is None


def test_many_batches_land_whole_and_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(storage, "_WRITEBACK", 1 << 20)  # exercise the early writeback too
    chunks = [(b"%06d " % i) * 9000 + b"\n" for i in range(100)]  # ~6 MiB, many writer batches
    landed = write_atomically(tmp_path / "big.jsonl", iter(chunks))
    data = b"".join(chunks)
    assert (tmp_path / "big.jsonl").read_bytes() == data
    assert (landed.bytes, landed.sha256, landed.lines) == (len(data), hashlib.sha256(data).hexdigest(), 100)


def test_writer_failure_stops_the_reader_and_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "out.jsonl"
    target.write_bytes(b"old\n")
    real_update = storage._Digest.update

    def fail_after_2_mib(digest, chunk):
        if digest.size > 2 << 20:
            raise OSError(28, "No space left on device")
        real_update(digest, chunk)

    monkeypatch.setattr(storage._Digest, "update", fail_after_2_mib)
    read = []
    closed = []

    def source():
        try:
            for i in range(10_000):  # 640 MB if the reader did not stop
                read.append(i)
                yield b"y" * 65535 + b"\n"
        finally:
            closed.append(True)

    with pytest.raises(OSError, match="No space"):
        write_atomically(target, source())
    assert target.read_bytes() == b"old\n" and os.listdir(tmp_path) == ["out.jsonl"]
    assert len(read) < 200 and closed == [True]


def test_checksum_of_matches_what_landed(tmp_path):
    target = tmp_path / "x.jsonl"
    landed = write_atomically(target, [b"1\n2\n3"])
    assert checksum_of(str(target)) == landed
    assert checksum_of(tmp_path / "missing.jsonl") is None
    assert checksum_of(tmp_path) is None


def test_as_object_storage_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = as_object_storage_path("rel/out.jsonl")
    assert local.protocol == "file" and local.path == f"{tmp_path}/rel/out.jsonl"
    s3 = as_object_storage_path("s3://aws_x@bucket/key/out.jsonl")
    # ``conn_id_of``, not ``.conn_id``: Airflow < 3.2 keeps it in the storage options only.
    assert (s3.protocol, conn_id_of(s3), s3.key) == ("s3", "aws_x", "key/out.jsonl")
    assert storage._uri(s3) == "s3://bucket/key/out.jsonl"
    assert as_object_storage_path(s3) is s3
    assert conn_id_of(local) is None


def test_uri_never_carries_the_connection_id():
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath("s3://bucket/evals/", conn_id="aws_x") / "b1" / "out.jsonl"
    assert conn_id_of(path) == "aws_x"
    assert storage._uri(path) == "s3://bucket/evals/b1/out.jsonl"
    assert public_uri("s3://user:pa55@bucket/k@v") == "s3://bucket/k@v"
    assert public_uri("file:///tmp/a@b") == "file:///tmp/a@b"
    assert public_uri("/tmp/a") == "/tmp/a"


def test_the_directory_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """A landed file survives a power cut only once the directory entry of its rename is on disk.

    A power cut cannot be simulated here, so this records what reaches the disk: every
    ``os.fsync`` (file or directory, by what the descriptor is) in order with ``os.replace``.
    """
    import stat

    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        events.append(
            ("fsync-dir", os.readlink(f"/proc/self/fd/{fd}")) if stat.S_ISDIR(mode) else ("fsync-file",)
        )
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(dst)))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    (tmp_path / "dest").mkdir()
    target = tmp_path / "dest" / "new" / "deeper" / "out.jsonl"  # two directories made for it

    write_atomically(str(target), [b"x\n"])

    assert events[:2] == [("fsync-file",), ("replace", str(target))]
    # Then the file's directory and each directory made for it, in its parent.
    assert events[2:] == [
        ("fsync-dir", str(tmp_path / "dest" / "new" / "deeper")),
        ("fsync-dir", str(tmp_path / "dest" / "new")),
        ("fsync-dir", str(tmp_path / "dest")),
    ]
    events.clear()
    write_atomically(str(target), [b"y\n"])  # the directories exist now: only the file's is synced
    assert events[2:] == [("fsync-dir", str(target.parent))]
