"""OpenAIBatchSubmitOperator in real DAGs (``dag.test()``) against the emulator.

The trigger runs inline (``dag.test`` does that for a deferred task), so these tests
cover execute -> defer -> trigger -> execute_complete end to end, and count what the
service saw through the emulator's stats.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.integration import _dag_env
from tests.integration._dag_env import FIXED_DATE, chat_lines

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env

HEADER = """
    from datetime import timedelta
    from airflow.sdk import DAG
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
"""


def _submit_dag(
    dag_id: str, input_path: str, extra: str = "", header: str = "", cls: str = "OpenAIBatchSubmitOperator"
):
    return (
        HEADER
        + header
        + f"""
    with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
        submit = {cls}(
            task_id="submit",
            input_path={input_path!r},
            deferrable=True,
            poll_interval=0.1,
            max_poll_interval=0.5,
            timeout=60,
            {extra}
        )
    """
    )


def test_submit_defers_and_trigger_completes(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(3))
    dag = dag_env.write_dag("submit_defers", _submit_dag("submit_defers", str(src)))

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success"}
    manifest = dag_env.xcom(dr, "submit")
    # Pushed only right before deferring; the completed batches below come from the trigger.
    waiting = dag_env.xcom(dr, "submit", "submit_manifest")
    assert waiting["batch_ids"] == manifest["batch_ids"] and waiting["batches"] == []
    assert manifest["endpoint"] == "/v1/chat/completions"
    assert manifest["model"] == "gpt-4o-mini"
    assert manifest["input_uri"].endswith("in.jsonl")
    assert manifest["identity"]["task_id"] == "submit" and manifest["identity"]["run_id"] == dr.run_id
    assert len(manifest["batch_ids"]) == 1 and len(manifest["input_file_ids"]) == 1
    assert manifest["shards"][0]["line_count"] == 3 and manifest["shards"][0]["start_line"] == 1
    [batch] = manifest["batches"]
    assert batch["status"] == "completed"
    assert batch["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert batch["metadata"]["airflow_fingerprint"] == f"v2:{manifest['fingerprint']}"  # scheme 2
    assert batch["metadata"]["airflow_shard"] == "1/1"
    # Small: ids and sizes only, never the requests.
    assert "question" not in json.dumps(manifest)
    stats = dag_env.emulator.stats()
    assert stats["files_uploaded"] == 1 and stats["batches_created"] == 1


def test_links_return_console_url(dag_env):
    (dag_env.data / "submit_links.jsonl").write_text(chat_lines(2))
    templated = str(dag_env.data / "{{ dag.dag_id }}.jsonl")  # input_path is a template field
    dag = dag_env.write_dag("submit_links", _submit_dag("submit_links", templated))

    dr = dag_env.run(dag)

    assert dag_env.xcom(dr, "submit")["input_uri"].endswith("/submit_links.jsonl")

    [batch_id] = dag_env.xcom(dr, "submit")["batch_ids"]
    base = dag_env.emulator.base_url.removesuffix("/v1")
    expected = f"{base}/_emulator/batches/{batch_id}"
    assert dag_env.xcom(dr, "submit", "batch_ids") == [batch_id]
    assert dag_env.xcom(dr, "submit", "batch_links") == [expected]
    # What the UI shows: the value the worker stored under the link's own key.
    assert dag_env.xcom(dr, "submit", "_link_openai_batch_1") == expected
    assert dag_env.xcom(dr, "submit", "_link_openai_batch_2") == ""
    assert httpx.get(expected).status_code == 200


def test_invalid_input_uploads_nothing(dag_env):
    src = dag_env.data / "bad.jsonl"
    lines = chat_lines(3).splitlines(keepends=True)
    lines[1] = "{not json\n"
    src.write_text("".join(lines))
    dag = dag_env.write_dag("submit_invalid", _submit_dag("submit_invalid", str(src)))

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "failed"}
    stats = dag_env.emulator.stats()
    assert stats["files_uploaded"] == 0
    assert stats["batches_created"] == 0
    # Why, for the task tab: the error and the problems with their lines, pushed before raising.
    failure = dag_env.xcom(dr, "submit", "batch_failure")
    assert failure["error"] == "BatchFileError" and failure["problem_count"] == 1
    assert [(p["line"], p["code"]) for p in failure["problems"]] == [(2, "invalid_json_line")]


def test_invalid_input_error_names_the_line(dag_env):
    from types import SimpleNamespace

    from airflow_batch_provider.exceptions import BatchFileError
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    src = dag_env.data / "bad.jsonl"
    lines = chat_lines(3).splitlines(keepends=True)
    lines[2] = lines[0]  # duplicate custom_id on line 3
    src.write_text("".join(lines))
    op = OpenAIBatchSubmitOperator(task_id="submit", input_path=str(src))
    ti = SimpleNamespace(dag_id="d", task_id="submit", run_id="r", map_index=-1)

    with pytest.raises(BatchFileError, match=r"line 3: .*duplicate") as err:
        op.execute({"ti": ti})
    assert "nothing was uploaded" in str(err.value)
    assert err.value.report.problem_count == 1
    assert dag_env.emulator.stats()["files_uploaded"] == 0


def test_invalid_input_error_groups_repeats_and_counts_in_words(dag_env):
    from types import SimpleNamespace

    from airflow_batch_provider.exceptions import BatchFileError
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    src = dag_env.data / "bad.jsonl"
    src.write_text("not json\n" * 80 + chat_lines(1))
    op = OpenAIBatchSubmitOperator(task_id="submit", input_path=str(src))
    ti = SimpleNamespace(dag_id="d", task_id="submit", run_id="r", map_index=-1)

    with pytest.raises(BatchFileError) as err:
        op.execute({"ti": ti})
    message = str(err.value)
    assert "(80 problems); fix these lines:\nlines 1-80: not valid JSON" in message
    assert "problem(s)" not in message and message.count("not valid JSON") == 1

    src.write_text("{\n")
    with pytest.raises(BatchFileError, match=r"(?s)\(1 problem\);.* in 1 request, 2 bytes"):
        op.execute({"ti": ti})


def test_a_line_longer_than_a_shard_is_reported_without_reading_it_whole(dag_env):
    from types import SimpleNamespace

    from airflow_batch_provider.exceptions import BatchFileError
    from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

    lines = chat_lines(3).splitlines(keepends=True)
    lines[1] = lines[1].replace("question", "question " + "x" * 5_000)
    src = dag_env.data / "long.jsonl"
    src.write_text("".join(lines) + lines[0])  # and a duplicate after it: still checked
    op = OpenAIBatchSubmitOperator(task_id="submit", input_path=str(src), shard_limits={"max_bytes": 1_000})
    ti = SimpleNamespace(dag_id="d", task_id="submit", run_id="r", map_index=-1)

    with pytest.raises(BatchFileError) as err:
        op.execute({"ti": ti})
    codes = [(p.line, p.code) for p in err.value.report.problems]
    assert codes == [(2, "line_too_long"), (4, "duplicate_custom_id")]
    assert "more than the 1,000-byte limit for one request line" in str(err.value)
    assert dag_env.emulator.stats()["files_uploaded"] == 0


CRASH_AFTER_CREATE = """
    from unittest import mock
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

    class CrashingSubmit(OpenAIBatchSubmitOperator):
        # The worker dies right after the service accepted the batch: before any XCom.
        def execute(self, context):
            if context["ti"].try_number > 1:
                return super().execute(context)
            real = OpenAIBatchHook.create_batch

            def create_then_die(hook, *args, **kwargs):
                real(hook, *args, **kwargs)
                raise RuntimeError("worker killed right after creating the batch")

            with mock.patch.object(OpenAIBatchHook, "create_batch", create_then_die):
                return super().execute(context)
