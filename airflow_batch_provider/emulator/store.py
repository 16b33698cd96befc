"""State on disk under ``--data-dir``: files streamed to disk, batches as JSON.

Layout::

    files/<file_id>.data     file content
    files/<file_id>.json     {"object": FileObject, "seq": n}
    batches/<batch_id>.json  {"object": Batch, "state": engine checkpoint, "seq": n}
    work/<batch_id>.*        a running batch's input link and partial result files
    tmp/                     uploads in flight (emptied at start)

Everything is loaded into memory at start (metadata only), so a restarted
server sees every file and batch it had.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from airflow_batch_provider.emulator import ids
from airflow_batch_provider.emulator.errors import not_found

R = TypeVar("R", bound="_Record")


@dataclass
class _Record:
    object: dict[str, Any]
    seq: int

    @property
    def id(self) -> str:
        return str(self.object["id"])


@dataclass
class FileRecord(_Record):
    """A stored file: its public ``FileObject`` dict and its creation order."""


@dataclass
class BatchRecord(_Record):
    """A stored batch: its public ``Batch`` dict, engine state and creation order."""

    state: dict[str, Any] = field(default_factory=dict)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename), so a crash never leaves half a file.

    :param path: destination.
    :param data: JSON-serializable value.
    """
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    tmp.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, path)


def paginate(records: list[R], after: str | None, limit: int) -> tuple[list[R], bool]:
    """Cursor pagination: the ``limit`` records after the one with id ``after``.

    :param records: records in list order.
    :param after: id of the last record of the previous page, or None.
    :param limit: page size.
    :return: the page and whether more records follow.
    """
    start = 0
    if after:
        positions = [i for i, record in enumerate(records) if record.id == after]
        # An unknown cursor gives an empty page rather than restarting from the top.
        start = positions[0] + 1 if positions else len(records)
    page = records[start : start + limit]
    return page, start + limit < len(records)


