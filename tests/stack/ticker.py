"""A tiny trigger that measures its triggerer's event-loop stalls (the capacity drill).

It sleeps ``period`` seconds in a loop; any extra time before it wakes is a stall of the
loop every trigger shares. Once a second it appends the worst stall of that second to
``path`` as a JSON line ``{"t": epoch, "worst_ms": ...}``. It never fires.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class LoopTicker(BaseTrigger):
    """See the module docstring."""

    def __init__(self, path: str, period: float = 0.02) -> None:
        super().__init__()
        self.path, self.period = path, float(period)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "path": self.path,
            "period": self.period,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        loop = asyncio.get_running_loop()
        with open(self.path, "a", encoding="utf-8") as out:  # noqa: ASYNC230 (tiny, once)
            window, worst = loop.time(), 0.0
            while True:
                before = loop.time()
                await asyncio.sleep(self.period)
                worst = max(worst, loop.time() - before - self.period)
                if loop.time() - window >= 1.0:
                    out.write(json.dumps({"t": time.time(), "worst_ms": round(worst * 1000, 1)}) + "\n")
                    out.flush()
                    window, worst = loop.time(), 0.0
        yield TriggerEvent({})  # never reached