"""

CRASH_AFTER_UPLOAD = """
    from unittest import mock
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

    class CrashingSubmit(OpenAIBatchSubmitOperator):
        # The worker dies between the upload and the create.
        def execute(self, context):
            if context["ti"].try_number > 1:
                return super().execute(context)

            def die(hook, *args, **kwargs):
                raise RuntimeError("worker killed before creating the batch")

            with mock.patch.object(OpenAIBatchHook, "create_batch", die):
                return super().execute(context)
"""


@pytest.mark.parametrize(
    ("header", "uploads"),
    [(CRASH_AFTER_CREATE, 1), (CRASH_AFTER_UPLOAD, 1)],
    ids=["killed-after-create", "killed-after-upload"],
)
def test_killed_task_retried_creates_no_second_batch(dag_env, header, uploads):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(4))
    dag_id = f"submit_retry_{len(header)}"
    dag = dag_env.write_dag(
        dag_id,
        _submit_dag(
            dag_id,
            str(src),
            extra="retries=1, retry_delay=timedelta(seconds=0),",
            header=header,
            cls="CrashingSubmit",
        ),
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success"}
    assert dag_env.try_number(dr, "submit") == 2
    stats = dag_env.emulator.stats()
    assert stats["batches_created"] == 1
    assert stats["files_uploaded"] == uploads
    manifest = dag_env.xcom(dr, "submit")
    assert manifest["batches"][0]["status"] == "completed"


def test_clear_reattaches_and_changed_input_creates_new_batches(dag_env, capfd):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(3))
    dag = dag_env.write_dag("submit_change", _submit_dag("submit_change", str(src)))

    first = dag_env.xcom(dag_env.run(dag, when=FIXED_DATE), "submit")
    again = dag_env.xcom(dag_env.run(dag, when=FIXED_DATE), "submit")  # same run_id: a clear

    assert again["batch_ids"] == first["batch_ids"]
    assert again["fingerprint"] == first["fingerprint"]
    assert dag_env.emulator.stats()["batches_created"] == 1
    assert dag_env.emulator.stats()["files_uploaded"] == 1
    assert "re-attached to batch" in capfd.readouterr().out

    src.write_text(chat_lines(3, prefix="changed"))
    dr = dag_env.run(dag, when=FIXED_DATE)
    changed = dag_env.xcom(dr, "submit")

    assert dag_env.states(dr) == {"submit": "success"}
    assert changed["fingerprint"] != first["fingerprint"]
    assert changed["batch_ids"] != first["batch_ids"]
    assert dag_env.emulator.stats()["batches_created"] == 2
    assert "The input changed since this task instance created batches" in capfd.readouterr().out


RECORD_HORIZON = """
    import json, os
    from unittest import mock
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

    class RecordingSubmit(OpenAIBatchSubmitOperator):
        # Records the re-attach search's horizon, then searches for real.
        def execute(self, context):
            real = OpenAIBatchHook.find_batches

            def find(hook, metadata, **kwargs):
                with open(os.environ["HORIZON_LOG"], "a") as log:
                    log.write(json.dumps(kwargs.get("created_after")) + "\\n")
                return real(hook, metadata, **kwargs)

            with mock.patch.object(OpenAIBatchHook, "find_batches", find):
                return super().execute(context)
