"""Turn ``hold`` task instances of a ``stack_capacity`` run into deferred batch tasks.

Run inside the stack's environment (its database and Fernet key), by the capacity
drill: ``python -m tests.stack.capacity RUN_ID START STOP BATCH_IDS_JSON CONN_ID``.
Map indexes ``START..STOP-1`` of ``hold`` become ``deferred``, each with a trigger row of
an :class:`OpenAIBatchTrigger` waiting for one batch with the operator's default polling
(30 s, backing off to 300 s): what a deferred submit task leaves for the triggerer.
Creating the rows directly spares a thousand task runs on two cores; the triggerer
treats them exactly as the rows a deferring task writes.

``python -m tests.stack.capacity park RUN_ID`` first marks every ``hold`` instance
``removed``: a finished state the scheduler does not evaluate, whereas a thousand instances
waiting on ``tick`` would cost it a second of CPU every loop and distort the measurement.
"""

from __future__ import annotations

import json
import sys


def park(run_id: str) -> None:
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import update

    with create_session() as session:
        result = session.execute(
            update(TaskInstance)
            .where(
                TaskInstance.dag_id == "stack_capacity",
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == "hold",
            )
            .values(state=TaskInstanceState.REMOVED)
            .execution_options(synchronize_session=False)
        )
        print(f"parked {result.rowcount} task instances")


def main(argv: list[str]) -> None:
    if argv[0] == "park":
        park(argv[1])
        return
    run_id, start, stop, batch_file, conn_id = argv
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    from airflow_batch_provider.triggers.openai_batch import OpenAIBatchTrigger

    batch_ids = json.loads(open(batch_file).read())
    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(
                TaskInstance.dag_id == "stack_capacity",
                TaskInstance.run_id == run_id,
                TaskInstance.task_id == "hold",
                TaskInstance.map_index >= int(start),
                TaskInstance.map_index < int(stop),
            )
        ).all()
        for ti in tis:
            trigger = Trigger.from_object(OpenAIBatchTrigger(conn_id, [batch_ids[ti.map_index]]))
            session.add(trigger)
            session.flush()
            ti.state = TaskInstanceState.DEFERRED
            ti.trigger_id = trigger.id
            ti.next_method = "execute_complete"
        print(f"deferred {len(tis)} task instances")


if __name__ == "__main__":
    main(sys.argv[1:])
