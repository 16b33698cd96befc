"""``python -m airflow_batch_provider.emulator``: the command users and ``airflow-batch emulator`` run."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from airflow_batch_provider.emulator.server import main
from tests.integration.emulator_support import chat_lines, run_batch


def test_module_prints_base_url_serves_and_stops(tmp_path: Path):
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_batch_provider.emulator",
            "--port",
            "0",
            "--profile",
            "instant",
            "--data-dir",
            str(tmp_path),
            "--api-key",
            "sk-cli",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline().strip()
        match = re.fullmatch(r"Emulator listening on (http://127\.0\.0\.1:(\d+)/v1)", first)
        assert match, first
        client = openai.OpenAI(base_url=match.group(1), api_key="sk-cli", max_retries=5)
        assert [m.id for m in client.models.list()][:1] == ["gpt-4o-mini"]
        batch, output, _ = run_batch(client, chat_lines(3))
        assert batch.status == "completed" and len(output) == 3
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0
    assert list((tmp_path / "batches").glob("*.json"))  # state kept in --data-dir


def test_bad_options_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--backend", "upstream"])
    assert exit_info.value.code == 2
    assert "--upstream-url" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--profile", "slow"])
