"""Counters served at ``GET /_emulator/stats`` (since this server process started)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Stats:
    """What this server process has done so far."""

    files_uploaded: int = 0
    bytes_uploaded: int = 0
    batches_created: int = 0
    batches_cancelled: int = 0
    batches_completed: int = 0
    batches_failed: int = 0
    batches_expired: int = 0
    requests_executed: int = 0
    requests_succeeded: int = 0
    requests_failed: int = 0
    faults_injected: int = 0
    started_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        """The counters as a JSON-ready dict, with uptime."""
        data = asdict(self)
        data["uptime_seconds"] = round(time.time() - self.started_at, 3)
        return data
