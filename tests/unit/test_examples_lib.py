"""The pure helpers of the example DAGs (dags_examples/_lib) and the shipped data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "dags_examples"
sys.path.insert(0, str(EXAMPLES))  # as Airflow does for the DAGs folder

from _lib import classification, embeddings, evaluation, report, storage  # noqa: E402
from _lib.nn_index import NearestNeighbourIndex, cosine  # noqa: E402
from _lib.svg_chart import accuracy_chart  # noqa: E402

DATA = EXAMPLES / "data"


# ---- shipped data ---------------------------------------------------------------------


def test_data_is_what_the_generator_writes(tmp_path: Path) -> None:
    copy = tmp_path / "data"
    copy.mkdir()
    (copy / "generate_data.py").write_bytes((DATA / "generate_data.py").read_bytes())
    subprocess.run([sys.executable, str(copy / "generate_data.py")], check=True, capture_output=True)
    documents = [f"documents/{p.name}" for p in (DATA / "documents").iterdir()]
    for name in ["eval_set.jsonl", "tickets.csv", *documents]:
        assert (copy / name).read_bytes() == (DATA / name).read_bytes(), f"{name}: run generate_data.py"
    assert sorted(p.name for p in (copy / "documents").iterdir()) == sorted(
        p.name for p in (DATA / "documents").iterdir()
    )


def test_eval_set_has_categories_and_expected_answers() -> None:
    items = evaluation.parse_jsonl((DATA / "eval_set.jsonl").read_text().splitlines())
    assert len(items) >= 100
    assert len({i["id"] for i in items}) == len(items)
    categories = {i["category"] for i in items}
    assert len(categories) >= 5
    assert all(i["question"] and evaluation.normalize(i["expected"]) for i in items)


def test_tickets_csv_and_documents_are_small_and_big_enough() -> None:
    with (DATA / "tickets.csv").open(newline="") as f:
        rows = list(classification.read_rows(f))
    assert len(rows) >= 1000
    assert len({r["ticket_id"] for r in rows}) == len(rows)
    assert set(rows[0]) == {"ticket_id", "channel", "product", "text"}
    docs = list((DATA / "documents").glob("*.md"))
    assert 8 <= len(docs) <= 50
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 300_000


# ---- scoring --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected", "exact", "contains"),
    [
        ("Paris", "Paris", True, True),
        ("  paris. ", "Paris", True, True),
        ("The capital is Paris.", "Paris", False, True),
        ("14", "4", False, False),  # whole tokens only
        ("It is 2,660", "2660", False, False),
        ("2660", "2660", True, True),
        ("Send it to Ada.Lumen@Example.com!", "ada.lumen@example.com", False, True),
        ("Brasília", "Brasilia", True, True),  # accents folded
        (None, "x", False, False),
        ("", "x", False, False),
    ],
)
def test_exact_and_contains(answer, expected, exact, contains) -> None:
    assert evaluation.exact_match(answer, [expected]) is exact
    assert evaluation.contains_match(answer, [expected]) is contains


def _chat(text: str) -> dict:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}


def test_answer_text_reads_chat_responses_and_completions() -> None:
    assert evaluation.answer_text(_chat("hi")) == "hi"
    assert evaluation.answer_text({"choices": [{"text": "yo"}]}) == "yo"
    body = {
        "output": [
            {
                "type": "message",
                "content": [{"type": "output_text", "text": "a"}, {"type": "output_text", "text": "b"}],
            }
        ]
    }
    assert evaluation.answer_text(body) == "ab"
    assert evaluation.answer_text(None) is None
    assert evaluation.answer_text({"output": []}) is None


def test_score_per_category_counts_failures_as_wrong() -> None:
    items = [
        {"id": "a1", "category": "a", "question": "?", "expected": "x"},
        {"id": "a2", "category": "a", "question": "?", "expected": "y", "aliases": ["why"]},
        {"id": "b1", "category": "b", "question": "?", "expected": "z"},
        {"id": "b2", "category": "b", "question": "?", "expected": "z"},
    ]
    results = {
        "a1": {"status": "succeeded", "response": _chat("x")},
        "a2": {"status": "succeeded", "response": _chat("I say why")},
        "b1": {"status": "failed", "response": None, "error": {"code": "server_error"}},
        # b2 missing entirely
    }
    scores = evaluation.score(items, results)
    a, b = scores.categories["a"], scores.categories["b"]
    assert (a.total, a.exact, a.contains, a.failed) == (2, 1, 2, 0)
    assert (b.total, b.exact, b.contains, b.failed) == (2, 0, 0, 2)
    assert scores.overall.exact_accuracy == 0.25 and scores.overall.contains_accuracy == 0.5
    doc = scores.to_dict()
    assert [c["category"] for c in doc["categories"]] == ["a", "b"]
    assert doc["overall"]["contains_accuracy"] == 0.5
    assert [i["status"] for i in scores.items] == ["succeeded", "succeeded", "failed", "missing"]


# ---- report and chart -----------------------------------------------------------------


def _scores_doc(run_id: str, finished: str, exact: float, contains: float) -> dict:
    cat = {
        "category": "geo",
        "total": 10,
        "exact": int(exact * 10),
        "contains": int(contains * 10),
        "failed": 0,
        "exact_accuracy": exact,
        "contains_accuracy": contains,
    }
    return {
        "run_id": run_id,
        "finished_at": finished,
        "overall": {**cat, "category": "overall"},
        "categories": [cat, {**cat, "category": "math & <logic>"}],
    }


def test_history_rows_sorted_deduplicated_and_bounded() -> None:
    past = [_scores_doc(f"r{i:02d}", f"2025-01-{i + 1:02d}T00:00:00", 0.1, 0.2) for i in range(40)]
    current = _scores_doc("r05", "2026-01-01T00:00:00", 0.5, 0.9)  # a re-run replaces itself
    rows = report.history_rows(reversed(past), current)
    assert len(rows) == report.MAX_HISTORY
    assert rows[-1] == {
        "run_id": "r05",
        "finished_at": "2026-01-01T00:00:00",
        "exact": 0.5,
        "contains": 0.9,
        "total": 10,
    }
    assert [r["run_id"] for r in rows].count("r05") == 1
    assert [r["finished_at"] for r in rows] == sorted(r["finished_at"] for r in rows)


def test_chart_is_valid_svg_with_bars_and_history_points() -> None:
    svg = accuracy_chart([("geo", 0.5, 1.0), ("a<b", 0.0, 0.25)], [("d1", 0.1, 0.2), ("d2", 0.3, 0.4)])
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    bars = [r for r in root.iter(f"{ns}rect") if r.find(f"{ns}title") is not None]
    assert len(bars) == 4
    full = next(b for b in bars if b.find(f"{ns}title").text == "geo: 100%")
    half = next(b for b in bars if b.find(f"{ns}title").text == "geo: 50%")
    assert math.isclose(float(full.get("height")), 2 * float(half.get("height")))
    assert len(list(root.iter(f"{ns}circle"))) == 4
    assert len(list(root.iter(f"{ns}polyline"))) == 2
    assert "a&lt;b" in svg  # text is escaped
    # one run: points but no line
    one = ET.fromstring(accuracy_chart([("x", 1.0, 1.0)], [("d1", 1.0, 1.0)]))
    assert not list(one.iter(f"{ns}polyline")) and len(list(one.iter(f"{ns}circle"))) == 2


def test_markdown_report_lists_categories_history_and_misses() -> None:
    doc = _scores_doc("run-2", "2026-01-02T00:00:00", 0.3, 0.6)
    history = report.history_rows([_scores_doc("run-1", "2026-01-01T00:00:00", 0.1, 0.2)], doc)
    fetch = {
        "counts": {"succeeded": 9, "failed": 1},
        "total": 10,
        "usage": {"input_tokens": 100, "output_tokens": 20},
        "cost_usd": 0.0012,
        "results_uri": "file:///r/results.jsonl",
    }
    items = [
        {"id": "q1", "expected": "x", "answer": "a | b", "contains": False, "status": "succeeded"},
        {"id": "q2", "expected": "y", "answer": None, "contains": False, "status": "failed"},
        {"id": "q3", "expected": "z", "answer": "z", "contains": True, "status": "succeeded"},
    ]
    text = report.markdown(
        run_id="run-2", model="gpt-4o-mini", scores=doc, history=history, fetch=fetch, items=items
    )
    assert "exact match 30.0%" in text and "contains 60.0%" in text
    assert "| geo | 10 | 30.0% | 60.0% | 0 |" in text
    assert text.index("| run-2 |") < text.index("| run-1 |")  # newest first
    assert "9 succeeded, 1 failed of 10" in text and "$0.0012" in text
    assert "| q1 | x | a \\| b |" in text and "| q2 | y | (failed) |" in text and "| q3 |" not in text
    assert "![accuracy per category and across runs](accuracy.svg)" in text
    ET.fromstring(report.chart(doc, history))


# ---- embeddings: change detection -----------------------------------------------------


def test_plan_refresh_embeds_only_changed_documents() -> None:
    docs = [{"doc_id": "a", "text": "alpha"}, {"doc_id": "b", "text": "beta"}]
    first = embeddings.plan_refresh(docs, [], model="m", dimensions=8)
    assert [d["doc_id"] for d in first.to_embed] == ["a", "b"] and first.changed
    assert first.to_embed[0]["sha256"] == embeddings.content_hash("alpha")

    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0]}
    rows = embeddings.merge_vectors([], first, vectors, model="m", dimensions=8)
    assert [r["doc_id"] for r in rows] == ["a", "b"] and rows[0]["vector"] == [1.0, 0.0]

    same = embeddings.plan_refresh(docs, rows, model="m", dimensions=8)
    assert not same.changed and same.unchanged == ["a", "b"]

    edited = [{"doc_id": "a", "text": "alpha v2"}, {"doc_id": "c", "text": "gamma"}]
    plan = embeddings.plan_refresh(edited, rows, model="m", dimensions=8)
    assert [d["doc_id"] for d in plan.to_embed] == ["a", "c"] and plan.removed == ["b"]
    # c failed to embed: left out (retried next run); a replaced; b dropped
    merged = embeddings.merge_vectors(
        rows, {"to_embed": plan.to_embed, "removed": plan.removed}, {"a": [0.5, 0.5]}, model="m", dimensions=8
    )
    assert [(r["doc_id"], r["vector"]) for r in merged] == [("a", [0.5, 0.5])]
    assert merged[0]["sha256"] == embeddings.content_hash("alpha v2")

    # a new model or size re-embeds everything
    assert len(embeddings.plan_refresh(docs, rows, model="m2", dimensions=8).to_embed) == 2
    assert len(embeddings.plan_refresh(docs, rows, model="m", dimensions=16).to_embed) == 2


def test_vectors_from_results_keeps_only_successes() -> None:
    lines = [
        {"custom_id": "a", "status": "succeeded", "response": {"data": [{"embedding": [0.1, 0.2]}]}},
        {"custom_id": "b", "status": "failed", "response": None},
        {"custom_id": "c", "status": "succeeded", "response": {"data": []}},
    ]
    assert embeddings.vectors_from_results(lines) == {"a": [0.1, 0.2]}


# ---- nearest neighbours ---------------------------------------------------------------


def test_cosine() -> None:
    assert cosine([1, 0], [1, 0]) == 1.0
    assert cosine([1, 0], [0, 2]) == 0.0
    assert math.isclose(cosine([1, 1], [-1, -1]), -1.0)
    assert math.isclose(cosine([3, 4], [6, 8]), 1.0)
    assert cosine([0, 0], [1, 1]) == 0.0
    with pytest.raises(ValueError, match="length"):
        cosine([1], [1, 2])


def test_index_finds_nearest_by_cosine_not_distance() -> None:
    index = NearestNeighbourIndex([("east", [10.0, 0.0]), ("north", [0.0, 1.0]), ("north-east", [1.0, 1.0])])
    assert len(index) == 3 and index.dimensions == 2
    hits = index.search([0.9, 0.1], k=2)
    assert [h[0] for h in hits] == ["east", "north-east"]
    assert math.isclose(hits[0][1], cosine([0.9, 0.1], [10, 0]), abs_tol=1e-6)
    assert index.search([0.0, 5.0], k=1) == [("north", 1.0)]
    assert len(index.search([1.0, 0.0], k=10)) == 3
    with pytest.raises(ValueError, match="dimensions"):
        index.search([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="dimensions"):
        index.add("bad", [1.0])


def test_index_agrees_with_brute_force() -> None:
    import random

    rng = random.Random(7)
    items = [(f"d{i}", [rng.uniform(-1, 1) for _ in range(16)]) for i in range(200)]
    index = NearestNeighbourIndex(items)
    for _ in range(5):
        query = [rng.uniform(-1, 1) for _ in range(16)]
        expected = sorted(items, key=lambda kv: -cosine(query, kv[1]))[:5]
        assert [k for k, _ in index.search(query, k=5)] == [k for k, _ in expected]


# ---- classification -------------------------------------------------------------------


def test_parse_label_and_labels_csv() -> None:
    good = _chat(json.dumps({"label": "billing", "confidence": "high"}))
    assert classification.parse_label(good) == {"label": "billing", "confidence": "high"}
    assert classification.parse_label(_chat("not json")) is None
    assert classification.parse_label(_chat(json.dumps({"label": "nope"}))) is None
    assert classification.parse_label(None) is None
    lines = [
        {"custom_id": "T-1", "status": "succeeded", "response": good},
        {"custom_id": "T-2", "status": "succeeded", "response": _chat("??")},
        {"custom_id": "T-3", "status": "expired", "response": None},
    ]
    text, counts = classification.to_csv(classification.labelled_rows(lines))
    assert text.splitlines() == [
        "ticket_id,label,confidence,status",
        "T-1,billing,high,succeeded",
        "T-2,,,unparsed",
        "T-3,,,expired",
    ]
    assert counts == {"billing": 1, "": 2}


def test_response_format_is_a_strict_schema_over_the_labels() -> None:
    schema = classification.RESPONSE_FORMAT["json_schema"]["schema"]
    assert classification.RESPONSE_FORMAT["json_schema"]["strict"] is True
    assert schema["properties"]["label"]["enum"] == classification.LABELS
    assert set(schema["required"]) == set(schema["properties"])
    assert schema["additionalProperties"] is False


# ---- storage settings ---------------------------------------------------------------------


def test_destination_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BATCH_DEMO_DESTINATION", "s3://batch-results")
    assert storage.destination("nightly_eval", "run/") == "s3://batch-results/nightly_eval/run"
    monkeypatch.delenv("BATCH_DEMO_DESTINATION")
    monkeypatch.setenv("AIRFLOW_HOME", "/opt/airflow")
    assert storage.destination_root() == "file:///opt/airflow/batch-results/"
    monkeypatch.setenv("BATCH_DEMO_STORAGE_CONN_ID", "")
    assert storage.storage_conn_id() is None
    monkeypatch.setenv("BATCH_DEMO_POLL_INTERVAL", "0.5")
    assert storage.poll_interval() == 0.5
    assert storage.slug("manual__2026-01-02T03:04:05+00:00") == "manual__2026-01-02T03_04_05_00_00"
