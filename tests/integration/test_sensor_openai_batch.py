"""OpenAIBatchSensor in real DAGs (``dag.test()``) against the emulator, in all three modes.

``dag.test`` runs a deferred task's trigger inline (``[DAG TEST] running trigger in
line``), so the deferrable cases go execute -> defer -> trigger -> execute_complete;
poke sleeps in the worker and reschedule goes back to the (test) scheduler between pokes.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.integration import _dag_env
from tests.integration._dag_env import chat_lines

airflow_db = _dag_env.airflow_db
dag_env = _dag_env.dag_env

pytestmark = pytest.mark.timeout(120)

MODES = {
    "deferrable": "deferrable=True",
    "poke": "deferrable=False, mode='poke'",
    "reschedule": "deferrable=False, mode='reschedule'",
}


def _batches(emulator: Any, n: int = 1, content: str | None = None, lines: int = 4) -> list[str]:
    client = emulator.client()
    ids = []
    for i in range(n):
        data = (content if content is not None else chat_lines(lines, prefix=f"s{i}")).encode()
        file = client.files.create(file=(f"in{i}.jsonl", data), purpose="batch")
        ids.append(
            client.batches.create(
                input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
        )
    return ids


def _events(dag_env: Any) -> list[dict[str, Any]]:
    path = dag_env.data / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _reschedules(dag_run: Any) -> int:
    from airflow.models.taskreschedule import TaskReschedule
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        ti_ids = [ti.id for ti in dag_run.get_task_instances(session=session)]
        return session.scalar(select(func.count()).where(TaskReschedule.ti_id.in_(ti_ids))) or 0


CREATE_TASK = """
        @task
        def create():
            # Right before the sensor, so the batches are surely still running when it starts.
            import openai

            client = openai.OpenAI(base_url={base_url!r}, api_key={api_key!r})
            ids = []
            for s in range({n}):
                lines = "".join(
                    json.dumps({{"custom_id": f"q{{i}}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {{"model": "gpt-4o-mini",
                                         "messages": [{{"role": "user", "content": f"q {{s}} {{i}}"}}]}}}})
                    + "\\n"
                    for i in range({lines})
                )
                file = client.files.create(file=(f"in{{s}}.jsonl", lines.encode()), purpose="batch")
                batch = client.batches.create(
                    input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h"
                )
                ids.append(batch.id)
            return ids
