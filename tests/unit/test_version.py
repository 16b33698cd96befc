"""One version: ``airflow_batch_provider.__version__``, read by pyproject.toml and get_provider_info."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import airflow_batch_provider
from airflow_batch_provider.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_reads_the_version_from_the_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "airflow_batch_provider.__version__"}


def test_provider_info_and_changelog_carry_the_same_version() -> None:
    version = airflow_batch_provider.__version__
    assert get_provider_info()["versions"] == [version]
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.findall(r"^## (\S+)", changelog, re.M)[0] == version
