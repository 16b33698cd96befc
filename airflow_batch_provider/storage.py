"""Land files in object storage atomically, and describe what landed.

A reader of the final path sees either nothing (or the previous version) or the
complete file: bytes go to a temporary object beside it, which is renamed into
place once complete (copy and delete where the filesystem has no rename). The
temporary object is removed on any failure.

Local destinations (plain paths, ``file://``) are written with plain ``open`` and
``os.replace``, never through fsspec: its first use loads every provider's
filesystem. Receiving and writing overlap: a writer thread hashes, counts and
writes (hashlib and file writes release the GIL) while the caller receives the next
chunks, through a bounded queue, so memory stays the same whatever the size.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import posixpath
import queue
import re
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import ObjectStoragePath

log = logging.getLogger(__name__)

_LOCAL_PROTOCOLS = {"", "file", "local"}
_READ_CHUNK = 1024 * 1024
_BATCH = 1024 * 1024  # bytes handed to the writer thread at a time
_QUEUE_DEPTH = 4  # batches in flight: at most ~6 MiB held, whatever the file size
_WRITEBACK = 8 * 1024 * 1024  # start flushing local data to disk every 8 MiB


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


def _count_newlines(chunk: bytes) -> int:
    # find() is memchr, several times faster than count()'s byte loop over long lines (result
    # lines are ~1 KB and up); where lines are short, count() takes over after a few.
    limit = len(chunk) >> 10
    found = 0
    at = chunk.find(b"\n")
    while at >= 0:
        found += 1
        if found > limit:
            return found + chunk.count(b"\n", at + 1)
        at = chunk.find(b"\n", at + 1)
    return found


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
        self.newlines += _count_newlines(chunk)
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


def conn_id_of(path: ObjectStoragePath) -> str | None:
    """The Airflow connection of ``path``, if any.

    An attribute from Airflow 3.2; before, only a storage option (``path.conn_id`` is absent).
    """
    conn_id = getattr(path, "conn_id", None)
    if conn_id is None:
        conn_id = (getattr(path, "storage_options", None) or {}).get("conn_id")
    return conn_id or None


def public_uri(uri: str | None) -> str | None:
    """``uri`` as it may be logged or recorded (XCom, manifests, lineage, errors).

    Drops any ``user[:password]@`` (``ObjectStoragePath`` keeps the connection id there) and,
    except for local files (where ``?`` and ``#`` are part of a file name), the query and
    fragment: a presigned URL's signature or a SAS token lives there. The one function for
    this: every URI that leaves the task goes through it.

    String surgery only (no URL parsing, which rejects some hosts), so the rest is kept byte
    for byte, and nothing before the last ``@`` of the authority can survive.
    """
    if not uri:
        return uri
    text = str(uri)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text  # a plain local path
    authority, slash, tail = rest.partition("/")
    host = authority.rpartition("@")[2]
    if scheme.lower() in _LOCAL_PROTOCOLS:
        return f"{scheme}://{host}{slash}{tail}"
    host = re.split(r"[?#]", host, maxsplit=1)[0]
    if slash:
        tail = re.split(r"[?#]", tail, maxsplit=1)[0]
    return f"{scheme}://{host}{slash}{tail}"


_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()]+")


def public_text(text: str) -> str:
    """``text`` (an error message, say) with every URL in it passed through :func:`public_uri`."""
    return _URL_IN_TEXT.sub(lambda m: public_uri(m.group()) or "", text)


#: A name under a landing destination: one path segment, never ``.`` or ``..``.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,255}")


def landing_path(destination: str | os.PathLike[str] | ObjectStoragePath, *names: str) -> ObjectStoragePath:
    """``destination/name/...``, the one way a landing path is built.

    Each name must be a single segment of letters, digits, ``.``, ``_`` or ``-`` (not ``.``
    or ``..``): no separator, no absolute path, nothing empty. The joined path is then
    checked to lie under ``destination`` (same storage, same connection), for local paths
    and object stores alike.

    :param destination: the destination directory (``ObjectStoragePath``, URL or local path).
    :param names: the segments below it, e.g. a batch id and ``output.jsonl``.
    :raises UnsafeIdError: a name could leave the destination.
    """
    from airflow_batch_provider.exceptions import UnsafeIdError
    from airflow_batch_provider.ids import shown

    base = as_object_storage_path(destination)
    where = public_uri(str(base))
    for name in names:
        if not (isinstance(name, str) and _SAFE_NAME.fullmatch(name)) or name in (".", ".."):
            raise UnsafeIdError(
                f"Refusing to land {shown(name)} under {where}: a name there must be one segment of "
                "1 to 255 letters, digits, '.', '_' or '-', and not '.' or '..'. Nothing was written."
            )
    target = base
    for name in names:
        target = target / name
    if not _is_under(target, base):
        raise UnsafeIdError(f"Refusing to land {public_uri(str(target))}: it is not under {where}.")
    return target


def _is_under(target: ObjectStoragePath, base: ObjectStoragePath) -> bool:
    if (target.protocol or "") != (base.protocol or "") or conn_id_of(target) != conn_id_of(base):
        return False
    if _is_local(base):
        inner, outer = os.path.normpath(target.path), os.path.normpath(base.path)
        return inner != outer and os.path.commonpath([inner, outer]) == outer
    inner, outer = posixpath.normpath(target.path), posixpath.normpath(base.path).rstrip("/")
    return inner.startswith(outer + "/")


def uri_of(path: ObjectStoragePath) -> str:
    """The object's URI as it may be recorded (:func:`public_uri` of it), as lineage names it.

    ``str(path)`` carries the connection id as user info (``s3://conn@bucket/key``) in every
    supported Airflow, whether the path was made from such a URL or with ``conn_id=``. Airflow
    3.1 spells an ``http(s)`` path with its scheme twice (``http://http://host/x``): once is kept.
    """
    text = str(path)
    doubled = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://\1://", text)
    if doubled:
        text = text[len(doubled.group(1)) + 3 :]
    return public_uri(text) or text


_uri = uri_of


def _is_local(path: ObjectStoragePath) -> bool:
    # Reads the URL only: ``path.fs`` would load every provider's filesystem.
    return (path.protocol or "") in _LOCAL_PROTOCOLS


def _temp_name(name: str) -> str:
    # Beside the final object: same filesystem (local rename is atomic) and same bucket.
    return f".{name}.{uuid.uuid4().hex[:12]}.partial"


def _pump(
    chunks: Iterable[bytes], out: IO[bytes], after_write: Callable[[int], None] | None = None
) -> _Digest:
    """Write ``chunks`` to ``out`` on a writer thread while this thread reads the next ones.

    :param after_write: called on the writer thread with the total written so far.
    :raises Exception: what reading ``chunks`` or writing raised (writes queued before
        a read error are finished first; the caller discards the object anyway).
    """
    digest = _Digest()
    pending: queue.Queue[list[bytes] | None] = queue.Queue(maxsize=_QUEUE_DEPTH)
    failed: list[BaseException] = []

    def write() -> None:
        try:
            while (batch := pending.get()) is not None:
                for chunk in batch:
                    digest.update(chunk)
                    out.write(chunk)
                if after_write is not None:
                    after_write(digest.size)
        except BaseException as err:
            failed.append(err)
            while pending.get() is not None:  # keep taking so the reader never blocks on a full queue
                pass

    writer = threading.Thread(target=write, name="batch-landing-writer", daemon=True)
    writer.start()
    try:
        batch: list[bytes] = []
        size = 0
        for chunk in chunks:
            batch.append(chunk)
            size += len(chunk)
            if size >= _BATCH:
                pending.put(batch)
                batch, size = [], 0
                if failed:
                    break
        pending.put(batch)
    finally:
        pending.put(None)
        writer.join()
    if failed:
        with contextlib.suppress(Exception):
            getattr(chunks, "close", lambda: None)()  # release the source (a response) now
        raise failed[0]
    return digest


def _write_local(path: str, chunks: Iterable[bytes]) -> _Digest:
    """Land ``chunks`` at local ``path`` through a temporary file beside it and ``os.replace``."""
    directory, name = os.path.split(path)
    directory = directory or "."
    created = _missing_dirs(directory)
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, _temp_name(name))
    try:
        with open(tmp, "xb") as out:
            flushed = 0

            def start_writeback(written: int) -> None:
                # DONTNEED on pages just written starts their writeback without waiting (dirty
                # pages stay cached), so the closing fsync has little left (Linux; else fsync does all).
                nonlocal flushed
                if written - flushed >= _WRITEBACK and hasattr(os, "posix_fadvise"):
                    out.flush()
                    with contextlib.suppress(OSError):
                        os.posix_fadvise(out.fileno(), flushed, written - flushed, os.POSIX_FADV_DONTNEED)
                    flushed = written

            digest = _pump(chunks, out, start_writeback)
            out.flush()
            os.fsync(out.fileno())  # durable before it becomes visible under its final name
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    # The rename lives in the directory: sync it (and every directory made for it, in its
    # parent) or a power cut can lose the file even though its bytes are on disk.
    for synced in [directory, *(os.path.dirname(d) or "." for d in created)]:
        _fsync_dir(synced)
    return digest


def _missing_dirs(directory: str) -> list[str]:
    """The directories ``os.makedirs(directory)`` is about to create, deepest first."""
    missing = []
    current = os.path.abspath(directory)
    while not os.path.isdir(current):
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return missing


def _fsync_dir(directory: str) -> None:
    """Flush a directory's entries to disk (POSIX; where a directory cannot be opened, a no-op)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory: nothing more can be done
        pass
    finally:
        os.close(fd)


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


def _remove_quietly(fs: Any, path: ObjectStoragePath) -> None:
    """Remove a temporary object a failed write may have left; warn only if one may remain."""
    try:
        if not fs.exists(path.path):
            return
    except FileNotFoundError:  # no such bucket or container: nothing can be there
        return
    except Exception as err:
        log.warning(
            "Could not check whether the temporary object %s was left behind (%s); look for it",
            public_uri(str(path)),
            public_text(str(err)),
        )
        return
    try:
        fs.rm(path.path)
    except Exception:  # the original error matters more than a failed clean-up
        log.warning(
            "Could not remove the temporary object %s; delete it by hand",
            public_uri(str(path)),
            exc_info=True,
        )


def _write_remote(final: ObjectStoragePath, chunks: Iterable[bytes]) -> _Digest:
    tmp = final.parent / _temp_name(final.name)
    # No filesystem for the scheme, or a refused open: nothing was written, nothing to remove.
    fs = final.fs
    out = fs.open(tmp.path, "wb")
    try:
        with out:
            digest = _pump(chunks, out)
        _commit(tmp, final)
    except BaseException:
        _remove_quietly(fs, tmp)
        raise
    return digest


def write_atomically(destination: ObjectStoragePath | str, chunks: Iterable[bytes]) -> LandedFile:
    """Stream ``chunks`` to ``destination`` so that it appears complete or not at all.

    :param destination: the final object (``ObjectStoragePath``, URL or local path).
    :param chunks: the content, in pieces of any size; read once, never held whole.
    :return: where it landed, with its size, sha256 and line count.
    :raises Exception: whatever reading ``chunks`` or writing raised; the temporary
        object is removed first and the final path is left untouched.
    """
    final = as_object_storage_path(destination)
    digest = _write_local(final.path, chunks) if _is_local(final) else _write_remote(final, chunks)
    return digest.landed(_uri(final))


def checksum_of(path: ObjectStoragePath | str) -> LandedFile | None:
    """Return the size, sha256 and line count of an existing object, or ``None`` if it is absent.

    Streams the object; used to tell whether a file already landed intact.
    """
    target = as_object_storage_path(path)
    digest = _Digest()
    if _is_local(target):
        if not os.path.isfile(target.path):
            return None
        opened: IO[bytes] = open(target.path, "rb")
    else:
        fs = target.fs
        if not fs.exists(target.path) or fs.isdir(target.path):
            return None
        opened = fs.open(target.path, "rb")
    with opened as src:
        while chunk := src.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.landed(_uri(target))
