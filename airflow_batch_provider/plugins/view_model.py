"""What the UI shows for a batch and for a task's batches: pure data, no database, no HTTP.

The FastAPI app (``plugins/app.py``) feeds these functions with batches read through
the hook and with the task's XComs; the pages (``plugins/pages.py``) render the
result, and the JSON endpoints return it as it is. Everything here is JSON-safe and
holds nothing secret: batch fields, token counts, URIs without credentials.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from airflow_batch_provider.pricing import Usage, estimate_cost
from airflow_batch_provider.waiting.status import BatchStatus, format_duration, summarize_batch

#: Metadata keys the submit operator writes (shown as the batch's Airflow identity).
META_DAG_ID = "airflow_dag_id"
META_TASK_ID = "airflow_task_id"
META_RUN_ID = "airflow_run_id"
META_SHARD = "airflow_shard"
#: Written on the batches of a resubmission round (2, 3, ...) by the fetch operator.
META_ROUND = "airflow_round"
#: Rows of a failure or error-code table kept for a page (the counts stay exact).
MAX_ROWS = 50

_END_KEYS = ("completed_at", "failed_at", "expired_at", "cancelled_at")


def progress(counts: Mapping[str, Any] | None) -> dict[str, Any]:
    """Request counts as a progress bar: absolute numbers and percentages of ``total``.

    :param counts: ``{"total", "completed", "failed"}`` (missing keys count as 0).
    """
    counts = counts or {}
    total = max(int(counts.get("total") or 0), 0)
    completed = max(int(counts.get("completed") or 0), 0)
    failed = max(int(counts.get("failed") or 0), 0)
    done = completed + failed
    scale = max(total, done)  # a service counting past its total must not overflow the bar

    def pct(n: int) -> float:
        return round(100.0 * n / scale, 1) if scale else 0.0

    return {
        "total": total,
        "completed": completed,
        "failed": failed,
        "pending": max(total - done, 0),
        "completed_pct": pct(completed),
        "failed_pct": pct(failed),
        "done_pct": pct(done),
    }


def seconds_of(value: Any) -> float | None:
    """A server's timestamp as a float, or ``None`` if it is not a finite number (a bad server's value)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def durations(timings: Mapping[str, Any]) -> dict[str, float]:
    """Seconds spent validating, running, finalizing and in all, from the batch's timestamps."""
    created = seconds_of(timings.get("created_at"))
    started = seconds_of(timings.get("in_progress_at"))
    finalizing = seconds_of(timings.get("finalizing_at"))
    ended = next((t for t in (seconds_of(timings.get(k)) for k in _END_KEYS) if t is not None), None)
    out: dict[str, float] = {}
    if created is not None and started is not None:
        out["validating"] = max(started - created, 0.0)
    run_end = finalizing if finalizing is not None else ended
    if started is not None and run_end is not None:
        out["running"] = max(run_end - started, 0.0)
    if finalizing is not None and ended is not None:
        out["finalizing"] = max(ended - finalizing, 0.0)
    if created is not None and ended is not None:
        out["total"] = max(ended - created, 0.0)
    return out


def estimate_eta(
    status: str, timings: Mapping[str, Any], counts: Mapping[str, Any], now: float
) -> dict[str, Any]:
    """When the batch should finish, from its rate so far.

    :return: ``{"seconds": float | None, "finish_at": float | None, "text": str, "warning": str | None}``;
        ``seconds`` is ``None`` when there is no basis for an estimate yet.
    """
    expires_at = seconds_of(timings.get("expires_at"))
    result: dict[str, Any] = {"seconds": None, "finish_at": None, "text": "", "warning": None}
    if BatchStatus.is_terminal(status):
        result.update(seconds=0.0, text="finished")
        return result
    if status == BatchStatus.VALIDATING.value:
        result["text"] = "validating the input file; no estimate yet"
    elif status == BatchStatus.FINALIZING.value:
        result["text"] = "finalizing: writing the result files"
    elif status == BatchStatus.CANCELLING.value:
        result["text"] = "cancelling: requests in flight finish first"
    else:
        bar = progress(counts)
        done = bar["completed"] + bar["failed"]
        started = seconds_of(timings.get("in_progress_at"))
        elapsed = now - started if started is not None else 0.0
        if done and bar["total"] and elapsed > 0:
            seconds = (bar["total"] - done) * elapsed / done
            result.update(seconds=round(seconds, 1), finish_at=round(now + seconds, 1))
            result["text"] = f"about {format_duration(seconds)} left at the current rate"
            if expires_at is not None and now + seconds > expires_at:
                result["warning"] = "at this rate the batch expires before every request has run"
        else:
            result["text"] = "no request finished yet; no estimate"
    return result


def browser_href(uri: str | None) -> str | None:
    """A URL a browser can open for ``uri``, or ``None``.

    ``http(s)`` as given; ``s3://`` and ``gs://`` as their web consoles. Local paths and
    other schemes have no page a browser in another machine could open: they are shown
    as text.
    """
    from airflow_batch_provider.links import storage_browser_url  # imports the task SDK: keep it lazy

    href = storage_browser_url(uri) if uri else ""
    return href if urlsplit(href).scheme in ("http", "https") else None


