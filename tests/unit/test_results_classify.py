"""Classification of batch output/error lines (results.classify)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_batch_provider.results import (
    ResultLine,
    ResultStatus,
    classify,
    is_retryable,
    is_retryable_error,
)
from tests.unit import _results_factory as f

S, F, E, C = ResultStatus.SUCCEEDED, ResultStatus.FAILED, ResultStatus.EXPIRED, ResultStatus.CANCELLED


@pytest.mark.parametrize(
    ("raw", "status", "retryable", "code"),
    [
        pytest.param(f.ok("a"), S, False, None, id="200"),
        pytest.param(f.ok("a", status_code=201), S, False, None, id="201"),
        pytest.param(
            f.http_error("a", 400, "context_length_exceeded"),
            F,
            False,
            "context_length_exceeded",
            id="400-context-length",
        ),
        pytest.param(f.http_error("a", 400, None), F, False, "invalid_request_error", id="400-type-only"),
        pytest.param(f.http_error("a", 404, "model_not_found"), F, False, "model_not_found", id="404"),
        pytest.param(
            f.http_error("a", 429, "rate_limit_exceeded", "requests"),
            F,
            True,
            "rate_limit_exceeded",
            id="429-rate-limit",
        ),
        pytest.param(
            f.http_error("a", 429, "insufficient_quota", "insufficient_quota"),
            F,
            False,
            "insufficient_quota",
            id="429-quota-never",
        ),
        pytest.param(f.http_error("a", 500, None, "server_error"), F, True, "server_error", id="500"),
        pytest.param(f.http_error("a", 503, "overloaded", "server_error"), F, True, "overloaded", id="503"),
        pytest.param(f.http_error("a", 408, None, "timeout"), F, True, "timeout", id="408"),
        pytest.param(f.ok("a", {"unexpected": True}, 502), F, True, "http_502", id="502-no-error-body"),
        pytest.param(f.expired("a"), E, True, "batch_expired", id="expired"),
        pytest.param(f.cancelled("a"), C, False, "batch_cancelled", id="cancelled"),
        pytest.param(f.error("a", "request_cancelled"), C, False, "request_cancelled", id="cancelled-alt"),
        pytest.param(f.error("a", "rate_limit_exceeded"), F, True, "rate_limit_exceeded", id="err-rate"),
        pytest.param(f.error("a", "token_limit_exceeded"), F, True, "token_limit_exceeded", id="err-tokens"),
        pytest.param(f.error("a", "server_error"), F, True, "server_error", id="err-server"),
        pytest.param(
            f.error("a", "invalid_request_error"), F, False, "invalid_request_error", id="err-invalid"
        ),
        pytest.param(f.error("a", None), F, False, None, id="err-no-code"),
        pytest.param(
            f.dumps({"custom_id": "a", "response": None, "error": None}),
            F,
            False,
            "empty_result",
            id="neither",
        ),
    ],
)
def test_classify(raw: bytes, status: ResultStatus, retryable: bool, code: str | None) -> None:
    outcome = classify(ResultLine.parse(raw))
    assert outcome.status is status
    assert outcome.retryable is retryable
    if code is not None or status is not F:
        assert outcome.code == code


def test_418_odd_body_code_falls_back_to_http_status() -> None:
    outcome = classify(ResultLine.parse(f.ok("a", {"x": 1}, 418)))
    assert (outcome.code, outcome.status_code, outcome.retryable) == ("http_418", 418, False)


def test_failed_response_keeps_message_type_param_and_status_code() -> None:
    raw = f.ok(
        "a",
        {
            "error": {
                "message": "too long",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        },
        400,
    )
    err = classify(ResultLine.parse(raw)).error_dict()
    assert err == {
        "code": "context_length_exceeded",
        "message": "too long",
        "type": "invalid_request_error",
        "param": "messages",
        "status_code": 400,
        "retryable": False,
    }


def test_success_has_no_error_dict() -> None:
    assert classify(ResultLine.parse(f.ok("a"))).error_dict() is None


def test_cancelled_is_retryable_only_when_cancelled_by_our_deadline() -> None:
    line = ResultLine.parse(f.cancelled("a"))
    assert classify(line).retryable is False
    assert classify(line, retry_cancelled=True).retryable is True


def test_never_retry_code_wins_over_retryable_status() -> None:
    assert is_retryable_error(500, "context_length_exceeded") is False
    assert is_retryable_error(429, None) is True
    assert is_retryable_error(400, None) is False
    assert is_retryable_error(None, None) is False


def test_parse_ignores_extra_fields_and_trailing_newline() -> None:
    line = ResultLine.parse(
        b'{"id": "r1", "custom_id": "q", "extra": 1, "response": null, '
        b'"error": {"code": "batch_expired", "message": "m"}}\r\n'
    )
    assert (line.id, line.custom_id, line.error and line.error.code) == ("r1", "q", "batch_expired")


@pytest.mark.parametrize("raw", [b"not json", b'{"response": null}', b'{"custom_id": 3}', b"[]"])
def test_parse_rejects_non_result_lines(raw: bytes) -> None:
    with pytest.raises(ValidationError):
        ResultLine.parse(raw)


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status": "succeeded", "error": None}, False),
        ({"status": "expired", "error": {"code": "batch_expired", "retryable": True}}, True),
        ({"status": "failed", "error": {"code": "context_length_exceeded", "retryable": False}}, False),
        ({"status": "missing", "error": {"code": "missing", "retryable": False}}, False),
        ({"status": "failed"}, False),
    ],
)
def test_is_retryable_on_results_lines(result: dict, expected: bool) -> None:
    assert is_retryable(result) is expected
