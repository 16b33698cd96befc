"""The pieces of ``make demo`` that need no Airflow run: environment, root, summary.

The demo itself runs end to end in ``make demo`` (and the DAGs it runs are tested with
``dag.test()`` in tests/integration/test_examples_dags.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools import demo

ROOT = Path(__file__).resolve().parents[2]


def test_environment_keeps_airflow_under_dot_demo(tmp_path: Path) -> None:
    env = demo.airflow_environment(ROOT, ROOT / "demo-output")
    assert env["AIRFLOW_HOME"] == str(ROOT / ".demo" / "airflow")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{ROOT}/.demo/airflow/airflow.db"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags_examples")
    assert env["BATCH_DEMO_DESTINATION"] == (ROOT / "demo-output").as_uri()
    assert float(env["BATCH_DEMO_POLL_INTERVAL"]) <= 2


def test_find_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert demo.find_root(ROOT) == ROOT
    assert demo.find_root(tmp_path) == ROOT  # falls back to the package's repository
    monkeypatch.setattr(demo, "__file__", str(tmp_path / "pkg" / "demo.py"))
    with pytest.raises(SystemExit, match="repository root"):
        demo.find_root(tmp_path)


def test_fernet_key_is_made_once(tmp_path: Path) -> None:
    key = demo.fernet_key(tmp_path)
    assert demo.fernet_key(tmp_path) == key and len(key) == 44


@dataclass
class _Run:
    dag_id: str
    run_id: str = "r1"


def test_summary_adds_up_the_fetch_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    out = ROOT / "demo-output"
    xcoms = {
        ("nightly_eval", "fetch_results"): {
            "batch_ids": ["b1"],
            "total": 120,
            "counts": {"succeeded": 119, "failed": 1, "expired": 0},
            "usage": {"input_tokens": 1000, "output_tokens": 200},
            "cost_usd": 0.0011,
            "model": "gpt-4o-mini",
            "results_uri": f"{out.as_uri()}/nightly_eval/r1/results.jsonl",
            "manifest_uri": f"{out.as_uri()}/nightly_eval/r1/manifest.json",
        },
        ("nightly_eval", "score_and_report"): {
            "report": f"{out.as_uri()}/nightly_eval/r1/report.md",
            "overall": {"exact_accuracy": 0.0, "contains_accuracy": 0.3917},
        },
        ("embedding_search", "fetch_queries"): {
            "batch_ids": ["b2"],
            "total": 3,
            "counts": {"succeeded": 3},
            "usage": {"input_tokens": 16, "output_tokens": 0},
            "cost_usd": None,
            "model": "m",
        },
        ("embedding_search", "answer"): [{"query_id": "q1"}],
    }
    monkeypatch.setattr(demo, "_xcom", lambda run, task: xcoms.get((run.dag_id, task)))
    text = demo.summarize(
        [(_Run("nightly_eval"), 5.0), (_Run("embedding_refresh"), 1.0), (_Run("embedding_search"), 2.0)],
        ROOT,
        out,
        {"batches_created": 2},
    )
    assert "120 requests (119 succeeded, 1 failed)" in text
    assert "results:  demo-output/nightly_eval/r1/results.jsonl" in text
    assert "report:   demo-output/nightly_eval/r1/report.md" in text and "contains 39.2%" in text
    assert "no batch this run" in text and "vectors unchanged" in text
    assert "est. n/a (m)" in text
    assert "Total: 123 requests, 1016 input + 200 output tokens, estimated $0.0011" in text
    assert "2 batches created" in text
