"""Identity, fingerprint, metadata and the re-attach plan (pure)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from airflow_batch_provider.batch_file import ShardLimits
from airflow_batch_provider.submission.identity import (
    IDENTITY_SCHEME,
    RESERVED_METADATA_KEYS,
    Identity,
    batch_metadata,
    build_submit_manifest,
    deadline_from,
    identity_key,
    input_fingerprint,
    legacy_fingerprints,
    parse_fingerprint_metadata,
    parse_shard_label,
    parse_upload_filename,
    plan_submission,
    reattach_horizon,
    run_horizon,
    shard_label,
    upload_filename,
)

IDENT = Identity("dag", "task", "manual__2026-01-01", -1)
KEY = IDENT.key
FP = input_fingerprint("a" * 64, "/v1/chat/completions", ShardLimits())


def batch(bid, status="in_progress", fp=FP, shard="1/1", key=KEY, created=100, file_id=None):
    return {
        "id": bid,
        "status": status,
        "created_at": created,
        "input_file_id": file_id or f"file-{bid}",
        "metadata": {"airflow_identity": key, "airflow_fingerprint": fp, "airflow_shard": shard},
    }


def upload(fid, index=0, count=1, fp=FP, size=10, created=100, status="processed", key=KEY):
    return {
        "id": fid,
        "filename": upload_filename(key, fp, index, count),
        "bytes": size,
        "created_at": created,
        "status": status,
    }


class TestIdentity:
    def test_stable_and_16_hex(self):
        assert identity_key("d", "t", "r", -1) == identity_key("d", "t", "r", None)
        assert len(KEY) == 16 and int(KEY, 16) >= 0

    @pytest.mark.parametrize(
        "other",
        [("d2", "t", "r", -1), ("d", "t2", "r", -1), ("d", "t", "r2", -1), ("d", "t", "r", 0)],
    )
    def test_each_part_counts(self, other):
        assert identity_key(*other) != identity_key("d", "t", "r", -1)

    def test_no_ambiguity_between_parts(self):
        assert identity_key("a-b", "c", "r") != identity_key("a", "b-c", "r")


class TestFingerprint:
    def test_content_endpoint_and_limits_count(self):
        base = input_fingerprint("a" * 64, "/v1/embeddings", ShardLimits())
        assert base == input_fingerprint("a" * 64, "/v1/embeddings", ShardLimits())
        assert base != input_fingerprint("b" * 64, "/v1/embeddings", ShardLimits())
        assert base != input_fingerprint("a" * 64, "/v1/chat/completions", ShardLimits())
        assert base != input_fingerprint("a" * 64, "/v1/embeddings", ShardLimits(max_requests=10))

    def test_limits_as_mapping(self):
        limits = ShardLimits(max_requests=7)
        as_dict = {
            "max_requests": 7,
            "max_bytes": limits.max_bytes,
            "max_embedding_inputs": limits.max_embedding_inputs,
        }
        assert input_fingerprint("a", "/v1/embeddings", limits) == input_fingerprint(
            "a", "/v1/embeddings", as_dict
        )


class TestNames:
    def test_shard_label_roundtrip(self):
        assert shard_label(0, 3) == "1/3"
        assert parse_shard_label("3/3") == (2, 3)
        for bad in (None, "", "0/3", "4/3", "x/y", "1-3"):
            assert parse_shard_label(bad) is None

    def test_upload_filename_roundtrip(self):
        name = upload_filename(KEY, FP, 1, 4)
        assert name.endswith(".jsonl")
        assert parse_upload_filename(name) == {"identity": KEY, "fingerprint": FP, "index": 1, "count": 4}
        assert parse_upload_filename("input.jsonl") is None
        assert parse_upload_filename(None) is None


class TestMetadata:
    def test_identity_plus_user(self):
        meta = batch_metadata(IDENT, FP, 1, 2, {"team": "evals", "n": 3})
        assert meta["team"] == "evals" and meta["n"] == "3"
        assert meta["airflow_identity"] == KEY
        assert meta["airflow_fingerprint"] == f"v2:{FP}"
        assert meta["airflow_shard"] == "2/2"
        assert meta["airflow_run_id"] == IDENT.run_id
        assert set(RESERVED_METADATA_KEYS) <= set(meta)
        assert all(isinstance(v, str) for v in meta.values())

    def test_long_run_id_truncated(self):
        meta = batch_metadata(Identity("d", "t", "r" * 600), FP, 0, 1)
        assert len(meta["airflow_run_id"]) == 512

    def test_reserved_key_refused(self):
        with pytest.raises(ValueError, match="reserved"):
            batch_metadata(IDENT, FP, 0, 1, {"airflow_identity": "x"})

    def test_too_many_pairs(self):
        batch_metadata(IDENT, FP, 0, 1, {f"k{i}": "v" for i in range(10)})
        with pytest.raises(ValueError, match="at most 10"):
            batch_metadata(IDENT, FP, 0, 1, {f"k{i}": "v" for i in range(11)})

    def test_long_key_and_value(self):
        with pytest.raises(ValueError, match="1..64"):
            batch_metadata(IDENT, FP, 0, 1, {"k" * 65: "v"})
        with pytest.raises(ValueError, match="512"):
            batch_metadata(IDENT, FP, 0, 1, {"k": "v" * 513})


class TestPlan:
    def test_nothing_found_uploads_all(self):
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10, 20], batches=[])
        assert [(a.index, a.batch, a.file_id) for a in plan.actions] == [(0, None, None), (1, None, None)]
        assert not plan.input_changed and not plan.orphan_file_ids

    def test_reattach_same_input(self):
        b = batch("b1")
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[b])
        assert plan.actions[0].batch is b and not plan.to_create
        assert plan.reattached == [b]

    def test_other_identity_ignored(self):
        plan = plan_submission(
            identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[batch("x", key="0" * 16)]
        )
        assert plan.actions[0].batch is None and not plan.input_changed

    def test_partial_crash_reattaches_created_and_creates_rest(self):
        b = batch("b1", shard="1/2")
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10, 20], batches=[b])
        assert plan.actions[0].batch is b
        assert plan.actions[1].needs_batch

    def test_orphan_upload_reused_for_its_shard(self):
        files = [upload("f-old", created=1), upload("f-new", created=2), upload("f-trunc", size=3)]
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[], files=files)
        assert plan.actions[0].file_id == "f-new"
        assert sorted(plan.orphan_file_ids) == ["f-old", "f-trunc"]

    def test_error_upload_not_reused(self):
        plan = plan_submission(
            identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[], files=[upload("f", status="error")]
        )
        assert plan.actions[0].file_id is None and plan.orphan_file_ids == ["f"]

    def test_uploads_of_others_untouched(self):
        files = [upload("theirs", key="1" * 16), {"id": "plain", "filename": "data.jsonl", "bytes": 10}]
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[], files=files)
        assert plan.actions[0].file_id is None and plan.orphan_file_ids == []

    def test_input_changed(self):
        old_fp = "f" * 16
        live = batch("old-live", fp=old_fp)
        done = batch("old-done", fp=old_fp, status="completed", file_id="f-done")
        files = [upload("f-done", fp=old_fp), upload("f-stale", fp=old_fp)]
        plan = plan_submission(
            identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[live, done], files=files
        )
        assert plan.input_changed and plan.previous_fingerprints == [old_fp]
        assert plan.stale_batches == [live]
        assert plan.actions[0].needs_batch
        # An upload an old batch reads stays (fetch joins through it); an unused one goes.
        assert plan.orphan_file_ids == ["f-stale"]

    def test_changed_shard_count_is_another_input(self):
        plan = plan_submission(
            identity=KEY, fingerprint=FP, shard_sizes=[5, 5], batches=[batch("b", shard="1/1")]
        )
        assert all(a.needs_batch for a in plan.actions)

    @pytest.mark.parametrize("status", ["failed", "cancelled", "cancelling"])
    def test_dead_batches_replaced(self, status):
        b = batch("b", status=status)
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[b])
        assert plan.actions[0].needs_batch and plan.replaced_batches == [b]

    @pytest.mark.parametrize("status", ["validating", "in_progress", "finalizing", "completed", "expired"])
    def test_live_or_paid_batches_reattached(self, status):
        plan = plan_submission(
            identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[batch("b", status=status)]
        )
        assert plan.actions[0].batch["id"] == "b"

    def test_duplicates_prefer_completed_then_oldest_and_cancel_live_extras(self):
        a = batch("a", status="in_progress", created=1)
        b = batch("b", status="completed", created=5)
        c = batch("c", status="validating", created=2)
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[a, b, c])
        assert plan.actions[0].batch is b
        assert [d["id"] for d in plan.duplicate_batches] == ["a", "c"]

    def test_sdk_objects_work(self):
        from openai.types import Batch

        sdk = Batch.model_validate(
            {
                "id": "batch_1",
                "object": "batch",
                "endpoint": "/v1/chat/completions",
                "input_file_id": "file-1",
                "completion_window": "24h",
                "status": "in_progress",
                "created_at": 1,
                "metadata": batch("x")["metadata"],
            }
        )
        plan = plan_submission(identity=KEY, fingerprint=FP, shard_sizes=[10], batches=[sdk])
        assert plan.actions[0].batch is sdk


def test_manifest_shape():
    shards = [
        {"index": 0, "start_line": 1, "line_count": 2, "byte_count": 10},
        {"index": 1, "start_line": 3, "line_count": 1, "byte_count": 5},
    ]
    manifest = build_submit_manifest(
        conn_id="c",
        endpoint="/v1/embeddings",
        model="m",
        fingerprint=FP,
        identity=IDENT,
        input_uri=None,
        shards=shards,
        batches=[batch("b0"), batch("b1")],
    )
    assert manifest["batch_ids"] == ["b0", "b1"]
    assert manifest["input_file_ids"] == ["file-b0", "file-b1"]
    assert manifest["shards"][1] == {
        "index": 1,
        "start_line": 3,
        "line_count": 1,
        "byte_count": 5,
        "batch_id": "b1",
        "input_file_id": "file-b1",
    }
    assert manifest["identity"] == {
        "dag_id": "dag",
        "task_id": "task",
        "run_id": IDENT.run_id,
        "map_index": -1,
    }
    assert manifest["batches"] == []
    with pytest.raises(ValueError):
        build_submit_manifest(
            conn_id="c",
            endpoint="e",
            model=None,
            fingerprint=FP,
            identity=IDENT,
            input_uri=None,
            shards=shards,
            batches=[batch("b0")],
        )


def test_deadline_from_first_creation():
    batches = [batch("a", created=200), batch("b", created=100)]
    assert deadline_from(batches, 60, now=999) == 160
    assert deadline_from(batches, None, now=999) is None
    assert deadline_from([{"id": "x"}], 60, now=999) == 1059


def test_reattach_horizon_is_the_earliest_moment_less_the_clock_slack():
    from datetime import datetime, timedelta, timezone

    run_after = datetime(2026, 11, 1, 12, tzinfo=timezone.utc)
    cleared_start = run_after + timedelta(days=3)  # a clear resets start_date, never run_after
    horizon = reattach_horizon(cleared_start, None, run_after)
    assert horizon == run_after.timestamp() - 3600
    assert reattach_horizon(None, None) is None
    # From a task's context: the DAG run's run_after and start_date; nothing outside a run.
    dag_run = SimpleNamespace(run_after=run_after, start_date=cleared_start)
    assert run_horizon({"dag_run": dag_run}) == horizon
    assert run_horizon({}) is None


class TestGoldenValues:
    """Pinned: a change here makes the first retry after an upgrade pay for a second batch.

    Change these only with a new IDENTITY_SCHEME and a legacy path that still finds the old values.
    """

    def test_scheme_version(self):
        assert IDENTITY_SCHEME == 2

    def test_identity_keys(self):
        assert identity_key("dag", "task", "manual__2026-01-01", -1) == "d3b2087a5bd66e21"
        assert (
            identity_key("nightly_evals", "submit", "scheduled__2026-01-02T03:04:05+00:00", 3)
            == "bebb67544fb31d0b"
        )

    def test_fingerprints(self):
        assert input_fingerprint("a" * 64, "/v1/chat/completions", ShardLimits()) == "7df1a777ba3a91d5"
        assert (
            input_fingerprint("b" * 64, "/v1/embeddings", ShardLimits(max_requests=10)) == "8df5858786cc41ab"
        )

    def test_metadata_and_upload_name(self):
        meta = batch_metadata(Identity("dag", "task", "manual__2026-01-01"), "7df1a777ba3a91d5", 0, 2)
        assert meta == {
            "airflow_identity": "d3b2087a5bd66e21",
            "airflow_fingerprint": "v2:7df1a777ba3a91d5",
            "airflow_shard": "1/2",
            "airflow_dag_id": "dag",
            "airflow_task_id": "task",
            "airflow_run_id": "manual__2026-01-01",
        }
        assert (
            upload_filename("d3b2087a5bd66e21", "7df1a777ba3a91d5", 0, 2)
            == "airflow-d3b2087a5bd66e21-7df1a777ba3a91d5-1of2.jsonl"
        )

    def test_scheme_1_hashed_the_endpoint_as_spelled(self):
        # What version 1 wrote for endpoint="chat/completions": found again on a retry after the upgrade.
        assert legacy_fingerprints("a" * 64, "chat/completions", ShardLimits()) == ["5af03971a042f51c"]
        assert parse_fingerprint_metadata("5af03971a042f51c") == (1, "5af03971a042f51c")
        assert parse_fingerprint_metadata("v2:7df1a777ba3a91d5") == (2, "7df1a777ba3a91d5")
        assert parse_fingerprint_metadata("v2:nope") is None


class TestUpgrade:
    LEGACY = "5af03971a042f51c"  # scheme 1, endpoint="chat/completions"
    CURRENT = "7df1a777ba3a91d5"  # scheme 2, the same input

    def test_a_scheme_1_batch_is_reattached(self):
        old = batch("b_v1", status="completed", fp=self.LEGACY)
        plan = plan_submission(
            identity=KEY, fingerprint=self.CURRENT, shard_sizes=[10], batches=[old], legacy=[self.LEGACY]
        )
        assert plan.reattached == [old] and not plan.to_create and not plan.input_changed

    def test_a_scheme_1_upload_is_reused(self):
        plan = plan_submission(
            identity=KEY,
            fingerprint=self.CURRENT,
            shard_sizes=[10],
            batches=[],
            files=[upload("f_v1", fp=self.LEGACY)],
            legacy=[self.LEGACY],
        )
        assert [a.file_id for a in plan.actions] == ["f_v1"]

    def test_a_legacy_value_under_the_current_scheme_is_another_input(self):
        # "v2:" names the canonical hash only: the legacy hash under it is a different input.
        plan = plan_submission(
            identity=KEY,
            fingerprint=self.CURRENT,
            shard_sizes=[10],
            batches=[batch("b", fp=f"v2:{self.LEGACY}")],
            legacy=[self.LEGACY],
        )
        assert plan.to_create and plan.previous_fingerprints == [self.LEGACY]
