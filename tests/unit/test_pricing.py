"""Usage normalization and estimated Batch API cost (pricing)."""

from __future__ import annotations

import pytest

from airflow_batch_provider.pricing import (
    BATCH_DISCOUNT,
    BATCH_PRICES,
    PRICES_AS_OF,
    STANDARD_PRICES,
    ModelPrice,
    Usage,
    estimate_cost,
    format_usd,
    match_price,
)

M = 1_000_000


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(
            {
                "prompt_tokens": 50,
                "completion_tokens": 10,
                "total_tokens": 60,
                "prompt_tokens_details": {"cached_tokens": 20, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
            (1, 50, 20, 10, 4, 60),
            id="chat",
        ),
        pytest.param(
            {
                "input_tokens": 100,
                "input_tokens_details": {"cached_tokens": 40},
                "output_tokens": 30,
                "output_tokens_details": {"reasoning_tokens": 20},
                "total_tokens": 130,
            },
            (1, 100, 40, 30, 20, 130),
            id="responses",
        ),
        pytest.param({"prompt_tokens": 8, "total_tokens": 8}, (1, 8, 0, 0, 0, 8), id="embeddings"),
        pytest.param(
            {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
            (1, 5, 0, 7, 0, 12),
            id="completions",
        ),
        pytest.param({"prompt_tokens": 5, "completion_tokens": 7}, (1, 5, 0, 7, 0, 12), id="no-total"),
        pytest.param(
            {"prompt_tokens": None, "completion_tokens": "x", "prompt_tokens_details": None},
            (1, 0, 0, 0, 0, 0),
            id="junk-values",
        ),
        pytest.param(None, (0, 0, 0, 0, 0, 0), id="none"),
    ],
)
def test_usage_shapes(usage, expected) -> None:
    u = Usage.from_usage(usage)
    assert (
        u.responses,
        u.input_tokens,
        u.cached_tokens,
        u.output_tokens,
        u.reasoning_tokens,
        u.total_tokens,
    ) == expected


def test_usage_from_body_and_add() -> None:
    total = Usage()
    total.add(Usage.from_body({"usage": {"prompt_tokens": 3, "completion_tokens": 2}}))
    total.add(Usage.from_body({"results": []}))  # moderation: no usage
    total.add(Usage.from_body("not a body"))
    total.add(Usage.from_body({"usage": {"input_tokens": 4, "output_tokens": 1}}))
    assert total.to_dict() == {
        "responses": 2,
        "input_tokens": 7,
        "cached_tokens": 0,
        "output_tokens": 3,
        "reasoning_tokens": 0,
        "total_tokens": 10,
    }


def test_batch_prices_are_half_the_standard_ones() -> None:
    assert BATCH_DISCOUNT == 0.5
    for model, std in STANDARD_PRICES.items():
        batch = BATCH_PRICES[model]
        assert batch.input == pytest.approx(std.input / 2) and batch.output == pytest.approx(std.output / 2)
    assert BATCH_PRICES["gpt-4o"] == ModelPrice(1.25, 5.0, 0.625)
    required = [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o3",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
        "omni-moderation",
    ]
    assert set(required) <= set(BATCH_PRICES)


@pytest.mark.parametrize(
    ("model", "matched"),
    [
        ("gpt-4o", "gpt-4o"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("gpt-4.1-2025-04-14", "gpt-4.1"),
        ("o3-2025-04-16", "o3"),
        ("o3-mini-2025-01-31", "o3-mini"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("gpt-5-nano-2025-08-07", "gpt-5-nano"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("omni-moderation-latest", "omni-moderation"),
        ("text-embedding-3-large", "text-embedding-3-large"),
        ("gpt-4omni", None),  # a prefix only counts at a "-" boundary
        ("ft:gpt-4o-mini:org::abc", None),
        ("llama3", None),
        ("", None),
        (None, None),
    ],
)
def test_longest_prefix_matching(model, matched) -> None:
    found = match_price(model)
    assert (found[0] if found else None) == matched


def test_estimate_cost_uses_cached_and_output_rates() -> None:
    usage = {"prompt_tokens": 2 * M, "completion_tokens": M, "prompt_tokens_details": {"cached_tokens": M}}
    cost = estimate_cost("gpt-4o-mini-2024-07-18", usage)
    # 1M uncached at 0.075 + 1M cached at 0.0375 + 1M output at 0.30
    assert cost["usd"] == pytest.approx(0.4125)
    assert cost["matched"] == "gpt-4o-mini" and cost["source"] == "built-in" and cost["basis"] == "batch"
    assert cost["price_per_1m"] == {"input": 0.075, "cached_input": 0.0375, "output": 0.3}
    assert cost["as_of"] == PRICES_AS_OF and PRICES_AS_OF in cost["note"]


def test_estimate_cost_model_without_cache_discount_bills_cached_as_input() -> None:
    cost = estimate_cost("o3-pro", Usage(1, input_tokens=M, cached_tokens=M))
    assert cost["usd"] == pytest.approx(10.0)
    assert cost["price_per_1m"]["cached_input"] == 10.0


def test_estimate_cost_reasoning_is_already_in_output_tokens() -> None:
    usage = {"input_tokens": 0, "output_tokens": M, "output_tokens_details": {"reasoning_tokens": M}}
    assert estimate_cost("o4-mini", usage)["usd"] == pytest.approx(2.2)


def test_embeddings_and_moderation() -> None:
    assert estimate_cost("text-embedding-3-small", {"prompt_tokens": M, "total_tokens": M})["usd"] == 0.01
    assert estimate_cost("text-embedding-ada-002", {"prompt_tokens": M})["usd"] == 0.05
    assert estimate_cost("omni-moderation-2024-09-26", Usage(1, input_tokens=M))["usd"] == 0.0


def test_unknown_model_is_not_an_error() -> None:
    cost = estimate_cost("my-vllm-model", {"prompt_tokens": 10})
    assert cost["usd"] is None and cost["matched"] is None
    assert "my-vllm-model" in cost["note"] and "prices=" in cost["note"]


def test_overrides_extend_and_replace_and_win_by_longest_prefix() -> None:
    usage = Usage(1, input_tokens=M, output_tokens=M)
    prices = {
        "gpt-4o-mini": {"input": 1.0, "output": 2.0},
        "my-model": ModelPrice(0.5, 0.5, 0.1),
        "gpt-4o-mini-2024-07-18": {"input": 3.0, "cached_input": 1.0, "output": 4.0},
    }
    assert estimate_cost("gpt-4o-mini", usage, prices)["usd"] == 3.0
    exact = estimate_cost("gpt-4o-mini-2024-07-18", usage, prices)
    assert exact["usd"] == 7.0 and exact["source"] == "override" and exact["note"] is None
    assert estimate_cost("my-model-v2", usage, prices)["usd"] == 1.0
    assert estimate_cost("gpt-4o", usage, prices)["source"] == "built-in"


@pytest.mark.parametrize("bad", [{"output": 1.0}, {"input": "cheap"}, 3.0])
def test_malformed_override_says_what_to_pass(bad) -> None:
    with pytest.raises(ValueError, match=r"prices\['m'\] must be a mapping like"):
        estimate_cost("m", Usage(), {"m": bad})


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (None, "unknown"),
        (0, "$0.00"),
        (0.000052, "<$0.01"),
        (5.2e-9, "<$0.01"),
        (0.01, "$0.01"),
        (0.354, "$0.35"),
        (1234.5, "$1,234.50"),
    ],
)
def test_format_usd_is_readable(amount, text):
    assert format_usd(amount) == text
    assert "e-" not in format_usd(amount)
