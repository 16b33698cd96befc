"""Timing profiles: how fast batches move through their lifecycle.

``instant`` runs a batch as fast as the machine allows (tests), ``fast`` takes a
few seconds (local development), ``realistic`` looks like the real service in a
demo. Every value can be overridden on its own (CLI flags or ``running_emulator``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

DAY = 24 * 3600


@dataclass(frozen=True)
class Profile:
    """Lifecycle timing of a batch.

    :param name: profile name.
    :param validation_delay: seconds a batch stays ``validating`` before validation runs.
    :param requests_per_second: execution speed; 0 means as fast as possible.
    :param finalization_delay: seconds a batch stays ``finalizing`` (or ``cancelling``).
    :param completion_window_seconds: seconds after creation when an unfinished batch
        expires; the API only accepts ``"24h"``, this is what it means here.
    """

    name: str
    validation_delay: float
    requests_per_second: float
    finalization_delay: float
    completion_window_seconds: float = DAY


PROFILES: dict[str, Profile] = {
    "instant": Profile("instant", 0.0, 0.0, 0.0),
    "fast": Profile("fast", 0.5, 500.0, 0.5),
    "realistic": Profile("realistic", 10.0, 10.0, 10.0),
}


def resolve_profile(
    name: str = "instant",
    *,
    validation_delay: float | None = None,
    requests_per_second: float | None = None,
    finalization_delay: float | None = None,
    completion_window_seconds: float | None = None,
) -> Profile:
    """Return the named profile with the given values overridden.

    :param name: ``instant``, ``fast`` or ``realistic``.
    :param validation_delay: override, seconds.
    :param requests_per_second: override; 0 for unlimited.
    :param finalization_delay: override, seconds.
    :param completion_window_seconds: override, seconds.
    :raises ValueError: for an unknown name or a negative value.
    """
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}")
    overrides: dict[str, Any] = {
        key: value
        for key, value in {
            "validation_delay": validation_delay,
            "requests_per_second": requests_per_second,
            "finalization_delay": finalization_delay,
            "completion_window_seconds": completion_window_seconds,
        }.items()
        if value is not None
    }
    for key, value in overrides.items():
        if value < 0:
            raise ValueError(f"{key} must be >= 0, got {value}")
    if overrides.get("completion_window_seconds") == 0:
        raise ValueError("completion_window_seconds must be > 0")
    return replace(PROFILES[name], **overrides)
