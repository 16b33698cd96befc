"""The deferral contract of the submit operator, against the emulator, without a scheduler.

``dag.test()`` resumes a task with the event only; a real triggerer also hands back the
``kwargs`` given to ``defer``. Both ways are covered here and in ``test_submit_dag.py``.
"""

from __future__ import annotations

import json
import time

import pytest

try:
    from airflow.sdk.exceptions import TaskDeferred
except ImportError:  # Airflow 3.1
    from airflow.exceptions import TaskDeferred  # type: ignore[no-redef]

from airflow_batch_provider.exceptions import BatchAuthError, BatchFailedError, BatchProviderError
from airflow_batch_provider.operators.submit import MANIFEST_XCOM_KEY, OpenAIBatchSubmitOperator
from tests.integration._dag_env import chat_lines


class FakeTI:
    """The task-instance surface the operator uses: identity and XCom."""

    def __init__(self, run_id: str = "manual__1", try_number: int = 1) -> None:
        self.dag_id, self.task_id, self.run_id, self.map_index = "dag", "submit", run_id, -1
        self.try_number = try_number
        self.xcoms: dict[str, object] = {}

    def xcom_push(self, key: str, value: object) -> None:
        self.xcoms[key] = json.loads(json.dumps(value))  # XCom values must be JSON

    def xcom_pull(self, task_ids=None, key="return_value", map_indexes=None):
        return self.xcoms.get(key)


@pytest.fixture
def emulator_default(batch_emulator, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {"conn_type": "openai", "host": batch_emulator.base_url, "password": batch_emulator.api_key}
        ),
    )
    return batch_emulator


def _operator(path, **kwargs):
    return OpenAIBatchSubmitOperator(
        task_id="submit", input_path=str(path), deferrable=True, poll_interval=0.1, timeout=3600, **kwargs
    )