"""


def test_reattach_search_is_bounded_by_the_run_and_still_finds_the_batch(dag_env, monkeypatch):
    log = dag_env.data / "horizons.jsonl"
    monkeypatch.setenv("HORIZON_LOG", str(log))
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(2))
    dag = dag_env.write_dag(
        "submit_horizon",
        _submit_dag("submit_horizon", str(src), header=RECORD_HORIZON, cls="RecordingSubmit"),
    )

    first = dag_env.xcom(dag_env.run(dag, when=FIXED_DATE), "submit")
    again = dag_env.xcom(dag_env.run(dag, when=FIXED_DATE), "submit")  # a clear: a new start_date

    # Both searches stop an hour before run_after (which a clear keeps), not at the account's start.
    horizons = [json.loads(line) for line in log.read_text().splitlines()]
    assert horizons == [FIXED_DATE.timestamp() - 3600] * 2
    assert again["batch_ids"] == first["batch_ids"]
    assert dag_env.emulator.stats()["batches_created"] == 1


def test_shards_with_lowered_limits_from_upstream_records(dag_env):
    dag = dag_env.write_dag(
        "submit_shards",
        """
        from airflow.sdk import DAG, task
        from airflow_batch_provider.batch_file import ChatTemplate
        from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator

        with DAG("submit_shards", schedule=None) as dag:
            @task
            def rows():
                return [{"id": f"r{i}", "text": f"row {i}"} for i in range(5)]

            OpenAIBatchSubmitOperator(
                task_id="submit",
                requests=rows(),
                request_template=ChatTemplate.from_prompt("gpt-4o-mini", "Classify: {text}"),
                custom_id_field="id",
                shard_limits={"max_requests": 2},
                metadata={"team": "evals"},
                deferrable=True,
                poll_interval=0.1,
                max_poll_interval=0.5,
            )
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"rows": "success", "submit": "success"}
    manifest = dag_env.xcom(dr, "submit")
    assert manifest["input_uri"] is None
    assert [s["start_line"] for s in manifest["shards"]] == [1, 3, 5]
    assert [s["line_count"] for s in manifest["shards"]] == [2, 2, 1]
    assert len(set(manifest["batch_ids"])) == 3
    assert [b["metadata"]["airflow_shard"] for b in manifest["batches"]] == ["1/3", "2/3", "3/3"]
    assert all(b["metadata"]["team"] == "evals" for b in manifest["batches"])
    assert all(b["status"] == "completed" for b in manifest["batches"])
    assert sum(b["request_counts"]["completed"] for b in manifest["batches"]) == 5
    assert dag_env.emulator.stats()["batches_created"] == 3
    assert len(dag_env.xcom(dr, "submit", "batch_links")) == 3


