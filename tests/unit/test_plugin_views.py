"""The UI plugin's pure parts: view data (progress, ETA, cost), XCom reading rules, HTML escaping."""

from __future__ import annotations

import pytest

from airflow_batch_provider.plugins import pages
from airflow_batch_provider.plugins.task_source import TaskRefs, refs_from_xcoms
from airflow_batch_provider.plugins.view_model import (
    batch_view,
    durations,
    error_codes,
    estimate_eta,
    failure_view,
    outcome,
    place_label,
    progress,
    task_totals,
)
from airflow_batch_provider.waiting.status import format_duration

NOW = 1_800_000_000.0


def _batch(**fields):
    base = {
        "id": "batch_1",
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "input_file_id": "file-in",
        "completion_window": "24h",
        "status": "in_progress",
        "created_at": NOW - 100,
        "in_progress_at": NOW - 90,
        "expires_at": NOW + 86_000,
        "model": "gpt-4o-mini-2024-07-18",
        "request_counts": {"total": 100, "completed": 20, "failed": 10},
        "usage": {
            "input_tokens": 1_000_000,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 1_000_000,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 2_000_000,
        },
        "metadata": {
            "airflow_dag_id": "d",
            "airflow_task_id": "t",
            "airflow_run_id": "r",
            "airflow_shard": "2/3",
        },
    }
    return {**base, **fields}


def test_progress_counts_and_percentages():
    assert progress({"total": 8, "completed": 3, "failed": 1}) == {
        "total": 8,
        "completed": 3,
        "failed": 1,
        "pending": 4,
        "completed_pct": 37.5,
        "failed_pct": 12.5,
        "done_pct": 50.0,
    }
    assert progress(None)["done_pct"] == 0.0
    # A service counting past its total never draws a bar wider than 100%.
    over = progress({"total": 2, "completed": 3, "failed": 1})
    assert over["completed_pct"] + over["failed_pct"] == 100.0 and over["pending"] == 0


def test_eta_from_the_rate_so_far_and_the_expiry_warning():
    timings = {"in_progress_at": NOW - 60, "expires_at": NOW + 3600}
    eta = estimate_eta("in_progress", timings, {"total": 100, "completed": 20, "failed": 10}, NOW)
    assert eta["seconds"] == pytest.approx(140.0)  # 30 done in 60 s, 70 to go
    assert eta["finish_at"] == pytest.approx(NOW + 140)
    assert eta["text"] == "about 2m 20s left at the current rate" and eta["warning"] is None

    slow = estimate_eta(
        "in_progress",
        {"in_progress_at": NOW - 3600, "expires_at": NOW + 60},
        {"total": 10, "completed": 1},
        NOW,
    )
    assert "expires before" in slow["warning"]
    assert estimate_eta("in_progress", timings, {"total": 5}, NOW)["seconds"] is None
    assert estimate_eta("validating", {}, {}, NOW)["text"].startswith("validating")
    assert estimate_eta("completed", {}, {}, NOW) == {
        "seconds": 0.0,
        "finish_at": None,
        "text": "finished",
        "warning": None,
    }


def test_durations_and_their_text():
    timings = {"created_at": 0, "in_progress_at": 5, "finalizing_at": 65, "completed_at": 70}
    assert durations(timings) == {"validating": 5.0, "running": 60.0, "finalizing": 5.0, "total": 70.0}
    assert durations({"created_at": 0, "failed_at": 3}) == {"total": 3.0}
    assert [format_duration(s) for s in (None, 42, 75, 7500, 90_000)] == [
        "",
        "42s",
        "1m 15s",
        "2h 5m",
        "1d 1h",
    ]


def test_completed_is_not_success_when_every_request_failed():
    assert outcome("completed", progress({"total": 3, "completed": 0, "failed": 3})) == "bad"
    assert outcome("completed", progress({"total": 3, "completed": 2, "failed": 1})) == "partial"
    assert outcome("completed", progress({"total": 3, "completed": 3})) == "ok"
    assert outcome("expired", progress({"total": 3, "completed": 3})) == "bad"
    assert outcome("finalizing", progress({})) == "running"


