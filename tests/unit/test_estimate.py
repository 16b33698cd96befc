"""Token estimates and the budget guard (airflow_batch_provider.batch_file.estimate), against real tiktoken.

tiktoken's encoding files come from the offline cache tests/conftest.py seeds; nothing downloads.
"""

from __future__ import annotations

import json
import os

import pytest
import tiktoken

from airflow_batch_provider.batch_file import ShardLimits, iter_lines, plan_shards
from airflow_batch_provider.batch_file import estimate as est
from airflow_batch_provider.batch_file.estimate import (
    APPROXIMATION,
    TokenCounter,
    check_budget,
    encoding_name,
    estimate_file,
    estimate_lines,
    input_tokens,
    output_bound,
    parse_budget,
)
from airflow_batch_provider.exceptions import BudgetExceededError
from tests import tiktoken_cache

# The OpenAI cookbook's example ("How to count tokens with tiktoken"): the API billed 129
# prompt tokens on gpt-3.5-turbo / gpt-4-0613 and 124 on gpt-4o / gpt-4o-mini.
COOKBOOK_MESSAGES = [
    {
        "role": "system",
        "content": "You are a helpful, pattern-following assistant that translates corporate jargon "
        "into plain English.",
    },
    {"role": "system", "name": "example_user", "content": "New synergies will help drive top-line growth."},
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Things working well together will increase revenue.",
    },
    {
        "role": "system",
        "name": "example_user",
        "content": "Let's circle back when we have more bandwidth to touch base on opportunities for "
        "increased leverage.",
    },
    {
        "role": "system",
        "name": "example_assistant",
        "content": "Let's talk later when we're less busy about how to do better.",
    },
    {
        "role": "user",
        "content": "This late pivot means we don't have time to boil the ocean for the client deliverable.",
    },
]

TEXTS = [
    "Hello, world!",
    "Classify the review: 'The café was déjà vu — naïve but great.' 東京 データ 요약 данные",
    "  leading spaces,\ttabs\nand\r\nnewlines   trailing  ",
    "numbers 1234567 and 3.14159, emoji 🎉🚀, code `x = f(y) -> z;`",
    "<|endoftext|> is text here, not a special token",
]