def input_line(shard: Mapping[str, Any] | None, line: Any) -> int | None:
    """The line of the original input that a shard file's ``line`` came from."""
    if not shard or line is None or shard.get("start_line") is None:
        return None
    try:
        return int(shard["start_line"]) + int(line) - 1
    except (TypeError, ValueError):
        return None


def batch_view(
    batch: Any,
    *,
    now: float,
    console_url: str | None = None,
    shard: Mapping[str, Any] | None = None,
    landed: Sequence[Mapping[str, Any]] = (),
    source: str = "live",
    read_error: str | None = None,
) -> dict[str, Any]:
    """Everything the UI shows about one batch.

    :param batch: an SDK ``Batch``, its dict form or a ``summarize_batch`` summary.
    :param now: the current time (unix seconds), for the ETA.
    :param console_url: the service's page of the batch, when there is one.
    :param shard: the submit manifest's shard of this batch (``index``, ``start_line``,
        ``line_count``), to map validation errors back to the input's lines.
    :param landed: the fetch manifest's landed files of this batch.
    :param source: ``live`` (read now through the hook) or ``xcom`` (the task's last summary).
    :param read_error: why the live read failed, when ``source`` is ``xcom``.
    """
    summary = batch if _is_summary(batch) else summarize_batch(batch)
    status = str(summary.get("status") or "unknown")
    timings = dict(summary.get("timings") or {})
    counts = summary.get("request_counts") or {}
    usage = Usage.from_usage(summary.get("usage"))
    metadata = {str(k): str(v) for k, v in (summary.get("metadata") or {}).items()}
    errors = [
        {
            **{k: e.get(k) for k in ("code", "message", "param", "line")},
            "input_line": input_line(shard, e.get("line")),
        }
        for e in summary.get("errors") or ()
    ]
    bar = progress(counts)
    return {
        "id": summary.get("id"),
        "status": status,
        "terminal": BatchStatus.is_terminal(status),
        "outcome": outcome(status, bar),
        "endpoint": summary.get("endpoint"),
        "model": summary.get("model"),
        "input_file_id": summary.get("input_file_id"),
        "output_file_id": summary.get("output_file_id"),
        "error_file_id": summary.get("error_file_id"),
        "progress": bar,
        "timings": timings,
        "durations": durations(timings),
        "eta": estimate_eta(status, timings, counts, now),
        "usage": usage.to_dict(),
        "cost": estimate_cost(summary.get("model"), usage),
        "errors": errors,
        "metadata": metadata,
        "airflow": {
            "dag_id": metadata.get(META_DAG_ID),
            "task_id": metadata.get(META_TASK_ID),
            "run_id": metadata.get(META_RUN_ID),
            "shard": metadata.get(META_SHARD),
            "round": round_number(metadata.get(META_ROUND)),
        },
        "shard": dict(shard) if shard else None,
        "console_url": console_url
        if console_url and urlsplit(console_url).scheme in ("http", "https")
        else None,
        "landed": [landed_view(row) for row in landed],
        "source": source,
        "read_error": read_error,
    }


def round_number(value: Any) -> int | None:
    """The round of a resubmitted batch as people count it: ``airflow_round`` 1 (the fetch's first
    resubmission, 0-based) is round 2, the submit being round 1; ``None`` for a first submission."""
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number + 1 if number >= 1 else None


def place_label(view: Mapping[str, Any]) -> str:
    """Where a batch sits in its task: ``"round 2"``, ``"shard 2/3"``, both, or ``""``.

    A lone shard (``1/1``) says nothing, so it is not shown.
    """
    ids = view.get("airflow") or {}
    parts = []
    if ids.get("round"):
        parts.append(f"round {ids['round']}")
    shard = str(ids.get("shard") or "")
    if shard and not shard.endswith("/1"):
        parts.append(f"shard {shard}")
    return ", ".join(parts)


