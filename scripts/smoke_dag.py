"""Run one submit -> fetch DAG with ``dag.test()`` on the emulator, from an installed package.

Used by ``make install-check`` and ``make release-check`` in a fresh venv: it imports only
the installed ``airflow_batch_provider`` (run it from outside the source tree), migrates a
throwaway sqlite DB, starts the emulator in a child process and lands the results.

    python scripts/smoke_dag.py                 # results to a local folder
    python scripts/smoke_dag.py --s3            # results to s3:// on a moto server (needs moto[server])

Exits non-zero, naming what is missing, unless the DAG run succeeded and ``results.jsonl``
holds one succeeded line per request at the destination.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

REQUESTS = 5
BUCKET = "install-check"
DAG_FILE = """
from airflow.sdk import DAG
from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

LINES = [
    {{"custom_id": f"q-{{i}}", "method": "POST", "url": "/v1/chat/completions",
      "body": {{"model": "gpt-4o-mini", "messages": [{{"role": "user", "content": f"question {{i}}"}}]}}}}
    for i in range({requests})
]
with DAG("install_smoke", schedule=None):
    submit = OpenAIBatchSubmitOperator(task_id="submit", requests=LINES, deferrable=True)
    OpenAIBatchFetchOperator(
        task_id="fetch", batches=submit.output, destination="{destination}", destination_conn_id={conn_id!r}
    )
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_moto() -> object:
    """A moto S3 server on 127.0.0.1, with the bucket and an ``aws_check`` connection."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    url = f"http://127.0.0.1:{port}"
    os.environ["AIRFLOW_CONN_AWS_CHECK"] = json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": url, "region_name": "us-east-1"},
        }
    )
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--s3", action="store_true", help="land on s3:// (a moto server) instead of a folder")
    parser.add_argument("--installed", action="store_true", help="fail if the package imports from this tree")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="airflow-batch-smoke-"))
    (home / "dags").mkdir()
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        }
    )
    import airflow_batch_provider

    # A wheel check must not import the source tree (an editable install is the source tree).
    tree = Path(__file__).resolve().parents[1]
    from_source = Path(airflow_batch_provider.__file__).resolve().parents[1] == tree
    if args.installed and from_source:
        print("smoke_dag: imported the source tree, not the installed package; run it from elsewhere")
        return 2
    package = airflow_batch_provider
    print(f"smoke_dag: airflow_batch_provider {package.__version__} from {package.__file__}")
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], check=True, stdout=subprocess.DEVNULL)

    from airflow_batch_provider.emulator.testing import running_emulator

    moto = _start_moto() if args.s3 else None
    if args.s3:
        destination, conn_id = f"s3://{BUCKET}/results/", "aws_check"
    else:
        destination, conn_id = f"file://{home / 'results'}/", None
    dag_file = DAG_FILE.format(destination=destination, conn_id=conn_id, requests=REQUESTS)
    (home / "dags" / "install_smoke.py").write_text(dag_file)
    try:
        with running_emulator(profile="instant", mode="subprocess") as emulator:
            os.environ["AIRFLOW_CONN_OPENAI_DEFAULT"] = json.dumps(
                {"conn_type": "openai", "host": emulator.base_url, "password": emulator.api_key}
            )
            done = subprocess.run([airflow, "dags", "test", "install_smoke"], check=False)
        if done.returncode != 0:
            print(f"smoke_dag: `airflow dags test install_smoke` exited {done.returncode}; see its log above")
            return 1
        # Read back through ObjectStoragePath: on s3 that is the moto server, still running here.
        from airflow.sdk import ObjectStoragePath

        landed = list(ObjectStoragePath(destination, conn_id=conn_id).rglob("results.jsonl"))
        if not landed:
            print(f"smoke_dag: no results.jsonl under {destination}")
            return 1
        return _check_results(landed[0].read_text().splitlines(), str(landed[0]))
    finally:
        if moto is not None:
            moto.stop()  # type: ignore[attr-defined]


def _check_results(rows: list[str], where: str) -> int:
    statuses = [json.loads(row)["status"] for row in rows]
    if statuses != ["succeeded"] * REQUESTS:
        print(f"smoke_dag: {where} has statuses {statuses}, expected {REQUESTS} succeeded")
        return 1
    print(f"smoke_dag: OK, {REQUESTS} results landed at {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
