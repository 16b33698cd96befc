"""Builders (templates + records -> request lines) and the RequestLine model."""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import namedtuple
from typing import Any

import pytest
from pydantic import ValidationError

from airflow_batch_provider.batch_file import (
    BATCH_ENDPOINTS,
    ChatTemplate,
    EmbeddingTemplate,
    RequestLine,
    ResponsesTemplate,
    build_request_lines,
    templates,
    validate_lines,
)
from airflow_batch_provider.exceptions import BatchFileError

CHAT = ChatTemplate(
    "gpt-4o-mini",
    [
        {"role": "system", "content": 'Answer as JSON {"label": ...}; literal {{label}}.'},
        {"role": "user", "content": "Classify {text} (by {meta.author})"},
    ],
    body={"temperature": 0, "max_tokens": 5},
)


def build(records: Any, template: Any = CHAT, **kwargs: Any) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in build_request_lines(records, template, **kwargs)]


def test_builders_are_re_exported_from_batch_file() -> None:
    assert ChatTemplate is templates.ChatTemplate
    assert build_request_lines is templates.build_request_lines


@pytest.mark.parametrize("template", [CHAT, EmbeddingTemplate("e", "text"), ResponsesTemplate("m", "{text}")])
def test_every_template_targets_a_batch_endpoint(template: Any) -> None:
    assert template.endpoint in BATCH_ENDPOINTS


def test_chat_template_fills_placeholders_and_copies_body() -> None:
    (req,) = build([{"text": "great phone", "meta": {"author": "ann"}}])
    assert req["method"] == "POST" and req["url"] == "/v1/chat/completions"
    assert req["body"] == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": 'Answer as JSON {"label": ...}; literal {label}.'},
            {"role": "user", "content": "Classify great phone (by ann)"},
        ],
        "temperature": 0,
        "max_tokens": 5,
    }
    assert CHAT.fields == {"text", "meta.author"}


def test_chat_template_fills_content_parts() -> None:
    template = ChatTemplate(
        "gpt-4o",
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "{img}"}},
                ],
            }
        ],
    )
    (req,) = build([{"img": "https://x/1.png"}], template)
    assert req["body"]["messages"][0]["content"][1]["image_url"]["url"] == "https://x/1.png"


def test_non_string_values_are_rendered_as_text() -> None:
    template = ChatTemplate.from_prompt("m", "n={n} tags={tags} ok={ok}", system="sys")
    (req,) = build([{"n": 3, "tags": ["a", "é"], "ok": True}], template)
    assert req["body"]["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": 'n=3 tags=["a", "é"] ok=True'},
    ]


def test_missing_field_names_record_field_and_place() -> None:
    records = [
        {"text": "a", "meta": {"author": "x"}},
        {"text": "b", "meta": {"author": "y"}},
        {"meta": {"author": "z"}},
    ]
    lines = build_request_lines(records, CHAT)
    next(lines), next(lines)
    with pytest.raises(BatchFileError) as caught:
        next(lines)
    message = str(caught.value)
    assert "record 2" in message and "'text' is missing" in message and "messages[1].content" in message
    assert "the record has: meta" in message


def test_null_field_is_an_error() -> None:
    with pytest.raises(BatchFileError, match="record 0: field 'text' is null"):
        build([{"text": None, "meta": {"author": "x"}}])


def test_missing_nested_field() -> None:
    with pytest.raises(BatchFileError, match="'meta.author' is missing"):
        build([{"text": "a", "meta": {}}])


def test_dotted_key_in_a_flat_record_wins() -> None:
    (req,) = build([{"text": "a", "meta.author": "flat"}])
    assert req["body"]["messages"][1]["content"] == "Classify a (by flat)"


