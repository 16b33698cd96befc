"""The fake model's image and video endpoints, and its failure directives on every endpoint."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import ImagesResponse, Video

from airflow_batch_provider.emulator.fake_model import HANDLERS, execute
from airflow_batch_provider.emulator.validation import BATCH_ENDPOINTS

MSG = [{"role": "user", "content": "{text}"}]
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "gpt-4o-mini", "messages": MSG},
    "/v1/completions": {"model": "gpt-3.5-turbo-instruct", "prompt": "{text}"},
    "/v1/responses": {"model": "gpt-4o-mini", "input": "{text}"},
    "/v1/embeddings": {"model": "text-embedding-3-small", "input": ["{text}"]},
    "/v1/moderations": {"input": "{text}"},
    "/v1/images/generations": {"model": "gpt-image-1", "prompt": "{text}"},
    "/v1/images/edits": {"prompt": "{text}", "images": [{"image_url": "https://example.com/a.png"}]},
    "/v1/videos": {"prompt": "{text}", "seconds": "8"},
}


def body(url: str, text: str) -> dict[str, Any]:
    def fill(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("{text}", text)
        if isinstance(value, list):
            return [fill(v) for v in value]
        if isinstance(value, dict):
            return {k: fill(v) for k, v in value.items()}
        return value

    return fill(BODIES[url])


def test_every_batch_endpoint_has_a_handler() -> None:
    assert set(HANDLERS) == set(BATCH_ENDPOINTS) == set(BODIES)


@pytest.mark.parametrize("url", sorted(BODIES))
@pytest.mark.parametrize(
    ("directive", "status", "code"),
    [
        ("[[emulator:server_error]]", 500, None),
        ("[[emulator:context_length_exceeded]]", 400, "context_length_exceeded"),
    ],
)
def test_failure_directives_work_on_every_endpoint(
    url: str, directive: str, status: int, code: str | None
) -> None:
    assert execute(url, body(url, "fine")).status_code == 200
    outcome = execute(url, body(url, f"hello {directive}"))
    assert outcome.status_code == status
    assert outcome.body["error"]["code"] == code


def test_gpt_image_generation_has_the_spec_shape_and_token_usage() -> None:
    outcome = execute(
        "/v1/images/generations", {"model": "gpt-image-1", "prompt": "a red fox", "n": 2, "quality": "high"}
    )
    parsed = ImagesResponse.model_validate(outcome.body)
    assert parsed.data is not None and len(parsed.data) == 2 and parsed.data[0].b64_json
    assert parsed.usage is not None and parsed.usage.output_tokens == 2 * 4160
    assert parsed.usage.input_tokens_details.text_tokens == parsed.usage.input_tokens
    assert (parsed.quality, parsed.size, parsed.output_format) == ("high", "1024x1024", "png")
    assert execute("/v1/images/generations", {"model": "gpt-image-1", "prompt": "a red fox"}).body[
        "data"
    ] == [{"b64_json": parsed.data[0].b64_json}]  # deterministic content


def test_dall_e_images_are_urls_without_usage_and_dall_e_3_revises_the_prompt() -> None:
    two = ImagesResponse.model_validate(execute("/v1/images/generations", {"prompt": "a fox"}).body)
    assert (
        two.usage is None and two.data is not None and two.data[0].url and two.data[0].revised_prompt is None
    )
    again = ImagesResponse.model_validate(execute("/v1/images/generations", {"prompt": "a fox"}).body)
    assert again.data is not None and again.data[0].url == two.data[0].url
    three = execute("/v1/images/generations", {"model": "dall-e-3", "prompt": "a fox"}).body
    assert three["data"][0]["revised_prompt"] == "a fox"


def test_image_edit_bills_its_input_images_and_rejects_a_bad_reference() -> None:
    outcome = execute("/v1/images/edits", body("/v1/images/edits", "add a hat"))
    parsed = ImagesResponse.model_validate(outcome.body)
    assert parsed.usage is not None and parsed.usage.input_tokens_details.image_tokens > 0
    bad = execute("/v1/images/edits", {"prompt": "x", "images": [{"url": "u"}]})
    assert (bad.status_code, bad.body["error"]["param"]) == (400, "images")
    assert execute("/v1/images/edits", {"prompt": "x"}).body["error"]["param"] == "images"


def test_video_is_a_finished_job_in_the_spec_shape() -> None:
    video = Video.model_validate(execute("/v1/videos", body("/v1/videos", "waves")).body)
    assert (video.object, video.model, video.status, video.progress) == ("video", "sora-2", "completed", 100)
    assert (video.seconds, video.size, video.prompt) == ("8", "720x1280", "waves")
    assert video.id.startswith("video_")
    bad = execute("/v1/videos", {"prompt": "x", "seconds": 8})
    assert (bad.status_code, bad.body["error"]["param"]) == (400, "seconds")


def test_the_emulator_and_the_validator_accept_the_sdks_batch_endpoints() -> None:
    # The emulator imports nothing of the provider, so it keeps its own list: the two must not drift.
    import re
    from pathlib import Path

    import openai.types.batch_create_params as params

    from airflow_batch_provider.batch_file import BATCH_ENDPOINTS as VALIDATOR_ENDPOINTS

    # The endpoints of the SDK's ``endpoint: Required[Literal[...]]`` (read from its source: the
    # annotation is a string under ``from __future__ import annotations``).
    source = Path(params.__file__).read_text()
    literal = re.search(r"endpoint: Required\[\s*Literal\[(.*?)\]", source, re.S)
    assert literal, "the SDK's BatchCreateParams.endpoint is no longer a Literal"
    sdk = set(re.findall(r'"(/v1/[^"]+)"', literal.group(1)))
    assert sdk, literal.group(1)
    assert set(BATCH_ENDPOINTS) == set(VALIDATOR_ENDPOINTS)
    assert sdk <= set(BATCH_ENDPOINTS), sdk - set(BATCH_ENDPOINTS)