def _cookbook(messages: list[dict], encoding: tiktoken.Encoding) -> int:
    """The cookbook's num_tokens_from_messages for current models, verbatim in spirit."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode(value, disallowed_special=()))  # special tokens as text
            if key == "name":
                total += 1
    return total + 3


def _line(body: dict, url: str = "/v1/chat/completions", custom_id: str = "r") -> bytes:
    return (json.dumps({"custom_id": custom_id, "method": "POST", "url": url, "body": body}) + "\n").encode()


def test_the_tests_run_offline_with_tiktokens_own_files() -> None:
    cache = os.environ["TIKTOKEN_CACHE_DIR"]
    for name in ("o200k_base", "cl100k_base"):
        path = tiktoken_cache.cache_path(cache, name)
        with open(path, "rb") as handle:
            import hashlib

            assert hashlib.sha256(handle.read()).hexdigest() == tiktoken_cache.expected_hash(name)
    assert TokenCounter("o200k_base").exact and TokenCounter("cl100k_base").exact


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5", "o200k_base"),
        ("o1", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("o4-mini", "o200k_base"),
        ("ft:gpt-4o-mini:org::abc", "o200k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("text-embedding-ada-002", "cl100k_base"),
    ],
)
def test_encoding_by_model_family(model: str, encoding: str) -> None:
    assert encoding_name(model) == (encoding, True)
    # tiktoken's own table agrees wherever it knows the model
    try:
        assert tiktoken.encoding_name_for_model(model.removeprefix("ft:").split(":")[0]) == encoding
    except KeyError:
        pass


@pytest.mark.parametrize(
    ("model", "expected"), [("gpt-3.5-turbo", 129), ("gpt-4-0613", 129), ("gpt-4o", 124)]
)
def test_chat_counts_match_the_cookbook_and_the_api(model: str, expected: int) -> None:
    enc_name, _ = encoding_name(model)
    counted, media = input_tokens(
        "/v1/chat/completions", {"messages": COOKBOOK_MESSAGES}, TokenCounter(enc_name)
    )
    assert (counted, media) == (expected, False)
    assert counted == _cookbook(COOKBOOK_MESSAGES, tiktoken.get_encoding(enc_name))


@pytest.mark.parametrize("encoding", ["o200k_base", "cl100k_base"])
def test_chat_responses_and_embeddings_counts_equal_direct_tiktoken(encoding: str) -> None:
    enc, count = tiktoken.get_encoding(encoding), TokenCounter(encoding)
    n = lambda text: len(enc.encode_ordinary(text))  # noqa: E731
    messages = [{"role": "system", "content": TEXTS[0]}] + [{"role": "user", "content": t} for t in TEXTS[1:]]
    assert input_tokens("/v1/chat/completions", {"messages": messages}, count)[0] == _cookbook(messages, enc)
    # content parts: the text parts count, as a plain string would
    parts = [{"role": "user", "content": [{"type": "text", "text": t} for t in TEXTS]}]
    assert input_tokens("/v1/chat/completions", {"messages": parts}, count)[0] == (
        3 + n("user") + sum(n(t) for t in TEXTS) + 3
    )
    # responses: instructions and each input message count as messages do
    body = {"instructions": TEXTS[0], "input": TEXTS[1]}
    assert input_tokens("/v1/responses", body, count)[0] == (
        3 + (3 + n("developer") + n(TEXTS[0])) + (3 + n("user") + n(TEXTS[1]))
    )
    items = [{"role": "user", "content": [{"type": "input_text", "text": t}]} for t in TEXTS]
    assert input_tokens("/v1/responses", {"input": items}, count)[0] == 3 + sum(
        3 + n("user") + n(t) for t in TEXTS
    )
    # embeddings: the inputs alone; token ids count their length
    assert input_tokens("/v1/embeddings", {"input": TEXTS}, count)[0] == sum(n(t) for t in TEXTS)
    assert input_tokens("/v1/embeddings", {"input": TEXTS[1]}, count)[0] == n(TEXTS[1])
    assert input_tokens("/v1/embeddings", {"input": [1, 2, 3, 4]}, count)[0] == 4
    assert input_tokens("/v1/embeddings", {"input": [[1, 2], [3]]}, count)[0] == 3
    assert input_tokens("/v1/completions", {"prompt": TEXTS[2]}, count)[0] == n(TEXTS[2])


def test_images_are_not_counted_and_said_so() -> None:
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "what is it?"}, {"type": "image_url"}]}
        ],
    }
    result = estimate_lines([_line(body)])
    assert result.media_requests == 1
    assert any("images" in note for note in result.to_dict()["notes"])


@pytest.mark.parametrize(
    ("endpoint", "body", "default", "expected"),
    [
        ("/v1/chat/completions", {"max_completion_tokens": 100, "max_tokens": 5}, None, (100, "request")),
        ("/v1/chat/completions", {"max_tokens": 50, "n": 3}, None, (150, "request")),
        ("/v1/responses", {"max_output_tokens": 70}, 10, (70, "request")),
        ("/v1/chat/completions", {}, 200, (200, "default_output_tokens")),
        ("/v1/chat/completions", {}, None, (16_384, "model_max")),
        ("/v1/completions", {}, None, (16, "request")),  # the endpoint's own default max_tokens
        ("/v1/embeddings", {"max_tokens": 9}, 10, (0, "none")),
    ],
)
def test_output_bound(endpoint: str, body: dict, default: int | None, expected: tuple[int, str]) -> None:
    assert output_bound(endpoint, body, "gpt-4o-mini", default) == expected


def test_model_maximum_is_the_bound_without_a_request_maximum() -> None:
    assert output_bound("/v1/chat/completions", {}, "gpt-5-mini", None) == (128_000, "model_max")
    assert output_bound("/v1/chat/completions", {}, "gpt-4.1-2025-04-14", None) == (32_768, "model_max")


def test_estimate_prices_at_the_batch_rate_per_shard() -> None:
    lines = [
        _line(
            {"model": "gpt-4o-mini", "max_tokens": 10, "messages": [{"role": "user", "content": f"q {i}"}]},
            custom_id=f"c{i}",
        )
        for i in range(5)
    ]
    shards = plan_shards(iter(lines), ShardLimits(max_requests=2))
    result = estimate_lines(lines, shards=shards)
    data = result.to_dict()
    enc = tiktoken.get_encoding("o200k_base")
    per_request = 3 + len(enc.encode("user")) + 3  # + content
    expected_in = sum(per_request + len(enc.encode(f"q {i}")) for i in range(5))
    assert data["input_tokens"] == expected_in and data["output_tokens_bound"] == 50
    # gpt-4o-mini standard $0.15 / $0.60 per 1M -> batch $0.075 / $0.30
    assert data["cost_low_usd"] == round(expected_in * 0.075 / 1e6, 6)
    assert data["cost_high_usd"] == round((expected_in * 0.075 + 50 * 0.30) / 1e6, 6)
    assert data["prices"]["gpt-4o-mini"] == {
        "matched": "gpt-4o-mini",
        "per_1m": {"input": 0.075, "cached_input": 0.0375, "output": 0.3},
        "source": "built-in",
    }
    assert data["tokenizer"] == "o200k_base" and data["exact"] is True
    assert [s["requests"] for s in data["shards"]] == [2, 2, 1]
    assert sum(s["input_tokens"] for s in data["shards"]) == expected_in
    assert len(data["largest_requests"]) == 5


def test_model_override_and_price_override() -> None:
    lines = [
        _line({"model": "gpt-4o-mini", "max_tokens": 1000, "messages": [{"role": "user", "content": "x"}]})
    ]
    data = estimate_lines(
        lines, model="my-model", prices={"my-model": {"input": 1.0, "output": 2.0}}
    ).to_dict()
    assert data["model"] == "my-model" and data["price_source"] == "override"
    assert data["cost_high_usd"] == round((data["input_tokens"] * 1.0 + 1000 * 2.0) / 1e6, 6)
    assert any("not in the tokenizer table" in n for n in data["notes"])


def test_without_encodings_the_approximation_is_labelled_and_the_guard_still_works(monkeypatch) -> None:
    monkeypatch.setattr(est, "_ENCODINGS", {})
    monkeypatch.setattr(est, "_UNAVAILABLE", {})
    import tiktoken as real

    def offline(name: str):
        raise ConnectionError("no network")

    monkeypatch.setattr(real, "get_encoding", offline)
    text = "x" * 400  # 400 bytes -> 100 tokens by the approximation
    lines = [_line({"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": text}]})]
    result = estimate_lines(lines)
    data = result.to_dict()
    assert data["exact"] is False and data["tokenizer"] == APPROXIMATION
    assert any("approximation" in n for n in data["notes"])
    assert data["input_tokens"] == 3 + 1 + 100 + 3  # "user" is 4 bytes -> 1
    with pytest.raises(BudgetExceededError, match="approximation"):
        check_budget(result, 0.0)


def test_guard_message_names_estimate_budget_and_contributors() -> None:
    lines = [
        _line({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi " * i}]}, custom_id=f"id-{i}")
        for i in range(1, 4)
    ]
    result = estimate_lines(lines)
    low, high = result.cost_range
    assert low is not None and high is not None
    check_budget(result, None)  # no guard
    check_budget(result, high)  # at the bound: fine
    with pytest.raises(BudgetExceededError) as err:
        check_budget(result, high / 2)
    text = str(err.value)
    assert f"max_cost_usd={high / 2:g}" in text and "nothing was uploaded" in text
    assert "model gpt-4o: 3 requests" in text and f"{result.input_tokens:,} input tokens" in text
    assert "output bound 49,152" in text and "model_max=3" in text  # 3 x 16,384, no max_tokens set
    assert "custom_id 'id-3'" in text and "max_completion_tokens" in text
    assert err.value.budget == high / 2 and err.value.estimate["input_tokens"] == result.input_tokens


def test_an_unpriced_model_fails_the_guard_closed() -> None:
    result = estimate_lines([_line({"model": "mystery", "max_tokens": 1, "messages": []})])
    assert result.cost_range == (None, None)
    with pytest.raises(BudgetExceededError, match="no price is known for 'mystery'.*prices="):
        check_budget(result, 100.0)


@pytest.mark.parametrize(
    ("value", "expected"), [(None, None), ("None", None), ("", None), ("2.5", 2.5), (3, 3.0)]
)
def test_parse_budget(value: object, expected: float | None) -> None:
    assert parse_budget(value) == expected


@pytest.mark.parametrize("value", ["-1", "lots", float("nan"), float("inf")])
def test_parse_budget_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="max_cost_usd must be a non-negative number"):
        parse_budget(value)


def test_invalid_lines_are_skipped_and_counted(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"{not json\n" + _line({"model": "gpt-4o", "max_tokens": 1, "messages": []}) + b"\n")
    result = estimate_file(path)
    assert result.requests == 1 and result.skipped_lines == 1


def test_repeated_strings_are_counted_from_the_cache_with_the_same_result() -> None:
    count = TokenCounter("o200k_base")
    enc = tiktoken.get_encoding("o200k_base")
    for text in TEXTS * 3:
        assert count(text) == len(enc.encode_ordinary(text))
    for i in range(est._CACHE_ENTRIES + 10):  # bounded: memory stays flat
        count(f"text {i}")
    assert len(count._cache) <= est._CACHE_ENTRIES


def test_iter_lines_stream_is_estimated_once(tmp_path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(
        b"".join(
            _line({"model": "text-embedding-3-small", "input": TEXTS}, "/v1/embeddings") for _ in range(3)
        )
    )
    with path.open("rb") as handle:
        result = estimate_lines(iter_lines(handle, chunk_size=7))
    enc = tiktoken.get_encoding("cl100k_base")
    assert result.input_tokens == 3 * sum(len(enc.encode_ordinary(t)) for t in TEXTS)
    assert result.output_tokens_bound == 0 and result.to_dict()["tokenizer"] == "cl100k_base"