def test_template_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="model"):
        ChatTemplate("", [{"role": "user", "content": "x"}])
    with pytest.raises(ValueError, match="messages"):
        ChatTemplate("m", [])
    with pytest.raises(ValueError, match="messages"):
        ChatTemplate("m", [{"content": "no role"}])
    with pytest.raises(ValueError, match="must not set"):
        ChatTemplate("m", [{"role": "user", "content": "x"}], body={"model": "other"})
    with pytest.raises(ValueError, match="input_field"):
        EmbeddingTemplate("m", "")
    with pytest.raises(ValueError, match="input"):
        ResponsesTemplate("m", "")


# --- embeddings and responses --------------------------------------------------------------------


def test_embedding_template_takes_the_field_as_is() -> None:
    template = EmbeddingTemplate(
        "text-embedding-3-small", "text", dimensions=256, body={"encoding_format": "float"}
    )
    reqs = build([{"text": "hello {x}"}, {"text": ["a", "b"]}, {"text": (1, 2, 3)}], template)
    assert [r["url"] for r in reqs] == ["/v1/embeddings"] * 3
    assert reqs[0]["body"] == {
        "model": "text-embedding-3-small",
        "input": "hello {x}",
        "dimensions": 256,
        "encoding_format": "float",
    }
    assert [r["body"]["input"] for r in reqs[1:]] == [["a", "b"], [1, 2, 3]]
    report = validate_lines(build_request_lines([{"text": "a"}, {"text": ["b", "c"]}], template))
    assert report.ok and report.embedding_inputs == 3


@pytest.mark.parametrize("value", ["", [], 5, {"a": 1}])
def test_embedding_input_must_be_a_non_empty_string_or_list(value: Any) -> None:
    with pytest.raises(BatchFileError, match="record 0: field 'text'"):
        build([{"text": value}], EmbeddingTemplate("e", "text"))


def test_responses_template() -> None:
    template = ResponsesTemplate(
        "gpt-4.1-mini",
        [{"role": "user", "content": [{"type": "input_text", "text": "Summarize {doc}"}]}],
        instructions="Write for {audience}.",
        body={"max_output_tokens": 100},
    )
    (req,) = build([{"doc": "D", "audience": "kids"}], template)
    assert req["url"] == "/v1/responses"
    assert req["body"] == {
        "model": "gpt-4.1-mini",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "Summarize D"}]}],
        "instructions": "Write for kids.",
        "max_output_tokens": 100,
    }
    assert template.fields == {"doc", "audience"}
    (simple,) = build([{"q": "why"}], ResponsesTemplate("m", "Q: {q}"))
    assert simple["body"] == {"model": "m", "input": "Q: why"}


# --- custom ids -------------------------------------------------------------------------------------


def test_custom_id_from_a_field() -> None:
    template = ChatTemplate.from_prompt("m", "{text}")
    reqs = build([{"id": "a-1", "text": "x"}, {"id": 7, "text": "y"}], template, custom_id_field="id")
    assert [r["custom_id"] for r in reqs] == ["a-1", "7"]


def test_duplicate_custom_id_field_names_both_records() -> None:
    template = ChatTemplate.from_prompt("m", "{text}")
    with pytest.raises(BatchFileError, match="record 2: custom_id 'a' repeats record 0"):
        build(
            [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "a", "text": "z"}],
            template,
            custom_id_field="id",
        )


@pytest.mark.parametrize("value", ["", True, 1.5, None])
def test_bad_custom_id_field_values(value: Any) -> None:
    with pytest.raises(BatchFileError, match="record 0"):
        build([{"id": value, "text": "x"}], ChatTemplate.from_prompt("m", "{text}"), custom_id_field="id")


def test_missing_custom_id_field() -> None:
    with pytest.raises(BatchFileError, match="'id' is missing"):
        build([{"text": "x"}], ChatTemplate.from_prompt("m", "{text}"), custom_id_field="id")


