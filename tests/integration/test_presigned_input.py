"""A presigned input URL is read with its signature and recorded without it.

Submit and fetch run in a real DAG (``dag.test()``) against the emulator; the input is
an object on the moto S3 server, given as a presigned ``X-Amz-Signature`` URL (what a
data team hands over instead of credentials), read through an http filesystem the DAG
attaches (``airflow.sdk.io.attach``). The signature must appear in no XCom,
no manifest, no lineage and no log line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_batch_provider.lineage import fetch_lineage, submit_lineage
from tests.integration import _dag_env
from tests.integration._dag_env import chat_lines

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env


def _presigned(moto_server: str, bucket: str, key: str, body: bytes) -> str:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=moto_server,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        config=Config(signature_version="s3v4"),
    )
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=3600)


def _all_xcoms(dag_run) -> dict[tuple[str, str], str]:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.execute(
            select(XComModel.task_id, XComModel.key, XComModel.value).where(
                XComModel.dag_id == dag_run.dag_id, XComModel.run_id == dag_run.run_id
            )
        ).all()
    return {(t, k): v if isinstance(v, str) else json.dumps(v, default=str) for t, k, v in rows}


def _lineage_text(lineage) -> str:
    import attr

    return json.dumps(
        {
            "inputs": [attr.asdict(d) for d in lineage.inputs],
            "outputs": [attr.asdict(d) for d in lineage.outputs],
            "run": {k: attr.asdict(v) for k, v in lineage.run_facets.items()},
        },
        default=str,
    )


# Batches stay validating long enough for the fetch to defer: its waiting state (XCom and
# trigger kwargs, both stored in the database) is recorded too.
@pytest.mark.emulator(validation_delay=10)
def test_a_presigned_input_url_never_records_its_signature(
    dag_env, moto_server: str, aws_test_bucket: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    url = _presigned(moto_server, aws_test_bucket, "team/in.jsonl", chat_lines(3).encode())
    signature = parse_qs(urlsplit(url).query)["X-Amz-Signature"][0]
    public = url.split("?", 1)[0]
    dest = tmp_path / "results"
    dag = dag_env.write_dag(
        "presigned_input",
        f"""
        from airflow.sdk import DAG
        from airflow.sdk.io import attach
        from fsspec.implementations.http import HTTPFileSystem
        from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
        from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

        attach("http", fs=HTTPFileSystem())  # how a DAG reads http(s) URLs as ObjectStoragePath

        with DAG("presigned_input", schedule=None, default_args={{"retries": 0}}) as dag:
            submit = OpenAIBatchSubmitOperator(
                task_id="submit", input_path={url!r}, wait_for_completion=False,
            )
            fetch = OpenAIBatchFetchOperator(
                task_id="fetch", batches=submit.output, destination={str(dest)!r},
                input_uri={url!r}, poll_interval=0.1, max_poll_interval=0.5,
            )
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    captured = capfd.readouterr()
    # The storage server's own access log names the URL it was asked for: not ours to judge.
    logs = "\n".join(
        line for line in (captured.out + captured.err).splitlines() if not re.search(r'"(GET|HEAD) /', line)
    )
    # The URL was really used, signature and all: the fetch joined with the input it names.
    manifest_text = (dest / "manifest.json").read_text()
    manifest = json.loads(manifest_text)
    assert manifest["input"]["joined_from"] == "input_uri" and manifest["counts"]["succeeded"] == 3
    # And recorded without it, everywhere.
    xcoms = _all_xcoms(dr)
    assert {("submit", "return_value"), ("fetch", "return_value"), ("fetch", "fetch_state")} <= set(xcoms)
    submit_manifest = dag_env.xcom(dr, "submit")
    assert submit_manifest["input_uri"] == public and manifest["input"]["uri"] == public
    for where, text in [
        *((f"XCom {task}.{key}", value) for (task, key), value in xcoms.items()),
        ("manifest.json", manifest_text),
        ("submit lineage", _lineage_text(submit_lineage(submit_manifest))),
        ("fetch lineage", _lineage_text(fetch_lineage(manifest))),
    ]:
        assert signature not in text and "X-Amz-Signature" not in text, where
    assert public in logs  # the task logs were captured: the input is named there
    assert signature not in logs and "X-Amz-Signature" not in logs