def test_non_deferrable_waits_in_the_worker(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(2))
    dag = dag_env.write_dag(
        "submit_sync", _submit_dag("submit_sync", str(src)).replace("deferrable=True", "deferrable=False")
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success"}
    assert dag_env.xcom(dr, "submit", "submit_manifest") is None  # never deferred
    assert dag_env.xcom(dr, "submit")["batches"][0]["status"] == "completed"


def test_no_wait_returns_manifest_right_away(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(2))
    dag = dag_env.write_dag(
        "submit_nowait", _submit_dag("submit_nowait", str(src), extra="wait_for_completion=False,")
    )

    dr = dag_env.run(dag)

    manifest = dag_env.xcom(dr, "submit")
    assert dag_env.states(dr) == {"submit": "success"}
    assert len(manifest["batch_ids"]) == 1 and manifest["batches"][0]["id"] == manifest["batch_ids"][0]


@pytest.mark.emulator(requests_per_second=1)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "sync"])
@pytest.mark.parametrize("cancel", [True, False], ids=["cancel", "keep"])
def test_timeout_fails_and_cancels_on_request(dag_env, deferrable, cancel):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(20))
    dag_id = f"submit_timeout_{int(deferrable)}{int(cancel)}"
    body = _submit_dag(dag_id, str(src), extra=f"cancel_on_timeout={cancel},").replace(
        "timeout=60", "timeout=1"
    )
    dag = dag_env.write_dag(dag_id, body.replace("deferrable=True", f"deferrable={deferrable}"))

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "failed"}
    [batch_id] = dag_env.xcom(dr, "submit", "batch_ids")
    status = dag_env.emulator.client().batches.retrieve(batch_id).status
    if cancel:
        assert dag_env.emulator.stats()["batches_cancelled"] == 1
        assert status in ("cancelling", "cancelled")
    else:
        assert dag_env.emulator.stats()["batches_cancelled"] == 0
        assert status in ("validating", "in_progress")