def test_content_hash_ids_are_stable_and_unique() -> None:
    template = ChatTemplate.from_prompt("m", "{text}")
    records = [{"text": "a"}, {"text": "b"}, {"text": "a"}, {"text": "a"}]
    first = [r["custom_id"] for r in build(records, template)]
    assert first == [r["custom_id"] for r in build(list(records), template)]
    assert first[0].startswith("req-") and len(first[0]) == 20
    assert first[2:] == [first[0] + "-2", first[0] + "-3"] and first[1] != first[0]
    # The id follows the request: another model is another request.
    assert build(records[:1], ChatTemplate.from_prompt("m2", "{text}"))[0]["custom_id"] != first[0]
    # Fields the template does not use do not change it.
    assert build([{"text": "a", "unused": 1}], template)[0]["custom_id"] == first[0]


# --- record shapes -----------------------------------------------------------------------------------


def test_rows_with_columns_namedtuples_and_sqlite_rows() -> None:
    template = ChatTemplate.from_prompt("m", "{text}")
    by_columns = build([("1", "x")], template, custom_id_field="id", columns=["id", "text"])
    Row = namedtuple("Row", "id text")
    by_namedtuple = build([Row("1", "x")], template, custom_id_field="id")
    conn = sqlite3.connect(":memory:")
    conn.row_factory = sqlite3.Row
    by_sqlite = build(conn.execute("select '1' as id, 'x' as text"), template, custom_id_field="id")
    assert by_columns == by_namedtuple == by_sqlite
    assert by_columns[0]["custom_id"] == "1"


def test_row_errors_name_the_record() -> None:
    template = ChatTemplate.from_prompt("m", "{text}")
    with pytest.raises(BatchFileError, match="record 0 is a row: pass columns"):
        build([("x",)], template)
    with pytest.raises(BatchFileError, match="record 1 has 1 values for 2 columns"):
        build([("1", "x"), ("2",)], template, columns=["id", "text"])
    with pytest.raises(BatchFileError, match="record 0 is a str"):
        build(["text"], template)


def test_nan_in_the_body_is_refused() -> None:
    template = ChatTemplate.from_prompt("m", "{text}", temperature=float("nan"))
    with pytest.raises(BatchFileError, match="record 0: cannot build a request line"):
        build([{"text": "x"}], template)


def test_building_is_lazy_and_lines_validate() -> None:
    template = ChatTemplate.from_prompt("m", "item {i}")
    endless = ({"i": i} for i in itertools.count())
    first = list(itertools.islice(build_request_lines(endless, template), 3))
    assert all(raw.endswith(b"\n") and raw.count(b"\n") == 1 for raw in first)
    report = validate_lines(build_request_lines(({"i": i} for i in range(1000)), template))
    assert report.ok and report.request_count == 1000 and report.model == "m"


# --- RequestLine ----------------------------------------------------------------------------------------


def test_request_line_round_trip_keeps_extra_keys() -> None:
    raw = b'{"custom_id":"a","method":"POST","url":"/v1/embeddings","body":{"model":"m","input":"x"}'
    raw += b',"note":1}\n'
    parsed = RequestLine.from_json_line(raw)
    assert parsed.model == "m" and parsed.to_json_bytes() == raw


@pytest.mark.parametrize(
    "data",
    [
        {"custom_id": "", "url": "/v1/embeddings", "body": {"model": "m"}},
        {"custom_id": 1, "url": "/v1/embeddings", "body": {"model": "m"}},
        {"custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {"model": "m"}},
        {"custom_id": "a", "url": "/v1/nope", "body": {"model": "m"}},
        {"custom_id": "a", "url": "/v1/embeddings", "body": {}},
        {"custom_id": "a", "url": "/v1/embeddings"},
    ],
)
def test_request_line_rejects_what_the_validator_rejects(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RequestLine.model_validate(data)
    assert not validate_lines([json.dumps(data).encode()]).ok


def test_request_line_from_json_line_rejects_nan() -> None:
    with pytest.raises(ValueError, match="NaN"):
        RequestLine.from_json_line('{"custom_id":"a","url":"/v1/embeddings","body":{"model":"m","t":NaN}}')
