"""The example DAGs (dags_examples/): they parse cleanly and run end to end on the emulator.

The fake model answers a chat request with ``"echo: <last user text>"`` and picks a
structured-output enum value from a crc32 of that text, so every number checked
here is recomputed from the shipped data, not copied from a previous run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration import _dag_env

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "dags_examples"
DATA = EXAMPLES / "data"
DAG_IDS = {"nightly_eval", "embedding_refresh", "embedding_search", "classify_dataset"}

PARSE_SCRIPT = """
import json, sys, warnings
import airflow.sdk  # Airflow's own import-time warnings are not ours
from pathlib import Path
try:
    from airflow.serialization.serialized_objects import DagSerialization
except ImportError:  # Airflow < 3.2
    from airflow.serialization.serialized_objects import SerializedDAG as DagSerialization
try:
    from airflow.dag_processing.dagbag import BundleDagBag
    bag_kwargs = {"bundle_name": "dags-folder"}
except ImportError:  # Airflow < 3.2: no BundleDagBag, and DagBag takes no bundle_name
    from airflow.models.dagbag import DagBag as BundleDagBag
    bag_kwargs = {}
warnings.simplefilter("error")  # any warning while parsing the examples is a failure...
# ...except Airflow's own, from reading .airflowignore with a newer pathspec.
warnings.filterwarnings("ignore", message="GitWildMatchPattern", category=DeprecationWarning)
# As the dag processor parses the dags-folder bundle (which also puts it on sys.path).
sys.path.append(sys.argv[1])
bag = BundleDagBag(dag_folder=sys.argv[1], bundle_path=Path(sys.argv[1]), **bag_kwargs)
for dag in bag.dags.values():
    DagSerialization.serialize_dag(dag)  # what the dag processor stores
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors,
                  "warnings": {k: list(v) for k, v in bag.captured_warnings.items()},
                  "files": sorted(bag.filepaths) if hasattr(bag, "filepaths") else []}))
