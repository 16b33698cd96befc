"""The nightly eval report: markdown beside the results, with the SVG chart.

Pure: takes plain dicts (this run's scores, past runs' scores, the fetch summary)
and returns text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from _lib.svg_chart import accuracy_chart

MAX_HISTORY = 30
MAX_MISSES = 10


def history_rows(past: Iterable[Mapping[str, Any]], current: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Past runs' ``scores.json`` plus this run, oldest first, one per run, the last :data:`MAX_HISTORY`.

    Each row: ``{"run_id", "finished_at", "exact", "contains", "total"}``.
    """
    rows: dict[str, dict[str, Any]] = {}
    for doc in [*past, current]:
        overall = doc.get("overall") or {}
        rows[doc["run_id"]] = {  # the current run replaces an earlier copy of itself
            "run_id": doc["run_id"],
            "finished_at": doc.get("finished_at") or "",
            "exact": float(overall.get("exact_accuracy", 0.0)),
            "contains": float(overall.get("contains_accuracy", 0.0)),
            "total": int(overall.get("total", 0)),
        }
    ordered = sorted(rows.values(), key=lambda r: (r["finished_at"], r["run_id"]))
    return ordered[-MAX_HISTORY:]


def chart(scores: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> str:
    """The SVG chart of a run: categories of ``scores`` and the ``history`` rows."""
    categories = [(c["category"], c["exact_accuracy"], c["contains_accuracy"]) for c in scores["categories"]]
    # "MM-DD HH:MM": several runs a day stay apart.
    runs = [
        (r["finished_at"][5:16].replace("T", " ") or r["run_id"], r["exact"], r["contains"]) for r in history
    ]
    return accuracy_chart(categories, runs)


def _pct(value: float) -> str:
    return f"{value * 100:.1f}%"


def markdown(
    *,
    run_id: str,
    model: str | None,
    scores: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    fetch: Mapping[str, Any],
    items: Sequence[Mapping[str, Any]] = (),
    chart_name: str = "accuracy.svg",
) -> str:
    """The report as markdown.

    :param run_id: the Airflow run.
    :param model: the model evaluated.
    :param scores: ``EvalScores.to_dict()``.
    :param history: :func:`history_rows` output.
    :param fetch: the fetch operator's summary (counts, usage, cost_usd, results_uri).
    :param items: per-item rows (the first misses are listed).
    :param chart_name: the SVG file beside the report.
    """
    overall = scores["overall"]
    counts = fetch.get("counts") or {}
    usage = fetch.get("usage") or {}
    cost = fetch.get("cost_usd")
    lines = [
        f"# Nightly eval: {run_id}",
        "",
        f"Model `{model or fetch.get('model') or '?'}`, {overall['total']} items: "
        f"**exact match {_pct(overall['exact_accuracy'])}**, "
        f"**contains {_pct(overall['contains_accuracy'])}** ({overall['failed']} without an answer).",
        "",
        f"![accuracy per category and across runs]({chart_name})",
        "",
        "| category | items | exact match | contains | no answer |",
        "|---|---:|---:|---:|---:|",
    ]
    for c in scores["categories"]:
        lines.append(
            f"| {c['category']} | {c['total']} | {_pct(c['exact_accuracy'])} | "
            f"{_pct(c['contains_accuracy'])} | {c['failed']} |"
        )
    lines += ["", "## Across runs", "", "| run | finished | exact match | contains |", "|---|---|---:|---:|"]
    for r in reversed(history):
        lines.append(f"| {r['run_id']} | {r['finished_at']} | {_pct(r['exact'])} | {_pct(r['contains'])} |")
    lines += [
        "",
        "## Batch",
        "",
        "Requests: " + ", ".join(f"{v} {k}" for k, v in counts.items() if v) + f" of {fetch.get('total')}.",
        f"Tokens: {usage.get('input_tokens', 0)} in, {usage.get('output_tokens', 0)} out. "
        f"Estimated cost: {'n/a' if cost is None else f'${cost:.4f}'} (Batch API prices).",
        f"Results: `{fetch.get('results_uri')}`",
    ]
    misses = [i for i in items if not i.get("contains")][:MAX_MISSES]
    if misses:
        lines += ["", f"## First {len(misses)} misses", "", "| id | expected | answer |", "|---|---|---|"]
        for m in misses:
            answer = (m.get("answer") or f"({m.get('status')})").replace("|", "\\|").replace("\n", " ")[:80]
            lines.append(f"| {m['id']} | {m['expected']} | {answer} |")
    return "\n".join(lines) + "\n"
