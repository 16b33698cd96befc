"""What the fetch operator reads (its ``batches`` argument) and writes (``manifest.json``).

Pure: no Airflow, no HTTP. The operator wires these to the hook and storage.

``manifest.json`` (schema version 1) records everything needed to trust, find and
pay for the results without the Airflow database::

    {"version": 1, "status": "complete" | "failed" | "in_progress",
     "endpoint", "model", "conn_id", "identity": {dag_id, task_id, run_id, map_index, try_number},
     "input": {"uri", "joined_from": "input_uri" | "uploaded_files", "fingerprint", "file_ids",
               "requests"},
     "destination", "manifest_uri", "results_uri",
     "batch_ids": [every batch of every round],
     "rounds": [{"round", "batch_ids", "resubmitted", "fingerprint", "batches": [summary...]}],
     "counts": {succeeded, failed, expired, cancelled, missing}, "total", "retryable",
     "usage": {input_tokens, cached_tokens, output_tokens, reasoning_tokens, total_tokens, responses},
     "cost": {"usd", "by_model", "note", ...},
     "estimate": {"estimated": {input_tokens, output_tokens_bound, cost_low_usd, cost_high_usd, ...},
                  "actual": {input_tokens, output_tokens, cost_usd}, "input_tokens_ratio",
                  "output_tokens_share_of_bound", "cost_within_range", "rounds": [...]} | null,
     "timings": {created_at, in_progress_at, finalizing_at, completed_at,
                 fetch_started_at, fetch_finished_at},
     "landed": [{"batch_id", "kind", "file_id", "uri", "bytes", "sha256", "lines", "skipped"}],
     "results": {"uri", "bytes", "sha256", "lines"} | null,
     "reconciliation": {...}, "error": str | null}
"""

from __future__ import annotations

import ast
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow_batch_provider.ids import check_user_id
from airflow_batch_provider.payloads import FetchManifest
from airflow_batch_provider.storage import public_uri

MANIFEST_VERSION = 1
OUTPUT_NAME = "output.jsonl"
ERRORS_NAME = "errors.jsonl"
RESULTS_NAME = "results.jsonl"
MANIFEST_NAME = "manifest.json"

#: Fields of a landed file kept in the manifest.
_LANDED_KEYS = ("batch_id", "kind", "file_id", "uri", "bytes", "sha256", "lines", "skipped")
_END_KEYS = ("completed_at", "failed_at", "expired_at", "cancelled_at")