def test_batch_view_maps_errors_to_input_lines_and_prices_usage():
    view = batch_view(
        _batch(
            status="failed", errors={"data": [{"code": "invalid_json_line", "message": "bad", "line": 3}]}
        ),
        now=NOW,
        console_url="javascript:alert(1)",
        shard={"index": 1, "start_line": 101, "line_count": 100},
        landed=[{"kind": "output", "uri": "s3://bucket/out/batch_1/output.jsonl", "bytes": 10, "lines": 1}],
    )
    assert view["errors"][0]["line"] == 3 and view["errors"][0]["input_line"] == 103
    # 1M input + 1M output of gpt-4o-mini at the batch rate: 0.075 + 0.30 USD.
    assert view["cost"]["usd"] == pytest.approx(0.375) and view["cost"]["matched"] == "gpt-4o-mini"
    assert view["console_url"] is None  # only http(s) links leave the page
    assert view["landed"][0]["href"].startswith("https://s3.console.aws.amazon.com/")
    assert view["airflow"] == {"dag_id": "d", "task_id": "t", "run_id": "r", "shard": "2/3", "round": None}
    # A summary (what XCom holds) gives the same view as the batch it came from.
    from airflow_batch_provider.waiting.status import summarize_batch

    again = batch_view(summarize_batch(_batch()), now=NOW)
    assert again["progress"] == batch_view(_batch(), now=NOW)["progress"]


def test_totals_add_up_and_say_when_the_cost_is_partial():
    priced = batch_view(_batch(), now=NOW)
    unknown = batch_view(_batch(id="batch_2", model="my-finetune", status="completed"), now=NOW)
    total = task_totals([priced, unknown])
    assert total["progress"]["completed"] == 40 and total["progress"]["total"] == 200
    assert total["usage"]["total_tokens"] == 4_000_000
    assert total["cost_usd"] == pytest.approx(0.375) and total["cost_complete"] is False
    assert total["statuses"] == {"in_progress": 1, "completed": 1} and total["all_terminal"] is False


def _refs() -> TaskRefs:
    return TaskRefs("d", "r", "t", -1, state="success", operator="X", try_number=1)


def test_refs_from_a_submit_manifest_and_pushed_links():
    manifest = {
        "conn_id": "openai_eu",
        "batch_ids": ["b1", "b2"],
        "shards": [
            {"index": 0, "batch_id": "b1", "start_line": 1},
            {"index": 1, "batch_id": "b2", "start_line": 5},
        ],
        "batches": [{"id": "b1", "status": "completed"}],
    }
    refs = refs_from_xcoms(
        _refs(),
        {"return_value": manifest, "batch_ids": ["b1", "b2"], "batch_links": ["http://x/b1", ""]},
        "ignored",
    )
    assert refs.batch_ids == ["b1", "b2"] and refs.conn_id == "openai_eu"
    assert refs.console_urls == {"b1": "http://x/b1"}
    assert refs.shards["b2"]["start_line"] == 5 and refs.summaries["b1"]["status"] == "completed"
    assert refs.fetch is None and refs.manifest_uri is None


def test_refs_while_waiting_and_from_a_fetch():
    waiting = refs_from_xcoms(_refs(), {"batch_ids": ["b9"]}, "openai_waiting")
    assert waiting.batch_ids == ["b9"] and waiting.conn_id == "openai_waiting"
    assert refs_from_xcoms(_refs(), {}, "None").conn_id is None  # a rendered None is no connection

    fetched = refs_from_xcoms(
        _refs(),
        {
            "return_value": {
                "manifest_uri": "s3://b/out/manifest.json",
                "results_uri": "s3://b/out/results.jsonl",
                "batch_ids": ["b1", "b3"],
                "counts": {"succeeded": 2},
            }
        },
    )
    assert fetched.batch_ids == ["b1", "b3"] and fetched.manifest_uri == "s3://b/out/manifest.json"
    assert fetched.fetch["results_uri"] == "s3://b/out/results.jsonl"


def test_html_escapes_every_value_and_only_links_safe_urls():
    assert pages.e('<a href="x">&</a>') == "&lt;a href=&quot;x&quot;&gt;&amp;&lt;/a&gt;"
    assert pages.href("javascript:alert(1)") is None and pages.href("//evil.example/x") is None
    assert pages.href("https://platform.openai.com/batches/b") and pages.href("/openai-batch/batches?x=1")
    assert pages.link("javascript:alert(1)", "<b>x</b>") == "&lt;b&gt;x&lt;/b&gt;"

    evil = '"><script>alert(1)</script>'
    view = batch_view(
        _batch(
            id=evil,
            errors={"data": [{"code": evil, "message": evil, "line": 1}]},
            metadata={"airflow_dag_id": evil},
        ),
        now=NOW,
    )
    task = {"dag_id": evil, "run_id": evil, "task_id": evil, "map_index": -1, "state": evil}
    html_task = pages.task_page(
        {
            "task_instance": task,
            "conn_id": evil,
            "batches": [view],
            "totals": task_totals([view]),
            "notices": [evil],
        },
        nonce="n0nce",
    )
    html_list = pages.list_page(
        {
            "conn_id": evil,
            "status": "",
            "batches": [{**view, "airflow": {"dag_id": evil, "run_id": "r", "task_id": "t"}}],
        },
        nonce="n0nce",
        page_url="/openai-batch/batches",
        airflow_base="",
        tab_route="openai-batch",
    )
    for text in (html_task, html_list):
        assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert text.count("<script") == 1 and '<script nonce="n0nce">' in text


