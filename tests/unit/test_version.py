"""One version: ``airflow_batch_provider.__version__``, read by pyproject.toml and get_provider_info."""

from __future__ import annotations

import re
from pathlib import Path

import airflow_batch_provider
from airflow_batch_provider.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_reads_the_version_from_the_package() -> None:
    # A regex, not tomllib: the tests also run on Python 3.10.
    text = (ROOT / "pyproject.toml").read_text()
    assert not re.search(r'^version\s*=\s*"', text, re.M)  # no static version
    assert re.search(r'^dynamic = \["version"\]', text, re.M)
    assert re.search(r'^version = \{ attr = "airflow_batch_provider.__version__" \}', text, re.M)


def test_provider_info_and_changelog_carry_the_same_version() -> None:
    version = airflow_batch_provider.__version__
    assert get_provider_info()["versions"] == [version]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.findall(r"^## (\S+)", changelog, re.M)[0] == version
