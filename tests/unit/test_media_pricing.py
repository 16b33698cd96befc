"""Image and video endpoints: usage units, dated prices, the estimate's bound, templates, UI."""

from __future__ import annotations

import json

import pytest

from airflow_batch_provider.batch_file import ImageTemplate, build_request_lines
from airflow_batch_provider.batch_file.estimate import estimate_lines
from airflow_batch_provider.plugins.pages import tokens
from airflow_batch_provider.pricing import MEDIA_PRICES_AS_OF, Usage, estimate_cost


def test_images_response_without_usage_counts_images_and_is_priced_per_image() -> None:
    usage = Usage.from_body({"created": 1, "data": [{"url": "u"}, {"url": "v"}]})
    assert (usage.responses, usage.images, usage.total_tokens) == (1, 2, 0)
    cost = estimate_cost("dall-e-3", usage)
    assert cost["usd"] == pytest.approx(2 * 0.04 * 0.5)
    assert cost["as_of"] == MEDIA_PRICES_AS_OF and "default size" in cost["note"]


def test_gpt_image_usage_prices_image_input_tokens_at_their_own_rate() -> None:
    body = {
        "created": 1,
        "data": [{"b64_json": "x"}],
        "usage": {
            "input_tokens": 300,
            "input_tokens_details": {"text_tokens": 100, "image_tokens": 200},
            "output_tokens": 1000,
            "total_tokens": 1300,
        },
    }
    usage = Usage.from_body(body)
    assert (usage.images, usage.image_input_tokens, usage.input_tokens) == (1, 200, 300)
    expected = (100 * 5.0 + 200 * 10.0 + 1000 * 40.0) / 1e6 * 0.5
    assert estimate_cost("gpt-image-1", usage)["usd"] == pytest.approx(expected)


def test_video_counts_seconds_and_is_priced_per_second() -> None:
    usage = Usage.from_body(
        {"object": "video", "model": "sora-2-pro", "seconds": "12", "status": "completed"}
    )
    assert (usage.responses, usage.video_seconds) == (1, 12)
    assert estimate_cost("sora-2-pro", usage)["usd"] == pytest.approx(12 * 0.30 * 0.5)


def test_text_usage_keeps_its_dict_shape() -> None:
    assert set(Usage.from_body({"usage": {"prompt_tokens": 1}}).to_dict()) == {
        "responses", "input_tokens", "cached_tokens", "output_tokens", "reasoning_tokens", "total_tokens",
    }  # fmt: skip


def _line(url: str, body: dict[str, object], i: int = 0) -> bytes:
    return (json.dumps({"custom_id": f"r{i}", "method": "POST", "url": url, "body": body}) + "\n").encode()


def test_estimate_bounds_images_from_default_to_dearest_size() -> None:
    lines = [
        _line("/v1/images/generations", {"model": "dall-e-3", "prompt": "fox", "n": 2}, i) for i in range(3)
    ]
    est = estimate_lines(lines, use_tiktoken=False).to_dict()
    assert est["images"] == 6 and est["requests"] == 3
    assert (est["cost_low_usd"], est["cost_high_usd"]) == pytest.approx((6 * 0.02, 6 * 0.06))
    assert any("per image" in note for note in est["notes"])


def test_estimate_of_videos_without_model_uses_the_default_model_and_seconds() -> None:
    est = estimate_lines(
        [_line("/v1/videos", {"prompt": "waves"}), _line("/v1/videos", {"prompt": "x", "seconds": "12"}, 1)]
    )
    data = est.to_dict()
    assert (
        data["video_seconds"],
        data["model"],
        data["skipped_lines"] if "skipped_lines" in data else 0,
    ) == (
        16,
        "sora-2",
        0,
    )
    assert data["cost_low_usd"] == pytest.approx(16 * 0.05)


def test_estimate_bounds_gpt_image_output_by_quality() -> None:
    lines = [_line("/v1/images/generations", {"model": "gpt-image-1", "prompt": "fox", "quality": "low"})]
    est = estimate_lines(lines, use_tiktoken=False)
    assert est.output_tokens_bound == 408 and est.input_tokens > 0


def test_image_template_renders_prompts_and_rejects_a_reserved_key() -> None:
    template = ImageTemplate("gpt-image-1", "A poster of {city}", {"size": "1024x1536"})
    [raw] = build_request_lines([{"city": "Oslo"}], template)
    line = json.loads(raw)
    assert line["url"] == "/v1/images/generations"
    assert line["body"] == {"model": "gpt-image-1", "prompt": "A poster of Oslo", "size": "1024x1536"}
    assert template.fields == {"city"}
    with pytest.raises(ValueError, match="must not set"):
        ImageTemplate("gpt-image-1", "x", {"prompt": "y"})


def test_the_ui_shows_images_and_seconds_when_there_are_no_tokens() -> None:
    assert tokens({"images": 3, "total_tokens": 0}, terminal=True) == "3 images"
    assert tokens({"video_seconds": 24}) == "24 s of video"
    assert tokens({"total_tokens": 10, "input_tokens": 10, "images": 1}).endswith(" · 1 image")
