"""A failed landing warns about a temporary object only when one may have been written."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from airflow_batch_provider.storage import write_atomically


@pytest.fixture
def storage_warnings() -> Iterator[list[str]]:
    """Warnings of ``airflow_batch_provider.storage``, caught on its own logger: Airflow may
    reconfigure the root logger (and drop pytest's capture) when it loads its filesystems."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger = logging.getLogger("airflow_batch_provider.storage")
    handler = Keep(level=logging.WARNING)
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


def test_a_write_that_never_started_warns_of_no_temporary_object(storage_warnings):
    """No filesystem for gs:// (the Google provider is not installed): nothing was written."""
    with pytest.raises(ValueError, match="gs"):
        write_atomically("gs://bucket/evals/output.jsonl", [b"line\n"])

    assert storage_warnings == []


def test_a_write_to_a_missing_bucket_warns_of_no_temporary_object(aws_test_bucket, storage_warnings):
    """The put failed on the moto server: no such bucket, so nothing is to be deleted by hand."""
    from airflow.sdk import ObjectStoragePath

    target = ObjectStoragePath(f"s3://{aws_test_bucket}-missing/evals/output.jsonl", conn_id="aws_test")

    with pytest.raises(FileNotFoundError):
        write_atomically(target, [b"line\n"])

    assert storage_warnings == []


def test_the_warning_still_names_an_object_left_behind(aws_test_bucket, moto_server, storage_warnings):
    """Written, then the rename fails and so does the delete: that one is worth a warning."""
    from airflow.sdk import ObjectStoragePath

    from airflow_batch_provider import storage

    target = ObjectStoragePath(f"s3://{aws_test_bucket}/evals/output.jsonl", conn_id="aws_test")
    fs = target.fs

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError("denied")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(storage, "_commit", refuse)
        patch.setattr(fs, "rm", refuse)  # an instance attribute (fsspec mirrors async methods)
        with pytest.raises(PermissionError):
            write_atomically(target, [b"line\n"])

    assert len(storage_warnings) == 1
    assert storage_warnings[0].startswith(
        f"Could not remove the temporary object s3://{aws_test_bucket}/evals/."
    )
