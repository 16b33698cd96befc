"""Settings of one emulator server, built by the CLI or by ``testing.running_emulator``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_batch_provider.emulator.profiles import Profile, resolve_profile

DEFAULT_API_KEY = "sk-emulator"
MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Service limits; the defaults are the real service's.

    :param max_upload_bytes: largest file ``POST /v1/files`` accepts.
    :param max_batch_bytes: largest batch input file.
    :param max_requests: most requests in one batch.
    :param max_embedding_inputs: most embedding inputs in one ``/v1/embeddings`` batch.
    :param max_reported_errors: most ``errors.data`` entries on a failed batch.
    """

    max_upload_bytes: int = 512 * MB
    max_batch_bytes: int = 200 * MB
    max_requests: int = 50_000
    max_embedding_inputs: int = 50_000
    max_reported_errors: int = 100


@dataclass(frozen=True)
class UpstreamSettings:
    """Where the ``upstream`` backend forwards requests.

    :param base_url: OpenAI-compatible base URL, e.g. ``http://localhost:11434/v1``.
    :param api_key: key sent upstream as a Bearer token (never logged).
    :param concurrency: most requests in flight at once.
    :param timeout: seconds per upstream request.
    :param model: if set, replaces ``body.model`` of every forwarded request.
    """

    base_url: str
    api_key: str | None = None
    concurrency: int = 8
    timeout: float = 600.0
    model: str | None = None


@dataclass(frozen=True)
class Settings:
    """Everything one emulator server needs.

    :param data_dir: where files and batches live (survives restarts).
    :param profile: lifecycle timing.
    :param api_keys: accepted Bearer keys.
    :param accept_any_key: accept any non-empty Bearer key.
    :param backend: ``fake`` or ``upstream``.
    :param upstream: upstream settings, for the ``upstream`` backend.
    :param limits: service limits.
    :param faults: initial fault configuration (``POST /_emulator/faults`` shape).
    :param seed: seed of the fault dice, for reproducible runs.
    """

    data_dir: Path
    profile: Profile = field(default_factory=resolve_profile)
    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    accept_any_key: bool = False
    backend: str = "fake"
    upstream: UpstreamSettings | None = None
    limits: Limits = field(default_factory=Limits)
    faults: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
