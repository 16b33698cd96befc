"""Small read-only HTML pages: ``/_emulator/batches`` and ``/_emulator/batches/{id}``.

The provider's extra links point here when the connection targets the emulator.
"""

from __future__ import annotations

import html
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from airflow_batch_provider.emulator.context import emulator

router = APIRouter(prefix="/_emulator")

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#f3f3f3}"
    ".completed{color:#080}.failed,.expired,.cancelled{color:#b00}"
)
_TIMES = (
    "created_at",
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expires_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _when(ts: int | None) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else ""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def _counts(batch: dict[str, Any]) -> str:
    counts = batch.get("request_counts") or {}
    return f"{counts.get('completed', 0)} ok / {counts.get('failed', 0)} failed / {counts.get('total', 0)}"


@router.get("/batches")
async def batch_list(request: Request) -> Response:
    """Every batch, newest first."""
    rows = "".join(
        f"<tr><td><a href='batches/{_e(b['id'])}'>{_e(b['id'])}</a></td>"
        f"<td class='{_e(b['status'])}'>{_e(b['status'])}</td><td>{_e(b['endpoint'])}</td>"
        f"<td>{_e(b.get('model'))}</td><td>{_e(_counts(b))}</td><td>{_when(b['created_at'])}</td></tr>"
        for b in (r.object for r in emulator(request).store.batches())
    )
    return _page(
        "Emulator batches",
        "<h1>Batches</h1><table><tr><th>id</th><th>status</th><th>endpoint</th><th>model</th>"
        f"<th>requests</th><th>created</th></tr>{rows}</table>",
    )


@router.get("/batches/{batch_id}")
async def batch_detail(request: Request, batch_id: str) -> Response:
    """One batch: status, counts, usage, timestamps, files, errors and metadata."""
    batch = emulator(request).store.get_batch(batch_id).object
    fields = [
        ("status", f"<span class='{_e(batch['status'])}'>{_e(batch['status'])}</span>"),
        ("endpoint", _e(batch["endpoint"])),
        ("model", _e(batch.get("model"))),
        ("requests", _e(_counts(batch))),
        ("usage", _e(batch.get("usage"))),
        ("input file", _e(batch["input_file_id"])),
        ("output file", _e(batch.get("output_file_id"))),
        ("error file", _e(batch.get("error_file_id"))),
    ] + [(name, _e(_when(batch.get(name)))) for name in _TIMES if batch.get(name)]
    rows = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in fields)
    errors = (batch.get("errors") or {}).get("data") or []
    error_rows = "".join(
        f"<tr><td>{_e(e.get('line'))}</td><td>{_e(e.get('code'))}</td><td>{_e(e.get('param'))}</td>"
        f"<td>{_e(e.get('message'))}</td></tr>"
        for e in errors
    )
    meta_rows = "".join(
        f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in (batch.get("metadata") or {}).items()
    )
    body = f"<p><a href='../batches'>all batches</a></p><h1>{_e(batch_id)}</h1><table>{rows}</table>"
    if error_rows:
        body += (
            "<h2>Errors</h2><table><tr><th>line</th><th>code</th><th>param</th><th>message</th></tr>"
            f"{error_rows}</table>"
        )
    if meta_rows:
        body += f"<h2>Metadata</h2><table>{meta_rows}</table>"
    return _page(f"Batch {batch_id}", body)