def test_progress_bar_markup_carries_the_counts():
    html = pages.progress_bar(progress({"total": 5, "completed": 3, "failed": 2}))
    assert 'data-completed="3" data-failed="2" data-total="5"' in html
    assert 'style="width:60.0%"' in html and 'style="width:40.0%"' in html
    assert 'aria-label="3 completed, 2 failed of 5 requests"' in html


# --- failures a person understands ------------------------------------------------------------


def _task(**view):
    task = {"dag_id": "d", "run_id": "r", "task_id": "submit", "map_index": -1, "state": "failed"}
    return {"task_instance": task, "conn_id": "openai_default", "batches": [], "notices": [], **view}


def test_a_submit_that_failed_validation_shows_why_not_no_batches_yet():
    from airflow_batch_provider.batch_file import validate_lines
    from airflow_batch_provider.exceptions import BatchFileError
    from airflow_batch_provider.links import failure_summary

    report = validate_lines(
        [b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}', b"{oops"]
    )
    summary = failure_summary(BatchFileError("The batch input is invalid", report=report))
    refs = refs_from_xcoms(_refs(), {"batch_failure": summary})
    view = failure_view(refs.failure)
    assert view["problem_count"] == report.problem_count >= 2
    assert {p["line"] for p in view["problems"]} == {1, 2}

    html = pages.task_page(_task(failure=view), nonce="n")
    assert "No OpenAI batches recorded" not in html
    assert "Why this task failed" in html and "BatchFileError" in html
    assert '<td class="num">2</td>' in html and report.problems[-1].code in html


def test_failure_summary_is_bounded():
    from airflow_batch_provider.batch_file import Problem
    from airflow_batch_provider.exceptions import BatchFileError
    from airflow_batch_provider.links import MAX_FAILURE_PROBLEMS, failure_summary

    class Report:
        problems = [Problem(i, "invalid_json_line", "not valid JSON " + "x" * 2000) for i in range(1, 500)]
        problem_count = 499
        source = "in.jsonl"

    summary = failure_summary(BatchFileError("bad " * 5000, report=Report()))
    assert len(summary["problems"]) == MAX_FAILURE_PROBLEMS and summary["problem_count"] == 499
    assert len(summary["message"]) <= 4000 and all(len(p["message"]) <= 500 for p in summary["problems"])
    view = failure_view(summary)
    assert view["more"] == 499 - MAX_FAILURE_PROBLEMS
    assert "449 more" in pages.task_page(_task(failure=view), nonce="n")


def test_a_service_error_shows_its_message():
    view = failure_view({"error": "BatchAuthError", "message": "refused the credentials (401)"})
    html = pages.task_page(_task(failure=view), nonce="n")
    assert "BatchAuthError" in html and "refused the credentials (401)" in html


def test_rounds_are_labelled_and_each_request_counts_once():
    first = batch_view(
        _batch(status="completed", request_counts={"total": 200, "completed": 199, "failed": 1}), now=NOW
    )
    retry_meta = {"airflow_dag_id": "d", "airflow_shard": "1/1", "airflow_round": "1"}
    retry = batch_view(
        _batch(
            id="batch_2",
            status="completed",
            request_counts={"total": 1, "completed": 1, "failed": 0},
            metadata=retry_meta,
        ),
        now=NOW,
    )
    assert place_label(retry) == "round 2" and place_label(first) == "shard 2/3"
    total = task_totals([retry, first])
    assert total["progress"]["total"] == 200  # not 201
    assert (total["progress"]["completed"], total["progress"]["failed"]) == (200, 0)
    card = pages.batch_card(retry)
    assert "round 2" in card and "shard 1/1" not in card


def test_tokens_of_a_finished_batch_are_not_none_yet():
    done = batch_view(_batch(status="completed", usage=None), now=NOW)
    card = pages.batch_card(done)
    assert "none yet" not in card and "not reported by the service" in card
    running = pages.batch_card(batch_view(_batch(usage=None), now=NOW))
    assert "none yet" in running


def test_error_codes_from_the_landed_manifest():
    sample = [
        {"custom_id": f"q-{i}", "status": "failed", "code": "context_length_exceeded"} for i in range(7)
    ] + [{"custom_id": "q-9", "status": "expired", "code": None}]
    groups = error_codes({"unsuccessful_sample": sample})
    assert groups[0] == {
        "code": "context_length_exceeded",
        "status": "failed",
        "count": 7,
        "custom_ids": ["q-0", "q-1", "q-2", "q-3", "q-4"],
    }
    assert groups[1]["code"] == "expired" and groups[1]["count"] == 1
    html = pages.task_page(
        _task(fetch={"counts": {"failed": 7}, "total": 8, "error_codes": groups}), nonce="n"
    )
    assert "Failed requests by error code" in html and "q-4" in html and "q-5" not in html


