"""Streaming ``multipart/form-data`` parsing straight to disk.

Starlette's ``request.form()`` would spool the file to a temporary file and
then we would copy it; parsing the body stream ourselves writes each chunk once
to its final place and keeps memory flat whatever the file size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from airflow_batch_provider.emulator.errors import bad_request

MAX_FIELD_BYTES = 64 * 1024
#: Parts of one upload: ``file``, ``purpose``, ``expires_after[anchor]``, ``expires_after[seconds]``
#: and a little room. Any more is refused, so text fields cannot pile up in memory.
MAX_PARTS = 8


@dataclass
class Upload:
    """A parsed upload.

    :param fields: the form's text fields (``purpose``, ``expires_after[seconds]``, ...).
    :param filename: the ``file`` part's file name, or None if there was no file part.
    :param size: bytes of the file part.
    :param too_large: the file exceeded the size cap (its bytes were dropped).
    :param parts: how many parts the body had (those past :data:`MAX_PARTS` were dropped).
    """

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0
    too_large: bool = False
    parts: int = 0


class _Collector:
    """Multipart callbacks: text fields into memory, the ``file`` part into ``sink``."""

    def __init__(self, sink: IO[bytes], max_bytes: int) -> None:
        self.sink = sink
        self.max_bytes = max_bytes
        self.upload = Upload()
        self.pending: list[bytes] = []
        self._headers: dict[str, str] = {}
        self._name = b""
        self._value = b""
        self._part_name: str | None = None
        self._is_file = False
        self._field = bytearray()

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": self.header_field,
            "on_header_value": self.header_value,
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_part_end": self.part_end,
        }

    def part_begin(self) -> None:
        self._headers, self._field = {}, bytearray()
        self.upload.parts += 1

    def header_field(self, data: bytes, start: int, end: int) -> None:
        self._name += data[start:end]

    def header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def header_end(self) -> None:
        self._headers[self._name.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._name, self._value = b"", b""

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        if self.upload.parts > MAX_PARTS:  # read on, keep nothing: the request fails at the end
            self._part_name, self._is_file = None, False
            return
        self._part_name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        # Only the first ``file`` part is the upload; any other file part is ignored.
        self._is_file = filename is not None and self._part_name == "file" and self.upload.filename is None
        if self._is_file:
            self.upload.filename = (filename or b"").decode("utf-8", "replace")

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.upload.size += end - start
            if self.upload.size > self.max_bytes:
                self.upload.too_large = True
            elif end > start:
                self.pending.append(data[start:end])
        elif self._part_name and len(self._field) + end - start <= MAX_FIELD_BYTES:
            self._field += data[start:end]

    def part_end(self) -> None:
        if not self._is_file and self._part_name:
            self.upload.fields[self._part_name] = self._field.decode("utf-8", "replace")
        self._is_file = False

    def flush(self) -> None:
        if self.pending and not self.upload.too_large:
            self.sink.writelines(self.pending)
        self.pending.clear()


async def receive_upload(request: Request, destination: Path, max_bytes: int) -> Upload:
    """Parse a multipart request body, writing the ``file`` part to ``destination``.

    The whole body is always read, even past ``max_bytes``, so the client gets the
    error response rather than a broken connection.

    :param request: the incoming request.
    :param destination: where the file's bytes go.
    :param max_bytes: size cap of the file part.
    :raises APIError: 400 if the body is not multipart/form-data.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise bad_request("Uploads must be sent as multipart/form-data with a 'file' and a 'purpose'.")
    with destination.open("wb") as sink:
        collector = _Collector(sink, max_bytes)
        parser = MultipartParser(boundary, collector.callbacks())
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                collector.flush()
            parser.finalize()
        except ValueError as exc:  # python-multipart raises MultipartParseError (a ValueError)
            raise bad_request(f"The multipart body could not be parsed: {exc}") from None
        collector.flush()
    if collector.upload.parts > MAX_PARTS:
        raise bad_request(
            f"Too many form fields: {collector.upload.parts}; an upload takes at most {MAX_PARTS} "
            "('file', 'purpose', 'expires_after[anchor]', 'expires_after[seconds]')."
        )
    return collector.upload
