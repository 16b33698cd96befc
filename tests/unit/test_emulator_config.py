"""Profiles, CLI parsing and the keyword-to-flag mapping of ``running_emulator``."""

from __future__ import annotations

from pathlib import Path

import pytest

from airflow_batch_provider.emulator.profiles import PROFILES, resolve_profile
from airflow_batch_provider.emulator.server import build_parser, settings_from_args
from airflow_batch_provider.emulator.testing import options_to_argv


def test_profiles_and_overrides():
    assert resolve_profile("instant") == PROFILES["instant"]
    assert PROFILES["realistic"].requests_per_second < PROFILES["fast"].requests_per_second
    profile = resolve_profile("fast", requests_per_second=3, completion_window_seconds=2)
    assert (profile.requests_per_second, profile.completion_window_seconds) == (3, 2)
    assert profile.validation_delay == PROFILES["fast"].validation_delay
    with pytest.raises(ValueError, match="unknown profile"):
        resolve_profile("slow")
    with pytest.raises(ValueError, match=">= 0"):
        resolve_profile("fast", validation_delay=-1)
    with pytest.raises(ValueError, match="> 0"):
        resolve_profile("fast", completion_window_seconds=0)


def test_options_to_argv_round_trips_through_the_parser(tmp_path: Path):
    argv = options_to_argv(
        {
            "requests_per_second": 5,
            "api_keys": ["k1", "k2"],
            "accept_any_key": True,
            "faults": {"routes": {"*": {"error_500": 0.5}}},
            "max_requests": 10,
            "seed": None,
        }
    )
    args = build_parser().parse_args(["--profile", "instant", *argv])
    settings = settings_from_args(args, tmp_path)
    assert settings.profile.requests_per_second == 5
    assert settings.api_keys == ("k1", "k2") and settings.accept_any_key
    assert settings.faults == {"routes": {"*": {"error_500": 0.5}}}
    assert settings.limits.max_requests == 10
    with pytest.raises(TypeError, match="unknown emulator option"):
        options_to_argv({"requests_per_minute": 1})


def test_simple_fault_flags_make_a_wildcard_rule(tmp_path: Path):
    args = build_parser().parse_args(["--fault-429", "0.25", "--retry-after", "2"])
    rule = settings_from_args(args, tmp_path).faults["routes"]["*"]
    assert (rule["error_429"], rule["retry_after"]) == (0.25, 2)
    assert settings_from_args(build_parser().parse_args([]), tmp_path).faults == {}


def test_upstream_needs_a_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(ValueError, match="--upstream-url"):
        settings_from_args(build_parser().parse_args(["--backend", "upstream"]), tmp_path)
    monkeypatch.setenv("EMULATOR_UPSTREAM_API_KEY", "sk-up")
    args = build_parser().parse_args(["--backend", "upstream", "--upstream-url", "http://x/v1"])
    upstream = settings_from_args(args, tmp_path).upstream
    assert upstream is not None and upstream.api_key == "sk-up"