def normalize_batches(batches: Any, argument: str = "batches") -> dict[str, Any]:
    """Turn the ``batches`` argument into the fetch's source description.

    :param batches: The submit operator's manifest (a mapping with ``batch_ids`` and
        ``shards``), one batch id, a list of batch ids, or any of these as JSON / a
        Python literal (what a Jinja template renders to).
    :param argument: the parameter it was given as, for errors (the sensor's is ``batch_ids``).
    :return: ``{"batch_ids", "shards": [{"index", "batch_id", "input_file_id",
        "start_line", "line_count"}], "endpoint", "model", "fingerprint", "input_uri",
        "identity", "conn_id", "input_conn_id"}``; unknown fields are ``None`` (ids-only input).
    :raises ValueError: the argument is none of these, or names no batch.
    :raises UnsafeIdError: it names a batch or file id that is not a valid id
        (:mod:`airflow_batch_provider.ids`): checked before any path or request is built.
    """
    value = _parse_text(batches) if isinstance(batches, str) else batches
    if isinstance(value, str):
        ids = [value]
        source: dict[str, Any] = {}
    elif isinstance(value, Mapping):
        ids = list(value.get("batch_ids") or ())
        source = dict(value)
    elif isinstance(value, Sequence) and all(isinstance(b, str) for b in value):
        ids = list(value)
        source = {}
    else:
        raise ValueError(
            f"batches must be the submit operator's manifest (e.g. submit.output), a batch id or a "
            f"list of batch ids; got {type(value).__name__}: {value!r:.200}"
        )
    ids = [i.strip() if isinstance(i, str) else i for i in ids]
    ids = [i for i in ids if i]
    where = f"The {argument!r} argument"
    for batch_id in ids:
        check_user_id(batch_id, kind="batch id", argument=where)
    if not ids:
        raise ValueError(f"batches names no batch id: {batches!r:.200}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"batches names a batch twice: {ids}")
    shards_in = [s for s in source.get("shards") or () if isinstance(s, Mapping)]
    by_batch = {str(s.get("batch_id")): s for s in shards_in}
    file_ids = list(source.get("input_file_ids") or ())
    shards: list[dict[str, Any]] = []
    for index, batch_id in enumerate(ids):
        shard = by_batch.get(batch_id, {})
        shards.append(
            {
                "index": int(shard.get("index", index)),
                "batch_id": batch_id,
                "input_file_id": shard.get("input_file_id")
                or (file_ids[index] if index < len(file_ids) else None),
                "start_line": shard.get("start_line"),
                "line_count": shard.get("line_count"),
            }
        )
    for shard in shards:
        if shard["input_file_id"] is not None:
            check_user_id(shard["input_file_id"], kind="input file id", argument=where)
    shards.sort(key=lambda s: int(s["index"]))
    return {
        "batch_ids": [s["batch_id"] for s in shards],
        "shards": shards,
        "endpoint": source.get("endpoint"),
        "model": source.get("model"),
        "fingerprint": source.get("fingerprint"),
        "input_uri": source.get("input_uri"),
        "input_conn_id": source.get("input_conn_id"),
        "identity": source.get("identity"),
        "conn_id": source.get("conn_id"),
        "estimate": round_estimate(source.get("estimate")),
    }


#: Fields of an estimate (``Estimate.to_dict()``) kept in the fetch's state, manifest and lineage
#: (its headline: no per-request rows, whose custom ids stay out of lineage).
_ESTIMATE_KEYS = (
    "requests",
    "input_tokens",
    "output_tokens_bound",
    "cost_low_usd",
    "cost_high_usd",
    "exact",
    "tokenizer",
    "model",
    "prices",
    "price_source",
    "prices_as_of",
    "output_bound_from",
    "default_output_tokens",
    "max_cost_usd",
)


def round_estimate(estimate: Any) -> dict[str, Any] | None:
    """The headline of an estimate (no per-shard or per-request rows), or ``None``."""
    if not isinstance(estimate, Mapping):
        return None
    return {k: estimate.get(k) for k in _ESTIMATE_KEYS if k in estimate}


def _ratio(actual: Any, estimated: Any) -> float | None:
    if not isinstance(actual, (int, float)) or not isinstance(estimated, (int, float)) or not estimated:
        return None
    return round(actual / estimated, 4)


def estimate_vs_actual(
    source: Mapping[str, Any],
    rounds: Sequence[Mapping[str, Any]],
    usage: Mapping[str, Any],
    cost: Mapping[str, Any] | None,
) -> dict[str, Any] | None:
    """The submit estimate (plus each resubmission round's) beside the usage the service reported.

    ``input_tokens_ratio`` is actual / estimated input tokens (1.0: exact);
    ``output_tokens_share_of_bound`` how much of the output bound was used, so teams can tune
    ``max_tokens`` or ``default_output_tokens``. ``None`` when the submit manifest had no estimate.
    """
    first = round_estimate(source.get("estimate"))
    if first is None:
        return None
    parts = [first] + [e for e in (round_estimate(r.get("estimate")) for r in rounds[1:]) if e]
    estimated: dict[str, Any] = {}
    for key in ("requests", "input_tokens", "output_tokens_bound", "cost_low_usd", "cost_high_usd"):
        values = [p.get(key) for p in parts]
        numbers = [float(v) for v in values if isinstance(v, (int, float))]
        total = round(sum(numbers), 6) if key.startswith("cost") else int(sum(numbers))
        estimated[key] = total if len(numbers) == len(values) else None
    estimated.update(exact=all(p.get("exact") for p in parts), tokenizer=first.get("tokenizer"))
    estimated.update(prices=first.get("prices"), price_source=first.get("price_source"))
    actual = {
        "input_tokens": int(usage.get("input_tokens") or 0),
        "output_tokens": int(usage.get("output_tokens") or 0),
        "cost_usd": (cost or {}).get("usd"),
    }
    low, high, usd = estimated["cost_low_usd"], estimated["cost_high_usd"], actual["cost_usd"]
    return {
        "estimated": estimated,
        "actual": actual,
        "input_tokens_ratio": _ratio(actual["input_tokens"], estimated["input_tokens"]),
        "output_tokens_share_of_bound": _ratio(actual["output_tokens"], estimated["output_tokens_bound"]),
        "cost_within_range": None if None in (low, high, usd) else bool(low - 1e-9 <= usd <= high + 1e-9),
        "rounds": parts,
    }


def _parse_text(text: str) -> Any:
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return stripped
    try:
        return json.loads(stripped)
    except ValueError:
        pass
    try:
        return ast.literal_eval(stripped)
    except (ValueError, SyntaxError) as exc:
        raise ValueError(f"batches looks like a manifest or a list but does not parse: {exc}") from exc


def aggregate_timings(summaries: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Earliest start and latest end over batch summaries (unix seconds)."""
    out: dict[str, int] = {}
    for summary in summaries:
        timings = summary.get("timings") or {}
        for key in ("created_at", "in_progress_at", "finalizing_at"):
            if timings.get(key) is not None:
                out[key] = min(out.get(key, timings[key]), int(timings[key]))
        ends = [int(timings[k]) for k in _END_KEYS if timings.get(k) is not None]
        if ends:
            out["completed_at"] = max(out.get("completed_at", 0), *ends)
    return out


def usage_fields(usage: Mapping[str, Any] | None) -> dict[str, int]:
    """Token usage in the manifest's shape (from ``pricing.Usage.to_dict()``)."""
    usage = usage or {}
    keys = ("input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens", "responses")
    return {k: int(usage.get(k) or 0) for k in keys}


def landed_entry(batch_id: str, kind: str, file_id: str, landed: Mapping[str, Any], *, skipped: bool) -> dict:
    """One ``landed`` row: a result file of a batch, where it is and what it holds."""
    row = {"batch_id": batch_id, "kind": kind, "file_id": file_id, **dict(landed), "skipped": skipped}
    row["uri"] = public_uri(row.get("uri"))
    return {k: row.get(k) for k in _LANDED_KEYS}


def build_fetch_manifest(
    *,
    source: Mapping[str, Any],
    identity: Mapping[str, Any],
    destination: str,
    rounds: Sequence[Mapping[str, Any]],
    landed: Sequence[Mapping[str, Any]],
    report: Mapping[str, Any] | None,
    cost: Mapping[str, Any] | None,
    results: Mapping[str, Any] | None,
    input_uri: str | None,
    joined_from: str | None,
    started_at: float,
    finished_at: float,
    status: str,
    error: str | None = None,
) -> FetchManifest:
    """Assemble ``manifest.json``.

    :param source: From :func:`normalize_batches` (endpoint, model, fingerprint, shards).
    :param identity: The fetch task instance (dag_id, task_id, run_id, map_index, try_number).
    :param destination: The destination directory URI.
    :param rounds: ``[{"round", "batch_ids", "batches": [summary], ...}]``; round 0 first.
    :param landed: Rows from :func:`landed_entry`.
    :param report: ``Reconciliation.to_dict()`` of the final join (``None`` if it never ran).
    :param cost: ``Reconciliation.estimate_cost(...)``.
    :param results: The landed ``results.jsonl`` (``LandedFile.to_dict()``) or ``None``.
    :param input_uri: The input JSONL the batches were built from, when it came from storage.
    :param joined_from: ``"input_uri"`` or ``"uploaded_files"``: what the join read.
    :param status: ``complete``, ``failed`` or ``in_progress``.
    :param error: Why the fetch failed, when it did.
    """
    dest = public_uri(destination.rstrip("/")) or ""
    summaries = [b for r in rounds for b in r.get("batches") or ()]
    batch_ids = [bid for r in rounds for bid in r.get("batch_ids") or ()]
    report = dict(report or {})
    first = summaries[0] if summaries else {}
    model = source.get("model") or first.get("model")
    endpoint = source.get("endpoint") or first.get("endpoint")
    timings: dict[str, Any] = aggregate_timings(summaries)
    timings.update(fetch_started_at=round(started_at, 3), fetch_finished_at=round(finished_at, 3))
    return {
        "version": MANIFEST_VERSION,
        "status": status,
        "error": error,
        "endpoint": endpoint,
        "model": model,
        "conn_id": source.get("conn_id"),
        "identity": dict(identity),
        "submit_identity": source.get("identity"),
        "input": {
            "uri": public_uri(input_uri),
            "joined_from": joined_from,
            "fingerprint": source.get("fingerprint"),
            "file_ids": [s.get("input_file_id") for s in source.get("shards") or ()],
            "requests": report.get("total"),
        },
        "destination": dest,
        "manifest_uri": f"{dest}/{MANIFEST_NAME}",
        "results_uri": public_uri((results or {}).get("uri")),
        "batch_ids": batch_ids,
        "rounds": [
            {
                "round": int(r.get("round", i)),
                "batch_ids": list(r.get("batch_ids") or ()),
                "resubmitted": int(r.get("resubmitted") or 0),
                "fingerprint": r.get("fingerprint"),
                "estimate": r.get("estimate") if i else round_estimate(source.get("estimate")),
                "batches": list(r.get("batches") or ()),
            }
            for i, r in enumerate(rounds)
        ],
        "counts": dict(report.get("counts") or {}),
        "total": report.get("total"),
        "retryable": (report.get("retryable") or {}).get("count"),
        "usage": usage_fields(report.get("usage")),
        "cost": dict(cost) if cost else None,
        "estimate": estimate_vs_actual(source, rounds, usage_fields(report.get("usage")), cost),
        "timings": timings,
        "landed": [dict(row) for row in landed],
        "results": dict(results, uri=public_uri(results.get("uri"))) if results else None,
        "reconciliation": report or None,
    }


def small_form(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The XCom return value: where everything is and the headline numbers."""
    cost = manifest.get("cost") or {}
    return {
        "manifest_uri": manifest.get("manifest_uri"),
        "results_uri": manifest.get("results_uri"),
        "destination": manifest.get("destination"),
        "batch_ids": list(manifest.get("batch_ids") or ()),
        "rounds": len(manifest.get("rounds") or ()),
        "endpoint": manifest.get("endpoint"),
        "model": manifest.get("model"),
        "total": manifest.get("total"),
        "counts": dict(manifest.get("counts") or {}),
        "retryable": manifest.get("retryable"),
        "usage": dict(manifest.get("usage") or {}),
        "cost_usd": cost.get("usd"),
    }


def previous_checksums(manifest: Mapping[str, Any] | None) -> dict[str, tuple[int, str]]:
    """``{uri: (bytes, sha256)}`` of the files an earlier run's manifest says it landed."""
    out: dict[str, tuple[int, str]] = {}
    for row in (manifest or {}).get("landed") or ():
        if isinstance(row, Mapping) and row.get("uri") and row.get("sha256"):
            out[str(row["uri"])] = (int(row.get("bytes") or 0), str(row["sha256"]))
    return out