"""


def _sensor_dag(
    dag_env: Any,
    dag_id: str,
    batch_ids: Any,
    mode: str,
    extra: str = "",
    create: tuple[int, int] | None = None,
) -> Any:
    """A DAG with the sensor ``wait``; ``create=(n, lines)``: an upstream task ``create`` makes
    ``n`` batches and the sensor waits on its XCom instead of ``batch_ids``."""
    # reschedule: dag.test() looks for runnable tasks once a second, so a 1 s poke interval
    upstream = ""
    if create:
        em = dag_env.emulator
        upstream = CREATE_TASK.format(base_url=em.base_url, api_key=em.api_key, n=create[0], lines=create[1])
    ids_expr = "create()" if create else repr(batch_ids)
    return dag_env.write_dag(
        dag_id,
        f"""
        import json, pathlib
        from airflow.sdk import DAG, task
        from airflow_batch_provider.sensors.openai_batch import OpenAIBatchSensor

        class RecordingSensor(OpenAIBatchSensor):
            # Leaves the trigger's event where the test can see that the task did defer.
            def execute_complete(self, context, event=None):
                with pathlib.Path({str(dag_env.data / "events.jsonl")!r}).open("a") as f:
                    f.write(json.dumps(event) + "\\n")
                return super().execute_complete(context, event)

        {upstream}
        with DAG({dag_id!r}, schedule=None, default_args={{"retries": 0}}) as dag:
            RecordingSensor(
                task_id="wait",
                batch_ids={ids_expr},
                {MODES[mode]},
                poke_interval={1.0 if mode == "reschedule" else 0.1},
                max_poll_interval=0.5,
                timeout=60,
                {extra}
            )
        """,
    )


# 2 x 16 requests at 2 per second: ~16 s, longer than a task's start-up on a loaded machine
# (the reschedule mode must find the batches still running).
@pytest.mark.emulator(requests_per_second=2)
@pytest.mark.parametrize("mode", list(MODES))
def test_waits_in_every_mode_and_returns_the_summaries(dag_env, mode):
    dag = _sensor_dag(dag_env, f"sensor_ok_{mode}", None, mode, create=(2, 16))

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"create": "success", "wait": "success"}
    ids = dag_env.xcom(dr, "create")
    out = dag_env.xcom(dr, "wait")
    assert out["batch_ids"] == ids and out["conn_id"] == "openai_default"
    assert [b["status"] for b in out["batches"]] == ["completed", "completed"]
    assert [b["request_counts"]["completed"] for b in out["batches"]] == [16, 16]
    assert len(_events(dag_env)) == (1 if mode == "deferrable" else 0)  # deferred only when asked
    assert (_reschedules(dr) > 0) == (mode == "reschedule")


@pytest.mark.emulator(requests_per_second=8)
def test_waits_on_the_submit_manifest_from_xcom(dag_env):
    src = dag_env.data / "in.jsonl"
    src.write_text(chat_lines(6))
    dag = dag_env.write_dag(
        "sensor_manifest",
        f"""
        from airflow.sdk import DAG
        from airflow_batch_provider.operators.submit import OpenAIBatchSubmitOperator
        from airflow_batch_provider.sensors.openai_batch import OpenAIBatchSensor

        with DAG("sensor_manifest", schedule=None, default_args={{"retries": 0}}) as dag:
            submit = OpenAIBatchSubmitOperator(
                task_id="submit", input_path={str(src)!r}, wait_for_completion=False
            )
            OpenAIBatchSensor(
                task_id="wait", batch_ids=submit.output, deferrable=True, poke_interval=0.1, timeout=60
            )
        """,
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"submit": "success", "wait": "success"}
    manifest, out = dag_env.xcom(dr, "submit"), dag_env.xcom(dr, "wait")
    assert out["batch_ids"] == manifest["batch_ids"] and out["fingerprint"] == manifest["fingerprint"]
    assert out["shards"] == manifest["shards"]  # fetch can take it as it is
    assert out["batches"][0]["request_counts"] == {"total": 6, "completed": 6, "failed": 0}


def test_already_finished_batches_succeed_without_deferring(dag_env):
    ids = _batches(dag_env.emulator, 1)
    client, deadline = dag_env.emulator.client(), time.time() + 60
    while client.batches.retrieve(ids[0]).status != "completed" and time.time() < deadline:
        time.sleep(0.05)  # instant profile: done in a moment
    dag = _sensor_dag(dag_env, "sensor_done", json.dumps(ids), "deferrable")  # a rendered JSON string

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": "success"}
    assert _events(dag_env) == []


@pytest.mark.emulator(requests_per_second=8)
@pytest.mark.parametrize("mode", list(MODES))
def test_every_request_failed_fails_the_task_in_every_mode(dag_env, mode, capfd):
    ids = _batches(
        dag_env.emulator, content=chat_lines(4).replace("question", "[[emulator:context_length_exceeded]]")
    )
    dag = _sensor_dag(dag_env, f"sensor_allfail_{mode}", ids, mode)

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": "failed"}
    assert "every request failed (4/4 failed, 0 succeeded)" in capfd.readouterr().out


@pytest.mark.parametrize("mode", ["deferrable", "poke"])
def test_failed_validation_fails_with_the_line(dag_env, mode, capfd):
    ids = _batches(dag_env.emulator, content=chat_lines(1) + "{oops\n")
    dag = _sensor_dag(dag_env, f"sensor_invalid_{mode}", ids, mode)

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": "failed"}
    out = capfd.readouterr().out
    assert f"Batch {ids[0]} failed" in out and "line 2: [" in out


@pytest.mark.emulator(requests_per_second=1)
@pytest.mark.parametrize(("fail_on_cancelled", "state"), [(True, "failed"), (False, "success")])
def test_cancelled_batches_follow_the_flag(dag_env, fail_on_cancelled, state):
    ids = _batches(dag_env.emulator, lines=30)
    dag_env.emulator.client().batches.cancel(ids[0])
    dag = _sensor_dag(
        dag_env,
        f"sensor_cancel_{fail_on_cancelled}",
        ids,
        "deferrable",
        f"fail_on_cancelled={fail_on_cancelled},",
    )

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": state}
    if state == "success":
        assert dag_env.xcom(dr, "wait")["batches"][0]["status"] == "cancelled"


@pytest.mark.emulator(requests_per_second=1)
@pytest.mark.parametrize(("soft_fail", "state"), [(False, "failed"), (True, "skipped")])
def test_deferred_timeout_is_a_sensor_timeout(dag_env, soft_fail, state):
    ids = _batches(dag_env.emulator, lines=30)
    dag = _sensor_dag(dag_env, f"sensor_timeout_{soft_fail}", ids, "deferrable", f"soft_fail={soft_fail},")
    dag.task_dict["wait"].timeout = 1

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": state}
    [event] = _events(dag_env)
    assert event["reason"] == "timeout"
    # The sensor does not own the batch: a timeout leaves it running.
    assert dag_env.emulator.stats()["batches_cancelled"] == 0


def test_unknown_batch_fails_at_once(dag_env, capfd):
    dag = _sensor_dag(dag_env, "sensor_missing", ["batch_nope"], "deferrable")

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": "failed"}
    assert "batch_nope" in capfd.readouterr().out


def _no_hook_retries(dag_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every injected fault reaches the sensor as one failed poke."""
    em = dag_env.emulator
    monkeypatch.setenv(
        "AIRFLOW_CONN_OPENAI_DEFAULT",
        json.dumps(
            {"conn_type": "openai", "host": em.base_url, "password": em.api_key, "extra": {"max_retries": 0}}
        ),
    )


