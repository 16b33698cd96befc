"""One ``openai`` connection serves this provider and the official one, installed side by side.

Both register the ``openai`` connection type. Airflow keeps the first provider by package name
(``airflow-batch-provider``) and logs that the official registration was skipped: the form is
ours (a superset: the same host/password/``openai_client_kwargs`` plus optional extras), and
the official operators keep working on it, because their hook reads the connection itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from tests.integration._fetch_support import make_context, read_jsonl, run_operator
from tests.integration.emulator_support import chat_lines, jsonl

ROOT = Path(__file__).resolve().parents[2]


def test_ours_takes_the_openai_connection_type_and_airflow_logs_the_skip(tmp_path: Path) -> None:
    # A fresh process: ProvidersManager registers each connection type once per process.
    code = (
        "from airflow.providers_manager import ProvidersManager as P\n"
        "m = P()\n"
        "print('OFFICIAL', 'apache-airflow-providers-openai' in m.providers)\n"
        "h = m.hooks['openai']\n"
        "print('HOOK', h.hook_class_name, h.package_name)\n"
    )
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "OFFICIAL True" in done.stdout, done.stdout + done.stderr
    assert (
        "HOOK airflow_batch_provider.hooks.openai_batch.OpenAIBatchHook airflow-batch-provider" in done.stdout
    ), done.stdout
    logged = done.stdout + done.stderr
    assert "The connection_type 'openai' has been already registered by provider 'airflow-batch-provider" in (
        logged
    ), logged


def test_official_operator_and_ours_run_on_one_connection(
    emulator_conn_id: str, batch_emulator, tmp_path: Path
) -> None:
    from airflow.providers.openai.hooks.openai import OpenAIHook
    from airflow.providers.openai.operators.openai import OpenAITriggerBatchOperator

    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(jsonl(chat_lines(4)))
    file_id = OpenAIHook(conn_id=emulator_conn_id).upload_file(str(requests), purpose="batch").id

    # The official operator creates the batch and waits for it on the shared connection...
    official = OpenAITriggerBatchOperator(
        task_id="official",
        conn_id=emulator_conn_id,
        file_id=file_id,
        endpoint="/v1/chat/completions",
        deferrable=False,
        wait_seconds=0.05,
        timeout=60,
    )
    batch_id = official.execute(make_context(task_id="official"))
    assert OpenAIBatchHook(emulator_conn_id).get_batch(batch_id).status == "completed"

    # ...and ours lands that batch's results from the same connection.
    out = tmp_path / "out"
    manifest = run_operator(
        lambda: OpenAIBatchFetchOperator(
            task_id="fetch", batches=[batch_id], conn_id=emulator_conn_id, destination=str(out)
        ),
        make_context(),
    )
    rows = read_jsonl(out / "results.jsonl")
    assert [r["status"] for r in rows] == ["succeeded"] * 4
    assert manifest["counts"]["succeeded"] == 4
    assert json.loads((out / "manifest.json").read_text())["batch_ids"] == [batch_id]
