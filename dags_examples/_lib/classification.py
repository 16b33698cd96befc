"""Support-ticket classification with JSON-schema structured outputs.

The model must answer with ``{"label": <one of LABELS>, "confidence": "low"|"medium"|"high"}``:
``response_format`` carries the schema (``strict``), so every answer parses.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

LABELS = ["billing", "shipping", "technical", "account", "feedback"]
CONFIDENCE = ["low", "medium", "high"]

RESPONSE_FORMAT: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "ticket_label",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "label": {"type": "string", "enum": LABELS},
                "confidence": {"type": "string", "enum": CONFIDENCE},
            },
            "required": ["label", "confidence"],
            "additionalProperties": False,
        },
    },
}

SYSTEM_PROMPT = (
    "You label customer support tickets for a smart lamp company. Labels: "
    + ", ".join(LABELS)
    + ". Answer with the JSON object only."
)


def read_rows(text: Iterable[str]) -> Iterator[dict[str, str]]:
    """The rows of a CSV file (an open text file or lines) as dicts."""
    yield from csv.DictReader(text)


def parse_label(body: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The ``{"label", "confidence"}`` answer of a chat completion body, or ``None`` if it has
    none or it does not follow the schema."""
    try:
        content = body["choices"][0]["message"]["content"]  # type: ignore[index]
        answer = json.loads(content)
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    if not isinstance(answer, dict) or answer.get("label") not in LABELS:
        return None
    return {"label": answer["label"], "confidence": answer.get("confidence")}


def labelled_rows(results: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """One ``{"ticket_id", "label", "confidence", "status"}`` per ``results.jsonl`` line."""
    for line in results:
        answer = parse_label(line.get("response")) if line.get("status") == "succeeded" else None
        yield {
            "ticket_id": line["custom_id"],
            "label": (answer or {}).get("label", ""),
            "confidence": (answer or {}).get("confidence", ""),
            "status": line.get("status")
            if answer
            else "unparsed"
            if line.get("status") == "succeeded"
            else line.get("status"),
        }


def to_csv(rows: Iterable[Mapping[str, Any]]) -> tuple[str, Counter[str]]:
    """``labels.csv`` text and the count of each label (``""`` for rows without one)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, ["ticket_id", "label", "confidence", "status"], lineterminator="\n")
    writer.writeheader()
    counts: Counter[str] = Counter()
    for row in rows:
        writer.writerow(row)
        counts[row["label"]] += 1
    return out.getvalue(), counts