"""


def test_examples_parse_without_import_errors_or_warnings(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLES),
        "PYTHONDONTWRITEBYTECODE": "1",
        "BATCH_DEMO_DESTINATION": "s3://batch-results/",
        "BATCH_DEMO_STORAGE_CONN_ID": "aws_minio",
    }
    proc = subprocess.run(
        [sys.executable, "-c", PARSE_SCRIPT, str(EXAMPLES)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}
    assert report["warnings"] == {}
    assert set(report["dags"]) == DAG_IDS


@dataclass
class Examples:
    dags: dict[str, Any]
    out: Path
    docs: Path
    env: Any

    @staticmethod
    def parse() -> dict[str, Any]:
        """Parse dags_examples/ with the current environment."""
        try:
            from airflow.dag_processing.dagbag import DagBag
        except ImportError:  # Airflow < 3.2
            from airflow.models.dagbag import DagBag  # type: ignore[no-redef]

        bag = DagBag(dag_folder=str(EXAMPLES))
        assert bag.import_errors == {}
        return bag.dags

    def run(self, dag_id: str, **conf: Any) -> Any:
        return self.env.run(self.dags[dag_id]) if not conf else self.dags[dag_id].test(run_conf=conf)

    def folder(self, dag_id: str, dag_run: Any) -> Path:
        from _lib.storage import slug

        return self.out / dag_id / slug(dag_run.run_id)


@pytest.fixture(scope="session")
def results_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # One root per session, like a deployment: the Asset URI (vectors.jsonl under it) must not
    # change between tests, since an Asset name may only have one URI in a database.
    return tmp_path_factory.mktemp("results")


@pytest.fixture
def examples(dag_env, results_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Examples:
    from airflow import settings

    out, docs = results_root, tmp_path / "documents"
    shutil.copytree(DATA / "documents", docs)
    # dag.test() syncs the dags-folder bundle (settings.DAGS_FOLDER) to the DB before running.
    monkeypatch.setenv("AIRFLOW__CORE__DAGS_FOLDER", str(EXAMPLES))
    monkeypatch.setattr(settings, "DAGS_FOLDER", str(EXAMPLES))
    monkeypatch.setenv("BATCH_DEMO_DESTINATION", out.as_uri())
    monkeypatch.setenv("BATCH_DEMO_DOCUMENTS", docs.as_uri())
    monkeypatch.delenv("BATCH_DEMO_STORAGE_CONN_ID", raising=False)
    monkeypatch.setenv("BATCH_DEMO_POLL_INTERVAL", "0.1")
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return Examples(dags=Examples.parse(), out=out, docs=docs, env=dag_env)


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _all_success(examples: Examples, dag_run: Any) -> dict[str, str | None]:
    states = examples.env.states(dag_run)
    assert dag_run.state == "success", states
    return states


# ---- nightly_eval -------------------------------------------------------------------------


def test_nightly_eval_scores_the_fake_models_answers(examples: Examples) -> None:
    from _lib import evaluation

    dr = examples.run("nightly_eval")
    _all_success(examples, dr)
    folder = examples.folder("nightly_eval", dr)
    items = evaluation.parse_jsonl((DATA / "eval_set.jsonl").read_text().splitlines())

    results = {r["custom_id"]: r for r in _jsonl(folder / "results.jsonl")}
    assert set(results) == {i["id"] for i in items}
    for item in items:  # the emulator echoes the question
        assert evaluation.answer_text(results[item["id"]]["response"]) == f"echo: {item['question']}"

    scores = json.loads((folder / "scores.json").read_text())
    assert scores["run_id"] == dr.run_id and scores["model"] == "gpt-4o-mini"
    by_category = {c["category"]: c for c in scores["categories"]}
    for category in {i["category"] for i in items}:
        mine = [i for i in items if i["category"] == category]
        hits = sum(evaluation.contains_match(f"echo: {i['question']}", [i["expected"]]) for i in mine)
        assert by_category[category]["total"] == len(mine)
        assert by_category[category]["contains"] == hits
        assert by_category[category]["exact"] == 0  # "echo: ..." never equals an answer
    assert by_category["sentiment"]["contains_accuracy"] == 1.0  # the label is in the question
    assert by_category["geography"]["contains_accuracy"] == 0.0
    overall = scores["overall"]
    assert overall["total"] == len(items) and overall["failed"] == 0
    assert overall["contains"] == sum(c["contains"] for c in scores["categories"])

    report = (folder / "report.md").read_text()
    assert f"**contains {overall['contains_accuracy'] * 100:.1f}%**" in report
    assert "![accuracy per category and across runs](accuracy.svg)" in report
    svg = ET.fromstring((folder / "accuracy.svg").read_text())
    assert len([e for e in svg.iter() if e.tag.endswith("circle")]) == 2  # one run so far, two metrics
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["counts"]["succeeded"] == len(items) and manifest["usage"]["input_tokens"] > 0

    # A second run adds a point to the history.
    dr2 = examples.run("nightly_eval")
    _all_success(examples, dr2)
    second = examples.folder("nightly_eval", dr2)
    assert second != folder
    svg2 = ET.fromstring((second / "accuracy.svg").read_text())
    assert len([e for e in svg2.iter() if e.tag.endswith("circle")]) == 4
    assert f"| {dr.run_id} |" in (second / "report.md").read_text()


# ---- embedding_refresh and embedding_search ---------------------------------------------


def _asset_events(uri: str) -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(
            select(func.count())
            .select_from(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
        )


def test_embedding_refresh_embeds_only_changes_and_search_answers(examples: Examples) -> None:
    vectors_file = examples.out / "embedding_refresh" / "vectors.jsonl"
    asset_uri = vectors_file.as_uri()
    docs = sorted(examples.docs.glob("*.md"))

    # First run: every document is new.
    dr = examples.run("embedding_refresh")
    states = _all_success(examples, dr)
    assert states["embed"] == "success" and states["publish"] == "success"
    rows = _jsonl(vectors_file)
    assert [r["doc_id"] for r in rows] == sorted(p.stem for p in docs)
    assert all(len(r["vector"]) == 256 and r["model"] == "text-embedding-3-small" for r in rows)
    assert _asset_events(asset_uri) == 1

    # Search: a query equal to a document's text finds that document first (same vector).
    warranty = (examples.docs / "warranty.md").read_text()
    sr = examples.run("embedding_search", queries=[warranty, "lamp flickers"])
    _all_success(examples, sr)
    answers = json.loads((examples.folder("embedding_search", sr) / "answers.json").read_text())
    assert [a["query_id"] for a in answers] == ["q1", "q2"]
    top_doc, top_score = answers[0]["matches"][0]
    assert top_doc == "warranty" and abs(top_score - 1.0) < 1e-5
    assert len(answers[1]["matches"]) == 3
    assert all(-1.0 <= s <= 1.0 for a in answers for _, s in a["matches"])

    # Second run: one document edited, one deleted -> one request, one removal.
    old = {r["doc_id"]: r for r in rows}
    (examples.docs / "flicker.md").write_text("# Flicker\n\nReplace the bulb.\n")
    (examples.docs / "privacy.md").unlink()
    created = examples.env.emulator.stats()["batches_created"]
    dr2 = examples.run("embedding_refresh")
    _all_success(examples, dr2)
    assert examples.env.emulator.stats()["batches_created"] == created + 1
    rows2 = {r["doc_id"]: r for r in _jsonl(vectors_file)}
    assert "privacy" not in rows2 and len(rows2) == len(docs) - 1
    assert rows2["flicker"]["vector"] != old["flicker"]["vector"]
    assert rows2["warranty"] == old["warranty"]  # untouched
    assert _asset_events(asset_uri) == 2

    # Third run: nothing changed -> no batch, no Asset event.
    dr3 = examples.run("embedding_refresh")
    states3 = examples.env.states(dr3)
    assert dr3.state == "success", states3
    assert states3["embed"] == "skipped" and states3["publish"] == "skipped"
    assert examples.env.emulator.stats()["batches_created"] == created + 1
    assert _asset_events(asset_uri) == 2


# ---- classify_dataset ---------------------------------------------------------------------


def test_classify_dataset_runs_as_several_batches_and_lands_one_result(examples: Examples) -> None:
    from _lib.classification import RESPONSE_FORMAT, read_rows

    from airflow_batch_provider.emulator.structured import sample_json

    with (DATA / "tickets.csv").open(newline="") as f:
        tickets = list(read_rows(f))

    dr = examples.run("classify_dataset", max_requests_per_batch=400)
    _all_success(examples, dr)
    folder = examples.folder("classify_dataset", dr)

    manifest = json.loads((folder / "manifest.json").read_text())
    assert len(manifest["batch_ids"]) == -(-len(tickets) // 400) == 3
    assert manifest["counts"]["succeeded"] == len(tickets)
    assert examples.env.emulator.stats()["batches_created"] == 3
    results = _jsonl(folder / "results.jsonl")  # one merged file, in input order
    assert [r["custom_id"] for r in results] == [t["ticket_id"] for t in tickets]
    assert len({r["batch_id"] for r in results}) == 3

    schema = RESPONSE_FORMAT["json_schema"]["schema"]
    with (folder / "labels.csv").open(newline="") as f:
        labels = list(read_rows(f))
    assert len(labels) == len(tickets)
    for ticket, row in zip(tickets, labels, strict=True):
        text = f"Ticket via {ticket['channel']} about {ticket['product']}: {ticket['text']}"
        expected = sample_json(schema, text)  # the fake model's deterministic choice
        assert (row["ticket_id"], row["label"], row["confidence"]) == (
            ticket["ticket_id"],
            expected["label"],
            expected["confidence"],
        )
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rows"] == len(tickets) and summary["batches"] == 3
    assert sum(summary["labels"].values()) == len(tickets) and "" not in summary["labels"]


# ---- last: nightly_eval on s3 -----------------------------------------------------------
# It runs last because its dag.test() writes every example DAG to the database with s3:// URIs
# (embedding_refresh's help_centre_vectors Asset included); the local-file tests before it would
# otherwise meet that Asset name registered with another URI, and an inactive Asset.


def test_nightly_eval_on_s3_with_a_storage_connection(
    examples: Examples, aws_test_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The docker stack's setting: results on s3:// through BATCH_DEMO_STORAGE_CONN_ID."""
    import boto3
    from _lib.storage import slug

    monkeypatch.setenv("BATCH_DEMO_DESTINATION", f"s3://{aws_test_bucket}/evals/")
    monkeypatch.setenv("BATCH_DEMO_STORAGE_CONN_ID", "aws_test")
    dag = examples.parse()["nightly_eval"]  # the destination is read when the file is parsed
    runs = [dag.test(), dag.test()]
    for dr in runs:
        assert dr.state == "success", examples.env.states(dr)

    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_TEST"])
    s3 = boto3.client(
        "s3",
        endpoint_url=conn["extra"]["endpoint_url"],
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=aws_test_bucket)["Contents"]}
    for dr in runs:
        folder = f"evals/nightly_eval/{slug(dr.run_id)}"
        assert {
            f"{folder}/{name}"
            for name in ("results.jsonl", "manifest.json", "scores.json", "report.md", "accuracy.svg")
        } <= keys
    report = s3.get_object(Bucket=aws_test_bucket, Key=f"evals/nightly_eval/{slug(runs[1].run_id)}/report.md")
    assert f"| {runs[0].run_id} |" in report["Body"].read().decode()  # history read back from S3
