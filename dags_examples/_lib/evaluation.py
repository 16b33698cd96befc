"""Score model answers against an eval set: exact match and contains, per category.

Both metrics compare *normalized* text: lower case, every run of characters other
than letters and digits becomes one space. ``contains`` matches whole tokens, so
expected ``"4"`` is not found in ``"14"``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

_NON_WORD = re.compile(r"[^0-9a-z]+")


def normalize(text: str) -> str:
    """Lower case, accents folded, punctuation and spaces collapsed to single spaces."""
    folded = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    return _NON_WORD.sub(" ", folded.lower()).strip()


def _expected(item: Mapping[str, Any]) -> list[str]:
    values = [item["expected"], *item.get("aliases", ())]
    return [n for n in (normalize(v) for v in values) if n]


def exact_match(answer: str | None, expected: Iterable[str]) -> bool:
    """True when the normalized answer equals one normalized expected answer."""
    if answer is None:
        return False
    got = normalize(answer)
    return any(got == normalize(e) for e in expected)


def contains_match(answer: str | None, expected: Iterable[str]) -> bool:
    """True when one normalized expected answer appears in the answer as whole tokens."""
    if answer is None:
        return False
    padded = f" {normalize(answer)} "
    return any(f" {e} " in padded for e in map(normalize, expected) if e)


def answer_text(body: Mapping[str, Any] | None) -> str | None:
    """The text of a chat completion, response or completion body (``None`` if it has none)."""
    if not body:
        return None
    choices = body.get("choices")
    if choices:
        first = choices[0]
        message = first.get("message")
        return message.get("content") if isinstance(message, Mapping) else first.get("text")
    if isinstance(body.get("output_text"), str):
        return body["output_text"]
    parts = [
        part.get("text", "")
        for item in body.get("output") or ()
        if isinstance(item, Mapping)
        for part in item.get("content") or ()
        if isinstance(part, Mapping) and part.get("type") == "output_text"
    ]
    return "".join(parts) if parts else None


@dataclass
class CategoryScore:
    """Counts for one category (or ``"overall"``)."""

    category: str
    total: int = 0
    exact: int = 0
    contains: int = 0
    failed: int = 0  # requests with no answer (failed, expired, ...): scored as wrong

    @property
    def exact_accuracy(self) -> float:
        return self.exact / self.total if self.total else 0.0

    @property
    def contains_accuracy(self) -> float:
        return self.contains / self.total if self.total else 0.0

    def add(self, exact: bool, contains: bool, failed: bool) -> None:
        self.total += 1
        self.exact += exact
        self.contains += contains
        self.failed += failed

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "exact_accuracy": round(self.exact_accuracy, 4),
            "contains_accuracy": round(self.contains_accuracy, 4),
        }


@dataclass
class EvalScores:
    """Scores of one run: per category, overall, and one row per item."""

    categories: dict[str, CategoryScore] = field(default_factory=dict)
    overall: CategoryScore = field(default_factory=lambda: CategoryScore("overall"))
    items: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "categories": [c.to_dict() for c in self.categories.values()],
        }


def score(items: Iterable[Mapping[str, Any]], results: Mapping[str, Mapping[str, Any]]) -> EvalScores:
    """Score every eval item against its result.

    :param items: eval items ``{"id", "category", "question", "expected", "aliases"?}``.
    :param results: ``results.jsonl`` lines by ``custom_id`` (the item id); an item with
        no result, or a result that did not succeed, scores as wrong and counts as failed.
    """
    scores = EvalScores()
    for item in items:
        result = results.get(item["id"]) or {}
        succeeded = result.get("status") == "succeeded"
        answer = answer_text(result.get("response")) if succeeded else None
        expected = _expected(item)
        exact, contains = exact_match(answer, expected), contains_match(answer, expected)
        category = scores.categories.setdefault(item["category"], CategoryScore(item["category"]))
        for bucket in (category, scores.overall):
            bucket.add(exact, contains, not succeeded)
        scores.items.append(
            {
                "id": item["id"],
                "category": item["category"],
                "expected": item["expected"],
                "answer": answer,
                "status": result.get("status", "missing"),
                "exact": exact,
                "contains": contains,
            }
        )
    return scores


def parse_jsonl(lines: Iterable[str | bytes]) -> list[dict[str, Any]]:
    """Parse JSON lines, skipping blank ones."""
    return [json.loads(line) for line in lines if line.strip()]
