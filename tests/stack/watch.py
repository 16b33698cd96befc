"""What the stack drills record: who holds which trigger, over time, and the per-drill report."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests.system.airflow_stack import AirflowStack


class TriggerWatch:
    """Samples the trigger table (every second) in a thread while a drill runs.

    ``held``: the most triggers each triggerer job held at once; ``assignments``: every
    (trigger id, triggerer job) pair seen; ``snapshots``: ``(time, {job: count})``.
    """

    def __init__(self, stack: AirflowStack, classpath_like: str = "%OpenAIBatchTrigger%") -> None:
        self.stack, self.classpath_like = stack, classpath_like
        self.held: Counter[int] = Counter()
        self.assignments: set[tuple[int, int]] = set()
        self.snapshots: list[tuple[float, dict[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trigger-watch", daemon=True)

    def __enter__(self) -> TriggerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self) -> dict[int, int]:
        rows = self.stack.query(
            "SELECT id, triggerer_id FROM trigger WHERE classpath LIKE ?", (self.classpath_like,)
        )
        counts: Counter[int] = Counter()
        for trigger_id, job in rows:
            if job is not None:
                counts[int(job)] += 1
                self.assignments.add((int(trigger_id), int(job)))
        for job, count in counts.items():
            self.held[job] = max(self.held[job], count)
        self.snapshots.append((time.time(), dict(counts)))
        return dict(counts)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # the DB may be restarting: sample again
                self.sample()

    @property
    def most_held(self) -> int:
        return max(self.held.values(), default=0)


@dataclass
class DrillReport:
    """One line of the stack-test report."""

    drill: str
    tasks: int
    batches_created: int
    recovery_seconds: float | None = None
    most_held_by_one_triggerer: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


REPORTS: list[DrillReport] = []


def record(report: DrillReport, root: Path | None = None) -> None:
    REPORTS.append(report)
    if root is not None:
        (root / "stack-report.json").write_text(json.dumps([asdict(r) for r in REPORTS], indent=2))


def table() -> str:
    lines = [
        f"{'drill':<34} {'tasks':>5} {'batches':>7} {'recover s':>9} {'max/triggerer':>13}  notes",
    ]
    for r in REPORTS:
        recover = "-" if r.recovery_seconds is None else f"{r.recovery_seconds:.1f}"
        notes = ", ".join(f"{k}={v}" for k, v in r.notes.items())
        lines.append(
            f"{r.drill:<34} {r.tasks:>5} {r.batches_created:>7} {recover:>9} "
            f"{r.most_held_by_one_triggerer:>13}  {notes}"
        )
    return "\n".join(lines)