def failure_view(failure: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Why a submit failed, from its ``batch_failure`` XCom: bounded, JSON-safe."""
    if not isinstance(failure, Mapping):
        return None
    problems = [
        {k: p.get(k) for k in ("line", "code", "message", "custom_id")}
        for p in list(failure.get("problems") or ())[:MAX_ROWS]
        if isinstance(p, Mapping)
    ]
    count = int(failure.get("problem_count") or len(problems))
    return {
        "error": str(failure.get("error") or "Error"),
        "message": str(failure.get("message") or ""),
        "problem_count": count,
        "problems": problems,
        "more": max(count - len(problems), 0),
        "source": failure.get("source"),
    }


def error_codes(reconciliation: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Failed requests by error code, from a landed manifest's reconciliation.

    :return: ``[{"code", "status", "count", "custom_ids"}]``, most frequent first; counts are of
        the manifest's sample (``unsuccessful_sample``), the custom_ids a few of each.
    """
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for row in (reconciliation or {}).get("unsuccessful_sample") or ():
        if not isinstance(row, Mapping):
            continue
        key = (str(row.get("code") or row.get("status") or "unknown"), str(row.get("status") or ""))
        group = groups.setdefault(key, {"code": key[0], "status": key[1], "count": 0, "custom_ids": []})
        group["count"] += 1
        if len(group["custom_ids"]) < 5 and row.get("custom_id") is not None:
            group["custom_ids"].append(str(row["custom_id"]))
    return sorted(groups.values(), key=lambda g: (-g["count"], g["code"]))[:MAX_ROWS]


def outcome(status: str, bar: Mapping[str, Any]) -> str:
    """One word for the colour of a batch: ``ok``, ``partial``, ``bad``, ``running``.

    A ``completed`` batch whose requests all failed is ``bad``: completed is not success.
    """
    if not BatchStatus.is_terminal(status):
        return "running"
    if status != BatchStatus.COMPLETED.value:
        return "bad"
    if bar["total"] and bar["failed"] >= bar["total"]:
        return "bad"
    return "partial" if bar["failed"] or bar["pending"] else "ok"


def landed_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """A landed file (a fetch manifest ``landed`` row, or ``results``) with a browser link if any."""
    uri = row.get("uri")
    return {
        "kind": row.get("kind"),
        "batch_id": row.get("batch_id"),
        "uri": uri,
        "href": browser_href(uri),
        "bytes": row.get("bytes"),
        "lines": row.get("lines"),
        "sha256": row.get("sha256"),
    }


def _is_summary(batch: Any) -> bool:
    return isinstance(batch, Mapping) and "timings" in batch and "request_counts" in batch


def task_totals(batches: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Progress, usage and cost added up over a task's batches.

    Each request counts once, with its final outcome: a resubmission round (``round`` >= 2)
    re-runs requests that failed in an earlier round, so its requests add nothing to the
    total and each one it completes moves from failed to completed. The cost is the sum of
    the batches that could be priced (every round was paid); ``cost_complete`` says whether
    every batch could.
    """
    views = list(batches)
    counts = {"total": 0, "completed": 0, "failed": 0}
    usage = Usage()
    usd = 0.0
    priced = 0

    def round_of(view: Mapping[str, Any]) -> int:
        return int((view.get("airflow") or {}).get("round") or 1)

    for view in sorted(views, key=round_of):  # earlier rounds first: later ones re-run their failures
        bar = view["progress"]
        if round_of(view) > 1:
            moved = min(int(bar["completed"]), counts["failed"])
            counts["completed"] += moved
            counts["failed"] -= moved
        else:
            for key in counts:
                counts[key] += int(bar[key])
        one = Usage(**{k: int(v) for k, v in (view.get("usage") or {}).items()})
        usage.add(one)
        cost = (view.get("cost") or {}).get("usd")
        if cost is not None:
            usd += float(cost)
            priced += 1
    statuses: dict[str, int] = {}
    for view in views:
        statuses[view["status"]] = statuses.get(view["status"], 0) + 1
    return {
        "batches": len(views),
        "statuses": statuses,
        "progress": progress(counts),
        "usage": usage.to_dict(),
        "cost_usd": round(usd, 6) if priced else None,
        "cost_complete": priced == len(views),
        "all_terminal": all(v["terminal"] for v in views),
    }


def estimate_view(estimate: Mapping[str, Any] | None, total: Mapping[str, Any]) -> dict[str, Any] | None:
    """The pre-submit estimate beside what the batches used so far (``totals`` of the task's batches).

    :param estimate: The submit manifest's ``estimate`` (or the fetch manifest's ``estimated``).
    :return: ``None`` when the task recorded no estimate; actual figures are ``None`` until a
        batch reports usage.
    """
    if not isinstance(estimate, Mapping):
        return None
    usage = total.get("usage") or {}
    reported = bool(usage.get("responses"))
    units = {k: int(usage[k]) for k in ("images", "video_seconds") if reported and usage.get(k)}
    return {
        "input_tokens": estimate.get("input_tokens"),
        "output_tokens_bound": estimate.get("output_tokens_bound"),
        "cost_low_usd": estimate.get("cost_low_usd"),
        "cost_high_usd": estimate.get("cost_high_usd"),
        "tokenizer": estimate.get("tokenizer"),
        "exact": estimate.get("exact"),
        "max_cost_usd": estimate.get("max_cost_usd"),
        "actual_input_tokens": int(usage.get("input_tokens") or 0) if reported else None,
        "actual_output_tokens": int(usage.get("output_tokens") or 0) if reported else None,
        "actual_cost_usd": total.get("cost_usd") if reported else None,
        # Image and video endpoints: units requested, and returned (absent for text batches).
        **{k: estimate[k] for k in ("images", "video_seconds") if estimate.get(k)},
        **({"actual": units} if units else {}),
    }
