"""Land files in object storage atomically, and describe what landed.

A reader of the final path sees either nothing (or the previous version) or the
complete file: bytes go to a temporary object beside it, which is renamed into
place once complete (copy and delete where the filesystem has no rename). The
temporary object is removed on any failure.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

_LOCAL_PROTOCOLS = {"", "file", "local"}
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class LandedFile:
    """A file complete at ``uri`` (``s3://bucket/key``, ``file:///path``; no connection id in it):
    its size, sha256 (hex) and line count."""

    uri: str
    bytes: int
    sha256: str
    lines: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Digest:
    """Running size, sha256 and line count of a byte stream."""

    def __init__(self) -> None:
        self.size = 0
        self.newlines = 0
        self.last = b""
        self.sha = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        if not chunk:
            return
        self.size += len(chunk)
        self.newlines += chunk.count(b"\n")
        self.last = chunk[-1:]
        self.sha.update(chunk)

    @property
    def lines(self) -> int:
        # A last line without its newline still counts.
        return self.newlines + (1 if self.size and self.last != b"\n" else 0)

    def landed(self, uri: str) -> LandedFile:
        return LandedFile(uri=uri, bytes=self.size, sha256=self.sha.hexdigest(), lines=self.lines)


def as_object_storage_path(location: str | os.PathLike[str] | ObjectStoragePath) -> ObjectStoragePath:
    """Return ``location`` as an ``ObjectStoragePath``.

    :param location: an ``ObjectStoragePath``; a URL such as ``s3://bucket/key`` or
        ``s3://conn_id@bucket/key`` (the Airflow connection given in the URL); or a
        local path, absolute or relative to the working directory.
    """
    from airflow.sdk import ObjectStoragePath

    if isinstance(location, ObjectStoragePath):
        return location
    text = os.fspath(location)
    if "://" not in text:
        text = "file://" + os.path.abspath(os.path.expanduser(text))
    return ObjectStoragePath(text)


def _uri(path: ObjectStoragePath) -> str:
    """The object's URI without the Airflow connection id (``s3://bucket/key``), as lineage names it."""
    text = str(path)
    conn_id = getattr(path, "conn_id", None)
    return text.replace(f"://{conn_id}@", "://", 1) if conn_id else text


def _is_local(path: ObjectStoragePath) -> bool:
    return (path.protocol or "") in _LOCAL_PROTOCOLS


def _temp_sibling(final: ObjectStoragePath) -> ObjectStoragePath:
    # Beside the final object: same filesystem (local rename is atomic) and same bucket.
    return final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.partial"


def _commit(tmp: ObjectStoragePath, final: ObjectStoragePath) -> None:
    """Move ``tmp`` onto ``final``: rename where the filesystem has one, else copy then delete."""
    fs = final.fs
    try:
        fs.mv(tmp.path, final.path)
        return
    except NotImplementedError:
        log.debug("%s has no rename; copying %s to %s then deleting it", type(fs).__name__, tmp, final)
    try:
        fs.copy(tmp.path, final.path)
    except NotImplementedError:
        with fs.open(tmp.path, "rb") as src, fs.open(final.path, "wb") as dst:
            while chunk := src.read(_READ_CHUNK):
                dst.write(chunk)
    fs.rm(tmp.path)


def _remove_quietly(path: ObjectStoragePath) -> None:
    try:
        if path.fs.exists(path.path):
            path.fs.rm(path.path)
    except Exception:  # the original error matters more than a failed clean-up
        log.warning("Could not remove the temporary object %s; delete it by hand", path, exc_info=True)


def write_atomically(destination: ObjectStoragePath | str, chunks: Iterable[bytes]) -> LandedFile:
    """Stream ``chunks`` to ``destination`` so that it appears complete or not at all.

    :param destination: the final object (``ObjectStoragePath``, URL or local path).
    :param chunks: the content, in pieces of any size; read once, never held whole.
    :return: where it landed, with its size, sha256 and line count.
    :raises Exception: whatever reading ``chunks`` or writing raised; the temporary
        object is removed first and the final path is left untouched.
    """
    final = as_object_storage_path(destination)
    if _is_local(final):
        final.fs.makedirs(final.parent.path, exist_ok=True)
    tmp = _temp_sibling(final)
    digest = _Digest()
    try:
        with tmp.fs.open(tmp.path, "wb") as out:
            for chunk in chunks:
                digest.update(chunk)
                out.write(chunk)
            if _is_local(final):
                # Durable before it becomes visible under its final name.
                out.flush()
                with contextlib.suppress(AttributeError, OSError, ValueError):
                    os.fsync(out.fileno())
        _commit(tmp, final)
    except BaseException:
        _remove_quietly(tmp)
        raise
    return digest.landed(_uri(final))


def checksum_of(path: ObjectStoragePath | str) -> LandedFile | None:
    """Return the size, sha256 and line count of an existing object, or ``None`` if it is absent.

    Streams the object; used to tell whether a file already landed intact.
    """
    target = as_object_storage_path(path)
    fs = target.fs
    if not fs.exists(target.path) or fs.isdir(target.path):
        return None
    digest = _Digest()
    with fs.open(target.path, "rb") as src:
        while chunk := src.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.landed(_uri(target))
