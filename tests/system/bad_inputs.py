"""A corpus of malformed batch inputs, each with where it is wrong and what the fix says.

Every case is something a user really produces: a truncated export, a file saved with a
BOM or in Latin-1, a spreadsheet's blank row, ids that repeat, a line for another
endpoint or model, a request written by hand with ``GET``, records without the field a
template needs. The bad-input drill submits each through ``OpenAIBatchSubmitOperator``
and expects it to fail before anything is uploaded, with a message that names the line
(or record, or ``file`` for a whole-file problem) and contains the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MODEL = "gpt-4o-mini"


@dataclass(frozen=True)
class BadInput:
    """One malformed input.

    :param name: a task id.
    :param where: what the message must point at: ``line 7``, ``record 2`` or ``file``.
    :param fix: a phrase of the fix the message must contain.
    :param content: the JSONL bytes (file cases).
    :param requests: instead of a file: the operator's ``requests`` (records or lines).
    :param template: with ``requests``: ``"chat"`` for a ``ChatTemplate`` over ``{question}``.
    :param operator: more operator arguments (``endpoint``, ``custom_id_field``).
    """

    name: str
    where: str
    fix: str
    content: bytes | None = None
    requests: list[Any] | None = None
    template: str | None = None
    operator: dict[str, Any] = field(default_factory=dict)


def line(i: int, *, model: Any = MODEL, url: Any = CHAT, **override: Any) -> dict[str, Any]:
    """A valid request line as a dict; ``override`` replaces top-level keys."""
    body: Any = {"model": model, "messages": [{"role": "user", "content": f"question {i}"}]}
    if url == EMBEDDINGS:
        body = {"model": model, "input": f"text {i}"}
    data: dict[str, Any] = {"custom_id": f"q-{i}", "method": "POST", "url": url, "body": body}
    data.update(override)
    return data


def without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def jsonl(*items: Any) -> bytes:
    """Dicts become JSON lines; str and bytes are written as they are (one line each)."""
    out = []
    for item in items:
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, str):
            out.append(item.encode())
        else:
            out.append(json.dumps(item).encode())
    return b"\n".join(out) + b"\n"


def _body_without_model(i: int) -> dict[str, Any]:
    data = line(i)
    data["body"] = without(data["body"], "model")
    return data


def corpus() -> list[BadInput]:
    """Every case (more than 30)."""
    ok = line
    cases = [
        BadInput(
            "truncated_json",
            "line 2",
            "unterminated string",
            jsonl(ok(1), '{"custom_id": "q-2", "method": "POST", "url": "/v1/chat', ok(3)),
        ),
        BadInput(
            "single_quotes", "line 1", "check quotes", jsonl("{'custom_id': 'q-1', 'method': 'POST'}", ok(2))
        ),
        BadInput(
            "trailing_comma",
            "line 3",
            "each line must be one complete JSON object",
            jsonl(ok(1), ok(2), json.dumps(ok(3))[:-1] + ",}"),
        ),
        BadInput(
            "two_objects_on_one_line",
            "line 2",
            "put exactly one JSON object on each line",
            jsonl(ok(1), json.dumps(ok(2)) + json.dumps(ok(3))),
        ),
        BadInput(
            "nan_temperature",
            "line 2",
            "write null or a number",
            jsonl(ok(1), json.dumps(ok(2))[:-2] + ', "temperature": NaN}}'),
        ),
        BadInput("byte_order_mark", "line 1", "without BOM", b"\xef\xbb\xbf" + jsonl(ok(1), ok(2))),
        BadInput(
            "latin1_bytes",
            "line 2",
            "save the file as UTF-8",
            jsonl(
                ok(1),
                json.dumps(ok(2)).replace("question 2", "caf\\u00e9").encode().replace(b"\\u00e9", b"\xe9"),
            ),
        ),
        BadInput("blank_line", "line 2", "remove it", jsonl(ok(1), "", ok(3))),
        BadInput("whitespace_line", "line 3", "remove it", jsonl(ok(1), ok(2), "   \t ", ok(4))),
        BadInput("array_line", "line 2", "not an object", jsonl(ok(1), [ok(2)])),
        BadInput("string_line", "line 1", "not an object", jsonl('"hello"', ok(2))),
        BadInput("number_line", "line 2", "not an object", jsonl(ok(1), "42")),
        BadInput("null_line", "line 2", "not an object", jsonl(ok(1), "null")),
        BadInput(
            "missing_custom_id", "line 2", "add a unique string id", jsonl(ok(1), without(ok(2), "custom_id"))
        ),
        BadInput("null_custom_id", "line 1", "add a unique string id", jsonl(ok(1, custom_id=None))),
        BadInput(
            "empty_custom_id", "line 2", "use a non-empty unique string", jsonl(ok(1), ok(2, custom_id=""))
        ),
        BadInput("numeric_custom_id", "line 1", "quote it", jsonl(ok(1, custom_id=17), ok(2))),
        BadInput(
            "duplicate_custom_id",
            "line 3",
            "give every request its own custom_id",
            jsonl(ok(1), ok(2), ok(3, custom_id="q-1")),
        ),
        BadInput("method_get", "line 2", 'use "POST"', jsonl(ok(1), ok(2, method="GET"))),
        BadInput("method_lowercase", "line 1", 'use "POST"', jsonl(ok(1, method="post"))),
        BadInput("method_missing", "line 2", 'use "POST"', jsonl(ok(1), without(ok(2), "method"))),
        BadInput("unknown_url", "line 1", "not a batch endpoint", jsonl(ok(1, url="/v2/chat/completions"))),
        BadInput(
            "url_without_v1",
            "line 2",
            'use "/v1/chat/completions"',
            jsonl(ok(1), ok(2, url="/chat/completions")),
        ),
        BadInput("url_missing", "line 2", "not a batch endpoint", jsonl(ok(1), without(ok(2), "url"))),
        BadInput(
            "mixed_endpoints",
            "line 2",
            "use the same url on every line or split the file",
            jsonl(ok(1), ok(2, url=EMBEDDINGS, model="text-embedding-3-small")),
        ),
        BadInput(
            "endpoint_argument_differs",
            "lines 1-2",  # the same problem on both lines: one grouped message
            "use the same url on every line or split the file",
            jsonl(ok(1), ok(2)),
            operator={"endpoint": EMBEDDINGS},
        ),
        BadInput(
            "body_missing",
            "line 2",
            "add the endpoint's parameters as an object",
            jsonl(ok(1), without(ok(2), "body")),
        ),
        BadInput("body_is_list", "line 1", "it must be an object", jsonl(ok(1, body=[{"model": MODEL}]))),
        BadInput("body_is_string", "line 2", "it must be an object", jsonl(ok(1), ok(2, body="hello"))),
        BadInput(
            "model_missing", "line 2", "name the model on every line", jsonl(ok(1), _body_without_model(2))
        ),
        BadInput("model_empty", "line 1", "name the model on every line", jsonl(ok(1, model=""), ok(2))),
        BadInput("model_not_a_string", "line 2", "it must be a string", jsonl(ok(1), ok(2, model=4))),
        BadInput(
            "two_models", "line 4", "split it by model", jsonl(ok(1), ok(2), ok(3), ok(4, model="gpt-4o"))
        ),
        BadInput("empty_file", "file", "add at least one line", b""),
        BadInput("only_a_newline", "line 1", "remove it", b"\n"),
        BadInput(
            "deep_in_a_large_file",
            "line 437",
            "each line must be one complete JSON object",
            jsonl(
                *[ok(i) for i in range(1, 437)], '{"custom_id": "q-437"', *[ok(i) for i in range(438, 501)]
            ),
        ),
        # Lines given as the operator's ``requests`` (e.g. from XCom): numbered like a file.
        BadInput(
            "request_dict_without_url",
            "line 2",
            "not a batch endpoint",
            requests=[ok(1), without(ok(2), "url")],
        ),
        BadInput(
            "request_text_not_json",
            "line 3",
            "each line must be one complete JSON object",
            requests=[ok(1), json.dumps(ok(2)), "{not json"],
        ),
        # Records rendered by a template: the message names the record.
        BadInput(
            "record_without_template_field",
            "record 1",
            "Add the field or fix the template",
            requests=[{"id": "a", "question": "q"}, {"id": "b", "text": "no question"}],
            template="chat",
            operator={"custom_id_field": "id"},
        ),
        BadInput(
            "record_repeated_id",
            "record 2",
            "ids must be unique",
            requests=[
                {"id": "a", "question": "1"},
                {"id": "b", "question": "2"},
                {"id": "a", "question": "3"},
            ],
            template="chat",
            operator={"custom_id_field": "id"},
        ),
        BadInput(
            "record_bad_id",
            "record 0",
            "use a non-empty string or integer",
            requests=[{"id": "", "question": "1"}],
            template="chat",
            operator={"custom_id_field": "id"},
        ),
    ]
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"
    return cases


def write_files(folder: Path, cases: list[BadInput]) -> dict[str, Path]:
    """Write each file case to ``folder/<name>.jsonl``; return ``{name: path}``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for case in cases:
        if case.content is not None:
            paths[case.name] = folder / f"{case.name}.jsonl"
            paths[case.name].write_bytes(case.content)
    return paths
