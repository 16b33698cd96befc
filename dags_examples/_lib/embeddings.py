"""Content-hash change detection for an embedding refresh, and the vectors file.

The vectors file (``vectors.jsonl``) is the state between runs: one line per
document ``{"doc_id", "sha256", "model", "dimensions", "vector"}``. A document is
embedded again only when its text, the model or the dimensions changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


def content_hash(text: str) -> str:
    """sha256 of the text (UTF-8), hex."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class RefreshPlan:
    """What a refresh has to do.

    :param to_embed: ``{"doc_id", "text", "sha256"}`` of new and changed documents.
    :param unchanged: ids of documents whose vector is still good.
    :param removed: ids in the previous vectors with no document any more.
    """

    to_embed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.to_embed or self.removed)


def plan_refresh(
    documents: Iterable[Mapping[str, str]],
    previous: Iterable[Mapping[str, Any]],
    *,
    model: str,
    dimensions: int | None,
) -> RefreshPlan:
    """Compare documents with the previous vectors.

    :param documents: ``{"doc_id", "text"}``.
    :param previous: the lines of the previous ``vectors.jsonl`` (empty on the first run).
    :param model: the embedding model of this run.
    :param dimensions: the vector size asked for (``None``: the model's default).
    """
    known = {row["doc_id"]: row for row in previous}
    plan = RefreshPlan()
    seen = set()
    for doc in documents:
        doc_id, text = doc["doc_id"], doc["text"]
        seen.add(doc_id)
        digest = content_hash(text)
        old = known.get(doc_id)
        if (
            old
            and old.get("sha256") == digest
            and old.get("model") == model
            and old.get("dimensions") == dimensions
        ):
            plan.unchanged.append(doc_id)
        else:
            plan.to_embed.append({"doc_id": doc_id, "text": text, "sha256": digest})
    plan.removed = sorted(set(known) - seen)
    return plan


def vectors_from_results(results: Iterable[Mapping[str, Any]]) -> dict[str, list[float]]:
    """``{custom_id: vector}`` of the succeeded lines of an embeddings ``results.jsonl``."""
    vectors = {}
    for line in results:
        body = line.get("response") or {}
        data = body.get("data") or ()
        if line.get("status") == "succeeded" and data:
            vectors[line["custom_id"]] = [float(v) for v in data[0]["embedding"]]
    return vectors


def merge_vectors(
    previous: Iterable[Mapping[str, Any]],
    plan: RefreshPlan | Mapping[str, Any],
    new_vectors: Mapping[str, list[float]],
    *,
    model: str,
    dimensions: int | None,
) -> list[dict[str, Any]]:
    """The new ``vectors.jsonl`` lines: unchanged rows kept, embedded rows replaced, removed dropped.

    A document whose embedding failed keeps its old vector if it had one (stale beats
    missing) and is left out otherwise; the next run tries it again because its hash
    is not recorded.

    :param previous: the previous lines.
    :param plan: this run's :class:`RefreshPlan` (or its dict form, from XCom).
    :param new_vectors: :func:`vectors_from_results` output.
    """
    to_embed = plan.to_embed if isinstance(plan, RefreshPlan) else plan["to_embed"]
    removed = set(plan.removed if isinstance(plan, RefreshPlan) else plan["removed"])
    rows = {row["doc_id"]: dict(row) for row in previous if row["doc_id"] not in removed}
    for doc in to_embed:
        vector = new_vectors.get(doc["doc_id"])
        if vector is not None:
            rows[doc["doc_id"]] = {
                "doc_id": doc["doc_id"],
                "sha256": doc["sha256"],
                "model": model,
                "dimensions": dimensions,
                "vector": vector,
            }
    return [rows[k] for k in sorted(rows)]
