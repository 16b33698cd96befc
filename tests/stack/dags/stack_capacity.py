"""Stack-test DAG for the triggerer capacity measurement (tests/stack/capacity.py).

``tick`` defers to :class:`tests.stack.ticker.LoopTicker`, which samples the triggerer's
event-loop stalls and never fires; ``hold`` (mapped, ``MAX_HOLD`` instances) waits behind
it and never runs: the measurement turns its instances into deferred tasks whose triggers
are real :class:`OpenAIBatchTrigger` s, as many as the step needs.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from airflow.sdk import BaseOperator, Param, dag, task

from tests.stack.ticker import LoopTicker

MAX_HOLD = 1000


class TickOperator(BaseOperator):
    template_fields = ("path",)

    def __init__(self, *, path: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path = path

    def execute(self, context: Any) -> None:
        self.defer(trigger=LoopTicker(self.path), method_name="execute_complete")

    def execute_complete(self, context: Any, event: Any = None) -> None:
        return None


@dag(
    schedule=None,
    start_date=datetime(2025, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    params={"ticks": Param("", type="string")},
    tags=["stack-test"],
)
def stack_capacity():
    @task
    def hold(i: int) -> int:
        return i

    TickOperator(task_id="tick", path="{{ params.ticks }}") >> hold.expand(i=list(range(MAX_HOLD)))


stack_capacity()
