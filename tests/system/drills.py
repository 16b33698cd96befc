"""Helpers shared by the system drills: the input file, landed results, the emulator's view.

The drills compare what they landed with the fault-free run of the same input. Both
go through the emulator's deterministic fake model, so a request's answer is the same
in every run; what differs by nature (batch ids, response ids, timestamps) is left out
by :func:`canonical_results`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DRILL_DAG = "system_batch_drill"
SIDECAR_DAG = "system_sidecar"
#: Requests per drill input; REJECTED of them are refused by the model (400) on purpose.
REQUESTS = 40
REJECTED = ("req-007", "req-023")
#: Fields of a response body that change from run to run.
_VOLATILE = {"id", "created", "created_at", "system_fingerprint", "request_id"}


def write_input(path: Path, n: int = REQUESTS) -> Path:
    """``n`` chat requests; the ``REJECTED`` ones carry the emulator's context-length directive."""
    lines = []
    for i in range(n):
        cid = f"req-{i:03d}"
        text = f"System drill question {i}: what is {i} times {i + 3}?"
        if cid in REJECTED:
            text += " [[emulator:context_length_exceeded]]"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], "temperature": 0}
        lines.append(
            json.dumps({"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body})
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in sorted(value.items()) if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def canonical_results(destination: Path) -> list[dict[str, Any]]:
    """``results.jsonl`` without what differs by nature between two runs of the same input."""
    rows = []
    for line in iter_jsonl(destination / "results.jsonl"):
        response = line.get("response") or {}
        body = response.get("body") if isinstance(response, dict) and "body" in response else response
        rows.append(
            {
                "custom_id": line["custom_id"],
                "status": line["status"],
                "request": line.get("request"),
                "response": _stable(body) if body else None,
                "error": _stable(line.get("error")),
            }
        )
    return rows


def status_counts(destination: Path) -> Counter[str]:
    return Counter(line["status"] for line in iter_jsonl(destination / "results.jsonl"))


def landed_files(destination: Path) -> list[Path]:
    """Every file under the destination (hidden and temporary ones included)."""
    return sorted(p for p in destination.rglob("*") if p.is_file()) if destination.exists() else []


def batches_of_run(emulator: Any, run_id: str, dag_id: str = DRILL_DAG) -> list[Any]:
    """Every batch the emulator holds that a task of this DAG run created (by its metadata)."""
    client = emulator.client(max_retries=5)
    return [
        b
        for b in client.batches.list(limit=100)
        if (b.metadata or {}).get("airflow_run_id") == run_id[:512]
        and (b.metadata or {}).get("airflow_dag_id") == dag_id
    ]


def batches_per_input(batches: list[Any]) -> Counter[tuple[str, str, str, str]]:
    """How many batches exist per (task identity, input fingerprint, shard): more than 1 is paying twice."""
    return Counter(
        (
            (b.metadata or {}).get("airflow_task_id", ""),
            (b.metadata or {}).get("airflow_identity", ""),
            (b.metadata or {}).get("airflow_fingerprint", ""),
            (b.metadata or {}).get("airflow_shard", ""),
        )
        for b in batches
    )


def read_manifest(destination: Path) -> dict[str, Any]:
    return dict(json.loads((destination / "manifest.json").read_text()))


def tree(path: Path) -> str:
    """A listing for assertion messages."""
    return "\n".join(f"{p.relative_to(path)} ({p.stat().st_size} B)" for p in landed_files(path)) or "(empty)"
