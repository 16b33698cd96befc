"""The wait policy: when to poll again, when to give up.

Pure: no Airflow, no HTTP, no clock of its own (callers pass ``now``). One policy for the
three ways of waiting, so they behave the same by construction: the trigger (deferred),
the submit operator's synchronous wait and the sensor's pokes.

- After an answered poll the interval starts at ``poll_interval`` whenever something
  changed and grows by :data:`BACKOFF` while nothing does, up to ``max_poll_interval``.
- After a poll that failed transiently (429, 5xx, network: see
  :mod:`~airflow_batch_provider.waiting.transient`) the delay is ``poll_interval *
  BACKOFF ** n`` for the ``n``-th failure in a row (up to ``max_poll_interval``) and at
  least the Retry-After the service sent; past ``max_transient_errors`` failures in a row
  the wait gives up.
- Every delay is jittered by +-:data:`JITTER` and never runs past the deadline.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["BACKOFF", "JITTER", "WaitPolicy"]

#: Growth of the poll interval while nothing changes, and of the delay after failures.
BACKOFF = 1.5
#: Relative jitter of every delay (+-10 %), so waits started together drift apart.
JITTER = 0.1


class WaitPolicy:
    """Delays between polls and the end of a wait.

    :param poll_interval: Seconds between polls while batches make progress.
    :param max_poll_interval: Longest delay the backoff reaches.
    :param max_transient_errors: Failed polls in a row tolerated; one more gives up.
    :param deadline: Absolute wall-clock deadline (epoch seconds), or ``None``.
    :param failed_rounds: Failed polls in a row so far (a sensor carries them across reschedules).
    :param uniform: The random source of the jitter (``random.uniform``; tests pass their own).
    """

    def __init__(
        self,
        poll_interval: float,
        max_poll_interval: float,
        *,
        max_transient_errors: int = 10,
        deadline: float | None = None,
        failed_rounds: int = 0,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be > 0 seconds, got {poll_interval!r}.")
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = max(float(max_poll_interval), self.poll_interval)
        self.max_transient_errors = int(max_transient_errors)
        self.deadline = deadline
        self.failed_rounds = int(failed_rounds)
        self.interval = self.poll_interval
        self._uniform = uniform

    def after_poll(self, *, changed: bool) -> float:
        """A poll was answered: the delay before the next one (not jittered).

        :param changed: Whether the batches' statuses or counts changed since the last answer.
        """
        self.failed_rounds = 0
        self.interval = (
            self.poll_interval if changed else min(self.interval * BACKOFF, self.max_poll_interval)
        )
        return self.interval

    def after_transient_error(self, retry_after: float | None = None) -> float | None:
        """A poll failed transiently: the delay before the next one, or ``None`` to give up.

        :param retry_after: Seconds the service asked to wait, if it did.
        """
        self.failed_rounds += 1
        if self.failed_rounds > self.max_transient_errors:
            return None
        delay = min(self.poll_interval * BACKOFF**self.failed_rounds, self.max_poll_interval)
        return max(delay, retry_after or 0.0)

    def jittered(self, delay: float) -> float:
        """``delay`` times a random factor in ``[1 - JITTER, 1 + JITTER]``."""
        return delay * self._uniform(1 - JITTER, 1 + JITTER)

    def expired(self, now: float) -> bool:
        """Whether the deadline has passed."""
        return self.deadline is not None and now >= self.deadline

    def time_left(self, now: float, grace: float = 0.0) -> float | None:
        """Seconds until the deadline plus ``grace``, never negative; ``None`` without a deadline."""
        if self.deadline is None:
            return None
        return max(self.deadline - now, 0.0) + grace

    def sleep_for(self, delay: float, now: float) -> float:
        """``delay``, cut short at the deadline."""
        left = self.time_left(now)
        return delay if left is None else min(delay, left)