def _airflow_has_task_state_store() -> bool:
    from airflow import __version__
    from packaging.version import Version

    return Version(__version__).release >= (3, 3)


def test_reschedule_mode_counts_failed_pokes_across_reschedules(dag_env, monkeypatch, capfd):
    ids = _batches(dag_env.emulator, lines=2)
    _no_hook_retries(dag_env, monkeypatch)
    # Three failed pokes in a row, one more than allowed: each is a fresh task run.
    dag_env.emulator.set_faults("batches.retrieve", error_503=1.0, max_faults=3)
    dag = _sensor_dag(dag_env, "sensor_resched_faults", ids, "reschedule", "max_transient_errors=2,")

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": "failed"}
    out = capfd.readouterr().out
    assert "(1/2 in a row)" in out and "(2/2 in a row)" in out
    # Airflow 3.3+ carries the count across reschedules in its task state store; older Airflow has
    # none, so the sensor retries a failed poke within the same run (no reschedule in between).
    has_store = _airflow_has_task_state_store()
    assert _reschedules(dr) == (2 if has_store else 0)
    assert dag_env.emulator.stats()["faults_injected"] == 3


def test_reschedule_mode_tolerates_failed_pokes_up_to_the_cap(dag_env, monkeypatch, capfd):
    ids = _batches(dag_env.emulator, lines=2)
    _no_hook_retries(dag_env, monkeypatch)
    dag_env.emulator.set_faults("batches.retrieve", error_503=1.0, max_faults=2)
    dag = _sensor_dag(dag_env, "sensor_resched_tolerated", ids, "reschedule", "max_transient_errors=2,")

    dr = dag_env.run(dag)

    assert dag_env.states(dr) == {"wait": "success"}
    assert "(2/2 in a row)" in capfd.readouterr().out
