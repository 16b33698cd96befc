"""``check_destination``: local paths on the real filesystem; a missing filesystem provider."""

from __future__ import annotations

import pytest

from airflow_batch_provider.destination_probe import PROVIDER_FOR_SCHEME, check_destination
from airflow_batch_provider.exceptions import DestinationError


def test_a_missing_directory_under_a_writable_one_passes_and_nothing_is_created(tmp_path):
    check_destination(str(tmp_path / "a" / "b"), where="fetch task 'fetch'")

    assert list(tmp_path.iterdir()) == []  # no directory made, no probe file left


def test_a_destination_that_is_a_file_fails(tmp_path):
    target = tmp_path / "results"
    target.write_text("x")

    with pytest.raises(DestinationError, match=f"{target} is a file, not a directory"):
        check_destination(str(target), where="fetch task 'fetch'")


def test_without_the_amazon_provider_s3_names_the_package(monkeypatch):
    """The amazon provider is installed here, so its absence is simulated: Airflow's registry
    of filesystems is emptied (what an install without the provider has)."""
    from airflow.sdk.io import fs as airflow_fs

    monkeypatch.setattr(airflow_fs, "_register_filesystems", lambda: dict(airflow_fs._BUILTIN_SCHEME_TO_FS))

    with pytest.raises(DestinationError) as err:
        check_destination("s3://bucket/evals/", where="fetch task 'fetch'")

    assert "pip install 'apache-airflow-providers-amazon[s3fs]'" in str(err.value)
    assert PROVIDER_FOR_SCHEME["gs"] == "apache-airflow-providers-google"


def test_an_unknown_scheme_says_which_ones_work():
    with pytest.raises(DestinationError, match=r"no filesystem for ftp:// is installed.*use one of abfs"):
        check_destination("ftp://host/evals/")
