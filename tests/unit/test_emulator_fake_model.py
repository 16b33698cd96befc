"""The fake model: bodies parse as the SDK's types, results are deterministic, bad bodies get 400s."""

from __future__ import annotations

import base64
import math
import struct

import pytest
from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from airflow_batch_provider.emulator.fake_model import count_tokens, execute
from airflow_batch_provider.emulator.structured import sample_json

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Is the sky blue?"}]}


def test_chat_echoes_and_counts_tokens():
    outcome = execute("/v1/chat/completions", CHAT)
    parsed = ChatCompletion.model_validate(outcome.body)
    assert outcome.status_code == 200
    assert parsed.choices[0].message.content == "echo: Is the sky blue?"
    assert parsed.usage is not None
    assert parsed.usage.completion_tokens == count_tokens("echo: Is the sky blue?") == outcome.output_tokens
    assert parsed.usage.prompt_tokens == outcome.input_tokens > 0
    again = execute("/v1/chat/completions", CHAT).body
    assert again["choices"] == outcome.body["choices"]  # deterministic content


def test_chat_honours_max_tokens_n_and_json_schema():
    body = {**CHAT, "max_completion_tokens": 2, "n": 3}
    parsed = ChatCompletion.model_validate(execute("/v1/chat/completions", body).body)
    assert len(parsed.choices) == 3
    assert parsed.choices[0].finish_reason == "length"
    schema = {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": ["pos", "neg"]}, "score": {"type": "number"}},
    }
    body = {
        **CHAT,
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    }
    content = (
        ChatCompletion.model_validate(execute("/v1/chat/completions", body).body).choices[0].message.content
    )
    assert content is not None and '"label": "' in content


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "gpt-4o-mini"}, "messages"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": "hello"}, "messages"),
        ({**CHAT, "n": 0}, "n"),
    ],
)
def test_bad_chat_bodies_get_400_with_openai_error(body, param):
    outcome = execute("/v1/chat/completions", body)
    assert outcome.status_code == 400
    assert outcome.body["error"]["param"] == param
    assert outcome.body["error"]["type"] == "invalid_request_error"
    assert (outcome.input_tokens, outcome.output_tokens) == (0, 0)


def test_directives_fail_on_purpose():
    body = {"model": "m", "messages": [{"role": "user", "content": "[[emulator:context_length_exceeded]]"}]}
    outcome = execute("/v1/chat/completions", body)
    assert (outcome.status_code, outcome.body["error"]["code"]) == (400, "context_length_exceeded")
    body["messages"][0]["content"] = "[[emulator:server_error]]"
    assert execute("/v1/chat/completions", body).status_code == 500


def test_completions_and_responses_parse():
    completion = Completion.model_validate(
        execute("/v1/completions", {"model": "gpt-3.5-turbo-instruct", "prompt": ["a b", "c"]}).body
    )
    assert [c.text for c in completion.choices] == ["echo: a b", "echo: c"]
    outcome = execute(
        "/v1/responses", {"model": "gpt-4o-mini", "input": "Say hi", "instructions": "Be brief"}
    )
    response = Response.model_validate(outcome.body)
    assert response.output_text == "echo: Say hi"
    assert response.usage is not None and response.usage.output_tokens == outcome.output_tokens
    assert execute("/v1/responses", {"model": "gpt-4o-mini"}).status_code == 400


def norm(vector):
    return math.sqrt(sum(v * v for v in vector))


def test_embeddings_are_deterministic_unit_vectors_with_model_sizes():
    small = execute("/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]})
    parsed = CreateEmbeddingResponse.model_validate(small.body)
    assert [len(d.embedding) for d in parsed.data] == [1536, 1536]
    assert abs(norm(parsed.data[0].embedding) - 1) < 1e-6
    assert parsed.data[0].embedding != parsed.data[1].embedding
    assert parsed.usage.prompt_tokens == 2 == small.input_tokens
    large = execute("/v1/embeddings", {"model": "text-embedding-3-large", "input": "a"}).body
    assert len(large["data"][0]["embedding"]) == 3072
    again = execute("/v1/embeddings", {"model": "text-embedding-3-small", "input": "a"}).body
    assert again["data"][0]["embedding"] == small.body["data"][0]["embedding"]


def test_embedding_dimensions_shorten_the_full_vector():
    full = execute("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}).body["data"][0][
        "embedding"
    ]
    short = execute(
        "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "dimensions": 8}
    ).body["data"][0]["embedding"]
    assert len(short) == 8 and abs(norm(short) - 1) < 1e-6
    scale = norm(full[:8])
    assert all(abs(s - f / scale) < 1e-6 for s, f in zip(short, full[:8], strict=True))
    bad = execute("/v1/embeddings", {"model": "text-embedding-ada-002", "input": "x", "dimensions": 8})
    assert (bad.status_code, bad.body["error"]["param"]) == (400, "dimensions")
    too_big = execute("/v1/embeddings", {"model": "text-embedding-3-small", "input": "x", "dimensions": 5000})
    assert too_big.status_code == 400


def test_embedding_base64_and_token_inputs():
    body = {
        "model": "text-embedding-3-small",
        "input": [[1, 2, 3]],
        "dimensions": 4,
        "encoding_format": "base64",
    }
    outcome = execute("/v1/embeddings", body)
    vector = struct.unpack("<4f", base64.b64decode(outcome.body["data"][0]["embedding"]))
    assert abs(norm(vector) - 1) < 1e-5
    assert outcome.input_tokens == 3
    assert execute("/v1/embeddings", {"model": "text-embedding-3-small", "input": ""}).status_code == 400


def test_moderations_flag_trigger_words():
    outcome = execute("/v1/moderations", {"input": ["have a nice day", "I will kill it"]})
    parsed = ModerationCreateResponse.model_validate(outcome.body)
    assert parsed.model == "omni-moderation-latest"
    assert [r.flagged for r in parsed.results] == [False, True]
    assert parsed.results[1].categories.violence
    assert execute("/v1/moderations", {}).status_code == 400


def test_unknown_url_and_non_object_body():
    assert execute("/v1/audio/speech", {}).status_code == 404
    assert execute("/v1/chat/completions", [1]).status_code == 400


def test_sample_json_follows_refs_enums_and_arrays():
    schema = {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
            "ok": {"type": "boolean"},
        },
        "$defs": {
            "Item": {"type": "object", "properties": {"n": {"type": "integer"}, "k": {"enum": ["a", "b"]}}}
        },
    }
    value = sample_json(schema, "text")
    assert value["ok"] is False
    assert value["items"][0]["n"] == 0 and value["items"][0]["k"] in ("a", "b")
    assert sample_json(schema, "text") == value
