"""Every batch endpoint end to end: build, validate, submit to the emulator over real HTTP
with the real ``openai`` SDK, fetch the result files, join them to the inputs and price them."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from openai.types import ImagesResponse, Video

from airflow_batch_provider.batch_file import (
    BATCH_ENDPOINTS,
    ImageTemplate,
    build_request_lines,
    validate_lines,
)
from airflow_batch_provider.results import BatchResults, join_results
from tests.integration.emulator_support import start_batch, wait_batch

MSG = [{"role": "user", "content": "{text}"}]
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": MSG},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "{text}"},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "{text}"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": "{text}"},
    "/v1/moderations": {"input": "{text}"},
    "/v1/images/generations": {"model": "dall-e-3", "prompt": "{text}"},
    "/v1/images/edits": {
        "model": "gpt-image-1",
        "prompt": "{text}",
        "images": [{"image_url": "https://example.com/cat.png"}],
    },
    "/v1/videos": {"model": "sora-2", "prompt": "{text}", "seconds": "8"},
}


def lines_for(url: str, texts: list[str]) -> list[bytes]:
    template = json.dumps(BODIES[url])
    out = []
    for i, text in enumerate(texts):
        body = json.loads(template.replace("{text}", text))
        out.append(
            (json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}) + "\n").encode()
        )
    return out


def run(client: Any, url: str, lines: list[bytes]) -> tuple[Any, list[dict[str, Any]], Any]:
    report = validate_lines(lines, endpoint=url)
    assert report.ok, report.format()
    batch = wait_batch(client, start_batch(client, [json.loads(raw) for raw in lines], endpoint=url).id)
    output = client.files.content(batch.output_file_id).read().splitlines(keepends=True)
    errors = (
        client.files.content(batch.error_file_id).read().splitlines(keepends=True)
        if batch.error_file_id
        else []
    )
    joined = io.BytesIO()
    reconciliation = join_results(
        lines, [BatchResults(batch.id, output, errors, status=batch.status)], joined
    )
    results = [json.loads(raw) for raw in joined.getvalue().splitlines()]
    return batch, results, reconciliation


def test_the_cases_cover_every_batch_endpoint() -> None:
    assert set(BODIES) == BATCH_ENDPOINTS


@pytest.mark.parametrize("url", sorted(BODIES))
def test_every_endpoint_runs_joins_and_its_failure_marker_fails_one_request(batch_emulator, url: str) -> None:
    client = batch_emulator.client()
    lines = lines_for(url, ["a red fox", "a blue bird", "boom [[emulator:server_error]]"])
    batch, results, reconciliation = run(client, url, lines)
    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (2, 1)
    assert reconciliation.counts["succeeded"] == 2 and reconciliation.total == 3
    assert reconciliation.retryable == 1  # a 500 is worth retrying
    by_id = {r["custom_id"]: r for r in results}
    assert set(by_id) == {"r0", "r1", "r2"}
    assert by_id["r2"]["status"] != "succeeded"


def _body(result: dict[str, Any]) -> dict[str, Any]:
    return result["response"]


def test_image_results_parse_as_images_response_and_are_priced_per_image(batch_emulator) -> None:
    client = batch_emulator.client()
    batch, results, reconciliation = run(
        client, "/v1/images/generations", lines_for("/v1/images/generations", ["fox", "owl"])
    )
    parsed = ImagesResponse.model_validate(_body(results[0]))
    assert parsed.data is not None and parsed.data[0].url and parsed.data[0].revised_prompt == "fox"
    assert reconciliation.usage.images == 2
    cost = reconciliation.estimate_cost(model="dall-e-3")
    assert cost["usd"] == pytest.approx(2 * 0.040 * 0.5)  # 2 images, batch rate


def test_gpt_image_edit_results_carry_token_usage_priced_with_the_image_input_rate(batch_emulator) -> None:
    client = batch_emulator.client()
    _, results, reconciliation = run(client, "/v1/images/edits", lines_for("/v1/images/edits", ["add a hat"]))
    parsed = ImagesResponse.model_validate(_body(results[0]))
    assert parsed.usage is not None and parsed.usage.input_tokens_details.image_tokens > 0
    usage = reconciliation.usage
    assert (usage.images, usage.image_input_tokens) == (1, parsed.usage.input_tokens_details.image_tokens)
    cost = reconciliation.estimate_cost(model="gpt-image-1")["usd"]
    text = usage.input_tokens - usage.image_input_tokens
    expected = (text * 5.0 + usage.image_input_tokens * 10.0 + usage.output_tokens * 40.0) / 1e6 * 0.5
    assert cost == pytest.approx(expected, abs=1e-6)


def test_video_results_parse_as_video_and_are_priced_per_second(batch_emulator) -> None:
    client = batch_emulator.client()
    _, results, reconciliation = run(client, "/v1/videos", lines_for("/v1/videos", ["waves"]))
    video = Video.model_validate(_body(results[0]))
    assert (video.object, video.seconds, video.status) == ("video", "8", "completed")
    assert reconciliation.usage.video_seconds == 8
    assert reconciliation.estimate_cost()["usd"] == pytest.approx(8 * 0.10 * 0.5)


def test_an_image_template_builds_a_batch_the_emulator_runs(batch_emulator) -> None:
    template = ImageTemplate("gpt-image-1", "A poster of {city}", {"quality": "low"})
    lines = list(build_request_lines([{"city": "Paris"}, {"city": "Oslo"}], template, "city"))
    batch, results, reconciliation = run(batch_emulator.client(), template.endpoint, lines)
    assert batch.request_counts is not None and batch.request_counts.completed == 2
    assert {r["custom_id"] for r in results} == {"Paris", "Oslo"}
    assert reconciliation.usage.output_tokens == 2 * 272  # low quality


def test_the_emulator_rejects_a_line_whose_url_differs_from_the_batch_endpoint(batch_emulator) -> None:
    client = batch_emulator.client()
    rows = [json.loads(raw) for raw in lines_for("/v1/images/generations", ["fox", "owl"])]
    rows[1]["url"] = "/v1/videos"  # a prompt-only body: valid for either endpoint
    lines = [(json.dumps(row) + "\n").encode() for row in rows]
    report = validate_lines(lines, endpoint="/v1/images/generations")
    assert [(p.line, p.code) for p in report.problems] == [(2, "url_mismatch")]
    batch = wait_batch(client, start_batch(client, rows, endpoint="/v1/images/generations").id)
    assert batch.status == "failed"
    assert batch.errors is not None and [(e.code, e.line) for e in batch.errors.data] == [
        ("mismatched_url", 2)
    ]
