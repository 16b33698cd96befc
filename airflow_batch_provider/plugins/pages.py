"""Server-rendered HTML of the plugin's pages: plain markup, inline CSS, a few lines of JS.

Every value goes through :func:`e` (HTML escaping) and every link through
:func:`href` (http(s) or a path on this server only), so batch metadata, error
messages or ids can never inject markup or script. Pure: no Airflow, no HTTP.
"""

from __future__ import annotations

import html
import time
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from airflow_batch_provider.plugins.view_model import place_label, seconds_of
from airflow_batch_provider.pricing import format_usd
from airflow_batch_provider.waiting.status import BatchStatus, format_duration

#: Seconds between refreshes of a page whose batches may still change.
REFRESH_SECONDS = 10

_TIMESTAMP_LABELS = (
    ("created_at", "Created"),
    ("in_progress_at", "Started"),
    ("finalizing_at", "Finalizing"),
    ("completed_at", "Completed"),
    ("failed_at", "Failed"),
    ("expired_at", "Expired"),
    ("cancelling_at", "Cancelling"),
    ("cancelled_at", "Cancelled"),
)


def e(value: Any) -> str:
    """HTML-escape any value (``None`` -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def href(url: Any) -> str | None:
    """``url`` if a browser may follow it from these pages (http(s), or a path here), else ``None``."""
    text = str(url or "")
    parts = urlsplit(text)
    if parts.scheme in ("http", "https") and parts.netloc:
        return text
    if not parts.scheme and not parts.netloc and (text.startswith("/") or text.startswith("?")):
        return text if not text.startswith("//") else None
    return None


def link(url: Any, label: Any, *, external: bool = False, top: bool = False, cls: str = "") -> str:
    """An ``<a>`` for a safe URL, else the label as text."""
    target = href(url)
    if target is None:
        return e(label)
    attrs = f' class="{e(cls)}"' if cls else ""
    if external:
        attrs += ' target="_blank" rel="noopener noreferrer"'
    elif top:
        attrs += ' target="_top"'
    return f'<a href="{e(target)}"{attrs}>{e(label)}</a>'


def timestamp(value: Any) -> str:
    """A unix time as ``<time>`` (UTC text; the page's script shows it in local time)."""
    if value is None:
        return ""
    seconds = seconds_of(value)
    try:
        when = time.gmtime(seconds) if seconds is not None else None
    except (OverflowError, OSError, ValueError):  # out of the platform's range: a bad server's value
        when = None
    if when is None:
        return e(value)
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", when)
    text = time.strftime("%Y-%m-%d %H:%M:%S UTC", when)
    return f'<time datetime="{iso}">{text}</time>'


def badge(status: str) -> str:
    return f'<span class="badge st-{e(status)}">{e(status.replace("_", " "))}</span>'


def progress_bar(bar: Mapping[str, Any], *, compact: bool = False) -> str:
    """The progress bar: completed (green) and failed (red) segments of ``total``.

    ``data-*`` attributes and ``aria-*`` carry the numbers for tests and screen readers.

    :param compact: a shorter label, for table rows.
    """
    label = f"{bar['completed']} completed, {bar['failed']} failed of {bar['total']} requests"
    counts = [
        f'<span class="n-ok">{e(bar["completed"])} completed</span>',
        f'<span class="n-bad">{e(bar["failed"])} failed</span>',
    ]
    if not compact:
        counts.append(f'<span class="n-pending">{e(bar["pending"])} pending</span>')
    counts.append(f'<span class="n-total">{e(bar["total"])} total</span>')
    done = "" if compact else f' <span class="muted">({e(bar["done_pct"])}% done)</span>'
    return (
        f'<div class="progress" role="progressbar" aria-label="{e(label)}" aria-valuemin="0" '
        f'aria-valuemax="{e(bar["total"])}" aria-valuenow="{e(bar["completed"] + bar["failed"])}" '
        f'data-completed="{e(bar["completed"])}" data-failed="{e(bar["failed"])}" '
        f'data-total="{e(bar["total"])}">'
        f'<span class="seg ok" style="width:{float(bar["completed_pct"]):.1f}%"></span>'
        f'<span class="seg bad" style="width:{float(bar["failed_pct"]):.1f}%"></span></div>'
        f'<div class="progress-label">{" · ".join(counts)}{done}</div>'
    )


def media_units(figures: Mapping[str, Any]) -> str:
    """``3 images · 24 s of video``: the units image and video endpoints are billed in ("" if none)."""
    images, seconds = int(figures.get("images") or 0), int(figures.get("video_seconds") or 0)
    parts = ([f"{images:,} image{'s' if images != 1 else ''}"] if images else []) + (
        [f"{seconds:,} s of video"] if seconds else []
    )
    return " · ".join(parts)


def tokens(usage: Mapping[str, Any], *, terminal: bool = False) -> str:
    total = int(usage.get("total_tokens") or 0)
    units = media_units(usage)
    if not total:
        if units:  # dall-e images and videos report no tokens
            return units
        # "none yet" of a finished batch would promise tokens that never come.
        text = "not reported by the service" if terminal else "none yet"
        return f'<span class="muted">{text}</span>'
    return (
        f"{total:,} total: {int(usage.get('input_tokens') or 0):,} in "
        f"({int(usage.get('cached_tokens') or 0):,} cached), {int(usage.get('output_tokens') or 0):,} out "
        f"({int(usage.get('reasoning_tokens') or 0):,} reasoning)" + (f" · {units}" if units else "")
    )


def usd(value: Any) -> str:
    """A readable cost (``$0.35``, ``<$0.01``); the exact amount stays in the manifest."""
    if value is None:
        return '<span class="muted">unknown</span>'
    return e(format_usd(float(value)))


def cost(cost_info: Mapping[str, Any] | None) -> str:
    info = cost_info or {}
    note = info.get("note")
    text = usd(info.get("usd"))
    return f'{text} <span class="muted" title="{e(note)}">(estimate)</span>' if note else text


def _dl(rows: Sequence[tuple[str, str]]) -> str:
    items = "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in rows if v)
    return f'<dl class="grid">{items}</dl>'


def _errors_table(errors: Sequence[Mapping[str, Any]]) -> str:
    if not errors:
        return ""
    rows = "".join(
        "<tr>"
        f'<td class="num">{e(err.get("line") if err.get("line") is not None else "-")}</td>'
        f'<td class="num">{e(err.get("input_line") if err.get("input_line") is not None else "-")}</td>'
        f"<td><code>{e(err.get('code'))}</code></td><td>{e(err.get('message'))}</td>"
        f"<td>{e(err.get('param'))}</td></tr>"
        for err in errors
    )
    return (
        '<h4>Validation errors</h4><table class="errors"><thead><tr><th>Line</th><th>Input line</th>'
        f"<th>Code</th><th>Message</th><th>Param</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _landed_list(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return ""
    items = []
    for row in rows:
        target = row.get("href")
        name = link(target, row.get("uri"), external=True) if target else f"<code>{e(row.get('uri'))}</code>"
        size = []
        if row.get("lines") is not None:
            size.append(f"{int(row['lines']):,} lines")
        if row.get("bytes") is not None:
            size.append(f"{int(row['bytes']):,} bytes")
        items.append(
            f'<li><span class="kind">{e(row.get("kind") or "file")}</span> {name} '
            f'<span class="muted">{e(", ".join(size))}</span></li>'
        )
    return f'<h4>Landed files</h4><ul class="landed">{"".join(items)}</ul>'


def batch_card(view: Mapping[str, Any]) -> str:
    """One batch: status, progress, timings and ETA, usage and cost, errors, files."""
    timings = view.get("timings") or {}
    eta = view.get("eta") or {}
    shard = view.get("shard") or {}
    durations = view.get("durations") or {}
    title = [badge(view["status"]), f'<code class="batch-id">{e(view["id"])}</code>']
    if view.get("console_url"):
        title.append(link(view["console_url"], "open in console ↗", external=True, cls="console"))
    place = place_label(view)
    if place:
        title.append(f'<span class="place">{e(place)}</span>')
    if shard.get("start_line") is not None and shard.get("line_count") is not None:
        last = int(shard["start_line"]) + int(shard["line_count"]) - 1
        title.append(f'<span class="muted">input lines {e(shard["start_line"])}–{e(last)}</span>')
    rows: list[tuple[str, str]] = [("Model", e(view.get("model"))), ("Endpoint", e(view.get("endpoint")))]
    rows += [(label, timestamp(timings.get(key))) for key, label in _TIMESTAMP_LABELS]
    if durations:
        rows.append(("Durations", e(", ".join(f"{k} {format_duration(v)}" for k, v in durations.items()))))
    if not view.get("terminal"):
        eta_text = e(eta.get("text"))
        if eta.get("finish_at"):
            eta_text += f" (by {timestamp(eta['finish_at'])})"
        if eta.get("warning"):
            eta_text += f' <span class="warn">{e(eta["warning"])}</span>'
        rows.append(("ETA", eta_text))
        rows.append(("Expires", timestamp(timings.get("expires_at"))))
    rows.append(("Tokens", tokens(view.get("usage") or {}, terminal=bool(view.get("terminal")))))
    rows.append(("Estimated cost", cost(view.get("cost"))))
    files = [
        f"{label} <code>{e(view.get(key))}</code>"
        for key, label in (
            ("input_file_id", "input"),
            ("output_file_id", "output"),
            ("error_file_id", "errors"),
        )
        if view.get(key)
    ]
    rows.append(("Files", " · ".join(files)))
    notice = ""
    if view.get("source") == "xcom":
        notice = (
            f'<p class="notice">Could not read this batch now ({e(view.get("read_error"))}); '
            "showing the state the task recorded last.</p>"
        )
    return (
        f'<section class="card outcome-{e(view.get("outcome"))}" data-batch-id="{e(view["id"])}" '
        f'data-status="{e(view["status"])}"><header>{" ".join(title)}</header>{notice}'
        f"{progress_bar(view['progress'])}{_dl(rows)}{_errors_table(view.get('errors') or ())}"
        f"{_landed_list(view.get('landed') or ())}</section>"
    )


_CSS = """
:root{--fg:#1a202c;--muted:#64748b;--bg:#fff;--card:#f8fafc;--line:#e2e8f0;--ok:#2e7d32;--bad:#c62828;
--run:#1565c0;--warn:#b45309;--track:#e2e8f0;color-scheme:light dark}
@media (prefers-color-scheme:dark){:root{--fg:#e2e8f0;--muted:#94a3b8;--bg:#111827;--card:#1f2937;
--line:#374151;--track:#374151;--run:#60a5fa;--ok:#4caf50;--bad:#ef5350;--warn:#f59e0b}}
*{box-sizing:border-box}body{margin:0;padding:16px 20px;font:14px/1.45 system-ui,-apple-system,"Segoe UI",
Roboto,sans-serif;color:var(--fg);background:var(--bg)}h1{font-size:18px;margin:0 0 4px}h2{font-size:15px;
margin:18px 0 8px}h4{margin:12px 0 4px;font-size:13px}a{color:var(--run)}code{font:12px ui-monospace,
SFMono-Regular,Menlo,monospace}.muted{color:var(--muted)}.warn{color:var(--warn)}.sub{color:var(--muted);
margin-bottom:12px}.card{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--run);
border-radius:8px;padding:12px 14px;margin:10px 0}.outcome-ok{border-left-color:var(--ok)}.outcome-bad{
border-left-color:var(--bad)}.outcome-partial{border-left-color:var(--warn)}.card header{display:flex;
gap:10px;align-items:center;flex-wrap:wrap;margin-bottom:8px}.badge{display:inline-block;padding:1px 8px;
border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:#64748b;text-transform:capitalize}
.st-completed{background:var(--ok)}.st-failed{background:var(--bad)}.st-in_progress{background:var(--run)}
.st-finalizing{background:#00838f}.st-validating{background:#6d28d9}.st-expired{background:#ef6c00}
.st-cancelling,.st-cancelled{background:#6b7280}.st-success{background:var(--ok)}.st-running{background:#06b6d4}
.st-deferred{background:#7c3aed}.st-up_for_retry{background:#ca8a04}.st-upstream_failed{background:#ea580c}
.st-queued,.st-scheduled,.st-skipped,.st-none{background:#94a3b8}.progress{display:flex;height:14px;border-radius:7px;
overflow:hidden;background:var(--track);margin:4px 0}.seg{display:block;height:100%}.seg.ok{
background:var(--ok)}.seg.bad{background:var(--bad)}.progress-label{font-size:13px;margin-bottom:6px}
.n-ok{color:var(--ok);font-weight:600}.n-bad{color:var(--bad);font-weight:600}dl.grid{display:grid;
grid-template-columns:max-content 1fr;gap:2px 14px;margin:8px 0 0}dt{color:var(--muted)}dd{margin:0}
table{border-collapse:collapse;width:100%;font-size:13px}th,td{text-align:left;padding:4px 8px;
border-bottom:1px solid var(--line);vertical-align:top}td.num{text-align:right;font-variant-numeric:
tabular-nums}.notice{background:rgba(245,158,11,.12);border:1px solid rgba(245,158,11,.4);padding:6px 10px;
border-radius:6px}.empty{padding:24px;text-align:center;color:var(--muted);border:1px dashed var(--line);
border-radius:8px}ul.landed{margin:4px 0;padding-left:18px}.kind{font-weight:600}form.filters{display:flex;
gap:10px;flex-wrap:wrap;align-items:end;margin:8px 0 12px}form.filters label{display:flex;flex-direction:
column;font-size:12px;color:var(--muted)}select,input,button{font:inherit;padding:3px 6px}.list td .progress{
min-width:140px}.list .progress-label{white-space:nowrap;font-size:12px}
.list code.batch-id{word-break:break-all}.place{font-weight:600;color:var(--run)}
pre.message{white-space:pre-wrap;font:12px ui-monospace,Menlo,monospace;margin:6px 0}
.pager{display:flex;gap:14px;margin:10px 0}.toolbar{display:flex;gap:14px;align-items:
center;color:var(--muted);font-size:12px;margin-top:14px}
"""

_JS = """
(function(){
  function localize(root){
    root.querySelectorAll('time[datetime]').forEach(function(t){
      var d=new Date(t.getAttribute('datetime'));
      if(!isNaN(d)){t.title=t.textContent;t.textContent=d.toLocaleString();}
    });
  }
  localize(document);
  var secs=Number(document.body.getAttribute('data-refresh')||0);
  var box=document.getElementById('auto-refresh');
  var said=document.getElementById('refreshed');
  if(!secs||!box){return;}
  function tick(){
    if(!box.checked||document.hidden){setTimeout(tick,secs*1000);return;}
    fetch(location.href,{credentials:'same-origin',headers:{'Accept':'text/html'}}).then(function(r){
      if(!r.ok){
        said.textContent='refresh failed: HTTP '+r.status+(r.status===401?' (sign in again)':'');
        return null;
      }
      return r.text();
    }).then(function(text){
      if(text===null){return;}
      var next=new DOMParser().parseFromString(text,'text/html').getElementById('content');
      var here=document.getElementById('content');
      if(next&&here){here.replaceWith(document.importNode(next,true));localize(document.getElementById('content'));}
      said.textContent='updated '+new Date().toLocaleTimeString();
    }).catch(function(err){said.textContent='refresh failed: '+err;})
      .finally(function(){setTimeout(tick,secs*1000);});
  }
  setTimeout(tick,secs*1000);
})();
"""


def layout(title: str, content: str, *, nonce: str, refresh: int = 0) -> str:
    """A whole page: ``content`` goes in ``<main id="content">``, which auto-refresh replaces."""
    toolbar = ""
    if refresh:
        toolbar = (
            '<div class="toolbar"><label><input type="checkbox" id="auto-refresh" checked> '
            f'auto-refresh every {refresh}s</label><span id="refreshed"></span></div>'
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{e(title)}</title><style>{_CSS}</style></head>"
        f'<body data-refresh="{int(refresh)}"><main id="content">{content}</main>{toolbar}'
        f'<script nonce="{e(nonce)}">{_JS}</script></body></html>'
    )


def failure_card(failure: Mapping[str, Any]) -> str:
    """Why the task failed: the error, then the validator's problems (line, code, what to fix)."""
    count = int(failure.get("problem_count") or 0)
    heading = f"{e(failure.get('error'))}"
    if count:
        heading += f": {count:,} problem{'' if count == 1 else 's'} in the input, nothing was uploaded"
    rows = "".join(
        "<tr>"
        f'<td class="num">{e(p.get("line") if p.get("line") is not None else "file")}</td>'
        f"<td><code>{e(p.get('code'))}</code></td><td>{e(p.get('message'))}</td>"
        f"<td>{e(p.get('custom_id'))}</td></tr>"
        for p in failure.get("problems") or ()
    )
    table = (
        '<table class="problems"><thead><tr><th>Line</th><th>Code</th><th>Problem and fix</th>'
        f"<th>custom_id</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else ""
    )
    more = (
        f'<p class="muted">… and {int(failure["more"]):,} more (the task log lists them all).</p>'
        if failure.get("more")
        else ""
    )
    message = "" if rows else f'<pre class="message">{e(failure.get("message"))}</pre>'
    return (
        f'<section class="card outcome-bad failure"><header>{badge("failed")}'
        f"<strong>Why this task failed</strong></header><p>{heading}</p>{message}{table}{more}</section>"
    )


def error_codes_table(groups: Sequence[Mapping[str, Any]]) -> str:
    """Failed requests by error code: count and a few custom_ids of each."""
    if not groups:
        return ""
    rows = "".join(
        f"<tr><td><code>{e(g.get('code'))}</code></td><td>{e(g.get('status'))}</td>"
        f'<td class="num">{e(g.get("count"))}</td>'
        f"<td>{e(', '.join(g.get('custom_ids') or ()))}</td></tr>"
        for g in groups
    )
    return (
        '<h4>Failed requests by error code</h4><table class="error-codes"><thead><tr><th>Code</th>'
        "<th>Status</th><th>Requests</th><th>Sample custom_ids</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def task_page(view: Mapping[str, Any], *, nonce: str) -> str:
    """The task-instance tab."""
    ti = view["task_instance"]
    where = (
        f"DAG <code>{e(ti['dag_id'])}</code> · run <code>{e(ti['run_id'])}</code>"
        + (f" · map index {e(ti['map_index'])}" if int(ti["map_index"]) >= 0 else "")
        + f" · task state {badge(str(ti.get('state') or 'none'))}"
        + f" · connection <code>{e(view.get('conn_id'))}</code>"
    )
    parts = [f"<h1>OpenAI batches of <code>{e(ti['task_id'])}</code></h1>", f'<div class="sub">{where}</div>']
    parts += [f'<p class="notice">{e(n)}</p>' for n in view.get("notices") or ()]
    batches = view.get("batches") or []
    if view.get("failure"):
        parts.append(failure_card(view["failure"]))
    elif not batches:
        parts.append(
            '<div class="empty">No OpenAI batches recorded for this task instance yet. Batches appear here '
            "as soon as the submit operator (or sensor) has created or found them.</div>"
        )
    total = view.get("totals")
    if total and len(batches) > 1:
        statuses = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(total["statuses"].items()))
        parts.append(
            f'<section class="card summary"><header><strong>{len(batches)} batches</strong>'
            f'<span class="muted">{e(statuses)}</span></header>{progress_bar(total["progress"])}'
            + _dl(
                [
                    ("Tokens", tokens(total["usage"], terminal=bool(total.get("all_terminal")))),
                    ("Estimated cost", usd(total["cost_usd"])),
                ]
            )
            + "</section>"
        )
    if view.get("estimate"):
        parts.append(estimate_section(view["estimate"]))
    parts += [batch_card(b) for b in batches]
    fetch = view.get("fetch")
    if fetch:
        rows = [
            ("Results", _file_ref(fetch.get("results_uri"), fetch.get("results_href"))),
            ("Manifest", _file_ref(fetch.get("manifest_uri"), fetch.get("manifest_href"))),
            ("Requests", e(fetch.get("total"))),
            ("Outcome", e(", ".join(f"{k} {v}" for k, v in (fetch.get("counts") or {}).items()))),
        ]
        parts.append(f"<h2>Landed results</h2>{_dl(rows)}{error_codes_table(fetch.get('error_codes') or ())}")
    return layout(
        f"OpenAI batches · {ti['task_id']}", "".join(parts), nonce=nonce, refresh=view.get("refresh", 0)
    )


def estimate_section(est: Mapping[str, Any]) -> str:
    """The pre-submit estimate beside the actual usage and cost."""

    def n(value: Any) -> str:
        return '<span class="muted">not yet</span>' if value is None else f"{int(value):,}"

    kind = "exact, " + str(est.get("tokenizer")) if est.get("exact") else str(est.get("tokenizer"))
    budget = est.get("max_cost_usd")
    rows = [
        (
            "Input tokens",
            f"{n(est.get('input_tokens'))} estimated ({e(kind)}) · "
            f"{n(est.get('actual_input_tokens'))} actual",
        ),
        (
            "Output tokens",
            f"bound {n(est.get('output_tokens_bound'))} · {n(est.get('actual_output_tokens'))} actual",
        ),
        *(
            [
                (
                    "Images / video",
                    f"{media_units(est)} requested · "
                    f"{media_units(est.get('actual') or {}) or n(None)} actual",
                )
            ]
            if media_units(est)
            else []
        ),
        (
            "Cost",
            f"{usd(est.get('cost_low_usd'))} to {usd(est.get('cost_high_usd'))} estimated · "
            + (usd(est.get("actual_cost_usd")) if est.get("actual_cost_usd") is not None else n(None))
            + " actual",
        ),
        (
            "Budget",
            usd(budget) + " (max_cost_usd)" if budget is not None else '<span class="muted">no guard</span>',
        ),
    ]
    return f"<h2>Cost estimate</h2>{_dl(rows)}"


def _file_ref(uri: Any, target: Any) -> str:
    if not uri:
        return ""
    return link(target, uri, external=True) if target else f"<code>{e(uri)}</code>"


STATUS_FILTERS = ("", "active", *(s.value for s in BatchStatus))


def list_page(
    view: Mapping[str, Any], *, nonce: str, page_url: str, airflow_base: str, tab_route: str
) -> str:
    """The Batches page: recent batches of one connection, filter, paging."""
    conn_id = view.get("conn_id") or ""
    status = view.get("status") or ""
    dag_id = view.get("dag_id") or ""
    choices = list(view.get("conn_ids") or [])
    if conn_id and conn_id not in choices:
        choices.insert(0, conn_id)
    conn_options = "".join(
        f'<option value="{e(c)}"{" selected" if c == conn_id else ""}>{e(c)}</option>' for c in choices
    )
    conn_field = (
        f'<select name="conn_id">{conn_options}</select>'
        if choices
        else f'<input name="conn_id" value="{e(conn_id)}" placeholder="openai_default">'
    )
    status_options = "".join(
        f'<option value="{e(s)}"{" selected" if s == status else ""}>'
        f"{e({'': 'any', 'active': 'active (not finished)'}.get(s, s.replace('_', ' ')))}</option>"
        for s in STATUS_FILTERS
    )
    limit = int(view.get("limit") or 20)
    limit_options = "".join(
        f'<option value="{n}"{" selected" if n == limit else ""}>{n}</option>' for n in (10, 20, 50, 100)
    )
    parts = [
        "<h1>OpenAI batches</h1>",
        '<div class="sub">Recent batches of a connection, newest first, read live from the service.</div>',
        f'<form class="filters" method="get" action="{e(page_url)}">'
        f"<label>Connection {conn_field}</label>"
        f'<label>Status <select name="status">{status_options}</select></label>'
        f'<label>DAG <input name="dag_id" value="{e(dag_id)}" placeholder="any DAG"></label>'
        f'<label>Per page <select name="limit">{limit_options}</select></label>'
        '<button type="submit">Show</button></form>',
    ]
    if view.get("error"):
        parts.append(f'<p class="notice">{e(view["error"])}</p>')
    rows = view.get("batches") or []
    if rows:
        body = "".join(_list_row(b, airflow_base, tab_route) for b in rows)
        parts.append(
            '<table class="list"><thead><tr><th>Batch</th><th>Status</th><th>Progress</th><th>Errors</th>'
            "<th>Model</th><th>Created</th><th>Duration / ETA</th><th>Airflow task</th><th>Tokens</th>"
            "<th>Est. cost</th></tr></thead>"
            f"<tbody>{body}</tbody></table>"
        )
    elif not view.get("error"):
        scanned = view.get("scanned") or 0
        parts.append(f'<div class="empty">No batches here (looked at {e(scanned)}).</div>')
    base = {"conn_id": conn_id, "status": status, "limit": limit, **({"dag_id": dag_id} if dag_id else {})}
    pager = []
    if view.get("after"):
        pager.append(link(f"{page_url}?{urlencode(base)}", "« newest"))
    if view.get("has_more") and view.get("next_after"):
        pager.append(link(f"{page_url}?{urlencode({**base, 'after': view['next_after']})}", "older »"))
    parts.append(f'<nav class="pager">{" ".join(pager)}</nav>')
    return layout("OpenAI batches", "".join(parts), nonce=nonce, refresh=view.get("refresh", 0))


def _list_row(view: Mapping[str, Any], airflow_base: str, tab_route: str) -> str:
    ids = view.get("airflow") or {}
    task = ""
    if ids.get("dag_id") and ids.get("run_id") and ids.get("task_id"):
        url = (
            f"{airflow_base}/dags/{quote(ids['dag_id'], safe='')}/runs/{quote(ids['run_id'], safe='')}"
            f"/tasks/{quote(ids['task_id'], safe='')}/plugin/{quote(tab_route, safe='')}"
        )
        task = link(url, f"{ids['dag_id']} › {ids['task_id']}", top=True) + (
            f'<div class="muted">{e(ids["run_id"])}</div>'
        )
    place = place_label(view)
    if place:
        task += f'<div class="place">{e(place)}</div>'
    batch = f'<code class="batch-id">{e(view["id"])}</code>'
    if view.get("console_url"):
        batch += f"<div>{link(view['console_url'], 'console ↗', external=True)}</div>"
    if view.get("errors"):
        first = view["errors"][0]
        where = f"line {first.get('line')}: " if first.get("line") is not None else ""
        batch += f'<div class="warn">{e(where)}{e(first.get("message"))}</div>'
    return (
        f'<tr data-batch-id="{e(view["id"])}" data-status="{e(view["status"])}"><td>{batch}</td>'
        f"<td>{badge(view['status'])}</td><td>{progress_bar(view['progress'], compact=True)}</td>"
        f"<td class='num errors'>{_error_count(view)}</td>"
        f"<td>{e(view.get('model'))}<div class='muted'>{e(view.get('endpoint'))}</div></td>"
        f"<td>{timestamp((view.get('timings') or {}).get('created_at'))}</td>"
        f"<td class='timing'>{_duration_or_eta(view)}</td><td>{task}</td>"
        f"<td class='num'>{int((view.get('usage') or {}).get('total_tokens') or 0):,}</td>"
        f"<td class='num'>{usd((view.get('cost') or {}).get('usd'))}</td></tr>"
    )


def _error_count(view: Mapping[str, Any]) -> str:
    """Failed requests, and the service's validation errors when the batch never ran."""
    failed = int((view.get("progress") or {}).get("failed") or 0)
    invalid = len(view.get("errors") or ())
    parts = [f"{failed:,} failed"] if failed else []
    if invalid:
        parts.append(f"{invalid:,} invalid line{'' if invalid == 1 else 's'}")
    return e(", ".join(parts)) if parts else '<span class="muted">none</span>'


def _duration_or_eta(view: Mapping[str, Any]) -> str:
    """How long a finished batch took, or when a running one should finish."""
    if view.get("terminal"):
        total = (view.get("durations") or {}).get("total")
        return e(format_duration(total)) if total is not None else ""
    eta = view.get("eta") or {}
    if eta.get("seconds"):
        return f"ETA {e(format_duration(eta['seconds']))}"
    return f'<span class="muted">{e(eta.get("text"))}</span>'


def error_page(status_code: int, message: str, *, nonce: str) -> str:
    """A short page for 401/403/404 inside the UI's frame."""
    hints = {
        401: "Sign in to Airflow, then reload this page.",
        403: "Your Airflow role may not see this. Ask an admin for access.",
        404: "Check the link: it names something that does not exist.",
    }
    content = (
        f"<h1>{e(status_code)}: {e(message)}</h1>"
        f'<p class="muted">{e(hints.get(status_code, "Reload the page to try again."))}</p>'
    )
    return layout(f"{status_code}", content, nonce=nonce)
