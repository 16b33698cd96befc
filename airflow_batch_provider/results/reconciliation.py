"""The accounting of a join: :class:`Reconciliation`, and the status vocabulary.

Pure: no Airflow, no HTTP. :func:`airflow_batch_provider.results.join_results` fills a
:class:`Reconciliation` while it writes ``results.jsonl``; the fetch operator calls
:meth:`Reconciliation.check` to fail the task, puts :meth:`Reconciliation.to_dict` and
:meth:`Reconciliation.estimate_cost` in the manifest. Import both from
``airflow_batch_provider.results``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from airflow_batch_provider.exceptions import ReconciliationError
from airflow_batch_provider.pricing import Usage, estimate_cost


class ResultStatus(str, Enum):
    """Status of one request in ``results.jsonl``."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    MISSING = "missing"


STATUSES: tuple[str, ...] = tuple(s.value for s in ResultStatus)


@dataclass
class Reconciliation:
    """Accounting of a join: every input request has exactly one status.

    Samples are bounded (``sample_size``); the counts are exact.
    """

    total: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(STATUSES, 0))
    retryable: int = 0
    retryable_sample: list[str] = field(default_factory=list)
    missing_sample: list[str] = field(default_factory=list)
    #: Non-succeeded requests: ``{"custom_id", "status", "code"}``.
    unsuccessful_sample: list[dict[str, Any]] = field(default_factory=list)
    #: Result lines whose custom_id is in no input.
    unknown: int = 0
    unknown_sample: list[str] = field(default_factory=list)
    duplicate_inputs: int = 0
    duplicate_inputs_sample: list[str] = field(default_factory=list)
    #: Extra result lines for a custom_id in the same round (e.g. in output and error file).
    duplicate_results: int = 0
    invalid_lines: int = 0
    invalid_sample: list[str] = field(default_factory=list)
    result_lines: int = 0
    rounds: int = 0
    #: Summed over every response body read, every round: what was billed.
    usage: Usage = field(default_factory=Usage)
    #: The same, per ``model`` named in the response bodies ("" when a body names none).
    usage_by_model: dict[str, Usage] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    sample_size: int = 20

    @property
    def succeeded(self) -> int:
        return self.counts["succeeded"]

    @property
    def missing(self) -> int:
        return self.counts["missing"]

    @property
    def success_ratio(self) -> float:
        """Succeeded / total (1.0 when there are no requests)."""
        return self.succeeded / self.total if self.total else 1.0

    def keep_sample(self, bucket: list[Any], item: Any) -> None:
        """Append ``item`` to one of the sample lists unless it is full."""
        if len(bucket) < self.sample_size:
            bucket.append(item)

    def _counts_text(self) -> str:
        return " ".join(f"{s}={self.counts[s]}" for s in STATUSES) + f" (total {self.total})"

    def check(self, min_success_ratio: float | None = None) -> None:
        """Raise unless every request is accounted for and enough succeeded.

        :param min_success_ratio: Fail when ``succeeded / total`` is below it (0..1).
        :raises ReconciliationError: with the counts and the custom_ids concerned.
        :raises ValueError: ``min_success_ratio`` is outside 0..1.
        """
        if min_success_ratio is not None and not 0.0 <= min_success_ratio <= 1.0:
            raise ValueError(f"min_success_ratio must be between 0 and 1, got {min_success_ratio!r}")
        problems = []
        if self.missing:
            more = "" if self.missing <= len(self.missing_sample) else ", ..."
            problems.append(
                f"{self.missing} of {self.total} requests have no result line in any output or error "
                f"file (custom_ids: {', '.join(self.missing_sample)}{more}); "
                f"{self.unknown} result lines name custom_ids absent from the input"
                + (f" ({', '.join(self.unknown_sample)})" if self.unknown_sample else "")
                + ". Check that the input files are the ones these batches ran, then re-run the fetch"
            )
        if min_success_ratio is not None and self.success_ratio < min_success_ratio:
            shown = ", ".join(
                f"{u['custom_id']} ({u['status']}" + (f": {u['code']})" if u["code"] != u["status"] else ")")
                for u in self.unsuccessful_sample
            )
            problems.append(
                f"only {self.succeeded} of {self.total} requests succeeded ({self.success_ratio:.1%}), "
                f"below min_success_ratio {min_success_ratio:.1%} (not succeeded: {shown}"
                f"{', ...' if self.total - self.succeeded > len(self.unsuccessful_sample) else ''}); "
                "see the error of each line in results.jsonl"
            )
        if problems:
            raise ReconciliationError(
                f"Reconciliation failed: {'; '.join(problems)}. Counts: {self._counts_text()}, "
                f"retryable={self.retryable}."
            )

    def estimate_cost(
        self, prices: Mapping[str, Any] | None = None, model: str | None = None
    ) -> dict[str, Any]:
        """Estimated batch cost of :attr:`usage_by_model`.

        :param prices: Price overrides (see :func:`~airflow_batch_provider.pricing.estimate_cost`).
        :param model: Model to price bodies that name none (e.g. the manifest's model).
        :return: ``{"usd": float | None, "by_model": {model: estimate}, "note"}``; ``usd`` is
            ``None`` when some tokens could not be priced.
        """
        by_model = {m: estimate_cost(m or model, u, prices) for m, u in self.usage_by_model.items()}
        unpriced = [m or str(model) for m, c in by_model.items() if c["usd"] is None]
        usd = None if unpriced else round(sum(c["usd"] for c in by_model.values()), 6)
        note = f"no price for: {', '.join(unpriced)}" if unpriced else None
        return {"usd": usd, "by_model": by_model, "note": note}

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form for the manifest and XCom."""
        return {
            "total": self.total,
            "counts": dict(self.counts),
            "success_ratio": round(self.success_ratio, 6),
            "missing": {"count": self.missing, "sample": list(self.missing_sample)},
            "retryable": {"count": self.retryable, "sample": list(self.retryable_sample)},
            "unsuccessful_sample": list(self.unsuccessful_sample),
            "unknown": {"count": self.unknown, "sample": list(self.unknown_sample)},
            "duplicate_inputs": {
                "count": self.duplicate_inputs,
                "sample": list(self.duplicate_inputs_sample),
            },
            "duplicate_results": self.duplicate_results,
            "invalid_lines": {"count": self.invalid_lines, "sample": list(self.invalid_sample)},
            "result_lines": self.result_lines,
            "rounds": self.rounds,
            "usage": self.usage.to_dict(),
            "usage_by_model": {m: u.to_dict() for m, u in self.usage_by_model.items()},
            "batches": list(self.batches),
        }
