"""Fault rules: parsing, route names and the dice."""

from __future__ import annotations

import pytest

from airflow_batch_provider.emulator.errors import APIError
from airflow_batch_provider.emulator.faults import Faults, route_name
from airflow_batch_provider.emulator.stats import Stats


@pytest.mark.parametrize(
    ("method", "path", "name"),
    [
        ("POST", "/v1/files", "files.create"),
        ("GET", "/v1/files/file-1/content", "files.content"),
        ("GET", "/v1/files/file-1", "files.retrieve"),
        ("DELETE", "/v1/files/file-1", "files.delete"),
        ("GET", "/v1/batches", "batches.list"),
        ("POST", "/v1/batches/batch_1/cancel", "batches.cancel"),
        ("POST", "/v1/chat/completions", "inference"),
        ("GET", "/_emulator/stats", None),
    ],
)
def test_route_names(method, path, name):
    assert route_name(method, path) == name


def test_always_failing_route_respects_its_budget():
    stats = Stats()
    faults = Faults(
        stats, {"routes": {"batches.retrieve": {"error_429": 1.0, "retry_after": 0.5, "max_faults": 2}}}
    )
    decisions = [faults.decide("batches.retrieve") for _ in range(4)]
    assert [d.status for d in decisions] == [429, 429, None, None]
    assert decisions[0].retry_after == 0.5
    assert faults.decide("files.list").status is None  # no rule, no wildcard
    assert stats.faults_injected == 2
    assert faults.snapshot()["routes"]["batches.retrieve"]["injected"] == 2


def test_rates_are_seeded_and_roughly_honoured():
    def run() -> list[int | None]:
        faults = Faults(Stats(), {"seed": 7, "routes": {"*": {"error_500": 0.3, "error_503": 0.2}}})
        return [faults.decide("batches.list").status for _ in range(1000)]

    first = run()
    assert first == run()
    assert 250 < first.count(500) < 350 and 150 < first.count(503) < 250


def test_bare_spec_means_every_route_and_empty_clears():
    faults = Faults(Stats())
    faults.configure({"latency": 0.1})
    assert faults.decide("files.create").latency == 0.1
    faults.configure({})
    assert faults.rules == {}


def test_cut_off_only_on_content_downloads():
    faults = Faults(Stats(), {"routes": {"*": {"cut_off": 1.0}}})
    assert faults.decide("files.content").cut_off
    assert not faults.decide("files.retrieve").cut_off


@pytest.mark.parametrize(
    "config",
    [
        {"routes": {"nope": {}}},
        {"routes": {"*": {"error_500": 2}}},
        {"routes": {"*": {"error_500": 0.6, "error_429": 0.6}}},
        {"routes": {"*": {"explode": 1}}},
        {"routes": {"*": {"latency": -1}}},
        [],
    ],
)
def test_invalid_configs_are_400(config):
    with pytest.raises(APIError) as err:
        Faults(Stats()).configure(config)
    assert err.value.status == 400
