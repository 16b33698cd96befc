"""Azure OpenAI's unversioned urls (``/chat/completions``): opt-in in the validator, RequestLine,
shard planning and ``airflow-batch validate --azure``; still one url string per file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_batch_provider import cli
from airflow_batch_provider.batch_file import (
    BATCH_ENDPOINTS,
    UNVERSIONED_ENDPOINTS,
    RequestLine,
    ShardLimits,
    plan_shards,
    validate_lines,
)

CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


def line(i: int, url: str = "/chat/completions", body: dict[str, Any] | None = None) -> bytes:
    data = {"custom_id": f"q-{i}", "method": "POST", "url": url, "body": body or CHAT_BODY}
    return (json.dumps(data) + "\n").encode()


def embedding_line(i: int, url: str, inputs: list[str]) -> bytes:
    return line(i, url, {"model": "text-embedding-3-small", "input": inputs})


def test_every_endpoint_has_its_unversioned_spelling() -> None:
    assert UNVERSIONED_ENDPOINTS["/chat/completions"] == "/v1/chat/completions"
    assert UNVERSIONED_ENDPOINTS["/embeddings"] == "/v1/embeddings"
    assert set(UNVERSIONED_ENDPOINTS.values()) == BATCH_ENDPOINTS
    assert not any(url.startswith("/v1") for url in UNVERSIONED_ENDPOINTS)


def test_unversioned_urls_are_rejected_by_default_with_the_fix() -> None:
    report = validate_lines([line(0), line(1)])
    assert [(p.line, p.code) for p in report.problems] == [(1, "invalid_url"), (2, "invalid_url")]
    message = report.problems[0].message
    assert message.startswith('url is "/chat/completions", Azure OpenAI\'s unversioned spelling: ')
    assert 'use "/v1/chat/completions"' in message
    assert "airflow-batch validate --azure" in message and "allow_unversioned_urls=True" in message
    assert report.endpoint is None and report.url is None


def test_an_unknown_url_keeps_the_list_of_endpoints() -> None:
    (problem,) = validate_lines([line(0, "/v1/chat")]).problems
    assert "not a batch endpoint: use one of" in problem.message and "Azure" not in problem.message
    (problem,) = validate_lines([line(0, "/chat")], allow_unversioned_urls=True).problems
    assert problem.code == "invalid_url" and "without /v1, as Azure OpenAI spells them" in problem.message


@pytest.mark.parametrize("url", sorted(UNVERSIONED_ENDPOINTS))
def test_opt_in_accepts_each_unversioned_spelling(url: str) -> None:
    body = {"model": "m", "input": "x", "prompt": "x", "messages": [{"role": "user", "content": "x"}]}
    body["images"] = [{"image_url": "https://example.com/a.png"}]  # what every endpoint requires
    report = validate_lines([line(0, url, body), line(1, url, body)], allow_unversioned_urls=True)
    assert report.ok, report.format()
    assert report.endpoint == UNVERSIONED_ENDPOINTS[url] and report.url == url


def test_opt_in_still_accepts_the_v1_spelling() -> None:
    url = "/v1/chat/completions"
    report = validate_lines([line(0, url), line(1, url)], allow_unversioned_urls=True)
    assert report.ok and report.endpoint == report.url == url


def test_mixing_the_spellings_is_a_url_mismatch() -> None:
    for a, b in (
        ("/v1/chat/completions", "/chat/completions"),
        ("/chat/completions", "/v1/chat/completions"),
    ):
        report = validate_lines([line(0, a), line(1, a), line(2, b)], allow_unversioned_urls=True)
        assert [(p.line, p.code) for p in report.problems] == [(3, "url_mismatch")]
        assert report.problems[0].message.startswith(f'url "{b}" differs from {a} (line 1)')
        assert report.url == a and report.endpoint == "/v1/chat/completions"


@pytest.mark.parametrize("declared", ["/v1/chat/completions", "/chat/completions", "chat/completions"])
def test_declared_endpoint_is_compared_in_canonical_form(declared: str) -> None:
    report = validate_lines([line(0), line(1)], endpoint=declared, allow_unversioned_urls=True)
    assert report.ok, report.format()
    assert (report.endpoint, report.url) == ("/v1/chat/completions", "/chat/completions")
    assert "endpoint /v1/chat/completions (spelled /chat/completions)" in report.summary()


def test_another_endpoint_than_the_declared_one_is_a_mismatch_in_either_spelling() -> None:
    report = validate_lines(
        [embedding_line(0, "/embeddings", ["a"])],
        endpoint="/v1/chat/completions",
        allow_unversioned_urls=True,
    )
    [problem] = report.problems
    assert (
        problem.code == "url_mismatch" and "/v1/chat/completions (the declared endpoint)" in problem.message
    )
    assert report.endpoint == "/v1/chat/completions" and report.url is None


def test_embedding_inputs_are_counted_for_the_unversioned_spelling() -> None:
    lines = [embedding_line(0, "/embeddings", ["a", "b", "c"]), embedding_line(1, "/embeddings", ["d"])]
    report = validate_lines(lines, allow_unversioned_urls=True)
    assert report.ok and report.embedding_inputs == 4
    over = validate_lines(lines, allow_unversioned_urls=True, limits=ShardLimits(max_embedding_inputs=3))
    assert [p.code for p in over.problems] == ["too_many_embedding_inputs"]


def test_shards_count_unversioned_embedding_inputs() -> None:
    lines = [embedding_line(i, "/embeddings", ["a", "b"]) for i in range(4)]
    shards = plan_shards(lines, ShardLimits(max_embedding_inputs=4))
    assert [(s.line_count, s.embedding_inputs) for s in shards] == [(2, 4), (2, 4)]


def test_request_line_takes_the_option_as_validation_context() -> None:
    with pytest.raises(ValidationError, match="Azure OpenAI's unversioned spelling"):
        RequestLine.from_json_line(line(0))
    parsed = RequestLine.from_json_line(line(0), allow_unversioned_urls=True)
    assert parsed.url == "/chat/completions" and parsed.endpoint == "/v1/chat/completions"
    assert parsed.to_json_bytes() == json.dumps(json.loads(line(0)), separators=(",", ":")).encode() + b"\n"
    data = json.loads(line(0))
    assert RequestLine.model_validate(data, context={"allow_unversioned_urls": True}).url == data["url"]
    assert (
        RequestLine.from_json_line(line(0, "/v1/embeddings", {"model": "m", "input": "x"})).endpoint
        == "/v1/embeddings"
    )


def test_cli_azure_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "azure.jsonl"
    path.write_bytes(line(0) + line(1))

    assert cli.main(["validate", str(path)]) == cli.EXIT_INVALID
    out = capsys.readouterr().out
    assert 'lines 1-2: url is "/chat/completions", Azure OpenAI\'s unversioned spelling' in out

    assert cli.main(["validate", "--azure", str(path)]) == cli.EXIT_OK
    assert "valid: 2 requests" in capsys.readouterr().out

    assert cli.main(["validate", "--azure", "--json", "--endpoint", "/chat/completions", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["endpoint"] == "/v1/chat/completions" and report["url"] == "/chat/completions"
