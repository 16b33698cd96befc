"""The one wait policy (waiting/policy.py) driven directly, and the one transient list and
Retry-After cap (waiting/transient.py) the hook, the trigger and the results share."""

from __future__ import annotations

import httpx2
import openai
import pytest

from airflow_batch_provider.hooks import openai_batch as hook_module
from airflow_batch_provider.results.join import is_retryable_error
from airflow_batch_provider.triggers import openai_batch as trigger_module
from airflow_batch_provider.waiting import policy as policy_module
from airflow_batch_provider.waiting.policy import BACKOFF, JITTER, WaitPolicy
from airflow_batch_provider.waiting.transient import (
    MAX_RETRY_AFTER,
    TRANSIENT_STATUSES,
    is_transient_status,
    retry_after,
)


def _status_error(status: int, headers: dict[str, str] | None = None, code: str | None = None) -> Exception:
    request = httpx2.Request("GET", "http://service/v1/batches/b")
    response = httpx2.Response(status, request=request, headers=headers or {})
    return openai.APIStatusError(f"status {status}", response=response, body={"code": code})


def test_the_interval_backs_off_while_nothing_changes_and_restarts_on_a_change() -> None:
    policy = WaitPolicy(2.0, 10.0)
    assert [policy.after_poll(changed=False) for _ in range(5)] == [3.0, 4.5, 6.75, 10.0, 10.0]
    assert policy.after_poll(changed=True) == 2.0
    assert policy.after_poll(changed=False) == 2.0 * BACKOFF


def test_transient_failures_back_off_honour_retry_after_then_give_up() -> None:
    policy = WaitPolicy(1.0, 5.0, max_transient_errors=3)
    assert policy.after_transient_error() == 1.5
    assert policy.after_transient_error(retry_after=4.0) == 4.0  # the service asked for longer
    assert policy.after_transient_error(retry_after=0.5) == min(1.0 * BACKOFF**3, 5.0)
    assert policy.failed_rounds == 3
    assert policy.after_transient_error() is None  # the fourth in a row: give up
    # An answered poll ends the streak.
    policy.after_poll(changed=False)
    assert policy.failed_rounds == 0 and policy.after_transient_error() == 1.5


def test_a_streak_carried_over_continues() -> None:
    """The sensor carries its failed pokes across reschedules."""
    assert (
        WaitPolicy(1.0, 100.0, max_transient_errors=3, failed_rounds=2).after_transient_error() == BACKOFF**3
    )
    assert WaitPolicy(1.0, 100.0, max_transient_errors=3, failed_rounds=3).after_transient_error() is None


def test_jitter_stays_within_its_band() -> None:
    low = WaitPolicy(1.0, 1.0, uniform=lambda a, b: a)
    high = WaitPolicy(1.0, 1.0, uniform=lambda a, b: b)
    assert low.jittered(10.0) == pytest.approx(10.0 * (1 - JITTER))
    assert high.jittered(10.0) == pytest.approx(10.0 * (1 + JITTER))


def test_the_deadline_cuts_the_sleep_and_ends_the_wait() -> None:
    policy = WaitPolicy(30.0, 300.0, deadline=1000.0)
    assert policy.sleep_for(30.0, now=990.0) == 10.0
    assert policy.sleep_for(30.0, now=1005.0) == 0.0
    assert policy.time_left(990.0, grace=5.0) == 15.0
    assert not policy.expired(999.9) and policy.expired(1000.0)
    assert WaitPolicy(30.0, 300.0).sleep_for(30.0, now=1e12) == 30.0
    assert WaitPolicy(30.0, 300.0).time_left(0.0) is None


def test_a_max_below_the_interval_is_raised_to_it_and_a_zero_interval_refused() -> None:
    assert WaitPolicy(5.0, 1.0).after_poll(changed=False) == 5.0
    with pytest.raises(ValueError, match="poll_interval"):
        WaitPolicy(0.0, 1.0)


def test_every_wait_uses_the_one_policy() -> None:
    """The trigger, the synchronous wait and the sensor build a WaitPolicy: no backoff of their own."""
    import inspect

    from airflow_batch_provider.operators import submit
    from airflow_batch_provider.sensors import openai_batch as sensor

    for module in (trigger_module, submit, sensor):
        source = inspect.getsource(module)
        assert "WaitPolicy(" in source, module.__name__
        assert "* 1.5" not in source and "BACKOFF" not in source, module.__name__
    assert policy_module.BACKOFF == 1.5


# ---- transient statuses and Retry-After -------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses(status: int) -> None:
    assert is_transient_status(status)
    assert hook_module.is_transient_error(_status_error(status))
    assert trigger_module._classify(_status_error(status)) == "transient"
    assert is_retryable_error(status)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_not_transient_statuses(status: int) -> None:
    assert not is_transient_status(status) and status not in TRANSIENT_STATUSES
    assert not hook_module.is_transient_error(_status_error(status))
    assert not is_retryable_error(status)


def test_no_quota_left_is_not_transient() -> None:
    assert not is_transient_status(429, "insufficient_quota")
    assert not hook_module.is_transient_error(_status_error(429, code="insufficient_quota"))


def test_one_retry_after_cap_for_the_hook_and_the_waits() -> None:
    err = _status_error(429, {"retry-after": "100000"})
    assert retry_after(err) == MAX_RETRY_AFTER == 60.0
    assert hook_module._retry_delay(err, attempt=0) == MAX_RETRY_AFTER
    assert retry_after(_status_error(429, {"retry-after-ms": "-5"})) == 0.0
    assert retry_after(_status_error(429, {"retry-after-ms": "x", "retry-after": "2"})) == 2.0
    assert retry_after(_status_error(429, {"retry-after": "not a date"})) is None