FETCH_WAITS = """
    from airflow_batch_provider.operators.fetch import OpenAIBatchFetchOperator
"""


@pytest.mark.emulator(requests_per_second=3)
def test_fetch_that_waits_resumes_with_its_state_under_dag_test(dag_env, capfd):
    # submit returns at once; fetch finds the batch running, defers, and dag.test() resumes it
    # with the trigger's event only: the state comes back from XCom.
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(4))
    out = dag_env.data / "out"
    body = _submit_dag("fetch_waits", str(src), extra="wait_for_completion=False,", header=FETCH_WAITS)
    body += f"""
        fetch = OpenAIBatchFetchOperator(
            task_id="fetch", batches=submit.output, destination={str(out)!r},
            poll_interval=0.1, max_poll_interval=0.5,
        )
    """
    dr = dag_env.run(dag_env.write_dag("fetch_waits", body))

    assert dag_env.states(dr) == {"submit": "success", "fetch": "success"}
    assert dag_env.xcom(dr, "fetch")["batch_ids"] == dag_env.xcom(dr, "submit")["batch_ids"]
    results = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in results] == ["succeeded"] * 4
    # A wait is not an error: the manifest link asks XCom for nothing before the files land.
    logged = capfd.readouterr()
    assert "XCom not found" not in logged.out + logged.err


PREVIOUS_VERSION = """
    import hashlib, json
    from airflow_batch_provider.hooks.openai_batch import OpenAIBatchHook

    def scheme_1_fingerprint(data, endpoint):
        # Version 1, written out: sha256 over the input's digest, the endpoint AS SPELLED, the limits.
        payload = {"sha256": hashlib.sha256(data).hexdigest(), "endpoint": endpoint,
                   "limits": [50000, 209715200, 50000]}
        raw = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(raw).hexdigest()[:16]

    class UpgradedSubmit(OpenAIBatchSubmitOperator):
        # Try 1 ran the previous version: it created the batch with its own metadata, then the
        # worker died. Try 2 runs this version.
        def execute(self, context):
            ti = context["ti"]
            if ti.try_number > 1:
                return super().execute(context)
            key = hashlib.sha256(json.dumps([ti.dag_id, ti.task_id, ti.run_id, -1],
                                            separators=(",", ":")).encode()).hexdigest()[:16]
            data = open(self.input_path, "rb").read()
            fp = scheme_1_fingerprint(data, self.endpoint)
            hook = OpenAIBatchHook(self.conn_id)
            uploaded = hook.upload_file(iter([data]), filename=f"airflow-{key}-{fp}-1of1.jsonl")
            hook.create_batch(uploaded.id, "/v1/chat/completions", metadata={
                "airflow_identity": key, "airflow_fingerprint": fp, "airflow_shard": "1/1",
                "airflow_dag_id": ti.dag_id, "airflow_task_id": ti.task_id, "airflow_run_id": ti.run_id})
            raise RuntimeError("worker killed; the deployment is upgraded before the retry")
"""


def test_a_retry_across_an_upgrade_reattaches_to_the_previous_versions_batch(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(3))
    dag = dag_env.write_dag(
        "submit_upgrade",
        _submit_dag(
            "submit_upgrade",
            str(src),
            extra="endpoint='chat/completions', retries=1, retry_delay=timedelta(seconds=0),",
            header=PREVIOUS_VERSION,
            cls="UpgradedSubmit",
        ),
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success"}
    assert dag_env.try_number(dr, "submit") == 2
    stats = dag_env.emulator.stats()
    assert stats["batches_created"] == 1, "the retry paid for a second batch"
    assert stats["files_uploaded"] == 1
    assert dag_env.xcom(dr, "submit")["batches"][0]["status"] == "completed"
