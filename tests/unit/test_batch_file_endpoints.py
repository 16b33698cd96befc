"""Per-endpoint body checks of the validator: every batch endpoint, before upload."""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_batch_provider.batch_file import BATCH_ENDPOINTS, RequestLine, validate_lines

MSG = [{"role": "user", "content": "hi"}]
#: One valid body per endpoint, as the OpenAPI spec's JSON request schemas require.
VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": MSG},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "hi"},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "hi"},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "hi"},
    "/v1/moderations": {"input": "hi"},
    "/v1/images/generations": {"model": "gpt-image-1", "prompt": "a red fox"},
    "/v1/images/edits": {"model": "gpt-image-1", "prompt": "add a hat", "images": [{"file_id": "file-1"}]},
    "/v1/videos": {"model": "sora-2", "prompt": "waves", "seconds": "8", "size": "1280x720"},
}


def line(url: str, body: Any, i: int = 0) -> bytes:
    return (json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}) + "\n").encode()


def problems(url: str, body: Any) -> list[tuple[int | None, str, str]]:
    report = validate_lines([line(url, VALID[url], 0), line(url, body, 1)], endpoint=url)
    return [(p.line, p.code, p.message) for p in report.problems]


def test_the_table_covers_every_batch_endpoint() -> None:
    assert set(VALID) == BATCH_ENDPOINTS


@pytest.mark.parametrize("url", sorted(VALID))
def test_a_valid_body_of_every_endpoint_passes(url: str) -> None:
    report = validate_lines([line(url, VALID[url], i) for i in range(3)], endpoint=url)
    assert report.ok, report.format()
    assert RequestLine.from_json_line(line(url, VALID[url])).endpoint == url


@pytest.mark.parametrize(
    ("url", "drop", "param"),
    [
        ("/v1/chat/completions", "messages", "messages"),
        ("/v1/embeddings", "input", "input"),
        ("/v1/completions", "prompt", "prompt"),
        ("/v1/responses", "input", "input"),
        ("/v1/moderations", "input", "input"),
        ("/v1/images/generations", "prompt", "prompt"),
        ("/v1/images/edits", "images", "images"),
        ("/v1/images/edits", "prompt", "prompt"),
        ("/v1/videos", "prompt", "prompt"),
    ],
)
def test_a_missing_required_parameter_names_line_parameter_and_fix(url: str, drop: str, param: str) -> None:
    body = {k: v for k, v in VALID[url].items() if k != drop}
    [(line_no, code, message)] = problems(url, body)
    assert (line_no, code) == (2, "missing_parameter")
    assert f'body has no "{param}", which {url} requires: add ' in message


@pytest.mark.parametrize(
    ("url", "change", "param", "fix"),
    [
        ("/v1/chat/completions", {"messages": []}, "messages", "non-empty list"),
        ("/v1/chat/completions", {"messages": ["hi"]}, "messages", '"role"'),
        ("/v1/embeddings", {"input": ""}, "input", "a string, a list"),
        ("/v1/moderations", {"input": []}, "input", "a string or a list"),
        ("/v1/images/generations", {"prompt": ""}, "prompt", "non-empty string"),
        ("/v1/images/edits", {"images": []}, "images", "1 to 16"),
        ("/v1/images/edits", {"images": [{"image_url": "u", "file_id": "f"}]}, "images", "exactly one"),
        ("/v1/videos", {"seconds": 8}, "seconds", '"4", "8" or "12"'),
        ("/v1/videos", {"size": "1920x1080"}, "size", "1280x720"),
    ],
)
def test_an_invalid_parameter_names_line_parameter_and_fix(
    url: str, change: dict[str, Any], param: str, fix: str
) -> None:
    [(line_no, code, message)] = problems(url, {**VALID[url], **change})
    assert (line_no, code) == (2, "invalid_parameter")
    assert message.startswith(f'body "{param}" is ') and fix in message


def test_an_image_edit_with_the_multipart_image_field_is_told_to_use_images() -> None:
    body = {"model": "gpt-image-1", "prompt": "add a hat", "image": "photo.png"}
    [(_, code, message)] = problems("/v1/images/edits", body)
    assert code == "invalid_parameter"
    assert '"image" is the multipart upload field' in message and '"images": [{"image_url"' in message


@pytest.mark.parametrize(
    "url", ["/v1/moderations", "/v1/images/generations", "/v1/images/edits", "/v1/videos"]
)
def test_model_is_optional_where_the_api_has_a_default(url: str) -> None:
    body = {k: v for k, v in VALID[url].items() if k != "model"}
    report = validate_lines([line(url, body, 0), line(url, body, 1)], endpoint=url)
    assert report.ok, report.format()
    assert RequestLine.from_json_line(line(url, body)).model  # the documented default


@pytest.mark.parametrize(
    "url", ["/v1/chat/completions", "/v1/embeddings", "/v1/completions", "/v1/responses"]
)
def test_model_stays_required_where_the_api_requires_it(url: str) -> None:
    body = {k: v for k, v in VALID[url].items() if k != "model"}
    assert [(p.line, p.code) for p in validate_lines([line(url, body)]).problems] == [(1, "missing_model")]


def test_a_body_problem_names_the_custom_id_and_the_report_groups_lines() -> None:
    url = "/v1/images/generations"
    report = validate_lines([line(url, {"model": "dall-e-3"}, i) for i in range(3)], endpoint=url)
    assert report.problem_count == 3
    text = report.format()
    assert 'lines 1-3: body has no "prompt", which /v1/images/generations requires' in text


def test_request_line_applies_the_body_checks() -> None:
    with pytest.raises(ValueError, match='body has no "messages"'):
        RequestLine.from_json_line(line("/v1/chat/completions", {"model": "m"}))