class Store:
    """Files and batches of one emulator, on disk and indexed in memory.

    :param data_dir: root directory; created if missing.
    """

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.files_dir = self.root / "files"
        self.batches_dir = self.root / "batches"
        self.work_dir = self.root / "work"
        self.tmp_dir = self.root / "tmp"
        for directory in (self.files_dir, self.batches_dir, self.work_dir, self.tmp_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for leftover in self.tmp_dir.iterdir():  # uploads cut short by a crash
            leftover.unlink(missing_ok=True)
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._seq = 0
        self._load()

    def _load(self) -> None:
        for path in self.files_dir.glob("*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            record = FileRecord(data["object"], data["seq"])
            if self.file_path(record.id).exists():
                self._files[record.id] = record
        for path in self.batches_dir.glob("*.json"):
            data = json.loads(path.read_text(encoding="utf-8"))
            batch = BatchRecord(data["object"], data["seq"], data.get("state", {}))
            self._batches[batch.id] = batch
        seqs = [r.seq for r in self._files.values()] + [r.seq for r in self._batches.values()]
        self._seq = max(seqs, default=0)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # Files --------------------------------------------------------------------------------

    def new_upload_path(self) -> Path:
        """A fresh temporary path for an upload in flight."""
        return self.tmp_dir / f"upload-{uuid.uuid4().hex}"

    def file_path(self, file_id: str) -> Path:
        """Where a file's content lives.

        :param file_id: the file id.
        """
        return self.files_dir / f"{file_id}.data"

    def add_file(
        self,
        source: Path,
        *,
        filename: str,
        purpose: str,
        expires_at: int | None,
        file_id: str | None = None,
    ) -> dict[str, Any]:
        """Move ``source`` into the store as a new file and return its ``FileObject`` dict.

        :param source: a file on the same filesystem (moved, not copied); if it is gone but
            the target exists, a move interrupted by a crash is completed.
        :param filename: the client's file name.
        :param purpose: ``batch``, ``batch_output``, ...
        :param expires_at: unix time when the file expires, or None.
        :param file_id: the id to use (result files pick theirs before they exist).
        """
        file_id = file_id or ids.file_id()
        target = self.file_path(file_id)
        if source.exists() or not target.exists():
            os.replace(source, target)
        obj = {
            "id": file_id,
            "object": "file",
            "bytes": target.stat().st_size,
            "created_at": ids.now(),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "expires_at": expires_at,
            "status_details": None,
        }
        record = FileRecord(obj, self._next_seq())
        write_json(self.files_dir / f"{file_id}.json", {"object": obj, "seq": record.seq})
        self._files[file_id] = record
        return obj

    def has_file(self, file_id: str) -> bool:
        """Whether a live file with this id exists.

        :param file_id: the file id.
        """
        return self._live_file(file_id) is not None

    def _live_file(self, file_id: str) -> FileRecord | None:
        record = self._files.get(file_id)
        if record is None:
            return None
        expires_at = record.object.get("expires_at")
        if expires_at is not None and expires_at <= ids.now():
            self.delete_file(file_id)  # files expire lazily, when next looked at
            return None
        return record

    def get_file(self, file_id: str) -> dict[str, Any]:
        """Return a file's ``FileObject`` dict.

        :param file_id: the file id.
        :raises APIError: 404 if there is no such file.
        """
        record = self._live_file(file_id)
        if record is None:
            raise not_found(f"No such File object: {file_id}", param="id")
        return record.object

    def delete_file(self, file_id: str) -> None:
        """Delete a file's content and metadata.

        :param file_id: the file id.
        :raises APIError: 404 if there is no such file.
        """
        if self._files.pop(file_id, None) is None:
            raise not_found(f"No such File object: {file_id}", param="id")
        self.file_path(file_id).unlink(missing_ok=True)
        (self.files_dir / f"{file_id}.json").unlink(missing_ok=True)

    def list_files(
        self, *, purpose: str | None, after: str | None, limit: int, order: str
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of files.

        :param purpose: only files with this purpose.
        :param after: cursor (a file id).
        :param limit: page size.
        :param order: ``asc`` or ``desc`` by creation.
        """
        records = [r for r in list(self._files.values()) if self._live_file(r.id) is not None]
        if purpose:
            records = [r for r in records if r.object["purpose"] == purpose]
        records.sort(key=lambda r: r.seq, reverse=order == "desc")
        page, has_more = paginate(records, after, limit)
        return [r.object for r in page], has_more

    # Batches ------------------------------------------------------------------------------

    def add_batch(self, obj: dict[str, Any], state: dict[str, Any]) -> BatchRecord:
        """Store a new batch.

        :param obj: the public ``Batch`` dict.
        :param state: engine state (checkpoint, deadline).
        """
        record = BatchRecord(obj, self._next_seq(), state)
        self._batches[record.id] = record
        self.save_batch(record)
        return record

    def save_batch(self, record: BatchRecord) -> None:
        """Persist a batch after a change.

        :param record: the batch.
        """
        data = {"object": record.object, "seq": record.seq, "state": record.state}
        write_json(self.batches_dir / f"{record.id}.json", data)

    def get_batch(self, batch_id: str) -> BatchRecord:
        """Return a batch.

        :param batch_id: the batch id.
        :raises APIError: 404 if there is no such batch.
        """
        record = self._batches.get(batch_id)
        if record is None:
            raise not_found(f"No batch found with id '{batch_id}'.", param="batch_id")
        return record

    def batches(self, where: Callable[[BatchRecord], bool] | None = None) -> list[BatchRecord]:
        """Every batch, newest first.

        :param where: optional filter.
        """
        records = sorted(self._batches.values(), key=lambda r: r.seq, reverse=True)
        return [r for r in records if where is None or where(r)]

    def list_batches(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of batches, newest first.

        :param after: cursor (a batch id).
        :param limit: page size.
        """
        page, has_more = paginate(self.batches(), after, limit)
        return [r.object for r in page], has_more

    def work_path(self, batch_id: str, kind: str) -> Path:
        """A running batch's working file: ``input``, ``output`` or ``error``.

        :param batch_id: the batch id.
        :param kind: which file.
        """
        return self.work_dir / f"{batch_id}.{kind}"

    def link_input(self, batch_id: str, file_id: str) -> Path:
        """Pin a batch's input: a hard link (or copy) survives deletion of the input file.

        :param batch_id: the batch id.
        :param file_id: its input file.
        """
        target = self.work_path(batch_id, "input")
        if not target.exists():
            try:
                os.link(self.file_path(file_id), target)
            except OSError:
                shutil.copyfile(self.file_path(file_id), target)
        return target

    def clear_work(self, batch_id: str) -> None:
        """Remove a finished batch's working files.

        :param batch_id: the batch id.
        """
        for path in self.work_dir.glob(f"{batch_id}.*"):
            path.unlink(missing_ok=True)

    def iter_file(self, file_id: str, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """Stream a file's content.

        :param file_id: the file id.
        :param chunk_size: bytes per chunk.
        """
        with self.file_path(file_id).open("rb") as fh:
            while chunk := fh.read(chunk_size):
                yield chunk