@pytest.mark.emulator(requests_per_second=1)
def test_defer_carries_ids_deadline_and_manifest_and_a_retry_keeps_them(emulator_default, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(chat_lines(5))
    ti = FakeTI()

    with pytest.raises(TaskDeferred) as first:
        _operator(src).execute({"ti": ti})

    classpath, kwargs = first.value.trigger.serialize()
    assert classpath.endswith("OpenAIBatchTrigger")
    assert emulator_default.api_key not in json.dumps(kwargs, default=str)  # no secret in the DB
    [batch_id] = kwargs["batch_ids"]
    created = emulator_default.client().batches.retrieve(batch_id).created_at
    assert kwargs["deadline"] == pytest.approx(created + 3600)
    manifest = first.value.kwargs["manifest"]
    assert manifest["batch_ids"] == [batch_id]
    assert first.value.method_name == "execute_complete"
    # Persisted before deferring: what the UI and a resumed instance read.
    assert ti.xcoms["batch_ids"] == [batch_id]
    assert ti.xcoms["batch_links"][0].endswith(f"/_emulator/batches/{batch_id}")
    assert ti.xcoms[MANIFEST_XCOM_KEY] == manifest

    time.sleep(1.1)  # a later try must not get a fresh budget
    retry_ti = FakeTI(try_number=2)
    with pytest.raises(TaskDeferred) as second:
        _operator(src).execute({"ti": retry_ti})

    _, retry_kwargs = second.value.trigger.serialize()
    assert retry_kwargs["batch_ids"] == [batch_id]
    assert retry_kwargs["deadline"] == kwargs["deadline"]
    assert emulator_default.stats()["batches_created"] == 1
    assert emulator_default.stats()["files_uploaded"] == 1


def _manifest():
    return {
        "batch_ids": ["b1"],
        "shards": [{"index": 0, "start_line": 11, "line_count": 5, "batch_id": "b1"}],
        "batches": [],
    }


def _summary(status="completed", total=5, completed=5, failed=0, errors=()):
    return {
        "id": "b1",
        "status": status,
        "request_counts": {"total": total, "completed": completed, "failed": failed},
        "errors": list(errors),
        "metadata": {"airflow_shard": "1/1"},
    }


def test_resume_with_kwargs_returns_filled_manifest(tmp_path):
    op = _operator(tmp_path / "unused.jsonl")
    out = op.execute_complete(
        {"ti": FakeTI()}, event={"status": "success", "batches": [_summary()]}, manifest=_manifest()
    )
    assert out["batch_ids"] == ["b1"] and out["batches"][0]["status"] == "completed"


def test_resume_from_xcom_when_kwargs_are_missing(tmp_path):
    ti = FakeTI()
    ti.xcoms[MANIFEST_XCOM_KEY] = _manifest()
    out = _operator(tmp_path / "x.jsonl").execute_complete(
        {"ti": ti}, event={"status": "success", "batches": [_summary()]}
    )
    assert out["batches"][0]["id"] == "b1"


def test_resume_without_manifest_fails_loudly(tmp_path):
    with pytest.raises(BatchProviderError, match="without its manifest"):
        _operator(tmp_path / "x.jsonl").execute_complete(
            {"ti": FakeTI()}, event={"status": "success", "batches": []}
        )


def test_resume_failed_batch_names_input_lines(tmp_path):
    error = {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "line": 2}
    event = {"status": "success", "batches": [_summary("failed", errors=[error])]}
    with pytest.raises(BatchFailedError, match=r"line 2 \(input line 12\)"):
        _operator(tmp_path / "x.jsonl").execute_complete({"ti": FakeTI()}, event=event, manifest=_manifest())


def test_resume_every_request_failed_is_not_success(tmp_path):
    event = {"status": "success", "batches": [_summary(completed=0, failed=5)]}
    with pytest.raises(BatchFailedError, match="every request failed"):
        _operator(tmp_path / "x.jsonl").execute_complete({"ti": FakeTI()}, event=event, manifest=_manifest())


def test_resume_expired_accepted_when_asked(tmp_path):
    event = {"status": "success", "batches": [_summary("expired", completed=3)]}
    op = _operator(tmp_path / "x.jsonl", fail_on_expired=False)
    assert (
        op.execute_complete({"ti": FakeTI()}, event=event, manifest=_manifest())["batches"][0]["status"]
        == "expired"
    )
    with pytest.raises(BatchFailedError, match="expired"):
        _operator(tmp_path / "x.jsonl").execute_complete({"ti": FakeTI()}, event=event, manifest=_manifest())


def test_resume_auth_error(tmp_path):
    event = {"status": "error", "reason": "auth", "message": "key revoked", "batches": []}
    with pytest.raises(BatchAuthError, match="key revoked"):
        _operator(tmp_path / "x.jsonl").execute_complete({"ti": FakeTI()}, event=event, manifest=_manifest())


def test_bad_metadata_fails_before_upload(emulator_default, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(chat_lines(2))
    with pytest.raises(ValueError, match="reserved"):
        _operator(src, metadata={"airflow_identity": "x"}).execute({"ti": FakeTI()})
    assert emulator_default.stats()["files_uploaded"] == 0


def test_input_change_policy_fail(emulator_default, tmp_path):
    from airflow_batch_provider.exceptions import BatchIdentityConflictError

    src = tmp_path / "in.jsonl"
    src.write_text(chat_lines(2))
    op = _operator(src, wait_for_completion=False)
    op.execute({"ti": FakeTI()})
    src.write_text(chat_lines(2, prefix="new"))

    with pytest.raises(BatchIdentityConflictError, match="input changed"):
        _operator(src, wait_for_completion=False, on_input_change="fail").execute({"ti": FakeTI()})
    assert emulator_default.stats()["batches_created"] == 1
    assert emulator_default.stats()["files_uploaded"] == 1


@pytest.mark.emulator(requests_per_second=1)
@pytest.mark.parametrize(("policy", "cancelled"), [("cancel_and_resubmit", 1), ("resubmit", 0)])
def test_input_change_cancels_the_stale_running_batch(emulator_default, tmp_path, policy, cancelled):
    src = tmp_path / "in.jsonl"
    src.write_text(chat_lines(10))
    old = _operator(src, wait_for_completion=False).execute({"ti": FakeTI()})
    src.write_text(chat_lines(10, prefix="new"))

    new = _operator(src, wait_for_completion=False, on_input_change=policy).execute({"ti": FakeTI()})

    assert new["batch_ids"] != old["batch_ids"]
    assert emulator_default.stats()["batches_created"] == 2
    assert emulator_default.stats()["batches_cancelled"] == cancelled


def test_input_from_object_storage(emulator_default, aws_test_bucket):
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(f"s3://{aws_test_bucket}/batches/in.jsonl", conn_id="aws_test")
    path.write_text(chat_lines(3))

    manifest = OpenAIBatchSubmitOperator(
        task_id="submit", input_path=path, wait_for_completion=False
    ).execute({"ti": FakeTI()})

    assert manifest["input_uri"].startswith("s3://") and manifest["input_uri"].endswith("/batches/in.jsonl")
    assert manifest["shards"][0]["line_count"] == 3
    [uploaded] = [f for f in emulator_default.client().files.list() if f.id == manifest["input_file_ids"][0]]
    assert uploaded.bytes == manifest["shards"][0]["byte_count"]
