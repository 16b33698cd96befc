""".ci/run: a browser that cannot be installed fails CI instead of turning the browser tests
into skips; every suite runs."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ci_tree(tmp_path: Path) -> Path:
    """A copy of .ci/run beside a Chromium install script that fails and a ``make`` that only logs."""
    (tmp_path / ".ci").mkdir()
    shutil.copy(ROOT / ".ci" / "run", tmp_path / ".ci" / "run")
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "install_chromium.sh").write_text("echo 'E: no network' >&2\nexit 100\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    make = bin_dir / "make"
    make.write_text(f'#!/bin/sh\necho "make $*" >> {tmp_path / "make.log"}\n')
    make.chmod(0o755)
    return tmp_path


def _run(tree: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "CI"}
    environ.update(PATH=f"{tree / 'bin'}:{os.environ['PATH']}", **env)
    return subprocess.run(
        ["bash", str(tree / ".ci" / "run")], env=environ, capture_output=True, text=True, timeout=60
    )


def test_in_ci_a_failed_browser_install_fails_the_run(ci_tree: Path) -> None:
    result = _run(ci_tree, CI="true")
    assert result.returncode != 0
    assert "CI=true" in result.stderr and "Chromium could not be installed" in result.stderr
    assert not (ci_tree / "make.log").exists()  # nothing ran on


def test_outside_ci_the_run_carries_on_and_says_the_browser_tests_skip(ci_tree: Path) -> None:
    result = _run(ci_tree)
    assert result.returncode == 0, result.stderr
    assert "browser tests will skip" in result.stderr
    ran = (ci_tree / "make.log").read_text().split("\n")
    assert ran[:4] == ["make test", "make test-storage", "make test-oldest", "make system-test"]
    # The install checks (issue 18): plain pip with constraints, the built wheel.
    assert {"make install-check", "make release-check"} <= set(ran)