def test_batches_page_has_duration_eta_place_errors_dag_filter_and_readable_costs():
    done = batch_view(
        _batch(
            status="completed",
            completed_at=NOW - 10,
            request_counts={"total": 100, "completed": 90, "failed": 10},
            model="gpt-4o-mini",
            usage={"input_tokens": 100, "output_tokens": 10, "total_tokens": 110},
        ),
        now=NOW,
    )
    running = batch_view(_batch(id="batch_2"), now=NOW)
    html = pages.list_page(
        {"conn_id": "c", "status": "", "dag_id": "nightly", "batches": [done, running]},
        nonce="n",
        page_url="/openai-batch/batches",
        airflow_base="",
        tab_route="openai-batch",
    )
    assert 'name="dag_id" value="nightly"' in html
    assert "Duration / ETA" in html and "1m 30s" in html and "ETA " in html
    assert "10 failed" in html and "shard 2/3" in html
    assert "&lt;$0.01" in html and "e-0" not in html and "$0.000" not in html


def test_list_view_filters_by_dag():
    from types import SimpleNamespace

    from airflow_batch_provider.plugins.app import _dag_matches

    batch = SimpleNamespace(metadata={"airflow_dag_id": "nightly"})
    assert _dag_matches(batch, "") and _dag_matches(batch, "nightly") and not _dag_matches(batch, "other")
    assert not _dag_matches(SimpleNamespace(metadata=None), "nightly")


# --- trust boundaries -------------------------------------------------------------------------


@pytest.mark.parametrize("stamp", [10**20, -(10**20), 1e308, "soon", True])
def test_a_server_timestamp_out_of_range_renders_instead_of_failing(stamp):
    view = batch_view(
        _batch(created_at=stamp, in_progress_at=stamp, expires_at=stamp, completed_at=stamp), now=NOW
    )
    task = {"dag_id": "d", "run_id": "r", "task_id": "t", "map_index": -1, "state": "running"}
    html_task = pages.task_page(
        {
            "task_instance": task,
            "conn_id": "c",
            "batches": [view],
            "totals": task_totals([view]),
            "notices": [],
        },
        nonce="n",
    )
    html_list = pages.list_page(
        {"conn_id": "c", "status": "", "batches": [view]},
        nonce="n",
        page_url="/openai-batch/batches",
        airflow_base="",
        tab_route="openai-batch",
    )
    assert "batch_1" in html_task and "batch_1" in html_list
    assert pages.timestamp(stamp) == pages.e(stamp)  # shown as the server sent it
    assert pages.timestamp(-5).startswith('<time datetime="1969-12-31T23:59:55Z">')


def test_a_manifest_is_read_only_under_the_tasks_destination(tmp_path):
    from airflow_batch_provider.plugins.task_source import manifest_path, read_landed_manifest

    dest = tmp_path / "landed"
    (dest / "sub").mkdir(parents=True)
    (tmp_path / "manifest.json").write_text('{"batch_ids": ["planted"]}')
    (dest / "manifest.json").write_text('{"batch_ids": ["b1"]}')
    assert read_landed_manifest(f"file://{dest}/manifest.json", f"file://{dest}/") == {"batch_ids": ["b1"]}
    assert str(manifest_path(f"{dest}/sub/manifest.json", str(dest))).endswith("/landed/sub/manifest.json")
    assert str(manifest_path("s3://bkt/out/manifest.json", "s3://aws_minio@bkt/out/")) == (
        "s3://aws_minio@bkt/out/manifest.json"  # read with the destination's storage connection
    )
    for uri, destination in (
        (f"file://{tmp_path}/manifest.json", f"file://{dest}/"),  # outside
        (f"file://{dest}/../manifest.json", f"file://{dest}"),  # climbs out
        (f"file://{dest}2/manifest.json", str(dest)),  # a sibling sharing the prefix
        ("s3://other/out/manifest.json", "s3://bkt/out"),  # another bucket
        (f"file://{dest}/manifest.json", None),  # no recorded destination
        (f"file://{dest}/other.json", str(dest)),  # not a manifest
    ):
        with pytest.raises(ValueError, match="not read|no recorded destination"):
            read_landed_manifest(uri, destination)


def test_any_task_returning_a_count_named_batches_renders():
    """XComs are written by any task (and through the REST API): a ``batches`` or ``shards`` that
    is not a list (``classify_dataset``'s summarize step returns ``{"batches": 3}``) is ignored."""
    refs = refs_from_xcoms(_refs(), {"return_value": {"batches": 3, "shards": "x", "batch_ids": 7}}, None)
    assert refs.summaries == {} and refs.shards == {} and refs.batch_ids == []
